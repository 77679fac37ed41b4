"""Fx normalization: features against closed forms / pyloudnorm / scipy, the FIR design against scipy.signal.firwin2,
and the end-to-end property FxNorm exists for: a dry stem and the same stem through a known EQ, compressor and
stereo widener come out of normalization much closer to each other than they went in."""

from __future__ import annotations

import json
import math

import numpy as np
import pyloudnorm
import pytest
import scipy.ndimage
import scipy.signal
import soundfile as sf
import torch

from fxlens import audio as fxaudio
from fxlens.data import fxnorm as fn
from fxlens.data.stems import open_dataset
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.fx.dynamics import compressor, compressor_gain_db
from fxlens.fx.eq import parametric_eq
from fxlens.fx.stereo import stereo_imager

SR = 44100


def lufs(x: torch.Tensor, sr: int = SR) -> float:
    """pyloudnorm's integrated loudness of one (1, C, T) item: the independent loudness reference."""
    return pyloudnorm.Meter(sr).integrated_loudness(x[0].double().numpy().T)


def pluck_stem(seed: int, seconds: float = 4.0) -> torch.Tensor:
    """A plucked-string part (1, 2, T): notes every 250 ms, random pitch and velocity, a 4 ms noise attack,
    harmonics decaying over ~120 ms, each note panned a little; peak -6 dBFS."""
    rng = np.random.default_rng(seed)
    T = int(seconds * SR)
    x = np.zeros((2, T))
    t = np.arange(int(0.6 * SR)) / SR
    step = int(0.25 * SR)
    for start in range(0, T - step, step):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        note = sum(0.7**h * np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 2 * np.pi))
                   for h in range(12) if f0 * (h + 1) < 18000)
        note = (note * np.exp(-t / 0.12) + 0.5 * rng.standard_normal(t.size) * np.exp(-t / 0.004))
        note *= rng.uniform(0.1, 1.0)
        pan = rng.uniform(-0.3, 0.3)
        n = min(note.size, T - start)
        x[0, start:start + n] += note[:n] * (1 - pan)
        x[1, start:start + n] += note[:n] * (1 + pan)
    x += 0.002 * rng.standard_normal(x.shape)
    x /= 2 * np.abs(x).max()
    return torch.tensor(x, dtype=torch.float32)[None]


def eq5(x, low_shelf, mid, presence, high_shelf):
    return parametric_eq(
        x, SR, low_shelf_freq=100.0, low_shelf_gain=low_shelf, low_shelf_q=0.707,
        peak1_freq=400.0, peak1_gain=0.0, peak1_q=1.0, peak2_freq=1000.0, peak2_gain=mid, peak2_q=1.0,
        peak3_freq=3000.0, peak3_gain=presence, peak3_q=1.0, peak4_freq=8000.0, peak4_gain=0.0, peak4_q=1.0,
        high_shelf_freq=10000.0, high_shelf_gain=high_shelf, high_shelf_q=0.707)


def process(x, eq_db=(8.0, -9.0, 6.0, -6.0), threshold_db=-28.0, ratio=8.0, width=1.8):
    """EQ -> compressor (1 ms attack, 100 ms release, hard knee) -> stereo width: the 'engineer's' chain."""
    y = eq5(x, *eq_db)
    y = y / y.abs().amax() * 0.5
    y = compressor(y, SR, threshold_db=threshold_db, ratio=ratio, attack_ms=1.0, release_ms=100.0, knee_db=0.0)
    return stereo_imager(y, SR, width)


# -- independent measurements (numpy / scipy), used only by the tests ---------------------------------------------


def third_octave_db(x: torch.Tensor) -> np.ndarray:
    """Welch PSD of the channel mean, averaged into 1/3-octave bands 50 Hz - 12.8 kHz, in dB."""
    m = x[0].double().numpy().mean(axis=0)
    f, p = scipy.signal.welch(m, SR, nperseg=8192)
    centres = [50 * 2 ** (k / 3) for k in range(25)]
    return np.array([10 * np.log10(p[(f >= c * 2 ** (-1 / 6)) & (f < c * 2 ** (1 / 6))].mean()) for c in centres])


def spectral_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS over 1/3-octave bands of the dB difference, its mean (a level difference) removed."""
    d = third_octave_db(a) - third_octave_db(b)
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


def onset_plr(x: torch.Tensor) -> float:
    """The onset peak-to-loudness ratio computed independently: numpy block peaks, scipy's running maximum for the
    onsets, numpy's percentile, pyloudnorm's loudness."""
    v = np.abs(x[0].double().numpy()).max(axis=0)
    n = int(0.01 * SR)
    env = v[: v.size // n * n].reshape(-1, n).max(axis=1)
    local = scipy.ndimage.maximum_filter1d(env, 11, mode="constant")
    peaks = 20 * np.log10(env[(env >= local) & (env > 0)])
    peaks = peaks[peaks >= peaks.max() - 40]
    return float(peaks[peaks >= np.percentile(peaks, 75)].mean() - lufs(x))


def crest(x: torch.Tensor) -> float:
    v = x[0].double().numpy()
    return float(20 * np.log10(np.abs(v).max() / np.sqrt(np.mean(v**2))))


def side_mid(x: torch.Tensor) -> float:
    v = x[0].double().numpy()
    return float(10 * np.log10(np.sum((v[0] - v[1]) ** 2) / np.sum((v[0] + v[1]) ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# Building blocks against independent references
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("numtaps", [101, 1025])
def test_design_fir_matches_scipy_firwin2(numtaps):
    rng = np.random.default_rng(0)
    freqs = np.concatenate([[0.0], np.sort(rng.uniform(10, SR / 2 - 10, 30)), [SR / 2]])
    gains = rng.uniform(0.25, 4.0, size=(2, freqs.size))
    ours = fn.design_fir(torch.tensor(freqs), torch.tensor(gains), numtaps, SR)
    assert ours.shape == (2, numtaps)
    for b in range(2):
        ref = scipy.signal.firwin2(numtaps, freqs, gains[b], fs=SR)
        np.testing.assert_allclose(ours[b].numpy(), ref, atol=1e-12)
    with pytest.raises(FxlensError, match="odd"):
        fn.design_fir(torch.tensor(freqs), torch.tensor(gains[0]), 100, SR)


def test_apply_fir_is_zero_phase_same_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 1500))
    h = rng.standard_normal((2, 101))
    y = fn.apply_fir(torch.tensor(x), torch.tensor(h)).numpy()
    for b in range(2):
        for c in range(2):
            np.testing.assert_allclose(y[b, c], scipy.signal.fftconvolve(x[b, c], h[b], mode="same"), atol=1e-10)


def test_band_spectrum_of_white_noise_is_flat_at_its_variance():
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, 2, 10 * SR, generator=g, dtype=torch.float64)
    bands = fn.band_spectrum_db(x, SR)[0]
    valid = torch.isfinite(bands)
    assert int(valid.sum()) == sum(f <= 0.45 * SR for f in fn.BAND_FREQS_HZ)
    # variance 0.01 -> -20 dB in every band (chi-square spread over >= 430 frame-channels: < 0.5 dB)
    assert float((bands[valid] + 20.0).abs().max()) < 0.5
    # a sine lands in its band
    t = torch.arange(2 * SR, dtype=torch.float64) / SR
    sine = torch.sin(2 * math.pi * 1000.0 * t).expand(1, 2, -1)
    k = int(torch.nan_to_num(fn.band_spectrum_db(sine, SR)[0], nan=-1e9).argmax())
    assert abs(math.log2(fn.BAND_FREQS_HZ[k] / 1000.0)) <= 1 / 12


def test_side_mid_and_balance_closed_form():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 1, SR, generator=g, dtype=torch.float64)
    a, b = 1.0, 0.25
    x = torch.cat([a * s, b * s], dim=1)
    assert float(fn.balance_db(x)) == pytest.approx(20 * math.log10(a / b), abs=1e-9)
    assert float(fn.side_mid_db(x)) == pytest.approx(20 * math.log10((a - b) / (a + b)), abs=1e-9)
    assert float(fn.side_mid_db(torch.cat([s, s], dim=1))) == fn.SIDE_FLOOR_DB  # mono
    with pytest.raises(InvalidAudioError, match="stereo"):
        fn.side_mid_db(s)


def test_onset_peak_statistic_closed_form():
    # clicks of known amplitudes, 200 ms apart, each decaying within a few ms: the onset peaks are exactly them
    amps = np.array([1.0, 0.5, 0.8, 0.25, 0.9, 0.1, 0.6, 0.7, 0.3, 0.4, 0.05, 0.95])
    x = np.zeros(int(0.2 * SR) * len(amps) + SR // 10)
    for i, a in enumerate(amps):
        n = i * int(0.2 * SR) + 37
        x[n:n + 200] = a * np.exp(-np.arange(200) / 20.0) * np.cos(np.arange(200) * 0.3)
    db = 20 * np.log10(amps)
    expected = db[db >= np.percentile(db, 75)].mean()
    xt = torch.tensor(x)[None, None].expand(1, 2, -1).contiguous()
    assert float(fn.onset_peak_db(xt, SR)) == pytest.approx(expected, abs=1e-6)
    # PLR = that minus the loudness (pyloudnorm), and it does not change with gain
    assert float(fn.onset_plr_db(xt, SR)) == pytest.approx(expected - lufs(xt), abs=0.02)
    assert float(fn.onset_plr_db(0.1 * xt, SR)) == pytest.approx(float(fn.onset_plr_db(xt, SR)), abs=0.02)


def test_compressor_search_loudness_shortcut_matches_pyloudnorm():
    """The search measures loudness(K(x) * g) instead of loudness(K(x * g)): within 0.1 LU on a plucked part."""
    x = pluck_stem(3).double()
    g_db = compressor_gain_db(x, SR, threshold_db=-30.0, ratio=6.0, attack_ms=0.2, release_ms=100.0, knee_db=6.0)
    g = torch.pow(10.0, g_db / 20.0)[:, None, :]
    approx = float(fxaudio.gated_loudness(fxaudio.k_weight(x, SR) * g, SR))
    assert approx == pytest.approx(lufs(x * g), abs=0.1)


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


def write_dataset(root, stems: dict[tuple[str, str], torch.Tensor]) -> None:
    for (song, inst), x in stems.items():
        d = root / "train" / song
        d.mkdir(parents=True, exist_ok=True)
        sf.write(str(d / f"{inst}.wav"), x[0].numpy().T, SR, subtype="FLOAT")
        (d / "song.json").write_text(json.dumps({"song_id": song}))


def test_compute_stats_from_a_dataset_save_and_load(tmp_path):
    stems = {
        ("s0", "electric_guitar"): pluck_stem(10, 1.5),
        ("s1", "electric_guitar"): 0.3 * pluck_stem(11, 1.5),
        ("s0", "bass"): eq5(pluck_stem(12, 1.5), 10.0, 0.0, -10.0, -12.0),
        ("s1", "piano"): torch.zeros(1, 2, SR),  # silent: skipped
    }
    write_dataset(tmp_path / "ds", stems)
    ds = open_dataset(tmp_path / "ds")
    stats = fn.compute_stats(ds, sample_rate=SR)
    assert sorted(stats.instruments) == ["bass", "electric_guitar"]
    g = stats["electric_guitar"]
    assert g.n_stems == 2 and len(g.band_db) == len(fn.BAND_FREQS_HZ)
    expected_lufs = np.mean([lufs(stems[("s0", "electric_guitar")]), lufs(stems[("s1", "electric_guitar")])])
    assert g.loudness_lufs == pytest.approx(expected_lufs, abs=0.05)
    # the bass stem (low shelf up, highs down) has far more low end relative to its highs than the guitar
    b = stats["bass"]
    assert b.band_db[6] - b.band_db[45] > g.band_db[6] - g.band_db[45] + 10  # 40 Hz vs 3.6 kHz

    path = stats.save(tmp_path / "stats.json")
    back = fn.FxNormStats.load(path)
    assert back.instruments.keys() == stats.instruments.keys()
    assert back["bass"].band_db == pytest.approx(b.band_db, abs=1e-3)
    assert back["bass"].onset_plr_db == pytest.approx(b.onset_plr_db)
    with pytest.raises(FxlensError, match="no Fx-normalization statistics for instrument 'voice'"):
        back["voice"]


def test_stats_file_errors(tmp_path):
    with pytest.raises(FxlensError, match="not found"):
        fn.FxNormStats.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FxlensError, match="cannot read"):
        fn.FxNormStats.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FxlensError, match="not an fxlens"):
        fn.FxNormStats.load(bad)
    bad.write_text(json.dumps({"format": fn.STATS_FORMAT, "version": 1, "sample_rate": SR, "reference_lufs": -30,
                               "band_freqs_hz": [100.0, 200.0], "instruments": {"bass": {"band_db": [0.0]}}}))
    with pytest.raises(FxlensError, match="malformed"):
        fn.FxNormStats.load(bad)
    with pytest.raises(FxlensError, match="no stem could be measured"):
        fn.compute_stats([("bass", torch.zeros(1, 2, SR))])


# ---------------------------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_stats() -> fn.FxNormStats:
    """Statistics of four 'mixed' guitar parts: different content, EQ within +-3 dB, moderate compression."""
    rng = np.random.default_rng(100)
    items = []
    for k in range(4):
        eq_db = tuple(float(v) for v in rng.uniform(-3, 3, 4))
        items.append(("electric_guitar", process(pluck_stem(100 + k), eq_db, threshold_db=float(rng.uniform(-30, -22)),
                                                 ratio=float(rng.uniform(3, 6)), width=float(rng.uniform(0.8, 1.3)))))
    return fn.compute_stats(items, sample_rate=SR)


def test_dry_and_processed_stems_converge(reference_stats):
    """The FxNorm property: a dry stem and the same stem through a known EQ, compressor and widener come out of
    normalization much closer than they went in.

    Measures, all computed independently of fxnorm.py (scipy Welch spectrum, numpy/scipy peaks, pyloudnorm):
    1/3-octave spectral distance, onset peak-to-loudness ratio (the dynamics statistic FxNorm normalizes), and
    side/mid ratio. The issue asks that each difference shrink by at least 50 %. Measured here: spectrum
    3.95 -> 0.41 dB (-90 %), onset PLR 4.86 -> 0.38 dB (-92 %), side/mid 4.94 -> 0.00 dB (-100 %: a gain on the
    side channel meets its target exactly), so 50 % leaves a wide margin for other platforms' rounding, while a
    step that did nothing (0 %) fails. Over 12 variants of this scenario (the processing compressor's attack
    0.1 / 0.3 / 1 / 5 ms, three seeds) the reductions ranged: spectrum 86-92 %, onset PLR 51-98 % (lowest with a
    0.1 ms attack, where dry and processed differ least, 1.3 dB), side/mid 100 %.

    The *sample* crest factor (max |x| / RMS) is printed but not asserted: it hangs on one sample, and across the
    same 12 variants its difference moved anywhere from -107 % (grew) to +97 % while the onset PLR converged;
    normalizing it is not what FxNorm does (nor would it be stable).
    """
    dry = pluck_stem(1)
    wet = process(dry)
    nd = fn.normalize_stem(dry, SR, "electric_guitar", reference_stats)
    nw = fn.normalize_stem(wet, SR, "electric_guitar", reference_stats)
    spec_before, spec_after = spectral_distance(dry, wet), spectral_distance(nd, nw)
    dyn_before, dyn_after = abs(onset_plr(dry) - onset_plr(wet)), abs(onset_plr(nd) - onset_plr(nw))
    sm_before, sm_after = abs(side_mid(dry) - side_mid(wet)), abs(side_mid(nd) - side_mid(nw))
    print(f"spectrum {spec_before:.2f} -> {spec_after:.2f} dB, onset PLR {dyn_before:.2f} -> {dyn_after:.2f} dB, "
          f"side/mid {sm_before:.2f} -> {sm_after:.2f} dB, crest {abs(crest(dry) - crest(wet)):.2f} -> "
          f"{abs(crest(nd) - crest(nw)):.2f} dB")
    assert spec_before > 2.0 and dyn_before > 2.0 and sm_before > 2.0  # the processing is audible
    assert spec_after <= 0.5 * spec_before, (spec_before, spec_after)
    assert dyn_after <= 0.5 * dyn_before, (dyn_before, dyn_after)
    assert sm_after <= 0.5 * sm_before, (sm_before, sm_after)
    # both end at the instrument's mean loudness (pyloudnorm as the meter)
    target = reference_stats["electric_guitar"].loudness_lufs
    assert lufs(nd) == pytest.approx(target, abs=0.1) and lufs(nw) == pytest.approx(target, abs=0.1)


def test_each_step_moves_toward_its_target(reference_stats):
    st = reference_stats["electric_guitar"]
    wet = process(pluck_stem(2), eq_db=(10.0, -10.0, 8.0, -8.0), threshold_db=-35.0, ratio=10.0, width=2.0)
    target_bands = torch.tensor(st.band_db)

    def band_err(x):
        d = fn.band_spectrum_db(x, SR)[0] - target_bands
        d = d[torch.isfinite(d)]
        return float((d - d.mean()).square().mean().sqrt())

    eq_only, info = fn.normalize_stem(wet, SR, "electric_guitar", reference_stats, dynamics=False, stereo=False,
                                      return_info=True)
    assert band_err(eq_only) < 0.5 * band_err(wet)
    assert float(info["eq_curve_db"].abs().max()) <= 12.0 + 1e-6
    # the stereo step meets the side/mid target (the correction is within its +-12 dB clamp here)
    st_only = fn.normalize_stem(wet, SR, "electric_guitar", reference_stats, eq=False, dynamics=False)
    assert side_mid(st_only) == pytest.approx(st.side_mid_db, abs=0.05)
    # off switches: with every step off, only the loudness changes
    plain = fn.normalize_stem(wet, SR, "electric_guitar", reference_stats, eq=False, dynamics=False, stereo=False,
                              target_lufs=-18.0)
    ratio = (plain / wet)[wet.abs() > 1e-3]
    assert float(ratio.std() / ratio.mean()) < 1e-4
    assert lufs(plain) == pytest.approx(-18.0, abs=0.05)


def test_dynamics_step_reaches_the_target_statistic(reference_stats):
    st = reference_stats["electric_guitar"]
    dry = pluck_stem(4, 2.0)
    plr0 = onset_plr(dry)

    def stats_with(target):
        return fn.FxNormStats(instruments={"g": fn.InstrumentStats(**{**st.__dict__, "onset_plr_db": target})})

    # more dynamic than the target: compressed (ratio > 1) onto it
    y, info = fn.normalize_stem(dry, SR, "g", stats_with(plr0 - 1.5), eq=False, stereo=False, return_info=True)
    assert math.isfinite(float(info["threshold_db"][0])) and float(info["ratio"][0]) > 1
    assert onset_plr(y) == pytest.approx(plr0 - 1.5, abs=0.3)
    # less dynamic than the target: upward-expanded (ratio < 1) onto it, unless expansion is switched off
    y, info = fn.normalize_stem(dry, SR, "g", stats_with(plr0 + 3), eq=False, stereo=False, return_info=True)
    assert float(info["ratio"][0]) < 1
    assert onset_plr(y) == pytest.approx(plr0 + 3, abs=0.3)
    y, info = fn.normalize_stem(dry, SR, "g", stats_with(plr0 + 3), eq=False, stereo=False, return_info=True,
                                settings=fn.FxNormSettings(expand=False))
    assert math.isinf(float(info["threshold_db"][0])) and onset_plr(y) == pytest.approx(plr0, abs=0.05)
    # within the tolerance: left alone
    y, info = fn.normalize_stem(dry, SR, "g", stats_with(plr0 + 0.1), eq=False, stereo=False, return_info=True)
    assert math.isinf(float(info["threshold_db"][0]))


def test_batch_shapes_determinism_and_errors(reference_stats):
    a, b = pluck_stem(5, 1.5), pluck_stem(6, 1.5) * 0.2
    batch = fn.normalize_stem(torch.cat([a, b]), SR, "electric_guitar", reference_stats)
    one = torch.cat([fn.normalize_stem(a, SR, "electric_guitar", reference_stats),
                     fn.normalize_stem(b, SR, "electric_guitar", reference_stats)])
    torch.testing.assert_close(batch, one, atol=1e-5, rtol=1e-4)  # each item its own filter and threshold
    torch.testing.assert_close(one[:1], fn.normalize_stem(a, SR, "electric_guitar", reference_stats), rtol=0, atol=0)
    quick = dict(dynamics=False)  # shapes only: skip the slowest step
    assert fn.normalize_stem(a[0], SR, "electric_guitar", reference_stats, **quick).shape == a[0].shape  # (C, T)
    assert fn.normalize_stem(a[:, :1], SR, "electric_guitar", reference_stats, **quick).shape == (1, 1, a.shape[-1])
    with pytest.raises(InvalidAudioError, match="silent"):
        fn.normalize_stem(torch.zeros(1, 2, SR), SR, "electric_guitar", reference_stats)
    bad = a.clone()
    bad[0, 0, 10] = float("nan")
    with pytest.raises(InvalidAudioError, match="NaN"):
        fn.normalize_stem(bad, SR, "electric_guitar", reference_stats)
    with pytest.raises(FxlensError, match="no Fx-normalization statistics"):
        fn.normalize_stem(a, SR, "organ", reference_stats)


def test_normalize_dataset_writes_fxlens_layout(tmp_path, reference_stats):
    write_dataset(tmp_path / "wet", {("s0", "electric_guitar"): process(pluck_stem(7, 1.0)),
                                     ("s0", "other"): pluck_stem(8, 1.0)})
    ds = open_dataset(tmp_path / "wet")
    written = fn.normalize_dataset(ds, reference_stats, tmp_path / "norm", sample_rate=SR)
    assert written == [tmp_path / "norm" / "train" / "s0"]
    meta = json.loads((written[0] / "song.json").read_text())
    assert meta["stems"] == ["electric_guitar"] and "other" in meta["skipped"]
    out = open_dataset(tmp_path / "norm")
    assert out.instruments() == ["electric_guitar"]
    y = out.load_stem(out[0], "electric_guitar", SR)
    assert lufs(y) == pytest.approx(reference_stats["electric_guitar"].loudness_lufs, abs=0.1)

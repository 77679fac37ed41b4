"""Tests of fxlens.features.spectral against independent references (librosa 0.11, numpy, scipy, closed forms).

librosa is a test-only reference: the tests that need it are skipped when it is not installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fxlens.errors import ParameterError
from fxlens.features import (
    FEATURE_NAMES,
    FRAME_FEATURES,
    SPECTRAL_FEATURES,
    autofx_features,
    estimate_pitch,
    frame_features,
    functional_names,
    functionals,
    mfcc,
)

SR = 22050
N_FFT = 8192
HOP = 512
EULER_GAMMA = 0.5772156649015329


def _tone(f0: float, seconds: float = 1.5, sr: int = SR, n_harm: int = 1, decay: float = 0.0,
          dtype=torch.float64) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    y = sum((0.7 ** (h - 1)) * torch.sin(2 * math.pi * f0 * h * t + 0.3 * h) for h in range(1, n_harm + 1))
    return (y * torch.exp(-decay * t)).to(dtype)


def _signals(dtype=torch.float64) -> torch.Tensor:
    """(3, 1, T): a decaying harmonic note, a noisy tone, a chirp-ish noise burst."""
    g = torch.Generator().manual_seed(1234)
    T = int(1.5 * SR)
    a = _tone(196.0, n_harm=8, decay=2.0)
    b = 0.5 * _tone(440.0) + 0.05 * torch.randn(T, generator=g, dtype=torch.float64)
    env = torch.linspace(0, 1, T, dtype=torch.float64) ** 2
    c = env * torch.randn(T, generator=g, dtype=torch.float64) * 0.3
    return torch.stack([a, b, c])[:, None, :].to(dtype)


@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa")


def _lr_mag(librosa, y: np.ndarray) -> np.ndarray:
    return np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="constant", window="hann"))


# ------------------------------------------------------------------------------------------------------------------
# Against librosa
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_frame_features_match_librosa(librosa, dtype, rtol):
    x = _signals(dtype)
    feats = frame_features(x, SR, n_fft=N_FFT, hop=HOP)
    n_frames = 1 + x.shape[-1] // HOP
    for k in FRAME_FEATURES:
        assert feats[k].shape == (3, n_frames) and feats[k].dtype == dtype
    kw = dict(sr=SR, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="constant", window="hann")
    for i in range(3):
        y = x[i, 0].double().numpy()
        ref = {
            "centroid": librosa.feature.spectral_centroid(y=y, **kw)[0],
            "spread": librosa.feature.spectral_bandwidth(y=y, **kw)[0],
            "flatness": librosa.feature.spectral_flatness(y=y, n_fft=N_FFT, hop_length=HOP, center=True,
                                                          pad_mode="constant")[0],
        }
        for k, r in ref.items():
            np.testing.assert_allclose(feats[k][i].double().numpy(), r, rtol=rtol, atol=rtol * 1e-3, err_msg=k)
        roll = librosa.feature.spectral_rolloff(y=y, roll_percent=0.95, **kw)[0]
        got = feats["rolloff"][i].double().numpy()
        if dtype == torch.float64:
            np.testing.assert_array_equal(got, roll)
        else:  # float32 cumulative sums may move the crossing by a bin
            assert np.abs(got - roll).max() <= SR / N_FFT + 1e-6
        rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP, center=True, pad_mode="constant")[0]
        np.testing.assert_allclose(feats["rms"][i].double().numpy(), rms, rtol=1e-5, atol=1e-7)


def test_higher_moments_slope_flux_match_numpy(librosa):
    x = _signals()
    feats = frame_features(x, SR)
    f = np.arange(N_FFT // 2 + 1) * SR / N_FFT
    for i in range(3):
        S = _lr_mag(librosa, x[i, 0].numpy())  # (K, M), independent STFT
        p = S / S.sum(axis=0, keepdims=True)
        mu = (f[:, None] * p).sum(0)
        var = (((f[:, None] - mu) ** 2) * p).sum(0)
        skew = (((f[:, None] - mu) ** 3) * p).sum(0) / var ** 1.5
        kurt = (((f[:, None] - mu) ** 4) * p).sum(0) / var ** 2
        np.testing.assert_allclose(feats["skewness"][i].numpy(), skew, rtol=1e-8)
        np.testing.assert_allclose(feats["kurtosis"][i].numpy(), kurt, rtol=1e-8)
        for m in (0, 7, 40):
            slope = np.polyfit(f, p[:, m], 1)[0]
            np.testing.assert_allclose(feats["slope"][i, m].item(), slope, rtol=1e-7)
        flux = np.concatenate([[0.0], np.sqrt((np.diff(S, axis=1) ** 2).sum(0))])
        np.testing.assert_allclose(feats["flux"][i].numpy(), flux, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("htk", [True, False])
def test_mfcc_matches_librosa(librosa, htk):
    x = _signals()
    x[1] *= 1e-3  # different levels: top_db is per item
    got = mfcc(x, SR, n_mfcc=10, n_fft=N_FFT, hop=HOP, n_mels=128, htk=htk)
    assert got.shape == (3, 10, 1 + x.shape[-1] // HOP)
    for i in range(3):
        ref = librosa.feature.mfcc(y=x[i, 0].numpy(), sr=SR, n_mfcc=10, n_fft=N_FFT, hop_length=HOP, n_mels=128,
                                   htk=htk, center=True, pad_mode="constant", dct_type=2, norm="ortho")
        # librosa builds its filterbank in float32: agreement to ~1e-6 dB
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [372 * SR / N_FFT, 440.0, 3000.0])
def test_sine_centroid_is_its_frequency(f0):
    feats = frame_features(_tone(f0)[None, None], SR)
    inner = feats["centroid"][0, 8:-8]  # frames fully inside the signal
    assert torch.allclose(inner, torch.full_like(inner, f0), rtol=2e-3)
    assert float(feats["flatness"][0, 8:-8].max()) < 1e-3
    roll = feats["rolloff"][0, 8:-8]
    assert float((roll - f0).abs().max()) < 0.01 * f0 + 3 * SR / N_FFT


def test_white_noise_flatness():
    # Per frame, the power of a Gaussian bin is exponential: geometric / arithmetic mean -> exp(-gamma) ~ 0.5615.
    x = torch.randn(2, 1, 5 * SR, dtype=torch.float64)
    flat = frame_features(x, SR)["flatness"][:, 8:-8]
    assert abs(float(flat.mean()) - math.exp(-EULER_GAMMA)) < 0.01
    assert float(flat.min()) > 0.5


def test_pitch_estimate():
    x = torch.stack([_tone(220.0), _tone(110.0, n_harm=6, decay=1.5), _tone(82.41, n_harm=10)])[:, None]
    p = estimate_pitch(x, SR)
    np.testing.assert_allclose(p.numpy(), [220.0, 110.0, 82.41], rtol=5e-3)


def test_functionals_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(7)
    frames = {"a": torch.randn(4, 50, generator=g, dtype=torch.float64).exp(),
              "b": torch.rand(4, 50, generator=g, dtype=torch.float64)}
    out = functionals(frames)
    assert out.shape == (4, 24)
    names = functional_names(frames)
    for j, name in enumerate(names):
        key = name.removeprefix("delta_").rsplit("_", 1)[0]
        stat = name.rsplit("_", 1)[1]
        seq = frames[key].numpy()
        if name.startswith("delta_"):
            seq = np.diff(seq, axis=1)
        ref = {"mean": seq.mean(1), "std": seq.std(1), "skew": stats.skew(seq, axis=1),
               "kurtosis": stats.kurtosis(seq, axis=1), "min": seq.min(1), "max": seq.max(1)}[stat]
        np.testing.assert_allclose(out[:, j].numpy(), ref, rtol=1e-10, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------------------------------------
# The AutoFX vector
# ------------------------------------------------------------------------------------------------------------------


def test_feature_names_layout():
    assert len(FEATURE_NAMES) == 163 and len(set(FEATURE_NAMES)) == 163
    assert "delta_flux_min" not in FEATURE_NAMES
    assert FEATURE_NAMES[0] == "centroid_mean" and FEATURE_NAMES[-1] == "flatness_per_pitch_max"
    assert sum(n.startswith("mfcc") for n in FEATURE_NAMES) == 20
    assert sum("_per_pitch_" in n for n in FEATURE_NAMES) == 8 * 6


def test_autofx_features_consistent_with_parts():
    x = _signals()
    v = autofx_features(x, SR)
    assert v.shape == (3, 163) and v.dtype == torch.float64
    feats = frame_features(x, SR)
    fun = functionals({k: feats[k] for k in SPECTRAL_FEATURES})
    col = {n: j for j, n in enumerate(FEATURE_NAMES)}
    for j, n in enumerate(functional_names(SPECTRAL_FEATURES)):
        if n in col:
            torch.testing.assert_close(v[:, col[n]], fun[:, j], rtol=1e-12, atol=0)
    cc = mfcc(x, SR)
    torch.testing.assert_close(v[:, col["mfcc3_mean"]], cc[:, 3].mean(-1))
    torch.testing.assert_close(v[:, col["mfcc0_max"]], cc[:, 0].amax(-1))
    pitch = estimate_pitch(x, SR)
    torch.testing.assert_close(v[:, col["centroid_per_pitch_mean"]], feats["centroid"].mean(-1) / pitch)


@pytest.mark.parametrize("sr", [SR, 44100])
def test_batch_independence_and_determinism(sr):
    g = torch.Generator().manual_seed(3)
    T = int(1.5 * sr)
    x = torch.randn(4, 2, T, generator=g) * torch.tensor([1.0, 0.1, 1e-3, 0.5])[:, None, None]
    x[3] = torch.sin(torch.arange(T) * 2 * math.pi * 330 / sr)  # a different kind of item
    v = autofx_features(x, sr)
    assert v.shape == (4, 163) and v.dtype == torch.float32
    assert torch.equal(v, autofx_features(x, sr))  # deterministic
    for i in (0, 2, 3):
        torch.testing.assert_close(autofx_features(x[i:i + 1], sr)[0], v[i], rtol=2e-4, atol=1e-6)
    # channels are averaged: (L + R) / 2 as one channel gives the same vector
    torch.testing.assert_close(autofx_features(x.mean(1, keepdim=True), sr), v, rtol=1e-5, atol=1e-6)


def test_stft_power_and_magnitude_against_numpy_and_their_gradients():
    """|STFT|^2 and |STFT| against numpy's rfft of the same centred, zero-padded, Hann-windowed frames; float64
    gradcheck of both on noise; a zero gradient (not NaN, not inf) on digital silence."""
    from fxlens.features import stft_magnitude, stft_power

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    n_fft, hop = 256, 64
    padded = np.pad(x.numpy(), ((0, 0), (n_fft // 2, n_fft // 2)))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[:, i * hop:i * hop + n_fft] for i in range(1 + 1000 // hop)], -1)  # (B, n_fft, M)
    ref = np.abs(np.fft.rfft(frames * window[None, :, None], axis=1)) ** 2
    np.testing.assert_allclose(stft_power(x, n_fft, hop).numpy(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stft_magnitude(x, n_fft, hop).numpy(), np.sqrt(ref), rtol=1e-10, atol=1e-10)
    small = x[:1, :200].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: stft_power(a, 64, 32), (small,))
    assert torch.autograd.gradcheck(lambda a: stft_magnitude(a, 64, 32), (small,))
    silent = torch.zeros(1, 512, dtype=torch.float64, requires_grad=True)
    for fn in (stft_power, stft_magnitude):
        (grad,) = torch.autograd.grad(fn(silent, 64, 32).sum(), silent)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_silence_is_finite_and_defined():
    x = torch.zeros(3, 2, int(1.5 * SR))
    x[1, :, : SR // 2] = 0.5 * torch.sin(torch.arange(SR // 2) * 2 * math.pi * 440 / SR)  # then silence
    feats = frame_features(x, SR)
    for k, f in feats.items():
        assert torch.isfinite(f).all(), k
    for k in ("centroid", "spread", "skewness", "kurtosis", "slope", "rolloff", "flux", "rms"):
        assert float(feats[k][0].abs().max()) == 0.0, k
    assert torch.all(feats["flatness"][0] == 1.0)
    assert feats["centroid"][1, -1] == 0.0 and feats["centroid"][1, 5] > 0
    v = autofx_features(x, SR)
    assert torch.isfinite(v).all()
    assert torch.isfinite(mfcc(x, SR)).all()
    assert torch.isfinite(estimate_pitch(x, SR)).all()


def test_gradient_through_the_features_matches_finite_differences_and_survives_silence():
    """A matching objective needs d(features)/d(audio). Reference: central finite differences (float64) along a
    random direction, on noise (every frame sounding). Digital silence is a discontinuity (a silent frame's centroid
    is 0, a whisper's is kHz), so there the gradient must only be finite: 0 on silent frames, not NaN."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 2048, generator=g, dtype=torch.float64) * 0.1
    d = torch.randn(x.shape, generator=g, dtype=torch.float64)
    w = torch.randn(len(FEATURE_NAMES), generator=g, dtype=torch.float64)

    def f(a):
        return autofx_features(a, SR, n_fft=256, hop=64)[0]

    xx = x.clone().requires_grad_(True)
    jac = torch.stack([torch.autograd.grad(f(xx)[i], xx, retain_graph=True)[0].flatten() for i in range(len(w))])
    eps = 1e-6
    fd = ((f(x + eps * d) - f(x - eps * d)) / (2 * eps)).numpy()
    an = (jac @ d.flatten()).numpy()
    np.testing.assert_allclose(an, fd, rtol=1e-4, atol=1e-6)
    # float32, a note after digital silence, at 44.1 kHz through the torch decimator (as a matching objective
    # computes them): every feature's gradient is finite
    from fxlens.features.export import decimate2

    t = torch.arange(int(1.5 * 2 * SR)) / (2 * SR)
    note = 0.3 * torch.sin(2 * math.pi * 220 * t) * torch.exp(-3 * t)
    note[:2000] = 0.0
    x32 = torch.stack([note, note]).unsqueeze(0).float().requires_grad_(True)
    v = autofx_features(x32, 2 * SR, resample=decimate2)
    (grad,) = torch.autograd.grad((v[0] * w.float()).sum(), x32)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_short_clip_finite():
    x = torch.randn(2, 1, 300)  # one frame: deltas are a single 0
    v = autofx_features(x, SR)
    assert v.shape == (2, 163) and torch.isfinite(v).all()


def test_bad_input():
    with pytest.raises(ParameterError):
        autofx_features(torch.zeros(100), SR)
    with pytest.raises(ParameterError):
        frame_features(torch.zeros(1, 100), SR)
    with pytest.raises(ParameterError):
        mfcc(torch.zeros(1, 1, 1000), SR, n_mfcc=200)


# --- band statistics of the log-mel (the band-statistics encoder's input) ----------------------------------------


def _band_statistics_loop(mel: np.ndarray) -> np.ndarray:
    """Plain numpy, one clip (2, M, N): the documented statistics, written out term by term."""
    L, R = mel[0].astype(np.float64), mel[1].astype(np.float64)
    out = []
    for x in ((L + R) / 2, L - R):
        out += [x.mean(1), x.std(1), np.abs(np.diff(x, axis=1)).mean(1), x.max(1) - x.min(1)]

    def ac(seq, lags):
        d = seq - seq.mean()
        e = (d ** 2).mean() + 1e-6
        return [np.dot(d[:-k], d[k:]) / (len(d) - k) / e if k < len(d) else 0.0 for k in lags]

    mid = (L + R) / 2
    out.append(np.array(ac(mid.mean(0), range(1, 65))))
    M = mel.shape[1]
    for g in range(8):
        out.append(np.array(ac(mid[g * M // 8:(g + 1) * M // 8].mean(0), (2, 4, 8, 16, 32, 48))))
    return np.concatenate(out)


def test_band_statistics_match_a_numpy_loop_and_closed_forms():
    from fxlens.features.mel import band_statistics, band_statistics_size

    g = torch.Generator().manual_seed(0)
    mel = torch.rand(3, 2, 64, 90, generator=g) * 2 - 1
    got = band_statistics(mel)
    assert got.shape == (3, band_statistics_size(64)) == (3, 624)
    for i in range(3):
        np.testing.assert_allclose(got[i].numpy(), _band_statistics_loop(mel[i].numpy()), rtol=1e-4, atol=1e-5)
    # closed forms: a band envelope cos(2 pi n / P) has autocorrelation ~ cos(2 pi k / P); identical channels have
    # no side difference; a constant spectrum has no spread, flux or range
    n = torch.arange(400, dtype=torch.float32)
    env = 0.5 * torch.cos(2 * np.pi * n / 20)
    mel = env.expand(1, 2, 64, 400).clone()
    s = band_statistics(mel)[0]
    ac = s[512: 512 + 64]
    for k in (5, 10, 20, 40):
        assert float(ac[k - 1]) == pytest.approx(np.cos(2 * np.pi * k / 20), abs=0.03)
    side = s[256:512]
    assert float(side.abs().max()) == 0.0
    flat = band_statistics(torch.full((1, 2, 64, 50), 0.3))[0]
    assert float(flat[64:256].abs().max()) < 1e-6  # std, flux and range of the mid
    # a clip shorter than the longest lag: those lags are 0, nothing undefined
    short = band_statistics(torch.rand(1, 2, 64, 22, generator=g))
    assert torch.isfinite(short).all() and float(short[0, 512 + 21:512 + 64].abs().max()) == 0.0


def test_band_statistics_version_2_adds_quantiles_skewness_and_rising_flux_as_numpy_and_scipy_compute_them():
    from scipy.stats import skew

    from fxlens.features.mel import band_statistics, band_statistics_size

    g = torch.Generator().manual_seed(1)
    mel = torch.rand(2, 2, 64, 173, generator=g) * 2 - 1
    v1, v2 = band_statistics(mel), band_statistics(mel, version=2)
    assert v2.shape == (2, band_statistics_size(64, 2)) == (2, 624 + 640)
    assert torch.equal(v2[:, :624], v1)  # version 1's values come first, unchanged
    for i in range(2):
        L, R = mel[i, 0].double().numpy(), mel[i, 1].double().numpy()
        mid, side = (L + R) / 2, L - R
        want = np.concatenate([
            np.percentile(mid, [5, 25, 50, 75, 95], axis=1).reshape(-1),  # quantile-major, band-minor
            skew(mid, axis=1),
            np.clip(np.diff(mid, axis=1), 0, None).mean(1),
            np.percentile(side, [10, 50, 90], axis=1).reshape(-1)])
        np.testing.assert_allclose(v2[i, 624:].numpy(), want, rtol=1e-4, atol=1e-5)
    # a steady band has no skewness (not 0/0); a single frame has no flux; an unknown version is refused
    steady = band_statistics(torch.full((1, 2, 64, 40), -0.2), version=2)
    assert torch.isfinite(steady).all() and float(steady[0, 624 + 320:624 + 384].abs().max()) == 0.0
    assert torch.isfinite(band_statistics(torch.rand(1, 2, 64, 1, generator=g), version=2)).all()
    with pytest.raises(ParameterError, match="version"):
        band_statistics(mel, version=3)


def test_stereo_image_against_closed_forms():
    """L = s + d, R = s - d with independent white noises: mid = s and side = d, so side/mid is
    10 log10(var d / var s) in every band and the L/R correlation (var s - var d) / (var s + var d); mono reads
    correlation 1 and the -60 dB floor, opposite polarity -1; a tone in the side shows in its own band only."""
    from fxlens.features.recognition import EFFECT_FEATURE_NAMES, STEREO_BANDS_HZ, effect_features, stereo_image

    sr, n = 44100, 4 * 44100
    g = torch.Generator().manual_seed(0)
    s, d = 0.2 * torch.randn(n, generator=g), 0.1 * torch.randn(n, generator=g)
    st = stereo_image(torch.stack([s + d, s - d]), sr)
    want_db = 10 * math.log10(0.1 ** 2 / 0.2 ** 2)  # -6.02 dB
    assert st["side_mid_db"] == pytest.approx(want_db, abs=0.15)
    assert all(b["side_mid_db"] == pytest.approx(want_db, abs=0.5) for b in st["bands"])
    assert st["lr_correlation"] == pytest.approx((0.04 - 0.01) / (0.04 + 0.01), abs=0.02)
    mono = stereo_image(torch.stack([s, s]), sr)
    assert mono["lr_correlation"] == 1.0 and mono["side_mid_db"] == -60.0
    assert stereo_image(s[None], sr)["side_mid_db"] == -60.0  # one channel counts as L = R
    assert stereo_image(torch.stack([s, -s]), sr)["lr_correlation"] == pytest.approx(-1.0)
    t = torch.arange(n) / sr
    tone = 0.05 * torch.sin(2 * math.pi * 3000.0 * t)  # inside the 2.7-4.1 kHz group only
    st = stereo_image(torch.stack([s + tone, s - tone]), sr)
    inside = [k for k, (lo, hi) in enumerate(STEREO_BANDS_HZ) if lo <= 3000.0 <= hi]
    assert len(inside) == 1
    levels = [b["side_mid_db"] for b in st["bands"]]
    assert levels[inside[0]] > -30.0 and max(v for k, v in enumerate(levels) if k != inside[0]) < -40.0
    # the same measures are recognition features, per clip
    feats = effect_features(torch.stack([s + d, s - d])[None], sr)[0]
    i = EFFECT_FEATURE_NAMES.index("lr_correlation")
    assert float(feats[i]) == pytest.approx(stereo_image(torch.stack([s + d, s - d]), sr)["lr_correlation"], abs=1e-5)
    with pytest.raises(ParameterError, match="1-2 channels"):
        stereo_image(torch.zeros(3, n), sr)
    with pytest.raises(ParameterError, match="44100 Hz"):
        stereo_image(torch.zeros(2, n), 48000)

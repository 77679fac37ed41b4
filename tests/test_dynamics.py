"""Compressor, MultibandCompressor and Limiter against independent references.

References: the soft-knee static curve of Giannoulis, Massberg & Reiss (JAES 2012, eq. 4) written out here; the
one-pole step response closed form; scipy.signal's Butterworth designs for the Linkwitz-Riley bands;
torchcomp.limiter_gain for the limiter; float64 torch.autograd.gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx.dynamics import (
    Compressor,
    Limiter,
    MultibandCompressor,
    compressor,
    limiter,
    limiter_gain,
    multiband_compressor,
    split_bands,
)
from fxlens.fx.effect import effect_class, get_effect

SR = 44100


def db(a) -> float:
    return 20.0 * math.log10(float(a))


def alpha(ms: float, sr: int = SR) -> float:
    """One-pole coefficient for a 10-90 % time of `ms` (torchcomp's ms2coef convention, written out)."""
    return 1.0 - math.exp(-2200.0 / (ms * sr))


def giannoulis_static(xg: float, thr: float, ratio: float, knee: float) -> float:
    """Output level y_G (dB) for input level x_G (dB): Giannoulis, Massberg & Reiss 2012, eq. 4."""
    if 2 * (xg - thr) < -knee:
        return xg
    if knee > 0 and 2 * abs(xg - thr) <= knee:  # (W = 0: the knee is a corner, the two lines meet at T)
        return xg + (1 / ratio - 1) * (xg - thr + knee / 2) ** 2 / (2 * knee)
    return thr + (xg - thr) / ratio


def sine(freq: float, seconds: float, amp: float = 1.0, sr: int = SR, channels: int = 2) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32).expand(1, channels, -1).contiguous()


MB_DEFAULTS = dict(
    low_freq_hz=200.0,
    high_freq_hz=3000.0,
    low_threshold_db=-20.0,
    low_ratio=4.0,
    low_attack_ms=5.0,
    low_release_ms=100.0,
    mid_threshold_db=-20.0,
    mid_ratio=4.0,
    mid_attack_ms=5.0,
    mid_release_ms=100.0,
    high_threshold_db=-20.0,
    high_ratio=4.0,
    high_attack_ms=5.0,
    high_release_ms=100.0,
    knee_db=6.0,
    mix=1.0,
)


# ---------------------------------------------------------------------------------------------------------------
# compressor
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thr, ratio, knee", [(-20.0, 4.0, 6.0), (-30.0, 10.0, 12.0), (-10.0, 2.0, 0.0)])
def test_static_curve_matches_soft_knee_formula(thr, ratio, knee):
    # a long sustained 1 kHz sine: fast attack, slow release -> the steady-state gain is the static curve at the
    # sine's peak level (the detector is a peak detector)
    levels = [thr - 15, thr - knee / 2 - 1, thr - knee / 4, thr, thr + knee / 4, thr + knee / 2 + 1, thr + 15]
    levels = torch.tensor([v for v in levels if v <= 0])
    x = sine(1000.0, 1.0) * (10 ** (levels / 20))[:, None, None]  # one level per batch item
    y = compressor(x, SR, thr, ratio, attack_ms=0.1, release_ms=1000.0, knee_db=knee)
    for tail_in, tail_out in zip(x[..., -SR // 4 :], y[..., -SR // 4 :]):
        in_db = db(tail_in.abs().max())
        measured_gain = db(tail_out.abs().max()) - in_db
        expected_gain = giannoulis_static(in_db, thr, ratio, knee) - in_db
        assert measured_gain == pytest.approx(expected_gain, abs=0.1), (in_db, measured_gain, expected_gain)


def test_knee_is_continuous_and_hard_knee_is_corner():
    # input levels on a fine grid through the knee, one DC signal per level in the batch: steady-state gain
    levels = torch.linspace(-40.0, 0.0, 81)
    x = (10 ** (levels / 20))[:, None, None].expand(-1, 2, 2000).contiguous()
    for knee in (0.0, 6.0, 12.0):
        y = compressor(x, SR, -20.0, 5.0, 0.1, 50.0, knee_db=knee)
        gain = 20 * torch.log10(y[:, 0, -1] / x[:, 0, -1])
        expected = torch.tensor([giannoulis_static(float(v), -20.0, 5.0, knee) - float(v) for v in levels])
        assert torch.allclose(gain.double(), expected.double(), atol=1e-3)


def _dc_steps(levels_db, lengths) -> torch.Tensor:
    """A stereo DC signal holding each level for its length in samples: the peak detector reads exactly that level."""
    amps = [torch.full((n,), 10 ** (v / 20), dtype=torch.float64) for v, n in zip(levels_db, lengths)]
    return torch.cat(amps).expand(1, 2, -1).contiguous()


@pytest.mark.parametrize("attack_ms, release_ms", [(5.0, 50.0), (1.0, 500.0), (30.0, 200.0)])
def test_attack_and_release_follow_one_pole_closed_form(attack_ms, release_ms):
    thr, ratio, seg = -30.0, 4.0, SR // 2
    tail = int(3 * release_ms * SR / 1000)
    x = _dc_steps([-50.0, -10.0, -50.0], [seg, seg, tail])  # below, 20 dB above, below threshold
    y = compressor(x, SR, thr, ratio, attack_ms, release_ms)
    g = 20 * torch.log10(y[0, 0] / x[0, 0]).numpy()
    target = (1 / ratio - 1) * (-10.0 - thr)  # -15 dB static gain reduction above threshold
    k = np.arange(seg)
    assert np.allclose(g[:seg], 0.0, atol=1e-9)
    attack = target * (1 - (1 - alpha(attack_ms)) ** (k + 1))
    assert np.allclose(g[seg : 2 * seg], attack, atol=1e-6)
    release = g[2 * seg - 1] * (1 - alpha(release_ms)) ** (np.arange(tail) + 1)
    assert np.allclose(g[2 * seg :], release, atol=1e-6)
    # and the times mean what the docs say: 10 % -> 90 % of the step in dB takes attack_ms / release_ms (to 1 %)
    rise = g[seg : 2 * seg] / target
    t_rise = (np.argmax(rise >= 0.9) - np.argmax(rise >= 0.1)) / SR * 1000
    assert t_rise == pytest.approx(attack_ms, rel=0.01, abs=0.05)
    fall = g[2 * seg :] / g[2 * seg - 1]
    t_fall = (np.argmax(fall <= 0.1) - np.argmax(fall <= 0.9)) / SR * 1000
    assert t_fall == pytest.approx(release_ms, rel=0.01, abs=0.05)


def test_release_is_honoured():
    seg = SR // 4
    x = _dc_steps([-10.0, -50.0], [seg, seg])
    y_fast = compressor(x, SR, -30.0, 4.0, 1.0, 50.0)
    y_slow = compressor(x, SR, -30.0, 4.0, 1.0, 500.0)
    # identical while the gain is being reduced (attack only), different once it recovers
    assert torch.equal(y_fast[..., :seg], y_slow[..., :seg])
    g_fast = 20 * torch.log10(y_fast[0, 0, seg:] / x[0, 0, seg:]).numpy()
    g_slow = 20 * torch.log10(y_slow[0, 0, seg:] / x[0, 0, seg:]).numpy()
    k = 2205  # 50 ms after the drop: the fast release has recovered 90 %, the slow one ~10 %
    g0 = float(20 * torch.log10(y_fast[0, 0, seg - 1] / x[0, 0, seg - 1]))
    assert g_fast[k] == pytest.approx(g0 * (1 - alpha(50.0)) ** (k + 1), abs=1e-6)
    assert g_slow[k] == pytest.approx(g0 * (1 - alpha(500.0)) ** (k + 1), abs=1e-6)
    assert abs(g_fast[k]) < 0.12 * abs(g0) and abs(g_slow[k]) > 0.79 * abs(g0)  # exp(-2.2) and exp(-0.22) left


def test_makeup_is_exact():
    torch.manual_seed(0)
    x = 0.5 * torch.randn(2, 2, 4000)
    y0 = compressor(x, SR, -20.0, 4.0, 5.0, 100.0, knee_db=6.0)
    for m in (0.0, 6.0, 24.0):
        y = compressor(x, SR, -20.0, 4.0, 5.0, 100.0, knee_db=6.0, makeup_db=m)
        assert torch.allclose(y, y0 * 10 ** (m / 20), rtol=1e-5, atol=1e-7)
    quiet = 1e-3 * x  # -60 dB: far below threshold and knee -> only the makeup
    y = compressor(quiet, SR, -20.0, 4.0, 5.0, 100.0, knee_db=6.0, makeup_db=12.0)
    assert torch.allclose(y, quiet * 10 ** (12 / 20), rtol=1e-6)


def test_ratio_one_is_identity_and_silence_is_safe():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 3000)
    assert torch.allclose(compressor(x, SR, -40.0, 1.0, 1.0, 50.0, knee_db=12.0), x, atol=1e-7)
    x = torch.zeros(2, 2, 1000)
    x[:, :, 500:] = torch.randn(2, 2, 500)  # starts with digital silence
    x.requires_grad_(True)
    thr = torch.tensor([-20.0, -10.0], requires_grad=True)
    y = compressor(x, SR, thr, 4.0, 1.0, 50.0, 6.0)
    assert torch.equal(y[..., :500], torch.zeros_like(y[..., :500]))
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(thr.grad).all()


def test_stereo_link():
    # a source hard left: max-linking compresses it as if it were mono, and both channels get the same gain
    mono = sine(1000.0, 0.5, 0.5, channels=1)
    left = torch.cat([mono, torch.zeros_like(mono)], dim=1)
    both = mono.expand(1, 2, -1)
    y_left = compressor(left, SR, -20.0, 4.0, 0.1, 500.0)
    y_both = compressor(both, SR, -20.0, 4.0, 0.1, 500.0)
    assert torch.allclose(y_left[:, 0], y_both[:, 0], atol=1e-6)
    assert torch.equal(y_left[:, 1], torch.zeros_like(y_left[:, 1]))
    # mean-linking reads the hard-left source 6 dB low: less gain reduction
    y_mean = compressor(left, SR, -20.0, 4.0, 0.1, 500.0, link="mean")
    g_max = db(y_left[0, 0, -4000:].abs().max() / 0.5)
    g_mean = db(y_mean[0, 0, -4000:].abs().max() / 0.5)
    in_db = db(0.5)
    assert g_mean == pytest.approx(giannoulis_static(in_db - 6.0206, -20, 4, 0) - (in_db - 6.0206), abs=0.1)
    assert g_max == pytest.approx(giannoulis_static(in_db, -20, 4, 0) - in_db, abs=0.1)


# ---------------------------------------------------------------------------------------------------------------
# crossover and multiband compressor
# ---------------------------------------------------------------------------------------------------------------
def _scipy_band_responses(f1: float, f2: float, freqs: np.ndarray, sr: int) -> list[np.ndarray]:
    """Complex LR4 band responses from scipy's Butterworth designs: LP2^2 AP, HP2^2 LP2^2, HP2^2 HP2^2."""

    def h(kind, f):
        return ss.sosfreqz(ss.butter(2, f, kind, fs=sr, output="sos"), worN=freqs, fs=sr)[1]

    lp1, hp1, lp2, hp2 = h("low", f1), h("high", f1), h("low", f2), h("high", f2)
    ap2 = lp2**2 + hp2**2
    return [lp1**2 * ap2, hp1**2 * lp2**2, hp1**2 * hp2**2]


@pytest.mark.parametrize("backend", ["fft", "iir"])
@pytest.mark.parametrize("f1, f2", [(200.0, 3000.0), (20.0, 12000.0), (500.0, 1000.0), (80.0, 5000.0)])
def test_crossover_sums_flat_and_bands_match_scipy(backend, f1, f2):
    n = 1 << 15
    # float64 is exact to rounding; float32 audio through the fft backend keeps the float64-designed response
    # (rounded to complex64), the iir backend filters in float64 internally
    tolerances = {torch.float64: 1e-9, torch.float32: 1e-3}
    for dtype, tol in tolerances.items():
        x = torch.zeros(1, 1, n, dtype=dtype)
        x[..., 0] = 1.0
        bands = split_bands(x, SR, f1, f2, backend=backend)[0, :, 0].double().numpy()  # (3, n) impulse responses
        spectra = np.fft.rfft(bands, axis=-1)
        total_db = 20 * np.log10(np.abs(spectra.sum(0)))
        assert np.abs(total_db).max() < min(tol, 0.1)  # the bar is 0.1 dB; float64 is exact to rounding
        freqs = np.fft.rfftfreq(n, 1 / SR)
        for got, ref in zip(spectra, _scipy_band_responses(f1, f2, freqs, SR)):
            ref_db = 20 * np.log10(np.abs(ref) + 1e-300)
            got_db = 20 * np.log10(np.abs(got) + 1e-300)
            passband = ref_db > -40
            assert np.abs(got_db - ref_db)[passband].max() < 0.1
            if dtype == torch.float64:
                assert np.abs(got - ref).max() < 1e-9  # phase too


def test_crossover_clamps_to_nyquist():
    x = torch.zeros(1, 1, 4096, dtype=torch.float64)
    x[..., 0] = 1
    bands = split_bands(x, 16000, 200.0, 12000.0)  # 12 kHz > Nyquist: clamped to 7.2 kHz
    assert torch.isfinite(bands).all()
    total = np.fft.rfft(bands.sum(1)[0, 0].numpy())
    assert np.abs(20 * np.log10(np.abs(total))).max() < 1e-6


def _tone_db(y: torch.Tensor, freq: float, sr: int = SR) -> float:
    """Level (dB re amplitude 1) of a steady tone in the last 0.5 s of y[0, 0], by a Hann-windowed FFT peak."""
    seg = y[0, 0, -sr // 2 :].double().numpy()
    win = np.hanning(len(seg))
    spec = np.abs(np.fft.rfft(seg * win)) * 2 / win.sum()
    k = int(round(freq * len(seg) / sr))
    return db(spec[k - 2 : k + 3].max())


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_multiband_compresses_only_the_loud_band(backend):
    # 60 Hz at -6 dB (low band) + 8 kHz at -26 dB (high band); the low band's compressor acts, the high band's sees
    # a level below its threshold
    t = torch.arange(SR, dtype=torch.float64) / SR
    sig = 0.5 * torch.sin(2 * math.pi * 60 * t) + 0.05 * torch.sin(2 * math.pi * 8000 * t)
    x = sig.float().expand(1, 2, -1).contiguous()
    p = dict(MB_DEFAULTS, knee_db=0.0, low_attack_ms=1.0, low_release_ms=1000.0)
    y = multiband_compressor(x, SR, **p, backend=backend)
    in_low = db(0.5)
    expected_low = giannoulis_static(in_low, -20.0, 4.0, 0.0)
    assert _tone_db(y, 60) == pytest.approx(expected_low, abs=0.3)  # the peak of the low band ~ the 60 Hz peak
    assert _tone_db(y, 8000) == pytest.approx(db(0.05), abs=0.05)  # untouched


def test_multiband_mix():
    torch.manual_seed(2)
    x = 0.5 * torch.randn(1, 2, 3000, dtype=torch.float64)
    y0 = multiband_compressor(x, SR, **dict(MB_DEFAULTS, mix=0.0))
    y1 = multiband_compressor(x, SR, **dict(MB_DEFAULTS, mix=1.0))
    ym = multiband_compressor(x, SR, **dict(MB_DEFAULTS, mix=0.3))
    # mix = 0 is the crossover alone: the sum of the uncompressed bands; the parallel mix is linear in mix
    assert torch.allclose(y0, split_bands(x, SR, 200.0, 3000.0).sum(1), atol=1e-12)
    assert torch.allclose(ym, 0.7 * y0 + 0.3 * y1, atol=1e-12)
    assert not torch.allclose(y0, y1, atol=1e-3)


def test_multiband_backends_agree():
    torch.manual_seed(3)
    x = 0.3 * torch.randn(2, 2, 8000)
    x[..., -2000:] = 0  # room for the responses to ring out inside the FFT
    a = multiband_compressor(x, SR, **MB_DEFAULTS, backend="fft")
    b = multiband_compressor(x, SR, **MB_DEFAULTS, backend="iir")
    assert torch.allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# limiter
# ---------------------------------------------------------------------------------------------------------------
def test_limiter_matches_torchcomp_limiter_gain():
    from torchcomp import limiter_gain as tc_limiter_gain
    from torchcomp import ms2coef

    torch.manual_seed(4)
    x = 0.8 * torch.randn(3, 2, 5000, dtype=torch.float64)  # no exact zeros, where torchcomp is well defined
    thr = torch.tensor([-6.0, -12.0, -1.0], dtype=torch.float64)
    at = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    rt = torch.tensor([20.0, 200.0, 1000.0], dtype=torch.float64)
    ours = limiter_gain(x, SR, thr, at, rt)
    ref = tc_limiter_gain(x.abs().amax(1), thr, ms2coef(at, SR), ms2coef(rt, SR))
    assert torch.allclose(ours, ref, atol=1e-12)


def test_limiter_holds_constant_magnitude_signals_exactly():
    # a square wave has a constant |x|: once settled, the output peak is exactly the threshold
    x = 0.9 * torch.sign(sine(440.0, 1.0) + 1e-9)
    for thr in (-1.0, -10.0, -20.0):
        y = limiter(x, SR, thr, attack_ms=1.0, release_ms=100.0)
        assert db(y[..., -SR // 2 :].abs().max()) == pytest.approx(thr, abs=0.01)


def test_limiter_sustained_sine_bound():
    # what it guarantees for a sustained sine after the attack (it is not a brickwall): the envelope droops
    # between waveform peaks with the release and rises with the attack, so the ceiling overshoot grows with
    # attack / release. Over the whole parameter range, <= +2.5 dB; with release >= 100 x attack, <= +0.3 dB.
    worst, worst_fast = -1e9, -1e9
    for freq in (50.0, 1000.0, 5000.0):
        x = sine(freq, 0.6, 0.95)
        for attack in (0.1, 1.0, 5.0):
            for release in (20.0, 100.0, 1000.0):
                y = limiter(x, SR, -10.0, attack, release)
                over = db(y[..., SR // 4 :].abs().max()) + 10.0
                assert over > -0.5  # and it does not over-limit
                worst = max(worst, over)
                if release >= 100 * attack:
                    worst_fast = max(worst_fast, over)
    assert worst <= 2.5 and worst_fast <= 0.3


def test_limiter_step_overshoot_and_lookahead():
    x = torch.zeros(1, 2, SR // 2)
    x[..., SR // 8 :] = 0.9  # a step 19 dB above a -20 dB threshold
    y = limiter(x, SR, -20.0, attack_ms=1.0, release_ms=100.0)
    assert db(y.abs().max()) > -20.0 + 10.0  # no lookahead: the transient goes through (not a brickwall)
    y = limiter(x, SR, -20.0, attack_ms=1.0, release_ms=100.0, lookahead_ms=5.0)
    assert db(y.abs().max()) < -20.0 + 0.05  # 5 attack times of lookahead: held
    assert db(y[..., -1000:].abs().max()) == pytest.approx(-20.0, abs=0.01)


def test_limiter_gradients_finite_on_leading_silence():
    x = torch.zeros(2, 2, 800, dtype=torch.float64)
    x[..., 400:] = torch.randn(2, 2, 400, dtype=torch.float64)
    x.requires_grad_(True)
    thr = torch.tensor([-6.0, -3.0], dtype=torch.float64, requires_grad=True)
    limiter(x, SR, thr, 1.0, 50.0).square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(thr.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# gradients, batches, determinism
# ---------------------------------------------------------------------------------------------------------------
def _p(*values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_gradcheck_compressor():
    torch.manual_seed(5)
    x = (0.5 * torch.randn(2, 2, 300, dtype=torch.float64)).requires_grad_(True)
    params = (_p(-20.0, -12.0), _p(4.0, 2.5), _p(2.0, 0.5), _p(30.0, 60.0), _p(6.0, 3.0), _p(2.0, 0.0))

    def fn(x, thr, ratio, att, rel, knee, makeup):
        return compressor(x, SR, thr, ratio, att, rel, knee, makeup)

    # fast mode (random projections of the Jacobian): the slow mode's thousands of calls take minutes on 2 cores
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


def test_gradcheck_limiter():
    torch.manual_seed(6)
    x = (0.8 * torch.randn(2, 2, 300, dtype=torch.float64)).requires_grad_(True)

    def fn(x, thr, att, rel):
        return limiter(x, SR, thr, att, rel)

    params = (_p(-6.0, -3.0), _p(0.5, 2.0), _p(30.0, 100.0))
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_gradcheck_multiband(backend):
    torch.manual_seed(7)
    x = (0.5 * torch.randn(2, 2, 200, dtype=torch.float64)).requires_grad_(True)
    names = list(MB_DEFAULTS)
    values = [_p(v * (1.0 if i % 2 else 0.9), v) for i, v in enumerate(MB_DEFAULTS.values())]
    values[names.index("mix")] = _p(0.6, 1.0)
    values[names.index("low_freq_hz")] = _p(2000.0, 300.0)  # corners the 200-sample signal can resolve
    values[names.index("high_freq_hz")] = _p(8000.0, 5000.0)

    def fn(x, *vals):
        return multiband_compressor(x, SR, **dict(zip(names, vals)), backend=backend)

    assert torch.autograd.gradcheck(fn, (x, *values), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.slow
@pytest.mark.parametrize("effect", ["compressor", "limiter", "multiband_fft", "multiband_iir"])
def test_gradcheck_slow_mode(effect):
    # the full Jacobian, element by element (minutes on 2 cores, hence slow)
    torch.manual_seed(10)
    x = (0.5 * torch.randn(2, 2, 64, dtype=torch.float64)).requires_grad_(True)
    if effect == "compressor":
        params = (_p(-20.0, -12.0), _p(4.0, 2.5), _p(0.2, 0.5), _p(10.0, 60.0), _p(6.0, 3.0), _p(2.0, 0.0))
        fn = lambda x, *p: compressor(x, SR, *p)  # noqa: E731
    elif effect == "limiter":
        params = (_p(-6.0, -3.0), _p(0.1, 0.3), _p(20.0, 100.0))
        fn = lambda x, *p: limiter(x, SR, *p)  # noqa: E731
    else:
        names = list(MB_DEFAULTS)
        params = [_p(v, v) for v in MB_DEFAULTS.values()]
        params[0], params[1] = _p(3000.0, 1500.0), _p(9000.0, 6000.0)
        backend = effect.split("_")[1]
        fn = lambda x, *p: multiband_compressor(x, SR, **dict(zip(names, p)), backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5)


def _batch_matches_items(fn, x, params):
    batched = fn(x, **params)
    for i in range(x.shape[0]):
        item = fn(x[i : i + 1], **{k: v[i : i + 1] for k, v in params.items()})
        assert torch.allclose(batched[i : i + 1], item, atol=1e-6, rtol=1e-5)


def test_batch_independence_and_determinism():
    torch.manual_seed(8)
    x = 0.5 * torch.randn(3, 2, 4000)
    f = lambda *v: torch.tensor(v)  # noqa: E731
    comp = dict(
        threshold_db=f(-30.0, -10.0, -20.0), ratio=f(2.0, 8.0, 4.0), attack_ms=f(0.5, 10.0, 50.0),
        release_ms=f(20.0, 300.0, 900.0), knee_db=f(0.0, 6.0, 12.0), makeup_db=f(0.0, 3.0, 10.0),
    )
    _batch_matches_items(lambda x, **p: compressor(x, SR, **p), x, comp)
    lim = dict(threshold_db=f(-1.0, -10.0, -6.0), attack_ms=f(0.1, 1.0, 5.0), release_ms=f(20.0, 100.0, 1000.0))
    _batch_matches_items(lambda x, **p: limiter(x, SR, **p), x, lim)
    mb = {k: f(v, v * 0.7 if k != "mix" else 0.4, v * 0.9) for k, v in MB_DEFAULTS.items()}
    for backend in ("fft", "iir"):
        _batch_matches_items(lambda x, **p: multiband_compressor(x, SR, backend=backend, **p), x, mb)
    a = multiband_compressor(x, SR, **mb)
    assert torch.equal(a, multiband_compressor(x, SR, **mb))
    assert torch.equal(compressor(x, SR, **comp), compressor(x, SR, **comp))


# ---------------------------------------------------------------------------------------------------------------
# module form, registry, errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, name, config",
    [
        (Compressor, "compressor", {"link": "max"}),
        (MultibandCompressor, "multiband_compressor", {"backend": "iir", "link": "mean"}),
        (Limiter, "limiter", {"lookahead_ms": 2.0, "link": "max"}),
    ],
)
def test_module_form(cls, name, config):
    assert effect_class(name) is cls
    fx = get_effect(name, **config)
    assert fx.config() == config and get_effect(name, **fx.config()).config() == config
    torch.manual_seed(9)
    x = 0.5 * torch.randn(2, 2, 2000)
    controls = torch.rand(2, fx.n_params, requires_grad=True)
    y = fx(x, SR, controls)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(controls.grad).all()
    assert fx(x, SR).shape == x.shape  # defaults
    # controls map to physical values that the functional form sees
    params = fx.to_physical(controls.detach())
    assert torch.allclose(fx.process(x, SR, **params), y.detach())
    for s in fx.specs:
        lo, hi = s.to_physical(torch.tensor([0.0, 1.0]))
        assert float(lo) == pytest.approx(s.min, rel=1e-5) and float(hi) == pytest.approx(s.max, rel=1e-5)


def test_ranges_cover_the_peers():
    comp = Compressor()
    assert comp.spec("threshold_db").min <= -40 and comp.spec("ratio").max >= 10 and comp.spec("ratio").min == 1
    assert comp.spec("release_ms").min <= 10 and comp.spec("release_ms").max >= 500
    mb = MultibandCompressor()
    assert mb.spec("low_freq_hz").min <= 20 and mb.spec("low_freq_hz").max >= 300
    assert mb.spec("high_freq_hz").min <= 2000 and mb.spec("high_freq_hz").max >= 12000
    assert mb.spec("low_freq_hz").max < mb.spec("high_freq_hz").min
    lim = Limiter()
    assert (lim.spec("threshold_db").min, lim.spec("attack_ms").max, lim.spec("release_ms").max) == (-20, 5, 1000)


def test_errors():
    x = torch.randn(1, 2, 100)
    with pytest.raises(ParameterError):
        compressor(x, SR, -20.0, 4.0, 0.0, 100.0)
    with pytest.raises(ParameterError):
        limiter(x, SR, -1.0, 1.0, -5.0)
    with pytest.raises(ParameterError):
        compressor(x, SR, -20.0, 4.0, 1.0, 100.0, link="side")
    with pytest.raises(ParameterError):
        split_bands(x, SR, 200.0, 3000.0, backend="fir")
    with pytest.raises(ParameterError):
        MultibandCompressor(backend="fir")
    with pytest.raises(ParameterError):
        Limiter(lookahead_ms=-1.0)
    with pytest.raises(InvalidAudioError):
        compressor(torch.randn(2, 100), SR, -20.0, 4.0, 1.0, 100.0)
    with pytest.raises(ParameterError):
        Compressor().resolve({"ratio": 50.0}, x)


@pytest.mark.parametrize("how", ["env", "call"])
def test_the_numba_compressor_keeps_the_callers_thread_count(how):
    """torchcomp's numba-parallel kernel starts numba's OpenMP pool at every core, in the OpenMP runtime torch shares;
    fxlens puts the caller's torch thread count back (set by OMP_NUM_THREADS or by torch.set_num_threads). A fresh
    interpreter each: the pool starts once per process."""
    import os
    import subprocess
    import sys

    code = ("import torch\n"
            + ("torch.set_num_threads(1)\n" if how == "call" else "")
            + "from fxlens.fx.effect import get_effect\n"
            "x = torch.randn(1, 2, 4410) * 0.1\n"
            "get_effect('multiband_compressor')(x, 44100)\n"
            "get_effect('compressor')(x, 44100)\n"
            "get_effect('limiter')(x, 44100)\n"
            "print(torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    if how == "env":
        env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_the_recursion_is_torchcomps_and_frees_its_graph():
    """`one_pole_recursion` gives torchcomp's own outputs and gradients (its `compressor_core`, float64), and unlike it
    leaves nothing behind: torchcomp's `setup_context` returns its ctx, which keeps the graph node and every input
    that requires grad alive for good. Reference: weak references to the inputs, dead once they are dropped."""
    import gc
    import weakref

    from torchcomp.core import compressor_core

    from fxlens.fx.dynamics import one_pole_recursion

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 500, generator=g, dtype=torch.float64, requires_grad=True)
    at = torch.tensor([0.3, 0.05], dtype=torch.float64, requires_grad=True)
    rt = torch.tensor([0.02, 0.2], dtype=torch.float64, requires_grad=True)
    zi = torch.zeros(2, dtype=torch.float64)
    ours, theirs = one_pole_recursion(x, zi, at, rt), compressor_core(x, zi, at, rt)
    assert torch.equal(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), (x, at, rt)),
                    torch.autograd.grad(theirs.square().sum(), (x, at, rt))):
        assert torch.equal(a, b)

    def inputs_freed(fn, backward: bool) -> bool:
        x = torch.rand(2, 500, generator=g, requires_grad=True)
        at = torch.full((2,), 0.1, requires_grad=True)
        y = fn(x, torch.zeros(2), at, torch.full((2,), 0.01))
        if backward:
            y.sum().backward()
        refs = [weakref.ref(x), weakref.ref(at)]
        del x, at, y
        gc.collect()
        return all(r() is None for r in refs)

    assert inputs_freed(one_pole_recursion, True) and inputs_freed(one_pole_recursion, False)
    # and through the effects that use it
    for name in ("compressor", "limiter", "multiband_compressor"):
        x = (torch.randn(1, 2, 4410, generator=g) * 0.3).requires_grad_(True)
        get_effect(name)(x, SR).square().mean().backward()
        ref = weakref.ref(x)
        del x
        gc.collect()
        assert ref() is None, name

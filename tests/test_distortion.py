"""Distortion effects: BE-AFX clipper, Taylor / Chebyshev waveshapers, AutoFX tanh distortion with tone shelves.

References are independent of the code under test: the BE-AFX equations written out in numpy, numpy's polynomial
and Chebyshev evaluators, scipy.signal.freqz of RBJ cookbook coefficients computed here, and pedalboard (an unseen
implementation of the same tanh + shelves chain) when it is installed.
"""

import math

import numpy as np
import pytest
import scipy.signal as ss
import torch
from numpy.polynomial import chebyshev as npcheb
from numpy.polynomial import polynomial as nppoly

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx import effect_names, get_effect
from fxlens.fx.distortion import (
    COEF_NAMES,
    chebyshev_waveshaper,
    clipper,
    cubic_clip,
    distortion,
    polynomial_waveshaper,
    taylor_waveshaper,
)

SR = 44100
DOUBLE_DB = 20 * math.log10(2.0)  # 6.0206 dB


# --- independent references -----------------------------------------------------------------------------------------


def np_clip_curve(v: np.ndarray, h: float) -> np.ndarray:
    """BE-AFX eqs. 1-2 (cubic as in the authors' code: x - 4x^3/27 on |x| <= 3/2, sign(x) beyond)."""
    hard = np.maximum(-1.0, np.minimum(1.0, v))
    cubic = np.where(np.abs(v) <= 1.5, v - 4.0 * v**3 / 27.0, np.sign(v))
    if h <= 1:
        return (1 - h) * np.tanh(v) + h * cubic
    return (2 - h) * cubic + (h - 1) * hard


def np_clipper(x: np.ndarray, drive_db: float, offset: float, h: float, compensate: bool = True) -> np.ndarray:
    """BE-AFX eq. 3: (f(g x + o, h) - f(o, h)) / g."""
    g = 10 ** (drive_db / 20)
    y = np_clip_curve(g * x + offset, h) - np_clip_curve(np.array(offset), h)
    return y / g if compensate else y


def cookbook_shelf(kind: str, f0: float, gain_db: float, q: float, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ Audio-EQ-Cookbook shelves, written out independently of fxlens.fx.filters."""
    A = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / fs
    cw, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    s = 2 * np.sqrt(A) * alpha
    if kind == "low":
        b = [A * ((A + 1) - (A - 1) * cw + s), 2 * A * ((A - 1) - (A + 1) * cw), A * ((A + 1) - (A - 1) * cw - s)]
        a = [(A + 1) + (A - 1) * cw + s, -2 * ((A - 1) + (A + 1) * cw), (A + 1) + (A - 1) * cw - s]
    else:
        b = [A * ((A + 1) + (A - 1) * cw + s), -2 * A * ((A - 1) + (A + 1) * cw), A * ((A + 1) + (A - 1) * cw - s)]
        a = [(A + 1) - (A - 1) * cw + s, 2 * ((A - 1) - (A + 1) * cw), (A + 1) - (A - 1) * cw - s]
    return np.array(b) / a[0], np.array(a) / a[0]


def full_scale_cosine(n_cycles: int = 10, n: int = 4410) -> tuple[torch.Tensor, np.ndarray]:
    theta = 2 * np.pi * n_cycles * np.arange(n) / n
    return torch.from_numpy(np.cos(theta))[None, None], theta


# --- clipper --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hardness", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("drive_db,offset", [(0.0, 0.0), (12.0, 0.0), (-10.0, 0.7), (20.0, 1.0), (6.0, 0.3)])
def test_clipper_transfer_curve_matches_beafx_equations(hardness, drive_db, offset):
    x = np.linspace(-1.0, 1.0, 2001)
    for compensate in (True, False):
        y = clipper(torch.from_numpy(x)[None, None], SR, drive_db, offset, hardness, remove_dc=False,
                    compensate=compensate)
        ref = np_clipper(x, drive_db, offset, hardness, compensate)
        np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=1e-12)


def test_cubic_clip_is_continuous_at_the_knee():
    # The paper prints "x + 4x^3/27 on [-2/3, 2/3]" (a jump from 0.71 to 1); the code's x - 4x^3/27 on |x| <= 3/2
    # meets +-1 with zero slope. Check value and slope on both sides of the knee.
    v = torch.tensor([1.5 - 1e-7, 1.5, 1.5 + 1e-7, -1.5], dtype=torch.float64, requires_grad=True)
    y = cubic_clip(v)
    np.testing.assert_allclose(y.detach().numpy(), [1.0, 1.0, 1.0, -1.0], atol=1e-12)
    (g,) = torch.autograd.grad(y.sum(), v)
    assert g.abs().max() < 1e-6


def test_clipper_static_curves_are_monotonic_and_bounded():
    x = torch.linspace(-2.0, 2.0, 4001, dtype=torch.float64)[None, None].expand(1, 1, -1)
    for drive in (-10.0, 0.0, 10.0, 20.0):
        for offset in (0.0, 0.5, 1.0):
            for h in np.linspace(0, 2, 9):
                y = clipper(x, SR, drive, offset, float(h), remove_dc=False, compensate=False)
                assert (y.diff(dim=-1) >= -1e-12).all(), (drive, offset, h)
                assert y.abs().max() <= 2.0 + 1e-12  # f in [-1, 1], minus f(o)


def test_clipper_level_compensation_small_signal_gain():
    x = 1e-5 * torch.sin(2 * math.pi * 440 * torch.arange(2048, dtype=torch.float64) / SR)[None, None]
    for offset in (0.0, 0.4, 1.0):
        expected = 1 - math.tanh(offset) ** 2  # tanh'(o): the small-signal gain of eq. 3 at h = 0, any drive
        for drive in (-10.0, 0.0, 20.0):
            y = clipper(x, SR, drive, offset, 0.0, remove_dc=False)
            assert torch.allclose(y, expected * x, rtol=1e-3, atol=0), (offset, drive)
    # hard and cubic curves have slope 1 at the origin: unity gain at offset 0 for every drive
    for h in (1.0, 2.0):
        assert torch.allclose(clipper(x, SR, 17.0, 0.0, h, remove_dc=False), x, rtol=1e-6, atol=0)
    # without compensation, +6.02 dB of drive doubles a small signal
    y0 = clipper(x, SR, 0.0, 0.0, 0.5, remove_dc=False, compensate=False)
    y6 = clipper(x, SR, DOUBLE_DB, 0.0, 0.5, remove_dc=False, compensate=False)
    assert torch.allclose(y6, 2 * y0, rtol=1e-6, atol=0)


def test_clipper_dc_removal():
    t = torch.arange(SR // 10, dtype=torch.float64) / SR
    x = torch.stack([torch.sin(2 * math.pi * 220 * t), 0.5 * torch.sin(2 * math.pi * 330 * t)])[None]
    y = clipper(x, SR, 20.0, 1.0, 0.7)  # strongly asymmetric: a lot of DC before removal
    assert y.mean(dim=-1).abs().max() < 1e-12
    raw = clipper(x, SR, 20.0, 1.0, 0.7, remove_dc=False)
    assert raw.mean(dim=-1).abs().min() > 1e-2
    assert torch.allclose(y, raw - raw.mean(dim=-1, keepdim=True))
    # the static stage (eq. 3's - f(o, h)) keeps silence silent
    assert clipper(torch.zeros(1, 2, 64), SR, 20.0, 1.0, 1.3, remove_dc=False).abs().max() == 0


# --- polynomial waveshapers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 12, 24])
def test_chebyshev_single_order_gives_a_pure_harmonic(k):
    x, theta = full_scale_cosine()
    coefs = {name: 0.0 for name in COEF_NAMES}
    coefs[f"coef_{k}"] = 1.0
    y = chebyshev_waveshaper(x, SR, 0.0, **coefs)[0, 0].numpy()
    w_k = 1.0 if k % 2 else 2.0  # even orders: |T_k(u) - T_k(0)| <= 2, normalized by 2
    np.testing.assert_allclose(y, np.cos(k * theta) / w_k, atol=1e-9)
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    harmonic_bin = 10 * k
    leak = np.delete(spectrum, harmonic_bin).sum()
    assert leak / spectrum[harmonic_bin] < 1e-15  # below -150 dB: only float64 rounding noise elsewhere


def test_chebyshev_harmonic_levels_follow_the_coefficients():
    x, _ = full_scale_cosine()
    levels = {1: 0.5, 3: -0.25, 5: 0.125}  # odd orders only, sum |c| < 1: no normalization
    y = chebyshev_waveshaper(x, SR, **{f"coef_{k}": v for k, v in levels.items()})[0, 0].numpy()
    amp = 2 * np.abs(np.fft.rfft(y)) / y.size
    for k, v in levels.items():
        assert amp[10 * k] == pytest.approx(abs(v), abs=1e-9)
    assert np.delete(amp, [10, 30, 50]).max() < 1e-9


@pytest.mark.parametrize("basis", ["taylor", "chebyshev"])
def test_polynomial_coefficients_reproduce_numpy_polynomials(basis):
    rng = np.random.default_rng(1)
    u = np.linspace(-0.999, 0.999, 1001)
    evaluate = nppoly.polyval if basis == "taylor" else npcheb.chebval
    shaper = taylor_waveshaper if basis == "taylor" else chebyshev_waveshaper
    for scale in (0.02, 0.5):  # sum_k w_k |c_k| below 1 (no rescaling) and above 1 (rescaled)
        c = rng.uniform(-1, 1, 24) * scale
        y = shaper(torch.from_numpy(u)[None, None], SR, 0.0, remove_dc=False,
                   **{f"coef_{k}": float(c[k - 1]) for k in range(1, 25)})[0, 0].numpy()
        full = np.r_[0.0, c]
        ref = evaluate(u, full) - evaluate(0.0, full)
        w = np.ones(24) if basis == "taylor" else np.where(np.arange(1, 25) % 2 == 0, 2.0, 1.0)
        ref = ref / max(1.0, float(np.sum(w * np.abs(c))))
        np.testing.assert_allclose(y, ref, atol=1e-12)


@pytest.mark.parametrize("basis", ["taylor", "chebyshev"])
def test_polynomial_output_is_bounded_for_any_coefficients(basis):
    g = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(8, 2, 4096, generator=g, dtype=torch.float64)  # far beyond full scale
    c = torch.rand(8, 24, generator=g, dtype=torch.float64) * 2 - 1
    for bound in ("clamp", "tanh"):
        y = polynomial_waveshaper(x, SR, 20.0, c, basis, bound, remove_dc=False)
        assert torch.isfinite(y).all() and y.abs().max() <= 1.0 + 1e-12


def test_polynomial_prebound_and_drive():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)[None, None]
    # identity coefficients: the output is the pre-bound itself
    assert torch.allclose(taylor_waveshaper(x, SR, 0.0, remove_dc=False), x.clamp(-1, 1))
    assert torch.allclose(chebyshev_waveshaper(x, SR, 6.0, bound="tanh", remove_dc=False),
                          torch.tanh(10 ** (6 / 20) * x))
    # +6.02 dB of drive doubles a small signal (identity coefficients, inside the clamp)
    small = 1e-3 * torch.randn(1, 2, 256, dtype=torch.float64)
    y0 = taylor_waveshaper(small, SR, 0.0, remove_dc=False)
    y6 = taylor_waveshaper(small, SR, DOUBLE_DB, remove_dc=False)
    assert torch.allclose(y6, 2 * y0, rtol=1e-12)


def test_polynomial_dc_removal():
    x, _ = full_scale_cosine()
    y = taylor_waveshaper(x, SR, coef_1=0.0, coef_2=0.8)  # u^2: mean 0.4 before removal
    assert abs(float(y.mean())) < 1e-12
    raw = taylor_waveshaper(x, SR, coef_1=0.0, coef_2=0.8, remove_dc=False)
    assert float(raw.mean()) == pytest.approx(0.4, abs=1e-9)


# --- AutoFX distortion ----------------------------------------------------------------------------------------------

SHELF_SETTINGS = [  # (low f, low dB, low Q, high f, high dB, high Q, drive dB)
    (50.0, 10.0, 2.0, 500.0, -10.0, 0.5, 0.0),
    (120.0, -6.0, 0.707, 1500.0, 8.0, 1.2, 12.0),
    (500.0, 4.0, 0.5, 2000.0, -3.0, 2.0, 30.0),
]


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_distortion_tone_shelves_match_cookbook_freqz(backend):
    # A tiny impulse keeps tanh in its linear region (tanh(g a) = g a (1 - (g a)^2 / 3)): the output is the
    # drive gain times the shelves' impulse response. Three settings at once also exercise batched parameters.
    n, amp = 32768, 1e-9
    x = torch.zeros(3, 1, n, dtype=torch.float64)
    x[:, :, 0] = amp
    cols = list(zip(*SHELF_SETTINGS))
    params = [torch.tensor(c, dtype=torch.float64) for c in cols]
    y = distortion(x, SR, params[6], *params[:6], mix=1.0, backend=backend)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    band = (freqs >= 20) & (freqs <= 20000)
    for i, (lf, lg, lq, hf, hg, hq, drive) in enumerate(SHELF_SETTINGS):
        measured = 20 * np.log10(np.abs(np.fft.rfft(y[i, 0].numpy())) / amp)
        ref = 0.0
        for b, a in (cookbook_shelf("low", lf, lg, lq, SR), cookbook_shelf("high", hf, hg, hq, SR)):
            _, h = ss.freqz(b, a, worN=freqs[band], fs=SR)
            ref = ref + 20 * np.log10(np.abs(h))
        np.testing.assert_allclose(measured[band], ref + drive, atol=0.1)


def test_distortion_drive_in_db_doubles_a_small_signal():
    x = 1e-6 * torch.randn(2, 2, 1024, dtype=torch.float64)
    y0 = distortion(x, SR, 0.0)
    y6 = distortion(x, SR, DOUBLE_DB)
    y20 = distortion(x, SR, 20.0)
    assert torch.allclose(y6, 2 * y0, rtol=1e-6, atol=1e-15)
    assert torch.allclose(y20, 10 * y0, rtol=1e-6, atol=1e-15)


def test_distortion_waveshaper_is_tanh_and_mix_blends():
    x = torch.linspace(-1, 1, 512, dtype=torch.float64)[None, None].repeat(1, 2, 1)
    flat = dict(low_shelf_gain=0.0, high_shelf_gain=0.0)
    for drive in (0.0, 20.0, 60.0):
        y = distortion(x, SR, drive, backend="iir", **flat)
        assert torch.allclose(y, torch.tanh(10 ** (drive / 20) * x), atol=1e-12)
        assert (y.diff(dim=-1) >= -1e-12).all()  # static curve monotonic (up to the filters' rounding)
    assert torch.equal(distortion(x, SR, 40.0, mix=0.0, backend="iir", **flat), x)
    half = distortion(x, SR, 40.0, mix=0.5, backend="iir", **flat)
    assert torch.allclose(half, 0.5 * x + 0.5 * torch.tanh(100 * x), atol=1e-12)


def test_distortion_matches_pedalboard():
    pb = pytest.importorskip("pedalboard")
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal((2, SR // 2))).astype(np.float32)
    board = pb.Pedalboard([
        pb.Distortion(drive_db=24.0),
        pb.LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=6.0, q=1.3),
        pb.HighShelfFilter(cutoff_frequency_hz=1200.0, gain_db=-7.0, q=0.6),
    ])
    ref = board(x, SR)
    y = distortion(torch.from_numpy(x).double()[None], SR, 24.0, 200.0, 6.0, 1.3, 1200.0, -7.0, 0.6, backend="iir")
    np.testing.assert_allclose(y[0].numpy(), ref, atol=2e-3)  # pedalboard (JUCE) filters run in float32


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_distortion_cabinet_is_a_4th_order_butterworth_lowpass(backend):
    # flat shelves and a tiny impulse (tanh linear): the wet path's response is the cabinet's alone, which must be
    # scipy's 4th-order Butterworth low-pass (bilinear, prewarped at the cutoff) — -3 dB at fc, -24 dB/octave
    n, amp = 32768, 1e-9
    x = torch.zeros(2, 1, n, dtype=torch.float64)
    x[:, :, 0] = amp
    freqs = np.fft.rfftfreq(n, 1 / SR)
    band = (freqs >= 20) & (freqs <= 20000)
    for fc in (3000.0, 8000.0):
        y = distortion(x, SR, 0.0, low_shelf_gain=0.0, high_shelf_gain=0.0, backend=backend, cabinet_lowpass_hz=fc)
        measured = 20 * np.log10(np.maximum(np.abs(np.fft.rfft(y[0, 0].numpy())), 1e-300) / amp)
        _, h = ss.freqz(*ss.butter(4, fc, "low", fs=SR), worN=freqs[band], fs=SR)
        ref = 20 * np.log10(np.abs(h))
        keep = ref > -80  # below that the fft backend's frequency sampling, not the design, sets the floor
        np.testing.assert_allclose(measured[band][keep], ref[keep], atol=0.05)
        assert torch.allclose(y[1], y[0])
    fx = get_effect("distortion", cabinet_lowpass_hz=3000.0)
    assert fx.config() == {"backend": "fft", "cabinet_lowpass_hz": 3000.0}
    assert get_effect("distortion").config() == {"backend": "fft"}  # no cabinet key: older presets read the same
    flat = {k: torch.tensor([v]) for k, v in (("low_shelf_freq", 100.0), ("low_shelf_gain", 0.0),
                                              ("low_shelf_q", 0.7), ("high_shelf_freq", 1000.0),
                                              ("high_shelf_gain", 0.0), ("high_shelf_q", 0.7))}
    b, a = fx.coefficients(SR, **flat)
    assert b.shape == a.shape == (1, 4, 3)
    for bad in (100.0, 30000.0, float("nan"), "4k", True):
        with pytest.raises(ParameterError, match="cabinet_lowpass_hz"):
            get_effect("distortion", cabinet_lowpass_hz=bad)


def _impulse_response_db(backend, **amp):
    """The wet path's magnitude response (dB) at drive 0 dB with flat shelves, from a tiny impulse (tanh linear)."""
    n, amp_in = 32768, 1e-9
    x = torch.zeros(1, 1, n, dtype=torch.float64)
    x[:, :, 0] = amp_in
    y = distortion(x, SR, 0.0, low_shelf_gain=0.0, high_shelf_gain=0.0, backend=backend, **amp)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    return freqs, 20 * np.log10(np.maximum(np.abs(np.fft.rfft(y[0, 0].numpy())), 1e-300) / amp_in)


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_distortion_input_highpass_is_a_2nd_order_butterworth(backend):
    for fc in (80.0, 700.0):
        freqs, measured = _impulse_response_db(backend, input_highpass_hz=fc)
        band = (freqs >= 20) & (freqs <= 20000)
        _, h = ss.freqz(*ss.butter(2, fc, "high", fs=SR), worN=freqs[band], fs=SR)
        ref = 20 * np.log10(np.abs(h))
        keep = ref > -80
        np.testing.assert_allclose(measured[band][keep], ref[keep], atol=0.05)


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_distortion_mid_peak_is_the_rbj_peaking_filter(backend):
    # reference: the RBJ peaking prototype H(s) = (s^2 + s A w0 / Q + w0^2) / (s^2 + s w0 / (A Q) + w0^2),
    # A = 10^(G/40), through scipy's bilinear transform with w0 prewarped: exact gain G at f0, 0 dB far from it
    for f0, gain_db in ((500.0, -12.0), (1500.0, 9.0)):
        freqs, measured = _impulse_response_db(backend, mid_gain_db=gain_db, mid_freq_hz=f0)
        band = (freqs >= 20) & (freqs <= 20000)
        A, w0, q = 10 ** (gain_db / 40), 2 * SR * math.tan(math.pi * f0 / SR), 0.7
        b, a = ss.bilinear([1.0, A * w0 / q, w0 ** 2], [1.0, w0 / (A * q), w0 ** 2], fs=SR)
        _, h = ss.freqz(b, a, worN=freqs[band], fs=SR)
        np.testing.assert_allclose(measured[band], 20 * np.log10(np.abs(h)), atol=0.05)
        at_f0 = np.interp(f0, freqs, measured)
        assert abs(at_f0 - gain_db) < 0.1


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_distortion_bias_adds_the_closed_form_second_harmonic(backend):
    # tanh(b + u) = tanh(b) + sech^2(b) u - sech^2(b) tanh(b) u^2 + O(u^3): for u = A cos(w t), the 2nd harmonic over
    # the fundamental is tanh(b) A / 2 (to O(A^2)); with b = 0 the curve is odd and there is none
    f, amp_in, n = 441.0, 0.01, 2 * SR
    t = np.arange(n) / SR
    x = torch.from_numpy(amp_in * np.cos(2 * np.pi * f * t))[None, None].repeat(1, 2, 1)
    last = slice(SR, 2 * SR)  # the last second: the coupling high-pass has settled, 441 whole periods
    for b in (0.0, 0.5):
        y = distortion(x, SR, 0.0, low_shelf_gain=0.0, high_shelf_gain=0.0, backend=backend, bias=b)[0, 0].numpy()
        spec = np.abs(np.fft.rfft(y[last]))
        h1, h2 = spec[441], spec[882]
        if b == 0.0:
            assert h2 / h1 < 1e-6
        else:
            np.testing.assert_allclose(h2 / h1, math.tanh(b) * amp_in / 2, rtol=0.02)
        assert abs(np.mean(y[last])) < 1e-6  # the coupling high-pass removed the DC of the even harmonics


def test_distortion_bias_matches_numpy_tanh_and_scipy_highpass():
    rng = np.random.default_rng(3)
    x = 0.3 * rng.standard_normal((1, 2, 4096))
    g, b = 10 ** (18 / 20), 0.4
    y = distortion(torch.from_numpy(x), SR, 18.0, low_shelf_gain=0.0, high_shelf_gain=0.0, backend="iir", bias=b)
    ref = ss.sosfilt(ss.butter(2, 20.0, "high", fs=SR, output="sos"), np.tanh(g * x + b) - np.tanh(b), axis=-1)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-9)


def test_distortion_amp_config_validates_and_round_trips():
    from fxlens.fx.chain import Chain

    fx = get_effect("distortion", input_highpass_hz=300.0, bias=0.2, mid_gain_db=-9.0, cabinet_lowpass_hz=5000.0)
    assert fx.config() == {"backend": "fft", "input_highpass_hz": 300.0, "bias": 0.2, "mid_gain_db": -9.0,
                           "mid_freq_hz": 700.0, "cabinet_lowpass_hz": 5000.0}
    assert get_effect("distortion", bias=0.0, mid_freq_hz=900.0).config() == {"backend": "fft"}  # stages off
    preset = Chain([(fx, {"drive_db": 30.0})]).to_preset(SR)
    again = Chain.from_preset(preset)
    assert again.to_preset(SR) == preset
    flat = {n: torch.tensor([v]) for n, v in zip(("low_shelf_freq", "low_shelf_gain", "low_shelf_q", "high_shelf_freq",
                                                  "high_shelf_gain", "high_shelf_q"), (100.0, 0.0, 0.7, 1e3, 0.0, 0.7))}
    b, a = fx.coefficients(SR, **flat)
    assert b.shape == a.shape == (1, 6, 3)  # coupling high-pass, 2 shelves, mid peak, 2 cabinet sections
    for key, bad in (("input_highpass_hz", 5.0), ("bias", -0.1), ("bias", None), ("mid_gain_db", 30.0),
                     ("mid_freq_hz", 50.0), ("input_highpass_hz", "low")):
        with pytest.raises(ParameterError, match=key):
            get_effect("distortion", **{key: bad})
    with pytest.raises(ParameterError, match="unknown distortion config"):
        get_effect("distortion", presence_db=3.0)


def test_distortion_tail_is_short():
    fx = get_effect("distortion")
    worst = {"low_shelf_freq": torch.tensor([50.0]), "low_shelf_gain": torch.tensor([-10.0]),
             "low_shelf_q": torch.tensor([2.0]), "high_shelf_freq": torch.tensor([500.0]),
             "high_shelf_gain": torch.tensor([10.0]), "high_shelf_q": torch.tensor([2.0])}
    assert 0.0 < fx.tail_seconds(worst) < 0.2


# --- protocol: gradients, module form, batches, determinism, errors -------------------------------------------------


def _p(*values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_gradcheck_clipper():
    x = (0.4 * torch.randn(2, 2, 48, dtype=torch.float64)).requires_grad_()
    # hardness away from the blend kinks at 0, 1, 2; the curve kinks at +-1 and +-1.5 are hit with probability 0
    for remove_dc, compensate in ((True, True), (False, False)):
        def fn(x, d, o, h):
            return clipper(x, SR, d, o, h, remove_dc=remove_dc, compensate=compensate)

        assert torch.autograd.gradcheck(fn, (x, _p(3.0, 12.0), _p(0.2, 0.8), _p(0.4, 1.6)))


@pytest.mark.parametrize("basis", ["taylor", "chebyshev"])
@pytest.mark.parametrize("bound", ["clamp", "tanh"])
def test_gradcheck_polynomial_waveshapers(basis, bound):
    x = (0.3 * torch.randn(2, 2, 64, dtype=torch.float64)).requires_grad_()
    shaper = taylor_waveshaper if basis == "taylor" else chebyshev_waveshaper
    c = (0.3 * torch.rand(2, 24, dtype=torch.float64) + 0.05) * torch.where(torch.rand(2, 24) < 0.5, -1.0, 1.0)
    c = c.double().requires_grad_()  # sum w|c| > 1 here, so the normalization's gradient is checked too

    def fn(x, drive, c):
        return shaper(x, SR, drive, bound=bound, **{f"coef_{k}": c[:, k - 1] for k in range(1, 25)})

    assert torch.autograd.gradcheck(fn, (x, _p(-3.0, 2.0), c))


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_gradcheck_distortion(backend):
    x = (0.2 * torch.randn(2, 2, 256, dtype=torch.float64)).requires_grad_()

    def fn(x, *p):
        return distortion(x, SR, *p, backend=backend)

    # the filters make the Jacobian dense: fast mode checks random projections of it (seconds, not a minute)
    params = (_p(6.0, 20.0), _p(80.0, 300.0), _p(4.0, -6.0), _p(0.7, 1.5), _p(800.0, 1800.0), _p(-5.0, 8.0),
              _p(1.0, 0.6), _p(0.8, 0.3))
    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


NAMES = ["clipper", "taylor_waveshaper", "chebyshev_waveshaper", "distortion"]


def test_effects_are_registered():
    assert set(NAMES) <= set(effect_names())
    assert get_effect("taylor_waveshaper").n_params == 25
    assert get_effect("distortion", backend="iir").config() == {"backend": "iir"}


@pytest.mark.parametrize("name", NAMES)
def test_module_form_with_normalized_controls(name):
    fx = get_effect(name)
    x = 0.5 * torch.randn(3, 2, 2048)
    controls = torch.rand(3, fx.n_params, requires_grad=True)
    y = fx(x, SR, controls)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    (grad,) = torch.autograd.grad(y.square().mean(), controls)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the module form is the functional form at the mapped physical values
    again = fx.process(x, SR, **fx.to_physical(controls))
    assert torch.allclose(y, again)
    # defaults: clipper / polynomial shapers at their defaults are gentle; every output is finite
    assert torch.isfinite(fx(x, SR)).all()


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence_and_determinism(name):
    fx = get_effect(name)
    x = 0.5 * torch.randn(4, 2, 3000)
    controls = torch.rand(4, fx.n_params)
    y = fx(x, SR, controls)
    for i in range(4):
        yi = fx(x[i : i + 1], SR, controls[i : i + 1])
        assert torch.allclose(y[i : i + 1], yi, atol=1e-5), i
    assert torch.equal(y, fx(x, SR, controls))


def test_polynomial_defaults_are_the_identity():
    fx = get_effect("chebyshev_waveshaper", remove_dc=False)
    x = 0.9 * torch.rand(2, 2, 512) - 0.45
    assert torch.allclose(fx(x, SR), x, atol=1e-6)


def test_errors():
    x = torch.randn(1, 2, 64)
    with pytest.raises(ParameterError):
        get_effect("distortion", backend="biquad")
    with pytest.raises(ParameterError):
        get_effect("taylor_waveshaper", bound="sigmoid")
    with pytest.raises(ParameterError, match="coef_25"):
        chebyshev_waveshaper(x, SR, coef_25=0.1)
    with pytest.raises(ParameterError):
        clipper(x, SR, torch.zeros(3))  # wrong batch size for a parameter
    with pytest.raises(InvalidAudioError):
        distortion(torch.randn(2, 64), SR)
    with pytest.raises(ParameterError):
        get_effect("clipper").resolve({"hardness": 2.5}, x)

"""Parametric and graphic EQ against independent references.

The reference biquads are the RBJ Audio-EQ-Cookbook formulas written out again here in numpy (not
`fxlens.fx.filters.biquad`), evaluated and applied by scipy.signal (sosfreqz, sosfilt).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx.effect import get_effect
from fxlens.fx.eq import (
    GRAPHIC_CENTERS_HZ,
    GRAPHIC_PARAM_NAMES,
    GraphicEQ,
    ParametricEQ,
    graphic_eq,
    graphic_eq_coefficients,
    parametric_eq,
    parametric_eq_coefficients,
    peak_ranges,
)
from fxlens.fx.filters import magnitude_db

SR = 44100


# ---------------------------------------------------------------------------------------------------------------
# independent reference: RBJ cookbook in numpy, cascade as scipy "sos"
# ---------------------------------------------------------------------------------------------------------------


def rbj_sos(kind: str, f0: float, q: float, gain_db: float, fs: float) -> np.ndarray:
    """One cookbook biquad as an sos row [b0, b1, b2, 1, a1, a2] (R. Bristow-Johnson, Audio EQ Cookbook)."""
    A = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * f0 / fs
    cw, sw = np.cos(w0), np.sin(w0)
    alpha = sw / (2.0 * q)
    if kind == "peaking":
        b = [1 + alpha * A, -2 * cw, 1 - alpha * A]
        a = [1 + alpha / A, -2 * cw, 1 - alpha / A]
    elif kind == "low_shelf":
        r = 2 * np.sqrt(A) * alpha
        b = [A * ((A + 1) - (A - 1) * cw + r), 2 * A * ((A - 1) - (A + 1) * cw), A * ((A + 1) - (A - 1) * cw - r)]
        a = [(A + 1) + (A - 1) * cw + r, -2 * ((A - 1) + (A + 1) * cw), (A + 1) + (A - 1) * cw - r]
    elif kind == "high_shelf":
        r = 2 * np.sqrt(A) * alpha
        b = [A * ((A + 1) + (A - 1) * cw + r), -2 * A * ((A - 1) + (A + 1) * cw), A * ((A + 1) + (A - 1) * cw - r)]
        a = [(A + 1) - (A - 1) * cw + r, 2 * ((A - 1) - (A + 1) * cw), (A + 1) - (A - 1) * cw - r]
    else:
        raise ValueError(kind)
    b, a = np.array(b), np.array(a)
    return np.concatenate([b / a[0], a / a[0]])


def ref_peq_sos(params: dict[str, float], n_peaks: int, fs: float) -> np.ndarray:
    """The documented cascade: low shelf, peaks 1..n, high shelf; frequencies clamped to 0.45 fs."""
    bands = [("low_shelf", "low_shelf")] + [("peaking", f"peak{k}") for k in range(1, n_peaks + 1)]
    bands += [("high_shelf", "high_shelf")]
    rows = []
    for kind, p in bands:
        f0 = min(float(params[f"{p}_freq"]), 0.45 * fs)
        rows.append(rbj_sos(kind, f0, float(params[f"{p}_q"]), float(params[f"{p}_gain"]), fs))
    return np.stack(rows)


def ref_geq_sos(gains: list[float], fs: float) -> np.ndarray:
    centres = [31.25 * 2**k for k in range(10)]
    return np.stack([rbj_sos("peaking", min(f, 0.45 * fs), math.sqrt(2), g, fs) for f, g in zip(centres, gains)])


def sos_of(b: torch.Tensor, a: torch.Tensor, i: int = 0) -> np.ndarray:
    """Our (B, S, 3) coefficients as scipy sos for batch item i."""
    return np.concatenate([b[i].detach().double().numpy(), a[i].detach().double().numpy()], axis=1)


def sos_db(sos: np.ndarray, freqs: np.ndarray, fs: float) -> np.ndarray:
    _, h = ss.sosfreqz(sos, worN=freqs, fs=fs)
    return 20 * np.log10(np.abs(h))


def random_peq_params(n_peaks: int, batch: int, seed: int, lo: float = 0.0, hi: float = 1.0, dtype=torch.float64):
    m = ParametricEQ(n_peaks)
    g = torch.Generator().manual_seed(seed)
    u = lo + (hi - lo) * torch.rand(batch, m.n_params, generator=g, dtype=dtype)
    return m.to_physical(u)


def item(params: dict[str, torch.Tensor], i: int) -> dict[str, float]:
    return {k: float(v[i]) for k, v in params.items()}


def noise(batch: int, channels: int, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(batch, channels, n, generator=g, dtype=dtype)


FREQS = np.geomspace(20.0, 20000.0, 400)
# float32: the direct-form recursion of a low-frequency biquad amplifies rounding (its noise gain 1/|A(e^jw)| reaches
# ~1e4 near 30-100 Hz), and rounding a1 ~ -2, a2 ~ 1 to float32 moves low-frequency poles, for either backend. So
# float32 output is checked to 1e-3 of the signal's peak (float64 to 1e-9), float32 curves to 0.5 dB (float64 0.1).
FLOAT32_REL = 1e-3


# ---------------------------------------------------------------------------------------------------------------
# parameters, ranges, module form
# ---------------------------------------------------------------------------------------------------------------


def test_peak_ranges_cover_be_afx_and_interpolate():
    assert peak_ranges(3) == [(100.0, 2000.0), (500.0, 6000.0), (2000.0, 16000.0)]  # BE-AFX exactly
    r4 = peak_ranges(4)
    assert r4[0] == (100.0, 2000.0) and r4[-1] == (2000.0, 16000.0)
    assert all(lo1 < lo2 and hi1 < hi2 for (lo1, hi1), (lo2, hi2) in zip(r4, r4[1:]))
    assert peak_ranges(1) == [(100.0, 16000.0)]
    for bad in (0, 17, 2.5, True):
        with pytest.raises(ParameterError):
            peak_ranges(bad)


def test_parametric_specs_units_scales_and_midpoints():
    m = ParametricEQ(n_peaks=3)
    assert m.n_params == 15
    assert m.param_names[:3] == ["low_shelf_freq", "low_shelf_gain", "low_shelf_q"]
    assert m.param_names[-3:] == ["high_shelf_freq", "high_shelf_gain", "high_shelf_q"]
    for s in m.specs:
        kind = s.name.rsplit("_", 1)[1]
        assert (s.unit, s.scale) == {"freq": ("Hz", "log"), "gain": ("dB", "dB"), "q": ("", "log")}[kind]
        if kind == "gain":
            assert (s.min, s.max) == (-15.0, 15.0)
        if kind == "q":
            assert (s.min, s.max) == (0.1, 5.0)
    phys = m.to_physical(torch.full((1, m.n_params), 0.5, dtype=torch.float64))
    expected_freq = {
        "low_shelf": math.sqrt(30 * 160),
        "peak1": math.sqrt(100 * 2000),
        "peak2": math.sqrt(500 * 6000),
        "peak3": math.sqrt(2000 * 16000),
        "high_shelf": 10000.0,
    }
    for band, f in expected_freq.items():
        assert float(phys[f"{band}_freq"]) == pytest.approx(f, rel=1e-12)
        assert float(phys[f"{band}_gain"]) == pytest.approx(0.0, abs=1e-12)
        assert float(phys[f"{band}_q"]) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    # the declared defaults are the midpoints
    for s in m.specs:
        assert float(phys[s.name]) == pytest.approx(s.default, rel=1e-9, abs=1e-12)
    ends = m.to_physical(torch.tensor([[0.0] * 15, [1.0] * 15], dtype=torch.float64))
    assert ends["low_shelf_freq"].tolist() == pytest.approx([30.0, 160.0])
    assert ends["high_shelf_freq"].tolist() == pytest.approx([5000.0, 20000.0])
    assert ends["peak2_q"].tolist() == pytest.approx([0.1, 5.0])


def test_graphic_specs():
    m = GraphicEQ()
    assert m.param_names == list(GRAPHIC_PARAM_NAMES)
    assert m.param_names[0] == "gain_31hz" and m.param_names[5] == "gain_1khz" and m.param_names[-1] == "gain_16khz"
    assert GRAPHIC_CENTERS_HZ == tuple(31.25 * 2**k for k in range(10))
    assert all((s.unit, s.min, s.max, s.default) == ("dB", -15.0, 15.0, 0.0) for s in m.specs)
    phys = m.to_physical(torch.tensor([[0.5] * 10, [0.0] * 10, [1.0] * 10]))
    assert all(v.tolist() == pytest.approx([0.0, -15.0, 15.0]) for v in phys.values())


def test_module_form_matches_functional_and_config_roundtrip():
    x = noise(2, 2, 2048, dtype=torch.float32)
    for m in (ParametricEQ(3, "iir"), ParametricEQ(), GraphicEQ("iir", compensate=True), GraphicEQ()):
        u = torch.rand(2, m.n_params, generator=torch.Generator().manual_seed(1))
        y = m(x, SR, u)
        if isinstance(m, ParametricEQ):
            ref = parametric_eq(x, SR, backend=m.backend, **m.to_physical(u))
        else:
            ref = graphic_eq(x, SR, backend=m.backend, compensate=m.compensate, **m.to_physical(u))
        torch.testing.assert_close(y, ref, rtol=0, atol=0)
        clone = get_effect(m.name, **m.config())
        assert type(clone) is type(m) and clone.config() == m.config()
        torch.testing.assert_close(clone(x, SR, u), y, rtol=0, atol=0)  # deterministic
        # defaults (controls None) are the 0.5 midpoints: every gain 0 dB -> identity (float32: see FLOAT32_REL)
        torch.testing.assert_close(m(x, SR), x, rtol=0, atol=FLOAT32_REL * float(x.abs().max()))


def test_errors():
    x = noise(1, 2, 256, dtype=torch.float32)
    params = ParametricEQ(2).defaults(x)
    with pytest.raises(ParameterError):
        ParametricEQ(backend="lfilter")
    with pytest.raises(ParameterError):
        GraphicEQ(backend="scan")
    with pytest.raises(ParameterError):
        get_effect("parametric_eq", n_peaks=0)
    with pytest.raises(ParameterError):
        parametric_eq(x, SR, backend="nope", **params)
    with pytest.raises(ParameterError):  # missing high shelf
        parametric_eq(x, SR, **{k: v for k, v in params.items() if not k.startswith("high")})
    with pytest.raises(ParameterError):  # unknown name
        parametric_eq(x, SR, peak9_gain=1.0, **params)
    with pytest.raises(ParameterError):
        graphic_eq(x, SR, gain_1khz=3.0)
    with pytest.raises(ParameterError):  # wrong batch size of a parameter
        parametric_eq(x, SR, **{**params, "peak1_gain": torch.zeros(3)})
    with pytest.raises(InvalidAudioError):
        parametric_eq(x[0], SR, **params)
    with pytest.raises(InvalidAudioError):
        graphic_eq(x.to(torch.int32), SR, **{n: 0.0 for n in GRAPHIC_PARAM_NAMES})


# ---------------------------------------------------------------------------------------------------------------
# frequency response against scipy
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_peaks, fs", [(3, 44100), (4, 44100), (4, 48000), (5, 22050)])
def test_parametric_magnitude_matches_cookbook(n_peaks, fs):
    params = random_peq_params(n_peaks, batch=6, seed=n_peaks + fs)
    b, a = parametric_eq_coefficients(fs, **params)
    assert b.shape == a.shape == (6, n_peaks + 2, 3)
    freqs = FREQS[FREQS < fs / 2]
    ours_db = magnitude_db(b, a, torch.tensor(freqs), fs).numpy()
    for i in range(6):
        ref = sos_db(ref_peq_sos(item(params, i), n_peaks, fs), freqs, fs)
        np.testing.assert_allclose(sos_db(sos_of(b, a, i), freqs, fs), ref, atol=0.1)
        np.testing.assert_allclose(ours_db[i], ref, atol=0.1)


def test_parametric_extreme_corners_match_cookbook():
    # every control at 0 or 1 (lowest/highest frequency, gain and Q); float64 to 0.1 dB, float32 to 0.5 dB
    m = ParametricEQ(4)
    g = torch.Generator().manual_seed(3)
    u = torch.randint(0, 2, (8, m.n_params), generator=g).double()
    params = m.to_physical(u)
    b, a = parametric_eq_coefficients(SR, **params)
    b32, a32 = parametric_eq_coefficients(SR, **{k: v.float() for k, v in params.items()})
    assert b32.dtype == torch.float32
    for i in range(8):
        ref = sos_db(ref_peq_sos(item(params, i), 4, SR), FREQS, SR)
        np.testing.assert_allclose(sos_db(sos_of(b, a, i), FREQS, SR), ref, atol=0.1)
        np.testing.assert_allclose(sos_db(sos_of(b32, a32, i), FREQS, SR), ref, atol=0.5)


def test_high_shelf_frequency_is_clamped_below_nyquist():
    params = ParametricEQ(1).defaults(torch.zeros(1, 1, 1, dtype=torch.float64))
    params = {**params, "high_shelf_freq": 20000.0, "high_shelf_gain": 12.0}
    for fs in (22050, 32000, 44100):
        b, a = parametric_eq_coefficients(fs, **params)
        expected = rbj_sos("high_shelf", 0.45 * fs, 1 / math.sqrt(2), 12.0, fs)
        np.testing.assert_allclose(sos_of(b, a)[-1], expected, rtol=1e-10, atol=1e-12)


def test_graphic_magnitude_matches_cookbook():
    g = torch.Generator().manual_seed(7)
    gains = 30 * torch.rand(4, 10, generator=g, dtype=torch.float64) - 15
    params = {n: gains[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)}
    for fs in (44100, 48000, 22050):
        b, a = graphic_eq_coefficients(fs, **params)
        freqs = FREQS[FREQS < fs / 2]
        for i in range(4):
            ref = sos_db(ref_geq_sos(gains[i].tolist(), fs), freqs, fs)
            np.testing.assert_allclose(sos_db(sos_of(b, a, i), freqs, fs), ref, atol=0.1)


def test_graphic_band_interaction_as_documented():
    """All bands +6 dB: the uncompensated curve overshoots as the module docs say; compensation hits the centres."""
    centres = np.array(GRAPHIC_CENTERS_HZ)
    plain = sos_db(ref_geq_sos([6.0] * 10, SR), centres, SR)
    # +1.4..+2.9 dB too much at the centres up to 8 kHz; the 16 kHz band (squeezed by the bilinear transform) +0.4
    assert plain[:9].min() > 7.4 and plain[1:8].min() > 8.3 and plain.max() < 8.9 and 6.2 < plain[9] < 6.6
    mid = np.geomspace(62.5, 8000, 300)
    mid_db = sos_db(ref_geq_sos([6.0] * 10, SR), mid, SR)
    assert 2.5 < mid_db.max() - mid_db.min() < 3.2  # ripple between 62.5 Hz and 8 kHz

    params = {n: torch.full((1,), 6.0, dtype=torch.float64) for n in GRAPHIC_PARAM_NAMES}
    b, a = graphic_eq_coefficients(SR, compensate=True, **params)
    comp = sos_db(sos_of(b, a), centres, SR)
    np.testing.assert_allclose(comp, 6.0, atol=0.05)
    comp_mid = sos_db(sos_of(b, a), mid, SR)
    assert comp_mid.max() < 6.1 and comp_mid.min() > 4.3

    g = torch.Generator().manual_seed(11)
    targets = torch.cat([30 * torch.rand(3, 10, generator=g, dtype=torch.float64) - 15,
                         torch.tensor([[15.0, -15.0] * 5], dtype=torch.float64)])
    b, a = graphic_eq_coefficients(SR, compensate=True, **{n: targets[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)})
    for i in range(4):
        np.testing.assert_allclose(sos_db(sos_of(b, a, i), centres, SR), targets[i].numpy(), atol=0.25)
    for i in range(3):  # random targets: within 0.05 dB
        np.testing.assert_allclose(sos_db(sos_of(b, a, i), centres, SR), targets[i].numpy(), atol=0.05)


# ---------------------------------------------------------------------------------------------------------------
# time domain against scipy.signal.sosfilt
# ---------------------------------------------------------------------------------------------------------------


def test_iir_backend_matches_sosfilt():
    x = noise(3, 2, 8000, seed=1)
    params = random_peq_params(4, batch=3, seed=5)
    y = parametric_eq(x, SR, backend="iir", **params)
    for i in range(3):
        ref = ss.sosfilt(ref_peq_sos(item(params, i), 4, SR), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, rtol=0, atol=1e-5)
    g = torch.Generator().manual_seed(2)
    gains = 30 * torch.rand(3, 10, generator=g, dtype=torch.float64) - 15
    y = graphic_eq(x, SR, backend="iir", **{n: gains[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)})
    for i in range(3):
        ref = ss.sosfilt(ref_geq_sos(gains[i].tolist(), SR), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, rtol=0, atol=1e-5)


def test_fft_backend_matches_sosfilt_once_the_response_has_decayed():
    """Frequency sampling pads to >= 2T, so it differs from the recursion only by impulse-response energy that lasts
    longer than the signal. 0.5 s is longer than the slowest band's -60 dB decay at these settings (tail_seconds);
    float64 then agrees with sosfilt within 1e-6 on a signal of amplitude ~2."""
    x = noise(3, 2, SR // 2, seed=4)
    m = ParametricEQ(4)
    params = random_peq_params(4, batch=3, seed=9)
    assert m.tail_seconds(params) < 0.5
    y = parametric_eq(x, SR, backend="fft", **params)
    for i in range(3):
        ref = ss.sosfilt(ref_peq_sos(item(params, i), 4, SR), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, rtol=0, atol=1e-6)
    gains = torch.tensor([[15.0, -15.0] * 5, [-15.0, 15.0] * 5, [3.0] * 10], dtype=torch.float64)
    y = graphic_eq(x, SR, backend="fft", **{n: gains[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)})
    for i in range(3):
        ref = ss.sosfilt(ref_geq_sos(gains[i].tolist(), SR), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_float32_close_to_float64_reference(backend):
    """float32 audio and coefficients vs the float64 sosfilt reference at random settings (see FLOAT32_REL)."""
    x = noise(2, 2, SR // 2, seed=6)
    params = random_peq_params(4, batch=2, seed=12)
    y = parametric_eq(x.float(), SR, backend=backend, **{k: v.float() for k, v in params.items()})
    assert y.dtype == torch.float32
    for i in range(2):
        ref = ss.sosfilt(ref_peq_sos(item(params, i), 4, SR), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].double().numpy(), ref, rtol=0, atol=FLOAT32_REL * np.abs(ref).max())


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_zero_gain_is_identity(backend):
    x = noise(2, 2, 4096, seed=3)
    params = random_peq_params(4, batch=2, seed=1)
    params.update({k: torch.zeros(2, dtype=torch.float64) for k in params if k.endswith("_gain")})
    torch.testing.assert_close(parametric_eq(x, SR, backend=backend, **params), x, rtol=0, atol=1e-9)
    zeros = {n: 0.0 for n in GRAPHIC_PARAM_NAMES}
    for compensate in (False, True):
        y = graphic_eq(x, SR, backend=backend, compensate=compensate, **zeros)
        torch.testing.assert_close(y, x, rtol=0, atol=1e-9)
    y32 = parametric_eq(x.float(), SR, backend=backend, **{k: v.float() for k, v in params.items()})
    torch.testing.assert_close(y32, x.float(), rtol=0, atol=FLOAT32_REL * float(x.abs().max()))


def _steady_amplitude(y: np.ndarray, freq: float, fs: float) -> float:
    """Amplitude of the `freq` component over the second half (least-squares fit of a sine and a cosine)."""
    n = np.arange(len(y))[len(y) // 2 :]
    basis = np.stack([np.sin(2 * np.pi * freq * n / fs), np.cos(2 * np.pi * freq * n / fs)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y[len(y) // 2 :], rcond=None)
    return float(np.hypot(*coef))


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_plus_6db_peak_doubles_a_sine_at_its_centre(backend):
    fs, f0, db2 = 48000, 1000.0, 20 * math.log10(2.0)
    t = torch.arange(fs, dtype=torch.float64) / fs
    x = (0.25 * torch.sin(2 * math.pi * f0 * t)).expand(1, 2, -1)
    params = ParametricEQ(3).defaults(x)
    params.update(peak2_freq=f0, peak2_gain=db2, peak2_q=2.0)
    y = parametric_eq(x, fs, backend=backend, **params)
    assert _steady_amplitude(y[0, 0].numpy(), f0, fs) == pytest.approx(0.5, rel=1e-3)
    assert _steady_amplitude(y[0, 1].numpy(), f0, fs) == pytest.approx(0.5, rel=1e-3)
    # graphic EQ: the 1 kHz band alone at +6.02 dB doubles it too
    gains = {n: 0.0 for n in GRAPHIC_PARAM_NAMES} | {"gain_1khz": db2}
    y = graphic_eq(x, fs, backend=backend, **gains)
    assert _steady_amplitude(y[0, 0].numpy(), f0, fs) == pytest.approx(0.5, rel=1e-3)
    # ... and with compensation, all bands at +6.02 dB double it (without it, the neighbours push it to ~2.8x)
    all6 = {n: db2 for n in GRAPHIC_PARAM_NAMES}
    y = graphic_eq(x, fs, backend=backend, compensate=True, **all6)
    assert _steady_amplitude(y[0, 0].numpy(), f0, fs) == pytest.approx(0.5, rel=5e-3)
    y = graphic_eq(x, fs, backend=backend, compensate=False, **all6)
    assert _steady_amplitude(y[0, 0].numpy(), f0, fs) > 0.65


# ---------------------------------------------------------------------------------------------------------------
# batch independence, determinism, gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_batch_independence(backend):
    x = noise(3, 2, 3000, seed=8, dtype=torch.float32)
    params = random_peq_params(4, batch=3, seed=4, dtype=torch.float32)
    y = parametric_eq(x, SR, backend=backend, **params)
    gains = torch.tensor([[6.0] * 10, [-12.0, 3.0] * 5, [0.0] * 10])
    gparams = {n: gains[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)}
    yg = graphic_eq(x, SR, backend=backend, compensate=True, **gparams)
    for i in range(3):
        yi = parametric_eq(x[i : i + 1], SR, backend=backend, **{k: v[i : i + 1] for k, v in params.items()})
        torch.testing.assert_close(y[i : i + 1], yi, rtol=1e-5, atol=1e-6)
        gi = {k: v[i : i + 1] for k, v in gparams.items()}
        ygi = graphic_eq(x[i : i + 1], SR, backend=backend, compensate=True, **gi)
        torch.testing.assert_close(yg[i : i + 1], ygi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parametric_eq(x, SR, backend=backend, **params), y, rtol=0, atol=0)  # deterministic


FAST_AND_FULL = [True, pytest.param(False, marks=pytest.mark.slow)]  # full Jacobians take minutes on 2 cores


@pytest.mark.parametrize("fast_mode", FAST_AND_FULL)
@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_gradcheck_parametric(backend, fast_mode):
    x = noise(2, 2, 200, seed=5).requires_grad_()
    # keep away from the clamp (and from the range ends) so the function is smooth around the point
    params = random_peq_params(2, batch=2, seed=21, lo=0.2, hi=0.8)
    names = list(params)
    leaves = [params[n].clone().requires_grad_() for n in names]

    def fn(x, *values):
        return parametric_eq(x, SR, backend=backend, **dict(zip(names, values)))

    assert torch.autograd.gradcheck(fn, (x, *leaves), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode)


@pytest.mark.parametrize("fast_mode", FAST_AND_FULL)
@pytest.mark.parametrize("backend", ["fft", "iir"])
@pytest.mark.parametrize("compensate", [False, True])
def test_gradcheck_graphic(backend, compensate, fast_mode):
    x = noise(2, 2, 200, seed=6).requires_grad_()
    g = torch.Generator().manual_seed(3)
    gains = (20 * torch.rand(2, 10, generator=g, dtype=torch.float64) - 10).requires_grad_()

    def fn(x, gains):
        return graphic_eq(x, SR, backend=backend, compensate=compensate,
                          **{n: gains[:, k] for k, n in enumerate(GRAPHIC_PARAM_NAMES)})

    assert torch.autograd.gradcheck(fn, (x, gains), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode)


def test_tail_seconds_from_pole_radius():
    m = ParametricEQ(1)
    params = m.defaults(torch.zeros(1, 1, 1, dtype=torch.float64))
    params.update({k: torch.tensor([v], dtype=torch.float64) for k, v in
                   dict(low_shelf_freq=30.0, low_shelf_gain=15.0, low_shelf_q=5.0).items()})
    sos = ref_peq_sos(item(params, 0), 1, 44100)
    radius = max(np.abs(np.roots(row[3:])).max() for row in sos)
    expected = math.log(1e-3) / math.log(radius) / 44100
    assert m.tail_seconds(params) == pytest.approx(expected, rel=1e-6)
    assert 0.3 < expected < 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("backend", ["fft", "iir"])
def test_cpu_and_gpu_agree(backend):
    x = noise(2, 2, 4096, seed=2)
    params = random_peq_params(4, batch=2, seed=3)
    y_cpu = parametric_eq(x, SR, backend=backend, **params)
    y_gpu = parametric_eq(x.cuda(), SR, backend=backend, **{k: v.cuda() for k, v in params.items()})
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=0, atol=1e-9)

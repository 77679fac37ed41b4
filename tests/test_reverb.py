"""Reverb: decay per band (Schroeder RT60 vs closed form), pre-delay onset, level, stereo width, FFT convolution
against scipy.signal.fftconvolve, determinism, batch independence, gradients, module form and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx.effect import get_effect
from fxlens.fx.reverb import (
    Reverb,
    band_centres_hz,
    band_masks,
    reverb,
    reverb_impulse_response,
    reverb_noise_bank,
)

SR = 44100


def expected_rt60(decay: float, low: float, high: float, f: float) -> float:
    """Closed form: log RT60 linear in log2 f, decay at 1 kHz, x low at 62.5 Hz, x high at 16 kHz (4 octaves each)."""
    octaves = math.log2(f / 1000.0) / 4.0
    return decay * (low ** (-octaves) if octaves < 0 else high**octaves)


def schroeder_rt60(energy: np.ndarray, sample_rate: int) -> float:
    """RT60 from Schroeder backward integration of an energy envelope, line fit between -5 and -35 dB (T30)."""
    edc = np.cumsum(energy[::-1])[::-1]
    db = 10.0 * np.log10(edc / edc[0] + 1e-300)
    idx = np.where((db <= -5.0) & (db >= -35.0))[0]
    slope = np.polyfit(idx / sample_rate, db[idx], 1)[0]  # dB per second
    return -60.0 / slope


def third_octave_sos(fc: float, sample_rate: int) -> np.ndarray:
    hi = min(fc * 2 ** (1 / 6), 0.99 * sample_rate / 2)
    return scipy.signal.butter(3, [fc * 2 ** (-1 / 6), hi], btype="band", fs=sample_rate, output="sos")


# --- decay per band -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay, low, high", [(1.0, 1.6, 0.5), (0.4, 2.0, 0.25)])
def test_band_rt60_matches_schroeder_measurement(decay, low, high):
    # Ensemble of 4 seeds x 2 decorrelated channels: one noise realisation in a 1/3-octave band at 62.5 Hz has
    # too few degrees of freedom for a 10 % RT60 estimate. Tolerance: 10 % from 150 Hz up, 20 % below.
    irs = [
        reverb_impulse_response(SR, decay, low, high, 0.0, 1.0, seed=s, max_ir_s=2.0, dtype=torch.float64)[0].numpy()
        for s in range(4)
    ]
    for fc in band_centres_hz(12).tolist():
        sos = third_octave_sos(fc, SR)
        energy = sum((scipy.signal.sosfilt(sos, ir, axis=-1) ** 2).sum(axis=0) for ir in irs)
        measured = schroeder_rt60(energy, SR)
        want = expected_rt60(decay, low, high, fc)
        tol = 0.10 if fc >= 150 else 0.20
        assert abs(measured / want - 1) < tol, (fc, measured, want)


def test_band_masks_are_complementary_and_log_spaced():
    centres = band_centres_hz(12).numpy()
    assert centres[0] == pytest.approx(62.5) and centres[-1] == pytest.approx(16000.0)
    assert np.allclose(np.diff(np.log2(centres)), 8 / 11)
    masks = band_masks(4097, 8192, SR, 12)
    assert torch.allclose(masks.sum(0), torch.ones(4097, dtype=torch.float64), atol=1e-12)
    assert masks.min() >= 0
    # each band peaks (value 1) at the bin nearest its centre
    for k, fc in enumerate(centres):
        assert masks[k, round(fc * 8192 / SR)] > 0.95


def test_ir_energy_is_normalised_across_decays():
    for decay in (0.2, 1.0, 3.0):
        ir = reverb_impulse_response(SR, decay, 1.0, 0.5, 0.0, 1.0, dtype=torch.float64)
        energy = ir.square().sum(-1)
        assert torch.all((energy - 1).abs() < 0.12), (decay, energy)
    # a white input leaves the wet path at about its own RMS, whatever the decay
    x = torch.randn(1, 2, SR, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for decay in (0.3, 3.0):
        wet = reverb(x, SR, decay, 1.0, 1.0, 0.0, 1.0, 1.0)
        ratio = wet[..., SR // 2 :].square().mean().sqrt() / x.square().mean().sqrt()
        assert abs(float(ratio) - 1) < 0.15


def test_ir_length_tail_and_truncation():
    ir = reverb_impulse_response(SR, 1.0, 1.5, 0.5, 20.0, 1.0)
    assert ir.shape == (1, 2, math.ceil((1.5 + 0.02) * SR))  # longest band: 1.5 s at 62.5 Hz, + 20 ms
    assert ir[..., -1].abs().max() < 1e-9 * ir.abs().max()  # faded out
    # in a batch with a longer item, the shorter item's IR is exactly zero after its own end
    both = reverb_impulse_response(SR, torch.tensor([0.5, 1.0]), 1.0, 1.0, torch.tensor([0.0, 20.0]), 1.0)
    assert torch.all(both[0, :, math.ceil(0.5 * SR) :] == 0) and both[1, :, math.ceil(0.5 * SR)].abs().max() > 0
    long = reverb_impulse_response(SR, 8.0, 2.0, 1.0, 0.0, 1.0, max_ir_s=1.0)
    assert long.shape[-1] == SR  # capped at max_ir_s
    fx = Reverb(max_ir_s=4.0)
    tail = fx.tail_seconds({"decay_s": torch.tensor([1.0, 2.0]), "low_decay_ratio": torch.tensor([1.5, 1.0]),
                            "high_decay_ratio": torch.tensor([0.5, 0.5]), "pre_delay_ms": torch.tensor([50.0, 0.0])})
    assert tail == pytest.approx(2.0)  # max(0.05 + 1.5, 0 + 2.0)
    assert Reverb(max_ir_s=1.0).tail_seconds({"decay_s": torch.tensor([6.0]), "pre_delay_ms": torch.tensor([10.0])}) \
        == pytest.approx(1.01)


# --- pre-delay ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pre_delay_ms", [0.0, 10.0, 23.456, 100.0])
def test_pre_delay_moves_onset(pre_delay_ms):
    ir = reverb_impulse_response(SR, 0.5, 1.0, 1.0, pre_delay_ms, 1.0, dtype=torch.float64)
    d = pre_delay_ms * SR / 1000.0
    first = int(torch.nonzero(ir[0, 0].abs() > 0)[0])
    assert first == math.floor(d) + 1  # onset fade-in is zero at tau = 0, non-zero just after
    assert torch.all(ir[..., : first] == 0)


def test_pre_delay_envelope_is_the_closed_form():
    # One band: ir = g * onset * exp(-ln(1000) * tau / RT60) * noise, with tau = n / sr - d. Divide out the noise.
    rt, d_ms = 0.5, 12.5
    ir = reverb_impulse_response(SR, rt, 1.0, 1.0, d_ms, 1.0, channels=1, n_bands=1, dtype=torch.float64)[0, 0]
    noise = reverb_noise_bank(0, SR, 4.0, 1, torch.float64)[0, 0, : ir.shape[-1]]
    env = (ir / noise).numpy()
    n = np.arange(ir.shape[-1])
    tau = n / SR - d_ms / 1000
    body = (tau > 0.002) & (tau < 0.4)  # after the 1 ms onset, before the fade-out
    want = np.exp(-math.log(1000) * tau / rt)
    assert np.allclose(env[body] / want[body], env[body][0] / want[body][0], rtol=1e-9)
    onset = (tau > 0) & (tau < 0.001)
    shape = np.sin(0.5 * np.pi * tau[onset] / 0.001) ** 2 * want[onset]
    assert np.allclose(env[onset], shape * env[body][0] / want[body][0], rtol=1e-9)


def test_long_pre_delay_wraps_the_noise_bank():
    ir = reverb_impulse_response(SR, 4.0, 1.0, 1.0, 300.0, 1.0, max_ir_s=1.0)
    assert ir.shape[-1] == math.ceil(1.3 * SR) and torch.isfinite(ir).all()
    assert float(ir[..., int(0.3 * SR) + 100 :].square().sum()) > 0.5


# --- convolution, mix, width --------------------------------------------------------------------------------------
def test_convolution_equals_scipy_fftconvolve_with_the_exposed_ir():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 20000, generator=g, dtype=torch.float64)
    params = dict(decay_s=torch.tensor([0.3, 0.8], dtype=torch.float64), low_decay_ratio=torch.tensor([1.5, 0.7]),
                  high_decay_ratio=torch.tensor([0.5, 1.2]), pre_delay_ms=torch.tensor([7.3, 30.0]),
                  stereo_width=torch.tensor([0.4, 1.0]))
    mix = torch.tensor([1.0, 0.3], dtype=torch.float64)
    y = reverb(x, SR, **params, mix=mix)
    ir = reverb_impulse_response(SR, **params, dtype=torch.float64).numpy()
    wet = scipy.signal.fftconvolve(x.numpy(), ir, axes=-1)[..., : x.shape[-1]]
    ref = (1 - mix.numpy())[:, None, None] * x.numpy() + mix.numpy()[:, None, None] * wet
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-10)


def test_mix_zero_returns_input_exactly_and_length_is_kept():
    x = torch.randn(3, 2, 5000)
    y = reverb(x, SR, 2.0, 1.0, 0.5, 10.0, 1.0, 0.0)
    assert torch.equal(y, x)
    assert reverb(x, SR, mix=0.5).shape == x.shape
    mono = torch.randn(2, 1, 5000)
    assert reverb(mono, SR, mix=0.5).shape == mono.shape


def test_stereo_width_decorrelates():
    corr = []
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        ir = reverb_impulse_response(SR, 2.0, 1.0, 1.0, 0.0, w, dtype=torch.float64)[0].numpy()
        c = np.corrcoef(ir[0], ir[1])[0, 1]
        assert c == pytest.approx(math.cos(w * math.pi / 2), abs=0.03), w
        if w == 0.0:
            assert np.array_equal(ir[0], ir[1])
        # a mono source (L = R): the wet output's L/R correlation falls as the width grows
        x = torch.randn(1, 1, SR, generator=torch.Generator().manual_seed(3), dtype=torch.float64).expand(1, 2, SR)
        y = reverb(x, SR, 1.0, 1.0, 1.0, 0.0, w, 1.0)[0].numpy()
        corr.append(np.corrcoef(y[0, SR // 4 :], y[1, SR // 4 :])[0, 1])
    assert all(a > b for a, b in zip(corr, corr[1:])), corr
    assert corr[0] == pytest.approx(1.0) and abs(corr[-1]) < 0.1


# --- determinism, batches, gradients ------------------------------------------------------------------------------
def test_seeded_determinism():
    sr = 16000
    x = torch.randn(1, 2, 8000)
    a = reverb(x, sr, 1.0, mix=1.0, seed=7, max_ir_s=1.0)
    fx = get_effect("reverb", seed=7, max_ir_s=1.0)
    b = fx.process(x, sr, **fx.resolve({"decay_s": 1.0, "mix": 1.0}, x))
    assert torch.equal(a, reverb(x, sr, 1.0, mix=1.0, seed=7, max_ir_s=1.0))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    c = reverb(x, sr, 1.0, mix=1.0, seed=8, max_ir_s=1.0)
    assert np.corrcoef(a.flatten().numpy(), c.flatten().numpy())[0, 1] < 0.2
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    reverb_noise_bank(123, 8000, 0.5, 12)
    assert torch.equal(torch.rand(1), before)


def test_batch_equals_items_one_by_one():
    x = torch.randn(3, 2, 12000, generator=torch.Generator().manual_seed(4))
    p = dict(decay_s=torch.tensor([0.2, 1.2, 3.0]), low_decay_ratio=torch.tensor([1.0, 2.0, 0.5]),
             high_decay_ratio=torch.tensor([0.25, 1.0, 0.6]), pre_delay_ms=torch.tensor([0.0, 55.5, 3.3]),
             stereo_width=torch.tensor([0.0, 0.5, 1.0]), mix=torch.tensor([0.2, 1.0, 0.7]))
    y = reverb(x, SR, **p)
    for i in range(3):
        yi = reverb(x[i : i + 1], SR, **{k: v[i : i + 1] for k, v in p.items()})
        torch.testing.assert_close(y[i : i + 1], yi, atol=2e-6, rtol=0)


def test_gradcheck_float64():
    sr = 8000
    x = torch.randn(2, 2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (
        [0.05, 0.08], [1.5, 0.7], [0.5, 1.3], [1.3, 2.7], [0.3, 0.8], [0.4, 0.9])]
    bank = reverb_noise_bank(0, sr, 0.02, 12, torch.float64)

    def fn(x, *p):
        return reverb(x, sr, *p, max_ir_s=0.02, noise_bank=bank)  # 160-sample IR (capped: fixed length)

    # fast mode: checks random projections of the Jacobian (the full one needs 1200 backward passes)
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradients_reach_every_parameter_through_module_controls():
    fx = Reverb(max_ir_s=0.5)
    x = torch.randn(2, 2, 4000)
    controls = torch.full((2, fx.n_params), 0.3, requires_grad=True)
    fx(x, 16000, controls).square().mean().backward()
    assert torch.isfinite(controls.grad).all()
    assert (controls.grad.abs() > 0).all()


# --- module form and errors ---------------------------------------------------------------------------------------
def test_module_form_matches_functional_and_config_roundtrip():
    fx = Reverb(n_bands=8, max_ir_s=2.0, seed=3)
    assert fx.name == "reverb" and fx.param_names == [
        "decay_s", "low_decay_ratio", "high_decay_ratio", "pre_delay_ms", "stereo_width", "mix"]
    x = torch.randn(2, 2, 6000)
    controls = torch.rand(2, fx.n_params, generator=torch.Generator().manual_seed(6))
    y = fx(x, 22050, controls)
    p = fx.to_physical(controls)
    assert p["decay_s"].min() >= 0.1 and p["decay_s"].max() <= 8.0
    ref = reverb(x, 22050, **p, n_bands=8, max_ir_s=2.0, seed=3)
    torch.testing.assert_close(y, ref)
    again = get_effect("reverb", **fx.config())
    assert torch.equal(again(x, 22050, controls), y)
    assert fx(x, 22050).shape == x.shape  # defaults
    # the noise bank follows the module's dtype and the sample rate
    y64 = fx.double()(x.double(), 22050, controls.double())
    torch.testing.assert_close(y64.float(), y, atol=1e-5, rtol=0)
    assert fx(x, 44100, controls).shape == x.shape


def test_errors():
    with pytest.raises(InvalidAudioError):
        reverb(torch.randn(1, 3, 100), SR)
    with pytest.raises(InvalidAudioError):
        reverb(torch.randn(2, 100), SR)
    with pytest.raises(ParameterError):
        Reverb(n_bands=0)
    with pytest.raises(ParameterError):
        Reverb(max_ir_s=0.0)
    with pytest.raises(ParameterError):
        get_effect("reverb", rooms=3)
    with pytest.raises(ParameterError):
        Reverb().resolve({"decay_s": 20.0}, torch.zeros(1, 2, 10))
    with pytest.raises(ParameterError):
        reverb(torch.randn(2, 2, 100), SR, decay_s=torch.tensor([1.0, 2.0, 3.0]))

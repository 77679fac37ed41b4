"""ParamSpec, the effect registry, the stereo effects, Chain / RandomChain and presets."""

import json
import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from fxlens.errors import ParameterError, PresetError, UnknownEffectError
from fxlens.fx import effect_names, get_effect
from fxlens.fx.chain import Chain, RandomChain
from fxlens.fx.filters import apply_biquads, biquad, frequency_response, magnitude_db
from fxlens.fx.params import ParamSpec
from fxlens.fx.preset import read_preset, write_preset
from fxlens.fx.stereo import constant_power_pan, gain, stereo_imager

SR = 44100


def test_paramspec_log_and_linear_mapping():
    s = ParamSpec("f", "Hz", 20.0, 20000.0, "log", 1000.0)
    u = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    phys = s.to_physical(u)
    assert torch.allclose(phys, torch.tensor([20.0, math.sqrt(20 * 20000), 20000.0], dtype=torch.float64))
    assert torch.allclose(s.to_normalized(phys), u)
    lin = ParamSpec("g", "dB", -12.0, 12.0, "dB", 0.0)
    assert lin.to_physical(torch.tensor(0.25)).item() == pytest.approx(-6.0)


def test_paramspec_checks():
    s = ParamSpec("g", "dB", -12.0, 12.0, "dB", 0.0)
    assert s.check(3) == 3.0
    for bad in (13.0, float("nan"), "loud"):
        with pytest.raises(ParameterError):
            s.check(bad)
    with pytest.raises(ValueError):
        ParamSpec("f", "Hz", 0.0, 10.0, "log", 1.0)  # log needs min > 0


def test_registry_unknown_effect():
    with pytest.raises(UnknownEffectError, match="unknown effect 'fuzzbox'"):
        get_effect("fuzzbox")
    assert {"gain", "pan", "stereo_imager"} <= set(effect_names())


def test_gain_units():
    x = torch.full((1, 2, 8), 0.25)
    assert torch.allclose(gain(x, SR, 6.0206), torch.full_like(x, 0.5), atol=1e-5)  # +6.02 dB doubles
    assert torch.allclose(gain(x, SR, -20.0), x * 0.1, atol=1e-7)


def test_pan_constant_power_and_unity_centre():
    x = torch.ones(5, 2, 4)
    p = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    y = constant_power_pan(x, SR, p)
    power = (y[:, 0, 0] ** 2 + y[:, 1, 0] ** 2)
    assert torch.allclose(power, torch.full((5,), 2.0), atol=1e-6)
    assert torch.allclose(y[2], x[2])
    assert y[0, 1].abs().max() < 1e-6 and y[4, 0].abs().max() < 1e-6


def test_imager_mid_side():
    x = torch.randn(3, 2, 100)
    w = torch.tensor([0.0, 1.0, 2.0])
    y = stereo_imager(x, SR, w)
    assert torch.allclose(y[0, 0], y[0, 1])  # mono
    assert torch.allclose(y[1], x[1], atol=1e-6)  # unchanged
    side_in, side_out = x[2, 0] - x[2, 1], y[2, 0] - y[2, 1]
    assert torch.allclose(side_out, 2 * side_in, atol=1e-5)
    assert torch.allclose(y[2].sum(0), x[2].sum(0), atol=1e-5)  # mid kept


@pytest.mark.parametrize("fn,arg", [(gain, "g"), (constant_power_pan, "p"), (stereo_imager, "w")])
def test_stereo_gradcheck(fn, arg):
    x = torch.randn(2, 2, 64, dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.3, -0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, SR, b), (x, p))


@pytest.mark.parametrize("kind", ["peaking", "low_shelf", "high_shelf", "lowpass", "highpass", "bandpass", "allpass"])
def test_biquad_matches_scipy(kind):
    # Independent reference: scipy's sosfilt/sosfreqz on the same coefficients, and the cookbook's peak gain.
    f = torch.tensor([150.0, 2500.0], dtype=torch.float64)
    q = torch.tensor([0.7, 3.0], dtype=torch.float64)
    g = torch.tensor([6.0, -9.0], dtype=torch.float64)
    b, a = biquad(kind, f, q, g, SR)
    x = torch.randn(2, 2, 4096, dtype=torch.float64)
    y = apply_biquads(x, b[:, None], a[:, None], backend="iir")
    for i in range(2):
        sos = np.concatenate([b[i].numpy(), a[i].numpy()])[None]
        ref = ss.sosfilt(sos, x[i].numpy(), axis=-1)
        assert np.abs(ref - y[i].numpy()).max() < 1e-9
        w, h = ss.sosfreqz(sos, worN=[20.0, 1000.0, 15000.0], fs=SR)
        mag = magnitude_db(b[i:i + 1, None], a[i:i + 1, None], torch.tensor(w), SR)[0].numpy()
        assert np.allclose(mag, 20 * np.log10(np.abs(h)), atol=1e-3)
    if kind == "peaking":
        for i in range(2):  # the cookbook peak reaches exactly the set gain at f0
            at_centre = magnitude_db(b[i:i + 1, None], a[i:i + 1, None], f[i:i + 1], SR)
            assert at_centre.item() == pytest.approx(g[i].item(), abs=1e-6)


@pytest.mark.parametrize("n_fft", [1 << 15, 1 << 9])  # evaluated by matmul / elementwise (`u_values`)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-7), (torch.float32, 1e-4)])
def test_cascade_frequency_response_matches_scipy_on_the_fft_grid(dtype, tol, n_fft):
    # A cascade with a 20 Hz low shelf at Q 5 (a pole pair 3e-3 rad from z = 1, where b(z) / a(z) cancels), a peak,
    # a high shelf and a high-pass, against scipy.signal.sosfreqz at every rfft bin, on the same coefficients (those
    # rounded to `dtype`, evaluated by scipy in float64): what is checked is the evaluation, not the rounding.
    specs = [("low_shelf", 20.0, 5.0, 12.0), ("peaking", 900.0, 2.0, -9.0), ("high_shelf", 8000.0, 0.7, 6.0),
             ("highpass", 30.0, 0.7, 0.0)]
    sections = [biquad(k, torch.tensor([f], dtype=torch.float64), torch.tensor([q], dtype=torch.float64),
                       torch.tensor([g], dtype=torch.float64), SR) for k, f, q, g in specs]
    b = torch.stack([s[0] for s in sections], 1).to(dtype)  # (1, 4, 3)
    a = torch.stack([s[1] for s in sections], 1).to(dtype)
    h = frequency_response(b, a, n_fft)[0].to(torch.complex128).numpy()
    sos = np.concatenate([b[0].double().numpy(), a[0].double().numpy()], axis=1)
    _, ref = ss.sosfreqz(sos, worN=2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft)  # rad/sample
    floor = 1e-3 * np.abs(ref).max()  # the high-pass's zero at DC: relative error where there is a response
    assert (np.abs(h - ref) / np.maximum(np.abs(ref), floor)).max() < tol


def test_fft_backend_close_to_iir_when_ir_decays():
    f = torch.tensor([1000.0]); q = torch.tensor([1.0]); g = torch.tensor([9.0])
    b, a = biquad("peaking", f, q, g, SR)
    x = torch.randn(1, 2, SR // 2)
    y_iir = apply_biquads(x, b[:, None], a[:, None], "iir")
    y_fft = apply_biquads(x, b[:, None], a[:, None], "fft")
    assert (y_iir - y_fft).abs().max() < 1e-4


def test_biquad_gradcheck_both_backends():
    x = torch.randn(2, 1, 128, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([800.0, 5000.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)
    for backend in ("fft", "iir"):
        def fn(x, f, g):
            b, a = biquad("peaking", f, torch.ones_like(f), g, SR)
            return apply_biquads(x, b[:, None], a[:, None], backend)
        assert torch.autograd.gradcheck(fn, (x, f, g))


def test_chain_defaults_and_validation():
    with pytest.raises(ParameterError, match="no parameter 'drive'"):
        Chain([("gain", {"drive": 3.0})])
    with pytest.raises(ParameterError, match="outside its range"):
        Chain([("gain", {"gain_db": 99.0})])
    x = torch.randn(2, 2, 100)
    assert torch.allclose(Chain(["gain", "stereo_imager"])(x, SR), x, atol=1e-6)


def test_random_chain_counts_and_reproduction(tmp_path):
    rc = RandomChain(["gain", "pan", "stereo_imager"], probabilities=0.5, min_effects=1, max_effects=2)
    x = torch.randn(16, 2, 2000)
    y, presets = rc(x, SR, seed=7)
    y2, presets2 = rc(x, SR, seed=7)
    assert torch.equal(y, y2) and presets == presets2  # determinism under a seed
    assert presets == rc.sample_presets(16, SR, seed=7)  # drawing without audio gives the same chains
    counts = [len(p["effects"]) for p in presets]
    assert min(counts) >= 1 and max(counts) <= 2
    for i, p in enumerate(presets):
        path = write_preset(tmp_path / f"p{i}.json", p)
        chain = Chain.from_preset(read_preset(path))  # JSON round trip
        assert (chain(x[i:i + 1], SR) - y[i:i + 1]).abs().max() < 1e-6


def test_random_chain_probability_one_and_zero():
    rc = RandomChain(["gain", "pan"], probabilities={"gain": 1.0, "pan": 0.0})
    presets = rc.sample_presets(32, SR, seed=0)
    assert all([e["name"] for e in p["effects"]] == ["gain"] for p in presets)
    rc.set_probabilities({"pan": 1.0})
    assert all(len(p["effects"]) == 2 for p in rc.sample_presets(8, SR, seed=1))
    with pytest.raises(ParameterError):
        rc.set_probabilities({"reverb": 0.5})


def test_preset_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        read_preset(bad)
    with pytest.raises(PresetError, match="not found"):
        read_preset(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"effects": []}))
    with pytest.raises(PresetError, match="not an fxlens preset"):
        read_preset(other)
    p = Chain([("gain", {"gain_db": 3.0})]).to_preset(SR)
    p["effects"][0]["params"]["gain_db"]["value"] = 40.0
    (tmp_path / "range.json").write_text(json.dumps(p))
    with pytest.raises(ParameterError, match="outside its range"):
        read_preset(tmp_path / "range.json")
    p["effects"][0]["name"] = "wobble"
    (tmp_path / "name.json").write_text(json.dumps(p))
    with pytest.raises(UnknownEffectError):
        read_preset(tmp_path / "name.json")


def test_random_chain_param_ranges():
    rc = RandomChain(["reverb", "gain"], probabilities=1.0,
                     param_ranges={"reverb": {"mix": (0.1, 0.4), "decay_s": (2.0, 2.0)}})
    for p in rc.sample_presets(64, SR, seed=3):
        reverb = next(e for e in p["effects"] if e["name"] == "reverb")["params"]
        assert 0.1 - 1e-6 <= reverb["mix"]["value"] <= 0.4 + 1e-6
        assert reverb["decay_s"]["value"] == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ParameterError, match="outside its range"):
        RandomChain(["gain"], param_ranges={"gain": {"gain_db": (-50.0, 0.0)}})
    with pytest.raises(ParameterError, match="not in the pool"):
        RandomChain(["gain"], param_ranges={"reverb": {"mix": (0.1, 0.2)}})
    with pytest.raises(ParameterError, match="low"):
        RandomChain(["gain"], param_ranges={"gain": {"gain_db": (3.0, 1.0)}})

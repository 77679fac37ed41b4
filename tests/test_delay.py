"""Delay, ModulatedDelay, Tremolo, Phaser: checked against scipy.signal, closed forms and sample-by-sample loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

import fxlens.fx.delay as delay_module

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx import get_effect
from fxlens.fx.delay import (
    MODULATED_DELAY_PRESETS,
    Delay,
    ModulatedDelay,
    Phaser,
    Tremolo,
    allpass_coefficient,
    chorus,
    delay,
    delay_tail_seconds,
    flanger,
    modulated_delay,
    modulated_delay_passes,
    phaser,
    tremolo,
    vibrato,
)

SR = 44100


def impulse(B=1, C=2, T=50000, at=0, dtype=torch.float64):
    x = torch.zeros(B, C, T, dtype=dtype)
    x[..., at] = 1.0
    return x


def noise(B, C, T, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, T, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# Delay
# ---------------------------------------------------------------------------------------------------------------
def test_delay_250ms_moves_impulse_by_11025_samples_and_echoes_decay_geometrically():
    mix, fb = 0.4, 0.6
    y = delay(impulse(T=50000, dtype=torch.float32), SR, 250.0, fb, mix)[0, 0].double().numpy()
    expected = np.zeros(50000)
    expected[0] = 1 - mix
    for k in range(1, 5):  # echoes at 11025, 22050, 33075, 44100
        expected[k * 11025] = mix * fb ** (k - 1)
    assert np.abs(y - expected).max() < 1e-5
    assert np.argmax(np.abs(y[1:])) + 1 == 11025


def test_delay_matches_scipy_comb_filter_for_integer_delays():
    x = noise(2, 2, 6000, seed=1)
    D, fb, mix = 441, 0.8, 0.7  # 10 ms
    y = delay(x, SR, 10.0, fb, mix)
    b = np.zeros(D + 1); b[D] = 1.0
    a = np.zeros(D + 1); a[0] = 1.0; a[D] = -fb
    wet = scipy.signal.lfilter(b, a, x.numpy(), axis=-1)
    ref = (1 - mix) * x.numpy() + mix * wet
    assert np.abs(y.numpy() - ref).max() < 1e-9


def test_delay_fractional_time_is_band_limited_sinc_interpolation():
    T = 4000
    n = np.arange(T)
    rng = np.random.default_rng(3)
    # band-limited content (below 0.4 fs), tapered to zero at both ends
    sig = scipy.signal.lfilter(*scipy.signal.butter(8, 0.8), rng.standard_normal(T))
    sig *= scipy.signal.windows.tukey(T, 0.3)
    d = 123.37  # samples
    y = delay(torch.from_numpy(sig)[None, None], SR, d / SR * 1000.0, 0.0, 1.0)[0, 0].numpy()
    ref = np.array([np.sum(sig * np.sinc(t - n - d)) for t in range(T)])  # ideal sinc, no wrap-around
    assert np.abs(y - ref).max() < 1e-8 * np.abs(sig).max()
    # and not the nearest integer delay
    assert np.abs(y - np.roll(sig, 123)).max() > 0.05 * np.abs(sig).max()


def test_delay_ping_pong_alternates_channels():
    mix, fb = 0.5, 0.7
    x = impulse(T=40000)
    y = delay(x, SR, 100.0, fb, mix, ping_pong=True).numpy()[0]  # 4410 samples per echo
    for k in range(1, 9):
        side = 0 if k % 2 == 1 else 1  # odd echoes left, even echoes right
        assert y[side, k * 4410] == pytest.approx(mix * fb ** (k - 1), abs=1e-9)
        assert abs(y[1 - side, k * 4410]) < 1e-9
    assert y[0, 0] == pytest.approx(1 - mix) and y[1, 0] == pytest.approx(1 - mix)
    # a left-only source still ping-pongs: the send is the mono sum (L + R) / 2
    xl = impulse(T=40000); xl[:, 1] = 0
    yl = delay(xl, SR, 100.0, fb, 1.0, ping_pong=True).numpy()[0]
    assert yl[0, 4410] == pytest.approx(0.5) and yl[1, 8820] == pytest.approx(0.5 * fb)
    with pytest.raises(InvalidAudioError):
        delay(impulse(C=1), SR, 100.0, fb, mix, ping_pong=True)


def test_delay_tail_seconds_covers_the_echoes_to_minus_60_db():
    t = delay_tail_seconds(100.0, 0.5)
    assert t == pytest.approx(0.1 * (1 + math.ceil(math.log(1e-3) / math.log(0.5))))  # 11 echoes
    assert delay_tail_seconds(100.0, 0.0) == pytest.approx(0.1)
    assert delay_tail_seconds(1000.0, 0.95) == 10.0  # capped
    # appending the tail keeps every echo above -60 dB
    tail = int(round(t * SR))
    x = torch.zeros(1, 1, 1000 + tail, dtype=torch.float64); x[..., 0] = 1
    y = delay(x, SR, 100.0, 0.5, 1.0)[0, 0].numpy()
    assert y[10 * 4410] == pytest.approx(0.5 ** 9) and abs(y[11 * 4410]) < 1e-3
    eff = Delay()
    assert eff.tail_seconds({"time_ms": torch.tensor([50.0, 100.0]), "feedback": torch.tensor([0.9, 0.5]),
                             "mix": torch.tensor([0.3, 0.3])}) == pytest.approx(0.05 * (1 + 66))


def test_delay_output_keeps_input_length_and_rejects_bad_values():
    x = noise(1, 2, 1000)
    assert delay(x, SR, 5.0, 0.5, 0.5).shape == x.shape
    with pytest.raises(ParameterError):
        delay(x, SR, 5.0, 1.0, 0.5)
    with pytest.raises(ParameterError):
        delay(x, SR, 0.0, 0.5, 0.5)
    with pytest.raises(InvalidAudioError):
        delay(x[0], SR, 5.0, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# ModulatedDelay
# ---------------------------------------------------------------------------------------------------------------
def lerp_read(sig, pos):
    """Linear interpolation of a signal that is zero before its start (and at index -1)."""
    return np.interp(pos, np.arange(-1, len(sig)), np.concatenate([[0.0], sig]), left=0.0)


def lfo_delay_samples(T, rate, depth, delay_ms, channel=0, phase_deg=0.0, max_sweep_ms=5.0, sr=SR):
    """The documented delay curve, computed independently in numpy (samples)."""
    t = np.arange(T) / sr
    sweep = depth * min(delay_ms, max_sweep_ms)
    return (delay_ms + sweep * np.sin(2 * np.pi * rate * t + np.deg2rad(phase_deg) * channel)) * sr / 1000


def test_modulated_delay_depth_zero_is_a_fixed_fractional_delay():
    x = noise(1, 2, 3000, seed=4)
    y = modulated_delay(x, SR, 2.0, 0.0, 3.3, 0.0, 1.0).numpy()[0]
    n = np.arange(3000)
    d = 3.3 * SR / 1000  # 145.53 samples
    for c in range(2):
        ref = lerp_read(x[0, c].numpy(), n - d)
        assert np.abs(y[c] - ref).max() < 1e-10


def test_modulated_delay_follows_the_lfo_curve_per_channel():
    T = 8000
    x = noise(1, 2, T, seed=5)
    rate, depth, dms, mix = 3.0, 0.7, 8.0, 0.6
    y = modulated_delay(x, SR, rate, depth, dms, 0.0, mix, stereo_phase_deg=90.0).numpy()[0]
    n = np.arange(T)
    for c in range(2):
        d = lfo_delay_samples(T, rate, depth, dms, channel=c, phase_deg=90.0)
        ref = (1 - mix) * x[0, c].numpy() + mix * lerp_read(x[0, c].numpy(), n - d)
        assert np.abs(y[c] - ref).max() < 1e-10


def test_vibrato_instantaneous_frequency_matches_closed_form():
    T, f0 = SR, 1000.0
    t = np.arange(T) / SR
    x = torch.from_numpy(np.sin(2 * np.pi * f0 * t))[None, None]
    rate, depth, dms = 5.0, 0.6, 5.0
    y = vibrato(x, SR, rate_hz=rate, depth=depth, delay_ms=dms)[0, 0].numpy()
    inst = np.diff(np.unwrap(np.angle(scipy.signal.hilbert(y)))) * SR / (2 * np.pi)
    # y(t) = sin(2 pi f0 (t - d(t))): f(t) = f0 (1 - d'(t)), d'(t) = 2 pi rate A cos(2 pi rate t), A in seconds
    amp_s = depth * min(dms, 5.0) / 1000
    tm = (np.arange(T - 1) + 0.5) / SR
    expected = f0 * (1 - 2 * np.pi * rate * amp_s * np.cos(2 * np.pi * rate * tm))
    # linear interpolation adds a per-sample ripple (a few Hz) as the fractional position sweeps: compare 1 ms means
    box = np.ones(44) / 44
    inst, expected = np.convolve(inst, box, "same"), np.convolve(expected, box, "same")
    core = slice(2000, T - 2000)
    dev = f0 * 2 * np.pi * rate * amp_s  # +-94 Hz
    assert np.abs(inst[core] - expected[core]).max() < 0.01 * dev
    assert inst[core].max() - inst[core].min() == pytest.approx(2 * dev, rel=0.03)


def reference_feedback_loop(x, d, g):
    """Sample-by-sample y[n] = x[n] + g * lerp(y, n - d[n]); wet[n] = lerp(y, n - d[n]) (needs d >= 1)."""
    T = len(x)
    y = np.zeros(T)
    wet = np.zeros(T)
    for n in range(T):
        pos = n - d[n]
        i = math.floor(pos)
        f = pos - i
        y0 = y[i] if 0 <= i < n else 0.0
        y1 = y[i + 1] if 0 <= i + 1 < n else 0.0
        wet[n] = (1 - f) * y0 + f * y1
        y[n] = x[n] + g * wet[n]
    return wet


@pytest.mark.parametrize("fb", [0.5, 0.9, -0.7])
def test_modulated_delay_feedback_matches_recursion_within_bound(fb):
    T = 4000
    x = noise(1, 1, T, seed=6)
    rate, depth, dms, mix, tol = 4.0, 0.8, 1.5, 1.0, 1e-3
    y = modulated_delay(x, SR, rate, depth, dms, fb, mix, tolerance=tol)[0, 0].numpy()
    d = lfo_delay_samples(T, rate, depth, dms)
    assert d.min() >= 1.0  # the causal reference needs one sample of delay
    ref = reference_feedback_loop(x[0, 0].numpy(), d, fb)
    bound = tol * np.abs(x.numpy()).max()
    err = np.abs(y - ref).max()
    assert err <= bound
    # and the bound is not vacuous: one pass fewer is measurably worse for strong feedback
    if abs(fb) >= 0.9:
        k = int(modulated_delay_passes(fb, tol)[0])
        assert abs(fb) ** k / (1 - abs(fb)) <= tol < abs(fb) ** (k - 1) / (1 - abs(fb))


def test_modulated_delay_presets_and_helpers():
    x = noise(1, 2, 2000, seed=7)
    p = MODULATED_DELAY_PRESETS["chorus"]
    assert torch.equal(chorus(x, SR), modulated_delay(x, SR, **p["params"], **p["config"]))
    assert torch.equal(flanger(x, SR, feedback=0.2),
                       modulated_delay(x, SR, **{**MODULATED_DELAY_PRESETS["flanger"]["params"], "feedback": 0.2}))
    assert vibrato(x, SR).shape == x.shape


# ---------------------------------------------------------------------------------------------------------------
# Tremolo
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [0.0, 0.5, 1.0])
def test_tremolo_envelope_is_the_closed_form_lfo(shape):
    T = 20000
    rate, depth = 7.0, 0.8
    y = tremolo(torch.ones(1, 2, T, dtype=torch.float64), SR, rate, depth, shape, stereo_phase_deg=180.0).numpy()[0]
    t = np.arange(T) / SR
    for c in range(2):
        s = np.sin(2 * np.pi * rate * t + np.pi * c)
        lfo = (1 - shape) * s + shape * np.tanh(8 * s) / np.tanh(8)
        assert np.abs(y[c] - (1 - depth * (1 - lfo) / 2)).max() < 1e-9
    assert y.max() <= 1 + 1e-12 and y.min() >= 1 - depth - 1e-12
    if shape == 1.0:  # near-square: the gain sits at its extremes most of the time
        assert np.mean((y[0] > 0.98) | (y[0] < 1 - depth + 0.02)) > 0.8
    # 180 degrees: auto-pan, the two gains are mirror images around 1 - depth / 2
    assert np.abs((y[0] + y[1]) - (2 - depth)).max() < 1e-9


# ---------------------------------------------------------------------------------------------------------------
# Phaser
# ---------------------------------------------------------------------------------------------------------------
def allpass_polys(a, stages):
    num, den = np.array([1.0]), np.array([1.0])
    for _ in range(stages):
        num = np.convolve(num, [a, 1.0])
        den = np.convolve(den, [1.0, a])
    return num, den


@pytest.mark.parametrize("fb", [0.0, 0.5, 0.85])
def test_static_phaser_matches_scipy_allpass_cascade(fb):
    x = noise(1, 2, 6000, seed=8)
    fc, mix, N = 800.0, 0.5, 4
    y = phaser(x, SR, 0.05, 0.0, fc, fb, mix, stages=N).numpy()  # depth 0: static
    t = np.tan(np.pi * fc / SR)
    a = (t - 1) / (t + 1)
    num, den = allpass_polys(a, N)
    # C = num/den inside a loop with one sample of delay: H = C / (1 - fb z^-1 C)
    b = np.concatenate([num, [0.0]])
    aa = np.concatenate([den, [0.0]]) - fb * np.concatenate([[0.0], num])
    ref = (1 - mix) * x.numpy() + mix * scipy.signal.lfilter(b, aa, x.numpy(), axis=-1)
    assert np.abs(y - ref).max() < 1e-9


def test_static_12_stage_phaser_matches_scipy_cascade_and_notches():
    x = noise(1, 1, 5000, seed=9)
    fc, N = 300.0, 12
    y = phaser(x, SR, 1.0, 0.0, fc, 0.0, 1.0, stages=N).numpy()[0, 0]
    t = np.tan(np.pi * fc / SR)
    a = (t - 1) / (t + 1)
    ref = x[0, 0].numpy()
    for _ in range(N):
        ref = scipy.signal.lfilter([a, 1.0], [1.0, a], ref)
    assert np.abs(y - ref).max() < 1e-9
    # mix 0.5: notches where the cascade's phase is -180 degrees; for 4 stages the first is where each stage gives
    # -45 degrees: tan(w/2) = t * tan(pi/8)... check numerically with freqz of the dry+wet response
    num, den = allpass_polys(a, 4)
    w, h = scipy.signal.freqz(0.5 * (den + num), den, worN=2 ** 14)
    imp = np.zeros(2 ** 15); imp[0] = 1
    resp = phaser(torch.from_numpy(imp)[None, None], SR, 1.0, 0.0, fc, 0.0, 0.5, stages=4)[0, 0].numpy()
    H = np.fft.rfft(resp)[: len(w)]
    assert np.abs(np.abs(H) - np.abs(h)).max() < 1e-6
    assert np.abs(h).min() < 1e-3  # complete notches exist


def reference_phaser(x, a, g, stages):
    T = len(x)
    prev = np.zeros(stages + 1)
    y = np.zeros(T)
    for n in range(T):
        v = [x[n] + g * prev[stages]]
        for i in range(1, stages + 1):
            v.append(a[n] * (v[i - 1] - prev[i]) + prev[i - 1])
        prev = np.array(v)
        y[n] = v[-1]
    return y


@pytest.mark.parametrize("stages,fb", [(4, 0.7), (6, -0.5)])
def test_swept_phaser_matches_sample_by_sample_recursion(stages, fb):
    T = 3001
    x = noise(1, 2, T, seed=10)
    rate, depth, fc, mix = 20.0, 0.9, 700.0, 0.5  # fast sweep: exercises per-sample coefficients
    y = phaser(x, SR, rate, depth, fc, fb, mix, stages=stages, stereo_phase_deg=90.0).numpy()[0]
    t = np.arange(T) / SR
    for c in range(2):
        f = fc * 2 ** (depth * 2 * np.sin(2 * np.pi * rate * t + np.pi / 2 * c))
        tt = np.tan(np.pi * f / SR)
        a = (tt - 1) / (tt + 1)
        ref = (1 - mix) * x[0, c].numpy() + mix * reference_phaser(x[0, c].numpy(), a, fb, stages)
        assert np.abs(y[c] - ref).max() < 1e-9


def test_phaser_float32_stays_accurate_at_low_break_frequencies():
    # the regime where a combined direct-form recursion goes unstable in float32
    x = noise(1, 1, 20000, seed=11)
    y32 = phaser(x.float(), SR, 0.3, 1.0, 200.0, 0.9, 1.0, stages=12)
    y64 = phaser(x, SR, 0.3, 1.0, 200.0, 0.9, 1.0, stages=12)
    assert torch.isfinite(y32).all()
    assert (y32.double() - y64).abs().max() < 1e-3 * y64.abs().max()


@pytest.mark.parametrize("stages,fc,fb", [(4, 200.0, 0.9), (12, 800.0, -0.9), (4, 2000.0, 0.9), (2, 300.0, 0.0)])
def test_phaser_tail_seconds_covers_the_ring_out(stages, fc, fb):
    eff = Phaser(stages=stages)
    params = {"rate_hz": torch.tensor([0.05]), "depth": torch.tensor([0.0]), "centre_hz": torch.tensor([fc]),
              "feedback": torch.tensor([fb]), "mix": torch.tensor([1.0])}
    tail = eff.tail_seconds(params)
    T = int(SR * (tail + 0.5))
    y = eff.process(impulse(C=1, T=T), SR, **params)[0, 0].abs().numpy()
    assert y[int(tail * SR):].max() < 1e-3 * y.max()


def test_phaser_config_checks():
    assert allpass_coefficient(torch.tensor(SR / 4.0), SR).abs() < 1e-6  # fs/4: a = 0
    for bad in (1, 13, 4.0, True):
        with pytest.raises(ParameterError):
            Phaser(stages=bad)
    with pytest.raises(ParameterError):
        phaser(noise(1, 1, 100), SR, 1.0, 0.5, 500.0, 1.0, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# shared properties: gradients, batches, determinism, module forms
# ---------------------------------------------------------------------------------------------------------------
FUNCTIONAL = {
    "delay": (lambda x, p: delay(x, 8000, p[0], p[1], p[2]), [13.7, 0.6, 0.7]),
    "delay_ping_pong": (lambda x, p: delay(x, 8000, p[0], p[1], p[2], ping_pong=True), [9.3, 0.5, 0.6]),
    "modulated_delay": (lambda x, p: modulated_delay(x, 8000, p[0], p[1], p[2], p[3], p[4], stereo_phase_deg=90.0),
                        [23.0, 0.55, 3.1, 0.6, 0.7]),
    "tremolo": (lambda x, p: tremolo(x, 8000, p[0], p[1], p[2], stereo_phase_deg=60.0), [37.0, 0.6, 0.4]),
    "phaser": (lambda x, p: phaser(x, 8000, p[0], p[1], p[2], p[3], p[4], stages=4, stereo_phase_deg=90.0),
               [13.0, 0.7, 700.0, 0.6, 0.55]),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_gradcheck_float64(name):
    fn, p0 = FUNCTIONAL[name]
    params = [torch.tensor([v, v * 0.93], dtype=torch.float64, requires_grad=True) for v in p0]
    x = noise(2, 2, 400, seed=12).requires_grad_()
    # audio and parameters together, by random projections (fast mode)
    assert torch.autograd.gradcheck(lambda x, *p: fn(x, p), (x, *params), fast_mode=True, atol=1e-6, rtol=1e-4)
    # every parameter entry in full, against 24 fixed projections of the output (keeps slow mode cheap)
    proj = noise(1, 1, 2 * 2 * 400 * 24, seed=16).reshape(2 * 2 * 400, 24) / 40.0
    assert torch.autograd.gradcheck(lambda *p: fn(x.detach(), p).reshape(-1) @ proj, tuple(params),
                                    atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["delay", "modulated_delay", "phaser", "tremolo"])
def test_batch_equals_items_and_is_deterministic(name):
    x = noise(3, 2, 4000, seed=13, dtype=torch.float32)
    eff = get_effect(name)
    controls = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.5], [0.7, 0.2, 0.9, 0.0, 1.0], [0.4, 0.5, 0.5, 0.5, 0.2]])
    controls = controls[:, : eff.n_params]
    y = eff(x, SR, controls)
    for i in range(3):
        yi = eff(x[i : i + 1], SR, controls[i : i + 1])
        assert torch.allclose(y[i : i + 1], yi, atol=1e-6, rtol=0)
    assert torch.equal(y, eff(x, SR, controls))


@pytest.mark.parametrize("name", ["delay", "modulated_delay", "phaser", "tremolo"])
def test_cpu_chunking_gives_the_same_result(name, monkeypatch):
    x = noise(3, 2, 3000, seed=15, dtype=torch.float32)
    eff = get_effect(name)
    controls = torch.tensor([[0.2, 0.8, 0.4, 0.9, 0.6], [0.9, 0.1, 0.6, 0.3, 1.0], [0.5, 0.5, 0.5, 0.5, 0.3]])
    controls = controls[:, : eff.n_params]
    whole = eff(x, SR, controls)
    monkeypatch.setattr(delay_module, "_CPU_CHUNK_SAMPLES", 2000)  # one item, then one row, at a time
    assert torch.allclose(eff(x, SR, controls), whole, atol=1e-6, rtol=0)


def test_config_errors():
    with pytest.raises(ParameterError):
        get_effect("phaser", stages=20)
    with pytest.raises(ParameterError):
        ModulatedDelay(max_sweep_ms=0.0)
    with pytest.raises(ParameterError):
        modulated_delay(noise(1, 1, 100), SR, 1.0, 0.5, 5.0, -1.0, 0.5)
    with pytest.raises(ParameterError):
        tremolo(noise(1, 1, 100), 0, 1.0, 0.5, 0.5)


@pytest.mark.parametrize("name", ["delay", "modulated_delay", "phaser", "tremolo"])
def test_module_form_with_normalized_controls(name):
    eff = get_effect(name)
    assert eff.name == name
    x = noise(2, 2, 2000, seed=14, dtype=torch.float32)
    controls = torch.full((2, eff.n_params), 0.5, requires_grad=True)
    y = eff(x, SR, controls)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(controls.grad).all() and controls.grad.abs().sum() > 0
    physical = eff.to_physical(controls.detach())
    assert torch.allclose(eff.process(x, SR, **physical), y.detach())
    assert torch.equal(eff(x, SR), eff.process(x, SR, **eff.defaults(x)))
    assert type(get_effect(name, **eff.config())) is type(eff)
    assert eff.tail_seconds(physical) >= 0.0


def test_specs_match_the_documented_ranges():
    specs = {s.name: (s.min, s.max, s.scale) for s in Delay().specs}
    assert specs == {"time_ms": (1.0, 1000.0, "log"), "feedback": (0.0, 0.95, "linear"), "mix": (0.0, 1.0, "linear")}
    specs = {s.name: (s.min, s.max, s.scale) for s in ModulatedDelay().specs}
    assert specs["rate_hz"] == (0.1, 10.0, "log") and specs["delay_ms"] == (0.5, 20.0, "log")
    assert specs["feedback"] == (0.0, 0.9, "linear")
    specs = {s.name: (s.min, s.max, s.scale) for s in Tremolo().specs}
    assert specs["rate_hz"] == (0.1, 20.0, "log")
    specs = {s.name: (s.min, s.max, s.scale) for s in Phaser().specs}
    assert specs["rate_hz"] == (0.05, 5.0, "log") and specs["centre_hz"] == (200.0, 2000.0, "log")
    assert Delay(ping_pong=True).config() == {"ping_pong": True}
    assert Phaser(stages=8).config()["stages"] == 8

"""Periods read from the audio (`fxlens.features.periodicity`) and the refinement of estimates they drive.

References: numpy's FFT of an envelope / a cepstrum computed here with numpy; tremolo gains synthesized here from
the closed form ``1 - depth (1 - sin(2 pi f t + phase)) / 2`` at a known rate; echoes added here at a known lag.
"""

import math

import numpy as np
import pytest
import torch

from fxlens.errors import FxlensError, ParameterError
from fxlens.features.periodicity import (ENVELOPE_HOP, amplitude_lfo_rate, echo_lag_ms, envelope_modulation_power,
                                         pitch_lfo_rate, real_cepstrum, search_frequencies)
from fxlens.fx.chain import Chain
from fxlens.fx.effect import get_effect
from fxlens.models.estimator import REFINEMENTS, refine_controls

RATE_SEARCH_FACTOR = REFINEMENTS["tremolo"].search_factor

SR = 44100


def _source(seconds=1.5, seed=0, decay_s=0.8):
    """A decaying note of six partials plus a little noise, (T,) float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(110.0, 440.0)
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 7))
    return (x * np.exp(-t / decay_s) + 0.01 * rng.standard_normal(len(t))), t


def _tremolo(x, t, rate, depth, phase):
    return x * (1.0 - depth * (1.0 - np.sin(2 * np.pi * rate * t + phase)) / 2.0)


def _stereo(x):
    return torch.from_numpy(np.stack([x, x]))[None]  # (1, 2, T)


def test_power_equals_numpy_fft_of_the_detrended_log_envelope():
    x, _ = _source(seed=3)
    y = _stereo(x)
    n = len(x) // ENVELOPE_HOP
    rms = np.sqrt((x[: n * ENVELOPE_HOP].reshape(n, ENVELOPE_HOP) ** 2).mean(1) + 1e-20)
    le = np.log(rms)
    le = np.maximum(le, le.max() - 3 * np.log(10))  # 60 dB floor
    u = np.linspace(-1, 1, n)
    le = le - np.polyval(np.polyfit(u, le, 2), u)
    spec = np.abs(np.fft.rfft(le * np.hanning(n))) ** 2 / n
    rate = SR / ENVELOPE_HOP
    k = np.arange(1, 40)
    got = envelope_modulation_power(y, SR, torch.from_numpy(k * rate / n))[0].numpy()
    np.testing.assert_allclose(got, spec[k], rtol=1e-6, atol=1e-12 * spec.max())


@pytest.mark.parametrize("rate,depth,seed", [(2.3, 0.6, 0), (5.37, 0.9, 1), (11.1, 0.5, 2), (7.0, 1.0, 3)])
def test_rate_of_a_closed_form_tremolo(rate, depth, seed):
    """Any LFO phase (the periodogram does not use it); 1.5 s, a decaying note: within 1 % of the true rate."""
    x, t = _source(seed=seed)
    y = _stereo(_tremolo(x, t, rate, depth, phase=np.random.default_rng(seed).uniform(0, 2 * np.pi)))
    got = float(amplitude_lfo_rate(y, SR, rate / RATE_SEARCH_FACTOR, rate * RATE_SEARCH_FACTOR)[0])
    assert got == pytest.approx(rate, rel=0.01)


def test_silent_gaps_do_not_hide_the_rate():
    """Digital silence between notes is floored 60 dB under the loudest frame instead of dominating."""
    x, t = _source(seconds=3.0, seed=4, decay_s=0.3)
    x[(t % 1.0) > 0.7] = 0.0  # a note per second, 0.3 s of silence after each
    y = _stereo(_tremolo(x, t, 6.5, 0.8, phase=0.3))
    assert float(amplitude_lfo_rate(y, SR, 4.0, 9.0)[0]) == pytest.approx(6.5, rel=0.01)


def test_bad_bands_and_short_audio_are_parameter_errors():
    with pytest.raises(ParameterError):
        search_frequencies(5.0, 2.0)
    with pytest.raises(ParameterError):
        amplitude_lfo_rate(torch.zeros(1, 2, 100), SR, 1.0, 2.0)
    with pytest.raises(ParameterError):
        amplitude_lfo_rate(torch.zeros(2, 100), SR, 1.0, 2.0)
    with pytest.raises(ParameterError):
        echo_lag_ms(torch.zeros(1, 2, 1000), SR, 100.0, 50.0)
    with pytest.raises(ParameterError):  # a lag longer than the audio
        echo_lag_ms(torch.zeros(1, 2, 1000), SR, 100.0, 200.0)


def _phrase(seconds=1.5, seed=0):
    """Notes of changing pitch, 0.25 s each, with a little noise: (T,) float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for start in np.arange(0.0, seconds, 0.25):
        f0 = rng.uniform(110.0, 660.0)
        m = t >= start
        tt = t[m] - start
        x[m] += sum(np.sin(2 * np.pi * k * f0 * tt) / k for k in range(1, 5)) * np.exp(-tt / 0.15)
    return x + 0.01 * rng.standard_normal(len(t))


def test_cepstrum_equals_numpy():
    x = _phrase(0.5, seed=1)
    y = torch.from_numpy(np.stack([x, 0.5 * x]))[None]
    mono = 0.75 * x
    n = 1 << int(np.ceil(np.log2(2 * len(x))))
    mag = np.abs(np.fft.rfft(mono * np.hanning(len(x)), n))
    ref = np.fft.irfft(np.log(mag + 1e-9 * mag.max()), n)
    np.testing.assert_allclose(real_cepstrum(y)[0].numpy(), ref, atol=1e-9)


@pytest.mark.parametrize("lag_samples,gain,seed", [(3087, 0.5, 0), (8820, 0.35, 1), (21609, 0.6, 2)])
def test_echo_lag_of_an_added_echo(lag_samples, gain, seed):
    """y = x + g x(t - D) at D = 70, 200 and 490 ms: the cepstrum peak is within a tenth of a sample."""
    x = _phrase(seed=seed)
    y = x.copy()
    y[lag_samples:] += gain * x[:-lag_samples]
    d_ms = lag_samples * 1000.0 / SR
    got = float(echo_lag_ms(_stereo(y), SR, d_ms / 1.5, d_ms * 1.5)[0])
    assert got == pytest.approx(d_ms, abs=0.1 * 1000.0 / SR)


def _controls(effect, **values):
    return effect.to_normalized({k: torch.tensor([float(v)], dtype=torch.float64) for k, v in values.items()})


def test_refine_controls_moves_a_tremolo_rate_to_the_audio_and_leaves_the_rest():
    effect = get_effect("tremolo")
    x, t = _source(seed=5)
    y = torch.stack([_stereo(_tremolo(x, t, 4.4, 0.8, phase=0.0))[0],
                     _stereo(_tremolo(x, t, 9.0, 0.7, phase=1.0))[0]])
    guesses = torch.cat([_controls(effect, rate_hz=5.2, depth=0.5, shape=0.2),  # 18 % and 12 % off
                         _controls(effect, rate_hz=8.0, depth=0.9, shape=0.0)])
    out = refine_controls("tremolo", effect, guesses, y, SR)
    rates = effect.to_physical(out)["rate_hz"]
    assert rates.tolist() == pytest.approx([4.4, 9.0], rel=0.01)
    # the other controls, and the caller's tensor, are untouched
    torch.testing.assert_close(out[:, 1:], guesses[:, 1:])
    assert effect.to_physical(guesses)["rate_hz"].tolist() == pytest.approx([5.2, 8.0])
    # the band is the estimate +- RATE_SEARCH_FACTOR: a guess 2x off cannot reach the truth
    far = refine_controls("tremolo", effect, _controls(effect, rate_hz=9.0, depth=0.8, shape=0.0), y[:1], SR)
    assert float(effect.to_physical(far)["rate_hz"][0]) >= 9.0 / RATE_SEARCH_FACTOR - 1e-6


def test_refine_controls_pools_the_windows_of_one_recording():
    effect = get_effect("tremolo")
    x, t = _source(seconds=4.5, seed=6)
    y = _stereo(_tremolo(x, t, 3.1, 0.7, phase=2.0))
    win = int(1.5 * SR)
    segs = torch.cat([y[..., i * win:(i + 1) * win] for i in range(3)])  # (3, 2, W)
    out = refine_controls("tremolo", effect, _controls(effect, rate_hz=3.6, depth=0.7, shape=0.0), segs, SR)
    assert float(effect.to_physical(out)["rate_hz"][0]) == pytest.approx(3.1, rel=0.01)
    with pytest.raises(FxlensError):
        refine_controls("tremolo", effect, torch.zeros(2, 3), segs, SR)


def test_refine_controls_reads_a_delay_time_from_fxlens_delays():
    """fxlens's own delay (fractional time, feedback echoes) on a phrase: the guesses 25 % off come back within
    0.2 % of the time applied, the feedback and mix as estimated."""
    effect = get_effect("delay")
    x = torch.from_numpy(_phrase(seed=3))[None, None].expand(1, 2, -1).contiguous()
    with torch.no_grad():
        y = torch.cat([Chain([(effect, {"time_ms": t, "feedback": fb, "mix": 0.4})])(x, SR)[..., : x.shape[-1]]
                       for t, fb in ((95.3, 0.1), (412.7, 0.6))])
    guesses = torch.cat([_controls(effect, time_ms=119.0, feedback=0.3, mix=0.5),
                         _controls(effect, time_ms=330.0, feedback=0.4, mix=0.5)])
    out = refine_controls("feedback_delay", effect, guesses, y, SR)
    assert effect.to_physical(out)["time_ms"].tolist() == pytest.approx([95.3, 412.7], rel=0.002)
    torch.testing.assert_close(out[:, 1:], guesses[:, 1:])


def test_refine_controls_leaves_other_classes_alone():
    effect = get_effect("modulated_delay")
    c = torch.rand(2, len(effect.specs), dtype=torch.float64)
    out = refine_controls("flanger", effect, c, torch.randn(2, 2, SR), SR)  # same effect as vibrato, not refined
    assert torch.equal(out, c) and out is not c
    assert not math.isnan(float(out.sum()))


def _vibrato_chord(rate, sweep_ms, seconds=1.5, seed=0):
    """Closed form: three notes of five partials read through a delay d(t) = 5 ms + sweep sin(2 pi rate t),
    y(t) = x(t - d(t)), so each partial's phase is 2 pi f (t - d(t)); (T,) float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    d = 5e-3 + sweep_ms * 1e-3 * np.sin(2 * np.pi * rate * t)
    y = np.zeros_like(t)
    for f0 in rng.uniform(110.0, 440.0, 3):
        for k in range(1, 6):
            y += np.sin(2 * np.pi * k * f0 * (t - d)) / k
    return y * np.exp(-t / 2.0)


@pytest.mark.parametrize("rate,sweep_ms,seed", [(3.3, 1.0, 0), (5.2, 0.5, 1), (7.9, 0.3, 2)])
def test_pitch_lfo_rate_of_a_closed_form_vibrato(rate, sweep_ms, seed):
    """Pitch swings of +-2 % to +-1.5 %: the rate within 1 %."""
    y = _stereo(_vibrato_chord(rate, sweep_ms, seed=seed))
    assert float(pitch_lfo_rate(y, SR, rate / 1.4, rate * 1.4)[0]) == pytest.approx(rate, rel=0.01)


@pytest.mark.parametrize("class_name, mix", [("vibrato", 1.0), ("autofx_modulation", 0.7)])
def test_refine_controls_reads_a_vibrato_rate_from_fxlens_modulated_delay(class_name, mix):
    """A vibrato's rate, and the rate of AutoFX's protocol modulated delay (part dry) at 6.3 Hz, from a 5 Hz guess."""
    effect = get_effect("modulated_delay")
    x = torch.from_numpy(_vibrato_chord(1.0, 0.0, seed=4))[None, None].expand(1, 2, -1).contiguous()
    params = {"rate_hz": 6.3, "depth": 0.3, "delay_ms": 5.0, "feedback": 0.0, "mix": mix}
    with torch.no_grad():
        y = Chain([(effect, params)])(x, SR)[..., : x.shape[-1]]
    guess = _controls(effect, rate_hz=5.0, depth=0.3, delay_ms=5.0, feedback=0.0, mix=mix)
    out = refine_controls(class_name, effect, guess, y, SR)
    assert float(effect.to_physical(out)["rate_hz"][0]) == pytest.approx(6.3, rel=0.01)

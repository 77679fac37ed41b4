"""The 243 effect features (`fxlens.features.recognition.effect_features`) against independent references: the
log-mel statistics against librosa, the envelope levels against numpy on frames cut here, the crest factor of a
sine (3.01 dB), the envelope's modulation peak, its autocorrelation lag and the cepstral echo lags against the
periods put into test signals. (The stereo measures: `test_features.py::test_stereo_image_against_closed_forms`.)"""

import math

import numpy as np
import pytest
import torch

from fxlens.features.recognition import EFFECT_FEATURE_NAMES, effect_features

SR = 44100


def _feats(mono: torch.Tensor) -> dict[str, float]:
    """Named features of a mono signal (T,) played identically on both channels."""
    x = torch.stack([mono, mono]).float()[None]
    values = effect_features(x, SR)[0]
    assert values.shape == (243,) == (len(EFFECT_FEATURE_NAMES),) and bool(torch.isfinite(values).all())
    return dict(zip(EFFECT_FEATURE_NAMES, values.tolist()))


def _noise(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_log_mel_statistics_match_librosa():
    librosa = pytest.importorskip("librosa")
    t = torch.arange(int(1.5 * SR), dtype=torch.float64) / SR
    y = 0.3 * torch.sin(2 * math.pi * 440 * t) * torch.exp(-2 * t) + 0.02 * _noise(1.5)
    f = _feats(y)
    S = librosa.feature.melspectrogram(y=y.float().numpy(), sr=SR, n_fft=2048, hop_length=512, n_mels=64, fmin=50.0,
                                       fmax=18000.0, power=2.0, center=True, pad_mode="constant", htk=False,
                                       norm="slaney")
    lm = (np.clip(10 * np.log10(np.maximum(S, 1e-10)), -80.0, 40.0) + 80.0) / 60.0 - 1.0
    for name, ref in (("mean", lm.mean(1)), ("std", lm.std(1)), ("dmean", np.abs(np.diff(lm, axis=1)).mean(1))):
        ours = np.array([f[f"mel{i}_{name}"] for i in range(64)])
        np.testing.assert_allclose(ours, ref, atol=2e-3, err_msg=name)


def test_envelope_levels_match_numpy_frames():
    """A step from full level to -20 dB and then to -50 dB: the RMS envelope's percentiles and the fractions of
    frames under -20 / -40 dB, against frames cut with numpy (1024 samples, hop 256, centred, zero-padded)."""
    t = np.arange(int(2.0 * SR)) / SR
    gain = np.where(t < 1.0, 1.0, np.where(t < 1.5, 0.1, 10 ** (-50 / 20)))
    y = 0.5 * np.sin(2 * np.pi * 1000 * t) * gain
    f = _feats(torch.from_numpy(y))
    padded = np.pad(y.astype(np.float32).astype(np.float64), 512)
    starts = range(0, len(padded) - 1024 + 1, 256)
    rms = np.array([np.sqrt(np.mean(padded[s:s + 1024] ** 2)) for s in starts])
    env_db = np.clip(20 * np.log10(np.maximum(rms, 1e-9) / rms.max()), -100, 0)
    for p in (5, 10, 25, 50, 75, 90):
        assert f[f"env_p{p}_db"] == pytest.approx(np.percentile(env_db, p), abs=0.05), p
    assert f["env_below20"] == pytest.approx(np.mean(env_db < -20), abs=1e-6)
    assert f["env_below40"] == pytest.approx(np.mean(env_db < -40), abs=1e-6)
    # half the frames at full level, a quarter at -20 dB, a quarter at -50 dB
    assert f["env_p75_db"] == pytest.approx(0.0, abs=0.1) and f["env_p5_db"] == pytest.approx(-50.0, abs=0.1)


def test_crest_factor_of_a_sine_is_3_dB():
    t = torch.arange(int(1.5 * SR), dtype=torch.float64) / SR
    f = _feats(0.4 * torch.sin(2 * math.pi * 441.0 * t))  # 100 samples a period: whole periods in the clip
    assert f["crest_clip_db"] == pytest.approx(10 * math.log10(2), abs=0.01)
    # per frame too, up to the half-empty frames at the two ends (centred, zero-padded)
    assert f["crest_mean_db"] == pytest.approx(10 * math.log10(2), abs=0.1) and f["crest_std_db"] < 0.5


@pytest.mark.parametrize("rate_hz", [3.0, 6.0, 11.0])
def test_envelope_modulation_peak_is_the_tremolo_rate(rate_hz):
    t = torch.arange(int(1.5 * SR), dtype=torch.float64) / SR
    y = 0.2 * _noise(1.5) * (1 + 0.8 * torch.sin(2 * math.pi * rate_hz * t))
    f = _feats(y)
    assert f["envmod_peak_hz"] == pytest.approx(rate_hz, abs=0.35)
    assert f["envmod_peak_ratio"] > 1.0  # the peak stands more than 10x above the band's median


def test_envelope_autocorrelation_peaks_at_the_pulse_period():
    y = np.zeros(int(1.5 * SR))
    burst = np.random.default_rng(0).normal(size=800) * np.hanning(800)
    for start in range(0, len(y) - 800, int(0.25 * SR)):  # a burst every 250 ms
        y[start:start + 800] += burst
    f = _feats(torch.from_numpy(y))
    assert f["envac_max_lag_s"] == pytest.approx(0.25, abs=256 / SR + 1e-9)
    assert f["envac_max"] > 0.5


def test_cepstrum_finds_an_echo_and_a_short_comb():
    x = _noise(1.5, seed=3)
    for lag_s, field in ((0.300, "ceps_long"), (0.005, "ceps_short")):
        d = int(round(lag_s * SR))
        y = x.clone()
        y[d:] += 0.6 * x[:-d]
        f = _feats(y)
        assert f[f"{field}_lag_s"] == pytest.approx(d / SR, abs=1.5 / SR), field
        assert f[f"{field}_peak"] > 5.0  # standard deviations above the cepstrum's mean in its band
    plain = _feats(x)
    assert plain["ceps_long_peak"] < 6.0 and plain["ceps_short_peak"] < 6.0

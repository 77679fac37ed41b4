"""The rate of a periodic level modulation (a tremolo's LFO), read from the audio's own envelope.

A tremolo multiplies the source by a periodic gain, so the log of the level envelope is the source's log envelope
plus the log gain: a periodic component at the LFO rate. `envelope_modulation_power` is the periodogram of that
log envelope (RMS frames of the channel mean, hop `ENVELOPE_HOP` samples; a quadratic trend removed, which takes out
the slow rise and decay of notes; Hann-windowed), evaluated at any frequencies — a direct DFT on a fine log grid
instead of zero-padded FFT bins, so a 1.5 s clip's peak is located to a small fraction of its 0.67 Hz bin width.
`amplitude_lfo_rate` takes its maximum inside a band.

The periodogram does not use the LFO's phase, so it works on recordings whose tremolo started anywhere. Inside a
wide band it can pick the music's own rhythm or a harmonic of the LFO (the log of a deep sine gain is far from a
sine); `fxlens.models.estimator.refine_controls` therefore searches only near a model's estimate.

Written here rather than taken from a library: librosa's tempogram and onset-strength functions track note onsets,
not a smooth gain, and scipy's periodograms give FFT bins only.
"""

from __future__ import annotations

import math

import torch

from fxlens.errors import ParameterError

ENVELOPE_HOP = 128  # samples per envelope frame: 345 frames/s at 44.1 kHz, far above a 20 Hz LFO's Nyquist needs
_FLOOR_NEPERS = 60.0 / 20.0 * math.log(10.0)  # 60 dB as a natural-log amplitude ratio
N_FREQUENCIES = 2000  # log-spaced search points in a band (a 1.4x band: steps of 0.02 %)


def log_envelope(x: torch.Tensor, sample_rate: int, hop: int = ENVELOPE_HOP) -> tuple[torch.Tensor, float]:
    """(B, C, T) -> (log RMS of the channel mean per `hop`-sample frame (B, n), floored 60 dB under its maximum, a
    quadratic trend removed; frames per second)."""
    if x.dim() != 3:
        raise ParameterError(f"expected audio of shape (batch, channels, samples), got {tuple(x.shape)}")
    n = x.shape[-1] // hop
    if n < 8:
        raise ParameterError(f"audio too short for an envelope: {x.shape[-1]} samples (needs {8 * hop})")
    mono = x.mean(1)[:, : n * hop].double().reshape(x.shape[0], n, hop)
    le = 0.5 * torch.log(mono.square().mean(-1) + 1e-20)
    # floored 60 dB under the loudest frame: digital silence between notes would otherwise dominate the spectrum
    le = torch.maximum(le, le.amax(-1, keepdim=True) - _FLOOR_NEPERS)
    t = torch.linspace(-1.0, 1.0, n, dtype=le.dtype)
    basis = torch.stack([torch.ones_like(t), t, t * t], 1)  # (n, 3) quadratic trend
    coef = torch.linalg.lstsq(basis, le.T).solution  # (3, B)
    return le - (basis @ coef).T, sample_rate / hop


def envelope_modulation_power(x: torch.Tensor, sample_rate: int, freqs_hz: torch.Tensor) -> torch.Tensor:
    """Periodogram (B, F) of the detrended, Hann-windowed log envelope of `x` (B, C, T) at `freqs_hz` (F,)."""
    le, rate = log_envelope(x, sample_rate)
    n = le.shape[-1]
    w = torch.hann_window(n, periodic=False, dtype=le.dtype)
    t = torch.arange(n, dtype=le.dtype) / rate
    phase = 2.0 * math.pi * freqs_hz.double()[:, None] * t[None]  # (F, n)
    z = le * w
    re, im = z @ torch.cos(phase).T, z @ torch.sin(phase).T
    return (re.square() + im.square()) / n


def search_frequencies(lo_hz: float, hi_hz: float, n: int = N_FREQUENCIES) -> torch.Tensor:
    """`n` log-spaced frequencies from `lo_hz` to `hi_hz` (0 < lo < hi)."""
    if not 0.0 < lo_hz < hi_hz:
        raise ParameterError(f"need 0 < lo < hi, got {lo_hz} and {hi_hz} Hz")
    return torch.logspace(math.log10(lo_hz), math.log10(hi_hz), n, dtype=torch.float64)


def amplitude_lfo_rate(x: torch.Tensor, sample_rate: int, lo_hz: float, hi_hz: float) -> torch.Tensor:
    """The frequency (Hz) in [`lo_hz`, `hi_hz`] where the log envelope of each item of `x` (B, C, T) is most
    periodic (the peak of `envelope_modulation_power`): (B,)."""
    f = search_frequencies(lo_hz, hi_hz)
    return f[envelope_modulation_power(x, sample_rate, f).argmax(-1)]

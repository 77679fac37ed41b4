"""Log-mel spectrograms scaled as the Fx-Encoder++ encoder expects them (`log_mel`).

Fx-Encoder++ (Yeh et al., ISMIR 2025) feeds its CNN14-style encoder a stereo log-mel: n_fft 2048, hop 512, 64 mel
bands from 50 Hz to 18 kHz at 44.1 kHz, power in dB clamped to [-80, 40] dB and mapped linearly to [-1, 1]. The mel
filterbank is `fxlens.features.spectral.mel_filterbank` (Slaney mel scale, Slaney area norm: librosa's default,
which the peer's torchlibrosa front end uses).
"""

from __future__ import annotations

import torch

from fxlens.errors import ParameterError
from fxlens.features.spectral import mel_filterbank, stft_magnitude

DB_MIN = -80.0  # dB floor of the clamp
DB_MAX = 40.0  # dB ceiling of the clamp
_AMIN = 1e-10  # power floor before the log (as librosa / torchlibrosa)


def log_mel(
    x: torch.Tensor,
    sample_rate: float,
    n_fft: int = 2048,
    hop: int = 512,
    n_mels: int = 64,
    fmin: float = 50.0,
    fmax: float = 18000.0,
) -> torch.Tensor:
    """Scaled log-mel power spectrogram of ``x`` ``(B, C, T)``: ``(B, C, n_mels, 1 + T // hop)`` in [-1, 1].

    Per channel: ``|STFT|^2`` (periodic Hann, centred, zero-padded), mel bands (Hz limits `fmin`..`fmax`, capped at
    Nyquist), ``10 log10(max(power, 1e-10))`` dB, clamped to [-80, 40] dB, then ``(dB + 80) / 60 - 1``. Batched,
    differentiable, on the input's device and dtype.
    """
    if x.dim() != 3:
        raise ParameterError(f"log_mel expects (batch, channels, samples) audio, got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ParameterError("audio has no samples")
    B, C, T = x.shape
    fmax = min(float(fmax), float(sample_rate) / 2)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney", dtype=x.dtype,
                        device=x.device)  # (n_mels, F)
    power = stft_magnitude(x.reshape(B * C, T), n_fft, hop).square()  # (B*C, F, M)
    mel = torch.matmul(fb, power)  # (B*C, n_mels, M)
    db = 10.0 * torch.log10(torch.clamp(mel, min=_AMIN))
    db = db.clamp(DB_MIN, DB_MAX)
    scaled = (db - DB_MIN) / (DB_MAX - DB_MIN) * 2.0 - 1.0
    return scaled.reshape(B, C, n_mels, -1)

"""Log-mel spectrograms scaled as the Fx-Encoder++ encoder expects them (`log_mel`), and statistics of them over
time (`band_statistics`, the input of the band-statistics encoder).

Fx-Encoder++ (Yeh et al., ISMIR 2025) feeds its CNN14-style encoder a stereo log-mel: n_fft 2048, hop 512, 64 mel
bands from 50 Hz to 18 kHz at 44.1 kHz, power in dB clamped to [-80, 40] dB and mapped linearly to [-1, 1]. The mel
filterbank is `fxlens.features.spectral.mel_filterbank` (Slaney mel scale, Slaney area norm: librosa's default,
which the peer's torchlibrosa front end uses).
"""

from __future__ import annotations

import math

import torch

from fxlens.errors import ParameterError
from fxlens.features.spectral import mel_filterbank, stft_power

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
    power = stft_power(x.reshape(B * C, T), n_fft, hop)  # (B*C, F, M)
    mel = torch.matmul(fb, power)  # (B*C, n_mels, M)
    db = 10.0 * torch.log10(torch.clamp(mel, min=_AMIN))
    db = db.clamp(DB_MIN, DB_MAX)
    scaled = (db - DB_MIN) / (DB_MAX - DB_MIN) * 2.0 - 1.0
    return scaled.reshape(B, C, n_mels, -1)


ENVELOPE_LAGS = 64  # frames (0.74 s at hop 512): echoes and modulation periods of the broadband envelope
GROUP_LAGS = (2, 4, 8, 16, 32, 48)  # frames, for the envelopes of 8 groups of bands
N_GROUPS = 8


def _autocorrelation(x: torch.Tensor, lags) -> torch.Tensor:
    """Normalized autocorrelation of (..., N) sequences (mean removed) at each lag: (..., len(lags)). A lag at or
    beyond the length gives 0."""
    x = x - x.mean(-1, keepdim=True)
    energy = x.square().mean(-1) + 1e-6
    n = x.shape[-1]
    out = [(x[..., :-k] * x[..., k:]).mean(-1) / energy if k < n else torch.zeros_like(energy) for k in lags]
    return torch.stack(out, -1)


MID_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)  # version 2: the level distribution of each band of the mid
SIDE_QUANTILES = (0.1, 0.5, 0.9)  # ... and of the side difference
BAND_STATISTICS_VERSIONS = (1, 2)


def _quantiles(x: torch.Tensor, qs) -> torch.Tensor:
    """Quantiles over the last axis of (..., N), linear interpolation between order statistics (numpy's and
    torch.quantile's default): (..., len(qs)). Written with a sort because torch.quantile refuses inputs of more
    than 2**24 values (the bands of a long file)."""
    s = x.sort(-1).values
    n = x.shape[-1]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        out.append(s[..., lo] + (pos - lo) * (s[..., hi] - s[..., lo]))
    return torch.stack(out, -1)


def band_statistics(mel: torch.Tensor, version: int = 1) -> torch.Tensor:
    """Statistics over time of a stereo `log_mel` ``(B, 2, M, N)`` -> ``(B, band_statistics_size(M, version))``.

    Version 1 (``8 M + 64 + 48`` values): for the mid (mean of the two channels' scaled dB) and for the side
    difference (left minus right, a level difference per band): per band the mean, standard deviation, mean absolute
    frame-to-frame change (flux) and range (max - min) over time; the normalized autocorrelation of the broadband mid
    envelope (mean over bands) at lags of 1..64 frames (echoes up to 0.74 s, tremolo and modulation periods); and
    that of 8 groups of adjacent bands at lags of 2, 4, 8, 16, 32 and 48 frames. Effects change these (an EQ the band
    means, a compressor the spread and flux, a reverb or delay the autocorrelation, an imager the side difference)
    while the music's notes mostly move in time, which the statistics average out.

    Version 2 (``18 M + 64 + 48``) adds the shape of each band's level distribution over time, which a compressor
    or limiter changes more than its spread: per band of the mid the 5, 25, 50, 75 and 95 % quantiles, the
    skewness and the rising part of the flux (the mean of the positive frame-to-frame changes, i.e. the attacks;
    the falling part is the flux minus it); per band of the side the 10, 50 and 90 % quantiles.
    """
    if mel.dim() != 4 or mel.shape[1] != 2:
        raise ParameterError("band_statistics expects a stereo log-mel (batch, 2, mels, frames), "
                             f"got {tuple(mel.shape)}")
    if version not in BAND_STATISTICS_VERSIONS:
        raise ParameterError(f"unknown band statistics version {version} (have {BAND_STATISTICS_VERSIONS})")
    B, _, M, N = mel.shape
    if M % N_GROUPS:
        raise ParameterError(f"band_statistics needs a multiple of {N_GROUPS} mel bands, got {M}")
    mel = mel.float()
    mid, side = 0.5 * (mel[:, 0] + mel[:, 1]), mel[:, 0] - mel[:, 1]
    feats = []
    steps = {}  # frame-to-frame changes, (B, M, N - 1)
    for name, x in (("mid", mid), ("side", side)):
        steps[name] = x[..., 1:] - x[..., :-1]
        flux = steps[name].abs().mean(-1) if N > 1 else torch.zeros_like(x[..., 0])
        feats += [x.mean(-1), x.std(-1, correction=0), flux, x.amax(-1) - x.amin(-1)]
    feats.append(_autocorrelation(mid.mean(1), range(1, ENVELOPE_LAGS + 1)))
    groups = mid.reshape(B, N_GROUPS, M // N_GROUPS, N).mean(2)
    feats.append(_autocorrelation(groups, GROUP_LAGS).flatten(1))
    if version >= 2:
        feats.append(_quantiles(mid, MID_QUANTILES).transpose(1, 2).flatten(1))
        centred = mid - mid.mean(-1, keepdim=True)
        var = centred.square().mean(-1)
        # a band whose level does not move (values lie in [-1, 1]: 1e-8 is far below any real spread) has no skewness
        steady = var <= 1e-8
        skew = centred.pow(3).mean(-1) / torch.where(steady, torch.ones_like(var), var).pow(1.5)
        feats.append(torch.where(steady, torch.zeros_like(skew), skew))
        feats.append(steps["mid"].clamp_min(0).mean(-1) if N > 1 else torch.zeros_like(mid[..., 0]))
        feats.append(_quantiles(side, SIDE_QUANTILES).transpose(1, 2).flatten(1))
    return torch.cat(feats, 1)


def band_statistics_size(n_mels: int, version: int = 1) -> int:
    extra = (len(MID_QUANTILES) + 2 + len(SIDE_QUANTILES)) * n_mels if version >= 2 else 0
    return 8 * n_mels + ENVELOPE_LAGS + N_GROUPS * len(GROUP_LAGS) + extra

"""The edge of fxlens: the only place where audio enters or leaves it.

Everything past this module works on ``(batch, channels, samples)`` float32 tensors at an explicit sample rate,
44.1 kHz stereo by default (`WORKING_SAMPLE_RATE`). This module turns any common file into that, and back:

- `info`, `load`, `load_with_rate`: wav/flac/ogg (vorbis, opus)/mp3 through soundfile (libsndfile), any bit depth,
  any rate (8-192 kHz tested), 1-8 channels; returns ``(1, 2, T)`` float32 (``(1, C, T)`` with ``stereo=False``).
- `resample`: soxr, high quality (``"HQ"``), batched over leading dimensions.
- `to_stereo` / `downmix_matrix`: mono duplicated, stereo unchanged, 3-8 channels downmixed (ITU-R BS.775 style).
- `integrated_loudness`: ITU-R BS.1770-4 gated loudness in LUFS, in torch, batched, differentiable w.r.t. audio;
  matches ``pyloudnorm.Meter(rate).integrated_loudness`` (block boundaries and gates as pyloudnorm computes them).
- `peak_db`, `normalize_loudness`, `normalize_peak`.
- `save`: atomic (temp file in the same directory + ``os.replace``), wav or flac, PCM_16 / PCM_24 / FLOAT.

Bad input raises a typed error and never leaves a file behind: `AudioFileError` for files that are missing,
unreadable, corrupt, empty or of an unsupported format; `InvalidAudioError` for samples that are NaN/inf, silent
where loudness is needed, or too short.

`resample`, `load` and `save` go through numpy (soxr and soundfile are numpy libraries): they are I/O, not part of
any differentiable forward path. The loudness functions are pure torch and run on any device.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
import torchlpc

from fxlens.atomic import atomic_path
from fxlens.errors import AudioFileError, InvalidAudioError, ParameterError

__all__ = [
    "WORKING_SAMPLE_RATE",
    "SAVE_SUBTYPES",
    "AudioInfo",
    "info",
    "load",
    "load_with_rate",
    "resample",
    "downmix_matrix",
    "to_stereo",
    "check_finite",
    "k_weighting_coefficients",
    "k_weight",
    "integrated_loudness",
    "peak_db",
    "normalize_loudness",
    "normalize_peak",
    "save",
]

logger = logging.getLogger(__name__)

WORKING_SAMPLE_RATE = 44100
"""The sample rate (Hz) that fxlens works at unless told otherwise."""

SAVE_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
"""Sample formats that `save` writes (FLOAT only in wav: flac has no float format)."""

_SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}

# ------------------------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, without decoding it. ``format``/``subtype`` are libsndfile's names ("WAV", "PCM_24")."""

    path: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float


def _open_error(path: Path, err: Exception) -> AudioFileError:
    """One-line message for a file libsndfile cannot open (corrupt, empty, not audio, unsupported)."""
    detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return AudioFileError(f"cannot read audio file '{path}': {detail}")


def _check_readable(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"audio file not found: '{p}'")
    if not p.is_file():
        raise AudioFileError(f"not a file: '{p}'")
    if p.stat().st_size == 0:
        raise AudioFileError(f"audio file is empty (0 bytes): '{p}'")
    return p


def info(path: str | os.PathLike) -> AudioInfo:
    """Describe an audio file without decoding it.

    Raises `AudioFileError` if the file is missing, empty (0 bytes or 0 frames), corrupt or of a format libsndfile
    cannot read. For compressed formats (mp3, ogg) ``frames`` is libsndfile's count, which may differ from the
    decoded length by a few hundred samples.
    """
    p = _check_readable(path)
    try:
        i = sf.info(str(p))
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise _open_error(p, e) from None
    if i.frames <= 0 or i.channels <= 0 or i.samplerate <= 0:
        raise AudioFileError(f"audio file has no samples: '{p}'")
    return AudioInfo(
        path=str(p),
        format=i.format,
        subtype=i.subtype,
        sample_rate=int(i.samplerate),
        channels=int(i.channels),
        frames=int(i.frames),
        duration_s=float(i.frames) / float(i.samplerate),
    )


def load_with_rate(
    path: str | os.PathLike,
    sample_rate: int | None = WORKING_SAMPLE_RATE,
    stereo: bool = True,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Load (a segment of) an audio file; return ``(audio, rate)``.

    Args:
        path: any file libsndfile reads (wav in any PCM/float subtype, flac, ogg vorbis/opus, mp3, aiff, ...).
        sample_rate: output rate in Hz (soxr HQ resampling), or None to keep the file's rate.
        stereo: convert to 2 channels with `to_stereo` (default); False keeps the file's channels.
        offset_s: where to start reading, in seconds from the start of the file (at the file's rate).
        duration_s: how many seconds to read, or None for the rest of the file.

    Returns:
        ``audio`` float32 of shape (1, 2, T) (or (1, C, T) with ``stereo=False``), samples in [-1, 1] for integer
        formats (float files keep their values), and ``rate`` its sample rate in Hz.

    Raises:
        AudioFileError: missing, unreadable, corrupt or empty file, or a segment with no frames in it.
        InvalidAudioError: NaN or infinite samples; more than 8 channels with ``stereo=True``.
        ParameterError: a negative offset, a non-positive duration or sample rate.
    """
    if offset_s < 0 or not math.isfinite(offset_s):
        raise ParameterError(f"offset_s must be a finite number >= 0, got {offset_s}")
    if duration_s is not None and (duration_s <= 0 or not math.isfinite(duration_s)):
        raise ParameterError(f"duration_s must be a finite number > 0 or None, got {duration_s}")
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
        raise ParameterError(f"sample_rate must be a positive integer or None, got {sample_rate}")

    p = _check_readable(path)
    try:
        with sf.SoundFile(str(p)) as f:
            file_rate = int(f.samplerate)
            start = int(round(offset_s * file_rate))
            frames = -1 if duration_s is None else max(int(round(duration_s * file_rate)), 1)
            if start > 0:
                if f.seekable() and f.frames > 0 and start >= f.frames:
                    raise AudioFileError(
                        f"offset {offset_s:.3f} s is past the end of '{p}' ({f.frames / file_rate:.3f} s)"
                    )
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioFileError:
        raise
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise _open_error(p, e) from None

    if data.shape[0] == 0 or data.shape[1] == 0:
        where = f" at offset {offset_s:.3f} s" if offset_s > 0 else ""
        raise AudioFileError(f"audio file has no samples{where}: '{p}'")

    # (T, C) numpy -> (1, C, T) torch; copy so the tensor owns contiguous memory.
    audio = torch.from_numpy(np.ascontiguousarray(data.T))[None]
    check_finite(audio, what=f"audio file '{p}'")
    if stereo:
        audio = to_stereo(audio)
    rate = file_rate
    if sample_rate is not None and int(sample_rate) != file_rate:
        audio = resample(audio, file_rate, int(sample_rate))
        rate = int(sample_rate)
    return audio.to(torch.float32).contiguous(), rate


def load(
    path: str | os.PathLike,
    sample_rate: int | None = WORKING_SAMPLE_RATE,
    stereo: bool = True,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> torch.Tensor:
    """Load an audio file as float32 (1, 2, T) at ``sample_rate`` Hz (see `load_with_rate` for the arguments).

    With ``sample_rate=None`` the file's rate is kept; use `load_with_rate` to learn what it is.
    """
    return load_with_rate(path, sample_rate, stereo=stereo, offset_s=offset_s, duration_s=duration_s)[0]


# ------------------------------------------------------------------------------------------------------------------
# Resampling and channels
# ------------------------------------------------------------------------------------------------------------------


def resample(x: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample ``x`` (..., T) from ``orig_sr`` to ``target_sr`` Hz with soxr (quality "HQ").

    Every leading index is an independent signal (soxr filters them as channels of one stream). The output has
    ``floor(T * target_sr / orig_sr + 1/2)`` samples, keeps x's dtype (float32 or float64; other dtypes become float32)
    and device. Returns x itself when the rates match. Not differentiable (soxr is a numpy library): use it at the
    edges, not inside a training graph.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ParameterError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if int(orig_sr) == int(target_sr):
        return x
    if x.dim() == 0:
        raise InvalidAudioError("cannot resample a 0-d tensor")
    check_finite(x)
    lead, T = x.shape[:-1], x.shape[-1]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    # round(T * ratio) with halves rounded up, in exact integer arithmetic: soxr's own output length.
    n_out = (2 * T * int(target_sr) + int(orig_sr)) // (2 * int(orig_sr))
    if T == 0 or n_out == 0:
        return x.new_zeros(*lead, n_out, dtype=dtype)
    flat = x.detach().reshape(-1, T).to("cpu", dtype)
    # soxr wants (frames, channels), C-contiguous.
    y = soxr.resample(np.ascontiguousarray(flat.numpy().T), orig_sr, target_sr, quality="HQ")
    y = torch.from_numpy(np.ascontiguousarray(y.T))
    # Pin the length so callers can rely on it whatever soxr version is installed.
    if y.shape[-1] > n_out:
        y = y[..., :n_out]
    elif y.shape[-1] < n_out:
        y = F.pad(y, (0, n_out - y.shape[-1]))
    return y.reshape(*lead, n_out).to(x.device)


# -3 dB: the ITU-R BS.775 gain for the centre and surround channels in a stereo downmix.
_G = 1.0 / math.sqrt(2.0)

# Unnormalized downmix rows (Lo, Ro) per input channel count; columns in WAVE/SMPTE channel order.
#   3: L R C                      (3.0)
#   4: L R Ls Rs                  (quad)
#   5: L R C Ls Rs                (5.0)
#   6: L R C LFE Ls Rs            (5.1)
#   7: L R C LFE Cs Ls Rs         (6.1, WAVE order: back centre before the sides; Cs split -3 dB x -3 dB = -6 dB)
#   8: L R C LFE Ls Rs Lb Rb      (7.1; whether 5-6 are sides and 7-8 backs or the reverse, both go to their side)
# LFE is dropped (BS.775 leaves it out of the downmix).
_DOWNMIX = {
    3: [[1, 0, _G], [0, 1, _G]],
    4: [[1, 0, _G, 0], [0, 1, 0, _G]],
    5: [[1, 0, _G, _G, 0], [0, 1, _G, 0, _G]],
    6: [[1, 0, _G, 0, _G, 0], [0, 1, _G, 0, 0, _G]],
    7: [[1, 0, _G, 0, 0.5, _G, 0], [0, 1, _G, 0, 0.5, 0, _G]],
    8: [[1, 0, _G, 0, _G, 0, _G, 0], [0, 1, _G, 0, 0, _G, 0, _G]],
}


def downmix_matrix(channels: int) -> torch.Tensor:
    """The (2, channels) float64 matrix that `to_stereo` applies: ``stereo = M @ input``.

    - 1 channel: ``[[1], [1]]`` (duplicated, not attenuated);  2 channels: identity.
    - 3-8 channels: ITU-R BS.775-style coefficients in WAVE/SMPTE order (table above `downmix_matrix` in the
      source): front L/R at 1, centre and surrounds at -3 dB (1/sqrt(2)) to their side (centre to both),
      LFE dropped; 7 channels are read as 6.1 (L R C LFE Cs Ls Rs) with the back centre at -6 dB to both sides.
      Each matrix is then divided by its largest row sum of absolute values (1 + 2/sqrt(2) = 2.414 for 5.0/5.1,
      1 + 3/sqrt(2) = 3.121 for 7.1), so ``max|out| <= max|in|``: the downmix never clips more than its input.

    Raises `InvalidAudioError` for 0 or more than 8 channels.
    """
    if channels == 1:
        return torch.ones(2, 1, dtype=torch.float64)
    if channels == 2:
        return torch.eye(2, dtype=torch.float64)
    if channels not in _DOWNMIX:
        raise InvalidAudioError(f"cannot convert {channels}-channel audio to stereo (1 to 8 channels supported)")
    m = torch.tensor(_DOWNMIX[channels], dtype=torch.float64)
    return m / m.abs().sum(dim=1).max()


def to_stereo(x: torch.Tensor) -> torch.Tensor:
    """Convert (B, C, T) audio with 1 to 8 channels to (B, 2, T); see `downmix_matrix` for the coefficients.

    Stereo input is returned unchanged (the same tensor); differentiable otherwise.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidAudioError(f"audio must be a tensor of shape (batch, channels, samples), got {shape}")
    c = x.shape[1]
    if c == 2:
        return x
    if c == 1:
        return x.expand(-1, 2, -1).contiguous()
    m = downmix_matrix(c).to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    return torch.einsum("oc,bct->bot", m, x.to(m.dtype))


def check_finite(x: torch.Tensor, what: str = "audio") -> None:
    """Raise `InvalidAudioError` if ``x`` holds any NaN or infinite value (``what`` names it in the message)."""
    if x.is_floating_point() or x.is_complex():
        # Fast path: a sum is finite only if every term is (NaN/inf propagate); a float64 sum cannot overflow on
        # audio. Only a failing sum pays for the elementwise check that counts the bad samples.
        if x.numel() == 0 or bool(torch.isfinite(x.sum(dtype=torch.float64 if x.is_floating_point() else None))):
            return
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n = int(bad.sum())
            raise InvalidAudioError(f"{what} contains {n} NaN or infinite sample{'s' if n != 1 else ''}")


# ------------------------------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4)
# ------------------------------------------------------------------------------------------------------------------

_BLOCK_S = 0.400  # gating block length (s)
_OVERLAP = 0.75  # block overlap
_ABS_GATE_LUFS = -70.0
_REL_GATE_LU = -10.0
_LUFS_OFFSET = -0.691


def k_weighting_coefficients(sample_rate: float) -> list[tuple[list[float], list[float]]]:
    """The two K-weighting biquads ``[(b, a), (b, a)]`` (a[0] == 1) for any sample rate in Hz.

    Designed as pyloudnorm does (RBJ cookbook): a high shelf (+4 dB, Q 1/sqrt(2), 1500 Hz) then a high pass
    (Q 0.5, 38 Hz). At 48 kHz they are within 1e-3 of the BS.1770 tables; at other rates they are the same
    analogue prototype, not a resampled copy of the 48 kHz filter.
    """
    fs = float(sample_rate)

    def design(kind: str, gain_db: float, q: float, fc: float) -> tuple[list[float], list[float]]:
        A = 10.0 ** (gain_db / 40.0)
        w0 = 2.0 * math.pi * fc / fs
        cw, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
        if kind == "high_shelf":
            sa = 2.0 * math.sqrt(A) * alpha
            b = [
                A * ((A + 1) + (A - 1) * cw + sa),
                -2 * A * ((A - 1) + (A + 1) * cw),
                A * ((A + 1) + (A - 1) * cw - sa),
            ]
            a = [(A + 1) - (A - 1) * cw + sa, 2 * ((A - 1) - (A + 1) * cw), (A + 1) - (A - 1) * cw - sa]
        else:  # high_pass
            b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
            a = [1 + alpha, -2 * cw, 1 - alpha]
        return [v / a[0] for v in b], [v / a[0] for v in a]

    return [design("high_shelf", 4.0, 1.0 / math.sqrt(2.0), 1500.0), design("high_pass", 0.0, 0.5, 38.0)]


def k_weight(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Apply the K-weighting pre-filter to (..., T) audio; exact IIR (zero initial state), differentiable.

    Each biquad runs as its FIR part (a 3-tap ``conv1d``) followed by its recursive part through ``torchlpc``
    (exact sample-by-sample recursion with a fast kernel and a custom backward), stage by stage as
    ``scipy.signal.lfilter`` would. Computed in float64 and returned in x's dtype: the 38 Hz high pass has poles
    within 1e-3 of z = 1 at high rates, where a float32 recursion drifts by up to 0.01 LU.
    """
    shape = x.shape
    T = shape[-1]
    y = x.reshape(-1, T).to(torch.float64)
    for b, a in k_weighting_coefficients(sample_rate):
        # FIR part. conv1d is a correlation: flip the taps; left padding makes it causal with zero history.
        taps = torch.tensor(b[::-1], dtype=y.dtype, device=y.device).view(1, 1, 3)
        y = F.conv1d(F.pad(y[:, None], (2, 0)), taps)[:, 0]
        # Recursive part: y[n] -= a1 y[n-1] + a2 y[n-2]; constant coefficients, so expand them (a view, no copy).
        coeffs = torch.tensor(a[1:], dtype=y.dtype, device=y.device).expand(y.shape[0], T, 2)
        y = torchlpc.sample_wise_lpc(y, coeffs)
    return y.to(x.dtype if x.is_floating_point() else torch.float32).reshape(shape)


def _channel_weights(channels: int) -> list[float]:
    """BS.1770 channel weights G_i: 1.0 for L, R, C; 1.41 for Ls/Rs; 0 for LFE.

    Surround weights only apply to the layouts that name surrounds unambiguously: 5 channels = L R C Ls Rs
    (pyloudnorm's order), 6 channels = L R C LFE Ls Rs (5.1, WAVE/SMPTE order; LFE excluded). Every other count
    (mono, stereo, 3, 4, 7, 8) weighs all channels 1.0.
    """
    if channels == 5:
        return [1.0, 1.0, 1.0, 1.41, 1.41]
    if channels == 6:
        return [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]
    return [1.0] * channels


def _block_bounds(n_samples: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Start/end sample of every 400 ms gating block, computed exactly as pyloudnorm does (its rounding included).

    Returns (lower (J,), upper (J,), block length in samples as a float — the mean-square divisor).
    """
    step = 1.0 - _OVERLAP
    duration = n_samples / sample_rate
    n_blocks = int(round((duration - _BLOCK_S) / (_BLOCK_S * step))) + 1  # round half to even, like np.round
    j = torch.arange(n_blocks, dtype=torch.float64)
    lower = torch.floor(_BLOCK_S * (j * step) * sample_rate).long()
    upper = torch.floor(_BLOCK_S * (j * step + 1) * sample_rate).long().clamp(max=n_samples)
    return lower, upper, _BLOCK_S * sample_rate


def integrated_loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """ITU-R BS.1770-4 gated integrated loudness of every item of ``x`` (B, C, T); returns (B,) in LUFS.

    K-weighting (`k_weight`), mean square over 400 ms blocks with 75 % overlap, channel weights (see
    `_channel_weights`: 1.41 for the surrounds of 5- and 6-channel audio only), absolute gate at -70 LUFS, relative
    gate at -10 LU below the loudness of the blocks above the absolute gate. Block boundaries and gate comparisons
    follow pyloudnorm exactly, so results agree with ``pyloudnorm.Meter(rate).integrated_loudness`` to well under
    0.01 LU. All items are measured at once (masks, no loop over items); differentiable w.r.t. ``x`` (the gates are
    piecewise constant).

    Returns -inf for items with no block above the absolute gate (silence). Raises `InvalidAudioError` when
    T < 0.4 s at ``sample_rate`` (shorter than one gating block, as pyloudnorm does), and for NaN/inf samples.
    Computed in float64; returned in x's dtype.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidAudioError(f"audio must be a float tensor of shape (batch, channels, samples), got {shape}")
    if sample_rate <= 0:
        raise ParameterError(f"sample_rate must be positive, got {sample_rate}")
    B, C, T = x.shape
    if T < _BLOCK_S * sample_rate:
        raise InvalidAudioError(
            f"audio is too short for loudness: {T} samples ({T / sample_rate * 1000:.1f} ms) at {sample_rate} Hz, "
            f"the minimum is one {_BLOCK_S * 1000:.0f} ms block"
        )
    check_finite(x)

    return gated_loudness(k_weight(x.to(torch.float64), sample_rate), sample_rate).to(x.dtype)


def gated_loudness(weighted: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The BS.1770-4 gating of `integrated_loudness` on an already K-weighted signal (B, C, T) -> (B,) LUFS, float64.

    Exposed so that a caller measuring many gain curves g on one signal (Fx normalization's compressor search) can
    K-weight once and measure ``gated_loudness(k_weight(x) * g)``.
    """
    B, C, T = weighted.shape
    y = weighted.to(torch.float64)
    # Block mean squares through a cumulative sum: O(T) for any (even fractional) hop, exact in float64.
    energy = torch.cumsum(y * y, dim=-1)  # energy[..., n] = sum of y^2 over samples [0, n]
    lower, upper, block_len = _block_bounds(T, sample_rate)
    lower, upper = lower.to(y.device), upper.to(y.device)
    before = energy[..., (lower - 1).clamp(min=0)] * (lower > 0)  # energy before each block's first sample
    z = (energy[..., upper - 1] - before) / block_len  # (B, C, J)
    weights = torch.tensor(_channel_weights(C), dtype=z.dtype, device=z.device)
    zw = torch.einsum("c,bcj->bj", weights, z)  # (B, J): weighted channel sum of every block

    # Block loudness; 0 energy -> -inf, which every gate rejects.
    block_lufs = _LUFS_OFFSET + 10.0 * torch.log10(zw)
    gated_abs = block_lufs >= _ABS_GATE_LUFS
    n_abs = gated_abs.sum(dim=1)
    mean_abs = (zw * gated_abs).sum(dim=1) / n_abs.clamp(min=1)
    rel_gate = _LUFS_OFFSET + 10.0 * torch.log10(mean_abs) + _REL_GATE_LU  # -inf when nothing passed
    gated = (block_lufs > rel_gate[:, None]) & (block_lufs > _ABS_GATE_LUFS)
    n = gated.sum(dim=1)
    mean = (zw * gated).sum(dim=1) / n.clamp(min=1)
    lufs = _LUFS_OFFSET + 10.0 * torch.log10(mean)
    return torch.where(n > 0, lufs, torch.full_like(lufs, -math.inf))


def peak_db(x: torch.Tensor) -> torch.Tensor:
    """Sample peak of every item of (B, C, T) audio in dBFS (20 log10 max|x|), shape (B,); -inf for silence."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise InvalidAudioError("audio must be a tensor of shape (batch, ...)")
    return 20.0 * torch.log10(x.abs().flatten(1).amax(dim=1))


def _silent_items(values: torch.Tensor) -> list[int]:
    return [int(i) for i in torch.nonzero(~torch.isfinite(values)).flatten()]


def normalize_loudness(x: torch.Tensor, sample_rate: int, target_lufs: float = -14.0) -> torch.Tensor:
    """Scale every item of (B, C, T) audio to ``target_lufs`` integrated loudness (LUFS), one gain per item.

    The gain is ``10^((target - L)/20)``; because blocks near the -70 LUFS absolute gate can cross it when scaled,
    the result may differ from the target by a few hundredths of an LU for mostly-quiet audio. Output may exceed
    [-1, 1] (no limiting). Raises `InvalidAudioError` for silent items (loudness -inf), clips shorter than 400 ms
    and NaN/inf samples.
    """
    lufs = integrated_loudness(x, sample_rate)
    silent = _silent_items(lufs)
    if silent:
        raise InvalidAudioError(f"cannot normalize the loudness of silent audio (batch items {silent})")
    gain = torch.pow(10.0, (target_lufs - lufs) / 20.0)
    return x * gain[:, None, None].to(x.dtype)


def normalize_peak(x: torch.Tensor, target_db: float = -1.0) -> torch.Tensor:
    """Scale every item of (B, C, T) audio so that its sample peak is ``target_db`` dBFS.

    Raises `InvalidAudioError` for silent items (peak 0) and NaN/inf samples.
    """
    check_finite(x)
    peak = peak_db(x)
    silent = _silent_items(peak)
    if silent:
        raise InvalidAudioError(f"cannot peak-normalize silent audio (batch items {silent})")
    gain = torch.pow(10.0, (target_db - peak) / 20.0)
    return x * gain.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Writing files
# ------------------------------------------------------------------------------------------------------------------


def save(
    path: str | os.PathLike,
    audio: torch.Tensor,
    sample_rate: int,
    subtype: str = "PCM_24",
) -> Path:
    """Write (C, T) or (1, C, T) audio to ``path`` atomically; return the path.

    The format comes from the extension: ``.wav`` or ``.flac``. ``subtype`` is PCM_16, PCM_24 or FLOAT (wav only).
    Integer subtypes clip samples to [-1, 1] (a warning is logged when any sample is clipped); FLOAT keeps them.
    Everything is checked before anything is created; then the parent directories are made, the audio is written to
    a temporary file in the target directory and moved into place with ``os.replace``, so a reader never sees a
    partial file and a failure leaves no file behind (the temporary file is removed).

    Raises:
        InvalidAudioError: NaN/inf samples, a shape other than (C, T) / (1, C, T), zero samples.
        AudioFileError: unsupported extension or subtype, or the file cannot be written (the error says why).
        ParameterError: a sample rate that is not a positive integer.
    """
    p = Path(path)
    # --- validate everything before touching the file system --------------------------------------------------
    if not isinstance(audio, torch.Tensor):
        raise InvalidAudioError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
    if audio.dim() == 3:
        if audio.shape[0] != 1:
            raise InvalidAudioError(f"save writes one item: expected (1, C, T), got {tuple(audio.shape)}")
        audio = audio[0]
    if audio.dim() != 2:
        raise InvalidAudioError(f"audio must have shape (C, T) or (1, C, T), got {tuple(audio.shape)}")
    C, T = audio.shape
    if C == 0 or T == 0:
        raise InvalidAudioError(f"refusing to save empty audio of shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise InvalidAudioError(f"audio must be floating point, got {audio.dtype}")
    check_finite(audio, what=f"audio to save to '{p}'")
    ext = p.suffix.lower()
    if ext not in _SAVE_FORMATS:
        raise AudioFileError(f"cannot save '{p}': unsupported extension '{p.suffix}' (use .wav or .flac)")
    fmt = _SAVE_FORMATS[ext]
    subtype = str(subtype).upper()
    if subtype not in SAVE_SUBTYPES:
        raise AudioFileError(f"unsupported subtype '{subtype}' (use one of {', '.join(SAVE_SUBTYPES)})")
    if fmt == "FLAC" and subtype == "FLOAT":
        raise AudioFileError("flac cannot store FLOAT samples: use PCM_16 or PCM_24, or save as .wav")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ParameterError(f"sample_rate must be a positive integer, got {sample_rate}")
    if p.exists() and p.is_dir():
        raise AudioFileError(f"cannot save to '{p}': it is a directory")

    data = audio.detach().to("cpu", torch.float32)
    if subtype != "FLOAT":
        n_clipped = int((data.abs() > 1.0).sum())
        if n_clipped:
            logger.warning(
                "clipping %d of %d samples to [-1, 1] while saving '%s' as %s (peak %.2f dBFS)",
                n_clipped, data.numel(), p, subtype, 20 * math.log10(float(data.abs().max())),
            )
            data = data.clamp(-1.0, 1.0)
    frames = np.ascontiguousarray(data.numpy().T)  # soundfile wants (T, C)

    # --- write to a temporary file beside the target, then rename ----------------------------------------------
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AudioFileError(f"cannot create directory '{p.parent}': {e.strerror or e}") from None
    try:
        with atomic_path(p, suffix=".tmp") as tmp:
            sf.write(tmp, frames, int(sample_rate), subtype=subtype, format=fmt)
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise AudioFileError(f"cannot write '{p}': {e}") from None
    return p

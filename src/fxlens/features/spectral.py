"""AutoFX-style hand-crafted spectral features, vectorized in torch over a batch.

After the feature set of the AutoFX classifier (Hooge, 2022 internship report, section 4.1.2-4.1.3 and Table B.1),
itself after Stein et al. (guitar effect recognition): frame-wise spectral descriptors of an STFT, their deltas,
statistical functionals over time, pitch-normalized copies and MFCCs -- 163 numbers per clip.

Conventions (all of them shared with librosa 0.11, which the tests use as the reference):

- Input is ``(B, C, T)``; channels are **mixed to mono by averaging** before anything else (the features describe
  one signal; a stereo effect's width is not seen here).
- STFT: ``torch.stft`` with a periodic Hann window of ``n_fft`` samples, hop ``hop``, ``center=True`` with
  **zero** padding (librosa's ``pad_mode="constant"``), no normalization. ``n_frames = 1 + T // hop``.
  ``S`` is the magnitude ``|X|``; frequencies ``f[k] = k * sr / n_fft``, ``k = 0 .. n_fft // 2``.
- Everything is computed in the input's dtype (float32 or float64) on the input's device; no Python loop runs over
  frames or batch items.

Frame features (`frame_features`), each ``(B, n_frames)``:

- ``centroid``  ``mu = sum f p`` with ``p = S / sum S`` (librosa.feature.spectral_centroid). Hz.
- ``spread``    ``sqrt(sum (f - mu)^2 p)`` (librosa.feature.spectral_bandwidth, p=2). Hz. The report's eq. 4.4
  writes the variance; we keep the standard deviation (same information, Hz, librosa-comparable).
- ``skewness``  ``sum (f - mu)^3 p / spread^3`` -- standardized (Peeters 2004). The report's eq. 4.3-4.6 carry a
  stray ``2/(N+1)`` factor and unstandardized moments (Hz^3, Hz^4); we use the standard dimensionless ones.
- ``kurtosis``  ``sum (f - mu)^4 p / spread^4`` (Pearson, not excess: 3 for a Gaussian-shaped spectrum).
- ``slope``     least-squares slope of ``p[k]`` against ``f[k]`` over the ``K = n_fft // 2 + 1`` bins (report eq. 4.7):
  ``(K sum f p - sum f sum p) / (K sum f^2 - (sum f)^2)``. Units 1/Hz.
- ``rolloff``   smallest ``f[k]`` with ``cumsum(S)[k] >= 0.95 * sum S`` (librosa.feature.spectral_rolloff, roll_percent
  0.95: cumulative *magnitude*, as librosa computes it). Hz.
- ``flux``      ``(sum_k |S_m[k] - S_{m-1}[k]|^q)^(1/q)`` with ``q = 2`` (report eq. 4.8 with the root outside the
  sum, i.e. the L_q norm of the frame-to-frame magnitude change); the first frame's flux is 0.
- ``flatness``  geometric over arithmetic mean of ``max(S^2, 1e-10)`` (librosa.feature.spectral_flatness, power 2,
  amin 1e-10). Per frame, white noise gives ``exp(-euler_gamma) ~ 0.56`` (the power of a Gaussian bin is exponential),
  not 1; a pure tone gives ~0.
- ``rms``       RMS of the un-windowed centred frame of ``n_fft`` samples (librosa.feature.rms with
  ``frame_length=n_fft``, ``center=True``, ``pad_mode="constant"``). Not part of the paper's 163.

Silent frames (all-zero spectrum) have every feature 0, except ``flatness`` = 1 (every bin sits on the ``amin``
floor: librosa's value). Spreads of 0 give skewness and kurtosis 0. Nothing returns NaN for finite input.

Pitch (`estimate_pitch`): one value per clip, from the biased autocorrelation of the whole mono clip (computed by
FFT), maximized over lags ``sr/fmax .. sr/fmin`` (defaults 50-2000 Hz) with parabolic interpolation. It is meant for
the report's monophonic single notes; on polyphonic or noisy material it is only a "dominant period". A silent clip
gets ``fmax``.

Functionals (`functionals`): population mean, std (ddof 0), skewness (``scipy.stats.skew``, biased), excess
kurtosis (``scipy.stats.kurtosis``, Fisher, biased), min, max over frames; a constant sequence has skewness and
kurtosis 0. Deltas are ``d[m] = f[m+1] - f[m]`` (``n_frames - 1`` values; a one-frame clip gets a single 0).

MFCC (`mfcc`): power mel spectrogram (``S^2`` through a triangular filterbank: HTK mel formula
``m = 2595 log10(1 + f/700) = 1127 ln(1 + f/700)`` by default as in the report's eq. 4.9, or Slaney's
linear-below-1-kHz/log-above with ``htk=False``; Slaney area normalization ``2 / (f_{i+2} - f_i)`` unless
``norm=None``), then ``10 log10(max(., 1e-10))`` clipped at ``top_db`` below each item's maximum, then an orthonormal
DCT-II. Identical to ``librosa.feature.mfcc(y, sr, n_mfcc, n_fft, hop_length, n_mels, htk=..., norm="ortho")``
per item (librosa's ``top_db`` uses the maximum of whatever array it is given; we use each batch item's own).

`autofx_features` assembles the 163-dimensional vector of the report's Table B.1 (`FEATURE_NAMES`):

1. 8 spectral features (centroid, spread, skewness, kurtosis, slope, rolloff, flux, flatness) x 6 functionals = 48
2. their deltas x 6 functionals, without ``delta_flux_min`` (dropped as in the report)              = 47
3. MFCC 1-10 (c0 .. c9 of a 128-band mel spectrogram), mean over frames then max over frames         = 20
4. the 8 spectral features divided by the clip's pitch (Hz), x 6 functionals                          = 48

Audio is mixed to mono and resampled to 22 050 Hz first (`fxlens.audio.resample`, soxr through numpy: the feature
vector is not differentiable with respect to audio at other rates). Because skewness and kurtosis are scale
invariant, the skewness/kurtosis functionals of a pitch-normalized feature equal those of the raw feature; they are
kept so that the layout matches the report's 163 (a model can ignore them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fxlens.errors import ParameterError

__all__ = [
    "AUTOFX_SAMPLE_RATE",
    "SPECTRAL_FEATURES",
    "FRAME_FEATURES",
    "FUNCTIONALS",
    "FEATURE_NAMES",
    "to_mono",
    "stft_magnitude",
    "stft_power",
    "frame_features",
    "deltas",
    "functionals",
    "functional_names",
    "estimate_pitch",
    "mel_filterbank",
    "mfcc",
    "autofx_features",
]

AUTOFX_SAMPLE_RATE = 22050
"""The rate (Hz) `autofx_features` works at, as in the report."""

SPECTRAL_FEATURES = ("centroid", "spread", "skewness", "kurtosis", "slope", "rolloff", "flux", "flatness")
"""The 8 frame features of the report, in `FEATURE_NAMES` order."""

FRAME_FEATURES = SPECTRAL_FEATURES + ("rms",)
"""The keys of `frame_features`' dict, in order."""

FUNCTIONALS = ("mean", "std", "skew", "kurtosis", "min", "max")
"""The statistics `functionals` takes of each sequence, in order."""

_AMIN = 1e-10
_EPS = {torch.float32: 1e-20, torch.float64: 1e-200}


def _eps(dtype: torch.dtype) -> float:
    return _EPS.get(dtype, 1e-20)


def _root0(x: torch.Tensor, n: float = 2.0) -> torch.Tensor:
    """``max(x, 0) ** (1 / n)`` (``sqrt`` for n = 2) whose gradient is 0, not inf, where x <= 0: the same values bit
    for bit, and a gradient through the features that digital silence (a zero variance, flux or RMS) does not turn
    into NaN (0 * inf)."""
    pos = x > 0
    safe = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, safe.sqrt() if n == 2.0 else safe.pow(1.0 / n), torch.zeros_like(x))


# ----------------------------------------------------------------------------------------------------------------
# Input handling and STFT
# ----------------------------------------------------------------------------------------------------------------


def to_mono(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, T)`` by averaging channels; float64 stays float64, any other dtype becomes float32."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ParameterError(f"expected audio of shape (batch, channels, samples), got {getattr(x, 'shape', type(x))}")
    if x.shape[1] == 0:
        raise ParameterError("audio has no channels")
    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    return x.mean(dim=1)


def _check_stft_args(n_fft: int, hop: int) -> None:
    if int(n_fft) < 2 or int(hop) < 1:
        raise ParameterError(f"need n_fft >= 2 and hop >= 1, got n_fft={n_fft}, hop={hop}")


def stft_power(mono: torch.Tensor, n_fft: int = 8192, hop: int = 512) -> torch.Tensor:
    """``|STFT|^2`` of ``(B, T)`` mono audio: ``(B, n_fft // 2 + 1, 1 + T // hop)``; periodic Hann, centred, zero pad.

    Computed as re^2 + im^2 (one fused multiply-add): on a CPU that step is about 4x faster than squaring complex
    ``abs`` (a hypot per bin), and its gradient is finite everywhere, zero included."""
    _check_stft_args(n_fft, hop)
    window = torch.hann_window(n_fft, periodic=True, dtype=mono.dtype, device=mono.device)
    X = torch.stft(mono, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True, pad_mode="constant",
                   normalized=False, onesided=True, return_complex=True)
    return torch.addcmul(X.real.square(), X.imag, X.imag)


def stft_magnitude(mono: torch.Tensor, n_fft: int = 8192, hop: int = 512) -> torch.Tensor:
    """``|STFT|`` of ``(B, T)`` mono audio: ``(B, n_fft // 2 + 1, 1 + T // hop)``; periodic Hann, centred, zero pad.

    The square root of `stft_power`, with a zero gradient where the power is zero (silent frames have such bins;
    the square root's gradient is infinite there, complex ``abs``'s NaN)."""
    power = stft_power(mono, n_fft, hop)
    positive = power > 0
    return torch.where(positive, torch.where(positive, power, torch.ones_like(power)).sqrt(), torch.zeros_like(power))


def _fft_freqs(sample_rate: float, n_fft: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.arange(n_fft // 2 + 1, dtype=dtype, device=device) * (float(sample_rate) / n_fft)


# ----------------------------------------------------------------------------------------------------------------
# Frame features
# ----------------------------------------------------------------------------------------------------------------


def _spectral_from_magnitude(S: torch.Tensor, sample_rate: float, n_fft: int, rolloff_percent: float = 0.95,
                             flux_q: float = 2.0) -> dict[str, torch.Tensor]:
    """The 8 spectral features from a magnitude spectrogram ``(B, K, M)``."""
    dtype, device = S.dtype, S.device
    eps = _eps(dtype)
    K = S.shape[-2]
    f = _fft_freqs(sample_rate, n_fft, dtype, device)  # (K,)
    fk = f[:, None]

    total = S.sum(dim=-2)  # (B, M)
    silent = total <= eps
    p = S / torch.where(silent, torch.ones_like(total), total).unsqueeze(-2)  # (B, K, M), 0 on silent frames

    centroid = (fk * p).sum(dim=-2)
    dev = fk - centroid.unsqueeze(-2)
    dev2 = dev * dev
    var = (dev2 * p).sum(dim=-2)
    m3 = (dev2 * dev * p).sum(dim=-2)
    m4 = (dev2 * dev2 * p).sum(dim=-2)
    spread = _root0(var)
    ok = var > eps
    safe_var = torch.where(ok, var, torch.ones_like(var))
    skewness = torch.where(ok, m3 / safe_var.pow(1.5), torch.zeros_like(var))
    kurtosis = torch.where(ok, m4 / (safe_var * safe_var), torch.zeros_like(var))

    # Least-squares slope of p against f; sum p is 1 (0 on silent frames).
    sum_f = f.sum()
    denom = K * (f * f).sum() - sum_f * sum_f
    slope = (K * centroid - sum_f * p.sum(dim=-2)) / denom

    # Roll-off: first bin whose cumulative magnitude reaches the threshold.
    cum = S.cumsum(dim=-2)
    thr = rolloff_percent * cum[..., -1:, :]
    idx = (cum < thr).sum(dim=-2).clamp_max(K - 1)
    rolloff = f[idx]

    # Flux: L_q norm of the magnitude change, 0 for the first frame.
    diff = (S[..., 1:] - S[..., :-1]).abs()
    if flux_q == 2.0:
        fl = _root0(diff.pow(2).sum(dim=-2))
    elif flux_q == 1.0:
        fl = diff.sum(dim=-2)
    else:
        fl = _root0(diff.pow(flux_q).sum(dim=-2), flux_q)
    flux = F.pad(fl, (1, 0))

    # Flatness of the power spectrum, librosa's amin floor.
    P = (S * S).clamp_min(_AMIN)
    flatness = torch.exp(P.log().mean(dim=-2)) / P.mean(dim=-2)
    flatness = torch.where(silent, torch.ones_like(flatness), flatness)  # exactly 1, not 1 +- rounding

    return {"centroid": centroid, "spread": spread, "skewness": skewness, "kurtosis": kurtosis, "slope": slope,
            "rolloff": rolloff, "flux": flux, "flatness": flatness}


def _frame_rms(mono: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """RMS of centred, zero-padded, un-windowed frames of ``n_fft`` samples: ``(B, 1 + T // hop)``."""
    pad = n_fft // 2
    sq = F.pad(mono * mono, (pad, pad)).unsqueeze(1)  # (B, 1, T + 2 pad)
    ms = F.avg_pool1d(sq, kernel_size=n_fft, stride=hop).squeeze(1)
    return _root0(ms)


def frame_features(x: torch.Tensor, sample_rate: float, n_fft: int = 8192, hop: int = 512,
                   rolloff_percent: float = 0.95, flux_q: float = 2.0) -> dict[str, torch.Tensor]:
    """Frame-wise features of ``x`` ``(B, C, T)`` (channels averaged to mono): ``{name: (B, 1 + T // hop)}``.

    Keys, in order: `FRAME_FEATURES` (centroid, spread, skewness, kurtosis, slope, rolloff, flux, flatness, rms);
    definitions and silent-frame values in the module docstring. No resampling: features are in Hz of ``sample_rate``.
    """
    mono = to_mono(x)
    S = stft_magnitude(mono, n_fft, hop)
    feats = _spectral_from_magnitude(S, sample_rate, n_fft, rolloff_percent, flux_q)
    rms = _frame_rms(mono, n_fft, hop)
    feats["rms"] = rms[..., : S.shape[-1]]
    return feats


# ----------------------------------------------------------------------------------------------------------------
# Deltas and functionals
# ----------------------------------------------------------------------------------------------------------------


def deltas(seq: torch.Tensor) -> torch.Tensor:
    """``d[m] = seq[m+1] - seq[m]`` along the last axis; a length-1 sequence gives a single 0."""
    if seq.shape[-1] < 2:
        return torch.zeros_like(seq[..., :1])
    return seq[..., 1:] - seq[..., :-1]


def _stats(seq: torch.Tensor) -> torch.Tensor:
    """``(..., M)`` -> ``(..., 6)``: mean, std, skew, excess kurtosis, min, max (population, as scipy's defaults).

    The moments are taken in float64 and returned in the input's dtype: a feature of tiny values (a spectral slope
    is ~1e-8) has m2 ~ 1e-18, whose square's square underflows float32 in the kurtosis's gradient (NaN)."""
    dtype = seq.dtype
    eps = _eps(dtype)
    # A relative threshold: float round-off leaves a tiny m2 on constant sequences of large values.
    rel = 1e-6 if dtype == torch.float32 else 1e-12
    floor = (seq.abs().amax(dim=-1) * rel).square().clamp_min(eps).double()
    x = seq.double()
    mean = x.mean(dim=-1, keepdim=True)
    d = x - mean
    d2 = d * d
    m2 = d2.mean(dim=-1)
    m3 = (d2 * d).mean(dim=-1)
    m4 = (d2 * d2).mean(dim=-1)
    ok = m2 > floor
    safe = torch.where(ok, m2, torch.ones_like(m2))
    skew = torch.where(ok, m3 / safe.pow(1.5), torch.zeros_like(m2))
    kurt = torch.where(ok, m4 / (safe * safe) - 3.0, torch.zeros_like(m2))
    return torch.stack([mean.squeeze(-1), _root0(m2), skew, kurt, x.amin(dim=-1), x.amax(dim=-1)],
                       dim=-1).to(dtype)


def functional_names(keys) -> list[str]:
    """Names of `functionals`' columns for frame-feature ``keys``: ``{key}_{stat}`` then ``delta_{key}_{stat}``."""
    keys = list(keys)
    return [f"{k}_{s}" for k in keys for s in FUNCTIONALS] + [f"delta_{k}_{s}" for k in keys for s in FUNCTIONALS]


def functionals(frames: dict[str, torch.Tensor]) -> torch.Tensor:
    """Statistics over time of each frame feature and of its delta: ``(B, 12 * len(frames))``.

    Column order is `functional_names(frames.keys())`: for each feature (dict order) its `FUNCTIONALS` (mean, std,
    skew, excess kurtosis, min, max), then the same for each feature's delta.
    """
    if not frames:
        raise ParameterError("functionals needs at least one frame feature")
    seqs = torch.stack(list(frames.values()), dim=1)  # (B, F, M)
    raw = _stats(seqs)  # (B, F, 6)
    dl = _stats(deltas(seqs))
    return torch.cat([raw.flatten(1), dl.flatten(1)], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Pitch
# ----------------------------------------------------------------------------------------------------------------


def _estimate_pitch_mono(mono: torch.Tensor, sample_rate: float, fmin: float, fmax: float) -> torch.Tensor:
    B, T = mono.shape
    sr = float(sample_rate)
    lo = max(1, int(math.ceil(sr / fmax)))
    hi = min(int(math.floor(sr / fmin)), T - 2)
    if hi <= lo:
        return torch.full((B,), float(fmax), dtype=mono.dtype, device=mono.device)
    n = 1 << (2 * T - 1).bit_length()
    spec = torch.fft.rfft(mono, n=n)
    r = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=n)[:, : hi + 2]  # (B, hi + 2)
    i = r[:, lo: hi + 1].argmax(dim=-1) + lo  # (B,)
    rm, r0, rp = (r.gather(1, (i + o)[:, None]).squeeze(1) for o in (-1, 0, 1))
    den = rm - 2 * r0 + rp
    ok = den < 0  # a proper maximum
    delta = torch.where(ok, 0.5 * (rm - rp) / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    delta = delta.clamp(-0.5, 0.5)
    pitch = sr / (i.to(mono.dtype) + delta)
    silent = r[:, 0] <= _eps(mono.dtype)
    return torch.where(silent, torch.full_like(pitch, float(fmax)), pitch).clamp(fmin, fmax)


def estimate_pitch(x: torch.Tensor, sample_rate: float, fmin: float = 50.0, fmax: float = 2000.0) -> torch.Tensor:
    """One fundamental-frequency estimate (Hz) per clip of ``x`` ``(B, C, T)``: ``(B,)``.

    Autocorrelation of the whole mono clip (FFT, biased), argmax over lags ``sr/fmax .. sr/fmin``, parabolic
    interpolation. Silent clips get ``fmax``. A rough estimate for monophonic notes (octave errors are possible).
    """
    if not 0 < fmin < fmax:
        raise ParameterError(f"need 0 < fmin < fmax, got {fmin}, {fmax}")
    return _estimate_pitch_mono(to_mono(x), sample_rate, fmin, fmax)


# ----------------------------------------------------------------------------------------------------------------
# MFCC
# ----------------------------------------------------------------------------------------------------------------


def _hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_frequencies(n: int, fmin: float, fmax: float, htk: bool = False) -> np.ndarray:
    """`n` frequencies (Hz) evenly spaced on the mel scale from `fmin` to `fmax` (``librosa.mel_frequencies``): with
    ``n = n_mels + 2``, the edges and centres of `mel_filterbank`'s triangles (band k: centre at index k + 1)."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin, htk), _hz_to_mel(fmax, htk), int(n)), htk)


@functools.lru_cache(maxsize=32)
def _mel_filterbank_np(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool,
                       norm: str | None) -> np.ndarray:
    fftfreqs = np.linspace(0, float(sample_rate) / 2, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax, htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = True, norm: str | None = "slaney", dtype: torch.dtype = torch.float32,
                   device=None) -> torch.Tensor:
    """Triangular mel filterbank ``(n_mels, n_fft // 2 + 1)``, same as ``librosa.filters.mel`` with these arguments.

    ``htk=True``: ``mel = 2595 log10(1 + f / 700)``; ``htk=False``: Slaney (linear to 1 kHz, then logarithmic).
    ``norm="slaney"`` scales each triangle to unit area (``2 / bandwidth``); ``None`` leaves peaks at 1.
    """
    fmax = float(sample_rate) / 2 if fmax is None else float(fmax)
    if norm not in ("slaney", None):
        raise ParameterError(f"norm must be 'slaney' or None, got {norm!r}")
    if not 0 <= fmin < fmax or n_mels < 1:
        raise ParameterError(f"bad mel filterbank: n_mels={n_mels}, fmin={fmin}, fmax={fmax}")
    w = _mel_filterbank_np(float(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax, bool(htk), norm)
    return torch.from_numpy(np.array(w)).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _dct_ortho_np(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(n_mfcc, n_mels)`` (scipy.fft.dct(type=2, norm="ortho") rows)."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    D = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    D[0] /= np.sqrt(2.0)
    D.setflags(write=False)
    return D


def _mfcc_from_magnitude(S: torch.Tensor, sample_rate: float, n_fft: int, n_mfcc: int, n_mels: int, fmin: float,
                         fmax: float | None, htk: bool, norm: str | None, top_db: float | None) -> torch.Tensor:
    if not 1 <= n_mfcc <= n_mels:
        raise ParameterError(f"need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm, dtype=S.dtype, device=S.device)
    mel = torch.matmul(fb, S * S)  # (B, n_mels, M)
    db = 10.0 * torch.log10(mel.clamp_min(_AMIN))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - float(top_db))
    D = torch.from_numpy(np.array(_dct_ortho_np(int(n_mfcc), int(n_mels)))).to(device=S.device, dtype=S.dtype)
    return torch.matmul(D, db)


def mfcc(x: torch.Tensor, sample_rate: float, n_mfcc: int = 10, n_fft: int = 8192, hop: int = 512,
         n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None, htk: bool = True,
         norm: str | None = "slaney", top_db: float | None = 80.0) -> torch.Tensor:
    """MFCCs of ``x`` ``(B, C, T)`` (channels averaged to mono): ``(B, n_mfcc, 1 + T // hop)``.

    Power mel spectrogram (`mel_filterbank`) -> dB (amin 1e-10, ``top_db`` below each item's peak) -> DCT-II ortho.
    Equals ``librosa.feature.mfcc(y=item, sr, n_mfcc, n_fft=n_fft, hop_length=hop, n_mels, fmin, fmax, htk, norm)``.
    """
    S = stft_magnitude(to_mono(x), n_fft, hop)
    return _mfcc_from_magnitude(S, sample_rate, n_fft, n_mfcc, n_mels, fmin, fmax, htk, norm, top_db)


# ----------------------------------------------------------------------------------------------------------------
# The AutoFX vector
# ----------------------------------------------------------------------------------------------------------------

_N_MFCC = 10
_DROP = "delta_flux_min"


def _build_names() -> tuple[str, ...]:
    names = [n for n in functional_names(SPECTRAL_FEATURES) if n != _DROP]
    names += [f"mfcc{i}_mean" for i in range(_N_MFCC)] + [f"mfcc{i}_max" for i in range(_N_MFCC)]
    names += [f"{k}_per_pitch_{s}" for k in SPECTRAL_FEATURES for s in FUNCTIONALS]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _build_names()
"""The 163 names of `autofx_features`' columns, in order (see the module docstring)."""

_KEEP = [i for i, n in enumerate(functional_names(SPECTRAL_FEATURES)) if n != _DROP]


def autofx_features(x: torch.Tensor, sample_rate: float, n_fft: int = 8192, hop: int = 512,
                    resample: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """The report's 163 classification features of ``x`` ``(B, C, T)``: ``(B, 163)``, columns `FEATURE_NAMES`.

    Channels are averaged to mono, the result resampled to 22 050 Hz with `fxlens.audio.resample` when
    ``sample_rate`` differs (numpy/soxr, on CPU), then: functionals of the 8 spectral features and of their deltas
    (minus ``delta_flux_min``), mean and max over frames of MFCC 0-9 (HTK mel, 128 bands), and functionals of the 8
    spectral features divided by `estimate_pitch`. Output dtype: float64 for float64 input, else float32.
    ``resample(x, orig_sr, target_sr)`` replaces `fxlens.audio.resample` (`fxlens.features.export` passes a torch
    decimator: soxr cannot be exported).
    """
    mono = to_mono(x)
    sr = int(round(float(sample_rate)))
    if sr <= 0:
        raise ParameterError(f"sample_rate must be positive, got {sample_rate}")
    if sr != AUTOFX_SAMPLE_RATE:
        if resample is None:
            from fxlens.audio import resample
        mono = resample(mono, sr, AUTOFX_SAMPLE_RATE)
    sr = AUTOFX_SAMPLE_RATE
    if mono.shape[-1] == 0:
        raise ParameterError("audio has no samples")

    S = stft_magnitude(mono, n_fft, hop)
    spec = _spectral_from_magnitude(S, sr, n_fft)
    seqs = torch.stack([spec[k] for k in SPECTRAL_FEATURES], dim=1)  # (B, 8, M)
    raw = _stats(seqs).flatten(1)
    dl = _stats(deltas(seqs)).flatten(1)
    fun = torch.cat([raw, dl], dim=1)[:, _KEEP]  # (B, 95)

    cc = _mfcc_from_magnitude(S, sr, n_fft, _N_MFCC, 128, 0.0, None, True, "slaney", 80.0)  # (B, 10, M)
    mf = torch.cat([cc.mean(dim=-1), cc.amax(dim=-1)], dim=1)  # (B, 20)

    pitch = _estimate_pitch_mono(mono, sr, 50.0, 2000.0)  # (B,)
    per_pitch = _stats(seqs / pitch[:, None, None]).flatten(1)  # (B, 48)

    return torch.cat([fun, mf, per_pitch], dim=1)

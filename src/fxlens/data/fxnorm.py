"""Fx normalization of wet stems (FxNorm, Martinez-Ramirez et al. ISMIR 2022; used by MixFXcloner / FXencoder).

Wet stems (a real multitrack, MUSDB, MoisesDB) carry whatever EQ, compression, panning and level their engineer
chose. Fx normalization removes most of that, so that the effects a model is asked to hear are the ones fxlens put
on: each stem is pushed toward the *average* sound of its instrument over a dataset.

Two steps, as ``fxlens data fxnorm-stats`` and ``fxlens data fxnorm`` run them:

1. `compute_stats(dataset)` -> `FxNormStats`: for every instrument, averaged over its stems,
   - ``band_db``: the mean power spectrum on 1/6-octave bands (20 Hz - 18 kHz, overlapping triangles, so each band
     is about 1/3 octave wide) of the stem normalized to ``reference_lufs`` (-30 LUFS, as FxNorm);
   - ``onset_plr_db``: the dynamics statistic, an *onset peak-to-loudness ratio*: the mean of the loudest quarter
     of the stem's onset peaks (local maxima of a 10 ms peak envelope within +-50 ms, FxNorm's "mean peak after
     onsets, above the 75th percentile"), in dBFS, minus its integrated loudness in LUFS. Compression lowers it;
     gain does not change it;
   - ``side_mid_db``: side/mid energy ratio 10 log10(E_S / E_M) with M = (L+R)/2, S = (L-R)/2 (floored at
     -60 dB: mono); ``balance_db``: left/right energy ratio 10 log10(E_L / E_R);
   - ``loudness_lufs``: mean integrated loudness (BS.1770) of the original stems; ``crest_db`` (peak / RMS) too.
   Saved as JSON with `FxNormStats.save` / `FxNormStats.load`.
2. `normalize_stem(audio, sample_rate, instrument, stats)`:
   loudness to a working level -> EQ to the instrument's mean spectrum -> loudness again -> dynamics -> EQ again
   -> stereo -> loudness to the instrument's mean loudness. Reverb is left alone, as in Fx-Encoder++ (FxNorm
   adds a reverb send to vocals and "other"; removing reverb is not a normalization a filter can do).

   - **EQ**: the per-band ratio target/stem (dB), minus its mean over the bands (level is handled by loudness
     normalization), smoothed over three neighbouring bands ([1, 2, 1] / 4, about half an octave) and clamped to
     +-12 dB (``max_eq_db``) so that a stem missing a whole region (a bass has nothing at 10 kHz) is not boosted
     into noise. The ratio curve is interpolated in log frequency onto a uniform grid and turned into a
     linear-phase (zero-phase once its delay is removed) FIR with `design_fir`, the frequency-sampling design of
     ``scipy.signal.firwin2`` (Hamming window) done in torch: 4097 taps at any rate by default, i.e. a ~43 Hz
     resolution at 44.1 kHz (FxNorm uses 1001 taps). Applied by FFT convolution (`apply_fir`).
   - **Dynamics**: when the stem's onset peak-to-loudness ratio exceeds the target by more than 0.25 dB,
     fxlens's `compressor` (ratio 4, attack 0.2 ms, release 100 ms, 6 dB knee) runs with the threshold that
     brings the PLR to the target; when it falls short of the target, an upward expander does the opposite
     (the same gain computer with ratio 1/2: +1 dB per dB above threshold, fast rise, slow fall), as FxNorm does
     by default. The threshold is searched as FxNorm searches it, by walking a grid down from 0 dBFS (3 dB
     steps, to -60 dBFS, stem at -20 LUFS), then refined by bisection inside the step that crosses the target;
     if the first ratio cannot get there, ratio 20 (expansion 1/4) is tried. The walk matters because the
     statistic is not monotonic in the threshold (see `_dynamics_to`). The attack is fast because the statistic
     is about peaks: with a 5 ms attack the onsets slip through and the PLR goes *up* as the threshold goes
     down. That fast gain also tilts the spectrum of a heavily compressed stem (up to +-5 dB per 1/3 octave in
     the tests), so the EQ match runs a second time after this step (``eq_after_dynamics``; FxNorm matches once).
   - **Stereo**: L/R balance toward the target by opposite gains on the channels, then the side channel scaled
     so that the side/mid ratio meets the target; both corrections clamped to +-12 dB (``max_stereo_db``): a
     mono stem stays mono, it cannot be widened.

Everything in `normalize_stem` is torch, batched over (B, C, T) (each item its own filter and threshold) and runs
on the audio's device. Statistics are computed on CPU by default (I/O bound).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fxlens import audio as fxaudio
from fxlens.atomic import write_text_atomic
from fxlens.data.stems import StemDataset
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.fx.dynamics import compressor_gain_db

__all__ = [
    "REFERENCE_LUFS",
    "BAND_FREQS_HZ",
    "InstrumentStats",
    "FxNormStats",
    "FxNormSettings",
    "band_spectrum_db",
    "onset_peak_db",
    "onset_plr_db",
    "side_mid_db",
    "balance_db",
    "crest_db",
    "stem_features",
    "compute_stats",
    "design_fir",
    "apply_fir",
    "eq_match_curve_db",
    "normalize_stem",
    "normalize_dataset",
]

logger = logging.getLogger(__name__)

STATS_FORMAT = "fxlens.fxnorm-stats"
STATS_VERSION = 1

REFERENCE_LUFS = -30.0
"""Loudness (LUFS) at which spectra are measured (FxNorm's -30 LUFS)."""

BANDS_PER_OCTAVE = 6
BAND_FREQS_HZ: tuple[float, ...] = tuple(20.0 * 2.0 ** (k / BANDS_PER_OCTAVE) for k in range(60))
"""Centres (Hz) of the spectrum bands: 1/6 octave apart from 20 Hz to 18.2 kHz (60 bands)."""

SPECTRUM_N_FFT_S = 8192 / 44100  # STFT frame length in seconds (8192 samples at 44.1 kHz: 5.4 Hz bins)
SIDE_FLOOR_DB = -60.0  # side/mid ratios below this are "mono" and read as this value
_EPS = 1e-12


# ------------------------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------------------------


def _check(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidAudioError(f"audio must be a float tensor of shape (batch, channels, samples), got {shape}")
    fxaudio.check_finite(x)
    return x


def _band_weights(freqs: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(K, n_bins) triangle weights in log2 frequency, each row summing to 1.

    Triangles reach the neighbouring centres (+-1/6 octave). Where the bin grid is too coarse for a band (no bin
    inside its triangle) the band takes its nearest bin.
    """
    logf = torch.log2(freqs.clamp_min(1e-3))
    d = (logf[None, :] - torch.log2(centres)[:, None]) * BANDS_PER_OCTAVE
    w = (1.0 - d.abs()).clamp_min(0.0)
    w[:, 0] = 0.0  # never the DC bin
    empty = w.sum(dim=1) <= 0
    if bool(empty.any()):
        nearest = (freqs[None, :] - centres[:, None]).abs().argmin(dim=1)
        w[empty] = F.one_hot(nearest[empty], freqs.numel()).to(w.dtype)
    return w / w.sum(dim=1, keepdim=True)


def band_spectrum_db(x: torch.Tensor, sample_rate: int, centres: Sequence[float] = BAND_FREQS_HZ) -> torch.Tensor:
    """Mean power spectrum of (B, C, T) audio on log-spaced bands, in dB: (B, K).

    Hann STFT of ~186 ms (8192 samples at 44.1 kHz), hop 1/4; power averaged over channels and over the active
    frames (frame energy above 1e-5 of the mean frame energy, so silence does not dilute it), then weighted into
    the bands (see `_band_weights`). Bands above 0.45 * sample_rate come back as NaN. Absolute level: the mean of
    |X|^2 / sum(window^2), i.e. a white noise of variance s2 reads 10 log10(s2) dB in every band.
    """
    return _band_spectrum_db(_check(x), sample_rate, centres)


def _band_spectrum_db(x: torch.Tensor, sample_rate: int, centres: Sequence[float] = BAND_FREQS_HZ) -> torch.Tensor:
    """`band_spectrum_db` without the input check (callers pass checked audio)."""
    B, C, T = x.shape
    n_fft = 1 << max(int(round(math.log2(SPECTRUM_N_FFT_S * sample_rate))), 6)
    while n_fft > T and n_fft > 64:
        n_fft //= 2
    hop = n_fft // 4
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # float32 is plenty for a dB spectrum
    window = torch.hann_window(n_fft, dtype=work, device=x.device)
    spec = torch.stft(x.reshape(B * C, T).to(work), n_fft, hop, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.abs().square().reshape(B, C, spec.shape[-2], spec.shape[-1]).mean(dim=1)  # (B, bins, frames)
    power = power / window.square().sum()
    frame_e = power.sum(dim=1)  # (B, frames)
    active = (frame_e > 1e-5 * frame_e.mean(dim=1, keepdim=True)) & (frame_e > 0)
    n_active = active.sum(dim=1).clamp_min(1)
    mean_power = ((power * active[:, None, :]).sum(dim=2) / n_active[:, None]).to(torch.float64)  # (B, bins)
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(torch.float64).to(x.device)
    c = torch.as_tensor(list(centres), dtype=torch.float64, device=x.device)
    w = _band_weights(freqs, c)
    bands = mean_power @ w.T  # (B, K)
    out = 10.0 * torch.log10(bands + _EPS)
    out[:, c > 0.45 * sample_rate] = float("nan")
    return out.to(x.dtype)


def onset_peak_db(
    x: torch.Tensor, sample_rate: int, block_s: float = 0.010, window_s: float = 0.100, percentile: float = 75.0
) -> torch.Tensor:
    """Mean level (dBFS) of the loudest onset peaks of (B, C, T) audio: (B,).

    A 10 ms block peak envelope (max |x| over the block and the channels); an *onset peak* is a block that is the
    maximum of the +-50 ms around it and within 40 dB of the stem's highest peak; the result is the mean, in dB,
    of the onset peaks at or above their `percentile` (FxNorm keeps those above the 75th percentile).
    """
    return _onset_peak_db(_check(x), sample_rate, block_s, window_s, percentile)


def _onset_peak_db(
    x: torch.Tensor, sample_rate: int, block_s: float = 0.010, window_s: float = 0.100, percentile: float = 75.0
) -> torch.Tensor:
    """`onset_peak_db` without the input check (callers pass checked audio)."""
    B, C, T = x.shape
    blk = max(int(round(block_s * sample_rate)), 1)
    nb = T // blk
    if nb < 1:
        raise InvalidAudioError(f"audio too short for the onset statistic ({T} samples)")
    env = x[..., : nb * blk].abs().amax(dim=1).reshape(B, nb, blk).amax(dim=-1).to(torch.float64)  # (B, nb)
    k = max(int(round(window_s / block_s)), 1) | 1
    local = F.max_pool1d(env[:, None], k, stride=1, padding=k // 2)[:, 0]
    env_db = 20.0 * torch.log10(env.clamp_min(1e-10))
    out = torch.empty(B, dtype=torch.float64, device=x.device)
    for b in range(B):  # a handful of items; each keeps a different number of peaks
        is_peak = (env[b] >= local[b]) & (env[b] > 0)
        peaks = env_db[b][is_peak]
        if peaks.numel() == 0:
            out[b] = -math.inf
            continue
        peaks = peaks[peaks >= peaks.max() - 40.0]
        q = torch.quantile(peaks, percentile / 100.0)
        out[b] = peaks[peaks >= q].mean()
    return out.to(x.dtype)


def onset_plr_db(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Onset peak-to-loudness ratio (dB): `onset_peak_db` minus integrated loudness (LUFS). (B,); gain-invariant."""
    return onset_peak_db(x, sample_rate) - fxaudio.integrated_loudness(x, sample_rate)


def side_mid_db(x: torch.Tensor) -> torch.Tensor:
    """10 log10(E_side / E_mid) of stereo (B, 2, T), M = (L+R)/2, S = (L-R)/2; floored at -60 dB (mono). (B,)."""
    return _side_mid_db(_check(x))


def _side_mid_db(x: torch.Tensor) -> torch.Tensor:
    """`side_mid_db` without the input check (callers pass checked audio)."""
    if x.shape[1] != 2:
        raise InvalidAudioError(f"side/mid needs stereo audio, got {x.shape[1]} channels")
    xd = x.to(torch.float64)
    m = 0.5 * (xd[:, 0] + xd[:, 1])
    s = 0.5 * (xd[:, 0] - xd[:, 1])
    r = 10.0 * torch.log10((s.square().sum(-1) + _EPS) / (m.square().sum(-1) + _EPS))
    return r.clamp_min(SIDE_FLOOR_DB).to(x.dtype)


def balance_db(x: torch.Tensor) -> torch.Tensor:
    """10 log10(E_left / E_right) of stereo (B, 2, T): > 0 leans left. (B,), clamped to +-60 dB."""
    return _balance_db(_check(x))


def _balance_db(x: torch.Tensor) -> torch.Tensor:
    """`balance_db` without the input check (callers pass checked audio)."""
    if x.shape[1] != 2:
        raise InvalidAudioError(f"balance needs stereo audio, got {x.shape[1]} channels")
    e = x.to(torch.float64).square().sum(-1)
    return (10.0 * torch.log10((e[:, 0] + _EPS) / (e[:, 1] + _EPS))).clamp(-60.0, 60.0).to(x.dtype)


def crest_db(x: torch.Tensor) -> torch.Tensor:
    """Peak-to-RMS ratio (dB) over all samples and channels of (B, C, T): (B,)."""
    x = _check(x).to(torch.float64)
    peak = x.abs().flatten(1).amax(dim=1)
    rms = x.square().flatten(1).mean(dim=1).sqrt()
    return (20.0 * torch.log10((peak + _EPS) / (rms + _EPS))).to(torch.float32)


def stem_features(x: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """Every statistic FxNorm keeps, for each item of (B, C, T) audio (made stereo): a dict of (B,) tensors
    (``band_db``: (B, K)).

    Raises `InvalidAudioError` for silent items and clips shorter than 0.4 s (loudness is undefined).
    """
    x = fxaudio.to_stereo(_check(x))
    loud = fxaudio.integrated_loudness(x, sample_rate)
    if not bool(torch.isfinite(loud).all()):
        raise InvalidAudioError("cannot compute Fx-normalization statistics of silent audio")
    at_ref = x * torch.pow(10.0, (REFERENCE_LUFS - loud) / 20.0)[:, None, None]
    xd = x.to(torch.float64)
    peak = xd.abs().flatten(1).amax(dim=1)
    rms = xd.square().flatten(1).mean(dim=1).sqrt()
    return {
        "band_db": _band_spectrum_db(at_ref, sample_rate),
        "onset_plr_db": _onset_peak_db(x, sample_rate) - loud,
        "crest_db": 20.0 * torch.log10((peak + _EPS) / (rms + _EPS)),
        "side_mid_db": _side_mid_db(x),
        "balance_db": _balance_db(x),
        "loudness_lufs": loud,
    }


# ------------------------------------------------------------------------------------------------------------------
# Statistics: per instrument, saved as JSON
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class InstrumentStats:
    """Mean (and spread) of one instrument's stem features over a dataset; units as in `stem_features`."""

    band_db: list[float]
    onset_plr_db: float
    crest_db: float
    side_mid_db: float
    balance_db: float
    loudness_lufs: float
    onset_plr_std: float = 0.0
    side_mid_std: float = 0.0
    loudness_std: float = 0.0
    n_stems: int = 0


@dataclass
class FxNormStats:
    """Per-instrument Fx-normalization targets (`compute_stats`), with the settings they were measured with."""

    instruments: dict[str, InstrumentStats]
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE
    reference_lufs: float = REFERENCE_LUFS
    band_freqs_hz: list[float] = field(default_factory=lambda: list(BAND_FREQS_HZ))
    source: str = ""

    def __getitem__(self, instrument: str) -> InstrumentStats:
        try:
            return self.instruments[instrument]
        except KeyError:
            have = ", ".join(sorted(self.instruments)) or "none"
            raise FxlensError(f"no Fx-normalization statistics for instrument '{instrument}' (have: {have})") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATS_FORMAT,
            "version": STATS_VERSION,
            "sample_rate": self.sample_rate,
            "reference_lufs": self.reference_lufs,
            "band_freqs_hz": [round(f, 4) for f in self.band_freqs_hz],
            "source": self.source,
            "instruments": {
                name: {**asdict(s), "band_db": [round(v, 3) for v in s.band_db]}
                for name, s in sorted(self.instruments.items())
            },
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically (a temporary file renamed into place)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FxNormStats":
        """Read a file written by `save`; raises `FxlensError` for a missing, corrupt or foreign file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FxlensError(f"Fx-normalization statistics not found: '{p}'") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FxlensError(f"cannot read Fx-normalization statistics '{p}': {e}") from None
        if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
            raise FxlensError(f"'{p}' is not an fxlens Fx-normalization statistics file")
        if data.get("version") != STATS_VERSION:
            raise FxlensError(f"'{p}': unsupported statistics version {data.get('version')} (expected {STATS_VERSION})")
        try:
            names = {f.name for f in fields(InstrumentStats)}
            insts = {k: InstrumentStats(**{n: v for n, v in d.items() if n in names})
                     for k, d in data["instruments"].items()}
            freqs = [float(f) for f in data["band_freqs_hz"]]
            for k, s in insts.items():
                if len(s.band_db) != len(freqs):
                    raise ValueError(f"instrument '{k}' has {len(s.band_db)} bands, expected {len(freqs)}")
            return cls(instruments=insts, sample_rate=int(data["sample_rate"]),
                       reference_lufs=float(data["reference_lufs"]), band_freqs_hz=freqs,
                       source=str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise FxlensError(f"'{p}': malformed Fx-normalization statistics ({e})") from None


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if t.numel() > 1 else 0.0


def compute_stats(
    dataset: StemDataset | Iterable[tuple[str, torch.Tensor]],
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    instruments: Sequence[str] | None = None,
    max_songs: int | None = None,
    segment_seconds: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FxNormStats:
    """Per-instrument Fx-normalization statistics of a stem dataset (or of ``(instrument, audio (1|B, 2, T))`` pairs).

    Args:
        dataset: a `StemDataset` (every stem of every song is read, resampled to `sample_rate`), or an iterable of
            (instrument, audio) pairs already in memory.
        instruments: only these instruments (default: all present).
        max_songs: only the first `max_songs` songs (quick statistics).
        segment_seconds: read one non-silent random segment of this length per stem (seeded by `seed`) instead of
            the whole stem; stems with no such segment are read whole.
        progress: called as ``progress(done, total)`` after each song.

    Silent stems and stems shorter than 0.4 s are skipped (logged). Spectra are averaged in dB, scalars arithmetically.
    Raises `FxlensError` when no stem could be measured.
    """
    feats: dict[str, list[dict[str, torch.Tensor]]] = {}
    wanted = set(instruments) if instruments is not None else None
    skipped = 0

    def add(name: str, x: torch.Tensor) -> None:
        nonlocal skipped
        try:
            f = stem_features(x, sample_rate)
        except InvalidAudioError as e:
            skipped += 1
            logger.info("fxnorm stats: skipping a '%s' stem: %s", name, e)
            return
        for b in range(x.shape[0]):
            feats.setdefault(name, []).append({k: v[b] for k, v in f.items()})

    source = ""
    if isinstance(dataset, StemDataset):
        source = f"{dataset.layout}:{dataset.root}" + (f" split={dataset.split}" if dataset.split else "")
        songs = dataset.songs()[: max_songs] if max_songs else dataset.songs()
        rng = torch.Generator().manual_seed(seed)
        for i, ref in enumerate(songs):
            for name in ref.instruments:
                if wanted is not None and name not in wanted:
                    continue
                x = None
                if segment_seconds is not None:
                    try:
                        x = dataset.sample_segment(ref, name, segment_seconds, rng, sample_rate).audio
                    except InvalidAudioError:
                        x = None
                if x is None:
                    x = dataset.load_stem(ref, name, sample_rate)
                add(name, x)
            if progress is not None:
                progress(i + 1, len(songs))
    else:
        for name, x in dataset:
            if wanted is None or name in wanted:
                add(name, x if x.dim() == 3 else x[None])
    if not feats:
        raise FxlensError(f"no stem could be measured for Fx-normalization statistics ({skipped} skipped)")
    out = {}
    for name, items in sorted(feats.items()):
        bands = torch.stack([it["band_db"].to(torch.float64) for it in items])  # (N, K)
        band_mean = torch.nanmean(bands, dim=0)
        scal = {k: [float(it[k]) for it in items] for k in items[0] if k != "band_db"}
        plr, plr_std = _mean_std(scal["onset_plr_db"])
        sm, sm_std = _mean_std(scal["side_mid_db"])
        loud, loud_std = _mean_std(scal["loudness_lufs"])
        out[name] = InstrumentStats(
            band_db=[float(v) if math.isfinite(v) else -200.0 for v in band_mean],
            onset_plr_db=plr, crest_db=_mean_std(scal["crest_db"])[0], side_mid_db=sm,
            balance_db=_mean_std(scal["balance_db"])[0], loudness_lufs=loud,
            onset_plr_std=plr_std, side_mid_std=sm_std, loudness_std=loud_std, n_stems=len(items),
        )
    if skipped:
        logger.warning("fxnorm stats: %d silent or too short stems skipped", skipped)
    return FxNormStats(instruments=out, sample_rate=int(sample_rate), source=source)


# ------------------------------------------------------------------------------------------------------------------
# Linear-phase FIR EQ
# ------------------------------------------------------------------------------------------------------------------


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp along the last axis of fp (..., N) for sorted xp (N,), query x (M,): (..., M); ends held."""
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1]), right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    t = ((x.clamp(xp[0], xp[-1]) - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0.0, 1.0)
    return fp[..., idx - 1] * (1 - t) + fp[..., idx] * t


def design_fir(
    freq_hz: torch.Tensor, gain: torch.Tensor, numtaps: int, sample_rate: float, nfreqs: int | None = None
) -> torch.Tensor:
    """Linear-phase FIR by frequency sampling, as ``scipy.signal.firwin2(numtaps, freq, gain, fs=sample_rate)``.

    freq_hz: (N,) increasing from 0 to sample_rate / 2; gain: (..., N) linear magnitudes (a batch of responses);
    numtaps odd (type I: any gain at Nyquist). The response is interpolated linearly on ``nfreqs`` uniform points
    (default ``1 + 2 ** ceil(log2(numtaps))``), given the linear phase of a (numtaps - 1) / 2 delay, inverse-FFT'd,
    truncated to numtaps and Hamming-windowed. Returns (..., numtaps) taps in gain's dtype.
    """
    if numtaps < 3 or numtaps % 2 == 0:
        raise FxlensError(f"numtaps must be odd and >= 3, got {numtaps}")
    nyq = sample_rate / 2.0
    dtype = gain.dtype if gain.is_floating_point() else torch.float64
    freq_hz = torch.as_tensor(freq_hz, dtype=torch.float64, device=gain.device)
    if nfreqs is None:
        nfreqs = 1 + 2 ** int(math.ceil(math.log2(numtaps)))
    grid = torch.linspace(0.0, nyq, nfreqs, dtype=torch.float64, device=gain.device)
    fx = _interp(grid, freq_hz, gain.to(torch.float64))
    shift = torch.exp(-(numtaps - 1) / 2.0 * 1j * math.pi * grid / nyq)
    out_full = torch.fft.irfft(fx * shift, n=2 * (nfreqs - 1))
    window = torch.hamming_window(numtaps, periodic=False, dtype=torch.float64, device=gain.device)
    return (out_full[..., :numtaps] * window).to(dtype)


def apply_fir(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Convolve (B, C, T) audio with linear-phase taps (B, N) or (N,), N odd, removing the (N-1)/2 delay.

    Same output as ``scipy.signal.fftconvolve(x, h, mode="same")`` per item: zero-phase, length T, zeros assumed
    outside the signal. FFT convolution, so any length costs O(T log T).
    """
    B, C, T = x.shape
    taps = taps.to(x.dtype)
    if taps.dim() == 1:
        taps = taps.expand(B, -1)
    N = taps.shape[-1]
    n = 1 << int(math.ceil(math.log2(T + N - 1)))
    X = torch.fft.rfft(x, n=n)
    H = torch.fft.rfft(taps, n=n)[:, None, :]
    y = torch.fft.irfft(X * H, n=n)
    d = (N - 1) // 2
    return y[..., d: d + T]


def _smooth_bands(v: torch.Tensor) -> torch.Tensor:
    """[1, 2, 1] / 4 over the band axis (edges held): about half an octave of smoothing on 1/6-octave bands."""
    p = torch.cat([v[..., :1], v, v[..., -1:]], dim=-1)
    return 0.25 * p[..., :-2] + 0.5 * p[..., 1:-1] + 0.25 * p[..., 2:]


def eq_match_curve_db(
    current_db: torch.Tensor, target_db: torch.Tensor, max_db: float = 12.0
) -> torch.Tensor:
    """The EQ (dB per band) that moves a band spectrum `current_db` (B, K) toward `target_db` (K,).

    target - current, minus its mean over the valid bands (level is loudness normalization's job), smoothed
    (`_smooth_bands`) and clamped to +-max_db. NaN bands (above 0.45 * sample_rate) get 0 dB.
    """
    diff = target_db.to(current_db.dtype)[None, :] - current_db
    valid = torch.isfinite(diff)
    diff = torch.where(valid, diff, torch.zeros_like(diff))
    mean = diff.sum(dim=-1, keepdim=True) / valid.sum(dim=-1, keepdim=True).clamp_min(1)
    diff = torch.where(valid, diff - mean, torch.zeros_like(diff))
    # hold the last valid band's value above it, so smoothing does not pull the top valid band toward 0
    last = valid.sum(dim=-1) - 1
    held = torch.gather(diff, -1, last.clamp_min(0)[:, None])
    diff = torch.where(valid, diff, held)
    return _smooth_bands(diff).clamp(-max_db, max_db)


def _eq_taps(curve_db: torch.Tensor, centres: torch.Tensor, numtaps: int, sample_rate: int) -> torch.Tensor:
    """FIR taps (B, numtaps) realizing per-band gains curve_db (B, K), interpolated in log frequency."""
    nfreqs = 1 + 2 ** int(math.ceil(math.log2(numtaps)))
    grid = torch.linspace(0.0, sample_rate / 2.0, nfreqs, dtype=torch.float64, device=curve_db.device)
    # log-frequency interpolation; below the first centre and above the last, the end values are held
    g_db = _interp(torch.log2(grid.clamp_min(1e-3)), torch.log2(centres.to(torch.float64)), curve_db.to(torch.float64))
    return design_fir(grid, torch.pow(10.0, g_db / 20.0), numtaps, sample_rate, nfreqs=nfreqs)


# ------------------------------------------------------------------------------------------------------------------
# Normalization
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class FxNormSettings:
    """How `normalize_stem` works; the defaults are the ones described in the module docstring."""

    work_lufs: float = -20.0  # level (LUFS) at which EQ and compression run
    max_eq_db: float = 12.0  # clamp of the EQ correction, per band
    eq_taps: int = 4097  # FIR length (odd)
    ratio: float = 4.0  # compressor ratio tried first
    max_ratio: float = 20.0  # ratio tried when `ratio` cannot reach the target
    expand: bool = True  # also expand stems less dynamic than the target (FxNorm's default), else leave them
    expand_ratio: float = 2.0  # upward expander tried first: +1 dB per dB above threshold (compressor ratio 1/2)
    max_expand_ratio: float = 4.0  # tried when `expand_ratio` cannot reach the target
    attack_ms: float = 0.2  # fast: the statistic is about peaks, a slower attack lets them through
    release_ms: float = 100.0
    knee_db: float = 6.0
    min_threshold_db: float = -60.0  # threshold search range (dBFS, stem at work_lufs), walked down from the top
    max_threshold_db: float = 0.0
    grid_step_db: float = 3.0  # threshold grid step
    refine_iterations: int = 6  # bisection steps inside the grid step: 3 dB / 2**6 = 0.05 dB resolution
    tolerance_db: float = 0.25  # stems within this of the dynamics target are left alone
    max_stereo_db: float = 12.0  # clamp of the balance and side-gain corrections
    eq_after_dynamics: bool = True  # match the spectrum again after compression (see the module docstring)


def _loudness_to(x: torch.Tensor, sample_rate: int, target: torch.Tensor | float) -> torch.Tensor:
    lufs = fxaudio.integrated_loudness(x, sample_rate)
    if not bool(torch.isfinite(lufs).all()):
        raise InvalidAudioError("cannot Fx-normalize silent audio")
    target = torch.as_tensor(target, dtype=x.dtype, device=x.device)
    return x * torch.pow(10.0, (target - lufs) / 20.0)[:, None, None]


def _eq_to(
    x: torch.Tensor, sample_rate: int, stats: FxNormStats, target: InstrumentStats, s: FxNormSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """EQ every item toward the target band spectrum; back to the working loudness. Returns (audio, curve dB)."""
    centres = torch.as_tensor(stats.band_freqs_hz, dtype=torch.float64, device=x.device)
    current = _band_spectrum_db(x, sample_rate, stats.band_freqs_hz).to(torch.float64)
    tgt = torch.as_tensor(target.band_db, dtype=torch.float64, device=x.device)
    curve = eq_match_curve_db(current, tgt, s.max_eq_db)
    taps = _eq_taps(curve, centres, s.eq_taps, sample_rate)
    return _loudness_to(apply_fir(x, taps), sample_rate, s.work_lufs), curve


def _dynamics_to(
    x: torch.Tensor, sample_rate: int, target_plr: float, s: FxNormSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compress (or, with ``s.expand``, upward-expand) each item until its onset PLR meets `target_plr`.

    Returns (audio, threshold_db, ratio) per item: threshold inf and ratio 1 for items left alone; ratio < 1 is an
    upward expander (``1 / s.expand_ratio``). A grid walk down the threshold, then bisection inside the grid step
    that crosses the target (see `search`); of every threshold evaluated, the one closest to the target is kept.
    """
    B = x.shape[0]
    dev, dt = x.device, x.dtype
    kx = fxaudio.k_weight(x, sample_rate)

    def plr_of(g_db: torch.Tensor) -> torch.Tensor:
        g = torch.pow(10.0, g_db / 20.0)[:, None, :]
        return _onset_peak_db(x * g, sample_rate).to(torch.float64) - fxaudio.gated_loudness(kx * g, sample_rate)

    plr = plr_of(torch.zeros(B, x.shape[-1], dtype=dt, device=dev))
    # sign +1: too dynamic, compress (the ratio must fall); -1: not dynamic enough, expand (it must rise)
    sign = torch.where(plr > target_plr, 1.0, -1.0).to(torch.float64)
    need = (plr - target_plr).abs() > s.tolerance_db
    if not s.expand:
        need = need & (sign > 0)
    none = torch.full((B,), math.inf, dtype=dt, device=dev)
    if not bool(need.any()):
        return x, none, torch.ones(B, dtype=dt, device=dev)
    fast = torch.full((B,), s.attack_ms, dtype=dt, device=dev)
    slow = torch.full((B,), s.release_ms, dtype=dt, device=dev)
    # an expander's gain *rises* on a peak: torchcomp's "release" branch, so the fast time goes there
    attack = torch.where(sign > 0, fast, slow)
    release = torch.where(sign > 0, slow, fast)

    def gain(thr: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        return compressor_gain_db(x, sample_rate, threshold_db=thr, ratio=ratio, attack_ms=attack,
                                  release_ms=release, knee_db=s.knee_db)

    def search(ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk the threshold down a grid until the PLR meets the target, then bisect inside that grid step.

        The PLR is not monotonic in the threshold: lowering it first catches the peaks (the PLR falls), but far
        below the signal the compressor reacts to every onset late and lets a sliver of it through above a
        squashed body (the PLR rises again). Walking down from the top stays on the first branch, as FxNorm's
        grid search does; items that pass their extremum without meeting the target stop there.
        """
        best_thr = torch.full((B,), s.max_threshold_db, dtype=dt, device=dev)
        best_err = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        lo = torch.full((B,), math.nan, dtype=dt, device=dev)  # first grid threshold meeting the target
        hi = torch.full((B,), math.nan, dtype=dt, device=dev)  # the grid threshold above it
        done = ~need
        extremum = torch.full((B,), math.inf, dtype=torch.float64, device=dev)  # of sign * (p - target)
        prev = torch.full((B,), s.max_threshold_db, dtype=dt, device=dev)
        n_grid = int(math.floor((s.max_threshold_db - s.min_threshold_db) / s.grid_step_db)) + 1
        for k in range(n_grid):
            thr = torch.full((B,), s.max_threshold_db - k * s.grid_step_db, dtype=dt, device=dev)
            excess = sign * (plr_of(gain(thr, ratio)) - target_plr)  # > 0: not there yet
            better = (excess.abs() < best_err) & ~done
            best_thr, best_err = torch.where(better, thr, best_thr), torch.where(better, excess.abs(), best_err)
            hit = ~done & (excess <= 0)
            lo, hi = torch.where(hit, thr, lo), torch.where(hit, prev, hi)
            extremum = torch.minimum(extremum, excess)
            done = done | hit | (excess > extremum + 1.0)  # met the target, or going back the other way
            prev = thr
            if bool(done.all()):
                break
        bracketed = torch.isfinite(lo) & torch.isfinite(hi)
        lo = torch.where(bracketed, lo, best_thr)
        hi = torch.where(bracketed, hi, best_thr)
        for _ in range(s.refine_iterations if bool(bracketed.any()) else 0):
            mid = 0.5 * (lo + hi)
            excess = sign * (plr_of(gain(mid, ratio)) - target_plr)
            better = (excess.abs() < best_err) & bracketed
            best_thr, best_err = torch.where(better, mid, best_thr), torch.where(better, excess.abs(), best_err)
            lo = torch.where(excess > 0, lo, mid)  # lo: meets the target; hi: does not yet
            hi = torch.where(excess > 0, mid, hi)
        return best_thr, best_err

    def ratios(compress: float, expand: float) -> torch.Tensor:
        return torch.where(sign > 0, torch.full((B,), compress, dtype=dt, device=dev),
                           torch.full((B,), 1.0 / expand, dtype=dt, device=dev))

    ratio = ratios(s.ratio, s.expand_ratio)
    best_thr, best_err = search(ratio)
    if bool(((best_err > s.tolerance_db) & need).any()):
        # the first ratio could not get there: try the strongest one, keep whichever lands closer
        hard = ratios(s.max_ratio, s.max_expand_ratio)
        thr2, err2 = search(hard)
        use = (best_err > s.tolerance_db) & (err2 < best_err)
        best_thr, ratio = torch.where(use, thr2, best_thr), torch.where(use, hard, ratio)
    y = x * torch.pow(10.0, gain(best_thr, ratio) / 20.0)[:, None, :]
    y = torch.where(need[:, None, None], y, x)
    return y, torch.where(need, best_thr, none), torch.where(need, ratio, torch.ones_like(ratio))


def _stereo_to(x: torch.Tensor, target: "InstrumentStats", max_db: float) -> tuple[torch.Tensor, dict]:
    """Balance, then side/mid ratio, toward the targets (each correction clamped to +-max_db)."""
    d_bal = (_balance_db(x) - target.balance_db).clamp(-max_db, max_db).to(x.dtype)  # > 0: too far left
    gains = torch.stack([torch.pow(10.0, -d_bal / 40.0), torch.pow(10.0, d_bal / 40.0)], dim=1)  # (B, 2)
    x = x * gains[:, :, None]
    d_side = (target.side_mid_db - _side_mid_db(x)).clamp(-max_db, max_db).to(x.dtype)
    g = torch.pow(10.0, d_side / 20.0)[:, None]
    m = 0.5 * (x[:, 0] + x[:, 1])
    s = 0.5 * (x[:, 0] - x[:, 1]) * g
    return torch.stack([m + s, m - s], dim=1), {"balance_correction_db": -d_bal, "side_gain_db": d_side}


def normalize_stem(
    audio: torch.Tensor,
    sample_rate: int,
    instrument: str,
    stats: FxNormStats,
    *,
    eq: bool = True,
    dynamics: bool = True,
    stereo: bool = True,
    target_lufs: float | None = None,
    settings: FxNormSettings | None = None,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Fx-normalize a stem toward `instrument`'s statistics: loudness, EQ, dynamics, stereo, loudness.

    Args:
        audio: (B, C, T) or (C, T) float, C = 1 or 2 (mono skips the stereo step), at least 0.4 s long.
        sample_rate: Hz; need not equal ``stats.sample_rate`` (bands are in Hz; bands above 0.45 * rate unused).
        instrument: a key of ``stats.instruments``.
        eq, dynamics, stereo: switch the steps off one by one.
        target_lufs: final loudness; default the instrument's mean loudness in the statistics.
        settings: `FxNormSettings` (defaults as in the module docstring).
        return_info: also return a dict with the EQ curve (dB per band), compressor threshold and ratio, stereo
            corrections, per item.

    Returns audio of the input's shape and dtype (and the info dict). Raises `InvalidAudioError` for silent, too
    short or non-finite audio, `FxlensError` for an instrument the statistics do not know.
    """
    s = settings or FxNormSettings()
    target = stats[instrument]
    squeeze = audio.dim() == 2
    x = _check(audio[None] if squeeze else audio)
    if x.shape[1] not in (1, 2):
        raise InvalidAudioError(f"Fx normalization takes mono or stereo stems, got {x.shape[1]} channels")
    dtype = x.dtype
    x = x.to(torch.float32) if dtype not in (torch.float32, torch.float64) else x
    info: dict[str, Any] = {}

    x = _loudness_to(x, sample_rate, s.work_lufs)
    if eq:
        x, info["eq_curve_db"] = _eq_to(x, sample_rate, stats, target, s)
    if dynamics:
        x, thr, ratio = _dynamics_to(x, sample_rate, target.onset_plr_db, s)
        info["threshold_db"], info["ratio"] = thr, ratio
        if eq and s.eq_after_dynamics:
            # a fast compressor also tilts the spectrum (its gain moves within low-frequency cycles): match again
            x, info["eq2_curve_db"] = _eq_to(x, sample_rate, stats, target, s)
    if stereo and x.shape[1] == 2:
        x, st_info = _stereo_to(x, target, s.max_stereo_db)
        info.update(st_info)
    x = _loudness_to(x, sample_rate, target.loudness_lufs if target_lufs is None else target_lufs)
    x = x.to(dtype)
    if squeeze:
        x = x[0]
    return (x, info) if return_info else x


def normalize_dataset(
    dataset: StemDataset,
    stats: FxNormStats,
    out_dir: str | os.PathLike,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    instruments: Sequence[str] | None = None,
    settings: FxNormSettings | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Fx-normalize every stem of a dataset into fxlens's layout: ``out_dir/<split>/<song_id>/<instrument>.flac``.

    Songs without a split go to ``out_dir/all``. Stems whose instrument has no statistics (e.g. MUSDB's "other")
    are not written; silent stems neither (both listed in the song.json written beside the stems, with the source
    and each step's settings). Files are written atomically (24-bit FLAC; samples beyond full scale are clipped
    with a warning). Returns the song folders written.
    """
    out_root = Path(out_dir)
    s = settings or FxNormSettings()
    written = []
    songs = dataset.songs()
    for i, ref in enumerate(songs):
        folder = out_root / (ref.split or "all") / ref.song_id
        done, skipped = [], {}
        for name in ref.instruments:
            if instruments is not None and name not in instruments:
                continue
            if name not in stats.instruments:
                skipped[name] = "no statistics for this instrument"
                continue
            x = dataset.load_stem(ref, name, sample_rate).to(device)
            try:
                y = normalize_stem(x, sample_rate, name, stats, settings=s)
            except InvalidAudioError as e:
                skipped[name] = str(e)
                continue
            fxaudio.save(folder / f"{name}.flac", y[0].cpu(), sample_rate, subtype="PCM_24")
            done.append(name)
        if done:
            meta = {
                "song_id": ref.song_id,
                "source": {"layout": ref.layout, "path": str(ref.path), "split": ref.split, "meta": dict(ref.meta)},
                "fxnorm": {"stats_source": stats.source, "settings": asdict(s), "reverb": "not normalized"},
                "stems": done,
                "skipped": skipped,
            }
            write_text_atomic(folder / "song.json", json.dumps(meta, indent=1, default=str) + "\n")
            written.append(folder)
        if progress is not None:
            progress(i + 1, len(songs))
    return written

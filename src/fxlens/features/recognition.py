"""Features for effect recognition and parameter estimation beyond AutoFX's 163 (`recognition_features`).

The AutoFX set (`fxlens.features.spectral.autofx_features`) describes a mono spectrum's shape over time; it was
designed for single guitar notes. On phrases and chords of many instruments it misses what a listener hears first:
the level envelope (tremolo's periodic dips, compression's flattened dynamics, reverb's filled gaps), echoes at a
fixed lag (delay), the spectrum's *detail* (EQ bumps), and width (stereo reverb and chorus). `effect_features` adds
these, at 44.1 kHz, on ``(B, C, T)`` audio:

=========================== ===== ====================================================================================
group                       n     definition
=========================== ===== ====================================================================================
log-mel mean / std / dmean  3x64  `fxlens.features.mel.log_mel` (64 bands, n_fft 2048, hop 512) of the mid channel:
                                  per band the mean and standard deviation over frames, and the mean absolute
                                  frame-to-frame change. Scaled log-mel units (1 unit = 60 dB).
stereo                      9     side-to-mid energy ratio (dB, floored at -60) in 8 mel-band groups of 8 bands; the
                                  correlation of the left and right channels (1 for mono input).
envelope levels             8     RMS envelope (1024-sample frames, hop 256) in dB relative to its maximum:
                                  percentiles 5, 10, 25, 50, 75, 90; the fractions of frames 20 and 40 dB below max.
envelope modulation         9     spectrum of the (mean-removed, unit-RMS) linear envelope: mean power in the bands
                                  0.5-1, 1-2, 2-4, 4-6, 6-8, 8-12, 12-20 Hz (log10), peak frequency in 1-20 Hz (Hz)
                                  and the peak's power over the median of 1-20 Hz (log10).
envelope autocorrelation    18    normalized autocorrelation of the mean-removed envelope at 16 log-spaced lags
                                  40-800 ms; its maximum over 40-800 ms and the lag (s) of that maximum.
crest                       3     per-frame peak-to-RMS ratio (dB): mean and std over non-silent frames; the whole
                                  clip's crest factor (dB).
cepstrum                    4     real cepstrum of the whole mid channel: maximum over quefrency 40-700 ms and over
                                  0.5-25 ms, each in standard deviations of the cepstrum over 40-700 ms resp.
                                  0.5-25 ms above its mean, and the quefrencies (s) of the two maxima.
=========================== ===== ====================================================================================

`recognition_features` = `autofx_features` (163) followed by `effect_features` (243) = 406 numbers. Every
feature is finite for finite input (silent frames and clips are handled with floors), and none depends on the
absolute level except through the relative envelope, so loudness is no cue.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fxlens.errors import ParameterError
from fxlens.features.mel import log_mel
from fxlens.features.spectral import autofx_features, mel_filterbank, mel_frequencies, stft_power

__all__ = ["EFFECT_FEATURE_NAMES", "RECOGNITION_FEATURE_NAMES", "FEATURE_SAMPLE_RATE", "STEREO_BANDS_HZ",
           "effect_features", "recognition_features", "stereo_image"]

FEATURE_SAMPLE_RATE = 44100
_N_MELS = 64
_ENV_FRAME, _ENV_HOP = 1024, 256
_MOD_BANDS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 12.0), (12.0, 20.0))
_AC_LAGS_S = tuple(float(v) for v in torch.logspace(math.log10(0.040), math.log10(0.800), 16).tolist())
_PERCENTILES = (5, 10, 25, 50, 75, 90)


def _names() -> tuple[str, ...]:
    n = [f"mel{i}_mean" for i in range(_N_MELS)] + [f"mel{i}_std" for i in range(_N_MELS)]
    n += [f"mel{i}_dmean" for i in range(_N_MELS)]
    n += [f"side_mid_db_band{i}" for i in range(8)] + ["lr_correlation"]
    n += [f"env_p{p}_db" for p in _PERCENTILES] + ["env_below20", "env_below40"]
    n += [f"envmod_{lo:g}_{hi:g}hz" for lo, hi in _MOD_BANDS] + ["envmod_peak_hz", "envmod_peak_ratio"]
    n += [f"envac_{1000 * lag:.0f}ms" for lag in _AC_LAGS_S] + ["envac_max", "envac_max_lag_s"]
    n += ["crest_mean_db", "crest_std_db", "crest_clip_db"]
    n += ["ceps_long_peak", "ceps_short_peak", "ceps_long_lag_s", "ceps_short_lag_s"]
    return tuple(n)


EFFECT_FEATURE_NAMES: tuple[str, ...] = _names()
"""Names of `effect_features`' 243 columns, in order."""


def _recognition_names() -> tuple[str, ...]:
    from fxlens.features.spectral import FEATURE_NAMES

    return tuple(FEATURE_NAMES) + EFFECT_FEATURE_NAMES


RECOGNITION_FEATURE_NAMES: tuple[str, ...] = _recognition_names()
"""Names of `recognition_features`' 406 columns: the 163 AutoFX names, then `EFFECT_FEATURE_NAMES`."""


def _frames(x: torch.Tensor, frame: int, hop: int) -> torch.Tensor:
    """(B, T) -> (B, n, frame) centred zero-padded frames."""
    pad = frame // 2
    return F.pad(x, (pad, pad)).unfold(-1, frame, hop)


@functools.lru_cache(maxsize=256)
def _bin_slice(n: int, rate: float, lo: float, hi: float, closed: bool = False) -> slice:
    """The rfft bins of an `n`-point FFT at `rate` with ``lo <= f < hi`` (``<= hi`` when `closed`), as a slice.

    A slice computed from Python numbers, not a boolean mask of a tensor: the bins a band holds do not depend on
    the audio, and `fxlens.features.export` needs that to be visible (a mask's size is data-dependent to a graph
    exporter). numpy computes the bin frequencies (a graph exporter traces torch calls, even on constants).
    """
    f = np.fft.rfftfreq(n, d=1.0 / rate)
    idx = np.flatnonzero((f >= lo) & ((f <= hi) if closed else (f < hi)))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _band_power(spec_power: torch.Tensor, rate: float, n: int, lo: float, hi: float) -> torch.Tensor:
    band = _bin_slice(n, rate, lo, hi)
    if band.stop == band.start:
        return torch.zeros(spec_power.shape[0], dtype=spec_power.dtype, device=spec_power.device)
    return spec_power[:, band].mean(dim=-1)


_MEL_POINTS = mel_frequencies(_N_MELS + 2, 50.0, 18000.0)
STEREO_BANDS_HZ: tuple[tuple[float, float], ...] = tuple(
    (float(_MEL_POINTS[8 * g + 1]), float(_MEL_POINTS[8 * g + 8])) for g in range(8))
"""The 8 band groups of the stereo measures: the centre frequencies (Hz) of the first and last of each group's 8
mel bands (64 Slaney mel bands from 50 Hz to 18 kHz)."""


def _side_mid_db(side_energy: torch.Tensor, mid_energy: torch.Tensor) -> torch.Tensor:
    return (10 * torch.log10((side_energy + 1e-12) / (mid_energy + 1e-12))).clamp(-60.0, 20.0)


def _stereo(left: torch.Tensor, right: torch.Tensor, mid: torch.Tensor, side: torch.Tensor, sr: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(side and mid energy per `STEREO_BANDS_HZ` group (B, 8) each; L/R correlation (B,), 1 where a channel is
    silent)."""
    B = mid.shape[0]
    fb = mel_filterbank(sr, 2048, _N_MELS, 50.0, 18000.0, htk=False, norm="slaney")
    pm = torch.matmul(fb, stft_power(mid, 2048, 512)).sum(-1)  # (B, 64)
    ps = torch.matmul(fb, stft_power(side, 2048, 512)).sum(-1)
    lc, rc = left - left.mean(-1, keepdim=True), right - right.mean(-1, keepdim=True)
    den = (lc.square().sum(-1) * rc.square().sum(-1)).sqrt()
    correlation = torch.where(den > 1e-12, (lc * rc).sum(-1) / den.clamp_min(1e-12), torch.ones_like(den))
    return ps.reshape(B, 8, 8).sum(-1), pm.reshape(B, 8, 8).sum(-1), correlation


def stereo_image(x: torch.Tensor, sample_rate: int) -> dict:
    """How wide a stereo recording ``x`` ``(C, T)`` or ``(1, C, T)`` at 44.1 kHz is, measured (no model): the
    correlation of the left and right channels (1: mono; 0: unrelated; below 0: they partly cancel when summed to
    mono), and the side-to-mid energy ratio in dB — (L - R) / 2 against (L + R) / 2, in mel bands from 50 Hz to
    18 kHz — over all those bands and per `STEREO_BANDS_HZ` group (floored at -60 dB: mono; 0 dB: as much side as
    mid). The per-group ratios and the correlation are 9 of the recognition features."""
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[1] not in (1, 2) or int(sample_rate) != FEATURE_SAMPLE_RATE:
        raise ParameterError(f"stereo_image reads one (C, T) recording of 1-2 channels at {FEATURE_SAMPLE_RATE} Hz, "
                             f"got shape {tuple(x.shape)} at {sample_rate} Hz")
    x = x.to(torch.float32).expand(-1, 2, -1)
    left, right = x[:, 0], x[:, 1]
    side_e, mid_e, correlation = _stereo(left, right, 0.5 * (left + right), 0.5 * (left - right), FEATURE_SAMPLE_RATE)
    bands = _side_mid_db(side_e, mid_e)[0].tolist()
    return {"lr_correlation": float(correlation[0]), "side_mid_db": float(_side_mid_db(side_e.sum(), mid_e.sum())),
            "bands": [{"lo_hz": lo, "hi_hz": hi, "side_mid_db": float(v)}
                      for (lo, hi), v in zip(STEREO_BANDS_HZ, bands)]}


def effect_features(x: torch.Tensor, sample_rate: int,
                    resample: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """The 243 `EFFECT_FEATURE_NAMES` features of ``x`` ``(B, C, T)`` (any rate; resampled to 44.1 kHz): ``(B, 243)``.

    Mono input counts as identical left and right channels; more than two channels are not expected here (convert
    with `fxlens.audio` first).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] == 0:
        raise ParameterError(f"expected audio of shape (batch, channels, samples), got {getattr(x, 'shape', type(x))}")
    x = x.to(torch.float32)
    sr = int(round(float(sample_rate)))
    if sr != FEATURE_SAMPLE_RATE:
        if resample is None:
            from fxlens.audio import resample
        x = resample(x, sr, FEATURE_SAMPLE_RATE)
        sr = FEATURE_SAMPLE_RATE
    if x.shape[1] == 1:
        x = x.expand(-1, 2, -1)
    left, right = x[:, 0], x[:, 1]
    mid, side = 0.5 * (left + right), 0.5 * (left - right)
    B, T = mid.shape
    if T < _ENV_FRAME:
        raise ParameterError(f"audio too short for effect features: {T} samples (need {_ENV_FRAME})")
    out: list[torch.Tensor] = []

    # log-mel statistics of the mid channel
    lm = log_mel(mid[:, None], sr)[:, 0]  # (B, 64, M)
    out += [lm.mean(-1), lm.std(-1, unbiased=False), (lm[..., 1:] - lm[..., :-1]).abs().mean(-1)]

    # stereo: side/mid energy per band group, L/R correlation
    side_e, mid_e, correlation = _stereo(left, right, mid, side, sr)
    out += [_side_mid_db(side_e, mid_e), correlation[:, None]]

    # level envelope
    fr = _frames(mid, _ENV_FRAME, _ENV_HOP)  # (B, n, frame)
    rms = fr.square().mean(-1).sqrt()  # (B, n)
    env_rate = sr / _ENV_HOP
    peak = rms.amax(-1, keepdim=True).clamp_min(1e-9)
    env_db = (20 * torch.log10(rms.clamp_min(1e-9) / peak)).clamp(-100.0, 0.0)
    q = torch.tensor([p / 100 for p in _PERCENTILES], dtype=env_db.dtype)
    out.append(torch.quantile(env_db, q, dim=-1).T)
    out.append(torch.stack([(env_db < -20).float().mean(-1), (env_db < -40).float().mean(-1)], -1))

    env = rms / peak
    e0 = env - env.mean(-1, keepdim=True)
    e0n = e0 / e0.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-9)
    n_env = e0n.shape[-1]
    nfft = 1 << max(int(math.ceil(math.log2(n_env))) + 2, 10)
    w = torch.hann_window(n_env, periodic=False, dtype=e0n.dtype)
    spec = torch.fft.rfft(e0n * w, n=nfft).abs().square() / n_env
    out.append(torch.stack([torch.log10(_band_power(spec, env_rate, nfft, lo, hi) + 1e-6) for lo, hi in _MOD_BANDS],
                           -1))
    band = _bin_slice(nfft, env_rate, 1.0, 20.0, closed=True)
    sub = spec[:, band]
    pk, ik = sub.max(-1)
    peak_hz = torch.fft.rfftfreq(nfft, d=1.0 / env_rate)[band][ik]
    out.append(torch.stack([peak_hz, torch.log10((pk + 1e-9) / (sub.median(-1).values + 1e-9))], -1))

    # envelope autocorrelation (biased, normalized to lag 0)
    n2 = 1 << int(math.ceil(math.log2(2 * n_env)))
    s = torch.fft.rfft(e0, n=n2)
    ac = torch.fft.irfft(s.real.square() + s.imag.square(), n=n2)[:, :n_env]
    ac = ac / ac[:, :1].clamp_min(1e-12)
    lags = [min(int(round(lag * env_rate)), n_env - 1) for lag in _AC_LAGS_S]
    out.append(ac[:, lags])
    lo_i, hi_i = int(round(0.040 * env_rate)), min(int(round(0.800 * env_rate)), n_env - 1)
    if hi_i > lo_i:
        acmax, acarg = ac[:, lo_i:hi_i + 1].max(-1)
        out.append(torch.stack([acmax, (acarg + lo_i).to(ac.dtype) / env_rate], -1))
    else:
        out.append(torch.zeros(B, 2))

    # crest factor
    fpk = fr.abs().amax(-1)
    ok = env_db > -40
    crest = 20 * torch.log10(fpk.clamp_min(1e-9) / rms.clamp_min(1e-9))
    cnt = ok.float().sum(-1).clamp_min(1)
    cmean = (crest * ok).sum(-1) / cnt
    cstd = (((crest - cmean[:, None]).square() * ok).sum(-1) / cnt).sqrt()
    clip_crest = 20 * torch.log10(mid.abs().amax(-1).clamp_min(1e-9) / mid.square().mean(-1).sqrt().clamp_min(1e-9))
    out.append(torch.stack([cmean, cstd, clip_crest], -1))

    # real cepstrum of the whole clip: echoes show up as peaks at their delay
    nc = 1 << int(math.ceil(math.log2(T)))
    logmag = torch.log(torch.fft.rfft(mid * torch.hann_window(T, periodic=False), n=nc).abs().clamp_min(1e-7))
    ceps = torch.fft.irfft(logmag, n=nc)
    feats = []
    for lo, hi in ((0.040, 0.700), (0.0005, 0.025)):
        a, b = int(lo * sr), min(int(hi * sr), nc // 2 - 1)
        seg = ceps[:, a:b]
        mx, am = seg.max(-1)
        z = (mx - seg.mean(-1)) / seg.std(-1).clamp_min(1e-9)
        feats.append((z, (am + a).float() / sr))
    out.append(torch.stack([feats[0][0], feats[1][0], feats[0][1], feats[1][1]], -1))

    res = torch.cat(out, dim=1)
    return torch.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0)


def recognition_features(x: torch.Tensor, sample_rate: int,
                         resample: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """`autofx_features` (163) then `effect_features` (243) of ``x`` ``(B, C, T)``: ``(B, 406)`` float32.
    ``resample``: as in `autofx_features`."""
    return torch.cat([autofx_features(x, sample_rate, resample=resample).float(),
                      effect_features(x, sample_rate, resample=resample)], dim=1)

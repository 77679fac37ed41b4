"""The recognition features as one exported graph: run them outside fxlens's Python (AutoFX §4 asks for features
that ship with the model).

`export_features` writes a `torch.export` program (``.pt2``: `torch.export.save`) that maps stereo audio at
44.1 kHz, ``(batch, 2, samples)`` of a fixed length (default 1.5 s: the window `fxlens analyze` reads), to a feature
set of `fxlens.features.sets.FEATURE_SETS`. Load it with `torch.export.load(path).module()` — no fxlens needed —
or with `load_exported_features`, which also checks the input shape. (Compiling it for C++ with AOTInductor was
not tried.)

What differs from `compute_features`: the AutoFX features read mono audio at 22,050 Hz, which the eager path gets
from soxr (numpy, not traceable). The exported graph halves the rate with soxr's own filter instead, read off soxr
as an impulse response (`soxr_halfband`) and applied as a strided convolution, so the features agree with the
eager ones within 1e-3 — all but the ill-conditioned ones, which float32 rounding moves in the eager path too (the
spectral slope's statistics, the higher moments of the spectral shape, frames of near-silence: `docs/analyze.md`).
Input validation (finite samples, shapes) is the caller's: a graph has no error paths.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len

from fxlens.atomic import atomic_path
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.features.recognition import FEATURE_SAMPLE_RATE
from fxlens.features.sets import FEATURE_SET, FEATURE_SETS, check_feature_set


@lru_cache(maxsize=1)
def soxr_halfband() -> tuple[np.ndarray, int]:
    """soxr's own 2:1 "HQ" decimation filter, read off soxr as its impulse response: ``(taps, lead)`` such that
    ``y[j] = sum_t taps[t] * x[2 j - lead + t]``.

    For a rate ratio of exactly 2, soxr is a linear filter followed by keeping every second sample, so two impulses
    (at an even and an odd position, far from the ends) give every tap; taps below 1e-9 are dropped. The graph then
    computes what `fxlens.audio.resample` computes (the tests: within 2e-6 on noise, at both ends too)."""
    import soxr

    n = 1 << 15
    c = n // 2
    resp = []
    for shift in (0, 1):
        e = np.zeros((n, 1))
        e[c + shift, 0] = 1.0
        resp.append(soxr.resample(e, 2, 1, quality="HQ")[:, 0])
    # output j of an impulse at i is h[2 j - i]: the impulse at c + 1 gives the offsets 2 j - c - 1, the one at c
    # the offsets 2 j - c; interleaved, h[p] is the tap at offset m = p - c - 1
    h = np.empty(2 * resp[0].shape[0])
    h[0::2], h[1::2] = resp[1], resp[0]
    keep = np.flatnonzero(np.abs(h) > 1e-9)
    hi = int(keep[-1]) - c - 1
    return h[keep[0]:keep[-1] + 1][::-1].copy(), hi  # reversed: t = hi - m


@lru_cache(maxsize=8)
def _taps_spectrum(n_fft: int) -> torch.Tensor:
    """The rfft (complex128) of `soxr_halfband`'s taps, reversed, at length `n_fft`: a constant of each window
    length, computed once (it was a quarter of `decimate2`'s time on a 1.5 s window)."""
    taps, _ = soxr_halfband()
    return torch.fft.rfft(torch.from_numpy(taps[::-1].copy()), n=n_fft)


def decimate2(x: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """``x`` (..., T) at ``orig_sr`` = 2 x ``target_sr`` to ``target_sr`` through `soxr_halfband`; ``(T + 1) // 2``
    samples out (soxr's length, as `fxlens.audio.resample` pins it). Traceable by `torch.export`; differentiable.

    Written here rather than taken from a library because the point is to be soxr, inside a torch graph: torchaudio
    does not import on these machines, and its resampler is not soxr's filter.

    How: the convolution by FFT in float64 (2.3x faster than the direct strided convolution in float32 on a 1.5 s
    window, and closer to soxr's float64 arithmetic), then every output whose 1,659 input samples are all exactly
    zero is set to exactly zero, as soxr (and a direct convolution) leaves digital silence. Without that step the
    FFT spreads rounding noise into silence, and the spectral centroid, spread and roll-off of such frames become
    those of the noise (a float32 FFT changed 2 of the shipped recognizer's 960 v2 val decisions that way). The
    zeroing keeps the gradient of the unzeroed output, so a matching objective sees the filter's true derivative
    there too."""
    if int(orig_sr) != 2 * int(target_sr):
        raise FxlensError(f"the exported features decimate by 2 only (got {orig_sr} -> {target_sr} Hz)")
    taps, lead = soxr_halfband()
    L = taps.size
    batch_shape, T = x.shape[:-1], x.shape[-1]
    xp = F.pad(x.reshape(-1, T), (lead, L - 1 - lead))  # y[j] = sum_t taps[t] xp[2 j + t]
    n_out = (xp.shape[-1] - L) // 2 + 1
    n_fft = next_fast_len(xp.shape[-1], real=True)  # linear, not circular: the window fits in one FFT
    h = _taps_spectrum(n_fft)
    # full[L - 1 + i] = sum_t taps[t] xp[i + t]
    full = torch.fft.irfft(torch.fft.rfft(xp.double(), n=n_fft) * h, n=n_fft)
    y = full[:, L - 1:L - 1 + 2 * n_out:2].to(x.dtype)
    # nonzero input samples in each output's window [2 j, 2 j + L), counted exactly with integers
    nonzero = F.pad(torch.cumsum((xp != 0).to(torch.int64), dim=-1), (1, 0))
    silent = (nonzero[:, L:L + 2 * n_out:2] - nonzero[:, 0:2 * n_out:2]) == 0
    y = torch.where(silent, y - y.detach(), y)  # exactly 0 there, with the gradient of y
    return y.reshape(*batch_shape, n_out)


class FeatureExtractor(torch.nn.Module):
    """``forward(x)``: the feature set's ``(B, n)`` float32 features of stereo 44.1 kHz audio ``x`` ``(B, 2, T)``."""

    def __init__(self, feature_set: str = FEATURE_SET) -> None:
        super().__init__()
        check_feature_set(feature_set)
        self.feature_set = feature_set
        self.fn = FEATURE_SETS[feature_set][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, FEATURE_SAMPLE_RATE, resample=decimate2).float()


def export_features(path: str | os.PathLike, feature_set: str = FEATURE_SET, seconds: float = 1.5,
                    batch: int = 1) -> dict:
    """Export `FeatureExtractor` for inputs ``(batch, 2, round(seconds * 44100))`` to ``path`` (``.pt2``) and a
    ``<path>.json`` beside it (feature set, input shape, feature names). Returns that JSON's contents.
    Shapes are fixed: export one program per window length and batch size."""
    check_feature_set(feature_set)
    if not 0.1 <= float(seconds) <= 60.0 or int(batch) < 1:
        raise FxlensError(f"--seconds must be within 0.1-60 and --batch >= 1 (got {seconds}, {batch})")
    path = Path(path)
    if path.suffix != ".pt2":
        raise FxlensError(f"the exported program's file name must end in .pt2 (got '{path.name}')")
    n = int(round(float(seconds) * FEATURE_SAMPLE_RATE))
    example = torch.randn(int(batch), 2, n, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        program = torch.export.export(FeatureExtractor(feature_set).eval(), (example,), strict=False)
    info = {"feature_set": feature_set, "input_shape": [int(batch), 2, n], "sample_rate": FEATURE_SAMPLE_RATE,
            "n_features": len(FEATURE_SETS[feature_set][1]), "feature_names": list(FEATURE_SETS[feature_set][1]),
            "torch": torch.__version__,
            "load": "torch.export.load(path).module()(x)  # x: float32 (batch, 2, samples), 44.1 kHz"}
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    with atomic_path(path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def load_exported_features(path: str | os.PathLike):
    """A callable ``f(x) -> (B, n)`` running an exported feature program; checks ``x`` against its input shape."""
    path = Path(path)
    if not path.is_file():
        raise FxlensError(f"no exported feature program at '{path}'")
    export_log = logging.getLogger("torch.export")  # it logs the whole traceback of a failed load as a warning
    level = export_log.level
    export_log.setLevel(logging.ERROR)
    try:
        module = torch.export.load(str(path)).module()
    except Exception as e:  # a foreign or corrupt file: one line, not torch's traceback
        raise FxlensError(f"'{path}' is not an exported feature program ({type(e).__name__})") from None
    finally:
        export_log.setLevel(level)
    meta = path.with_suffix(".json")
    shape = json.loads(meta.read_text(encoding="utf-8"))["input_shape"] if meta.is_file() else None

    def run(x: torch.Tensor) -> torch.Tensor:
        if shape is not None and list(x.shape) != shape:
            raise InvalidAudioError(f"this program reads audio of shape {tuple(shape)}, got {tuple(x.shape)}")
        with torch.no_grad():
            return module(x.float())

    return run

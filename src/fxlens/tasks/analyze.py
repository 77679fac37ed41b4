"""Which effects are on this audio, and how are they set? (`fxlens.analyze`, `fxlens analyze FILE`)

The audio is converted at the edge (any rate, any channel count 1-8 -> 44.1 kHz stereo), cut into 1.5 s windows
(the fxset clip length; hop 1.5 s, at most `MAX_WINDOWS` of them, evenly spread), silent windows skipped, each
window loudness-normalized as the fxset clips were (-18 LUFS, sample peak at most -1 dBFS). The recognizer gives
class probabilities per window (kept: `AnalysisResult.timeline`; `heard_in_part` names effects on part of the
recording); they are averaged over windows. The effects reported are:

- a single-label recognizer (softmax): the most probable aggregated class, unless it is ``dry``;
- a multi-label recognizer (sigmoid, trained on chains): every aggregated class above `threshold`.

For each reported effect, its most probable fine class (e.g. ``feedback_delay`` inside ``delay``) conditions the
estimator, whose controls are averaged over windows (a tremolo's or vibrato's rate and a delay's time then re-read
from the windows' audio, `fxlens.models.estimator.refine_controls`) and turned into physical units with the
effect's own `ParamSpec`s; parameters that the fine class fixes (a distortion's mix of 1, a compressor's 0 dB
make-up) keep that value. The effects go into a preset in the fxset chain order (eq -> compression -> distortion ->
modulation -> tremolo -> delay -> reverb), which `Chain.from_preset` and `fxlens fx apply --preset` accept.

Beside the effects, the stereo image of the analyzed windows is measured (`AnalysisResult.stereo`: L/R correlation,
side-to-mid energy by band; `fxlens.features.recognition.stereo_image`).

Checkpoints: ``assets/recognizer-small`` and ``assets/estimator-small`` inside the package by default, or any
checkpoint folders (kind-checked) passed as paths.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.data.fxset import (AGGREGATED_CLASSES, CHAIN_ORDER, FXSET_CLASSES, OUTPUT_LUFS, OUTPUT_PEAK_DB,
                               aggregate_probabilities)
from fxlens.errors import CheckpointError, InvalidAudioError, ParameterError
from fxlens.features.recognition import stereo_image
from fxlens.fx.effect import get_effect
from fxlens.fx.preset import preset_from_stages
from fxlens.models.estimator import REFINEMENTS, refine_controls

__all__ = ["AnalysisResult", "DetectedEffect", "analyze", "assets_dir", "load_recognizer", "load_estimator",
           "WINDOW_S", "MAX_WINDOWS"]

WINDOW_S = 1.5
MIN_SECONDS = 0.5
MAX_WINDOWS = 32
SILENT_LUFS = -60.0


def assets_dir() -> Path:
    """The folder of shipped checkpoints: ``fxlens/assets`` inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets"


@dataclass
class DetectedEffect:
    """One effect found on the audio: class, probability and estimated settings (physical units); `measured` names
    the settings read from the audio itself (`fxlens.models.estimator.refine_controls`) rather than regressed.

    `typical_error`: for each regressed free setting, the estimator's mean absolute error on its validation clips
    of this fine class (the checkpoint's ``metrics.json``), in the setting's unit around this estimate (the mean of
    the two sides on a log scale); `near_class_mean`: the settings whose validation error is not 5 % below that of
    always answering the class's average setting — the model reads them no better than a guess from the class."""

    aggregated_class: str
    probability: float
    fine_class: str
    fine_probability: float
    effect: str | None
    config: dict = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    controls: dict[str, float] = field(default_factory=dict)
    measured: list[str] = field(default_factory=list)
    typical_error: dict[str, float] = field(default_factory=dict)
    near_class_mean: list[str] = field(default_factory=list)


@dataclass
class AnalysisResult:
    """What `analyze` found: per-class probabilities, the detected effects, and a preset that re-creates them."""

    sample_rate: int
    duration_s: float
    windows: int
    probabilities: dict[str, float]
    fine_probabilities: dict[str, float]
    effects: list[DetectedEffect]
    preset: dict
    multilabel: bool
    stereo: dict = field(default_factory=dict)
    """The stereo image measured from the analyzed windows (`fxlens.features.recognition.stereo_image`): L/R
    correlation, side-to-mid energy ratio over all and in 8 bands. A measurement, not a detected effect."""
    timeline: list[dict] = field(default_factory=list)
    """Per analyzed window: where it starts (s) and its aggregated-class probabilities (`probabilities` is their
    mean)."""

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------


def _resolve(folder, name: str) -> Path:
    if folder is None:
        p = assets_dir() / name
        if not p.is_dir():
            raise CheckpointError(f"the shipped checkpoint {p} is missing (reinstall fxlens or pass a checkpoint)")
        return p
    return Path(folder)


@lru_cache(maxsize=8)
def _load_cached(kind: str, path: str, mtime: float):
    """One load per (kind, folder, config mtime): analyzing many files reads each checkpoint once."""
    if kind == "recognizer":
        from fxlens.train.recognizer import load_recognizer as load
    else:
        from fxlens.train.estimator import load_estimator as load
    return load(path)


def _load(kind: str, folder: str | os.PathLike | None):
    p = _resolve(folder, f"{kind}-small")
    cfg = p / "config.json"
    return _load_cached(kind, str(p.resolve()), cfg.stat().st_mtime if cfg.is_file() else 0.0)


def load_recognizer(folder: str | os.PathLike | None = None):
    """(recognizer, config) of a recognizer checkpoint, feature MLP or features + log-mel ResNet (default: the
    shipped one)."""
    return _load("recognizer", folder)


def load_estimator(folder: str | os.PathLike | None = None):
    """(estimator, config) of an estimator checkpoint, MLP or ResNet-FiLM (default: the shipped one)."""
    return _load("estimator", folder)


#: a regressed setting is "near the class mean" unless its validation MAE is this far below the class mean's
NEAR_CLASS_MEAN = 0.95


@lru_cache(maxsize=8)
def _validation_errors_cached(path: str, mtime: float) -> dict:
    import json

    try:
        per_class = json.loads(Path(path).read_text())["splits"]["val"]["per_class"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {c: v.get("params", {}) for c, v in per_class.items() if isinstance(v, dict)}


def validation_errors(folder: str | os.PathLike | None = None) -> dict[str, dict[str, dict]]:
    """{fine class: {setting: {"model", "class_mean", "fixed", ...}}}: an estimator checkpoint's validation MAE per
    normalized control, from the ``metrics.json`` that `fxlens train estimator` writes beside it ({} without one)."""
    p = _resolve(folder, "estimator-small") / "metrics.json"
    return _validation_errors_cached(str(p.resolve()), p.stat().st_mtime if p.is_file() else 0.0)


def _typical_errors(effect, controls: torch.Tensor, errors: dict[str, dict], skip: set[str]
                    ) -> tuple[dict[str, float], list[str]]:
    """Physical half-width of +-(validation MAE) around each estimated control, and the settings near the class
    mean (see `DetectedEffect`)."""
    typical, near = {}, []
    for spec, u in zip(effect.specs, controls.tolist()):
        e = errors.get(spec.name)
        if spec.name in skip or not e or e.get("fixed") or e.get("model") is None:
            continue
        d = float(e["model"])
        lo, hi = (spec.to_physical(torch.tensor(min(max(v, 0.0), 1.0), dtype=torch.float64)) for v in (u - d, u + d))
        typical[spec.name] = float(hi - lo) / 2.0
        if e.get("class_mean") is not None and d >= NEAR_CLASS_MEAN * float(e["class_mean"]):
            near.append(spec.name)
    return typical, near


# ------------------------------------------------------------------------------------------------------------------
# Audio at the edge
# ------------------------------------------------------------------------------------------------------------------


def _as_audio(x, sample_rate: int) -> torch.Tensor:
    """Any array-like of shape (T,), (C, T) or (1, C, T) at `sample_rate` -> float32 (1, 2, T) at 44.1 kHz."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InvalidAudioError(f"audio must be a torch tensor or numpy array, got {type(x).__name__}")
    if not (x.is_floating_point() or x.dtype in (torch.int16, torch.int32)):
        raise InvalidAudioError(f"audio must hold float or int16/int32 samples, got {x.dtype}")
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif x.dtype == torch.int32:
        x = x.double() / 2147483648.0
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        x = x[None]
    elif x.dim() != 3 or x.shape[0] != 1:
        raise InvalidAudioError(f"audio must be (samples,), (channels, samples) or (1, channels, samples), "
                                f"got shape {tuple(x.shape)}")
    if x.shape[-1] == 0 or x.shape[1] == 0:
        raise InvalidAudioError("audio has no samples")
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating))
            or not np.isfinite(sample_rate) or sample_rate <= 0 or int(sample_rate) != sample_rate):
        raise ParameterError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    fxaudio.check_finite(x)
    x = x.detach().cpu()
    if x.shape[1] > 8:
        raise InvalidAudioError(f"cannot analyze {x.shape[1]}-channel audio (1 to 8 channels supported)")
    x = fxaudio.to_stereo(x.to(torch.float32))
    if int(sample_rate) != fxaudio.WORKING_SAMPLE_RATE:
        x = fxaudio.resample(x, int(sample_rate), fxaudio.WORKING_SAMPLE_RATE)
    if x.shape[-1] < int(MIN_SECONDS * fxaudio.WORKING_SAMPLE_RATE):
        raise InvalidAudioError(f"audio is too short to analyze: {x.shape[-1] / fxaudio.WORKING_SAMPLE_RATE:.3f} s "
                                f"(needs at least {MIN_SECONDS} s)")
    return x.contiguous()


def timed_windows(x: torch.Tensor, sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, seconds: float = WINDOW_S,
                  max_windows: int = MAX_WINDOWS) -> tuple[torch.Tensor, list[float]]:
    """Loudness-normalized, non-silent windows (N, 2, W) of (1, 2, T) audio and where each starts (seconds); clips
    shorter than a window are padded with silence. Raises InvalidAudioError when every window is silent."""
    W = int(round(seconds * sample_rate))
    T = x.shape[-1]
    if T <= W:
        starts = [0]
        x = torch.nn.functional.pad(x, (0, W - T))
    else:
        n = T // W
        starts = [i * W for i in range(n)]
        if n > max_windows:
            starts = [starts[int(round(i))] for i in np.linspace(0, n - 1, max_windows)]
    segs = torch.cat([x[..., s:s + W] for s in starts])
    lufs = fxaudio.integrated_loudness(segs, sample_rate)
    peak = fxaudio.peak_db(segs)
    ok = torch.isfinite(lufs) & (lufs > SILENT_LUFS)
    if not bool(ok.any()):
        raise InvalidAudioError(f"audio is silent (no {seconds:g} s window louder than {SILENT_LUFS:g} LUFS)")
    gain_db = torch.minimum(OUTPUT_LUFS - lufs, OUTPUT_PEAK_DB - peak)[ok]
    kept = [s / sample_rate for s, keep in zip(starts, ok.tolist()) if keep]
    return segs[ok] * torch.pow(10.0, gain_db / 20.0)[:, None, None].to(segs.dtype), kept


def windows(x: torch.Tensor, sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, seconds: float = WINDOW_S,
            max_windows: int = MAX_WINDOWS) -> torch.Tensor:
    """The windows of `timed_windows` without their times."""
    return timed_windows(x, sample_rate, seconds, max_windows)[0]


# ------------------------------------------------------------------------------------------------------------------
# Analysis
# ------------------------------------------------------------------------------------------------------------------


def _fine_choice(aggregated: str, fine: dict[str, float]) -> tuple[str, float]:
    members = {c: p for c, p in fine.items() if c in FXSET_CLASSES and FXSET_CLASSES[c].aggregated == aggregated}
    if members:
        c = max(members, key=members.get)
        return c, members[c]
    # an aggregated-class recognizer: the first fine class of that group stands for it
    default = next(c for c in FXSET_CLASSES if FXSET_CLASSES[c].aggregated == aggregated)
    return default, fine.get(aggregated, 0.0)


def _period_audio(x: torch.Tensor, segs: torch.Tensor) -> torch.Tensor:
    """What the periods are read from: the windows `segs` of `x`, or `x` itself when it is shorter than one window
    (the readers do not depend on the level, and the silence a short clip is padded with would hide its period)."""
    return x if x.shape[-1] < segs.shape[-1] else segs


def window_probabilities(rec, rcfg: dict, segs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The recognizer's inputs and its fine-class probabilities (N, K) for windows (N, 2, W) at the working rate."""
    from fxlens.features.sets import compute_features

    feats = compute_features(segs, fxaudio.WORKING_SAMPLE_RATE, rcfg["feature_set"])
    with torch.no_grad():  # a ResNet recognizer reads the windows' audio too; the MLP ignores it
        return feats, rec.probabilities(feats, segs)


def analyze(audio, sample_rate: int, recognizer=None, estimator=None, threshold: float = 0.5) -> AnalysisResult:
    """Detect the effects on `audio` and estimate their settings.

    Args:
        audio: samples as a torch tensor or numpy array, (T,), (C, T) or (1, C, T), float (or int16/int32 PCM),
            any channel count 1-8.
        sample_rate: its rate in Hz (any; converted to 44.1 kHz).
        recognizer / estimator: checkpoint folders (default: the shipped ``assets/*-small``).
        threshold: probability above which a multi-label recognizer reports an effect.

    Returns:
        `AnalysisResult`: probabilities per aggregated and fine class (averaged over 1.5 s windows), the detected
        effects with settings in physical units, and a preset (dict) that re-creates them.

    Raises:
        InvalidAudioError: NaN/inf samples, silence, shorter than 0.5 s, a bad shape; CheckpointError: a missing
        or wrong-kind checkpoint.
    """
    from fxlens.features.sets import compute_features

    if not 0.0 < float(threshold) < 1.0:
        raise ParameterError(f"threshold must be between 0 and 1, got {threshold}")
    rec, rcfg = load_recognizer(recognizer)
    est, ecfg = load_estimator(estimator)
    val_errors = validation_errors(estimator)
    x = _as_audio(audio, sample_rate)
    duration = x.shape[-1] / fxaudio.WORKING_SAMPLE_RATE
    segs, starts = timed_windows(x)
    feats, p = window_probabilities(rec, rcfg, segs)
    multilabel = bool(rcfg.get("multilabel", False))
    classes = list(rcfg["classes"])
    # per window, then averaged: a multi-label model's groups and "dry" (no effect on) are not linear in p
    per_window = aggregate_probabilities(classes, p.numpy(), multilabel)
    timeline = [{"start_s": round(t, 6), "probabilities": dict(zip(AGGREGATED_CLASSES, row.tolist()))}
                for t, row in zip(starts, per_window)]
    agg = dict(zip(AGGREGATED_CLASSES, per_window.mean(0).tolist()))
    fine = dict(zip(classes, p.mean(0).tolist()))
    fine.setdefault("dry", agg["dry"])
    if multilabel:
        chosen = [a for a in AGGREGATED_CLASSES if a != "dry" and agg[a] >= threshold]
    else:
        top = max(agg, key=agg.get)
        chosen = [] if top == "dry" else [top]
    if est.input_kind == "audio":  # the ResNet-FiLM estimator reads the windows' audio itself
        efeats = segs
    else:
        efeats = (feats if ecfg["feature_set"] == rcfg["feature_set"] else
                  compute_features(segs, fxaudio.WORKING_SAMPLE_RATE, ecfg["feature_set"]))
        if est.input_kind == "features+audio":  # AutoFX-feat: the features and the windows' log-mels
            efeats = est.pack_inputs(efeats, segs)
    period_audio = _period_audio(x, segs)
    detected: list[DetectedEffect] = []
    for a in sorted(chosen, key=CHAIN_ORDER.index):
        fine_class, fp = _fine_choice(a, fine)
        key = est.class_slots.get(fine_class)
        if key is None:
            continue
        info = ecfg["slot_info"][key]
        effect = get_effect(info["effect"], **info["config"])
        with torch.no_grad():
            ctl = est.estimate(efeats, fine_class).mean(0, keepdim=True).double()
        ctl = refine_controls(fine_class, effect, ctl, period_audio, fxaudio.WORKING_SAMPLE_RATE)
        phys = {k: float(np.float32(v[0])) for k, v in effect.to_physical(ctl).items()}
        pinned = {k: lo for k, (lo, hi) in FXSET_CLASSES[fine_class].ranges.items() if lo == hi and k in phys}
        phys.update({k: float(v) for k, v in pinned.items()})
        phys = {s.name: float(s.check(min(max(phys[s.name], s.min), s.max))) for s in effect.specs}
        measured = [REFINEMENTS[fine_class].param] if fine_class in REFINEMENTS else []
        typical, near = _typical_errors(effect, ctl[0], val_errors.get(fine_class, {}), set(measured) | set(pinned))
        detected.append(DetectedEffect(
            aggregated_class=a, probability=agg[a], fine_class=fine_class, fine_probability=fp,
            effect=effect.name, config=effect.config(), settings=phys, units={s.name: s.unit for s in effect.specs},
            controls={s.name: float(c) for s, c in zip(effect.specs, ctl[0])}, measured=measured,
            typical_error=typical, near_class_mean=near))
    preset = preset_from_stages([(get_effect(d.effect, **d.config), d.settings) for d in detected],
                                fxaudio.WORKING_SAMPLE_RATE)
    # the analyzed windows end to end (each at the same loudness, so each counts alike)
    stereo = stereo_image(segs.permute(1, 0, 2).reshape(segs.shape[1], -1), fxaudio.WORKING_SAMPLE_RATE)
    return AnalysisResult(sample_rate=int(sample_rate), duration_s=duration, windows=int(segs.shape[0]),
                          probabilities=agg, fine_probabilities=fine, effects=detected, preset=preset,
                          multilabel=multilabel, stereo=stereo, timeline=timeline)


def analyze_file(path: str | os.PathLike, recognizer=None, estimator=None, threshold: float = 0.5
                 ) -> tuple[AnalysisResult, torch.Tensor]:
    """`analyze` a file (any format `fxlens.audio` reads); returns the result and the 44.1 kHz stereo audio."""
    x, sr = fxaudio.load_with_rate(path, sample_rate=fxaudio.WORKING_SAMPLE_RATE, stereo=True)
    return analyze(x, sr, recognizer=recognizer, estimator=estimator, threshold=threshold), x


# ------------------------------------------------------------------------------------------------------------------
# Figure
# ------------------------------------------------------------------------------------------------------------------


def _plot_timeline(ax, result: AnalysisResult, seconds: float) -> None:
    """Each analyzed window's class probabilities as a column of colour at its place in the recording."""
    names = list(result.probabilities)
    columns, edges = [], [result.timeline[0]["start_s"]]
    for w in result.timeline:
        if w["start_s"] > edges[-1] + 1e-6:  # audio between analyzed windows (silent, or skipped): left blank
            columns.append([np.nan] * len(names))
            edges.append(w["start_s"])
        columns.append([w["probabilities"][k] for k in names])
        edges.append(w["start_s"] + seconds)
    mesh = ax.pcolormesh(np.array(edges), np.arange(len(names) + 1), np.ma.masked_invalid(np.array(columns).T),
                         cmap="viridis", vmin=0, vmax=1, shading="flat")
    ax.set_yticks(np.arange(len(names)) + 0.5, names)
    ax.set(title=f"effect probabilities per {seconds:g} s window", xlabel="time (s)")
    ax.figure.colorbar(mesh, ax=ax, label="probability")


def _plot_stereo(ax, stereo: dict) -> None:
    bands = stereo["bands"]
    ax.bar([f"{b['lo_hz'] / 1000:.2g}-{b['hi_hz'] / 1000:.2g}" for b in bands],
           [b["side_mid_db"] + 60.0 for b in bands], bottom=-60.0, color="tab:cyan")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title=f"stereo image (measured): side/mid energy by band; L/R correlation {stereo['lr_correlation']:.2f}, "
                 f"side/mid {stereo['side_mid_db']:.1f} dB over all", xlabel="band (kHz)", ylabel="side / mid (dB)",
           ylim=(-60, 20))


MIN_RUN = 3
"""Consecutive analyzed windows an effect must pass the threshold in for `heard_in_part` to name it: the shortest
run that named a false effect on fewer than 10 % of 80 dry val stems (2 in a row: 41 %; 3: 8 %; 4: 2 %). On 80
recordings of val stems whose second half went through one effect, the averaged reading found that effect in 42 %,
with these runs in 75 %. Read once on test stems afterwards: 78 % found (averaged alone 35 %), but false names on
30 % of the dry stems — misreadings of an instrument's timbre persist across its windows (docs/analyze.md)."""


def heard_in_part(result: AnalysisResult, threshold: float = 0.5, min_run: int = MIN_RUN) -> list[dict]:
    """Effects heard on part of a recording: not in `result.effects` (their average misses `threshold`), but
    passing it in at least `min_run` consecutive analyzed windows. Per effect: its class, how many windows pass,
    of how many, and the span (s) of its longest run of passing windows; longest runs first."""
    reported = {d.aggregated_class for d in result.effects}
    out = []
    for a in result.probabilities:
        if a == "dry" or a in reported:
            continue
        hits = [w["probabilities"][a] >= threshold for w in result.timeline]
        best, run = (0, 0), 0  # (length, first window) of the longest run
        for k, hit in enumerate(hits):
            run = run + 1 if hit else 0
            if run > best[0]:
                best = (run, k - run + 1)
        if best[0] >= min_run:
            first, last = result.timeline[best[1]], result.timeline[best[1] + best[0] - 1]
            out.append({"aggregated_class": a, "windows": int(sum(hits)), "of": len(hits), "run": best[0],
                        "from_s": first["start_s"], "to_s": last["start_s"] + WINDOW_S})
    return sorted(out, key=lambda h: (-h["run"], -h["windows"]))


def plot_analysis(result: AnalysisResult, x: torch.Tensor, path: str | os.PathLike,
                  sample_rate: int = fxaudio.WORKING_SAMPLE_RATE) -> Path:
    """Write a figure: the log spectrogram of (1, C, T) audio, the class probabilities (averaged, and per window when
    there are several), the stereo image (side/mid by band) and — when detected — the estimated EQ curve
    (`fxlens.fx.filters.magnitude_db`), the compressor's static curve (`fxlens.fx.dynamics.static_gain_db`) and,
    for each setting read from the audio, the score it maximized (envelope or pitch periodogram, cepstrum) around
    the reported value. Written atomically; the format comes from the extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fxlens.atomic import atomic_path
    from fxlens.features.spectral import stft_magnitude

    by_effect = {d.effect: d for d in result.effects}
    extra = [k for k in ("parametric_eq", "compressor") if k in by_effect]
    measured = [d for d in result.effects if d.measured and d.fine_class in REFINEMENTS]
    timeline = len(result.timeline) > 1
    n = 2 + timeline + bool(result.stereo) + len(extra) + len(measured)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.8 * n), constrained_layout=True)
    mono = x[:, :, : int(30 * sample_rate)].mean(1)
    S = stft_magnitude(mono, 2048, 512)[0]
    db = 20 * torch.log10(S.clamp_min(1e-6))
    db = db.clamp_min(db.max() - 90)
    ax = axes[0]
    ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
              extent=(0, mono.shape[-1] / sample_rate, 0, sample_rate / 2000))
    ax.set(title="spectrogram (first 30 s)", xlabel="time (s)", ylabel="frequency (kHz)")
    ax = axes[1]
    names = list(result.probabilities)
    ax.bar(names, [result.probabilities[k] for k in names],
           color=["tab:red" if any(d.aggregated_class == k for d in result.effects) else "tab:gray" for k in names])
    ax.set(title="effect probabilities (red: detected)", ylim=(0, 1), ylabel="probability")
    ax.tick_params(axis="x", labelsize=8)
    i = 2
    if timeline:
        _plot_timeline(axes[i], result, WINDOW_S)
        i += 1
    if result.stereo:
        _plot_stereo(axes[i], result.stereo)
        i += 1
    if "parametric_eq" in by_effect:
        from fxlens.fx.filters import magnitude_db

        d = by_effect["parametric_eq"]
        eff = get_effect("parametric_eq", **d.config)
        b, a = eff.coefficients(sample_rate, **{k: torch.tensor([v], dtype=torch.float64)
                                                for k, v in d.settings.items()})
        f = torch.logspace(np.log10(20.0), np.log10(20000.0), 400, dtype=torch.float64)
        ax = axes[i]
        ax.semilogx(f.numpy(), magnitude_db(b, a, f, sample_rate)[0].numpy(), color="tab:blue")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(title="estimated EQ curve", xlabel="frequency (Hz)", ylabel="gain (dB)", xlim=(20, 20000))
        i += 1
    if "compressor" in by_effect:
        from fxlens.fx.dynamics import static_gain_db

        d = by_effect["compressor"].settings
        lvl = torch.linspace(-80, 0, 400, dtype=torch.float64)
        out = lvl + static_gain_db(lvl, d["threshold_db"], d["ratio"], d["knee_db"]) + d.get("makeup_db", 0.0)
        ax = axes[i]
        ax.plot(lvl.numpy(), out.numpy(), color="tab:green", label="estimated")
        ax.plot(lvl.numpy(), lvl.numpy(), color="k", lw=0.5, ls="--", label="1:1")
        ax.set(title=f"compressor static curve (threshold {d['threshold_db']:.1f} dB, ratio {d['ratio']:.1f}:1)",
               xlabel="input level (dB)", ylabel="output level (dB)")
        ax.legend()
        i += 1
    if measured:
        segs = _period_audio(x, windows(x, sample_rate))
    for d in measured:  # the score each period was read from, pooled over the windows as `analyze` pooled it
        ref = REFINEMENTS[d.fine_class]
        spec = next(s for s in get_effect(d.effect, **d.config).specs if s.name == ref.param)
        value = d.settings[ref.param]
        values, score = ref.scores(segs, sample_rate, *ref.band(value, spec))
        ax = axes[i]
        ax.plot(values.numpy(), score.sum(0).numpy(), color="tab:purple")
        ax.axvline(value, color="k", lw=0.8, ls="--", label=f"reported {value:.4g} {d.units[ref.param]}")
        ax.set(title=f"{d.fine_class}: {ref.param} read from the audio ({ref.method}, summed over windows)",
               xlabel=f"{ref.param} ({d.units[ref.param]})", ylabel="score")
        ax.legend()
        i += 1
    out_path = Path(path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=out_path.suffix.lstrip(".").lower() or "png", dpi=100)
    plt.close(fig)
    return out_path

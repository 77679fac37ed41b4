"""`fxlens train estimator`: estimate an effect's settings from the processed clip alone (AutoFX §5.3).

Three models (`--model`), one layout and one loss (`fxlens.models.estimator`):

- ``mlp`` (default; the shipped ``estimator-small``): the clip's features (`fxlens.train.inputs.split_features`,
  cached) and a one-hot of its fine class, through an MLP;
- ``resnet``: the clip's stereo log-mel spectrogram (`fxlens.train.inputs.split_log_mels`, cached) through a small
  ResNet whose FiLM layers are driven by the class vector (one-hot in training; a recognizer's probabilities can
  be given at inference, as AutoFX does);
- ``resnet-features``: both: the ResNet with the clip's features joined before its head (AutoFX-feat, the
  paper's best in its Table C.2).

Training data: the single-effect clips of an `fxlens data fxset` folder (dry and chain clips are left out). For each
clip the target is the normalized controls of its effect (the fxset labels record them). The loss is the L1
distance on the active effect's controls only (`fxlens.models.estimator.masked_l1`). Selected on val; reported on
test and ood, per parameter, beside two baselines that need no model:

- **random**: a control drawn uniformly in [0, 1] (the effect's whole declared range). Its expected absolute error
  against a target ``t`` is exact, ``(t^2 + (1 - t)^2) / 2``, so no random draw enters the figure.
- **class mean**: the mean train control of the clip's class (what a model that ignores the audio can do best in
  L2; a strong baseline because each class only covers a sub-range of the effect).

Parameters that a class fixes (e.g. the distortion classes' mix = 1, vibrato's feedback = 0) are predicted but
left out of the averages: their error says nothing about listening; when audio is rendered from an estimate they
take the class's fixed value (as `fxlens analyze` does).

Spectral fine-tuning (``finetune_steps > 0``, either model, after supervised training or from ``init``): each step
renders the estimated controls through the class's fxlens effect (differentiable: exact gradients, not AutoFX's
SPSA) on the clip's dry source — re-read from the stem dataset with the offset the label records and normalized to
the fxset's input loudness — and minimizes auraloss's multi-resolution STFT loss against the wet clip (level
matched: clips are loudness-normalized after processing), plus ``param_weight`` x the masked L1 parameter loss
that anchors the estimates. Parameter MAE and the MRSTFT of re-rendered estimates (`spectral_scores`: beside the
dry source, random controls, class-mean controls and the true controls) are reported before and after.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fxlens import audio
from fxlens.data.fxset import FXSET_CLASSES, INPUT_LUFS, read_labels
from fxlens.errors import CheckpointError, FxlensError
from fxlens.features.sets import FEATURE_SET, FEATURE_SETS, check_feature_set
from fxlens.fx.effect import get_effect
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.estimator import (MelResNetEstimator, ParameterEstimator, SlotEstimator, masked_l1,
                                     refine_controls, slot_key)
from fxlens.train.inputs import load_clip, split_features, split_log_mels
from fxlens.train import command_line

MODELS = ("mlp", "resnet", "resnet-features")
SPECTRAL_SPLITS = ("test",)  # where training scores re-rendered estimates (the benchmark adds ood)
SPLITS = ("train", "val", "test", "ood")


def fixed_parameters(class_name: str) -> set[str]:
    """Parameters that an fxset class pins to one value (low == high in its sub-range)."""
    return {k for k, (lo, hi) in FXSET_CLASSES[class_name].ranges.items() if lo == hi}


def _single_effect(labels: list[dict]) -> list[int]:
    return [i for i, r in enumerate(labels)
            if len(r.get("fine_labels", [])) == 1 and r.get("preset") and len(r["preset"]["effects"]) == 1]


def build_layout(labels: list[dict]) -> tuple[list[str], list[tuple[str, int]], dict[str, str | None], dict]:
    """Classes (sorted fine classes with an effect, plus 'dry'), slots, class -> slot and slot -> (effect, config)
    from the train labels.

    A class's slot is its effect under the class's own configuration (`FXSET_CLASSES`), not the configuration each
    clip was rendered with: a set built with ``--randomize-internals`` draws internals per clip (a chorus's sweep,
    a drive's amplifier stages), which change the sound but not the parameters the estimator predicts. Re-rendering
    a clip's estimate uses the clip's own configuration (`ClipEffects`).
    """
    classes, slot_of, slot_info = set(), {}, {}
    for i in _single_effect(labels):
        r = labels[i]
        e = r["preset"]["effects"][0]
        cls = FXSET_CLASSES.get(r["fine_class"])
        name, cfg = ((cls.effect, dict(cls.config)) if cls is not None and cls.effect == e["name"]
                     else (e["name"], e.get("config") or {}))
        key = slot_key(name, cfg)
        slot_info[key] = (name, cfg)
        if slot_of.setdefault(r["fine_class"], key) != key:
            raise FxlensError(f"class '{r['fine_class']}' uses two effect configurations; cannot build slots")
        classes.add(r["fine_class"])
    if not classes:
        raise FxlensError("no single-effect clips with presets in the train split (is this an fxlens fxset?)")
    classes_list = sorted(classes) + ["dry"]
    slot_of["dry"] = None
    slots = [(k, get_effect(n, **cfg).n_params) for k, (n, cfg) in sorted(slot_info.items())]
    return classes_list, slots, slot_of, {k: {"effect": n, "config": c} for k, (n, c) in slot_info.items()}


class ClipEffects:
    """The fxlens effect each single-effect clip was rendered with (its preset's name and configuration), built once
    per configuration."""

    def __init__(self) -> None:
        self._built: dict[str, object] = {}

    @staticmethod
    def key(label: dict) -> str:
        e = label["preset"]["effects"][0]
        return slot_key(e["name"], e.get("config") or {})

    def __call__(self, label: dict):
        k = self.key(label)
        if k not in self._built:
            e = label["preset"]["effects"][0]
            self._built[k] = get_effect(e["name"], **(e.get("config") or {}))
        return self._built[k]


def targets(model: SlotEstimator, labels: list[dict], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor, list[str], list[int]]:
    """(targets (N, P), mask (N, P), one-hot (N, K), class names, kept label indices) of the clips `idx`; clips of
    unknown classes or without an effect are dropped."""
    keep = [i for i in idx if labels[i]["fine_class"] in model.class_slots
            and model.class_slots[labels[i]["fine_class"]] is not None]
    t = torch.zeros(len(keep), model.n_outputs)
    m = torch.zeros(len(keep), model.n_outputs)
    names = []
    for j, i in enumerate(keep):
        r = labels[i]
        a, b = model.offsets[model.class_slots[r["fine_class"]]]
        ctl = r["controls"][0]["controls"]
        if len(ctl) != b - a:
            raise FxlensError(f"clip {r['clip_id']}: {len(ctl)} controls, its effect has {b - a}")
        t[j, a:b] = torch.tensor(ctl)
        m[j, a:b] = 1.0
        names.append(r["fine_class"])
    return t, m, model.one_hot(names) if names else torch.zeros(0, len(model.classes)), names, keep


def _param_names(model: SlotEstimator, slot_info: dict) -> dict[str, list[str]]:
    return {k: get_effect(slot_info[k]["effect"], **slot_info[k]["config"]).param_names for k, _ in model.slots}


# ------------------------------------------------------------------------------------------------------------------
# Inputs: features (MLP) or log-mel spectrograms (ResNet), one row per label
# ------------------------------------------------------------------------------------------------------------------


def split_inputs(model: SlotEstimator, config: dict, fxset: str | os.PathLike, split: str,
                 rows: list[int] | None = None, progress: Callable[[int, int], None] | None = None,
                 workers: int = 1) -> tuple[torch.Tensor, list[dict]]:
    """What `model` reads for every clip of a split, one row per label: features (MLP), log-mels (ResNet) or both
    packed (`MelResNetEstimator.pack_inputs`), computed by `workers` processes where not cached."""
    if model.input_kind == "features":
        return split_features(fxset, split, progress=progress, feature_set=config["feature_set"], workers=workers)
    mels, labels = split_log_mels(fxset, split, model, rows=rows, progress=progress, workers=workers)
    if model.input_kind == "audio":
        return mels, labels
    features, _ = split_features(fxset, split, progress=progress, feature_set=config["feature_set"], workers=workers)
    return model.pack_inputs(features, mels), labels


def predict(model: SlotEstimator, inputs: torch.Tensor, cond: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Model outputs (N, P) in batches, without gradients."""
    model.eval()
    with torch.no_grad():
        outs = [model(inputs[i:i + batch], cond[i:i + batch]) for i in range(0, len(inputs), batch)]
    return torch.cat(outs) if outs else torch.zeros(0, model.n_outputs)


def evaluate(model: SlotEstimator, features: torch.Tensor, labels: list[dict], slot_info: dict,
             class_mean: dict[str, torch.Tensor] | None = None) -> dict:
    """Per class and parameter: MAE of the model, of uniform random controls (exact expectation) and of the class
    mean; plus averages over the non-fixed parameters. `features`: the model's inputs, one row per label."""
    idx = _single_effect(labels)
    t, m, onehot, names, keep = targets(model, labels, idx)
    if not names:
        return {"clips": 0}
    pred = predict(model, features[keep], onehot)
    pnames = _param_names(model, slot_info)
    per_class: dict = {}
    all_model, all_random, all_mean = [], [], []
    for c in sorted(set(names)):
        rows = [j for j, n in enumerate(names) if n == c]
        key = model.class_slots[c]
        a, b = model.offsets[key]
        tt, pp = t[rows, a:b], pred[rows, a:b]
        fixed = fixed_parameters(c)
        params = {}
        for k, pn in enumerate(pnames[key]):
            mae = float((pp[:, k] - tt[:, k]).abs().mean())
            rnd = float(((tt[:, k] ** 2 + (1 - tt[:, k]) ** 2) / 2).mean())
            cm = float((class_mean[c][k] - tt[:, k]).abs().mean()) if class_mean is not None else None
            params[pn] = {"model": mae, "random": rnd, "class_mean": cm, "fixed": pn in fixed}
            if pn not in fixed:
                all_model.append(mae)
                all_random.append(rnd)
                if cm is not None:
                    all_mean.append(cm)
        free = [v for v in params.values() if not v["fixed"]]
        per_class[c] = {
            "clips": len(rows), "effect": slot_info[key]["effect"], "params": params,
            "model": float(np.mean([v["model"] for v in free])) if free else None,
            "random": float(np.mean([v["random"] for v in free])) if free else None,
            "class_mean": float(np.mean([v["class_mean"] for v in free])) if free and class_mean is not None else None,
        }
    return {"clips": len(names), "per_class": per_class,
            "mean": {"model": float(np.mean(all_model)), "random": float(np.mean(all_random)),
                     "class_mean": float(np.mean(all_mean)) if all_mean else None}}


# ------------------------------------------------------------------------------------------------------------------
# Re-rendering estimates through fxlens's effects: dry sources, the spectral loss, fine-tuning, MRSTFT scores
# ------------------------------------------------------------------------------------------------------------------


class DrySources:
    """The dry source of an fxset clip, as the fxset rendered it: the stem segment its label records (song, instrument,
    offset, length), normalized to the set's input loudness (`fxlens.data.fxset.INPUT_LUFS`), (1, 2, T).

    `stems`: the stem dataset's folder; default: the one the label records (``song_path``'s grandparent).
    """

    def __init__(self, stems: str | os.PathLike | None = None, sample_rate: int = audio.WORKING_SAMPLE_RATE) -> None:
        self.stems = None if stems is None else Path(stems)
        self.sample_rate = int(sample_rate)
        self._songs: dict[Path, dict] = {}

    def _dataset(self, root: Path):
        if root not in self._songs:
            from fxlens.data.stems import open_dataset

            if not root.is_dir():
                raise FxlensError(f"the dry stems of this fxset are not at '{root}' (pass the stem dataset folder: "
                                  "--stems DIR)")
            ds = open_dataset(root)
            self._songs[root] = (ds, {s.song_id: s for s in ds.songs()})
        return self._songs[root]

    def load(self, record: dict) -> torch.Tensor:
        if "song_path" not in record or "offset_s" not in record:
            raise FxlensError(f"clip {record.get('clip_id')}: its label records no source (not an fxlens fxset?)")
        root = self.stems if self.stems is not None else Path(record["song_path"]).parents[1]
        ds, songs = self._dataset(root)
        ref = songs.get(record["song_id"])
        if ref is None:
            raise FxlensError(f"clip {record['clip_id']}: song '{record['song_id']}' is not in the stems at '{root}'")
        x = ds.load_stem(ref, record["instrument"], self.sample_rate, float(record["offset_s"]),
                         float(record["seconds"]))
        return audio.normalize_loudness(x, self.sample_rate, INPUT_LUFS)

    def check(self, records: list[dict], what: str = "these labels") -> None:
        """Load the first single-effect clip's source: fails before a long run when the stems are not where the
        labels say (or `records` has no single-effect clip)."""
        first = _single_effect(records)
        if not first:
            raise FxlensError(f"no single-effect clips in {what}")
        self.load(records[first[0]])


def _fixed_controls(class_name: str, effect) -> dict[int, float]:
    """{control index: normalized value} of the parameters that `class_name` pins (`fixed_parameters`)."""
    if class_name not in FXSET_CLASSES:
        return {}
    ranges = FXSET_CLASSES[class_name].ranges
    out = {}
    for k in fixed_parameters(class_name):
        i = effect.param_names.index(k)
        out[i] = float(effect.specs[i].to_normalized(torch.tensor(float(ranges[k][0]), dtype=torch.float64)))
    return out


def render_controls(effect, class_name: str, dry: torch.Tensor, controls: torch.Tensor, sample_rate: int
                    ) -> torch.Tensor:
    """`dry` (B, C, T) through `effect` with normalized `controls` (B, P), the class's fixed parameters pinned to
    their value (as `fxlens analyze` reports them); differentiable in `controls`."""
    fixed = _fixed_controls(class_name, effect)
    if fixed:
        controls = controls.clone()
        for i, v in fixed.items():
            controls[:, i] = v
    return effect(dry, sample_rate, controls)


def match_level(y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`y` (B, C, T) scaled, per item, to the RMS of `reference`: fxset clips are loudness-normalized after
    processing, so level says nothing about the settings (differentiable in `y`)."""
    rms = lambda v: v.square().mean(dim=(1, 2), keepdim=True).add(1e-12).sqrt()  # noqa: E731
    return y * (rms(reference) / rms(y))


def mrstft_loss():
    """auraloss's multi-resolution STFT loss with its defaults (FFT 512/1024/2048, spectral convergence + log
    magnitude)."""
    from auraloss.freq import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss()


def mrstft_per_clip(loss, y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) MRSTFT of each item after `match_level` (auraloss's spectral convergence is a batch-level ratio, so
    items go one at a time)."""
    y = match_level(y, reference)
    return torch.stack([loss(y[i:i + 1], reference[i:i + 1]) for i in range(y.shape[0])])


def spectral_finetune_loss(model: SlotEstimator, inputs: torch.Tensor, class_name: str, dry: torch.Tensor,
                           wet: torch.Tensor, effect, loss, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean MRSTFT of the re-rendered estimate against `wet`, the model's outputs (B, n_outputs)) for clips of one
    class: `inputs` the model's inputs, `dry`/`wet` (B, C, T). Gradients reach the model through the effect."""
    a, b = model.slot_range(class_name)
    out = model(inputs, model.one_hot([class_name] * inputs.shape[0]))
    y = render_controls(effect, class_name, dry, out[:, a:b], sample_rate)
    return mrstft_per_clip(loss, y, wet).mean(), out


def _clips_per_class(labels: list[dict], model: SlotEstimator, per_class: int) -> list[int]:
    """The first `per_class` single-effect clips of every class the model estimates, in label order."""
    return _subset_per_class(labels, _estimated_clips(labels, model), per_class)


def _estimated_clips(labels: list[dict], model: SlotEstimator) -> list[int]:
    """The single-effect clips of the classes that `model` estimates (an effect slot), in label order."""
    return [i for i in _single_effect(labels) if model.class_slots.get(labels[i]["fine_class"]) is not None]


def spectral_scores(models: dict[str, SlotEstimator], inputs: torch.Tensor, labels: list[dict], fxset,
                    slot_info: dict, class_mean: dict[str, torch.Tensor] | None = None, per_class: int = 10,
                    dry_sources: DrySources | None = None, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None, refine: bool = False) -> dict:
    """MRSTFT distance to the wet clip of audio re-rendered from each model's estimate, on the first `per_class`
    clips of each class of a split, beside references: the dry source, uniform random controls (one seeded draw
    per clip), the class-mean controls and the true controls (about 0: the set re-renders exactly). Every render
    is level-matched to the wet clip. Also the mean estimated controls per class and model, with the true mean (to
    see a collapse toward the dry sound: mix, depth, drive going to 0), and each model's mean absolute control
    error per parameter on these clips.

    `models`: {name: estimator} sharing one slot layout (e.g. {"before": ..., "after": ...}); `inputs`: their
    inputs, one row per label. `refine`: also score each model's estimate after `refine_controls` on the wet clip
    (as ``"<name> refined"``; the same controls as the model's except for the classes it refines), as `fxlens
    analyze` reports them.
    """
    first = next(iter(models.values()))
    dry_sources = dry_sources or DrySources()
    clip_effect = ClipEffects()
    pnames = _param_names(first, slot_info)
    loss = mrstft_loss()
    sr = audio.WORKING_SAMPLE_RATE
    idx = _clips_per_class(labels, first, per_class)
    g = torch.Generator().manual_seed(seed)
    refs = ["dry", "random"] + (["class_mean"] if class_mean else []) + ["truth"]
    estimates = [m for name in models for m in ([name, f"{name} refined"] if refine else [name])]
    scores: dict[str, dict[str, list[float]]] = {}
    controls: dict[str, dict[str, list[torch.Tensor]]] = {}
    for n, i in enumerate(idx):
        r = labels[i]
        c = r["fine_class"]
        key = first.class_slots[c]
        effect = clip_effect(r)
        a, b = first.offsets[key]
        dry = dry_sources.load(r)
        wet = load_clip(fxset, r, sr)
        truth = torch.tensor([r["controls"][0]["controls"]], dtype=torch.float32)
        cands = {"random": torch.rand(1, b - a, generator=g), "truth": truth}
        if class_mean:
            cands["class_mean"] = class_mean[c].float()[None]
        cond = first.one_hot([c])
        for name, model in models.items():
            cands[name] = predict(model, inputs[i:i + 1], cond)[:, a:b]
            if refine:
                cands[f"{name} refined"] = refine_controls(c, effect, cands[name], wet, sr)
        row = scores.setdefault(c, {})
        with torch.no_grad():
            row.setdefault("dry", []).append(float(mrstft_per_clip(loss, dry, wet)[0]))
            rendered: list[tuple[torch.Tensor, float]] = []
            for name, ctl in cands.items():
                # a refinement that changed nothing renders the same audio: reuse its score
                d = next((v for prev, v in rendered if torch.equal(prev, ctl)), None)
                if d is None:
                    d = float(mrstft_per_clip(loss, render_controls(effect, c, dry, ctl, sr), wet)[0])
                    rendered.append((ctl, d))
                row.setdefault(name, []).append(d)
        ctl_row = controls.setdefault(c, {})
        for name in ["truth", *estimates]:
            ctl_row.setdefault(name, []).append(cands[name][0])
        if progress:
            progress(n + 1, len(idx))
    names = refs + estimates
    per_cls = {}
    for c, row in scores.items():
        key = first.class_slots[c]
        free = [j for j, p in enumerate(pnames[key]) if p not in fixed_parameters(c)]
        truth = torch.stack(controls[c]["truth"])
        per_cls[c] = {"clips": len(row["dry"]), "effect": slot_info[key]["effect"],
                      "mrstft": {k: float(np.mean(row[k])) for k in names},
                      "mean_controls": {k: dict(zip(pnames[key], torch.stack(v).mean(0).tolist()))
                                        for k, v in controls[c].items()},
                      "control_mae": {k: {pnames[key][j]: float((torch.stack(controls[c][k]) - truth)[:, j].abs()
                                                                .mean()) for j in free} for k in estimates}}
    mean = {k: float(np.mean([v["mrstft"][k] for v in per_cls.values()])) for k in names} if per_cls else {}
    return {"clips": len(idx), "per_class": per_cls, "mean": mean, "references": refs, "models": estimates}


def finetune_spectral(model: SlotEstimator, inputs: torch.Tensor, labels: list[dict], fxset,
                      steps: int, batch: int = 8, lr: float = 1e-4, param_weight: float = 0.1, seed: int = 0,
                      dry_sources: DrySources | None = None, progress: Callable[[str, int, int], None] | None = None,
                      log: Callable[[str], None] | None = None) -> list[dict]:
    """Fine-tune `model` in place on the train clips `labels` (inputs one row per label): each step draws `batch`
    single-effect clips, renders their estimated controls through the class's effect on the dry source and
    minimizes MRSTFT(render, wet) + `param_weight` x masked L1 to the true controls. Batch norm statistics and
    dropout stay in eval mode (batches are small). Returns the per-step history."""
    dry_sources = dry_sources or DrySources()
    clip_effect = ClipEffects()
    loss_fn = mrstft_loss()
    sr = audio.WORKING_SAMPLE_RATE
    pool = _estimated_clips(labels, model)
    if not pool:
        raise FxlensError("no single-effect train clips to fine-tune on")
    t_all, m_all, *_ = targets(model, labels, pool)  # one row per clip of `pool`, in its order
    row_of = {i: j for j, i in enumerate(pool)}
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    t0 = time.perf_counter()
    for step in range(steps):
        model.eval()
        chosen = [pool[k] for k in rng.choice(len(pool), size=min(batch, len(pool)), replace=False)]
        groups: dict[tuple[str, str], list[int]] = {}  # clips of one class rendered with one configuration
        for i in chosen:
            groups.setdefault((labels[i]["fine_class"], ClipEffects.key(labels[i])), []).append(i)
        spec_terms, preds, tgt_rows = [], [], []
        for (c, _), rows in groups.items():
            dry = torch.cat([dry_sources.load(labels[i]) for i in rows])
            wet = torch.cat([load_clip(fxset, labels[i], sr) for i in rows])
            spec, out = spectral_finetune_loss(model, inputs[rows], c, dry, wet, clip_effect(labels[rows[0]]),
                                               loss_fn, sr)
            spec_terms.append(spec * len(rows))
            preds.append(out)
            tgt_rows += [row_of[i] for i in rows]
        spec = torch.stack(spec_terms).sum() / len(chosen)
        param = masked_l1(torch.cat(preds), t_all[tgt_rows], m_all[tgt_rows])
        total = spec + param_weight * param
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({"step": step + 1, "mrstft": float(spec.detach()), "param_l1": float(param.detach())})
        if progress:
            progress("fine-tuning", step + 1, steps)
        if log and ((step + 1) % 10 == 0 or step + 1 == steps):
            recent = history[-10:]
            log(f"fine-tune step {step + 1}/{steps}: MRSTFT {np.mean([h['mrstft'] for h in recent]):.4f}, "
                f"param L1 {np.mean([h['param_l1'] for h in recent]):.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    return history


# ------------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------------


def build_estimator(config: dict) -> SlotEstimator:
    """The (untrained) network a checkpoint config describes: ``config["model"]`` "mlp" (default), "resnet" or
    "resnet-features"."""
    kind = config.get("model", "mlp")
    layout = (config["classes"], [tuple(s) for s in config["slots"]], config["class_slots"])
    if kind == "mlp":
        return ParameterEstimator(*layout, n_features=int(config["n_features"]), hidden=tuple(config["hidden"]))
    if kind in ("resnet", "resnet-features"):
        r = config["resnet"]
        return MelResNetEstimator(*layout, sample_rate=int(config["sample_rate"]), channels=tuple(r["channels"]),
                                  n_mels=int(r["n_mels"]), n_fft=int(r["n_fft"]), hop=int(r["hop"]),
                                  audio_channels=int(r["audio_channels"]), hidden=int(r["hidden"]),
                                  n_features=int(config.get("n_features", 0)) if kind == "resnet-features" else 0)
    raise CheckpointError(f"unknown estimator model '{kind}' in the checkpoint config (known: {', '.join(MODELS)})")


def _subset_per_class(labels: list[dict], idx: list[int], max_per_class: int | None) -> list[int]:
    if max_per_class is None:
        return idx
    taken: dict[str, int] = {}
    out = []
    for i in idx:
        c = labels[i]["fine_class"]
        if taken.get(c, 0) < max_per_class:
            taken[c] = taken.get(c, 0) + 1
            out.append(i)
    return out


def train_estimator(
    fxset: str | os.PathLike,
    out: str | os.PathLike,
    feature_set: str = FEATURE_SET,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 1e-2,
    hidden: tuple[int, ...] = (512, 512),
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    model: str | None = None,
    channels: tuple[int, ...] = (16, 32, 64),
    n_mels: int = 64,
    hop: int = 1024,
    batch_size: int | None = None,
    max_train_per_class: int | None = None,
    init: str | os.PathLike | None = None,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-4,
    finetune_batch: int = 8,
    param_weight: float = 0.1,
    spectral_clips: int | None = None,
    stems: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    workers: int = 1,
) -> dict:
    """Train on train, select on val MAE, optionally fine-tune with the spectral loss, evaluate on val/test/ood,
    save `out/` (weights, config, model card, metrics.json).

    Args:
        model: "mlp" (features; default), "resnet" (log-mel ResNet with FiLM) or "resnet-features" (both,
            AutoFX-feat); with `init`, the checkpoint's.
        feature_set, hidden: the input features (MLP, resnet-features) and the MLP's hidden widths.
        channels, n_mels, hop: the ResNet's stage widths, mel bands and STFT hop (FFT 2048; hop 1024 = 23 ms frames,
            half the cost of the encoder's 512 on a CPU).
        lr, batch_size: supervised training (default 3e-4 / 128 for the MLP, 1e-3 / 64 for the ResNet).
        max_train_per_class: train on at most this many clips of each class (the first ones; None: all).
        init: start from this estimator checkpoint (its model and layout); `epochs` may then be 0.
        finetune_steps, finetune_lr, finetune_batch, param_weight: the spectral fine-tuning stage (0: none).
        spectral_clips: clips per class of test for the MRSTFT of re-rendered estimates (default 10 when
            fine-tuning, else 0: none). Test only: rendering is the slow part; `fxlens bench recognition
            --mrstft-clips` scores test and ood.
        stems: the dry stem dataset (default: where the labels say it is); needed for fine-tuning and MRSTFT.
        log: called with a line of text per epoch / 10 fine-tuning steps.
        workers: processes computing the inputs of clips not yet cached (the results do not depend on it).
    """
    if model is not None and model not in MODELS:
        raise FxlensError(f"unknown estimator model '{model}' (use one of: {', '.join(MODELS)})")
    check_feature_set(feature_set)
    if epochs < (0 if init is not None else 1):
        raise FxlensError("epochs must be >= 1 (>= 0 with --init)")
    if finetune_steps < 0 or (spectral_clips is not None and spectral_clips < 0):
        raise FxlensError("fine-tuning steps and spectral clips must be >= 0")
    if finetune_batch < 1 or hop < 1 or n_mels < 1:
        raise FxlensError("the fine-tuning batch, the hop and the mel bands must be >= 1")
    if max_train_per_class is not None and max_train_per_class < 1:
        raise FxlensError("the train clips per class must be >= 1")
    spectral_clips = (10 if finetune_steps > 0 else 0) if spectral_clips is None else int(spectral_clips)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    say = log or (lambda line: None)

    lab_tr = read_labels(fxset, "train")
    if init is not None:
        net, config = load_estimator(init)
        if model is not None and model != config.get("model", "mlp"):
            raise FxlensError(f"--model {model} but the --init checkpoint holds a '{config.get('model', 'mlp')}'")
        config = dict(config)
        kind = config.get("model", "mlp")
        net.train()
    else:
        kind = model or "mlp"
        classes, slots, class_slots, slot_info = build_layout(lab_tr)
        config = {"kind": "estimator", "model": kind, "classes": classes, "slots": [list(s) for s in slots],
                  "class_slots": class_slots, "slot_info": slot_info, "sample_rate": audio.WORKING_SAMPLE_RATE}
        if kind == "mlp":
            config.update({"feature_set": feature_set, "n_features": len(FEATURE_SETS[feature_set][1]),
                           "hidden": list(hidden)})
        else:
            if kind == "resnet-features":
                config.update({"feature_set": feature_set, "n_features": len(FEATURE_SETS[feature_set][1])})
            config.update({"input": "audio" if kind == "resnet" else "features+audio",
                           "resnet": {"channels": list(channels), "n_mels": int(n_mels), "n_fft": 2048,
                                      "hop": int(hop), "audio_channels": 2, "hidden": 128}})
        net = build_estimator(config)
    slot_info = config["slot_info"]
    lr = lr if lr is not None else (3e-4 if kind == "mlp" else 1e-3)
    batch_size = batch_size or (128 if kind == "mlp" else 64)
    dry_sources = DrySources(stems)
    if finetune_steps > 0 or spectral_clips > 0:  # fail before training, not after
        dry_sources.check(lab_tr, "the train split")

    def inputs(split, rows=None):  # a missing val/test/ood split is skipped by the caller; bad clips raise
        cb = (lambda d, n: progress(f"inputs {split}", d, n)) if progress else None
        return split_inputs(net, config, fxset, split, rows=rows, progress=cb, workers=workers)

    idx_tr = _subset_per_class(lab_tr, _single_effect(lab_tr), max_train_per_class)
    t_tr, m_tr, oh_tr, names_tr, keep_tr = targets(net, lab_tr, idx_tr)
    if not names_tr:
        raise FxlensError("no single-effect train clips of the estimator's classes")
    say(f"{kind} estimator: {len(names_tr)} train clips; reading inputs")
    x_all, _ = inputs("train", keep_tr)
    data = {"train": (x_all, lab_tr)}
    for s in ("val", "test", "ood"):
        try:
            lab = read_labels(fxset, s)
        except FxlensError:
            data[s] = (torch.zeros(0), [])
            continue
        data[s] = inputs(s, _single_effect(lab))
    x_tr = x_all[keep_tr]
    if kind == "mlp" and init is None:
        config["n_features"] = int(x_tr.shape[1])
        net.set_standardization(x_tr.float())
    elif kind == "resnet-features" and init is None:
        net.set_standardization(x_tr[:, :net.n_features].float())
    class_mean = {}
    for c in set(names_tr):
        rows = [j for j, n in enumerate(names_tr) if n == c]
        a, b = net.offsets[net.class_slots[c]]
        class_mean[c] = t_tr[rows, a:b].mean(0)
    config["class_mean"] = {c: v.tolist() for c, v in class_mean.items()}
    x_val, lab_val = data["val"]
    val = targets(net, lab_val, _single_effect(lab_val)) if lab_val else None
    say(f"inputs ready ({time.perf_counter() - t0:.0f} s)")

    def val_mae() -> float:
        return float(masked_l1(predict(net, x_val[val[4]], val[2]), val[0], val[1]))

    history = []
    best = (float("inf"), None, 0)
    if epochs > 0:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        for epoch in range(epochs):
            net.train()
            perm = torch.randperm(len(x_tr))
            losses = []
            for i in range(0, len(perm), batch_size):
                b = perm[i:i + batch_size]
                if len(b) < 2 and kind != "mlp":
                    continue  # batch norm needs two items
                loss = masked_l1(net(x_tr[b], oh_tr[b]), t_tr[b], m_tr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            sched.step()
            train_loss = float(np.mean(losses)) if losses else float("nan")
            v = val_mae() if val is not None and val[3] else train_loss
            history.append({"epoch": epoch + 1, "loss": train_loss, "val_mae": v})
            if v < best[0]:
                best = (v, {k: x.clone() for k, x in net.state_dict().items()}, epoch + 1)
            say(f"epoch {epoch + 1}/{epochs}: train L1 {train_loss:.4f}, val MAE {v:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
            if progress:
                progress("training", epoch + 1, epochs)
        net.load_state_dict(best[1])
    net.eval()

    metrics: dict = {"model": kind, "feature_set": config.get("feature_set"), "classes": config["classes"],
                     "best_epoch": best[2], "val_mae_all_controls": best[0] if epochs > 0 else None,
                     "init": str(init) if init is not None else None, "splits": {}}
    if kind != "mlp":
        metrics["resnet"] = config["resnet"]
        metrics["parameters"] = int(sum(p.numel() for p in net.parameters()))

    def evaluate_all(m) -> dict:
        return {s: evaluate(m, data[s][0], data[s][1], slot_info, class_mean) for s in ("val", "test", "ood")
                if data[s][1]}

    def spectral_all(models) -> dict:
        out = {}
        for s in SPECTRAL_SPLITS:
            x, lab = data[s]
            if lab and spectral_clips > 0:
                cb = (lambda d, n, s=s: progress(f"MRSTFT {s}", d, n)) if progress else None
                out[s] = spectral_scores(models, x, lab, fxset, slot_info, class_mean, spectral_clips, dry_sources,
                                         seed=seed, progress=cb)
        return out

    if finetune_steps > 0:
        before = copy.deepcopy(net).eval()
        metrics["before_finetune"] = evaluate_all(before)
        say(f"before fine-tuning: test MAE {metrics['before_finetune'].get('test', {}).get('mean', {}).get('model')}")
        ft_hist = finetune_spectral(net, x_all, lab_tr, fxset, finetune_steps, batch=finetune_batch,
                                    lr=finetune_lr, param_weight=param_weight, seed=seed, dry_sources=dry_sources,
                                    progress=progress, log=say)
        metrics["splits"] = evaluate_all(net)
        say("scoring re-rendered estimates (MRSTFT)")
        metrics["finetune"] = {"steps": finetune_steps, "lr": finetune_lr, "batch": finetune_batch,
                               "param_weight": param_weight, "history": ft_hist,
                               "spectral": spectral_all({"before": before, "after": net})}
    else:
        metrics["splits"] = evaluate_all(net)
        if spectral_clips > 0:
            metrics["spectral"] = spectral_all({"model": net})
    metrics["seconds"] = time.perf_counter() - t0
    metrics["train_clips"] = len(names_tr)
    metrics["history"] = history

    command = command_line()
    save_checkpoint(out, net.state_dict(), config, model_card(metrics, fxset, command), metrics)
    return metrics


def load_estimator(folder: str | os.PathLike) -> tuple[SlotEstimator, dict]:
    """(model in eval mode, config) of an estimator checkpoint of either kind (MLP or ResNet, from config.json's
    ``model``; checkpoints without it are MLPs); CheckpointError if it is not one."""
    from fxlens.models.checkpoint import load_model

    return load_model(folder, "estimator", build_estimator)


def results_table(metrics: dict, split: str = "test") -> list[tuple[str, str, int, float, float, float | None]]:
    """Rows (class, effect, clips, model MAE, random MAE, class-mean MAE) of one split, then an 'all' row."""
    ev = metrics["splits"].get(split)
    if not ev or not ev.get("clips"):
        return []
    rows = [(c, v["effect"], v["clips"], v["model"], v["random"], v["class_mean"])
            for c, v in ev["per_class"].items() if v["model"] is not None]
    rows.append(("all", "", ev["clips"], ev["mean"]["model"], ev["mean"]["random"], ev["mean"]["class_mean"]))
    return rows


def spectral_table(scores: dict) -> list[str]:
    """Markdown rows of a `spectral_scores` result: per class, the MRSTFT of each reference and model."""
    cols = scores["references"] + scores["models"]
    lines = ["| class | clips | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for c, v in scores["per_class"].items():
        lines.append(f"| {c} | {v['clips']} | " + " | ".join(f"{v['mrstft'][k]:.3f}" for k in cols) + " |")
    if scores["mean"]:
        lines.append("| all (mean over classes) | " + str(scores["clips"]) + " | "
                     + " | ".join(f"{scores['mean'][k]:.3f}" for k in cols) + " |")
    return lines


def model_card(metrics: dict, fxset, command: str | None) -> str:
    kind = metrics.get("model", "mlp")
    title = {"mlp": "# estimator: effect settings from features (MLP + class one-hot)",
             "resnet": "# estimator: effect settings from the log-mel spectrogram (ResNet + FiLM class conditioning)",
             "resnet-features": "# estimator: effect settings from the log-mel spectrogram and the features "
                                "(ResNet + FiLM class conditioning, features joined before the head: AutoFX-feat)",
             }[kind]
    inputs = (f"- Features: {metrics['feature_set']}" if kind == "mlp" else
              f"- Input: stereo log-mel ({metrics['resnet']['n_mels']} bands)"
              + (f" and features {metrics['feature_set']}" if kind == "resnet-features" else "")
              + f"; ResNet stages {metrics['resnet']['channels']}, {metrics['parameters']} parameters")
    lines = [
        title,
        "",
        f"- Command: `{command or 'fxlens train estimator ' + str(fxset)}`",
        f"- Data: `{fxset}` ({metrics['train_clips']} single-effect train clips; selected on val)",
        f"{inputs}; classes {metrics['classes']}",
        (f"- Best val epoch {metrics['best_epoch']}" if metrics["best_epoch"] else "- No supervised epochs")
        + f"; training time {metrics['seconds']:.0f} s on CPU",
        "- MAE in normalized controls ([0, 1] over each parameter's declared range), parameters the class fixes "
        "left out; random = uniform control (exact expectation), class mean = mean train control of the class.",
        "",
    ]
    if metrics.get("init"):
        lines.insert(4, f"- Started from `{metrics['init']}`")
    ft = metrics.get("finetune")
    if ft:
        lines += [f"## Spectral fine-tuning: {ft['steps']} steps of {ft['batch']} clips, lr {ft['lr']:g}, "
                  f"MRSTFT + {ft['param_weight']:g} x parameter L1", "",
                  "| split | MAE before | MAE after | random | class mean |", "|---|---|---|---|---|"]
        for s, ev in metrics["splits"].items():
            b = metrics["before_finetune"].get(s, {}).get("mean")
            if b and ev.get("mean"):
                cm = ev["mean"]["class_mean"]
                lines.append(f"| {s} | {b['model']:.3f} | {ev['mean']['model']:.3f} | {ev['mean']['random']:.3f} | "
                             + ("-" if cm is None else f"{cm:.3f}") + " |")
        lines.append("")
    spectral = (ft or {}).get("spectral") or metrics.get("spectral") or {}
    for s, sc in spectral.items():
        lines += [f"## MRSTFT of re-rendered estimates, {s} (level-matched; lower is better)", "",
                  *spectral_table(sc), ""]
    for split in ("test", "ood"):
        rows = results_table(metrics, split)
        if not rows:
            continue
        lines += [f"## {split}", "", "| class | effect | clips | model | random | class mean |", "|---|---|---|---|---|---|"]
        for c, e, n, mo, ra, cm in rows:
            lines.append(f"| {c} | {e} | {n} | {mo:.3f} | {ra:.3f} | {cm:.3f} |" if cm is not None
                         else f"| {c} | {e} | {n} | {mo:.3f} | {ra:.3f} | - |")
        lines.append("")
    return "\n".join(lines)

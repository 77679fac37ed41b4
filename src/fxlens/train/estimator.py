"""`fxlens train estimator`: estimate an effect's settings from the processed clip alone (AutoFX §5.3, MLP variant).

Training data: the single-effect clips of an `fxlens data fxset` folder (dry and chain clips are left out). For each
clip the target is the normalized controls of its effect (the fxset labels record them), the input the clip's
features (`fxlens.train.recognizer.split_features`, cached) and a one-hot of its fine class. The loss is the L1
distance on the active effect's controls only (`fxlens.models.estimator.masked_l1`). Selected on val; reported on
test and ood, per parameter, beside two baselines that need no model:

- **random**: a control drawn uniformly in [0, 1] (the effect's whole declared range). Its expected absolute error
  against a target ``t`` is exact, ``(t^2 + (1 - t)^2) / 2``, so no random draw enters the figure.
- **class mean**: the mean train control of the clip's class (what a model that ignores the audio can do best in
  L2; a strong baseline because each class only covers a sub-range of the effect).

Parameters that a class fixes (e.g. the distortion classes' mix = 1, vibrato's feedback = 0) are predicted but
left out of the averages: their error says nothing about listening.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from fxlens import audio
from fxlens.data.fxset import FXSET_CLASSES
from fxlens.errors import FxlensError
from fxlens.fx.effect import get_effect
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.estimator import ParameterEstimator, masked_l1, slot_key
from fxlens.train.recognizer import FEATURE_SET, FEATURE_SETS, split_features
from fxlens.train import command_line

SPLITS = ("train", "val", "test", "ood")


def fixed_parameters(class_name: str) -> set[str]:
    """Parameters that an fxset class pins to one value (low == high in its sub-range)."""
    return {k for k, (lo, hi) in FXSET_CLASSES[class_name].ranges.items() if lo == hi}


def _single_effect(labels: list[dict]) -> list[int]:
    return [i for i, r in enumerate(labels)
            if len(r.get("fine_labels", [])) == 1 and r.get("preset") and len(r["preset"]["effects"]) == 1]


def build_layout(labels: list[dict]) -> tuple[list[str], list[tuple[str, int]], dict[str, str | None], dict]:
    """Classes (sorted fine classes with an effect, plus 'dry'), slots, class -> slot and slot -> (effect, config)
    from the train labels."""
    classes, slot_of, slot_info = set(), {}, {}
    for i in _single_effect(labels):
        r = labels[i]
        e = r["preset"]["effects"][0]
        key = slot_key(e["name"], e.get("config") or {})
        slot_info[key] = (e["name"], e.get("config") or {})
        if slot_of.setdefault(r["fine_class"], key) != key:
            raise FxlensError(f"class '{r['fine_class']}' uses two effect configurations; cannot build slots")
        classes.add(r["fine_class"])
    if not classes:
        raise FxlensError("no single-effect clips with presets in the train split (is this an fxlens fxset?)")
    classes_list = sorted(classes) + ["dry"]
    slot_of["dry"] = None
    slots = [(k, get_effect(n, **cfg).n_params) for k, (n, cfg) in sorted(slot_info.items())]
    return classes_list, slots, slot_of, {k: {"effect": n, "config": c} for k, (n, c) in slot_info.items()}


def targets(model: ParameterEstimator, labels: list[dict], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor, list[str]]:
    """(targets (N, P), mask (N, P), one-hot (N, K), class names) of the clips `idx`; unknown classes dropped."""
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


def _param_names(model: ParameterEstimator, slot_info: dict) -> dict[str, list[str]]:
    return {k: get_effect(slot_info[k]["effect"], **slot_info[k]["config"]).param_names for k, _ in model.slots}


def evaluate(model: ParameterEstimator, features: torch.Tensor, labels: list[dict], slot_info: dict,
             class_mean: dict[str, torch.Tensor] | None = None) -> dict:
    """Per class and parameter: MAE of the model, of uniform random controls (exact expectation) and of the class
    mean; plus averages over the non-fixed parameters."""
    idx = _single_effect(labels)
    t, m, onehot, names, keep = targets(model, labels, idx)
    if not names:
        return {"clips": 0}
    model.eval()
    with torch.no_grad():
        pred = model(features[keep], onehot)
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


def train_estimator(
    fxset: str | os.PathLike,
    out: str | os.PathLike,
    feature_set: str = FEATURE_SET,
    epochs: int = 100,
    lr: float = 3e-4,
    weight_decay: float = 1e-2,
    hidden: tuple[int, ...] = (512, 512),
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Train on train, select on val MAE, evaluate on test/ood, save `out/` (weights, config, model card, metrics)."""
    if feature_set not in FEATURE_SETS:
        raise FxlensError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")
    if epochs < 1:
        raise FxlensError("epochs must be >= 1")
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    def feats(split):
        cb = (lambda d, n: progress(f"features {split}", d, n)) if progress else None
        try:
            return split_features(fxset, split, progress=cb, feature_set=feature_set)
        except FxlensError:
            if split == "train":
                raise
            return torch.zeros(0, len(FEATURE_SETS[feature_set][1])), []

    data = {s: feats(s) for s in SPLITS}
    x_all, lab_tr = data["train"]
    classes, slots, class_slots, slot_info = build_layout(lab_tr)
    model = ParameterEstimator(classes, slots, class_slots, n_features=x_all.shape[1], hidden=hidden)
    t_tr, m_tr, oh_tr, names_tr, keep_tr = targets(model, lab_tr, _single_effect(lab_tr))
    x_tr = x_all[keep_tr]
    model.set_standardization(x_tr)
    class_mean = {}
    for c in set(names_tr):
        rows = [j for j, n in enumerate(names_tr) if n == c]
        a, b = model.offsets[class_slots[c]]
        class_mean[c] = t_tr[rows, a:b].mean(0)
    x_val, lab_val = data["val"]
    val = targets(model, lab_val, _single_effect(lab_val)) if lab_val else None

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best = (float("inf"), None, 0)
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(perm), 128):
            b = perm[i:i + 128]
            loss = masked_l1(model(x_tr[b], oh_tr[b]), t_tr[b], m_tr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        if val is not None and val[3]:
            with torch.no_grad():
                v = float(masked_l1(model(x_val[val[4]], val[2]), val[0], val[1]))
        else:
            v = float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_mae": v})
        if v < best[0]:
            best = (v, {k: x.clone() for k, x in model.state_dict().items()}, epoch + 1)
        if progress:
            progress("training", epoch + 1, epochs)
    model.load_state_dict(best[1])
    model.eval()

    metrics: dict = {"feature_set": feature_set, "classes": classes, "best_epoch": best[2],
                     "val_mae_all_controls": best[0], "splits": {}}
    for s in ("val", "test", "ood"):
        x, lab = data[s]
        if lab:
            metrics["splits"][s] = evaluate(model, x, lab, slot_info, class_mean)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["train_clips"] = len(names_tr)
    metrics["history"] = history

    command = command_line()
    config = {"kind": "estimator", "feature_set": feature_set, "n_features": int(x_tr.shape[1]),
              "classes": classes, "slots": [list(s) for s in slots], "class_slots": class_slots,
              "slot_info": slot_info, "hidden": list(hidden), "sample_rate": audio.WORKING_SAMPLE_RATE,
              "class_mean": {c: v.tolist() for c, v in class_mean.items()}}
    save_checkpoint(out, model.state_dict(), config, model_card(metrics, fxset, command), metrics)
    return metrics


def load_estimator(folder: str | os.PathLike) -> tuple[ParameterEstimator, dict]:
    """(model in eval mode, config) of an estimator checkpoint; CheckpointError if it is not one."""
    from fxlens.models.checkpoint import load_model

    return load_model(folder, "estimator", lambda cfg: ParameterEstimator(
        cfg["classes"], [tuple(s) for s in cfg["slots"]], cfg["class_slots"], n_features=int(cfg["n_features"]),
        hidden=tuple(cfg["hidden"])))


def results_table(metrics: dict, split: str = "test") -> list[tuple[str, str, int, float, float, float | None]]:
    """Rows (class, effect, clips, model MAE, random MAE, class-mean MAE) of one split, then an 'all' row."""
    ev = metrics["splits"].get(split)
    if not ev or not ev.get("clips"):
        return []
    rows = [(c, v["effect"], v["clips"], v["model"], v["random"], v["class_mean"])
            for c, v in ev["per_class"].items() if v["model"] is not None]
    rows.append(("all", "", ev["clips"], ev["mean"]["model"], ev["mean"]["random"], ev["mean"]["class_mean"]))
    return rows


def model_card(metrics: dict, fxset, command: str | None) -> str:
    lines = [
        "# estimator: effect settings from features (MLP + class one-hot)",
        "",
        f"- Command: `{command or 'fxlens train estimator ' + str(fxset)}`",
        f"- Data: `{fxset}` ({metrics['train_clips']} single-effect train clips; selected on val)",
        f"- Features: {metrics['feature_set']}; classes {metrics['classes']}",
        f"- Best val epoch {metrics['best_epoch']}; training time {metrics['seconds']:.0f} s on CPU",
        "- MAE in normalized controls ([0, 1] over each parameter's declared range), parameters the class fixes "
        "left out; random = uniform control (exact expectation), class mean = mean train control of the class.",
        "",
    ]
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

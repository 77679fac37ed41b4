"""`fxlens train recognizer`: effect recognition from AutoFX features on an `fxlens data fxset` folder.

An MLP on the 163 features (AutoFX §5.2) is trained on the train split, selected on val, and reported on test,
on the out-of-domain split (held-out soundfont and instruments) and, when given, on a cross-domain set rendered by
another implementation (pedalboard). SVM and k-NN (scikit-learn) on the same features are fitted in the same run
as baselines. Only single-effect clips are used (one class per clip); chains are for multi-label work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fxlens import audio
from fxlens.atomic import atomic_path
from fxlens.data.fxset import FXSET_CLASSES, read_labels
from fxlens.errors import FxlensError
from fxlens.features.recognition import RECOGNITION_FEATURE_NAMES, recognition_features
from fxlens.features.spectral import FEATURE_NAMES, autofx_features
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.classifier import FeatureClassifier, fit_temperature
from fxlens.train import command_line

#: feature sets by name: (function (B, C, T), sample_rate -> (B, n), column names)
FEATURE_SETS = {
    "autofx-163": (autofx_features, FEATURE_NAMES),
    "fxlens-406": (recognition_features, RECOGNITION_FEATURE_NAMES),
}
FEATURE_SET = "fxlens-406"


def compute_features(x: torch.Tensor, sample_rate: int, feature_set: str = FEATURE_SET) -> torch.Tensor:
    """Features of ``x`` ``(B, C, T)`` by feature-set name (`FEATURE_SETS`): ``(B, n)`` float32."""
    if feature_set not in FEATURE_SETS:
        raise FxlensError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")
    with torch.no_grad():
        return FEATURE_SETS[feature_set][0](x, sample_rate).float()


def split_features(fxset: str | os.PathLike, split: str, batch: int = 64,
                   progress: Callable[[int, int], None] | None = None,
                   feature_set: str = FEATURE_SET) -> tuple[torch.Tensor, list[dict]]:
    """Features (N, n) of every clip of a split, cached beside the clips (recomputed if clips change)."""
    if feature_set not in FEATURE_SETS:
        raise FxlensError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")
    labels = read_labels(fxset, split)
    if not labels:
        return torch.zeros(0, len(FEATURE_SETS[feature_set][1])), []
    ids = [r["clip_id"] for r in labels]
    cache = Path(fxset) / split / f"features-{feature_set}.pt"
    known: dict[str, torch.Tensor] = {}
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if cached.get("clip_ids") == ids:
            return cached["features"], labels
        # reuse the rows of clips that are still there (a set that grew, or was partly re-rendered, keeps its ids
        # only for clips that are unchanged: a clip file newer than the cache is recomputed)
        stamp = cache.stat().st_mtime
        for cid, row in zip(cached.get("clip_ids", []), cached.get("features", [])):
            wav = Path(fxset) / split / f"{cid}.flac"
            if wav.is_file() and wav.stat().st_mtime <= stamp:
                known[cid] = row
    todo = [cid for cid in ids if cid not in known]
    for i in range(0, len(todo), batch):
        part = todo[i:i + batch]
        clips = [audio.load(Path(fxset) / split / f"{cid}.flac") for cid in part]
        T = min(c.shape[-1] for c in clips)
        rows = compute_features(torch.cat([c[..., :T] for c in clips]), audio.WORKING_SAMPLE_RATE, feature_set)
        known.update(zip(part, rows))
        if progress:
            progress(min(i + batch, len(todo)), len(todo))
    features = torch.stack([known[cid] for cid in ids]).float()
    with atomic_path(cache) as tmp:
        torch.save({"clip_ids": ids, "features": features}, tmp)
    return features, labels


def _targets(labels: list[dict], target: str) -> list[str | None]:
    key = "aggregated_class" if target == "aggregated" else "fine_class"
    return [r[key] if len(r.get("fine_labels", [])) == 1 else None for r in labels]


def _select(features: torch.Tensor, labels: list[dict], target: str, classes: list[str]):
    ys = _targets(labels, target)
    keep = [i for i, y in enumerate(ys) if y is not None and y in classes]
    return features[keep], torch.tensor([classes.index(ys[i]) for i in keep], dtype=torch.long)


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


MULTILABEL_CLASSES = ("delay", "reverb", "modulation", "tremolo", "distortion", "compression", "eq")


def _multilabel_select(features: torch.Tensor, labels: list[dict], classes: list[str]):
    """Every clip (single effects, dry and chains): (features, (N, K) 0/1 targets over aggregated effect classes)."""
    y = torch.zeros(len(labels), len(classes))
    for i, r in enumerate(labels):
        for a in r.get("labels", []):
            if a in classes:
                y[i, classes.index(a)] = 1.0
    return features, y


def _multilabel_scores(prob: np.ndarray, y: np.ndarray, classes: list[str], labels: list[dict],
                       threshold: float = 0.5) -> dict:
    pred = prob >= threshold
    truth = y > 0.5
    chain = np.array([len(r.get("fine_labels", [])) > 1 for r in labels], dtype=bool)
    out = {"exact_match": float((pred == truth).all(1).mean()) if len(y) else None,
           "exact_match_chains": float((pred == truth).all(1)[chain].mean()) if chain.any() else None,
           "exact_match_single": float((pred == truth).all(1)[~chain].mean()) if (~chain).any() else None,
           "per_class": {}}
    f1s = []
    for k, c in enumerate(classes):
        tp = float((pred[:, k] & truth[:, k]).sum())
        fp = float((pred[:, k] & ~truth[:, k]).sum())
        fn = float((~pred[:, k] & truth[:, k]).sum())
        prec = tp / (tp + fp) if tp + fp else None
        rec = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        out["per_class"][c] = {"precision": prec, "recall": rec, "f1": f1, "support": int(truth[:, k].sum())}
        if f1 is not None:
            f1s.append(f1)
    out["macro_f1"] = float(np.mean(f1s)) if f1s else None
    return out


def train_recognizer(
    fxset: str | os.PathLike,
    out: str | os.PathLike,
    target: str = "aggregated",
    cross_domain: str | os.PathLike | None = None,
    epochs: int = 200,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    feature_set: str = FEATURE_SET,
    hidden: tuple[int, ...] = (512, 256),
    dropout: float = 0.2,
    multilabel: bool = False,
    baselines: bool = True,
) -> dict:
    """Train, select on val, evaluate everywhere, save `out/` (weights, config, model card). Returns the metrics.

    ``target``: "aggregated" (8 classes) or "fine" (14; accuracy is also reported on the aggregated classes by
    summing fine probabilities). ``multilabel``: one sigmoid per aggregated effect class (dry = none), trained on
    single-effect, dry and chain clips with binary cross-entropy; reported as exact-match rate and per-class F1
    (no SVM / k-NN baselines then). ``feature_set``: a key of `FEATURE_SETS`.
    """
    if target not in ("aggregated", "fine"):
        raise FxlensError(f"target must be 'aggregated' or 'fine', got {target!r}")
    if feature_set not in FEATURE_SETS:
        raise FxlensError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")
    if epochs < 1:
        raise FxlensError("epochs must be >= 1")
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    def feats(root, split):
        cb = (lambda d, n: progress(f"features {split}", d, n)) if progress else None
        try:
            return split_features(root, split, progress=cb, feature_set=feature_set)
        except FxlensError:
            if split == "train" and root == fxset:
                raise
            return torch.zeros(0, len(FEATURE_SETS[feature_set][1])), []

    data = {s: feats(fxset, s) for s in ("train", "val", "test", "ood")}
    if not data["train"][1]:
        raise FxlensError(f"{fxset} has no train clips: run `fxlens data fxset` first")
    if multilabel:
        classes = list(MULTILABEL_CLASSES)
        sets = {s: _multilabel_select(f, lab, classes) for s, (f, lab) in data.items()}
        set_labels = {s: lab for s, (f, lab) in data.items()}
    else:
        classes = sorted({y for y in _targets(data["train"][1], target) if y is not None})
        sets = {s: _select(f, lab, target, classes) for s, (f, lab) in data.items()}
    if cross_domain is not None:
        xs = [feats(cross_domain, s) for s in ("train", "val", "test", "ood")]
        f = torch.cat([x[0] for x in xs])
        lab = [r for x in xs for r in x[1]]
        if multilabel:
            sets["cross_domain"] = _multilabel_select(f, lab, classes)
            set_labels["cross_domain"] = lab
        else:
            sets["cross_domain"] = _select(f, lab, target, classes)

    x_tr, y_tr = sets["train"]
    model = FeatureClassifier(classes, n_features=x_tr.shape[1], hidden=hidden, dropout=dropout,
                              multilabel=multilabel)
    model.set_standardization(x_tr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x_val, y_val = sets["val"]

    def loss_fn(logits, y):
        if multilabel:
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        return torch.nn.functional.cross_entropy(logits, y)

    def val_score() -> float:
        if not len(y_val):
            return 0.0
        with torch.no_grad():
            out_ = model(x_val)
        if multilabel:
            return float(((out_ > 0) == (y_val > 0.5)).all(1).float().mean())
        return _accuracy(out_.argmax(1).numpy(), y_val.numpy())

    best = (-1.0, None, 0)
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), 128):
            idx = perm[i:i + 128]
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        val_acc = val_score()
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_accuracy": val_acc})
        if val_acc > best[0]:
            best = (val_acc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        if progress:
            progress("training", epoch + 1, epochs)
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        val_logits = model(x_val) if len(y_val) else torch.zeros(0, len(classes))
    model.temperature = fit_temperature(val_logits, y_val, multilabel)

    metrics: dict = {"temperature": model.temperature, "classes": classes, "target": "multilabel" if multilabel else target,
                     "feature_set": feature_set, "best_epoch": best[2], "accuracy": {}, "counts": {},
                     "hidden": list(hidden)}
    mean, std = model.feature_mean.numpy(), model.feature_std.numpy()
    if multilabel:
        metrics["multilabel"] = {}
        for name, (x, y) in sets.items():
            metrics["counts"][name] = int(len(y))
            if not len(y):
                continue
            with torch.no_grad():
                prob = model.probabilities(x).numpy()
            metrics["multilabel"][name] = _multilabel_scores(prob, y.numpy(), classes, set_labels[name])
            metrics["accuracy"][name] = {"mlp": metrics["multilabel"][name]["exact_match"]}
    else:
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import SVC

        z_tr = (x_tr.numpy() - mean) / std
        fitted = {}
        if baselines:
            fitted = {"svm": SVC(C=10.0, gamma="scale").fit(z_tr, y_tr.numpy()),
                      "knn": KNeighborsClassifier(n_neighbors=5).fit(z_tr, y_tr.numpy())}
        agg_of = np.array([FXSET_CLASSES[c].aggregated if c in FXSET_CLASSES else c for c in classes])
        for name, (x, y) in sets.items():
            metrics["counts"][name] = int(len(y))
            if not len(y):
                continue
            with torch.no_grad():
                pred = model(x).argmax(1).numpy()
            z = (x.numpy() - mean) / std
            preds = {"mlp": pred, **{b: clf.predict(z) for b, clf in fitted.items()}}
            row = {k: _accuracy(p, y.numpy()) for k, p in preds.items()}
            if target == "fine":
                row.update({f"{k}_aggregated": _accuracy(agg_of[p], agg_of[y.numpy()]) for k, p in preds.items()})
            metrics["accuracy"][name] = row
            conf = np.zeros((len(classes), len(classes)), dtype=int)
            np.add.at(conf, (y.numpy(), pred), 1)
            metrics[f"confusion_{name}"] = conf.tolist()
            metrics[f"per_class_{name}"] = {
                c: {"precision": float(conf[i, i] / conf[:, i].sum()) if conf[:, i].sum() else None,
                    "recall": float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None}
                for i, c in enumerate(classes)}
    metrics["seconds"] = time.perf_counter() - t0
    metrics["history"] = history

    command = command_line()
    config = {"kind": "recognizer", "feature_set": feature_set, "n_features": int(x_tr.shape[1]),
              "classes": classes, "target": "multilabel" if multilabel else target, "hidden": list(hidden),
              "multilabel": multilabel, "temperature": model.temperature,
              "sample_rate": audio.WORKING_SAMPLE_RATE}
    save_checkpoint(out, model.state_dict(), config, model_card(metrics, fxset, cross_domain, command), metrics)
    return metrics


def load_recognizer(folder: str | os.PathLike) -> tuple[FeatureClassifier, dict]:
    """(model in eval mode, config) of a recognizer checkpoint; CheckpointError if it is not one."""
    from fxlens.models.checkpoint import load_model

    return load_model(folder, "recognizer", lambda cfg: FeatureClassifier(
        cfg["classes"], n_features=int(cfg["n_features"]), hidden=tuple(cfg["hidden"]),
        multilabel=bool(cfg.get("multilabel", False)), temperature=float(cfg.get("temperature", 1.0))))


def model_card(metrics: dict, fxset, cross_domain, command: str | None) -> str:
    acc = metrics["accuracy"]
    n_in = {"autofx-163": 163, "fxlens-406": 406}.get(metrics.get("feature_set", ""), "n")
    hidden = " -> ".join(str(h) for h in metrics.get("hidden", [256, 128]))
    lines = [
        "# recognizer: effect recognition from hand-crafted features",
        "",
        f"- Command: `{command or 'fxlens train recognizer ' + str(fxset)}`",
        f"- Data: `{fxset}` (counts {metrics['counts']})"
        + (f"; cross-domain set `{cross_domain}` (pedalboard, never trained on)" if cross_domain else ""),
        f"- Target: {metrics['target']} classes {metrics['classes']}",
        f"- Features: {metrics.get('feature_set')}",
        f"- Model: MLP {n_in} -> {hidden} -> {len(metrics['classes'])} on standardized features; best val epoch "
        f"{metrics['best_epoch']}; training time {metrics['seconds']:.0f} s on CPU",
        "",
    ]
    if metrics["target"] == "multilabel":
        lines += ["| split | exact match | exact match (chains) | macro F1 |", "|---|---|---|---|"]
        for split, m in metrics["multilabel"].items():
            em_c = "-" if m["exact_match_chains"] is None else f"{m['exact_match_chains']:.3f}"
            lines.append(f"| {split} | {m['exact_match']:.3f} | {em_c} | {m['macro_f1']:.3f} |")
        return "\n".join(lines) + "\n"
    keys = [k for k in ("mlp", "svm", "knn") if any(k in r for r in acc.values())]
    agg = metrics["target"] == "fine"
    head = [k.upper() if k != "knn" else "k-NN" for k in keys]
    if agg:
        head += [f"{h} (aggregated)" for h in head]
    lines += ["| split | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for split, row in acc.items():
        cells = [f"{row[k]:.3f}" for k in keys]
        if agg:
            cells += [f"{row[k + '_aggregated']:.3f}" for k in keys]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

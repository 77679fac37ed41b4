"""`fxlens train recognizer`: effect recognition from AutoFX features on an `fxlens data fxset` folder.

An MLP on the 163 features (AutoFX §5.2) is trained on the train split, selected on val, and reported on test,
on the out-of-domain split (held-out soundfont and instruments) and, when given, on a cross-domain set rendered by
another implementation (pedalboard). SVM and k-NN (scikit-learn) on the same features are fitted in the same run
as baselines. Only single-effect clips are used (one class per clip); chains are for multi-label work.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fxlens import audio
from fxlens.atomic import atomic_path
from fxlens.data.fxset import read_labels
from fxlens.errors import FxlensError
from fxlens.features.spectral import FEATURE_NAMES, autofx_features
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.classifier import FeatureClassifier

FEATURE_SET = "autofx-163"


def split_features(fxset: str | os.PathLike, split: str, batch: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """AutoFX features (N, 163) of every clip of a split, cached beside the clips (recomputed if clips change)."""
    labels = read_labels(fxset, split)
    if not labels:
        return torch.zeros(0, len(FEATURE_NAMES)), []
    ids = [r["clip_id"] for r in labels]
    cache = Path(fxset) / split / f"features-{FEATURE_SET}.pt"
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if cached.get("clip_ids") == ids:
            return cached["features"], labels
    feats = []
    for i in range(0, len(labels), batch):
        clips = [audio.load(Path(fxset) / split / f"{cid}.flac") for cid in ids[i:i + batch]]
        T = min(c.shape[-1] for c in clips)
        with torch.no_grad():
            feats.append(autofx_features(torch.cat([c[..., :T] for c in clips]), audio.WORKING_SAMPLE_RATE))
        if progress:
            progress(min(i + batch, len(labels)), len(labels))
    features = torch.cat(feats).float()
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


def train_recognizer(
    fxset: str | os.PathLike,
    out: str | os.PathLike,
    target: str = "aggregated",
    cross_domain: str | os.PathLike | None = None,
    epochs: int = 400,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Train, select on val, evaluate everywhere, save `out/` (weights, config, model card). Returns the metrics."""
    if target not in ("aggregated", "fine"):
        raise FxlensError(f"target must be 'aggregated' or 'fine', got {target!r}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    def feats(root, split):
        return split_features(root, split, progress=(lambda d, n: progress(f"features {split}", d, n)) if progress else None)

    data = {s: feats(fxset, s) for s in ("train", "val", "test", "ood")}
    if not data["train"][1]:
        raise FxlensError(f"{fxset} has no train clips: run `fxlens data fxset` first")
    classes = sorted({y for y in _targets(data["train"][1], target) if y is not None})
    sets = {s: _select(f, lab, target, classes) for s, (f, lab) in data.items()}
    if cross_domain is not None:
        xs = [feats(cross_domain, s) for s in ("train", "val", "test", "ood")]
        f = torch.cat([x[0] for x in xs])
        lab = [r for x in xs for r in x[1]]
        sets["cross_domain"] = _select(f, lab, target, classes)

    x_tr, y_tr = sets["train"]
    model = FeatureClassifier(classes, n_features=x_tr.shape[1])
    model.set_standardization(x_tr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best = (-1.0, None, 0)
    x_val, y_val = sets["val"]
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), 256):
            idx = perm[i:i + 256]
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            val_acc = _accuracy(model(x_val).argmax(1).numpy(), y_val.numpy()) if len(y_val) else 0.0
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_accuracy": val_acc})
        if val_acc > best[0]:
            best = (val_acc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        if progress:
            progress("training", epoch + 1, epochs)
    model.load_state_dict(best[1])
    model.eval()

    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    mean, std = model.feature_mean.numpy(), model.feature_std.numpy()
    z_tr = (x_tr.numpy() - mean) / std
    baselines = {"svm": SVC(C=10.0, gamma="scale").fit(z_tr, y_tr.numpy()),
                 "knn": KNeighborsClassifier(n_neighbors=5).fit(z_tr, y_tr.numpy())}
    metrics: dict = {"classes": classes, "target": target, "best_epoch": best[2], "accuracy": {}, "counts": {}}
    for name, (x, y) in sets.items():
        metrics["counts"][name] = int(len(y))
        if not len(y):
            continue
        with torch.no_grad():
            pred = model(x).argmax(1).numpy()
        row = {"mlp": _accuracy(pred, y.numpy())}
        z = (x.numpy() - mean) / std
        for bname, clf in baselines.items():
            row[bname] = _accuracy(clf.predict(z), y.numpy())
        metrics["accuracy"][name] = row
        if name in ("test", "cross_domain"):
            conf = np.zeros((len(classes), len(classes)), dtype=int)
            np.add.at(conf, (y.numpy(), pred), 1)
            metrics[f"confusion_{name}"] = conf.tolist()
            with np.errstate(invalid="ignore", divide="ignore"):
                metrics[f"per_class_{name}"] = {
                    c: {"precision": float(conf[i, i] / conf[:, i].sum()) if conf[:, i].sum() else None,
                        "recall": float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None}
                    for i, c in enumerate(classes)}
    metrics["seconds"] = time.perf_counter() - t0
    metrics["history"] = history

    command = "fxlens " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "fxlens" in sys.argv[0] else None
    config = {"kind": "recognizer", "feature_set": FEATURE_SET, "n_features": int(x_tr.shape[1]),
              "classes": classes, "target": target, "hidden": [256, 128], "multilabel": False,
              "sample_rate": audio.WORKING_SAMPLE_RATE}
    save_checkpoint(out, model.state_dict(), config, model_card(metrics, fxset, cross_domain, command))
    with atomic_path(Path(out) / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def model_card(metrics: dict, fxset, cross_domain, command: str | None) -> str:
    acc = metrics["accuracy"]
    lines = [
        "# recognizer: effect recognition from AutoFX features",
        "",
        f"- Command: `{command or 'fxlens train recognizer ' + str(fxset)}`",
        f"- Data: `{fxset}` (single-effect clips; counts {metrics['counts']})"
        + (f"; cross-domain set `{cross_domain}` (pedalboard, never trained on)" if cross_domain else ""),
        f"- Target: {metrics['target']} classes {metrics['classes']}",
        f"- Model: MLP 163 -> 256 -> 128 -> {len(metrics['classes'])} on standardized features; best val epoch "
        f"{metrics['best_epoch']}; training time {metrics['seconds']:.0f} s on CPU",
        "",
        "| split | MLP | SVM | k-NN |",
        "|---|---|---|---|",
    ]
    for split, row in acc.items():
        lines.append(f"| {split} | {row['mlp']:.3f} | {row['svm']:.3f} | {row['knn']:.3f} |")
    return "\n".join(lines) + "\n"

"""`fxlens train recognizer`: effect recognition on an `fxlens data fxset` folder.

An MLP on hand-crafted features (AutoFX §5.2: its 163, or fxlens's 406) — or, with ``model_kind="resnet"``, those
features fused with a ResNet on the clip's log-mel spectrogram — is trained on the train split, selected on val, and
reported on test, on the out-of-domain split (held-out soundfont and instruments) and, when given, on a
cross-domain set rendered by another implementation (pedalboard). SVM and k-NN (scikit-learn) on the same features
are fitted in the same run as baselines. Only single-effect clips are used (one class per clip); chains are for
multi-label work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from fxlens import audio
from fxlens.data.fxset import AGGREGATED_CLASSES, FINE_CLASSES, aggregate_probabilities, aggregated_of
from fxlens.errors import CheckpointError, FxlensError
from fxlens.features.sets import FEATURE_SET, FEATURE_SETS, check_feature_set
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.classifier import (FeatureClassifier, MelResNetClassifier, StackedRecognizer,
                                      calibrated_probabilities, fit_temperature)
from fxlens.models.trees import BoostedTrees
from fxlens.train import command_line
from fxlens.train.inputs import split_features, split_log_mels


def _targets(labels: list[dict], target: str) -> list[str | None]:
    key = "aggregated_class" if target == "aggregated" else "fine_class"
    return [r[key] if len(r.get("fine_labels", [])) == 1 else None for r in labels]


def _select(features: torch.Tensor, labels: list[dict], target: str, classes: list[str]):
    """The single-effect clips of `classes`: (features, class indices, the rows kept)."""
    ys = _targets(labels, target)
    keep = [i for i, y in enumerate(ys) if y is not None and y in classes]
    return features[keep], torch.tensor([classes.index(ys[i]) for i in keep], dtype=torch.long), keep


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


#: recognizer models: training batch size and default epochs
MODEL_KINDS = {"mlp": {"batch": 128, "epochs": 200}, "resnet": {"batch": 64, "epochs": 15}}

MULTILABEL_CLASSES = ("delay", "reverb", "modulation", "tremolo", "distortion", "compression", "eq")


def multilabel_classes(target: str) -> list[str]:
    """The sigmoids of a multi-label recognizer: the aggregated effect classes, or the fine ones; never "dry"."""
    return list(MULTILABEL_CLASSES) if target == "aggregated" else [c for c in FINE_CLASSES if c != "dry"]


def multilabel_select(features: torch.Tensor, labels: list[dict], classes: list[str]):
    """Every clip (single effects, dry and chains): (features, (N, K) 0/1 targets over `classes` — aggregated or
    fine effect classes, from a label's ``labels`` or ``fine_labels`` — the rows kept: all)."""
    key = "labels" if set(classes) <= set(MULTILABEL_CLASSES) else "fine_labels"
    y = torch.zeros(len(labels), len(classes))
    for i, r in enumerate(labels):
        for a in r.get(key, []):
            if a in classes:
                y[i, classes.index(a)] = 1.0
    return features, y, list(range(len(labels)))


def multilabel_scores(prob: np.ndarray, y: np.ndarray, classes: list[str], labels: list[dict],
                      threshold: float = 0.5) -> dict:
    """Set metrics of sigmoid outputs `prob` (N, K) against 0/1 targets `y`: exact match (all clips, chains,
    single effects), per-class precision / recall / F1, macro F1; for a fine model also the exact match of its sets
    of effect groups (``"aggregated"``), formed as `analyze` forms them."""
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
    if set(classes) - set(MULTILABEL_CLASSES):  # a fine model: its sets of effect groups too, as `analyze` forms them
        effects = [a for a in AGGREGATED_CLASSES if a != "dry"]
        cols = [AGGREGATED_CLASSES.index(a) for a in effects]
        agg_pred = aggregate_probabilities(classes, prob, multilabel=True)[:, cols] >= threshold
        agg_truth = np.array([[a in r.get("labels", []) for a in effects] for r in labels], dtype=bool)
        hit = (agg_pred == agg_truth).all(1)
        out["aggregated"] = {"exact_match": float(hit.mean()) if len(y) else None,
                             "exact_match_chains": float(hit[chain].mean()) if chain.any() else None,
                             "exact_match_single": float(hit[~chain].mean()) if (~chain).any() else None}
    return out


SPLITS = ("train", "val", "test", "ood")


def fxset_features(fxset, feature_set: str, cross_domain=None,
                   progress: Callable[[str, int, int], None] | None = None, workers: int = 1
                   ) -> dict[str, tuple[torch.Tensor, list[dict]]]:
    """{split: (features, labels)} of `fxset`'s four splits (a missing split other than train: empty) and, with
    `cross_domain`, ``"cross_domain"``: its four splits in order, concatenated. FxlensError without train clips."""

    def feats(root, split):
        cb = (lambda d, n: progress(f"features {split}", d, n)) if progress else None
        try:
            return split_features(root, split, progress=cb, feature_set=feature_set, workers=workers)
        except FxlensError:
            if split == "train" and root == fxset:
                raise
            return torch.zeros(0, len(FEATURE_SETS[feature_set][1])), []

    data = {s: feats(fxset, s) for s in SPLITS}
    if not data["train"][1]:
        raise FxlensError(f"{fxset} has no train clips: run `fxlens data fxset` first")
    if cross_domain is not None:
        xs = [feats(cross_domain, s) for s in SPLITS]
        data["cross_domain"] = (torch.cat([x[0] for x in xs]), [r for x in xs for r in x[1]])
    return data


def set_log_mels(model: MelResNetClassifier, fxset, cross_domain, name: str, keep: list[int],
                 progress: Callable[[str, int, int], None] | None, workers: int = 1) -> torch.Tensor:
    """float16 log-mels of rows `keep` of set `name` (a split of `fxset`, or "cross_domain": the four splits of
    `cross_domain` in order), cached beside the clips."""
    parts = SPLITS if name == "cross_domain" else (name,)
    root = cross_domain if name == "cross_domain" else fxset
    mels = []
    for split in parts:
        cb = (lambda d, n, s=split: progress(f"log-mels {s}", d, n)) if progress else None
        try:
            m = split_log_mels(root, split, model, progress=cb, workers=workers)[0]
        except FxlensError:
            if name == "train":
                raise
            continue
        if len(m):  # a split without clips has no frames to concatenate
            mels.append(m)
    if not mels or not keep:
        return torch.zeros(0, model.audio_channels, model.n_mels, 1, dtype=torch.float16)
    return torch.cat(mels)[keep]


def train_recognizer(
    fxset: str | os.PathLike,
    out: str | os.PathLike,
    target: str = "aggregated",
    cross_domain: str | os.PathLike | None = None,
    epochs: int | None = None,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    feature_set: str = FEATURE_SET,
    hidden: tuple[int, ...] = (512, 256),
    dropout: float = 0.2,
    multilabel: bool = False,
    baselines: bool = True,
    model_kind: str = "mlp",
    channels: tuple[int, ...] = (16, 32, 64),
    init: str | os.PathLike | None = None,
    workers: int = 1,
) -> dict:
    """Train, select on val, evaluate everywhere, save `out/` (weights, config, model card). Returns the metrics.

    ``target``: "aggregated" (8 classes) or "fine" (14; accuracy is also reported on the aggregated classes by
    summing fine probabilities). ``multilabel``: one sigmoid per effect class of `target` (aggregated or fine; dry =
    none on), trained on single-effect, dry and chain clips with binary cross-entropy; reported as exact-match rate
    and per-class F1 (no SVM / k-NN baselines then). ``feature_set``: a key of `FEATURE_SETS`.

    ``model_kind``: "mlp" (`FeatureClassifier`: batches of 128, cosine schedule per epoch; default 200 epochs) or
    "resnet" (`MelResNetClassifier`, the features fused with a ResNet of width `channels` on the clips' log-mels,
    cached beside them: batches of 64, one-cycle schedule; default 15 epochs).

    ``init``: a recognizer checkpoint to start from (fine-tuning: its weights and feature standardization; it must
    have the same kind, classes, target, features and width as asked here, else CheckpointError).

    ``workers``: processes computing the features and log-mels of clips not yet cached (the results do not depend
    on it).
    """
    if model_kind not in MODEL_KINDS:
        raise FxlensError(f"unknown recognizer model '{model_kind}' (known: {', '.join(MODEL_KINDS)})")
    epochs = MODEL_KINDS[model_kind]["epochs"] if epochs is None else int(epochs)
    if target not in ("aggregated", "fine"):
        raise FxlensError(f"target must be 'aggregated' or 'fine', got {target!r}")
    check_feature_set(feature_set)
    if epochs < 1:
        raise FxlensError("epochs must be >= 1")
    if not lr >= 0:
        raise FxlensError(f"learning rate must be >= 0, got {lr}")
    start = None if init is None else load_recognizer(init)  # a missing or foreign checkpoint fails before any work
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    data = fxset_features(fxset, feature_set, cross_domain, progress, workers)
    if multilabel:
        classes = multilabel_classes(target)
        sets = {s: multilabel_select(f, lab, classes) for s, (f, lab) in data.items()}
    else:
        classes = sorted({y for y in _targets(data["train"][1], target) if y is not None})
        sets = {s: _select(f, lab, target, classes) for s, (f, lab) in data.items()}
    set_labels = {s: lab for s, (f, lab) in data.items()}

    x_tr = sets["train"][0]
    if model_kind == "resnet":
        model = MelResNetClassifier(classes, n_features=x_tr.shape[1], sample_rate=audio.WORKING_SAMPLE_RATE,
                                    channels=tuple(channels), dropout=dropout, multilabel=multilabel)
        for name in list(sets):  # the log-mels of the rows kept, beside their features
            x, y, keep = sets[name]
            mels = set_log_mels(model, fxset, cross_domain, name, keep, progress, workers)
            sets[name] = (x, y, keep, mels)
    else:
        model = FeatureClassifier(classes, n_features=x_tr.shape[1], hidden=hidden, dropout=dropout,
                                  multilabel=multilabel)
    model.set_standardization(x_tr)
    if start is not None:
        _start_from(model, start, init, classes, multilabel, feature_set, model_kind)

    def logits(name: str, idx=None) -> torch.Tensor:
        """The model's logits for rows `idx` (default all) of set `name`, in chunks when evaluating."""
        x, mels = sets[name][0], (sets[name][3] if model_kind == "resnet" else None)
        rows = torch.arange(len(x)) if idx is None else idx
        chunk = len(rows) if model.training else 256
        out_ = [model(x[r], *(() if mels is None else (mels[r].float(),)))
                for r in rows.split(max(chunk, 1))]
        return torch.cat(out_) if out_ else torch.zeros(0, len(classes))

    y_tr, y_val = sets["train"][1], sets["val"][1]
    batch = MODEL_KINDS[model_kind]["batch"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_step = model_kind == "resnet"
    steps = epochs * -(-len(y_tr) // batch)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1) if per_step
             else torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs))

    def loss_fn(out_, y):
        if multilabel:
            return torch.nn.functional.binary_cross_entropy_with_logits(out_, y)
        return torch.nn.functional.cross_entropy(out_, y)

    def val_score() -> float:
        if not len(y_val):
            return 0.0
        with torch.no_grad():
            out_ = logits("val")
        if multilabel:
            return float(((out_ > 0) == (y_val > 0.5)).all(1).float().mean())
        return _accuracy(out_.argmax(1).numpy(), y_val.numpy())

    best = (-1.0, None, 0)
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = loss_fn(logits("train", idx), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            if progress and per_step:
                progress("training", epoch * len(perm) + i + len(idx), epochs * len(perm))
        if not per_step:
            sched.step()
        model.eval()
        val_acc = val_score()
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_accuracy": val_acc})
        if val_acc > best[0]:
            best = (val_acc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        if progress and not per_step:
            progress("training", epoch + 1, epochs)
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        val_logits = logits("val")
    model.temperature = fit_temperature(val_logits, y_val, multilabel)

    metrics: dict = {"temperature": model.temperature, "classes": classes,
                     "target": "multilabel" if multilabel else target,
                     "feature_set": feature_set, "best_epoch": best[2], "accuracy": {}, "counts": {},
                     "hidden": list(hidden), "model": model_kind, "epochs": epochs, "lr": lr,
                     "init": None if init is None else str(init)}
    if model_kind == "resnet":
        metrics["channels"] = list(channels)
    mean, std = model.feature_mean.numpy(), model.feature_std.numpy()
    if multilabel:
        metrics["multilabel"] = {}
        for name, (x, y, *_) in sets.items():
            metrics["counts"][name] = int(len(y))
            if not len(y):
                continue
            with torch.no_grad():
                prob = calibrated_probabilities(model, logits(name)).numpy()
            metrics["multilabel"][name] = multilabel_scores(prob, y.numpy(), classes, set_labels[name])
            metrics["accuracy"][name] = {model_kind: metrics["multilabel"][name]["exact_match"]}
    else:
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import SVC

        z_tr = (x_tr.numpy() - mean) / std
        fitted = {}
        if baselines:
            fitted = {"svm": SVC(C=10.0, gamma="scale").fit(z_tr, y_tr.numpy()),
                      "knn": KNeighborsClassifier(n_neighbors=5).fit(z_tr, y_tr.numpy())}
        agg_of = np.array(aggregated_of(classes))
        for name, (x, y, *_) in sets.items():
            metrics["counts"][name] = int(len(y))
            if not len(y):
                continue
            with torch.no_grad():
                pred = logits(name).argmax(1).numpy()
            z = (x.numpy() - mean) / std
            preds = {model_kind: pred, **{b: clf.predict(z) for b, clf in fitted.items()}}
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
              "sample_rate": audio.WORKING_SAMPLE_RATE, "model": model_kind}
    if model_kind == "resnet":
        config.update({"channels": list(channels), "n_mels": model.n_mels, "n_fft": model.n_fft, "hop": model.hop,
                       "audio_channels": model.audio_channels})
    save_checkpoint(out, model.state_dict(), config, model_card(metrics, fxset, cross_domain, command), metrics)
    return metrics


def _start_from(model, start: tuple, init, classes: list[str], multilabel: bool, feature_set: str,
                model_kind: str) -> None:
    """Load the weights of recognizer `start` = (model, config), read from `init`, into `model`, after checking it
    is the same recognizer."""
    start, cfg = start
    if cfg.get("model") == "stacked":
        raise CheckpointError(f"cannot start from '{init}': it is a stacked recognizer (start from its base, "
                              f"{cfg['base'].get('model', 'mlp')}, and stack again with `fxlens train stack`)")
    want = {"classes": list(classes), "multilabel": multilabel, "feature_set": feature_set, "model": model_kind}
    have = {"classes": list(cfg["classes"]), "multilabel": bool(cfg.get("multilabel", False)),
            "feature_set": cfg["feature_set"], "model": cfg.get("model", "mlp")}
    diff = [f"{k} {have[k]!r} (asked: {want[k]!r})" for k in want if have[k] != want[k]]
    if diff:
        raise CheckpointError(f"cannot start from '{init}': it has {'; '.join(diff)}")
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError:
        raise CheckpointError(f"cannot start from '{init}': its layer sizes differ from the model asked for") from None


def load_recognizer(folder: str | os.PathLike
                    ) -> tuple[FeatureClassifier | MelResNetClassifier | StackedRecognizer, dict]:
    """(model in eval mode, config) of a recognizer checkpoint (any kind); CheckpointError if it is not one."""
    from fxlens.models.checkpoint import load_model

    def build(cfg: dict):
        if cfg.get("model") == "stacked":  # a base recognizer under boosted trees (`fxlens train stack`)
            return StackedRecognizer(build(cfg["base"]), BoostedTrees(**cfg["trees"]))
        common = {"multilabel": bool(cfg.get("multilabel", False)), "temperature": float(cfg.get("temperature", 1.0))}
        if cfg.get("model", "mlp") == "resnet":
            return MelResNetClassifier(cfg["classes"], n_features=int(cfg["n_features"]),
                                       sample_rate=int(cfg["sample_rate"]), channels=tuple(cfg["channels"]),
                                       n_mels=int(cfg["n_mels"]), n_fft=int(cfg["n_fft"]), hop=int(cfg["hop"]),
                                       audio_channels=int(cfg["audio_channels"]), **common)
        return FeatureClassifier(cfg["classes"], n_features=int(cfg["n_features"]), hidden=tuple(cfg["hidden"]),
                                 **common)

    return load_model(folder, "recognizer", build)


def rate_cell(v: float | None) -> str:
    """A rate for a table: three decimals, "-" when there is none (e.g. no chains in a split)."""
    return "-" if v is None else f"{v:.3f}"


def model_card(metrics: dict, fxset, cross_domain, command: str | None) -> str:
    acc = metrics["accuracy"]
    n_in = {"autofx-163": 163, "fxlens-406": 406}.get(metrics.get("feature_set", ""), "n")
    hidden = " -> ".join(str(h) for h in metrics.get("hidden", [256, 128]))
    kind = metrics.get("model", "mlp")
    if kind == "stacked":
        base = metrics.get("multilabel_base", {})
        model_line = (f"- Model: the {n_in} features and the {len(metrics['classes'])} raw logits of the multi-label "
                      f"recognizer `{metrics.get('recognizer')}` ({metrics.get('base_model')}) -> one boosted-tree "
                      f"ensemble per class (scikit-learn HistGradientBoosting, at most {metrics.get('max_iter')} "
                      f"iterations; used: {metrics.get('iterations')}; {metrics.get('nodes')} nodes in all); "
                      f"training time {metrics['seconds']:.0f} s on CPU")
        lines = ["# recognizer: boosted trees stacked on a multi-label recognizer", "",
                 f"- Command: `{command or 'fxlens train stack ' + str(fxset)}`",
                 f"- Data: `{fxset}` (counts {metrics['counts']})"
                 + (f"; cross-domain set `{cross_domain}` (pedalboard, never fitted on)" if cross_domain else ""),
                 f"- Target: multilabel classes {metrics['classes']}", f"- Features: {metrics.get('feature_set')}",
                 model_line, "", "Exact match of the stacked model (and of its base alone, in brackets):", "",
                 "| split | exact match | exact match (chains) | macro F1 | exact match (aggregated) "
                 "| exact match (chains, aggregated) |", "|---|---|---|---|---|---|"]
        for split, m in metrics["multilabel"].items():
            b = base.get(split, m)
            cells = [(m["exact_match"], b["exact_match"]), (m["exact_match_chains"], b["exact_match_chains"]),
                     (m["macro_f1"], b["macro_f1"]),
                     (m["aggregated"]["exact_match"], b["aggregated"]["exact_match"]),
                     (m["aggregated"]["exact_match_chains"], b["aggregated"]["exact_match_chains"])]
            lines.append(f"| {split} | " + " | ".join(f"{rate_cell(v)} ({rate_cell(w)})" if v is not None else "-"
                                                       for v, w in cells) + " |")
        return "\n".join(lines) + "\n"
    if kind == "resnet":
        model_line = (f"- Model: {n_in} standardized features (Linear-LayerNorm-GELU 256) fused with a log-mel ResNet "
                      f"(stages {'-'.join(str(c) for c in metrics.get('channels', []))}, mean+max pooled), "
                      f"256 -> {len(metrics['classes'])}")
    else:
        model_line = f"- Model: MLP {n_in} -> {hidden} -> {len(metrics['classes'])} on standardized features"
    lines = [
        "# recognizer: effect recognition from hand-crafted features"
        + (" and the log-mel spectrogram" if kind == "resnet" else ""),
        "",
        f"- Command: `{command or 'fxlens train recognizer ' + str(fxset)}`",
        f"- Data: `{fxset}` (counts {metrics['counts']})"
        + (f"; cross-domain set `{cross_domain}` (pedalboard, never trained on)" if cross_domain else ""),
        f"- Target: {metrics['target']} classes {metrics['classes']}",
        f"- Features: {metrics.get('feature_set')}",
        f"{model_line}; best val epoch {metrics['best_epoch']} of {metrics.get('epochs', '?')}; "
        f"training time {metrics['seconds']:.0f} s on CPU",
        "",
    ]
    if metrics["target"] == "multilabel":
        fine = any("aggregated" in m for m in metrics["multilabel"].values())
        head = ["exact match", "exact match (chains)", "macro F1"]
        head += ["exact match (aggregated)", "exact match (chains, aggregated)"] if fine else []
        lines += ["| split | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for split, m in metrics["multilabel"].items():
            cells = [rate_cell(m["exact_match"]), rate_cell(m["exact_match_chains"]), rate_cell(m["macro_f1"])]
            if fine:
                cells += [rate_cell(m["aggregated"]["exact_match"]), rate_cell(m["aggregated"]["exact_match_chains"])]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    keys = [k for k in (*MODEL_KINDS, "svm", "knn") if any(k in r for r in acc.values())]
    agg = metrics["target"] == "fine"
    head = [{"knn": "k-NN", "resnet": "ResNet"}.get(k, k.upper()) for k in keys]
    if agg:
        head += [f"{h} (aggregated)" for h in head]
    lines += ["| split | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for split, row in acc.items():
        cells = [f"{row[k]:.3f}" for k in keys]
        if agg:
            cells += [f"{row[k + '_aggregated']:.3f}" for k in keys]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

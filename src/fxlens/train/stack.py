"""`fxlens train stack`: boosted trees on a trained multi-label recognizer's logits and the clip features.

The recognizer ("base") stays as it is. On the train split of an fxset, each clip's 406 features and the base's 13
raw logits are the inputs of 13 binary gradient-boosted tree ensembles (scikit-learn's
`HistGradientBoostingClassifier`, one per fine effect class, the same multi-label targets the base was trained
on, chains included); their probabilities replace the base's. The trees split on single features, where the
network's feature branch smooths. Fitting them on the base's train logits is sound when the base is not
overfitted: the shipped recognizer scores 90.9 % on its own training clips and 90.0 % on val, so its train
logits look like those of clips it has never seen. Stacked on it, the trees separated dry from EQ'd clips
better (val 91.2 %) but heard real distorted guitars as EQ: not shipped (docs/benchmarks.md).

The result is an ordinary recognizer checkpoint (`StackedRecognizer`: the base's weights and the trees' node
arrays in one safetensors file), which `fxlens analyze`, `bench recognition` and `load_recognizer` read like any
other. Stacking a stacked recognizer refits the trees on its base.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from fxlens.errors import FxlensError
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.classifier import StackedRecognizer
from fxlens.models.trees import BoostedTrees
from fxlens.train import command_line
from fxlens.train.recognizer import (fxset_features, load_recognizer, model_card, multilabel_scores,
                                     multilabel_select, set_log_mels)

def trees_from_sklearn(models: list, n_inputs: int) -> BoostedTrees:
    """`BoostedTrees` holding fitted binary `HistGradientBoostingClassifier`s, output k = models[k] (a float
    instead: a constant raw score, no trees — a class that the train split has only one value of).

    Reads scikit-learn's fitted predictors (`_predictors`, `_baseline_prediction`: private, stable since 1.0; the
    tests compare the result with `predict_proba`, so a change would show there)."""
    cols = {k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "value")}
    roots, outputs, baseline = [], [], []
    offset, max_depth = 0, 0
    for k, m in enumerate(models):
        if isinstance(m, float):
            baseline.append(m)
            continue
        if getattr(m, "n_trees_per_iteration_", 1) != 1:
            raise FxlensError("only binary classifiers can be converted (one tree per iteration)")
        baseline.append(float(np.ravel(m._baseline_prediction)[0]))
        for (predictor,) in m._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise FxlensError("categorical splits are not supported")
            n = len(nodes)
            leaf = nodes["is_leaf"].astype(bool)
            here = np.arange(n, dtype=np.int64) + offset
            cols["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
            cols["threshold"].append(np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64))
            cols["left"].append(np.where(leaf, here, nodes["left"].astype(np.int64) + offset))
            cols["right"].append(np.where(leaf, here, nodes["right"].astype(np.int64) + offset))
            cols["missing_left"].append(nodes["missing_go_to_left"].astype(bool) & ~leaf)
            cols["value"].append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
            roots.append(offset)
            outputs.append(k)
            max_depth = max(max_depth, int(nodes["depth"].max()))
            offset += n
    trees = BoostedTrees(n_inputs, len(models), len(roots), offset, max_depth)
    for name, parts in cols.items():
        if parts:  # none when every output is a constant
            getattr(trees, name).copy_(torch.from_numpy(np.concatenate(parts)))
    trees.root.copy_(torch.tensor(roots, dtype=torch.int64))
    trees.output.copy_(torch.tensor(outputs, dtype=torch.int64))
    trees.baseline.copy_(torch.tensor(baseline, dtype=torch.float64))
    return trees


def train_stack(fxset: str | os.PathLike, recognizer: str | os.PathLike, out: str | os.PathLike,
                cross_domain: str | os.PathLike | None = None, max_iter: int = 300, seed: int = 0,
                progress: Callable[[str, int, int], None] | None = None, workers: int = 1) -> dict:
    """Fit the trees on the train split of `fxset` under the multi-label recognizer at `recognizer` (a stacked one:
    its base), evaluate on val / test / ood (and `cross_domain`, never fitted on), save `out/`. Returns the metrics.

    `max_iter`: boosting iterations per class at most (scikit-learn stops earlier when a held-out tenth of the
    train clips stops improving); `seed`: that split's and the trees' random state. `workers`: processes computing
    features and log-mels not yet cached."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if int(max_iter) < 1:
        raise FxlensError(f"--max-iter must be >= 1, got {max_iter}")
    base, base_cfg = load_recognizer(recognizer)  # a missing or foreign checkpoint fails before any work
    if isinstance(base, StackedRecognizer):
        base, base_cfg = base.base, base_cfg["base"]
    if not getattr(base, "multilabel", False):
        raise FxlensError(f"'{recognizer}' is a single-label recognizer: stacking needs a multi-label one "
                          "(fxlens train recognizer --multilabel)")
    t0 = time.perf_counter()
    feature_set, classes = base_cfg["feature_set"], list(base_cfg["classes"])
    reads_audio = base.input_kind == "features+audio"

    data = fxset_features(fxset, feature_set, cross_domain, progress, workers)
    inputs, targets = {}, {}
    for name, (f, lab) in data.items():
        if not lab:
            continue
        mels = set_log_mels(base, fxset, cross_domain, name, list(range(len(lab))), progress, workers) \
            if reads_audio else None
        with torch.no_grad():
            z = torch.cat([base(f[r]) if mels is None else base(f[r], mels[r].float())
                           for r in torch.arange(len(lab)).split(512)])
        inputs[name] = torch.cat([f.double(), z.double()], dim=1).numpy()
        targets[name] = multilabel_select(f, lab, classes)[1].numpy()

    models: list = []
    for k, c in enumerate(classes):
        if progress:
            progress("trees", k, len(classes))
        y = targets["train"][:, k]
        if y.min() == y.max():  # no clip of this class (or only such clips): its log-odds, smoothed, and no trees
            positives = float(y.sum())
            models.append(float(np.log((positives + 0.5) / (len(y) - positives + 0.5))))
            continue
        models.append(HistGradientBoostingClassifier(max_iter=int(max_iter), random_state=seed)
                      .fit(inputs["train"], y))
    if progress:
        progress("trees", len(classes), len(classes))
    model = StackedRecognizer(base, trees_from_sklearn(models, inputs["train"].shape[1])).eval()

    metrics: dict = {"classes": classes, "target": "multilabel", "feature_set": feature_set, "model": "stacked",
                     "base_model": base_cfg.get("model", "mlp"), "recognizer": str(recognizer),
                     "max_iter": int(max_iter),
                     "iterations": [0 if isinstance(m, float) else int(m.n_iter_) for m in models],
                     "nodes": int(model.trees.feature.numel()), "accuracy": {}, "counts": {}, "multilabel": {},
                     "multilabel_base": {}}
    for name, x in inputs.items():
        metrics["counts"][name] = len(x)
        with torch.no_grad():
            prob = torch.sigmoid(model.trees(torch.from_numpy(x))).numpy()
            base_prob = torch.sigmoid(torch.from_numpy(x[:, -len(classes):]) / base.temperature).numpy()
        labels = data[name][1]
        metrics["multilabel"][name] = multilabel_scores(prob, targets[name], classes, labels)
        metrics["multilabel_base"][name] = multilabel_scores(base_prob, targets[name], classes, labels)
        metrics["accuracy"][name] = {"stacked": metrics["multilabel"][name]["exact_match"]}
    metrics["seconds"] = time.perf_counter() - t0
    config = {key: base_cfg[key] for key in ("kind", "feature_set", "n_features", "classes", "target",
                                             "sample_rate") if key in base_cfg}
    config.update({"multilabel": True, "temperature": 1.0, "model": "stacked", "base": base_cfg,
                   "trees": model.trees.config()})
    save_checkpoint(out, model.state_dict(), config, model_card(metrics, fxset, cross_domain, command_line()),
                    metrics)
    return metrics

"""`fxlens bench recognition`: effect recognition and parameter estimation, in-domain and cross-domain.

Recognition (aggregated classes: dry, delay, reverb, modulation, tremolo, distortion, compression, eq) on the
single-effect clips of an fxset's test and ood splits (in-domain implementation; ood = held-out soundfont and
instruments) and, when given, of every split of a cross-domain fxset rendered by pedalboard (never trained on):
accuracy, per-class precision and recall, confusion matrix. A fine-class recognizer's probabilities are summed per
aggregated class; its fine accuracy is reported too (in-domain only: pedalboard's classes are the same names).
Beside it, AutoFX's own protocol (``"autofx_classes"``): the clips of the paper's six aggregated classes (its
Table 4.2: dry, delay, reverb, modulation, tremolo, distortion), each decided among those six.

Parameter estimation on the test and ood splits, given the true fine class (as AutoFX §5.3 reports it): mean
absolute error of the normalized controls per class and parameter, beside uniform random controls (exact
expectation) and the class's mean train control. Parameters that a class fixes are left out of the averages.
Beside AutoFX's Table C.2 (``"autofx_table_c2"``): its 15 controls matched to fxlens's, errors in physical units
and on the paper's scale (`autofx_parameter_table`).
Either estimator kind (feature MLP or log-mel ResNet-FiLM) is read from its checkpoint.

Re-rendered estimates (``mrstft_clips`` per class of test and ood, 0 to skip): each clip's estimated controls are
rendered through the class's fxlens effect on the clip's dry source (re-read from the stem dataset) and compared to
the wet clip with auraloss's multi-resolution STFT distance, level-matched, beside the dry source itself, uniform
random controls, the class-mean controls and the true controls (`fxlens.train.estimator.spectral_scores`); the
estimate is scored as the model gives it and as `fxlens analyze` reports it, with the parameters of
`fxlens.models.estimator.REFINEMENTS` (a tremolo's or vibrato's rate, a delay's time) re-read from the wet clip
("estimate refined").

Real recordings (``real=True``, when the Frets on Fire songs are installed: `fxlens.data.real`): the isolated lead
guitar stem of each song, distorted by its producer through a real amplifier chain, is cut into the 1.5 s windows
`fxlens analyze` reads (at most 40 per song) and each window is read as `analyze` would: how many windows have
distortion detected (its group's probability >= 0.5; a single-label recognizer: the top class), and what each
window's strongest reading is. There are no labels beyond "this stem is distorted" (the songs' other effects,
reverb and delay among them, are not known), so this is a readout, not an accuracy.

Dry stems read whole (``dry_stems``, default 60): stems of the first in-domain split's songs as rendered, no effect
on them, each read by `fxlens.analyze` as a recording (all its windows, averaged): how many get an effect reported
and how many get the part-of-recording hint — false alarms on whole recordings rather than on 1.5 s clips.

Choosing between models: ``splits=["val"]`` (``--splits val``) reads the val split of both sets instead, so no
test figure is computed before the choice.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fxlens.data.fxset import (AGGREGATED_CLASSES, AUTOFX_CLASSES, FXSET_CLASSES, aggregate_probabilities,
                               aggregated_of)
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.models.estimator import REFINEMENTS

SPLITS_IN_DOMAIN = ("test", "ood")
SPLITS_CROSS = ("train", "val", "test", "ood")


def confusion_metrics(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict:
    """Accuracy, per-class precision / recall / support and the confusion matrix (rows: truth, columns: prediction)."""
    idx = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y_true, y_pred):
        conf[idx[t], idx[p]] += 1
    per_class = {}
    for i, c in enumerate(classes):
        col, row = conf[:, i].sum(), conf[i].sum()
        per_class[c] = {"precision": float(conf[i, i] / col) if col else None,
                        "recall": float(conf[i, i] / row) if row else None, "support": int(row)}
    n = int(conf.sum())
    return {"accuracy": float(np.trace(conf) / n) if n else None, "clips": n, "classes": list(classes),
            "per_class": per_class, "confusion": conf.tolist()}


def strongest_groups(agg_probs: np.ndarray, multilabel: bool, threshold: float = 0.5,
                     allowed: tuple[str, ...] | None = None) -> list[str]:
    """Per row of aggregated-group probabilities, the reading `fxlens analyze` gives a single effect: a multi-label
    model's most probable group if it passes `threshold`, else "dry"; a single-label model's top class.
    `allowed`: decide among these groups only (the others' outputs are ignored, as if the model did not have them)."""
    agg_probs = np.array(agg_probs, dtype=float)
    if multilabel:
        agg_probs[:, AGGREGATED_CLASSES.index("dry")] = threshold
    if allowed is not None:
        agg_probs[:, [k for k, a in enumerate(AGGREGATED_CLASSES) if a not in allowed]] = -np.inf
    return [AGGREGATED_CLASSES[k] for k in agg_probs.argmax(1)]


def _single(labels: list[dict]) -> list[int]:
    return [i for i, r in enumerate(labels) if len(r.get("fine_labels", [])) == 1]


def recognition_scores(model, classes: list[str], features: torch.Tensor, labels: list[dict],
                       mels: torch.Tensor | None = None) -> dict:
    """Aggregated (and, for fine recognizers, fine) recognition metrics of single-effect clips; for a multi-label
    recognizer also its set metrics over every clip, chains included (``"multilabel"``: exact match, per-class F1;
    `fxlens.train.recognizer.multilabel_scores`). `mels`: the clips' log-mels, for a recognizer that reads them
    (``input_kind == "features+audio"``)."""
    keep = _single(labels)
    if not keep:
        return {"clips": 0}
    multilabel = getattr(model, "multilabel", False)
    rows_scored = list(range(len(labels))) if multilabel else keep  # a multi-label model is scored on chains too
    with torch.no_grad():
        probs = torch.cat([model.probabilities(features[rows], None if mels is None else mels[rows].float())
                           for rows in torch.tensor(rows_scored).split(256)]).numpy()
    chains = None
    if multilabel:
        from fxlens.train.recognizer import multilabel_scores, multilabel_select

        chains = multilabel_scores(probs, multilabel_select(features, labels, classes)[1].numpy(), classes, labels)
        probs = probs[keep]
    fine_model = all(c in FXSET_CLASSES for c in classes) and any(c not in AGGREGATED_CLASSES for c in classes)
    agg_of = aggregated_of(classes)
    agg = aggregate_probabilities(classes, probs, multilabel)
    pred = strongest_groups(agg, multilabel)
    truth = [labels[i]["aggregated_class"] for i in keep]
    present = [a for a in AGGREGATED_CLASSES if a in set(truth) or a in agg_of or a == "dry"]
    out = {"aggregated": confusion_metrics(truth, pred, present)}
    # AutoFX's protocol (its Table 4.2): the clips of its six aggregated classes, each decided among those six
    rows = [j for j, a in enumerate(truth) if a in AUTOFX_CLASSES]
    if rows:
        paper_pred = strongest_groups(agg[rows], multilabel, allowed=AUTOFX_CLASSES)
        out["autofx_classes"] = confusion_metrics([truth[j] for j in rows], paper_pred,
                                                  [a for a in AUTOFX_CLASSES if a in present or a in paper_pred])
    if fine_model:
        ft = [labels[i]["fine_class"] for i in keep]
        if multilabel:  # the most probable member of the group chosen above (as `analyze`), "dry" for none
            fp = ["dry" if a == "dry" else classes[max((j for j, g in enumerate(agg_of) if g == a),
                                                       key=lambda j: row[j])] for row, a in zip(probs, pred)]
        else:
            fp = [classes[k] for k in probs.argmax(1)]
        fine_names = classes + (["dry"] if multilabel and "dry" not in classes else [])
        # truth classes the model has no output for (AutoFX's parameter protocol classes) are rows of their own
        out["fine"] = confusion_metrics(ft, fp, [c for c in fine_names if c in set(ft) or c in fp]
                                        + sorted(set(ft) - set(fine_names)))
    if chains is not None:
        out["multilabel"] = chains
    return out


# AutoFX's Table C.2 (its test set: single guitar notes through pedalboard's Chorus, Delay and Distortion + two
# shelves; MAE of controls normalized linearly over the ranges of its §5.1) beside the fxlens parameter that is the
# same control: (AutoFX group, AutoFX parameter, AutoFX range, unit, MAE "AutoFX", MAE "AutoFX-feat", fxlens fine
# classes, fxlens parameter). Errors are compared in physical units, and on AutoFX's scale (divided by its range).
# fxlens's classes of each group (AutoFX: one Chorus for all modulation), and AutoFX's own protocol's classes
_MODULATION = ("chorus", "flanger", "vibrato", "autofx_modulation")
_DELAY = ("slapback_delay", "feedback_delay", "autofx_delay")
_DRIVE = ("overdrive", "distortion", "fuzz", "autofx_distortion")
AUTOFX_TABLE_C2 = (
    ("modulation", "rate", (0.1, 10.0), "Hz", 0.012, 0.0065, _MODULATION, "rate_hz"),
    ("modulation", "depth", (0.0, 1.0), "", 0.032, 0.026, _MODULATION, "depth"),
    ("modulation", "centre-delay", (0.0, 20.0), "ms", 0.036, 0.037, _MODULATION, "delay_ms"),
    ("modulation", "feedback", (0.0, 1.0), "", 0.031, 0.028, _MODULATION, "feedback"),
    ("modulation", "mix", (0.0, 1.0), "", 0.025, 0.022, _MODULATION, "mix"),
    ("delay", "delay", (0.0, 1000.0), "ms", 0.011, 0.014, _DELAY, "time_ms"),
    ("delay", "feedback", (0.0, 1.0), "", 0.050, 0.035, _DELAY, "feedback"),
    ("delay", "mix", (0.0, 1.0), "", 0.024, 0.019, _DELAY, "mix"),
    ("distortion", "drive-db", (0.0, 60.0), "dB", 0.063, 0.019, _DRIVE, "drive_db"),
    ("distortion", "cutoff-hi", (500.0, 2000.0), "Hz", 0.054, 0.044, _DRIVE, "high_shelf_freq"),
    ("distortion", "gain-hi", (-10.0, 10.0), "dB", 0.033, 0.014, _DRIVE, "high_shelf_gain"),
    ("distortion", "Q-hi", (0.5, 2.0), "", 0.079, 0.074, _DRIVE, "high_shelf_q"),
    ("distortion", "cutoff-lo", (50.0, 500.0), "Hz", 0.070, 0.052, _DRIVE, "low_shelf_freq"),
    ("distortion", "gain-lo", (-10.0, 10.0), "dB", 0.030, 0.024, _DRIVE, "low_shelf_gain"),
    ("distortion", "Q-lo", (0.5, 2.0), "", 0.053, 0.051, _DRIVE, "low_shelf_q"),
)


def autofx_parameter_table(model, features: torch.Tensor, labels: list[dict], fxset: str | os.PathLike,
                           class_mean: dict[str, torch.Tensor] | None = None, random_draws: int = 64,
                           seed: int = 0) -> dict:
    """The estimator's errors on AutoFX Table C.2's parameters, true fine class given, in physical units and on
    AutoFX's scale (physical error / AutoFX's range), beside the class-mean controls and uniform random controls
    over fxlens's declared range (`random_draws` seeded draws per clip). "as analyze reports" re-reads the
    parameters of `fxlens.models.estimator.REFINEMENTS` (a delay's time) from the wet clip, as `fxlens analyze`
    does; elsewhere it is the model's estimate. A parameter that a class pins (a vibrato's mix) is left out for it.
    `features`: the model's inputs, one row per label.

    AutoFX's own figures are in another accounting (its code, ``validation_step`` of ``source/models/AutoFX.py`` and
    ``simpleMLP.py``): the mean over a batch of all three effects' clips of ``|pred - label|`` after the other
    effects' entries are zeroed in both, so each parameter's figure is its effect's MAE times that effect's share of
    the clips (about a third). ``autofx_accounting`` reports fxlens's errors that way for the comparison with the
    paper: a row's errors summed over its clips, divided by the clips of every effect in the table."""
    from fxlens.audio import WORKING_SAMPLE_RATE
    from fxlens.models.estimator import refine_controls
    from fxlens.train.estimator import ClipEffects, fixed_parameters, predict, targets
    from fxlens.train.inputs import load_clip

    idx = _single(labels)
    t, _, onehot, names, keep = targets(model, labels, idx)
    if not names:
        return {"clips": 0}
    pred = predict(model, features[keep], onehot)
    clip_effect = ClipEffects()
    g = torch.Generator().manual_seed(seed)
    table_classes = {c for row in AUTOFX_TABLE_C2 for c in row[6]}
    n_table = sum(c in table_classes for c in names)  # AutoFX's accounting divides by every effect's clips
    rows = []
    for group, param, (lo, hi), unit, mae_autofx, mae_feat, classes, ours in AUTOFX_TABLE_C2:
        err: dict[str, list[float]] = {"model": [], "as analyze reports": [], "class mean": [], "random": []}
        for j, (i, c) in enumerate(zip(keep, names)):
            if c not in classes or ours in fixed_parameters(c):
                continue
            effect = clip_effect(labels[i])
            a, b = model.offsets[model.class_slots[c]]
            k = effect.param_names.index(ours)
            spec = effect.specs[k]
            truth = float(spec.to_physical(t[j, a + k].double()))
            est = float(spec.to_physical(pred[j, a + k].double()))
            err["model"].append(abs(est - truth))
            ref = REFINEMENTS.get(c)
            if ref is not None and ref.param == ours:  # one row per clip: its class's refined parameter
                wet = load_clip(fxset, labels[i], WORKING_SAMPLE_RATE)
                refined = refine_controls(c, effect, pred[j:j + 1, a:b], wet, WORKING_SAMPLE_RATE)[0]
                est = float(spec.to_physical(refined[k].double()))
            err["as analyze reports"].append(abs(est - truth))
            if class_mean is not None and c in class_mean:
                err["class mean"].append(abs(float(spec.to_physical(class_mean[c][k].double())) - truth))
            draws = spec.to_physical(torch.rand(random_draws, generator=g, dtype=torch.float64))
            err["random"].append(float((draws - truth).abs().mean()))
        if not err["model"]:
            continue
        physical = {n: float(np.mean(v)) for n, v in err.items() if v}
        rows.append({"group": group, "autofx_parameter": param, "fxlens_parameter": ours, "classes": list(classes),
                     "unit": unit, "autofx_range": [lo, hi], "clips": len(err["model"]), "physical": physical,
                     "autofx_scale": {n: v / (hi - lo) for n, v in physical.items()},
                     "autofx_accounting": {n: float(np.sum(err[n])) / (hi - lo) / n_table
                                           for n in ("model", "as analyze reports")},
                     "autofx": mae_autofx, "autofx_feat": mae_feat})
    if not rows:
        return {"clips": 0}
    mean = {n: float(np.mean([r["autofx_scale"][n] for r in rows if n in r["autofx_scale"]]))
            for n in rows[0]["autofx_scale"]}
    mean["autofx"] = float(np.mean([r["autofx"] for r in rows]))  # the paper's, over the same parameters
    mean["autofx_feat"] = float(np.mean([r["autofx_feat"] for r in rows]))
    accounting = {n: float(np.mean([r["autofx_accounting"][n] for r in rows])) for n in rows[0]["autofx_accounting"]}
    return {"clips": len(names), "table_clips": n_table, "rows": rows, "mean_autofx_scale": mean,
            "mean_autofx_accounting": accounting}


def window_readings(model, config: dict, windows: torch.Tensor, threshold: float = 0.5) -> list[tuple[str, bool]]:
    """Per window (N, 2, W) of 44.1 kHz audio, as `fxlens analyze` decides: (the strongest reading — the most
    probable aggregated group that passes `threshold`, else "dry"; a single-label model: its top class —, whether
    distortion is detected)."""
    from fxlens.tasks.analyze import window_probabilities

    classes = list(config["classes"])
    multilabel = bool(config.get("multilabel", False))
    probs = window_probabilities(model, config, windows)[1].numpy()
    agg = aggregate_probabilities(classes, probs, multilabel)
    top = strongest_groups(agg, multilabel, threshold)
    if multilabel:
        detected = (agg[:, AGGREGATED_CLASSES.index("distortion")] >= threshold).tolist()
    else:
        detected = [t == "distortion" for t in top]
    return list(zip(top, detected))


def real_guitar_readout(model, config: dict, max_windows: int = 40,
                        progress: Callable[[str, int, int], None] | None = None) -> dict | None:
    """The readout of the Frets on Fire lead-guitar stems (module docstring); None when none is installed."""
    from fxlens import audio as fxaudio
    from fxlens.data.real import list_real_recordings
    from fxlens.tasks.analyze import windows

    songs = [r for r in list_real_recordings() if "electric_guitar" in r.stems]
    if not songs:
        return None
    per_song = {}
    for k, rr in enumerate(songs):
        stem = fxaudio.load(rr.stems["electric_guitar"], sample_rate=fxaudio.WORKING_SAMPLE_RATE)
        readings = window_readings(model, config, windows(stem, max_windows=max_windows))
        per_song[rr.name] = {"collection": rr.collection, "windows": len(readings),
                             "distortion_detected": sum(d for _, d in readings),
                             "readings": dict(Counter(r for r, _ in readings).most_common())}
        if progress:
            progress("real guitar stems", k + 1, len(songs))
    n = sum(v["windows"] for v in per_song.values())
    hit = sum(v["distortion_detected"] for v in per_song.values())
    return {"windows": n, "distortion_detected": hit, "share": hit / n if n else None, "songs": per_song}


def dry_stems_readout(fxset: str | os.PathLike, split: str, recognizer=None, estimator=None,
                      stems: str | os.PathLike | None = None, max_stems: int = 60, seed: int = 0,
                      progress: Callable[[str, int, int], None] | None = None) -> dict | None:
    """False alarms on whole recordings: up to `max_stems` dry stems of the songs of `split` (drawn with `seed`),
    each read whole by `fxlens.analyze` (windows, averaging, threshold 0.5). Returns how many get an effect reported
    (every one is a false alarm: no effect is on them) and how many get the part-of-recording hint
    (`fxlens.tasks.analyze.heard_in_part`), with the classes named; None when the stems are not found."""
    import random

    from fxlens import audio as fxaudio
    from fxlens.data.fxset import read_labels
    from fxlens.data.stems import open_dataset
    from fxlens.tasks.analyze import analyze, heard_in_part

    labels = read_labels(fxset, split)
    if not labels or "song_path" not in labels[0]:
        return None
    root = Path(stems) if stems is not None else Path(labels[0]["song_path"]).parents[1]
    if not root.is_dir():
        return None
    songs = {r["song_id"] for r in labels}
    ds = open_dataset(root)
    pairs = [(ref, inst) for ref in ds.songs() if ref.song_id in songs for inst in ref.instruments]
    pairs = random.Random(seed).sample(pairs, min(int(max_stems), len(pairs)))
    reported, hinted, n_reported, n_hinted, read = Counter(), Counter(), 0, 0, 0
    for k, (ref, inst) in enumerate(pairs):
        try:
            result = analyze(ds.load_stem(ref, inst), fxaudio.WORKING_SAMPLE_RATE, recognizer=recognizer,
                             estimator=estimator)
        except InvalidAudioError:  # a silent or too short stem: nothing to read
            continue
        read += 1
        names = [d.aggregated_class for d in result.effects]
        hints = [h["aggregated_class"] for h in heard_in_part(result)]
        reported.update(names)
        hinted.update(hints)
        n_reported += bool(names)
        n_hinted += bool(hints)
        if progress:
            progress(f"dry stems ({split})", k + 1, len(pairs))
    return {"split": split, "stems": read, "reported": n_reported, "hinted": n_hinted,
            "reported_classes": dict(reported.most_common()), "hinted_classes": dict(hinted.most_common())}


def run_recognition_benchmark(fxset: str | os.PathLike, cross_domain: str | os.PathLike | None = None,
                              recognizer=None, estimator=None,
                              progress: Callable[[str, int, int], None] | None = None,
                              mrstft_clips: int = 0, stems: str | os.PathLike | None = None,
                              real: bool = True, splits: Sequence[str] | None = None, workers: int = 1,
                              dry_stems: int = 60) -> dict:
    """Evaluate a recognizer and an estimator (default: the shipped ones); returns the JSON-able results.

    `mrstft_clips`: clips per class of test and ood whose estimates are re-rendered and scored with the MRSTFT
    distance (0: none); `stems`: the dry stem dataset (default: where the fxset labels say it is); `real`: add the
    real lead-guitar readout (``"real_guitar"``, None when the songs are not installed). `splits`: the in-domain
    splits read (default test and ood, the benchmark) and, when given, the only cross-domain splits read too
    (default: all four) — ``["val"]`` to choose between models without reading a test split. `workers`: processes
    computing the features and log-mels of clips not yet cached. `dry_stems`: how many whole dry stems of the first
    in-domain split's songs `dry_stems_readout` reads (0: none)."""
    from fxlens.tasks.analyze import load_estimator, load_recognizer
    from fxlens.train.estimator import DrySources, evaluate, spectral_scores, split_inputs
    from fxlens.train.inputs import split_features, split_log_mels

    if mrstft_clips < 0:
        raise FxlensError("--mrstft-clips must be >= 0")
    in_domain = tuple(SPLITS_IN_DOMAIN if splits is None else splits)
    unknown = [s for s in in_domain if s not in SPLITS_CROSS]
    if not in_domain or unknown:
        raise FxlensError(f"unknown split(s) {', '.join(unknown) or '(none given)'}: use {', '.join(SPLITS_CROSS)}")
    dry = DrySources(stems)
    if mrstft_clips > 0:  # fail before the long part when the dry stems are not where the labels say
        from fxlens.data.fxset import read_labels

        try:
            dry.check(read_labels(fxset, in_domain[0]), f"the {in_domain[0]} split")
        except FxlensError as e:
            raise FxlensError(f"{e}; or skip the re-rendered estimates: --mrstft-clips 0") from None

    t0 = time.perf_counter()
    rec, rcfg = load_recognizer(recognizer)
    est, ecfg = load_estimator(estimator)
    sets = [("in-domain " + s, fxset, s) for s in in_domain]
    if cross_domain is not None:
        sets.append(("cross-domain (pedalboard)", cross_domain, SPLITS_CROSS if splits is None else in_domain))
    results: dict = {"recognizer": {"model": rcfg.get("model", "mlp"), "classes": rcfg["classes"],
                                    "feature_set": rcfg["feature_set"],
                                    "multilabel": bool(rcfg.get("multilabel", False))},
                     "fxset": str(fxset), "cross_domain": str(cross_domain) if cross_domain else None,
                     "splits": list(in_domain),
                     "recognition": {}, "estimation": {}}

    def feats(root, split, fs):
        cb = (lambda d, n: progress(f"features {split}", d, n)) if progress else None
        return split_features(root, split, progress=cb, feature_set=fs, workers=workers)

    reads_audio = rec.input_kind == "features+audio"
    for name, root, splits in sets:
        splits = (splits,) if isinstance(splits, str) else splits
        fs, ms, ls = [], [], []
        for s in splits:
            try:
                f, lab = feats(root, s, rcfg["feature_set"])
            except FxlensError:
                continue
            fs.append(f)
            ls += lab
            if reads_audio and lab:
                cb = (lambda d, n, s=s: progress(f"log-mels {s}", d, n)) if progress else None
                ms.append(split_log_mels(root, s, rec, progress=cb, workers=workers)[0])
        if not ls:
            continue
        results["recognition"][name] = recognition_scores(rec, list(rcfg["classes"]), torch.cat(fs), ls,
                                                          torch.cat(ms) if ms else None)
    if real:
        results["real_guitar"] = real_guitar_readout(rec, rcfg, progress=progress)
    if dry_stems > 0:
        results["dry_stems"] = dry_stems_readout(fxset, in_domain[0], recognizer, estimator, stems, dry_stems,
                                                 progress=progress)
    class_mean = {c: torch.tensor(v) for c, v in ecfg.get("class_mean", {}).items()}
    results["estimator"] = {"model": ecfg.get("model", "mlp"), "feature_set": ecfg.get("feature_set")}
    for s in in_domain:
        cb = (lambda d, n, s=s: progress(f"estimator inputs {s}", d, n)) if progress else None
        try:
            f, lab = split_inputs(est, ecfg, fxset, s, progress=cb, workers=workers)
        except FxlensError:
            continue
        results["estimation"][s] = evaluate(est, f, lab, ecfg["slot_info"], class_mean or None)
        results.setdefault("autofx_table_c2", {})[s] = autofx_parameter_table(est, f, lab, fxset, class_mean or None)
        if mrstft_clips > 0:
            cb = (lambda d, n, s=s: progress(f"MRSTFT {s}", d, n)) if progress else None
            results.setdefault("spectral", {})[s] = spectral_scores(
                {"estimate": est}, f, lab, fxset, ecfg["slot_info"], class_mean or None, mrstft_clips, dry,
                progress=cb, refine=True)
    results["seconds"] = time.perf_counter() - t0
    return results


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items()) or "-"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown_report(results: dict) -> str:
    """The benchmark as Markdown: accuracy table, per-class precision/recall, confusion matrices, parameter MAE,
    MRSTFT of re-rendered estimates."""
    from fxlens.train.estimator import spectral_table

    rec = results["recognition"]
    lines = ["## Effect recognition (aggregated classes)", "", "| set | clips | accuracy % | fine accuracy % |",
             "|---|---|---|---|"]
    for name, r in rec.items():
        if not r.get("clips", 1):
            continue
        fine = r.get("fine", {}).get("accuracy")
        lines.append(f"| {name} | {r['aggregated']['clips']} | {_pct(r['aggregated']['accuracy'])} | {_pct(fine)} |")
    paper = {n: r["autofx_classes"] for n, r in rec.items() if "autofx_classes" in r}
    if paper:
        lines += ["", "### AutoFX's protocol: its six aggregated classes (Table 4.2; its result: 97.2 %)", "",
                  "The clips of " + ", ".join(AUTOFX_CLASSES) + ", each decided among those six (EQ and compression "
                  "outputs ignored).", "", "| set | clips | accuracy % | " + " | ".join(
                      f"{a} recall %" for a in AUTOFX_CLASSES) + " |", "|---|---|---|" + "---|" * len(AUTOFX_CLASSES)]
        for n, m in paper.items():
            cells = [_pct((m["per_class"].get(a) or {}).get("recall")) for a in AUTOFX_CLASSES]
            lines.append(f"| {n} | {m['clips']} | {_pct(m['accuracy'])} | " + " | ".join(cells) + " |")
    lines += ["", "### Per-class precision / recall (%)", ""]
    names = [n for n, r in rec.items() if "aggregated" in r]
    lines.append("| class | " + " | ".join(f"{n} P / R" for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for a in AGGREGATED_CLASSES:
        cells = []
        for n in names:
            pc = rec[n]["aggregated"]["per_class"].get(a)
            cells.append("-" if pc is None else f"{_pct(pc['precision'])} / {_pct(pc['recall'])}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    for n in names:
        m = rec[n]["aggregated"]
        lines += ["", f"### Confusion matrix, {n} (rows: truth, columns: prediction)", "",
                  "| | " + " | ".join(m["classes"]) + " |", "|---|" + "---|" * len(m["classes"])]
        for c, row in zip(m["classes"], m["confusion"]):
            lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    ml = {n: r["multilabel"] for n, r in rec.items() if "multilabel" in r}
    if ml:
        fine = any("aggregated" in m for m in ml.values())
        head = ["exact match %", "chains: exact match %", "macro F1"]
        head += ["aggregated: exact match %", "aggregated, chains: exact match %"] if fine else []
        lines += ["", "## Multi-label recognition, every clip (chains included)", "",
                  "| set | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for n, m in ml.items():
            cells = [_pct(m["exact_match"]), _pct(m["exact_match_chains"]),
                     "-" if m["macro_f1"] is None else f"{m['macro_f1']:.3f}"]
            if fine:
                cells += [_pct(m["aggregated"]["exact_match"]), _pct(m["aggregated"]["exact_match_chains"])]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    est = results.get("estimation", {})
    if est:
        lines += ["", "## Parameter estimation (MAE of normalized controls, true class given)", ""]
        splits = [s for s in est if est[s].get("clips")]
        lines.append("| class | effect | " + " | ".join(f"{s} model / random / class mean" for s in splits) + " |")
        lines.append("|---|---|" + "---|" * len(splits))
        classes = sorted({c for s in splits for c in est[s]["per_class"]})
        for c in classes:
            cells, effect = [], ""
            for s in splits:
                v = est[s]["per_class"].get(c)
                if v is None or v["model"] is None:
                    cells.append("-")
                    continue
                effect = v["effect"]
                cells.append(f"{v['model']:.3f} / {v['random']:.3f} / {v['class_mean']:.3f}"
                             if v["class_mean"] is not None else f"{v['model']:.3f} / {v['random']:.3f} / -")
            lines.append(f"| {c} | {effect} | " + " | ".join(cells) + " |")
        cells = []
        for s in splits:
            m = est[s]["mean"]
            cells.append(f"**{m['model']:.3f}** / {m['random']:.3f} / "
                         + ("-" if m["class_mean"] is None else f"{m['class_mean']:.3f}"))
        lines.append("| all (mean over parameters) | | " + " | ".join(cells) + " |")
        first = splits[0] if splits else None
        lines += ["", f"### Per parameter ({first})", "", "| class | parameter | model | random | class mean |",
                  "|---|---|---|---|---|"]
        if first is not None:
            for c, v in est[first]["per_class"].items():
                for p, pv in v["params"].items():
                    if pv["fixed"]:
                        continue
                    cm = "-" if pv["class_mean"] is None else f"{pv['class_mean']:.3f}"
                    lines.append(f"| {c} | {p} | {pv['model']:.3f} | {pv['random']:.3f} | {cm} |")
    for s, tab in results.get("autofx_table_c2", {}).items():
        if not tab.get("rows"):
            continue
        lines += ["", f"## Beside AutoFX's Table C.2 ({s}; true class given)", "",
                  "Mean absolute error on AutoFX's scale (the physical error divided by AutoFX's range) and in "
                  "physical units. \"as analyze reports\": with a delay's time re-read from the audio. AutoFX's "
                  "own figures are in its code's accounting (each effect's MAE times its share of the clips, about "
                  "a third): fxlens's errors in that accounting are the column next to them.", "",
                  "| group | AutoFX parameter (fxlens) | clips | AutoFX | AutoFX-feat | fxlens as analyze reports, "
                  "AutoFX's accounting | fxlens | fxlens as analyze reports | class mean | random | "
                  "fxlens, physical | AutoFX-feat, physical |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in tab["rows"]:
            sc, ph, (lo, hi) = r["autofx_scale"], r["physical"], r["autofx_range"]
            unit = f" {r['unit']}" if r["unit"] else ""
            lines.append(
                f"| {r['group']} | {r['autofx_parameter']} ({r['fxlens_parameter']}) | {r['clips']} | "
                f"{r['autofx']:.3f} | {r['autofx_feat']:.3f} | {r['autofx_accounting']['as analyze reports']:.3f} | "
                f"{sc['model']:.3f} | {sc['as analyze reports']:.3f} | "
                + ("-" if "class mean" not in sc else f"{sc['class mean']:.3f}") + f" | {sc['random']:.3f} | "
                f"{ph['as analyze reports']:.3g}{unit} | {r['autofx_feat'] * (hi - lo):.3g}{unit} |")
        m = tab["mean_autofx_scale"]
        acc = tab["mean_autofx_accounting"]["as analyze reports"]
        lines.append(f"| **mean** | | | {m['autofx']:.3f} | {m['autofx_feat']:.3f} | **{acc:.3f}** | "
                     f"{m['model']:.3f} | "
                     f"**{m['as analyze reports']:.3f}** | "
                     + ("-" if "class mean" not in m else f"{m['class mean']:.3f}") + f" | {m['random']:.3f} | | |")
    guitar = results.get("real_guitar")
    if guitar:
        lines += ["", "## Real recordings: the Frets on Fire lead-guitar stems (distorted by their producers)", "",
                  "Each 1.5 s window read as `fxlens analyze` reads it; no labels beyond \"distorted\": a readout, "
                  "not an accuracy.", "", "| song | windows | distortion detected % | strongest readings |",
                  "|---|---|---|---|"]
        for name, v in guitar["songs"].items():
            top = ", ".join(f"{r} {c}" for r, c in v["readings"].items())
            lines.append(f"| {name} | {v['windows']} | {_pct(v['distortion_detected'] / max(v['windows'], 1))} "
                         f"| {top} |")
        lines.append(f"| **all** | {guitar['windows']} | **{_pct(guitar['share'])}** | |")
    drs = results.get("dry_stems")
    if drs and drs["stems"]:
        n = drs["stems"]
        lines += ["", f"## Dry stems read whole, as `fxlens analyze` reads a recording ({drs['split']} songs)", "",
                  "No effect is on these stems: every effect named is a false alarm.", "",
                  "| stems | an effect reported | classes | part-of-recording hint | classes |",
                  "|---|---|---|---|---|",
                  f"| {n} | {_pct(drs['reported'] / n)} | {_counts(drs['reported_classes'])} | "
                  f"{_pct(drs['hinted'] / n)} | {_counts(drs['hinted_classes'])} |"]
    for s, sc in results.get("spectral", {}).items():
        lines += ["", f"## Re-rendered estimates, {s}: MRSTFT to the wet clip (level-matched; lower is better)", "",
                  *spectral_table(sc)]
        refined = [(c, p, v["control_mae"]) for c, v in sc["per_class"].items()
                   if c in REFINEMENTS for p in [REFINEMENTS[c].param]
                   if "estimate refined" in v.get("control_mae", {})]
        if refined:
            lines += ["", f"Refined from the audio ({s}, the same clips): MAE of the normalized control", "",
                      "| class | parameter | estimate | estimate refined |", "|---|---|---|---|"]
            lines += [f"| {c} | {p} | {m['estimate'][p]:.3f} | {m['estimate refined'][p]:.3f} |" for c, p, m in refined]
    return "\n".join(lines) + "\n"

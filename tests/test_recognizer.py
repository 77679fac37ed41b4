"""`fxlens train recognizer` end to end on a tiny fxset; checkpoint kind checks."""

import json

import numpy as np
import pytest
import torch

from fxlens.data import fxset
from fxlens.errors import CheckpointError, FxlensError
from fxlens.models.checkpoint import load_checkpoint
from fxlens.models.classifier import FeatureClassifier
from fxlens.train.recognizer import train_recognizer
from test_fxset import stems, tiny_fxset_of  # noqa: F401  (the tiny synthetic stem dataset fixture)


@pytest.fixture(scope="module")
def tiny_fxset(stems, tmp_path_factory):  # noqa: F811
    return tiny_fxset_of(stems, tmp_path_factory, "fxset-rec", seed=1)


def test_train_recognizer_writes_a_loadable_checkpoint(tiny_fxset, tmp_path):
    out = tmp_path / "rec"
    metrics = train_recognizer(tiny_fxset, out, target="fine", epochs=30, seed=0)
    assert set(metrics["accuracy"]) >= {"train", "val", "test"}
    for row in metrics["accuracy"].values():
        assert set(row) == {"mlp", "svm", "knn", "mlp_aggregated", "svm_aggregated", "knn_aggregated"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert metrics["accuracy"]["train"]["mlp"] >= 0.75  # the MLP can fit 8 clips of 4 very different classes
    state, config = load_checkpoint(out, "recognizer")
    model = FeatureClassifier(config["classes"], n_features=config["n_features"], hidden=tuple(config["hidden"]))
    model.load_state_dict(state)
    assert (out / "MODEL_CARD.md").read_text().startswith("# recognizer")
    assert json.loads((out / "metrics.json").read_text())["classes"] == config["classes"]
    # the features were cached beside the clips and are reused
    assert config["feature_set"] == "fxlens-406" and config["n_features"] == 406
    assert (tiny_fxset / "train" / "features-fxlens-406.pt").is_file()


def test_wrong_or_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path, "recognizer")
    (tmp_path / "config.json").write_text(json.dumps({"kind": "encoder"}))
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="'encoder' checkpoint"):
        load_checkpoint(tmp_path, "recognizer")
    (tmp_path / "config.json").write_text(json.dumps({"kind": "recognizer"}))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path, "recognizer")


def test_standardization_uses_train_statistics():
    model = FeatureClassifier(["a", "b"], n_features=3)
    x = torch.randn(50, 3) * 4 + 2
    model.set_standardization(x)
    assert torch.allclose(model.feature_mean, x.mean(0)) and torch.allclose(model.feature_std, x.std(0))


def test_fine_accuracy_aggregates_to_the_coarse_classes(tiny_fxset, tmp_path):
    """Aggregated accuracy of a fine recognizer is at least its fine accuracy (merging classes only helps)."""
    metrics = train_recognizer(tiny_fxset, tmp_path / "rec", target="fine", epochs=5, seed=0, baselines=False)
    for row in metrics["accuracy"].values():
        assert set(row) == {"mlp", "mlp_aggregated"} and row["mlp_aggregated"] >= row["mlp"]


def test_autofx_feature_set_still_available(tiny_fxset, tmp_path):
    metrics = train_recognizer(tiny_fxset, tmp_path / "rec163", epochs=3, feature_set="autofx-163", baselines=False)
    assert metrics["feature_set"] == "autofx-163"
    assert load_checkpoint(tmp_path / "rec163", "recognizer")[1]["n_features"] == 163
    with pytest.raises(FxlensError, match="unknown feature set"):
        train_recognizer(tiny_fxset, tmp_path / "x", feature_set="mfcc-13")


@pytest.fixture(scope="module")
def tiny_chains(stems, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fxset-chains")
    fxset.build_fxset(stems, out, clips_per_class=1, seed=4, chains=True, chain_clips=3,
                      classes=["dry", "feedback_delay", "fuzz", "tremolo"])
    return out


def test_multilabel_recognizer_on_chains(tiny_chains, tmp_path):
    metrics = train_recognizer(tiny_chains, tmp_path / "ml", multilabel=True, epochs=5, seed=0)
    state, config = load_checkpoint(tmp_path / "ml", "recognizer")
    assert config["multilabel"] is True and "dry" not in config["classes"]
    model = FeatureClassifier(config["classes"], n_features=config["n_features"], hidden=tuple(config["hidden"]),
                              multilabel=True)
    model.load_state_dict(state)
    p = model.probabilities(torch.randn(4, config["n_features"]))
    assert p.shape == (4, 7) and bool(((p > 0) & (p < 1)).all())  # independent sigmoids, not a softmax
    train = metrics["multilabel"]["train"]
    assert train["exact_match_chains"] is not None and 0.0 <= train["exact_match"] <= 1.0


def test_fine_multilabel_recognizer_has_a_sigmoid_per_fine_effect(tiny_chains, tmp_path):
    metrics = train_recognizer(tiny_chains, tmp_path / "mlf", target="fine", multilabel=True, epochs=3, seed=0)
    _, config = load_checkpoint(tmp_path / "mlf", "recognizer")
    assert config["classes"] == [c for c in fxset.FINE_CLASSES if c != "dry"]
    train = metrics["multilabel"]["train"]
    assert set(train["per_class"]) == set(config["classes"])
    # the sets of effect groups, as `analyze` reports them, are scored too
    assert 0.0 <= train["aggregated"]["exact_match"] <= 1.0 and train["aggregated"]["exact_match_chains"] is not None
    card = (tmp_path / "mlf" / "MODEL_CARD.md").read_text()
    assert "exact match (chains, aggregated)" in card


def test_cli_fxset_splits_and_chain_clips(stems, tmp_path, capsys):  # noqa: F811
    from fxlens.cli import main

    out = tmp_path / "fx"
    code = main(["data", "fxset", str(stems), str(out), "--clips-per-class", "1", "--splits", "train",
                 "--chain-clips", "1"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["train"]
    labels = fxset.read_labels(out, "train")
    assert len(labels) == len(fxset.FINE_CLASSES) + 1 and sum(r["fine_class"] == "chain" for r in labels) == 1


def test_feature_cache_grows_with_the_set(stems, tmp_path):  # noqa: F811
    """A set that grows keeps the cached rows of its old clips and computes only the new ones."""
    from fxlens import audio
    from fxlens.features.sets import compute_features
    from fxlens.train.inputs import split_features

    out = tmp_path / "grow"
    fxset.build_fxset(stems, out, clips_per_class=1, seed=5, chains=False, classes=["dry", "fuzz"], splits=["test"])
    f1, lab1 = split_features(out, "test")
    cache = out / "test" / "features-fxlens-406.pt"
    marked = torch.load(cache, weights_only=True)
    marked["features"][0] = 123.0  # a marker: a reused row keeps it, a recomputed one would not
    torch.save(marked, cache)
    fxset.build_fxset(stems, out, clips_per_class=2, seed=5, chains=False, classes=["dry", "fuzz"], splits=["test"])
    f2, lab2 = split_features(out, "test")
    ids2 = [r["clip_id"] for r in lab2]
    assert len(ids2) == 4 and f2[ids2.index(lab1[0]["clip_id"])].eq(123.0).all()
    new = [i for i, cid in enumerate(ids2) if cid not in {r["clip_id"] for r in lab1}]
    for i in new:
        x = audio.load(out / "test" / f"{ids2[i]}.flac")
        assert torch.allclose(f2[i], compute_features(x, audio.WORKING_SAMPLE_RATE)[0], rtol=1e-4, atol=1e-4)
    # a clip re-rendered under the same id (a newer file) is recomputed even though the ids have not changed
    import os

    cid = lab1[0]["clip_id"]
    wav = out / "test" / f"{cid}.flac"
    x = audio.load(wav)
    audio.save(wav, x.flip(-1), audio.WORKING_SAMPLE_RATE)
    later = cache.stat().st_mtime + 5
    os.utime(wav, (later, later))
    f3, _ = split_features(out, "test")
    row = f3[ids2.index(cid)]
    assert not row.eq(123.0).all()
    assert torch.allclose(row, compute_features(audio.load(wav), audio.WORKING_SAMPLE_RATE)[0], rtol=1e-4, atol=1e-4)


def test_inputs_computed_by_worker_processes_equal_one_process(tiny_fxset, tmp_path):
    """`workers=2` gives the rows of one process (features and log-mels), in label order, each in its cache."""
    import shutil

    from fxlens.models.classifier import MelResNetClassifier
    from fxlens.train.inputs import split_features, split_log_mels

    front = MelResNetClassifier(["dry", "fuzz"], n_features=4, sample_rate=44100, channels=(4,))
    got = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        shutil.copytree(tiny_fxset, root, ignore=shutil.ignore_patterns("*.pt"))  # no caches: everything computed
        f, lab = split_features(root, "val", batch=3, workers=workers)
        m, _ = split_log_mels(root, "val", front, batch=3, workers=workers)
        assert (root / "val" / "features-fxlens-406.pt").is_file() and len(f) == len(lab) == len(m) > 3
        got[workers] = (f, m, [r["clip_id"] for r in lab])
    (f1, m1, ids1), (f2, m2, ids2) = got[1], got[2]
    assert ids1 == ids2
    torch.testing.assert_close(f2, f1, rtol=1e-5, atol=1e-5)  # a one-thread worker may round sums differently
    torch.testing.assert_close(m2.float(), m1.float(), rtol=0, atol=1e-3)  # float16 rows


def test_bad_workers_is_exactly_one_line(tiny_fxset, tmp_path, capsys):
    from fxlens.cli import main

    for argv in (["train", "recognizer", str(tiny_fxset), "-o", str(tmp_path / "r"), "--workers", "0"],
                 ["train", "estimator", str(tiny_fxset), "-o", str(tmp_path / "e"), "--workers", "0"],
                 ["bench", "recognition", str(tiny_fxset), "--workers", "0", "--out", str(tmp_path / "b.json")]):
        code = main(argv)
        _, err = capsys.readouterr()
        assert code == 1 and err.strip().splitlines() == ["error: --workers must be >= 1, got 0"], (argv, err)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------------------
# The ResNet recognizer: features fused with a log-mel ResNet
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_resnet_recognizer(tiny_fxset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec-resnet") / "rec"
    metrics = train_recognizer(tiny_fxset, out, target="fine", model_kind="resnet", epochs=2, channels=(4, 8),
                               seed=0)
    return out, metrics


def test_resnet_recognizer_trains_and_loads(tiny_fxset, tiny_resnet_recognizer):
    from fxlens import audio
    from fxlens.models.classifier import MelResNetClassifier
    from fxlens.features.sets import compute_features
    from fxlens.train.recognizer import load_recognizer

    out, metrics = tiny_resnet_recognizer
    for row in metrics["accuracy"].values():
        assert set(row) == {"resnet", "svm", "knn", "resnet_aggregated", "svm_aggregated", "knn_aggregated"}
    assert metrics["model"] == "resnet" and metrics["epochs"] == 2
    model, config = load_recognizer(out)
    assert isinstance(model, MelResNetClassifier) and config["channels"] == [4, 8]
    assert "ResNet" in (out / "MODEL_CARD.md").read_text()
    assert (tiny_fxset / "train" / "logmel-2x64-2048-512.pt").is_file()  # cached beside the clips
    x = torch.stack([audio.load(tiny_fxset / "test" / f"{r['clip_id']}.flac")[0]
                     for r in fxset.read_labels(tiny_fxset, "test")[:3]])
    feats = compute_features(x, audio.WORKING_SAMPLE_RATE)
    with torch.no_grad():
        p_audio = model.probabilities(feats, x)
        p_mel = model.probabilities(feats, model.log_mel(x))
    assert p_audio.shape == (3, len(config["classes"]))
    assert torch.allclose(p_audio.sum(1), torch.ones(3), atol=1e-5)
    assert torch.allclose(p_audio, p_mel, atol=1e-6)
    with pytest.raises(FxlensError, match="needs the audio"):
        model.probabilities(feats)


def test_analyze_and_bench_accept_a_resnet_recognizer(tiny_fxset, tiny_resnet_recognizer, tmp_path):
    import fxlens
    from fxlens import audio
    from fxlens.bench.recognition import run_recognition_benchmark

    out, _ = tiny_resnet_recognizer
    rec = fxset.read_labels(tiny_fxset, "test")[0]
    x = audio.load(tiny_fxset / "test" / f"{rec['clip_id']}.flac")
    result = fxlens.analyze(x, audio.WORKING_SAMPLE_RATE, recognizer=out)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    res = run_recognition_benchmark(tiny_fxset, recognizer=out, real=False)
    assert res["recognizer"]["model"] == "resnet"
    assert res["recognition"]["in-domain test"]["aggregated"]["clips"] == 8
    # choosing between models reads val alone, never test or ood (recognition and estimation alike)
    val = run_recognition_benchmark(tiny_fxset, recognizer=out, real=False, splits=["val"])
    assert list(val["recognition"]) == ["in-domain val"] and list(val["estimation"]) == ["val"]
    with pytest.raises(FxlensError, match="unknown split"):
        run_recognition_benchmark(tiny_fxset, recognizer=out, real=False, splits=["tset"])
    # whole dry stems of the split's songs, read as analyze reads a recording: counts of false alarms
    drs = res["dry_stems"]
    assert drs["split"] == "test" and 0 < drs["stems"] <= 60
    assert 0 <= drs["reported"] <= drs["stems"] and 0 <= drs["hinted"] <= drs["stems"]
    assert sum(drs["reported_classes"].values()) >= drs["reported"]


def test_dry_stems_readout_draws_its_stems_and_skips_missing_ones(tiny_fxset, tmp_path, capsys):
    from fxlens.bench.recognition import dry_stems_readout
    from fxlens.cli import main

    two = dry_stems_readout(tiny_fxset, "val", max_stems=2)
    assert two["split"] == "val" and two["stems"] == 2
    assert dry_stems_readout(tiny_fxset, "val", max_stems=2) == two  # the same draw, the same readings
    assert dry_stems_readout(tiny_fxset, "val", stems=tmp_path / "nowhere") is None
    code = main(["bench", "recognition", str(tiny_fxset), "--dry-stems", "-1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and "--dry-stems must be >= 0" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_fine_tuning_starts_from_the_checkpoint(tiny_fxset, tiny_resnet_recognizer, tmp_path, capsys):
    from fxlens.cli import main
    from fxlens.train.recognizer import load_recognizer

    out, _ = tiny_resnet_recognizer
    start, _ = load_recognizer(out)
    # lr 0: the weights stay the checkpoint's, feature standardization included (not recomputed); batch-norm
    # running statistics still move in training mode, so they are left out
    metrics = train_recognizer(tiny_fxset, tmp_path / "ft", target="fine", model_kind="resnet", epochs=1, lr=0.0,
                               channels=(4, 8), init=out, baselines=False)
    tuned, _ = load_recognizer(tmp_path / "ft")
    after = tuned.state_dict()
    for k, a in start.state_dict().items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(a, after[k]), k
    assert any(k.endswith("feature_mean") for k in after)
    assert metrics["init"] == str(out) and metrics["lr"] == 0.0
    # a checkpoint of another recognizer is one line and no output
    code = main(["train", "recognizer", str(tiny_fxset), "-o", str(tmp_path / "bad"), "--model", "resnet",
                 "--init", str(out)])  # aggregated target: other classes than the fine checkpoint's
    err = capsys.readouterr().err
    assert code == 1 and "cannot start from" in err and "classes" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(FxlensError, match="learning rate"):
        train_recognizer(tiny_fxset, tmp_path / "neg", lr=-1.0)
    with pytest.raises(FxlensError, match="not a checkpoint"):
        train_recognizer(tiny_fxset, tmp_path / "none", init=tmp_path / "missing")
    assert not (tmp_path / "neg").exists() and not (tmp_path / "none").exists()


def test_unknown_recognizer_model_is_one_line(tiny_fxset, tmp_path, capsys):
    from fxlens.cli import main

    with pytest.raises(FxlensError, match="unknown recognizer model"):
        train_recognizer(tiny_fxset, tmp_path / "x", model_kind="transformer")
    code = main(["train", "recognizer", str(tiny_fxset), "-o", str(tmp_path / "y"), "--model", "svm"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown recognizer model 'svm'" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists()


def test_multilabel_resnet_recognizer_on_chains(tiny_chains, tmp_path):
    from fxlens.train.recognizer import load_recognizer

    metrics = train_recognizer(tiny_chains, tmp_path / "mlr", multilabel=True, model_kind="resnet", epochs=1,
                               channels=(4, 8), seed=0)
    model, config = load_recognizer(tmp_path / "mlr")
    assert config["multilabel"] is True and config["model"] == "resnet"
    assert metrics["multilabel"]["train"]["exact_match_chains"] is not None
    x = torch.randn(2, 2, 44100)
    p = model.probabilities(torch.randn(2, config["n_features"]), x)
    assert p.shape == (2, 7) and bool(((p > 0) & (p < 1)).all())


class _FixedMultilabel:
    """A multi-label recognizer that answers row i of `probs` for a clip whose feature is i."""
    multilabel = True

    def __init__(self, probs):
        self.probs = probs

    def probabilities(self, features, audio=None):
        return self.probs[features[:, 0].long()]


def test_bench_scores_a_fine_multilabel_model_as_analyze_decides():
    """Single-effect scoring of a fine multi-label model: "dry" when no group reaches 0.5, else the most probable
    group (1 - prod(1 - p)) and, inside it, its most probable member."""
    from fxlens.bench.recognition import recognition_scores

    classes = ["chorus", "phaser", "reverb"]
    probs = torch.tensor([[0.4, 0.45, 0.6],    # modulation 0.67 > reverb 0.6: phaser
                          [0.1, 0.2, 0.3],     # nothing reaches 0.5: dry
                          [0.0, 0.1, 0.9]])    # reverb

    labels = [{"fine_class": c, "aggregated_class": a, "fine_labels": [c], "labels": [a]}
              for c, a in (("phaser", "modulation"), ("dry", "dry"), ("reverb", "reverb"))]
    out = recognition_scores(_FixedMultilabel(probs), classes, torch.arange(3.0)[:, None], labels)
    assert out["aggregated"]["accuracy"] == 1.0 and out["fine"]["accuracy"] == 1.0
    # the set metrics at 0.5: the phaser clip's set is {reverb} (fine) or {modulation, reverb} (groups): wrong;
    # the dry clip's (empty) and the reverb clip's are right
    assert out["multilabel"]["exact_match"] == pytest.approx(2 / 3)
    assert out["multilabel"]["aggregated"]["exact_match"] == pytest.approx(2 / 3)


def test_fine_classes_the_model_lacks_are_rows_of_their_own():
    """A set of AutoFX's parameter-protocol classes (no recognizer output of their own) is scored: each is a row of
    the fine confusion matrix, read as the recognizer's classes; the groups as usual."""
    from fxlens.bench.recognition import recognition_scores

    classes = ["chorus", "feedback_delay"]
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.2]])
    labels = [{"fine_class": c, "aggregated_class": a, "fine_labels": [c], "labels": [a]}
              for c, a in (("autofx_modulation", "modulation"), ("autofx_delay", "delay"), ("autofx_delay", "delay"))]
    out = recognition_scores(_FixedMultilabel(probs), classes, torch.arange(3.0)[:, None], labels)
    assert out["aggregated"]["accuracy"] == pytest.approx(2 / 3)
    fine = out["fine"]
    assert fine["accuracy"] == 0.0 and {"autofx_modulation", "autofx_delay"} <= set(fine["classes"])
    conf = np.array(fine["confusion"])
    assert conf[fine["classes"].index("autofx_delay"), fine["classes"].index("dry")] == 1


def test_autofx_protocol_decides_among_its_six_classes():
    """AutoFX's Table 4.2 protocol: only clips of its six aggregated classes, each decided as if the model had no
    EQ or compression output."""
    from fxlens.bench.recognition import recognition_scores, strongest_groups
    from fxlens.data.fxset import AGGREGATED_CLASSES, AUTOFX_CLASSES

    classes = ["chorus", "compression", "eq"]
    probs = torch.tensor([[0.1, 0.2, 0.9],     # dry clip, EQ heard: wrong over 8 classes, dry over AutoFX's six
                          [0.6, 0.1, 0.7],     # chorus clip, EQ stronger: wrong over 8, modulation over six
                          [0.1, 0.1, 0.8]])    # EQ clip: not one of AutoFX's classes, left out

    labels = [{"fine_class": c, "aggregated_class": a, "fine_labels": [c], "labels": [a]}
              for c, a in (("dry", "dry"), ("chorus", "modulation"), ("eq", "eq"))]
    out = recognition_scores(_FixedMultilabel(probs), classes, torch.arange(3.0)[:, None], labels)
    assert out["aggregated"]["accuracy"] == pytest.approx(1 / 3)
    paper = out["autofx_classes"]
    assert paper["clips"] == 2 and paper["accuracy"] == 1.0
    assert set(paper["classes"]) <= set(AUTOFX_CLASSES)
    # a single-label reading restricted the same way: the top allowed class
    agg = np.zeros((1, len(AGGREGATED_CLASSES)))
    agg[0, AGGREGATED_CLASSES.index("eq")], agg[0, AGGREGATED_CLASSES.index("reverb")] = 0.7, 0.2
    assert strongest_groups(agg, False) == ["eq"]
    assert strongest_groups(agg, False, allowed=AUTOFX_CLASSES) == ["reverb"]

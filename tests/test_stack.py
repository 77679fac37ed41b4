"""Boosted trees stacked on a recognizer (`fxlens.models.trees`, `fxlens train stack`): the torch trees against
scikit-learn's own probabilities, and the stacked checkpoint end to end (train, load, analyze, bench, bad input)."""

import numpy as np
import pytest
import torch

from fxlens.errors import CheckpointError, FxlensError
from fxlens.train.recognizer import load_recognizer, train_recognizer
from fxlens.train.stack import train_stack, trees_from_sklearn
from test_fxset import stems  # noqa: F401  (the tiny synthetic stem dataset fixture)
from test_recognizer import tiny_chains, tiny_fxset  # noqa: F401


def test_trees_give_scikit_learns_probabilities_missing_values_included():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    y = np.stack([(x[:, 0] + x[:, 1] ** 2 > 1).astype(int), (np.sin(3 * x[:, 2]) > x[:, 3]).astype(int)], 1)
    x[rng.random(x.shape) < 0.1] = np.nan  # scikit-learn learns where each split sends missing values
    models = [HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y[:, k]) for k in range(2)]
    trees = trees_from_sklearn(models + [-1.5], n_inputs=5)
    x_new = rng.normal(size=(300, 5))
    x_new[rng.random(x_new.shape) < 0.1] = np.nan
    with torch.no_grad():
        p = torch.sigmoid(trees(torch.from_numpy(x_new))).numpy()
    for k in range(2):
        np.testing.assert_allclose(p[:, k], models[k].predict_proba(x_new)[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(p[:, 2], 1 / (1 + np.exp(1.5)))  # a constant output: its score, no trees
    only_constants = trees_from_sklearn([0.5, -2.0], n_inputs=5)  # no trees at all: the baselines
    np.testing.assert_allclose(torch.sigmoid(only_constants(torch.zeros(2, 5))).numpy(),
                               1 / (1 + np.exp(-np.array([[0.5, -2.0]] * 2))))
    assert trees.max_depth >= 2 and bool(trees.missing_left.any()) and bool((~trees.missing_left).any())
    with pytest.raises(FxlensError, match=r"read \(N, 5\) inputs"):
        trees(torch.zeros(3, 4))


@pytest.fixture(scope="module")
def stacked(tiny_chains, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("stack")
    train_recognizer(tiny_chains, root / "base", target="fine", multilabel=True, model_kind="resnet", epochs=1,
                     channels=(4, 8), seed=0)
    metrics = train_stack(tiny_chains, root / "base", root / "stacked", max_iter=5)
    return root, metrics


def test_stacked_recognizer_trains_loads_and_reads_like_its_base(tiny_chains, stacked):  # noqa: F811
    from fxlens import audio
    from fxlens.data import fxset
    from fxlens.features.sets import compute_features
    from fxlens.models.classifier import StackedRecognizer

    root, metrics = stacked
    model, config = load_recognizer(root / "stacked")
    base, _ = load_recognizer(root / "base")
    assert isinstance(model, StackedRecognizer) and config["model"] == "stacked" and config["base"]["model"] == "resnet"
    assert config["classes"] == base.classes and model.input_kind == base.input_kind == "features+audio"
    assert metrics["model"] == "stacked" and set(metrics["multilabel"]) >= {"train", "val"}
    assert set(metrics["multilabel_base"]) == set(metrics["multilabel"])
    card = (root / "stacked" / "MODEL_CARD.md").read_text()
    assert card.startswith("# recognizer: boosted trees") and "HistGradientBoosting" in card
    x = torch.stack([audio.load(tiny_chains / "test" / f"{r['clip_id']}.flac")[0]
                     for r in fxset.read_labels(tiny_chains, "test")[:3]])
    feats = compute_features(x, audio.WORKING_SAMPLE_RATE)
    with torch.no_grad():
        p = model.probabilities(feats, x)
        z = base(feats, x)
        want = torch.sigmoid(model.trees(torch.cat([feats.double(), z.double()], 1)))
    assert p.shape == (3, len(config["classes"])) and torch.allclose(p, want.float(), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(p, model.probabilities(feats, model.log_mel(x)), atol=1e-6)
    with pytest.raises(FxlensError, match="needs the audio"):
        model.probabilities(feats)


def test_analyze_and_bench_read_a_stacked_recognizer(tiny_chains, stacked):  # noqa: F811
    import fxlens
    from fxlens import audio
    from fxlens.bench.recognition import run_recognition_benchmark
    from fxlens.data import fxset

    root, _ = stacked
    rec = fxset.read_labels(tiny_chains, "test")[0]
    x = audio.load(tiny_chains / "test" / f"{rec['clip_id']}.flac")
    result = fxlens.analyze(x, audio.WORKING_SAMPLE_RATE, recognizer=root / "stacked")
    assert result.multilabel and 0.0 <= result.probabilities["dry"] <= 1.0
    res = run_recognition_benchmark(tiny_chains, recognizer=root / "stacked", real=False, splits=["val"])
    assert res["recognizer"]["model"] == "stacked" and res["recognition"]["in-domain val"]["aggregated"]["clips"] > 0


def test_restacking_uses_the_base_and_bad_input_is_one_line(tiny_chains, tiny_fxset, stacked, tmp_path,  # noqa: F811
                                                            capsys):
    from fxlens.cli import main

    root, _ = stacked
    again = train_stack(tiny_chains, root / "stacked", tmp_path / "again", max_iter=5)  # its base, stacked again
    assert again["iterations"] == stacked[1]["iterations"]
    a, _ = load_recognizer(root / "stacked")
    b, _ = load_recognizer(tmp_path / "again")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # fine-tuning from a stacked checkpoint is refused, with what to do instead
    with pytest.raises(CheckpointError, match="stacked recognizer"):
        train_recognizer(tiny_chains, tmp_path / "ft", target="fine", multilabel=True, model_kind="resnet",
                         epochs=1, channels=(4, 8), init=root / "stacked")
    single = tmp_path / "single"
    train_recognizer(tiny_fxset, single, target="fine", epochs=2, baselines=False)
    cases = [(["--recognizer", str(single)], "single-label recognizer"),
             (["--recognizer", str(tmp_path / "missing")], "not a checkpoint"),
             (["--recognizer", str(root / "base"), "--max-iter", "0"], "--max-iter must be >= 1"),
             (["--recognizer", str(root / "base"), "--workers", "0"], "workers")]
    for extra, msg in cases:
        out = tmp_path / "bad"
        code = main(["train", "stack", str(tiny_chains), "-o", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 1 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()

"""`fxlens train recognizer` end to end on a tiny fxset; checkpoint kind checks."""

import json

import pytest
import torch

from fxlens.data import fxset
from fxlens.errors import CheckpointError
from fxlens.models.checkpoint import load_checkpoint
from fxlens.models.classifier import FeatureClassifier
from fxlens.train.recognizer import train_recognizer
from test_fxset import stems  # noqa: F401  (the tiny synthetic stem dataset fixture)


@pytest.fixture(scope="module")
def tiny_fxset(stems, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fxset-rec")
    fxset.build_fxset(stems, out, clips_per_class=2, seed=1, chains=False,
                      classes=["dry", "feedback_delay", "fuzz", "tremolo"])
    return out


def test_train_recognizer_writes_a_loadable_checkpoint(tiny_fxset, tmp_path):
    out = tmp_path / "rec"
    metrics = train_recognizer(tiny_fxset, out, target="fine", epochs=30, seed=0)
    assert set(metrics["accuracy"]) >= {"train", "val", "test"}
    for row in metrics["accuracy"].values():
        assert set(row) == {"mlp", "svm", "knn"} and all(0.0 <= v <= 1.0 for v in row.values())
    assert metrics["accuracy"]["train"]["mlp"] >= 0.75  # the MLP can fit 8 clips of 4 very different classes
    state, config = load_checkpoint(out, "recognizer")
    model = FeatureClassifier(config["classes"], n_features=config["n_features"])
    model.load_state_dict(state)
    assert (out / "MODEL_CARD.md").read_text().startswith("# recognizer")
    assert json.loads((out / "metrics.json").read_text())["classes"] == config["classes"]
    # the features were cached beside the clips and are reused
    assert (tiny_fxset / "train" / "features-autofx-163.pt").is_file()


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

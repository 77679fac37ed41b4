"""Parameter estimation: masked loss, model layout, `fxlens train estimator` on a tiny fxset, checkpoint kinds."""

import json

import numpy as np
import pytest
import torch

from fxlens.data import fxset
from fxlens.errors import CheckpointError
from fxlens.fx.effect import get_effect
from fxlens.models.checkpoint import load_checkpoint
from fxlens.models.estimator import ParameterEstimator, masked_l1, slot_key
from fxlens.train.estimator import evaluate, fixed_parameters, load_estimator, train_estimator
from test_fxset import stems  # noqa: F401  (the tiny synthetic stem dataset fixture)


def test_masked_l1_matches_a_plain_reference():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(5, 7, generator=g, dtype=torch.float64)
    target = torch.rand(5, 7, generator=g, dtype=torch.float64)
    mask = torch.zeros(5, 7, dtype=torch.float64)
    mask[0, :3] = 1
    mask[1, 3:] = 1
    mask[2, 2] = 1
    mask[4, :] = 1  # row 3 has no active entry: it is left out
    p, t, m = pred.numpy(), target.numpy(), mask.numpy()
    rows = [np.abs(p[i] - t[i])[m[i] > 0].mean() for i in range(5) if m[i].sum() > 0]
    assert float(masked_l1(pred, target, mask)) == pytest.approx(float(np.mean(rows)), rel=1e-12)


def test_masked_l1_ignores_everything_outside_the_mask():
    pred = torch.rand(3, 4, requires_grad=True)
    target = torch.rand(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
    garbage = target.clone()
    garbage[mask == 0] = float("nan")  # whatever sits outside the active effect's slot
    loss = masked_l1(pred, garbage, mask)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(float(masked_l1(pred.detach(), target, mask)))
    loss.backward()
    assert torch.all(pred.grad[mask == 0] == 0) and torch.all(pred.grad[mask == 1] != 0)
    # no active entry at all: zero, still differentiable
    zero = masked_l1(pred, target, torch.zeros_like(mask))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_estimator_layout_and_output_range():
    slots = [("delay", 3), (slot_key("tremolo", {"stereo_phase_deg": 90.0}), 3)]
    model = ParameterEstimator(["a", "b", "dry"], slots, {"a": "delay", "b": slots[1][0], "dry": None}, n_features=6)
    assert model.n_outputs == 6 and model.offsets["delay"] == (0, 3)
    x = torch.randn(4, 6) * 100
    out = model(x, model.one_hot(["a", "b", "a", "dry"]))
    assert out.shape == (4, 6) and bool(((out >= 0) & (out <= 1)).all())
    assert model.estimate(x, "b").shape == (4, 3)
    with pytest.raises(Exception, match="no effect"):
        model.estimate(x, "dry")
    assert model.class_mask[0].tolist() == [1, 1, 1, 0, 0, 0] and model.class_mask[2].sum() == 0


def test_fixed_parameters_come_from_the_class_ranges():
    assert fixed_parameters("fuzz") == {"mix"}
    assert fixed_parameters("vibrato") == {"feedback", "mix"}
    assert fixed_parameters("compression") == {"makeup_db"}
    assert fixed_parameters("reverb") == set()


@pytest.fixture(scope="module")
def tiny_fxset(stems, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fxset-est")
    fxset.build_fxset(stems, out, clips_per_class=2, seed=2, chains=False,
                      classes=["dry", "feedback_delay", "fuzz", "tremolo"])
    return out


def test_train_estimator_end_to_end(tiny_fxset, tmp_path):
    out = tmp_path / "est"
    metrics = train_estimator(tiny_fxset, out, epochs=5, seed=0)
    model, cfg = load_estimator(out)
    assert cfg["kind"] == "estimator" and set(cfg["classes"]) == {"dry", "feedback_delay", "fuzz", "tremolo"}
    assert (out / "MODEL_CARD.md").read_text().startswith("# estimator")
    assert json.loads((out / "metrics.json").read_text())["classes"] == cfg["classes"]
    # the slot of each class has its effect's parameter count
    for c, key in cfg["class_slots"].items():
        if key is not None:
            a, b = model.offsets[key]
            assert b - a == get_effect(cfg["slot_info"][key]["effect"]).n_params
    test = metrics["splits"]["test"]
    assert test["clips"] == 6  # 2 clips x 3 effect classes
    # the random baseline is E|U - t| for U uniform on [0, 1]; check it by numerical integration over u
    labels = fxset.read_labels(tiny_fxset, "test")
    u = (np.arange(200_000) + 0.5) / 200_000
    for c, v in test["per_class"].items():
        recs = [r for r in labels if r["fine_class"] == c]
        names = get_effect(v["effect"]).param_names
        for k, name in enumerate(names):
            if v["params"][name]["fixed"]:
                continue
            ref = np.mean([np.abs(u - r["controls"][0]["controls"][k]).mean() for r in recs])
            assert v["params"][name]["random"] == pytest.approx(ref, abs=1e-5)
        if "mix" in v["params"]:
            assert v["params"]["mix"]["fixed"] is (c == "fuzz")
    # wrong kind: an estimator folder is not a recognizer
    with pytest.raises(CheckpointError, match="'estimator' checkpoint"):
        load_checkpoint(out, "recognizer")


def test_evaluate_reports_a_perfect_model_as_zero(tiny_fxset, tmp_path):
    """An estimator whose outputs are the labels themselves (through an exact lookup) scores MAE 0."""
    out = tmp_path / "est"
    train_estimator(tiny_fxset, out, epochs=1, seed=0)
    model, cfg = load_estimator(out)
    labels = fxset.read_labels(tiny_fxset, "test")
    feats = torch.arange(len(labels), dtype=torch.float32)[:, None]

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.offsets, self.n_outputs = model.offsets, model.n_outputs
            self.class_slots, self.classes, self.slots = model.class_slots, model.classes, model.slots
            self.one_hot = model.one_hot

        def forward(self, f, onehot):
            y = torch.zeros(len(f), self.n_outputs)
            for j, i in enumerate(f[:, 0].long().tolist()):
                r = labels[i]
                a, b = self.offsets[self.class_slots[r["fine_class"]]]
                y[j, a:b] = torch.tensor(r["controls"][0]["controls"])
            return y

    ev = evaluate(Lookup(), feats, labels, cfg["slot_info"])
    assert ev["mean"]["model"] == pytest.approx(0.0, abs=1e-7)
    assert ev["mean"]["random"] > 0.1


def test_bench_recognition_on_a_tiny_fxset(tiny_fxset, tmp_path, capsys):
    """`fxlens bench recognition` end to end: counts and confusion matrix agree with the labels."""
    from fxlens.cli import main
    from fxlens.train.recognizer import train_recognizer

    train_recognizer(tiny_fxset, tmp_path / "rec", target="fine", epochs=5, baselines=False)
    train_estimator(tiny_fxset, tmp_path / "est", epochs=2)
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["bench", "recognition", str(tiny_fxset), "--recognizer", str(tmp_path / "rec"), "--estimator",
                 str(tmp_path / "est"), "--out", str(out), "--markdown", str(md)])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    test = res["recognition"]["in-domain test"]["aggregated"]
    labels = fxset.read_labels(tiny_fxset, "test")
    assert test["clips"] == len(labels) == 8
    conf = np.array(test["confusion"])
    truth = [r["aggregated_class"] for r in labels]
    assert [int(v) for v in conf.sum(1)] == [truth.count(c) for c in test["classes"]]
    assert test["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
    assert res["estimation"]["test"]["clips"] == 6
    text = md.read_text()
    assert "| in-domain test | 8 |" in text and "Parameter estimation" in text

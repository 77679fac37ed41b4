"""Parameter estimation: masked loss, slot layout, the feature MLP and the log-mel ResNet-FiLM, spectral fine-tuning
through the effects, `fxlens train estimator` and `bench recognition` on a tiny fxset, checkpoint kinds."""

import json
import math

import numpy as np
import pytest
import torch

from fxlens.data import fxset
from fxlens.errors import CheckpointError, FxlensError
from fxlens.fx.effect import get_effect
from fxlens.models.checkpoint import load_checkpoint
from fxlens.models.estimator import REFINEMENTS, ParameterEstimator, masked_l1, slot_key
from fxlens.train.estimator import evaluate, fixed_parameters, load_estimator, train_estimator
from test_fxset import stems, tiny_fxset_of  # noqa: F401  (the tiny synthetic stem dataset fixture)


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
    return tiny_fxset_of(stems, tmp_path_factory, "fxset-est", seed=2)


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


class _SameLayout(torch.nn.Module):
    """A stand-in estimator with `model`'s slot layout; subclasses say what it outputs."""

    def __init__(self, model):
        super().__init__()
        self.offsets, self.n_outputs = model.offsets, model.n_outputs
        self.class_slots, self.classes, self.slots = model.class_slots, model.classes, model.slots
        self.one_hot = model.one_hot


def test_evaluate_reports_a_perfect_model_as_zero(tiny_fxset, tmp_path):
    """An estimator whose outputs are the labels themselves (through an exact lookup) scores MAE 0."""
    out = tmp_path / "est"
    train_estimator(tiny_fxset, out, epochs=1, seed=0)
    model, cfg = load_estimator(out)
    labels = fxset.read_labels(tiny_fxset, "test")
    feats = torch.arange(len(labels), dtype=torch.float32)[:, None]

    class Lookup(_SameLayout):
        def forward(self, f, onehot):
            y = torch.zeros(len(f), self.n_outputs)
            for j, i in enumerate(f[:, 0].long().tolist()):
                r = labels[i]
                a, b = self.offsets[self.class_slots[r["fine_class"]]]
                y[j, a:b] = torch.tensor(r["controls"][0]["controls"])
            return y

    ev = evaluate(Lookup(model), feats, labels, cfg["slot_info"])
    assert ev["mean"]["model"] == pytest.approx(0.0, abs=1e-7)
    assert ev["mean"]["random"] > 0.1


def test_autofx_table_c2_errors_in_physical_units(tiny_fxset, tmp_path):
    """Table C.2 beside AutoFX: an estimator that answers 0.5 for every control is off by |physical(0.5) - value|
    for each clip, computed here from the presets' physical values with numpy; AutoFX's scale divides by its range."""
    from fxlens.bench.recognition import AUTOFX_TABLE_C2, autofx_parameter_table

    out = tmp_path / "est"
    train_estimator(tiny_fxset, out, epochs=1, seed=0)
    model, cfg = load_estimator(out)
    labels = fxset.read_labels(tiny_fxset, "test")

    class Half(_SameLayout):
        def forward(self, f, onehot):
            return torch.full((len(f), self.n_outputs), 0.5)

    tab = autofx_parameter_table(Half(model), torch.zeros(len(labels), 1), labels, tiny_fxset)
    rows = {(r["group"], r["autofx_parameter"]): r for r in tab["rows"]}
    # the tiny set holds a feedback delay and a fuzz: the delay and distortion rows, no modulation row
    assert {g for g, _ in rows} == {"delay", "distortion"} and len(rows) == 3 + 7
    # AutoFX's accounting: a row's errors summed, divided by the clips of every effect of the table
    n_table = sum(r["fine_class"] in {c for row in AUTOFX_TABLE_C2 for c in row[6]} for r in labels)
    assert tab["table_clips"] == n_table > 0
    for group, param, (lo, hi), _, _, _, classes, ours in AUTOFX_TABLE_C2:
        if group == "modulation":
            continue
        recs = [r for r in labels if r["fine_class"] in classes]
        spec = {s.name: s for s in get_effect(recs[0]["preset"]["effects"][0]["name"]).specs}[ours]
        half = np.sqrt(spec.min * spec.max) if spec.scale == "log" else (spec.min + spec.max) / 2
        truth = np.array([r["preset"]["effects"][0]["params"][ours]["value"] for r in recs])
        r = rows[(group, param)]
        assert r["clips"] == len(recs)
        assert r["physical"]["model"] == pytest.approx(np.abs(half - truth).mean(), rel=1e-4)
        assert r["autofx_scale"]["model"] == pytest.approx(r["physical"]["model"] / (hi - lo))
        assert r["autofx_accounting"]["model"] == pytest.approx(np.abs(half - truth).sum() / (hi - lo) / n_table,
                                                                rel=1e-4)
        if param != "delay":  # only a delay's time is re-read from the audio
            assert r["physical"]["as analyze reports"] == r["physical"]["model"]
    assert math.isfinite(rows[("delay", "delay")]["physical"]["as analyze reports"])
    assert tab["mean_autofx_scale"]["autofx"] == pytest.approx(
        np.mean([r[4] for r in AUTOFX_TABLE_C2 if r[0] != "modulation"]))


def test_bench_recognition_on_a_tiny_fxset(tiny_fxset, tmp_path, capsys):
    """`fxlens bench recognition` end to end: counts and confusion matrix agree with the labels."""
    from fxlens.cli import main
    from fxlens.train.recognizer import train_recognizer

    train_recognizer(tiny_fxset, tmp_path / "rec", target="fine", epochs=5, baselines=False)
    train_estimator(tiny_fxset, tmp_path / "est", epochs=2)
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["bench", "recognition", str(tiny_fxset), "--recognizer", str(tmp_path / "rec"), "--estimator",
                 str(tmp_path / "est"), "--out", str(out), "--markdown", str(md), "--mrstft-clips", "1", "--no-real"])
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
    assert "AutoFX's protocol" in text and "Beside AutoFX's Table C.2 (test" in text
    paper = res["recognition"]["in-domain test"]["autofx_classes"]  # every tiny class is one of AutoFX's six
    assert paper["clips"] == 8 and set(paper["classes"]) <= set(fxset.AUTOFX_CLASSES)
    # re-rendered estimates: one clip per class of test and ood, the true controls re-render the clip exactly
    for split in ("test", "ood"):
        sc = res["spectral"][split]
        assert sc["clips"] == 3 and sc["mean"]["truth"] < 0.05 < sc["mean"]["dry"]
        assert set(sc["mean"]) == {"dry", "random", "class_mean", "truth", "estimate", "estimate refined"}
        for c, v in sc["per_class"].items():  # only the effects of REFINEMENTS are refined
            if c not in REFINEMENTS:
                assert v["mrstft"]["estimate refined"] == v["mrstft"]["estimate"]
            assert set(v["control_mae"]) == {"estimate", "estimate refined"}
    assert "Re-rendered estimates, test" in text


# ------------------------------------------------------------------------------------------------------------------
# The log-mel ResNet with FiLM conditioning, and spectral fine-tuning through the effects
# ------------------------------------------------------------------------------------------------------------------

SR = 44100


def _resnet(classes=("a", "b", "dry"), seed=0, **kw):
    from fxlens.models.estimator import MelResNetEstimator

    torch.manual_seed(seed)
    slots = [("delay", 3), ("tremolo", 3)]
    return MelResNetEstimator(list(classes), slots, {"a": "delay", "b": "tremolo", "dry": None}, SR,
                              channels=(4, 8), n_mels=16, n_fft=512, hop=256, hidden=16, **kw)


def test_resnet_estimator_shapes_range_and_shared_layout():
    from fxlens.models.estimator import SlotEstimator

    model = _resnet().eval()
    mlp = ParameterEstimator(["a", "b", "dry"], model.slots, model.class_slots, n_features=6)
    assert isinstance(model, SlotEstimator) and isinstance(mlp, SlotEstimator)
    assert model.input_kind == "audio" and mlp.input_kind == "features"
    # one layout implementation: same offsets and masks as the MLP's for the same slots
    assert model.offsets == mlp.offsets and torch.equal(model.class_mask, mlp.class_mask)
    x = torch.randn(3, 2, SR // 4) * 0.1
    out = model(x, model.one_hot(["a", "b", "a"]))
    assert out.shape == (3, 6) and bool(((out >= 0) & (out <= 1)).all())
    assert model.estimate(x, "b").shape == (3, 3)
    # audio in, or its log-mel in: the same outputs
    assert torch.allclose(model(model.log_mel(x), model.one_hot(["a"] * 3)), model(x, model.one_hot(["a"] * 3)))
    with pytest.raises(FxlensError, match="no effect"):
        model.estimate(x, "dry")
    with pytest.raises(FxlensError, match="unknown class"):
        model.estimate(x, "nope")
    with pytest.raises(FxlensError, match="audio"):
        model(torch.randn(3, SR // 4), model.one_hot(["a"] * 3))


def test_resnet_features_estimator_reads_both_and_packs_rows():
    """AutoFX-feat: the packed rows are the features and the flattened log-mel; both reach the output."""
    model = _resnet(n_features=5).eval()
    assert model.input_kind == "features+audio" and _resnet().input_kind == "audio"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, SR // 4, generator=g) * 0.1
    f = torch.randn(3, 5, generator=g)
    rows = model.pack_inputs(f, x)
    mel = model.log_mel(x)
    assert rows.shape == (3, 5 + mel[0].numel())
    assert torch.equal(rows[:, :5], f) and torch.equal(rows[:, 5:].reshape(mel.shape), mel)
    assert torch.equal(model.pack_inputs(f, mel), rows)  # audio or its log-mel: the same rows
    cond = model.one_hot(["a", "b", "a"])
    out = model(rows, cond)
    assert out.shape == (3, 6) and bool(((out >= 0) & (out <= 1)).all())
    assert model.estimate(rows, "b").shape == (3, 3)
    assert (model(model.pack_inputs(f + 1.0, x), cond) - out).abs().max() > 1e-4  # the features matter
    assert (model(model.pack_inputs(f, x * 0.5), cond) - out).abs().max() > 1e-4  # and so does the audio
    with pytest.raises(FxlensError, match="packed rows"):
        model(mel, cond)
    with pytest.raises(FxlensError, match="features of shape"):
        model.pack_inputs(f[:, :4], x)


def test_film_conditioning_changes_the_outputs():
    model = _resnet().eval()
    x = torch.randn(2, 2, SR // 4) * 0.1
    a = model(x, model.one_hot(["a", "a"]))
    b = model(x, model.one_hot(["b", "b"]))
    assert (a - b).abs().max() > 1e-3  # the class vector reaches the features (there is no other path)
    # the FiLM layers are the only way in: zero their maps and the class no longer matters
    for m in model.modules():
        if type(m).__name__ == "FiLM":
            torch.nn.init.zeros_(m.proj.weight)
            torch.nn.init.zeros_(m.proj.bias)
    assert torch.allclose(model(x, model.one_hot(["a", "a"])), model(x, model.one_hot(["b", "b"])))
    # probabilities are accepted as conditioning (as AutoFX conditions on its classifier's output)
    assert model.estimate(x, "a", class_probs=torch.tensor([[0.5, 0.5, 0.0]] * 2)).shape == (2, 3)


def test_resnet_masked_loss_trains_only_the_active_slot():
    model = _resnet().train()
    x = torch.randn(4, 2, SR // 4) * 0.1
    onehot = model.one_hot(["a", "a", "a", "a"])
    out = model(x, onehot)
    out.retain_grad()
    target = torch.rand(4, 6)
    loss = masked_l1(out, target, model.class_mask[[0, 0, 0, 0]])
    loss.backward()
    assert torch.all(out.grad[:, 3:] == 0) and torch.all(out.grad[:, :3] != 0)
    assert model.out.weight.grad[3:].abs().sum() == 0 and model.out.weight.grad[:3].abs().sum() > 0


def test_gradient_reaches_the_estimator_through_the_effect():
    from fxlens.train.estimator import mrstft_loss, spectral_finetune_loss

    model = _resnet().eval()
    effect = get_effect("delay")
    g = torch.Generator().manual_seed(1)
    dry = torch.randn(2, 2, SR // 4, generator=g) * 0.1
    with torch.no_grad():
        wet = effect(dry, SR, torch.tensor([[0.3, 0.5, 0.5], [0.6, 0.2, 0.4]]))
    loss, out = spectral_finetune_loss(model, wet, "a", dry, wet, effect, mrstft_loss(), SR)
    assert out.shape == (2, 6) and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["out.weight"][:3].abs().sum() > 0  # the delay slot gets a gradient from the audio loss
    assert grads["out.weight"][3:].abs().sum() == 0  # the tremolo slot does not: it was not rendered
    assert grads["stem.0.weight"].abs().sum() > 0  # all the way down to the first convolution


def test_fixed_class_parameters_are_pinned_when_rendering():
    from fxlens.train.estimator import render_controls

    effect = get_effect("distortion")
    g = torch.Generator().manual_seed(2)
    dry = torch.randn(1, 2, 4096, generator=g) * 0.1
    ctl = torch.rand(1, effect.n_params, generator=g)
    pinned = ctl.clone()
    pinned[0, effect.param_names.index("mix")] = 1.0  # fuzz fixes mix at 1 (the top of its range)
    assert torch.allclose(render_controls(effect, "fuzz", dry, ctl, SR), effect(dry, SR, pinned))


@pytest.fixture(scope="module")
def tiny_resnet(tiny_fxset, tmp_path_factory):
    """`train_estimator(model="resnet")` on the tiny fxset: (checkpoint folder, metrics)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("est-resnet") / "res"
    metrics = train_estimator(tiny_fxset, out, model="resnet", epochs=1, channels=(4, 8), n_mels=16, seed=0)
    return out, metrics


def test_train_resnet_end_to_end(tiny_resnet):
    out, metrics = tiny_resnet
    model, cfg = load_estimator(out)
    assert type(model).__name__ == "MelResNetEstimator" and cfg["model"] == "resnet"
    assert cfg["resnet"]["n_mels"] == 16 and cfg["resnet"]["channels"] == [4, 8]
    assert metrics["splits"]["test"]["clips"] == 6 and metrics["model"] == "resnet"
    assert (out / "MODEL_CARD.md").read_text().startswith("# estimator: effect settings from the log-mel")
    assert json.loads((out / "metrics.json").read_text())["model"] == "resnet"


def test_train_resnet_features_end_to_end_and_analyze(tiny_fxset, tmp_path):
    """`fxlens train estimator --model resnet-features` trains, saves, loads and is what `fxlens.analyze` can use."""
    import fxlens
    from fxlens.cli import main
    from fxlens.train.inputs import load_clip

    out = tmp_path / "rf"
    assert main(["train", "estimator", str(tiny_fxset), "-o", str(out), "--model", "resnet-features", "--epochs", "1",
                 "--n-mels", "16", "--hop", "2048"]) == 0
    model, cfg = load_estimator(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert cfg["model"] == metrics["model"] == "resnet-features" and model.input_kind == "features+audio"
    assert cfg["resnet"]["n_mels"] == model.n_mels == 16 and cfg["resnet"]["hop"] == 2048
    assert cfg["n_features"] == model.n_features == 406 and cfg["feature_set"] == "fxlens-406"
    assert metrics["splits"]["test"]["clips"] == 6
    assert "and features fxlens-406" in (out / "MODEL_CARD.md").read_text()
    # the train split's feature statistics are stored (not the defaults)
    assert float(model.feature_std.sub(1).abs().max()) > 0.01
    rec = next(r for r in fxset.read_labels(tiny_fxset, "test") if r["fine_class"] == "feedback_delay")
    result = fxlens.analyze(load_clip(tiny_fxset, rec, SR)[0], SR, estimator=out)
    assert result.effects  # the shipped recognizer hears the delay; its settings came through the packed rows


def test_spectral_finetune_from_a_checkpoint(tiny_fxset, tiny_resnet, tmp_path):
    """`--init` + spectral fine-tuning: MAE before/after, MRSTFT of dry / random / class mean / true / estimated
    controls, and a checkpoint of the same kind."""
    out, _ = tiny_resnet
    ft = tmp_path / "ft"
    m2 = train_estimator(tiny_fxset, ft, init=out, epochs=0, finetune_steps=1, finetune_batch=2, spectral_clips=1)
    assert m2["model"] == "resnet" and len(m2["finetune"]["history"]) == 1
    assert set(m2["before_finetune"]) == set(m2["splits"]) == {"val", "test", "ood"}
    sc = m2["finetune"]["spectral"]["test"]
    assert sc["clips"] == 3 and set(sc["mean"]) == {"dry", "random", "class_mean", "truth", "before", "after"}
    # the fxset re-renders exactly from its labels: the true controls are (almost) at distance 0, dry is not
    assert sc["mean"]["truth"] < 0.05 < sc["mean"]["dry"]
    assert set(sc["per_class"]["fuzz"]["mean_controls"]) == {"truth", "before", "after"}
    assert "Spectral fine-tuning" in (ft / "MODEL_CARD.md").read_text()
    assert type(load_estimator(ft)[0]).__name__ == "MelResNetEstimator"
    with pytest.raises(FxlensError, match="--init checkpoint holds a 'resnet'"):
        train_estimator(tiny_fxset, tmp_path / "x", init=out, model="mlp", epochs=0)


def test_load_estimator_of_both_kinds_and_a_foreign_model(tiny_fxset, tmp_path):
    train_estimator(tiny_fxset, tmp_path / "mlp", epochs=1)
    mlp, cfg = load_estimator(tmp_path / "mlp")
    assert type(mlp).__name__ == "ParameterEstimator" and cfg["model"] == "mlp"
    # an MLP config from before the `model` key existed still loads as an MLP (the shipped checkpoint)
    cfg.pop("model")
    (tmp_path / "mlp" / "config.json").write_text(json.dumps(cfg))
    assert type(load_estimator(tmp_path / "mlp")[0]).__name__ == "ParameterEstimator"
    cfg["model"] = "transformer"
    (tmp_path / "mlp" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown estimator model 'transformer'"):
        load_estimator(tmp_path / "mlp")


def test_cli_bad_model_is_one_line_and_writes_nothing(tiny_fxset, tmp_path, capsys):
    from fxlens.cli import main

    out = tmp_path / "never"
    code = main(["train", "estimator", str(tiny_fxset), "-o", str(out), "--model", "cnn"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:")
    assert "one of: mlp, resnet, resnet-features" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(FxlensError, match="unknown estimator model"):
        train_estimator(tiny_fxset, out, model="cnn")
    assert not out.exists()


def test_bench_without_the_dry_stems_says_how_to_skip(tiny_fxset, tmp_path, capsys):
    from fxlens.cli import main

    out = tmp_path / "b.json"
    code = main(["bench", "recognition", str(tiny_fxset), "--stems", str(tmp_path / "nowhere"), "--out", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and "--mrstft-clips 0" in err and not out.exists()


def test_bench_recognition_scores_a_resnet_estimator(tiny_fxset, tiny_resnet, tmp_path, capsys):
    from fxlens.cli import main

    out = tmp_path / "b.json"
    code = main(["bench", "recognition", str(tiny_fxset), "--estimator", str(tiny_resnet[0]), "--out", str(out),
                 "--mrstft-clips", "1", "--no-real"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["estimator"]["model"] == "resnet" and res["estimation"]["test"]["clips"] == 6
    assert res["spectral"]["ood"]["clips"] == 3


def test_analyze_runs_with_a_resnet_estimator(tiny_resnet, monkeypatch):
    """`fxlens.analyze(..., estimator=<ResNet checkpoint>)` feeds it the windows' audio, not features."""
    from fxlens.tasks import analyze as analyze_mod
    from fxlens.tasks.analyze import analyze

    # the tiny estimator knows fuzz, not the shipped recognizer's "distortion": route the detection there
    monkeypatch.setattr(analyze_mod, "_fine_choice", lambda aggregated, fine: ("fuzz", 1.0))

    t = torch.arange(44100 * 2) / 44100
    x = torch.tanh(30 * torch.sin(2 * math.pi * 110 * t)).expand(2, -1) * 0.3  # hard-driven: not dry
    res = analyze(x, 44100, estimator=tiny_resnet[0])
    assert res.effects and res.effects[0].fine_class == "fuzz"  # the estimator ran
    assert all(0.0 <= c <= 1.0 for d in res.effects for c in d.controls.values())


def test_randomized_internals_share_the_class_slot_and_re_render_with_their_own(stems, tmp_path):  # noqa: F811
    """A set built with --randomize-internals (drives with amplifier stages drawn per clip, chorus with its sweep
    and stereo phase drawn): one slot per class, under the class's configuration; re-rendering a clip's true
    controls with the clip's own configuration gives back the clip (MRSTFT about 0), whereas the class's
    configuration alone would not."""
    out = tmp_path / "fxset-rand"
    fxset.build_fxset(stems, out, clips_per_class=2, seed=5, chains=False, classes=["dry", "fuzz", "chorus"],
                      randomize_internals=True)
    labels = fxset.read_labels(out, "train")
    configs = {json.dumps(r["preset"]["effects"][0].get("config") or {}, sort_keys=True)
               for r in labels if r["fine_class"] == "fuzz"}
    assert any("cabinet_lowpass_hz" in c or "input_highpass_hz" in c or "mid_gain_db" in c for c in configs)
    est = tmp_path / "est"
    metrics = train_estimator(out, est, epochs=1, seed=0, finetune_steps=1, finetune_batch=4, spectral_clips=2)
    _, cfg = load_estimator(est)
    assert cfg["class_slots"]["fuzz"] == slot_key("distortion", dict(fxset.FXSET_CLASSES["fuzz"].config))
    assert cfg["class_slots"]["chorus"] == slot_key("modulated_delay", {"stereo_phase_deg": 90.0})
    assert cfg["slot_info"][cfg["class_slots"]["fuzz"]]["config"] == {}
    sc = metrics["finetune"]["spectral"]["test"]
    assert sc["mean"]["truth"] < 0.05 < sc["mean"]["dry"]

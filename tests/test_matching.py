"""Parameter matching (`fxlens bench match`): triplets, inference-time optimization, baselines, CLI.

Independent references: the dry input is read back with soundfile from the stem file; the preset's physical values
are checked against the closed-form box mapping of `PAIR_RANGES`; the target is re-rendered from the preset alone.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from fxlens.bench import baselines as bl
from fxlens.bench import matching as mt
from fxlens.data.pairs import PAIR_RANGES
from fxlens.data.stems import open_dataset
from fxlens.errors import FxlensError
from fxlens.fx.chain import Chain

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_fxset import SR, notes  # noqa: E402  (the same tiny synthetic stems)

SECONDS = 0.5
TOY_CHAIN = ["gain", "parametric_eq"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A fxlens-layout dataset whose test split has three songs with a piano and a bass stem (1.5 s each)."""
    root = tmp_path_factory.mktemp("match") / "toy"
    for k, song in enumerate(["t0", "t1", "t2"]):
        d = root / "test" / song
        d.mkdir(parents=True)
        sf.write(str(d / "piano.flac"), notes(1.5, 220.0, k, 2), SR, subtype="PCM_24")
        sf.write(str(d / "bass.flac"), notes(1.5, 55.0, k + 100, 1), SR, subtype="PCM_24")
        (d / "song.json").write_text(json.dumps({"song_id": song}))
    d = root / "train" / "u0"  # a training song, never used
    d.mkdir(parents=True)
    sf.write(str(d / "bass.flac"), notes(1.5, 55.0, 7, 1), SR, subtype="PCM_24")
    (d / "song.json").write_text(json.dumps({"song_id": "u0"}))
    return root


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from fxlens.models.checkpoint import save_checkpoint
    from fxlens.models.encoder import FxEncoder

    g = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(2, 384, generator=g), dim=-1)
    torch.manual_seed(0)
    m = FxEncoder("small", ["bass", "piano"], vectors)
    return save_checkpoint(tmp_path_factory.mktemp("enc") / "enc-test", m.state_dict(), m.config(), "# test\n")


def read_source(root, meta) -> torch.Tensor:
    path = root / "test" / meta["song"] / "bass.flac"
    n = int(round(SECONDS * SR))
    data, sr = sf.read(str(path), start=int(round(meta["offset_s"] * SR)), frames=n, dtype="float32", always_2d=True)
    assert sr == SR
    data = np.pad(data, ((0, n - data.shape[0]), (0, 0)))
    data = np.repeat(data, 2, axis=1) if data.shape[1] == 1 else data
    return torch.from_numpy(np.ascontiguousarray(data.T))[None]


def test_triplets_are_deterministic_and_match_their_presets(root):
    ds = open_dataset(root, split="test")
    chain = mt.ChainModel(TOY_CHAIN, PAIR_RANGES)
    assert chain.n_params == 1 + 18
    a = mt.build_triplets(ds, "bass", 3, SECONDS, 5, chain, SR)
    b = mt.build_triplets(ds, "bass", 2, SECONDS, 5, chain, SR)  # a prefix of the same draws
    for s, t in zip(a, b):
        for name in ("x", "reference", "target"):
            torch.testing.assert_close(getattr(s, name), getattr(t, name), atol=0, rtol=0)
        assert s.preset == t.preset and s.meta == t.meta
    other = mt.build_triplets(ds, "bass", 1, SECONDS, 6, chain, SR)[0]
    assert not torch.equal(other.target, a[0].target)
    for t in a:
        assert t.meta["input"]["song"] != t.meta["reference"]["song"]
        assert t.x.shape == t.reference.shape == t.target.shape == (1, 2, int(SECONDS * SR))
        # the input is the stem's segment, only scaled (loudness), as soundfile reads it
        src = read_source(root, t.meta["input"])
        scale = float((t.x * src).sum() / src.square().sum())
        torch.testing.assert_close(t.x, src * scale, atol=1e-5, rtol=0)
        # the preset holds the drawn settings: gain_db = -12 + 24 s (PAIR_RANGES' gain range, linear in dB)
        assert t.preset["effects"][0]["name"] == "gain"
        assert t.preset["effects"][0]["params"]["gain_db"]["value"] == pytest.approx(-12 + 24 * t.settings[0])
        assert [e["name"] for e in t.preset["effects"]] == TOY_CHAIN
        # the target is the input through the preset, re-rendered from the preset alone
        again = Chain.from_preset(json.loads(json.dumps(t.preset)))(read_source(root, t.meta["input"]) * scale, SR)
        torch.testing.assert_close(again, t.target, atol=1e-4, rtol=1e-4)
        # and the optimizers' rendering path gives the same audio from the settings
        torch.testing.assert_close(chain.render(t.x, SR, torch.as_tensor(t.settings, dtype=torch.float32)[None]),
                                   t.target, atol=1e-4, rtol=1e-3)


def test_chain_model_box_and_errors():
    chain = mt.ChainModel(["gain", "delay"], PAIR_RANGES)
    assert chain.param_names == ["gain.gain_db", "delay.time_ms", "delay.feedback", "delay.mix"]
    phys = chain.physical(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    assert phys[0]["gain_db"].tolist() == pytest.approx([-12.0, 12.0])
    assert phys[1]["time_ms"].tolist() == pytest.approx([20.0, 1000.0])
    assert phys[1]["feedback"].tolist() == pytest.approx([0.0, 0.8])
    full = mt.ChainModel(["gain"], None).physical(torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert full[0]["gain_db"].tolist() == pytest.approx([-24.0, 24.0])
    with pytest.raises(FxlensError):
        mt.ChainModel(["gain", "gain"])
    with pytest.raises(FxlensError):
        mt.ChainModel(["nonsense"])
    with pytest.raises(FxlensError):
        mt.ChainModel([])


def _toy(seed: int = 0):
    """A dry clip, its reference (the same clip through gain +9 dB) and raw log-mel statistics (not z-scored: a
    z-scoring centred on the gain axis would make every gain on one side of the centre look alike to a cosine)."""
    x = torch.from_numpy(notes(SECONDS, 110.0, seed, 2).T.copy())[None] * 0.3
    chain = mt.ChainModel(["gain"], PAIR_RANGES)
    truth = np.array([(9.0 + 12.0) / 24.0])
    ref = chain.render(x, SR, torch.as_tensor(truth, dtype=torch.float32)[None])
    emb = mt.ITOEmbedder(bl.LogMelStatsEmbedder(), SR)
    return x, ref, chain, truth, emb


def test_gradient_descent_reduces_embedding_distance():
    x, ref, chain, truth, emb = _toy()
    assert emb.differentiable
    e_ref = emb.embed(ref)

    def loss(s):
        return mt.cosine_distance(emb.embed_torch(chain.render(x, SR, s)), e_ref).mean()

    est = mt.optimize_grad(loss, chain.n_params, iterations=40, lr=0.1)
    assert len(est.history) == 41 and est.history[0] > 0.01
    assert est.distance < 0.01 * est.history[0]
    assert all(a >= b for a, b in zip(est.history, est.history[1:]))  # best so far
    assert abs(est.settings[0] - truth[0]) < 0.02  # from 0 dB (the middle) to +9 dB, within 0.5 dB


@pytest.mark.parametrize("baseline, noise, eps", [(bl.BandStatsEmbedder, 0.0, 1e-3), (bl.AutoFXEmbedder, 0.01, 1e-5)])
def test_feature_baselines_are_gradient_objectives(baseline, noise, eps):
    """The band statistics are torch all the way, and the AutoFX (MFCC + spectral) features at 44.1 kHz resample
    through soxr's filter as a convolution: their ITO embedders are differentiable, and the gradient of the cosine
    distance with respect to the audio matches a central finite difference along a random direction. (The AutoFX
    roll-off is a step function of the audio: a small step, on a note with a little noise, crosses no step.)"""
    emb = mt.ITOEmbedder(baseline(), SR)
    assert emb.differentiable
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(notes(0.5, 110.0, 0, 2).T.copy())[None].double() * 0.3
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref = emb.embed(x * 0.5 + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64))

    def f(a):
        return mt.cosine_distance(emb.embed_torch(a).double(), ref.to(a.device)).sum()

    xg = x.clone().requires_grad_(True)
    f(xg).backward()
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v = v / v.norm()
    with torch.no_grad():
        fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert float(fd) != 0.0
    assert float((xg.grad * v).sum()) == pytest.approx(float(fd), rel=0.02)


def test_gradient_descent_through_the_compressor_leaves_no_graph_behind():
    """Optimizing through torchcomp's recursion (compressor, limiter) must free every graph it builds, the optimizer's
    logits included: torchcomp's Function alone keeps its graph node and inputs alive for good
    (`fxlens.fx.dynamics._OnePoleRecursion`). Reference: the live tensors that require grad, counted by gc."""
    import gc

    chain = mt.ChainModel(["multiband_compressor", "limiter"])
    x = torch.randn(1, 2, SR // 10, generator=torch.Generator().manual_seed(0)) * 0.3

    def live() -> int:  # the optimizer's (1, P) logits are a leaf of every graph it builds: one leaked graph keeps them
        gc.collect()
        # issubclass(type(o)), not isinstance: a dead weak proxy among gc's objects raises on isinstance
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.requires_grad)

    def loss(s):
        return chain.render(x, SR, s).square().mean()

    mt.optimize_grad(loss, chain.n_params, iterations=2)  # warm-up: caches, numba compilation
    before = live()
    for _ in range(3):
        mt.optimize_grad(loss, chain.n_params, iterations=2)
    assert live() == before


def test_cmaes_reduces_embedding_distance():
    pytest.importorskip("cma")
    x, ref, chain, truth, emb = _toy(1)
    e_ref = emb.embed(ref)

    def objective(pop):
        out = chain.render(x, SR, torch.as_tensor(pop, dtype=torch.float32))
        return mt.cosine_distance(emb.embed(out), e_ref).numpy()

    start = float(objective(np.array([[0.5]]))[0])
    est = mt.optimize_cmaes(objective, chain.n_params, iterations=8, popsize=6, seed=3)
    again = mt.optimize_cmaes(objective, chain.n_params, iterations=8, popsize=6, seed=3)
    assert est.distance < 0.2 * start and np.array_equal(est.settings, again.settings)  # seeded
    assert abs(est.settings[0] - truth[0]) < 0.1 and 0.0 <= est.settings[0] <= 1.0


def test_missing_cma_is_a_clear_error(monkeypatch, root):
    monkeypatch.setitem(sys.modules, "cma", None)  # `import cma` now raises ImportError
    with pytest.raises(FxlensError, match="cma"):
        mt.require_cma()
    with pytest.raises(FxlensError, match="cma"):
        mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=1, seconds=SECONDS, method="cmaes",
                                  effects=["gain"], embedders=[bl.LogMelStatsEmbedder()])


def test_benchmark_rows_oracle_and_json(root, encoder_dir, tmp_path):
    pytest.importorskip("cma")
    seen = []
    embedders = [bl.RandomEmbedder(), bl.LogMelStatsEmbedder(), bl.EncoderEmbedder(encoder_dir)]
    res = mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=2, seconds=SECONDS, iterations=2,
                                    popsize=4, n_random=2, method="both", embedders=embedders, effects=["gain"],
                                    n_boot=20, out_json=tmp_path / "m.json",
                                    progress=lambda name, done, total: seen.append((name, done, total)))
    rows = list(res["methods"])
    assert rows == [mt.ROW_INPUT, mt.ROW_RANDOM, "ITO CMA-ES · log-mel stats", "ITO CMA-ES · Fx-Encoder++ (enc-test)",
                    "ITO grad · Fx-Encoder++ (enc-test)", mt.ROW_ORACLE]  # no ITO on random vectors
    m = res["methods"]
    oracle = m[mt.ROW_ORACLE]["instruments"]["bass"]["L_d"]
    assert oracle["n"] == 2 and oracle["mean"] < 1e-3
    assert m[mt.ROW_INPUT]["instruments"]["bass"]["L_d"]["mean"] > 10 * max(oracle["mean"], 1e-4)
    for row in rows:
        s = m[row]["instruments"]["all"]["L_d"]
        assert s["lo"] <= s["mean"] <= s["hi"] and len(m[row]["instruments"]["bass"]["values"]) == 2
    assert 0.0 <= m["ITO CMA-ES · log-mel stats"]["instruments"]["bass"]["param_mae"]["mean"] <= 1.0
    assert seen[-1] == ("bass", 2 * 4, 2 * 4)  # triplets + 3 ITO rows x 2 triplets
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk["config"]["chain"] == ["gain"] and on_disk["config"]["param_ranges"]["gain"]["gain_db"] == [-12, 12]
    assert len(on_disk["instruments"]["bass"]["triplets"]) == 2
    assert "| oracle (true parameters) |" in res["table"] and "ITO grad · Fx-Encoder++ (enc-test)" in res["table"]
    # paired with the input on the same triplets, recomputed here from the per-triplet values
    for row in rows[1:-1]:
        d = np.subtract(m[row]["instruments"]["bass"]["values"], m[mt.ROW_INPUT]["instruments"]["bass"]["values"])
        for inst in ("bass", "all"):
            v = m[row]["instruments"][inst]["vs_input"]
            assert v["mean"] == pytest.approx(d.mean()) and v["closer"] == int((d < 0).sum()) and v["n"] == 2
    assert "vs_input" not in m[mt.ROW_INPUT]["instruments"]["bass"] and "vs_input" not in m[mt.ROW_ORACLE]["instruments"]["all"]
    assert "Paired with the unprocessed input" in res["table"] and "/2 |" in res["table"]


def _run(root, out, n, embedders, seen=None, **kw):
    return mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=n, seconds=SECONDS, iterations=2,
                                     popsize=4, n_random=2, method="cmaes", embedders=embedders, effects=["gain"],
                                     n_boot=20, out_json=out, calibration_triplets=3,
                                     progress=None if seen is None else (lambda *a: seen.append(a)), **kw)


def test_journal_resumes_extends_and_adds_rows(root, tmp_path):
    pytest.importorskip("cma")
    out = tmp_path / "m.json"
    first = _run(root, out, 2, [bl.LogMelStatsEmbedder()])
    journal = mt.journal_dir(out) / "bass.jsonl"
    assert journal.is_file() and len(journal.read_text().splitlines()) == 3  # settings + 2 triplets
    seen = []
    more = _run(root, out, 3, [bl.LogMelStatsEmbedder()], seen)
    assert seen[0] == ("bass", 2 * 2, 3 * 2)  # two triplets journaled: only the third is done
    fresh = _run(root, tmp_path / "fresh.json", 3, [bl.LogMelStatsEmbedder()])  # no journal: all three again
    row = "ITO CMA-ES · log-mel stats"
    for res in (first, more):  # a triplet's numbers do not depend on how many are scored (fixed calibration)
        for r in (mt.ROW_INPUT, mt.ROW_RANDOM, row):
            n = len(res["methods"][r]["instruments"]["bass"]["values"])
            assert res["methods"][r]["instruments"]["bass"]["values"] == fresh["methods"][r]["instruments"]["bass"]["values"][:n]
    assert json.loads(out.read_text())["config"]["n_triplets"] == 3
    # a killed run leaves its last line cut short: that triplet is done again
    text = journal.read_text()
    journal.write_text(text[: len(text) - 20])
    seen = []
    again = _run(root, out, 3, [bl.LogMelStatsEmbedder()], seen)
    assert seen[0] == ("bass", 2 * 2, 3 * 2)
    assert again["methods"][row]["instruments"]["bass"]["values"] == fresh["methods"][row]["instruments"]["bass"]["values"]
    # another embedder adds its row only
    seen = []
    both = _run(root, out, 3, [bl.LogMelStatsEmbedder(), bl.BandStatsEmbedder()], seen)
    assert seen[0] == ("bass", 3 * 2, 3 * 3)
    assert both["methods"][row]["instruments"]["bass"]["values"] == fresh["methods"][row]["instruments"]["bass"]["values"]


def test_journal_of_other_settings_or_model_is_an_error(root, encoder_dir, tmp_path):
    pytest.importorskip("cma")
    from fxlens.models.checkpoint import save_checkpoint
    from fxlens.models.encoder import load_encoder

    out = tmp_path / "m.json"
    _run(root, out, 1, [bl.EncoderEmbedder(encoder_dir)])
    with pytest.raises(FxlensError, match="iterations"):
        mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=1, seconds=SECONDS, iterations=3, popsize=4,
                                  n_random=2, method="cmaes", embedders=[bl.EncoderEmbedder(encoder_dir)],
                                  effects=["gain"], out_json=out, calibration_triplets=3)
    m = load_encoder(encoder_dir)  # other weights, same folder name
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    other = save_checkpoint(tmp_path / "x" / "enc-test", m.state_dict(), m.config(), "# test\n")
    with pytest.raises(FxlensError, match="another model"):
        _run(root, out, 1, [bl.EncoderEmbedder(other)])
    res = _run(root, out, 1, [bl.EncoderEmbedder(other)], restart=True)  # --restart discards the journal
    assert res["methods"]["ITO CMA-ES · Fx-Encoder++ (enc-test)"]["instruments"]["bass"]["L_d"]["n"] == 1


def test_benchmark_input_errors(root):
    with pytest.raises(FxlensError, match="no 'cello'"):
        mt.run_matching_benchmark(root, instruments=["cello"], method="grad", effects=["gain"],
                                  embedders=[bl.LogMelStatsEmbedder()], gradient_baselines=True)
    class Opaque:  # embeddings without gradients (e.g. a model outside torch)
        name = "opaque"

        def embed(self, audio, sample_rate):
            return audio.mean(-1).double()

    with pytest.raises(FxlensError, match="differentiable"):
        mt.run_matching_benchmark(root, instruments=["bass"], method="grad", effects=["gain"], embedders=[Opaque()])
    with pytest.raises(FxlensError, match="method"):
        mt.run_matching_benchmark(root, method="adam")
    with pytest.raises(FxlensError, match="0.25"):
        mt.run_matching_benchmark(root, seconds=0.1)


def _one_error_line(code, err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return code == 1 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err


def test_cli_bad_input_is_one_error_line(root, tmp_path, capsys, monkeypatch):
    from fxlens.cli import main
    from fxlens.models import checkpoint

    monkeypatch.setattr(checkpoint, "ASSETS_DIR", tmp_path / "assets")  # no shipped encoder
    out = tmp_path / "m.json"
    bad = [
        ["--data-dir", str(root), "--instruments", "cello"],
        ["--data-dir", str(root), "--method", "adam"],
        ["--data-dir", str(root), "--triplets", "0"],
        ["--data-dir", str(tmp_path / "missing")],
        ["--data-dir", str(root), "--method", "grad", "--instruments", "bass"],  # no encoder: nothing to differentiate
        ["--data-dir", str(root), "--effects", "gain,nonsense"],
        ["--data-dir", str(root), "--model", str(tmp_path / "no-model")],
        ["--data-dir", str(root), "--device", "nonsense"],
        ["--data-dir", str(root), "--split", "train"],  # never the training songs
        ["--data-dir", str(root), "--reference", "song"],
        ["--data-dir", str(root), "--baselines", "mfcc,nope"],
        ["--data-dir", str(root), "--baselines", ","],
        ["--data-dir", str(root), "--baselines", "none"],  # and no encoder: nothing to score
    ]
    for args in bad:
        code = main(["bench", "match", *args, "--out", str(out)])
        _, err = capsys.readouterr()
        assert _one_error_line(code, err), (args, err)
        assert not out.exists()


def test_cli_end_to_end(root, encoder_dir, tmp_path, capsys):
    pytest.importorskip("cma")
    from fxlens.cli import main

    code = main(["bench", "match", "--data-dir", str(root), "--triplets", "1", "--instruments", "bass",
                 "--seconds", str(SECONDS), "--iterations", "2", "--popsize", "4", "--effects", "gain",
                 "--model", str(encoder_dir), "--out", str(tmp_path / "m.json"), "--markdown", str(tmp_path / "m.md")])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads((tmp_path / "m.json").read_text())
    assert list(res["methods"]) == [mt.ROW_INPUT, mt.ROW_RANDOM, "ITO CMA-ES · mfcc+spectral",
                                    "ITO CMA-ES · log-mel stats", "ITO CMA-ES · band statistics",
                                    "ITO CMA-ES · random CNN",
                                    "ITO CMA-ES · Fx-Encoder++ (enc-test)", "ITO grad · Fx-Encoder++ (enc-test)",
                                    mt.ROW_ORACLE]
    assert "L_d" in (tmp_path / "m.md").read_text() and "oracle (true parameters)" in out
    # --gradient-baselines adds a gradient row for each differentiable baseline, same journal
    code = main(["bench", "match", "--data-dir", str(root), "--triplets", "1", "--instruments", "bass",
                 "--seconds", str(SECONDS), "--iterations", "2", "--popsize", "4", "--effects", "gain", "--method", "grad",
                 "--gradient-baselines", "--model", str(encoder_dir), "--out", str(tmp_path / "m.json")])
    assert code == 0, capsys.readouterr().err
    rows = list(json.loads((tmp_path / "m.json").read_text())["methods"])
    assert [r for r in rows if r.startswith("ITO grad")] == [
        "ITO grad · mfcc+spectral", "ITO grad · log-mel stats", "ITO grad · band statistics", "ITO grad · random CNN",
        "ITO grad · Fx-Encoder++ (enc-test)"]
    # --baselines picks which baselines run (here: the encoder alone), in a journal of its own
    code = main(["bench", "match", "--data-dir", str(root), "--triplets", "1", "--instruments", "bass",
                 "--seconds", str(SECONDS), "--iterations", "2", "--popsize", "4", "--effects", "gain",
                 "--baselines", "none", "--model", str(encoder_dir), "--out", str(tmp_path / "e.json")])
    assert code == 0, capsys.readouterr().err
    assert list(json.loads((tmp_path / "e.json").read_text())["methods"]) == [
        mt.ROW_INPUT, mt.ROW_RANDOM, "ITO CMA-ES · Fx-Encoder++ (enc-test)", "ITO grad · Fx-Encoder++ (enc-test)",
        mt.ROW_ORACLE]


def test_default_baselines_by_name():
    from fxlens.bench import baselines as bl
    from fxlens.errors import ParameterError

    assert [e.name for e in bl.default_baselines()] == ["random", "mfcc+spectral", "log-mel stats",
                                                        "band statistics", "random CNN"]
    assert [e.name for e in bl.default_baselines(names=["cnn", "mfcc"])] == ["mfcc+spectral", "random CNN"]
    assert bl.default_baselines(names=[]) == []
    with pytest.raises(ParameterError, match="unknown baseline 'mel'"):
        bl.default_baselines(names=["mel"])


def test_mix_references_are_paired_with_stem_ones_at_the_mixture_level(root):
    ds = open_dataset(root, split="test")
    chain = mt.ChainModel(TOY_CHAIN, PAIR_RANGES)
    stem = mt.build_triplets(ds, "bass", 8, SECONDS, 5, chain, SR)
    mix = mt.build_triplets(ds, "bass", 8, SECONDS, 5, chain, SR, reference="mix")
    meter = pyloudnorm.Meter(SR)
    accompanied = 0
    for s, m in zip(stem, mix):
        for name in ("x", "target"):  # the same input, chain and target: the scenarios are paired
            torch.testing.assert_close(getattr(s, name), getattr(m, name), atol=0, rtol=0)
        assert s.preset == m.preset and m.meta["reference_others"] in ([], ["piano"])
        assert meter.integrated_loudness(m.reference[0].double().numpy().T) == pytest.approx(-18.0, abs=0.1)
        corr = float(torch.nn.functional.cosine_similarity(s.reference.flatten(), m.reference.flatten(), dim=0))
        if m.meta["reference_others"]:
            accompanied += 1
            assert corr < 0.999  # a piano stem of the reference's song was added
        else:
            assert corr == pytest.approx(1.0, abs=1e-5)  # the stem alone, only brought to -18 LUFS
    assert 0 < accompanied < 8
    with pytest.raises(FxlensError, match="reference"):
        mt.build_triplets(ds, "bass", 1, SECONDS, 5, chain, SR, reference="song")


def test_mix_reference_benchmark_adds_text_query_rows(root, encoder_dir, tmp_path):
    from fxlens.models.encoder import load_encoder

    enc = bl.EncoderEmbedder(encoder_dir)
    query = mt.ITOEmbedder(enc, SR, text_query=True)
    query.set_instrument("bass")
    audio = torch.from_numpy(notes(1.0, 55.0, 3, 2).T.copy())[None]
    # the query row embeds as the public API does with a text query, not as the mixture embedding
    torch.testing.assert_close(query.embed(audio).float(), load_encoder(encoder_dir).embed(audio, SR, query="bass"),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(query.embed(audio), mt.ITOEmbedder(enc, SR).embed(audio))
    with pytest.raises(FxlensError, match="text query"):
        mt.ITOEmbedder(bl.LogMelStatsEmbedder(), SR, text_query=True)
    res = mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=1, seconds=SECONDS, iterations=2,
                                    method="grad", embedders=[enc], effects=["gain"], n_boot=20,
                                    reference="mix", out_json=tmp_path / "mix.json")
    assert list(res["methods"]) == [mt.ROW_INPUT, mt.ROW_RANDOM, "ITO grad · Fx-Encoder++ (enc-test)",
                                    "ITO grad · Fx-Encoder++ (enc-test) · text query", mt.ROW_ORACLE]
    assert res["config"]["reference"] == "mix" and "inside a mixture" in mt.markdown_report(res)
    with pytest.raises(FxlensError, match="other settings"):  # a journal of the mix scenario is not the stem one's
        mt.run_matching_benchmark(root, instruments=["bass"], n_triplets=1, seconds=SECONDS, iterations=2,
                                  method="grad", embedders=[enc], effects=["gain"], out_json=tmp_path / "mix.json")

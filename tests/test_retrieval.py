"""Retrieval benchmark: log-mel vs librosa, metrics vs hand-computed cases, eval-set construction on a tiny
dataset written in tmp_path (determinism, cache, content rules), oracle / random / baseline embedders."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from fxlens.bench import baselines as bl
from fxlens.bench import metrics as mt
from fxlens.bench import retrieval as rt
from fxlens.features.mel import log_mel

SR = 16000  # small and fast; every effect of the default pool accepts it
SECONDS = 0.5
# Tests use the cheap effects of the pool (the reverb's impulse response and the compressor dominate render time);
# what they check (determinism, cache, content and chain rules, metrics) does not depend on which effects run.
EFFECTS = ("parametric_eq", "distortion", "delay", "stereo_imager", "gain")


# ---------------------------------------------------------------------------------------------------------------
# log-mel
# ---------------------------------------------------------------------------------------------------------------


def test_log_mel_matches_librosa_reference():
    librosa = pytest.importorskip("librosa")
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(2, 2, 44100, generator=g, dtype=torch.float64)
    x[1] *= 1e-4  # quiet item: exercises the -80 dB clamp
    x[0, 0] *= 300.0  # loud channel: exercises the +40 dB clamp
    got = log_mel(x, 44100)
    assert got.shape == (2, 2, 64, 1 + 44100 // 512) and got.dtype == torch.float64
    for b in range(2):
        for c in range(2):
            S = librosa.feature.melspectrogram(y=x[b, c].numpy(), sr=44100, n_fft=2048, hop_length=512, power=2.0,
                                               center=True, pad_mode="constant", n_mels=64, fmin=50, fmax=18000,
                                               htk=False, norm="slaney")
            db = np.clip(librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None), -80, 40)
            np.testing.assert_allclose(got[b, c].numpy(), (db + 80) / 120 * 2 - 1, atol=1e-6)
    assert got.min() >= -1 and got.max() <= 1
    assert (got[0, 0] == 1).any() and (got[1] == -1).any()  # both clamps reached


# ---------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------


def test_metrics_hand_cases():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # cosine with q: query 0 -> [1, .8, 0, -1]; query 1 -> [0, .6, 1, 0]; query 2 -> constant
    c0 = torch.tensor([[2.0, 0.0], [0.8, 0.6], [0.0, 3.0], [-1.0, 0.0]])
    c1 = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    c2 = torch.ones(4, 2)
    cands = torch.stack([c0, c1, c2])
    target = torch.tensor([1, 1, 2])  # ranks: 2 (below 1.0), 2 (below 1.0), 4 (pessimistic tie, last of 4)
    res = mt.retrieval_metrics(q, cands, target=target, ks=(1, 2, 3), cutoff=3, n_boot=200)
    pq = res["per_query"]
    np.testing.assert_array_equal(pq["rank"], [2, 2, 4])
    np.testing.assert_array_equal(pq["R@1"], [0, 0, 0])
    np.testing.assert_array_equal(pq["R@2"], [1, 1, 0])
    np.testing.assert_allclose(pq["MRR@3"], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(pq["mAP@3"], pq["MRR@3"])  # one relevant item: AP@k == reciprocal rank
    assert res["summary"]["R@2"]["mean"] == pytest.approx(2 / 3)
    assert res["summary"]["n"] == 3


def test_map_with_several_relevant_items():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = np.array([[True, False, True, False, True]])
    pq = mt.per_query_metrics(scores, rel, ks=(1,), cutoff=5)
    assert pq["mAP@5"][0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert pq["MRR@5"][0] == 1.0 and pq["R@1"][0] == 1.0
    # a relevance mask and a target index give the same thing for one relevant item
    q, c = torch.randn(5, 3), torch.randn(5, 7, 3)
    t = torch.tensor([0, 3, 6, 2, 2])
    a = mt.retrieval_metrics(q, c, target=t)["per_query"]
    b = mt.retrieval_metrics(q, c, relevant=mt.relevance_mask(t, 7))["per_query"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    v = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = mt.bootstrap_ci(v, n_boot=2000, seed=3)
    assert (lo, hi) == mt.bootstrap_ci(v, n_boot=2000, seed=3)
    assert lo < 0.3 < hi and 0.18 < lo and hi < 0.42  # binomial sd ~ 0.046
    assert mt.bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_ratio_to_best_baseline_with_paired_bootstrap():
    method = np.r_[np.ones(30), np.zeros(70)]  # R@1 0.30
    base = np.stack([np.r_[np.zeros(60), np.ones(10), np.zeros(30)],  # 0.10, the best
                     np.r_[np.ones(5), np.zeros(95)]])  # 0.05
    r = mt.ratio_to_best_ci(method, base, n_boot=2000, seed=1)
    assert r["best"] == 0 and r["ratio"] == pytest.approx(3.0)
    assert r["lo"] < 3.0 < r["hi"] and r["lo"] > 1.5 and r == mt.ratio_to_best_ci(method, base, n_boot=2000, seed=1)
    # a duplicated baseline changes nothing; order does not matter but for the index
    assert mt.ratio_to_best_ci(method, base[[0, 0, 1]], n_boot=2000, seed=1)["lo"] == r["lo"]
    assert mt.ratio_to_best_ci(method, base[::-1], n_boot=2000, seed=1)["best"] == 1
    # the best baseline of each resample is the denominator: two equal baselines whose hits fall on different
    # queries give a lower ratio than either alone
    other = np.r_[np.zeros(80), np.ones(10), np.zeros(10)]
    two = mt.ratio_to_best_ci(method, np.stack([base[0], other]), n_boot=2000, seed=1)
    assert two["ratio"] == pytest.approx(3.0) and two["lo"] < r["lo"]
    assert mt.ratio_to_best_ci(method, np.zeros((1, 100)), n_boot=50)["ratio"] == float("inf")


def test_random_embeddings_score_chance():
    Q, N, D = 3000, 50, 16
    g = torch.Generator().manual_seed(0)
    res = mt.retrieval_metrics(torch.randn(Q, D, generator=g), torch.randn(Q, N, D, generator=g),
                               target=torch.randint(0, N, (Q,), generator=g), n_boot=300)["summary"]
    for k in (1, 5, 10):
        assert res[f"R@{k}"]["mean"] == pytest.approx(k / N, abs=0.02)
        assert res[f"R@{k}"]["lo"] <= k / N <= res[f"R@{k}"]["hi"] + 0.01


# ---------------------------------------------------------------------------------------------------------------
# evaluation sets on a tiny dataset
# ---------------------------------------------------------------------------------------------------------------


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    return np.stack([x, 0.8 * x], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tiny"
    for split, songs in {"train": ["s00"], "test": ["s01", "s02", "s03"]}.items():
        for i, song in enumerate(songs):
            d = root / split / song
            d.mkdir(parents=True)
            sf.write(str(d / "drums.flac"), _tone(1.5, 150 + 70 * i, i), SR, subtype="PCM_24")
            sf.write(str(d / "bass.flac"), _tone(1.5, 55 + 20 * i, 10 + i), SR, subtype="PCM_24")
            (d / "song.json").write_text(json.dumps({"song_id": song}))
    return root


def _build(root, cache_dir=None, seed=0, n_candidates=4, n_queries=6, groups=None):
    return rt.build_eval_set(root, n_candidates=n_candidates, n_queries=n_queries, seconds=SECONDS, seed=seed,
                             sample_rate=SR, include_real=False, cache_dir=cache_dir, groups=groups,
                             effects=EFFECTS, max_effects=len(EFFECTS))


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_set(tiny_root, tiny_cache):
    return _build(tiny_root, cache_dir=tiny_cache)


def test_eval_set_shape_and_content_rules(tiny_set):
    assert set(tiny_set.groups) == {"bass", "drums", "mixture"}  # test split only; the train song is never used
    for g in tiny_set:
        assert g.queries.shape == (6, 2, int(SECONDS * SR)) and g.pool.shape == (8, 2, int(SECONDS * SR))
        assert g.candidates.shape == (6, 4) and g.n_candidates == 4
        assert torch.isfinite(g.queries).all() and torch.isfinite(g.pool).all()
        for i in range(g.n_queries):
            q, tgt = g.query_meta[i], g.pool_meta[int(g.candidates[i, g.target[i]])]
            assert q["song"] in {"s01", "s02", "s03"}
            assert tgt["song"] != q["song"]  # the target is other content...
            assert tgt["preset"] == q["preset"]  # ...under the same chain
            assert len(q["preset"]["effects"]) == q["n_effects"] == int(g.n_effects[i])
            assert 1 <= q["n_effects"] <= len(EFFECTS)
            others = [g.pool_meta[int(j)] for k, j in enumerate(g.candidates[i]) if k != int(g.target[i])]
            assert all(o["preset"] != q["preset"] for o in others)  # distractors: other chains
        # the second block (queries 4, 5) ranks against its own pool
        assert set(g.candidates[4].tolist()) == set(range(4, 8)) and g.target.tolist() == [0, 1, 2, 3, 0, 1]
    mix = tiny_set["mixture"]
    assert any(len(m["stems"]) == 2 for m in mix.query_meta) and all(1 <= len(m["stems"]) <= 2 for m in mix.query_meta)


def test_eval_set_is_deterministic_and_cached(tiny_root, tiny_set, tiny_cache):
    again = _build(tiny_root, groups=["drums"])  # rendered afresh, no cache; a group does not depend on the others
    g, h = tiny_set["drums"], again["drums"]
    torch.testing.assert_close(h.queries, g.queries, atol=0, rtol=0)
    torch.testing.assert_close(h.pool, g.pool, atol=0, rtol=0)
    assert h.query_meta == g.query_meta and h.pool_meta == g.pool_meta and torch.equal(h.candidates, g.candidates)
    files = sorted(tiny_cache.glob("*.pt"))
    assert len(files) == 3
    stamp = [f.stat().st_mtime_ns for f in files]
    second = _build(tiny_root, cache_dir=tiny_cache)
    assert [f.stat().st_mtime_ns for f in files] == stamp  # loaded, not rewritten
    for name, g in tiny_set.groups.items():
        torch.testing.assert_close(second[name].queries, g.queries, atol=0, rtol=0)
        torch.testing.assert_close(second[name].pool, g.pool, atol=0, rtol=0)
        assert second[name].pool_meta == g.pool_meta
    other = _build(tiny_root, cache_dir=tiny_cache, seed=1, n_candidates=2, n_queries=2, groups=["drums"])
    assert len(list(tiny_cache.glob("*.pt"))) == 4  # another configuration is another cache entry
    assert other["drums"].query_meta[0]["preset"] != g.query_meta[0]["preset"]


class OracleEmbedder:
    """Reads the true chain of each clip (looked up by the clip's bytes): one-hot of the chain."""

    name = "oracle"

    def __init__(self, eval_set):
        self.chain_of, chains = {}, []
        for g in eval_set:
            for clips, metas in ((g.queries, g.query_meta), (g.pool, g.pool_meta)):
                for x, m in zip(clips, metas):
                    key = json.dumps(m["preset"], sort_keys=True)
                    if key not in chains:
                        chains.append(key)
                    self.chain_of[self._hash(x)] = chains.index(key)
        self.dim = len(chains)

    @staticmethod
    def _hash(x):
        return hashlib.sha1(x.contiguous().numpy().tobytes()).hexdigest()

    def embed(self, audio, sample_rate):
        out = torch.zeros(audio.shape[0], self.dim)
        for i, x in enumerate(audio):
            out[i, self.chain_of[self._hash(x)]] = 1.0
        return out


def test_oracle_gets_everything_and_random_gets_chance(tiny_set):
    res = rt.evaluate(OracleEmbedder(tiny_set), tiny_set, n_boot=100)
    assert res["overall"]["R@1"]["mean"] == 1.0 and res["overall"]["MRR@10"]["mean"] == 1.0
    assert res["overall"]["n"] == 18
    for g in res["groups"].values():
        assert g["overall"]["R@1"] == {"mean": 1.0, "lo": 1.0, "hi": 1.0}
        assert sum(s["n"] for s in g["by_n_effects"].values()) == 6
    rand = rt.evaluate(bl.RandomEmbedder(seed=0), tiny_set, n_boot=100)
    assert rand["overall"]["R@1"]["mean"] < 0.6  # chance is 1/4; the oracle's 1.0 is not luck
    assert rand["overall"]["R@5"]["mean"] > rand["overall"]["R@1"]["mean"]


def test_baselines_run_and_table(tiny_root, tmp_path):
    out = tmp_path / "res.json"
    res = rt.run_retrieval_benchmark(tiny_root, n_candidates=3, n_queries=3, seconds=SECONDS, seed=0,
                                     embedders=bl.default_baselines(seed=0), out_json=out,
                                     cache_dir=tmp_path / "c", include_real=False, n_boot=50,
                                     effects=EFFECTS, max_effects=3, sample_rate=SR)
    assert list(res["methods"]) == ["random", "mfcc+spectral", "log-mel stats", "band statistics", "random CNN"]
    on_disk = json.loads(out.read_text())
    assert on_disk["methods"]["random CNN"]["overall"]["R@1"] == res["methods"]["random CNN"]["overall"]["R@1"]
    for r in res["methods"].values():
        for g in r["groups"].values():
            assert 0.0 <= g["overall"]["R@1"]["mean"] <= 1.0
    table = rt.markdown_table(res).splitlines()
    assert table[0] == "| method | bass | drums | mixture | all |"
    assert len(table) == 2 + 5 and table[2].startswith("| random | ")
    # standardization fitted on other (training) audio instead of per evaluation group
    emb = bl.AutoFXEmbedder().fit(torch.randn(6, 2, SR) * 0.1, SR)
    e = emb.embed(torch.randn(2, 2, SR) * 0.1, SR)
    assert e.shape == (2, 163) and torch.equal(emb.finalize(e), e)
    cnn = bl.RandomCNNEmbedder(seed=3)
    x = torch.randn(3, 2, SR) * 0.1
    torch.testing.assert_close(cnn.embed(x, SR), bl.RandomCNNEmbedder(seed=3).embed(x, SR))  # seeded weights


# ---------------------------------------------------------------------------------------------------------------
# instrument-wise scenario (Table 3), learned encoders, CLI
# ---------------------------------------------------------------------------------------------------------------

INST_SONGS = ["t01", "t02", "t03", "t04"]
INST_NAMES = ["bass", "drums", "piano"]


@pytest.fixture(scope="module")
def inst_root(tmp_path_factory):
    """4 test songs with bass, drums and piano (drums missing in the last), plus a train song never to be used."""
    root = tmp_path_factory.mktemp("inst") / "tiny"
    for split, songs in {"train": ["t00"], "test": INST_SONGS}.items():
        for i, song in enumerate(songs):
            d = root / split / song
            d.mkdir(parents=True)
            sf.write(str(d / "bass.flac"), _tone(1.5, 55 + 15 * i, 20 + i), SR, subtype="PCM_24")
            sf.write(str(d / "piano.flac"), _tone(1.5, 330 + 40 * i, 30 + i), SR, subtype="PCM_24")
            if song != "t04":
                sf.write(str(d / "drums.flac"), _tone(1.5, 150 + 50 * i, 40 + i), SR, subtype="PCM_24")
            (d / "song.json").write_text(json.dumps({"song_id": song}))
    return root


def _build_inst(root, cache_dir=None, groups=("inst/bass", "inst/drums"), n_candidates=4, n_queries=6):
    return rt.build_eval_set(root, n_candidates=n_candidates, n_queries=n_queries, seconds=SECONDS, seed=0,
                             sample_rate=SR, include_real=False, cache_dir=cache_dir, groups=list(groups),
                             instrument_wise=True, effects=EFFECTS, max_effects=3)


@pytest.fixture(scope="module")
def inst_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("inst-cache")


@pytest.fixture(scope="module")
def inst_set(inst_root, inst_cache):
    return _build_inst(inst_root, cache_dir=inst_cache)


def _pyln_level(x: torch.Tensor) -> torch.Tensor:
    """(1, 2, T) scaled to -18 LUFS, measured by pyloudnorm (an implementation independent of fxlens.audio)."""
    import pyloudnorm

    lufs = pyloudnorm.Meter(SR).integrated_loudness(x[0].double().numpy().T)
    return x * 10 ** ((rt.DRY_LUFS - lufs) / 20)


def _read_stem(root, song, name, offset_s):
    n = int(round(SECONDS * SR))
    data, _ = sf.read(str(root / "test" / song / f"{name}.flac"), start=int(round(offset_s * SR)), frames=n,
                      dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(np.pad(data, ((0, n - data.shape[0]), (0, 0))).T))[None]


def test_instrument_wise_groups_discovered(inst_root):
    srcs = rt.dataset_sources(inst_root, instrument_wise=True)
    assert set(srcs) == {"bass", "drums", "piano", "mixture", "inst/bass", "inst/drums", "inst/piano"}
    assert srcs["inst/drums"].keys == ["t01", "t02", "t03"]  # >= 3 songs: query, target, a third for the audio query
    assert "inst/bass" not in rt.dataset_sources(inst_root)  # only on request


def test_instrument_wise_group_shapes_and_rules(inst_root, inst_set):
    T = int(SECONDS * SR)
    assert set(inst_set.groups) == {"inst/bass", "inst/drums"}
    n_others = set()
    for g in inst_set:
        name = g.name.removeprefix("inst/")
        assert g.instrument_wise and g.instrument == name
        assert g.queries.shape == g.query_stems.shape == (6, 2, T)
        assert g.pool.shape == g.pool_stems.shape == (8, 2, T)
        assert g.examples.shape[1:] == (2, T) and g.examples.shape[0] >= 3
        assert g.query_example.shape == (6,) and g.pool_example.shape == (8,)
        for x in (g.queries, g.pool, g.query_stems, g.pool_stems, g.examples):
            assert torch.isfinite(x).all() and x.abs().amax(dim=(1, 2)).min() > 0
        for i in range(g.n_queries):
            q = g.query_meta[i]
            t_idx = int(g.candidates[i, g.target[i]])
            tgt = g.pool_meta[t_idx]
            assert tgt["song"] != q["song"] and tgt["preset"] == q["preset"]  # same chain P, other song
            assert q["target_stem"] == tgt["target_stem"] == name and q["stems"][0] == name
            for meta, ex in ((q, int(g.query_example[i])), (tgt, int(g.pool_example[t_idx]))):
                assert g.example_meta[ex]["song"] not in {q["song"], tgt["song"]}  # a third song
                assert len(meta["others"]) <= 2 and all(o["stem"] != name for o in meta["others"])
                assert all(o["preset"] != q["preset"] for o in meta["others"] if "preset" in o)
                n_others.add(len(meta["others"]))
            others = [g.pool_meta[int(j)] for k, j in enumerate(g.candidates[i]) if k != int(g.target[i])]
            assert all(o["preset"] != q["preset"] for o in others)
    assert n_others >= {0, 1}  # mixtures with and without accompaniment


def test_instrument_wise_stems_carry_the_same_chain(inst_root, inst_set):
    """Re-render from the files: the isolated stems of a query and of its target are the dry stems (read with
    soundfile, levelled with pyloudnorm) through the same preset, levelled again after the chain (the benchmark's
    output normalization); the mixture is the levelled sum of the processed stems before that (as they sit in it)
    and of the others."""
    from fxlens.fx.chain import Chain

    g = inst_set["inst/bass"]
    for i in range(3):
        q, t_idx = g.query_meta[i], int(g.candidates[i, g.target[i]])
        tgt = g.pool_meta[t_idx]
        chain = Chain.from_preset(q["preset"])
        for meta, stem, mix in ((q, g.query_stems[i], g.queries[i]), (tgt, g.pool_stems[t_idx], g.pool[t_idx])):
            wet = chain(_pyln_level(_read_stem(inst_root, meta["song"], "bass", meta["offset_s"])), SR)
            torch.testing.assert_close(stem[None], _pyln_level(wet).float(), atol=2e-4, rtol=1e-3)
            total = wet.clone()
            for o in meta["others"]:
                if "preset" in o:
                    dry = _pyln_level(_read_stem(inst_root, meta["song"], o["stem"], meta["offset_s"]))
                    total = total + Chain.from_preset(o["preset"])(dry, SR)
            torch.testing.assert_close(mix[None], _pyln_level(total).float(), atol=2e-4, rtol=1e-3)


def test_instrument_wise_deterministic_and_cached(inst_root, inst_set, inst_cache):
    again = _build_inst(inst_root, groups=["inst/drums"])  # no cache: rendered afresh
    g, h = inst_set["inst/drums"], again["inst/drums"]
    for f in ("queries", "pool", "query_stems", "pool_stems", "examples", "query_example", "pool_example"):
        torch.testing.assert_close(getattr(h, f), getattr(g, f), atol=0, rtol=0)
    assert h.query_meta == g.query_meta and h.pool_meta == g.pool_meta and h.example_meta == g.example_meta
    files = sorted(inst_cache.glob("*.pt"))
    assert len(files) == 2
    stamp = [f.stat().st_mtime_ns for f in files]
    loaded = _build_inst(inst_root, cache_dir=inst_cache)
    assert [f.stat().st_mtime_ns for f in files] == stamp
    torch.testing.assert_close(loaded["inst/drums"].pool_stems, g.pool_stems, atol=0, rtol=0)
    assert loaded["inst/drums"].instrument == "drums" and loaded["inst/drums"].example_meta == g.example_meta


class ChainOracle(OracleEmbedder):
    """The one-hot chain id of every clip, isolated stems included; with `queries`, also an 'extractor'."""

    def __init__(self, eval_set, queries=False):
        self.chain_of, chains = {}, []
        for g in eval_set:
            for clips, metas in ((g.queries, g.query_meta), (g.pool, g.pool_meta), (g.query_stems, g.query_meta),
                                 (g.pool_stems, g.pool_meta)):
                for x, m in zip(clips, metas):
                    key = json.dumps(m["preset"], sort_keys=True)
                    if key not in chains:
                        chains.append(key)
                    self.chain_of[self._hash(x)] = chains.index(key)
        self.dim = len(chains)
        self.name = "oracle+q" if queries else "oracle"
        if queries:
            self.embed_query = lambda audio, sr, query: self.embed(audio, sr)


def test_oracle_scores_one_in_every_instrument_wise_view(inst_set):
    res = rt.evaluate(ChainOracle(inst_set, queries=True), inst_set, n_boot=50)
    iw = res["instrument_wise"]
    assert list(iw["overall"]) == ["oracle", "mixture", "audio query", "text query"]
    for view in iw["overall"].values():
        assert view["overall"]["R@1"]["mean"] == 1.0 and view["overall"]["n"] == 12
        assert sum(s["n"] for s in view["by_n_effects"].values()) == 12
    assert res["groups"] == {} and res["overall"] is None  # no mixture-level group in this set
    plain = rt.evaluate(ChainOracle(inst_set), inst_set, n_boot=50)  # no extractor: oracle and mixture only
    assert list(plain["instrument_wise"]["overall"]) == ["oracle", "mixture"]
    table = rt.instrument_table({"methods": {"a": res, "b": plain}}).splitlines()
    assert len(table) == 4 and table[2].count("100.0") == 16
    assert table[3].count("100.0") == 8 and table[3].count(" - ") == 8


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from fxlens.models.checkpoint import save_checkpoint
    from fxlens.models.encoder import FxEncoder

    g = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(len(INST_NAMES), 384, generator=g), dim=-1)
    torch.manual_seed(0)
    m = FxEncoder("small", INST_NAMES, vectors)
    return save_checkpoint(tmp_path_factory.mktemp("enc") / "enc-test", m.state_dict(), m.config(), "# test\n")


def test_encoder_embedder_scores_every_view(inst_set, encoder_dir, tmp_path):
    emb = bl.EncoderEmbedder(encoder_dir)
    assert emb.name == "Fx-Encoder++ (enc-test)" and rt.supports_queries(emb)
    x = inst_set["inst/bass"].queries[:3]
    e = emb.embed(x, SR)
    assert e.shape == (3, 128)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    ex = inst_set["inst/bass"].examples[:3]
    assert not torch.allclose(emb.embed_query(x, SR, "bass"), emb.embed_query(x, SR, ex))
    res = rt.evaluate(emb, inst_set, n_boot=50)
    for view in rt.INSTRUMENT_VIEWS:
        assert 0.0 <= res["instrument_wise"]["overall"][view]["overall"]["R@1"]["mean"] <= 1.0


def test_encoder_embedders_default_and_errors(encoder_dir, tmp_path, monkeypatch):
    from fxlens.errors import CheckpointError
    from fxlens.models import checkpoint

    monkeypatch.setattr(checkpoint, "ASSETS_DIR", tmp_path / "assets")
    assert bl.encoder_embedders(None) == []  # nothing shipped: baselines only
    import shutil

    shutil.copytree(encoder_dir, tmp_path / "assets" / "encoder-small")
    [shipped] = bl.encoder_embedders(None)
    assert shipped.name == "Fx-Encoder++ (encoder-small)"
    two = bl.encoder_embedders([encoder_dir, encoder_dir])
    assert len({e.name for e in two}) == 2
    with pytest.raises(CheckpointError):
        bl.encoder_embedders([tmp_path / "nope"])


def test_cli_bad_model_is_one_error_line(tmp_path, capsys):
    from fxlens.cli import main

    code = main(["bench", "retrieval", "--data-dir", str(tmp_path), "--model", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
    code = main(["bench", "retrieval", "--data-dir", str(tmp_path), "--effects", "eq,nonsense", "--no-real",
                 "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    assert code == 1 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    code = main(["bench", "retrieval", "--data-dir", str(tmp_path), "--split", "train", "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    assert code == 1 and "train" in err and len(err.strip().splitlines()) == 1
    code = main(["bench", "retrieval", "--data-dir", str(tmp_path), "--baselines", "mfcc,mel", "--no-real",
                 "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    assert code == 1 and "unknown baseline 'mel'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_benchmark_report_and_plots(inst_root, encoder_dir, tmp_path):
    res = rt.run_retrieval_benchmark(inst_root, n_candidates=3, n_queries=3, seconds=SECONDS, seed=0,
                                     embedders=[bl.RandomEmbedder(), bl.EncoderEmbedder(encoder_dir)],
                                     out_json=tmp_path / "r.json", groups=["bass", "mixture", "inst/piano"],
                                     include_real=False, effects=EFFECTS, max_effects=3, sample_rate=SR, n_boot=20,
                                     plots_dir=tmp_path / "plots", tsne_chains=3, tsne_per_chain=4)
    assert res["config"]["param_ranges"]["parametric_eq"]["peak1_gain"] == [-12.0, 12.0]  # the training sub-ranges
    report = res["report"]
    assert "(Table 2)" in report and "(Table 3)" in report
    assert "| Fx-Encoder++ (enc-test) | oracle | " in report  # per-instrument detail rows
    vs = res["versus_baselines"]["Fx-Encoder++ (enc-test)"]  # learned vs the only non-learned method
    assert vs["best_baseline"] == "random" and vs["n"] == 6 and "learned vs the best non-learned" in report
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert set(on_disk["methods"]["random"]["instrument_wise"]["overall"]) == {"oracle", "mixture"}
    assert [p.rsplit("/", 1)[-1] for p in res["plots"]] == ["recall-vs-effects.png", "tsne-chains.png"]
    for p in res["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_chain_clips_for_tsne(inst_root):
    src = rt.dataset_sources(inst_root, instruments=[])["mixture"]
    audio, labels, presets = rt.chain_clips(src, n_chains=3, per_chain=4, seconds=SECONDS, sample_rate=SR,
                                            effects=EFFECTS, max_effects=4)
    assert audio.shape == (12, 2, int(SECONDS * SR)) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len({json.dumps(p, sort_keys=True) for p in presets}) == 3
    assert all(3 <= len(p["effects"]) <= 4 for p in presets)
    again, _, _ = rt.chain_clips(src, n_chains=3, per_chain=4, seconds=SECONDS, sample_rate=SR, effects=EFFECTS,
                                 max_effects=4)
    torch.testing.assert_close(again, audio, atol=0, rtol=0)


def test_cli_end_to_end_with_a_model(inst_root, encoder_dir, tmp_path, capsys):
    from fxlens.cli import main

    code = main(["bench", "retrieval", "--data-dir", str(inst_root), "--candidates", "2", "--queries", "2",
                 "--seconds", "0.5", "--group", "bass", "--group", "inst/bass", "--no-real", "--model",
                 str(encoder_dir), "--effects", "gain,parametric_eq", "--max-effects", "2", "--plots",
                 str(tmp_path / "plots"), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "r.json"),
                 "--markdown", str(tmp_path / "r.md")])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert list(res["methods"]) == ["random", "mfcc+spectral", "log-mel stats", "band statistics", "random CNN",
                                    "Fx-Encoder++ (enc-test)"]
    assert res["config"]["effects"] == ["gain", "parametric_eq"] and res["config"]["max_effects"] == 2
    assert "q_text R@1" in (tmp_path / "r.md").read_text() and (tmp_path / "plots" / "tsne-chains.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# the same chains rendered by pedalboard; loudness-normalized clips; cache keys of the options
# ---------------------------------------------------------------------------------------------------------------


def _preset(name, sr=SR, **values):
    from fxlens.fx.chain import Chain

    return Chain([(name, values)]).to_preset(sr)


def _pb_render(preset, x, sr=SR):
    from fxlens.fx.pedalboard_map import render_preset_pedalboard

    return render_preset_pedalboard(torch.as_tensor(x, dtype=torch.float32), sr, preset).double().numpy()


def _impulse(n, amp=1.0):
    x = np.zeros((1, 2, n), dtype=np.float32)
    x[:, :, 0] = amp
    return x


def test_pedalboard_gain_delay_distortion_imager_closed_form():
    pytest.importorskip("pedalboard")
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal((1, 2, 4000))).astype(np.float32)
    np.testing.assert_allclose(_pb_render(_preset("gain", gain_db=7.3), x), x * 10 ** (7.3 / 20), rtol=1e-5, atol=1e-7)
    # delay: 250 ms = 4000 samples at 16 kHz; dry (1 - mix), echo k at k * 4000 samples with mix * fb^(k-1)
    y = _pb_render(_preset("delay", time_ms=250.0, feedback=0.5, mix=0.3), _impulse(SR, 0.01))[0, 0]
    nz = np.flatnonzero(np.abs(y) > 1e-9)
    assert nz.tolist() == [0, 4000, 8000, 12000]
    np.testing.assert_allclose(y[nz] / 0.01, [0.7, 0.3, 0.15, 0.075], rtol=1e-5)
    # distortion with flat tone shelves: (1 - mix) x + mix tanh(10^(drive/20) x)
    y = _pb_render(_preset("distortion", drive_db=12.0, mix=0.4), x)
    np.testing.assert_allclose(y, 0.6 * x + 0.4 * np.tanh(10 ** (12 / 20) * x.astype(np.float64)), atol=2e-6)
    # stereo imager: M = (L + R) / 2, S = width (L - R) / 2 (numpy: pedalboard has none)
    y = _pb_render(_preset("stereo_imager", width=1.6), x)
    m, s = 0.5 * (x[0, 0] + x[0, 1]), 0.8 * (x[0, 0] - x[0, 1])
    np.testing.assert_allclose(y[0], np.stack([m + s, m - s]), atol=1e-6)


def _mag_db(h, n):
    return 20 * np.log10(np.abs(np.fft.rfft(h, n)) + 1e-12)


def test_pedalboard_eq_matches_closed_form_and_fxlens():
    pytest.importorskip("pedalboard")
    from scipy import signal

    from fxlens.fx.chain import Chain

    # one peak: +9 dB at 1 kHz, Q 2; every other band flat. RBJ peaking biquad (closed form) via scipy.freqz
    flat = {f"{b}_gain": 0.0 for b in ("low_shelf", "peak1", "peak3", "peak4", "high_shelf")}
    p = _preset("parametric_eq", peak2_freq=1000.0, peak2_gain=9.0, peak2_q=2.0, **flat)
    n = 8192
    h = _pb_render(p, _impulse(n))[0, 0]
    A, w0 = 10 ** (9.0 / 40), 2 * np.pi * 1000.0 / SR
    alpha = np.sin(w0) / (2 * 2.0)
    b = [1 + alpha * A, -2 * np.cos(w0), 1 - alpha * A]
    a = [1 + alpha / A, -2 * np.cos(w0), 1 - alpha / A]
    freqs = np.fft.rfftfreq(n, 1 / SR)
    _, ref = signal.freqz(b, a, worN=freqs, fs=SR)
    band = (freqs > 30) & (freqs < 0.45 * SR)
    np.testing.assert_allclose(_mag_db(h, n)[band], 20 * np.log10(np.abs(ref[band])), atol=0.05)
    centre = int(np.argmin(np.abs(freqs - 1000.0)))
    assert _mag_db(h, n)[centre] == pytest.approx(9.0, abs=0.05)  # the peak's gain, at its centre
    # a random six-band setting: pedalboard's cascade and fxlens's agree in magnitude
    rng = np.random.default_rng(3)
    vals = {"low_shelf_freq": 90.0, "low_shelf_gain": 6.0, "low_shelf_q": 0.7, "peak1_freq": 300.0,
            "peak3_freq": 2500.0, "peak4_freq": 5000.0, "high_shelf_freq": 6000.0, "high_shelf_gain": -5.0}
    vals.update({f"peak{k}_gain": float(rng.uniform(-12, 12)) for k in (1, 2, 3, 4)})
    vals.update({f"peak{k}_q": float(rng.uniform(0.5, 4)) for k in (1, 2, 3, 4)})
    p = _preset("parametric_eq", **vals)
    h_pb = _pb_render(p, _impulse(n))[0, 0]
    with torch.no_grad():
        h_fx = Chain.from_preset(p)(torch.from_numpy(_impulse(n)).double(), SR)[0, 0].numpy()
    np.testing.assert_allclose(_mag_db(h_pb, n)[band], _mag_db(h_fx, n)[band], atol=0.1)


def test_pedalboard_limiter_multiband_reverb_where_they_should_agree():
    pytest.importorskip("pedalboard")
    t = np.arange(SR) / SR
    quiet = np.broadcast_to(0.05 * np.sin(2 * np.pi * 220 * t), (1, 2, SR)).astype(np.float32)  # -26 dBFS peak
    # limiter below its threshold: unchanged, once JUCE's make-up gain is undone
    y = _pb_render(_preset("limiter", threshold_db=-12.0, attack_ms=1.0, release_ms=100.0), quiet)
    assert 20 * np.log10(np.abs(y[..., SR // 2:]).max() / 0.05) == pytest.approx(0.0, abs=0.1)
    # multiband compressor with mix 0: the LR4 crossover alone, whose bands sum to an all-pass (flat magnitude)
    n = 8192
    mb = {"low_freq_hz": 200.0, "high_freq_hz": 3000.0, "mix": 0.0}
    h = _pb_render(_preset("multiband_compressor", **mb), _impulse(n))[0, 0]
    freqs = np.fft.rfftfreq(n, 1 / SR)
    np.testing.assert_allclose(_mag_db(h, n)[(freqs > 20) & (freqs < 0.45 * SR)], 0.0, atol=0.05)
    # reverb, wet only: RT60 at 1 kHz (Schroeder, T20) near decay_s; wet impulse response of unit energy per channel
    from scipy import signal

    y = _pb_render(_preset("reverb", decay_s=1.2, high_decay_ratio=1.0, pre_delay_ms=0.0, mix=1.0), _impulse(3 * SR))
    sos = signal.butter(4, [707, 1414], btype="band", fs=SR, output="sos")
    e = np.cumsum(signal.sosfilt(sos, y[0, 0])[::-1] ** 2)[::-1]
    edc = 10 * np.log10(e / e[0])
    rt60 = 3 * (np.argmax(edc < -25) - np.argmax(edc < -5)) / SR
    assert rt60 == pytest.approx(1.2, rel=0.15)
    assert np.square(y[0]).sum(axis=-1) == pytest.approx([1.0, 1.0], rel=0.05)


def test_pedalboard_mapping_errors(tiny_root):
    from fxlens.errors import FxlensError
    from fxlens.fx.pedalboard_map import preset_to_stages

    with pytest.raises(FxlensError, match="tremolo"):
        preset_to_stages(_preset("tremolo"), SR)
    # presets are read by the same validator as `fx apply`: units and ranges are checked, not trusted
    bad_unit = _preset("delay", time_ms=120.0)
    bad_unit["effects"][0]["params"]["time_ms"] = {"value": 0.12, "unit": "s"}
    with pytest.raises(FxlensError, match="time_ms"):
        preset_to_stages(bad_unit, SR)
    with pytest.raises(FxlensError, match="not an fxlens preset"):
        preset_to_stages({"effects": []}, SR)
    from fxlens.fx.chain import Chain
    from fxlens.fx.distortion import Distortion

    cabinet = Chain([(Distortion(cabinet_lowpass_hz=4000.0), {})]).to_preset(SR)
    with pytest.raises(FxlensError, match="cabinet_lowpass_hz"):  # pedalboard has no 4th-order low-pass
        preset_to_stages(cabinet, SR)
    pytest.importorskip("pedalboard")
    with pytest.raises(FxlensError, match="pedalboard cannot render"):
        rt.build_eval_set(tiny_root, n_candidates=2, n_queries=2, seconds=SECONDS, sample_rate=SR, include_real=False,
                          effects=("gain", "tremolo"), implementation="pedalboard")
    with pytest.raises(FxlensError, match="implementation"):
        rt.build_eval_set(tiny_root, n_candidates=2, n_queries=2, seconds=SECONDS, sample_rate=SR, include_real=False,
                          effects=EFFECTS, implementation="juce")


def _pyln(x) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(SR).integrated_loudness(x.double().numpy().T)


def test_eval_clips_are_at_minus_18_lufs_and_pedalboard_twins_share_content(tiny_root):
    pytest.importorskip("pedalboard")
    kw = dict(n_candidates=3, n_queries=3, seconds=SECONDS, seed=0, sample_rate=SR, include_real=False,
              effects=EFFECTS, max_effects=3, groups=["bass", "pedalboard/bass", "pedalboard/mixture"])
    es = rt.build_eval_set(tiny_root, implementation="both", **kw)
    for g in es:
        for x in torch.cat([g.queries, g.pool]):
            assert _pyln(x) == pytest.approx(-18.0, abs=0.05)  # pyloudnorm: the independent reference
    fx, pb = es["bass"], es["pedalboard/bass"]
    assert pb.query_meta == fx.query_meta and pb.pool_meta == fx.pool_meta  # same songs, offsets and chains...
    assert not torch.equal(pb.pool, fx.pool)  # ...rendered by another implementation (close: these effects agree)
    assert set(rt.dataset_sources(tiny_root, implementation="pedalboard")) == {"pedalboard/bass", "pedalboard/drums",
                                                                                "pedalboard/mixture"}
    raw = rt.build_eval_set(tiny_root, implementation="both", output_lufs=None, **{**kw, "groups": ["bass"]})
    levels = [_pyln(x) for x in raw["bass"].pool]
    assert max(levels) - min(levels) > 1.0  # without the normalization, the chains' level differences stay
    assert raw.config["output_lufs"] is None and es.config["output_lufs"] == -18.0


def test_cache_key_changes_with_normalization_and_implementation(tiny_root, tmp_path):
    pytest.importorskip("pedalboard")
    kw = dict(n_candidates=2, n_queries=2, seconds=SECONDS, seed=0, sample_rate=SR, include_real=False,
              effects=EFFECTS, max_effects=2, cache_dir=tmp_path)

    def files():
        return sorted(p.name for p in tmp_path.glob("*.pt"))

    rt.build_eval_set(tiny_root, groups=["bass"], **kw)
    assert len(files()) == 1
    rt.build_eval_set(tiny_root, groups=["bass"], output_lufs=None, **kw)
    assert len(files()) == 2  # normalization off: another key
    rt.build_eval_set(tiny_root, groups=["bass", "pedalboard/bass"], implementation="both", **kw)
    assert len(files()) == 3  # `bass` reused in a "both" run; its pedalboard twin is its own entry
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")}
    rt.build_eval_set(tiny_root, groups=["pedalboard/bass"], implementation="pedalboard", **kw)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")} == stamp  # loaded, not re-rendered
    cfg = {"group": "bass", "output_lufs": -18.0}
    assert rt._cache_file(tmp_path, "bass", cfg) != rt._cache_file(tmp_path, "bass", {**cfg, "output_lufs": None})
    assert rt._cache_file(tmp_path, "bass", cfg) != rt._cache_file(tmp_path, "bass", {**cfg, "renderer": "pedalboard"})


def test_cli_bad_implementation_is_one_error_line(tmp_path, capsys):
    from fxlens.cli import main

    code = main(["bench", "retrieval", "--data-dir", str(tmp_path), "--implementation", "juce", "--no-real",
                 "--out", str(tmp_path / "r.json")])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:") and "--implementation" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()

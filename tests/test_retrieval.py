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
    assert list(res["methods"]) == ["random", "mfcc+spectral", "log-mel stats", "random CNN"]
    on_disk = json.loads(out.read_text())
    assert on_disk["methods"]["random CNN"]["overall"]["R@1"] == res["methods"]["random CNN"]["overall"]["R@1"]
    for r in res["methods"].values():
        for g in r["groups"].values():
            assert 0.0 <= g["overall"]["R@1"]["mean"] <= 1.0
    table = rt.markdown_table(res).splitlines()
    assert table[0] == "| method | bass | drums | mixture | all |"
    assert len(table) == 2 + 4 and table[2].startswith("| random | ")
    # standardization fitted on other (training) audio instead of per evaluation group
    emb = bl.AutoFXEmbedder().fit(torch.randn(6, 2, SR) * 0.1, SR)
    e = emb.embed(torch.randn(2, 2, SR) * 0.1, SR)
    assert e.shape == (2, 163) and torch.equal(emb.finalize(e), e)
    cnn = bl.RandomCNNEmbedder(seed=3)
    x = torch.randn(3, 2, SR) * 0.1
    torch.testing.assert_close(cnn.embed(x, SR), bl.RandomCNNEmbedder(seed=3).embed(x, SR))  # seeded weights

"""Pedalboard twins of the instrument-wise (``inst/<x>``) and real-recording (``real/<x>``) retrieval groups:
``pedalboard/inst/<x>`` and ``pedalboard/real/<x>`` hold the same songs, segments, chains (and audio queries) as
their fxlens group, only rendered by pedalboard. Reuses the tiny stem dataset of test_retrieval (`inst_root`) and a
tiny synthetic Frets on Fire layout (as test_stems writes one) in place of the installed real recordings."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from fxlens.bench import retrieval as rt
from fxlens.errors import FxlensError, ParameterError
from test_retrieval import EFFECTS, SECONDS, SR, _tone, inst_root  # noqa: F401  (inst_root: the tiny dataset)

KW = dict(n_candidates=2, n_queries=3, seconds=SECONDS, seed=0, sample_rate=SR, effects=EFFECTS, max_effects=2)
INST = ["inst/bass", "pedalboard/inst/bass"]
REAL = ["real/fof_guitar", "pedalboard/real/fof_guitar"]


@pytest.fixture(scope="module")
def real_roots(tmp_path_factory):
    """Two Frets on Fire songs (guitar + backing stems) in a tmp folder, and every real-recording listing pointed at
    it for this module (the installed packages, if any, are never read)."""
    from fxlens.data import real

    root = tmp_path_factory.mktemp("real")
    fof = root / "muldjord"
    for i, song in enumerate(["song_a", "song_b"]):
        d = fof / song
        d.mkdir(parents=True)
        sf.write(str(d / "guitar.ogg"), _tone(1.5, 220 + 60 * i, 50 + i), SR, format="OGG", subtype="VORBIS")
        sf.write(str(d / "song.ogg"), _tone(1.5, 90 + 20 * i, 60 + i), SR, format="OGG", subtype="VORBIS")
        (d / "song.ini").write_text(f"[song]\nname = Song {i}\n")
    fake = {c.name: root / "none" for c in real.COLLECTIONS} | {"fretsonfire-muldjord": fof}
    original = real.list_real_recordings
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(real, "list_real_recordings",
                   lambda collections=None, roots=None: original(collections, roots=roots or fake))
        yield fake


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("twin-cache")


@pytest.fixture(scope="module")
def both_set(inst_root, real_roots, cache):  # noqa: F811
    pytest.importorskip("pedalboard")
    return rt.build_eval_set(inst_root, groups=INST + REAL, implementation="both", instrument_wise=True,
                             include_real=True, cache_dir=cache, **KW)


def test_twin_groups_are_discovered_only_with_pedalboard(inst_root, real_roots):  # noqa: F811
    both = rt.dataset_sources(inst_root, instrument_wise=True, implementation="both")
    assert {"pedalboard/inst/bass", "pedalboard/inst/drums", "pedalboard/inst/piano"} <= set(both)
    assert {n.removeprefix(rt.PB_PREFIX) for n in both if n.startswith(rt.PB_PREFIX)} == {
        n for n in both if not n.startswith(rt.PB_PREFIX)}  # every group has its twin, and nothing else
    assert both["pedalboard/inst/bass"].keys == both["inst/bass"].keys
    assert isinstance(both["pedalboard/inst/bass"], rt.InstrumentMixSource)
    assert both["inst/bass"].implementation == "fxlens" and both["pedalboard/inst/bass"].implementation == "pedalboard"
    only_pb = rt.dataset_sources(inst_root, instrument_wise=True, implementation="pedalboard")
    assert set(only_pb) == {n for n in both if n.startswith(rt.PB_PREFIX)}
    assert not any(n.startswith(rt.PB_PREFIX + rt.INST_PREFIX) for n in rt.dataset_sources(inst_root,
                                                                                          implementation="both"))
    real = rt.real_sources(implementation="both")
    assert set(real) == {"real/fof_guitar", "real/fof_backing", "pedalboard/real/fof_guitar",
                         "pedalboard/real/fof_backing"}
    assert real["pedalboard/real/fof_guitar"].keys == real["real/fof_guitar"].keys
    assert set(rt.real_sources(implementation="pedalboard")) == {"pedalboard/real/fof_guitar",
                                                                 "pedalboard/real/fof_backing"}


def test_fxlens_implementation_makes_no_pedalboard_group(inst_root, real_roots, both_set, cache):  # noqa: F811
    srcs = rt.dataset_sources(inst_root, instrument_wise=True, implementation="fxlens")
    assert srcs and not any(n.startswith(rt.PB_PREFIX) for n in srcs)
    assert set(rt.real_sources()) == {"real/fof_guitar", "real/fof_backing"}
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(stamp) == 4  # one cache entry per group of `both_set`
    es = rt.build_eval_set(inst_root, groups=["inst/bass", "real/fof_guitar"], implementation="fxlens",
                           instrument_wise=True, include_real=True, cache_dir=cache, **KW)
    assert set(es.groups) == {"inst/bass", "real/fof_guitar"}
    # an fxlens group has the same cache key in an "fxlens" run as in a "both" run: loaded, not re-rendered
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == stamp
    for name in es.groups:
        torch.testing.assert_close(es[name].pool, both_set[name].pool, atol=0, rtol=0)


def _same_cases(fx: rt.EvalGroup, pb: rt.EvalGroup) -> None:
    assert pb.query_meta == fx.query_meta and pb.pool_meta == fx.pool_meta  # songs, offsets, stems, chain presets
    assert [m["song"] for m in pb.pool_meta] == [m["song"] for m in fx.pool_meta]
    for f in ("candidates", "target", "n_effects"):
        assert torch.equal(getattr(pb, f), getattr(fx, f)), f
    assert pb.queries.shape == fx.queries.shape and pb.pool.shape == fx.pool.shape
    assert pb.queries.shape == (KW["n_queries"], 2, int(SECONDS * SR))
    assert torch.isfinite(pb.queries).all() and torch.isfinite(pb.pool).all()
    assert not torch.equal(pb.queries, fx.queries) and not torch.equal(pb.pool, fx.pool)  # another renderer


def test_instrument_wise_twin_same_cases_other_renderer(both_set):
    fx, pb = both_set["inst/bass"], both_set["pedalboard/inst/bass"]
    _same_cases(fx, pb)
    assert pb.instrument == fx.instrument == "bass" and pb.instrument_wise
    # the other stems of each mixture and their chains are the same too (part of the metadata)...
    assert any(o.get("preset") for m in pb.pool_meta for o in m["others"])
    # ...and the audio queries: the same dry clips of a third song, assigned to the same mixtures
    assert pb.example_meta == fx.example_meta
    torch.testing.assert_close(pb.examples, fx.examples, atol=0, rtol=0)
    assert torch.equal(pb.query_example, fx.query_example) and torch.equal(pb.pool_example, fx.pool_example)
    # the isolated processed stems (oracle): same shape, rendered by pedalboard
    assert pb.query_stems.shape == fx.query_stems.shape and pb.pool_stems.shape == fx.pool_stems.shape
    assert not torch.equal(pb.pool_stems, fx.pool_stems)


def test_real_recording_twin_same_cases_other_renderer(both_set):
    fx, pb = both_set["real/fof_guitar"], both_set["pedalboard/real/fof_guitar"]
    _same_cases(fx, pb)
    assert not pb.instrument_wise and {m["song"] for m in pb.pool_meta} <= {"fretsonfire-muldjord:Song 0",
                                                                            "fretsonfire-muldjord:Song 1"}


class _Features:
    """A tiny deterministic 'extractor' (so every instrument-wise view is scored)."""

    name = "feat"

    def embed(self, audio, sample_rate):
        x = audio.double()
        frames = x[..., : x.shape[-1] // 8 * 8].reshape(x.shape[0], 2, 8, -1)
        return torch.cat([frames.abs().mean(-1).flatten(1), frames.std(-1).flatten(1)], 1)

    def embed_query(self, audio, sample_rate, query):
        return self.embed(audio, sample_rate)


def test_benchmark_reports_twin_groups(inst_root, real_roots, both_set, cache):  # noqa: F811
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    res = rt.run_retrieval_benchmark(inst_root, embedders=[_Features()], cache_dir=cache, groups=INST + REAL,
                                     include_real=True, instrument_wise=True, param_ranges=None, n_boot=20,
                                     implementation="both", **KW)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == stamp  # every group from the cache
    assert set(res["config"]["groups"]) == set(INST + REAL)
    r = res["methods"]["feat"]
    assert set(r["groups"]) == set(REAL)  # mixture-level
    assert set(r["by_implementation"]) == {"fxlens", "pedalboard"}
    assert r["by_implementation"]["pedalboard"]["n"] == KW["n_queries"]
    iw = r["instrument_wise"]
    assert set(iw["groups"]) == set(INST)
    assert set(iw["by_implementation"]) == {"fxlens", "pedalboard"}
    assert list(iw["by_implementation"]["pedalboard"]) == list(rt.INSTRUMENT_VIEWS)
    assert iw["by_implementation"]["fxlens"]["oracle"]["n"] == KW["n_queries"]
    assert iw["overall"]["oracle"]["overall"]["n"] == 2 * KW["n_queries"]  # pooled over both, as Table 2's "all"
    report = res["report"]
    assert "| fof_guitar (real) | fof_guitar (real) (pedalboard) | all |" in report
    assert "| method | protocol | bass | bass (pedalboard) | all |" in report
    assert "Instrument-wise, same chains, two implementations" in report
    assert "| feat | text query | " in rt.instrument_implementation_table(res)
    json.dumps(res)  # JSON-ready


def test_unknown_group_names_are_clear_errors(inst_root, real_roots):  # noqa: F811
    kw = dict(KW, include_real=True, instrument_wise=True)
    with pytest.raises(FxlensError, match=r"unknown retrieval group.*pedalboard/inst/bass.*'pedalboard' or 'both'"):
        rt.build_eval_set(inst_root, groups=["pedalboard/inst/bass"], implementation="fxlens", **kw)
    with pytest.raises(FxlensError, match=r"unknown retrieval group.*pedalboard/inst/nonsense.*pedalboard/inst/bass"):
        rt.build_eval_set(inst_root, groups=["pedalboard/inst/nonsense"], implementation="both", **kw)
    with pytest.raises(FxlensError, match="instrument-wise"):
        rt.build_eval_set(inst_root, groups=["pedalboard/inst/bass"], implementation="both",
                          **dict(kw, instrument_wise=False))
    with pytest.raises(FxlensError, match="real recordings"):
        rt.build_eval_set(inst_root, groups=["pedalboard/real/fof_guitar"], implementation="both",
                          **dict(kw, include_real=False))
    with pytest.raises(ParameterError, match="implementation must be one of"):
        rt.real_sources(implementation="juce")

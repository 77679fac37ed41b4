"""Arrangements of real music from the corpus that ships inside the music21 wheel.

`corpus_song(seed, seconds)` takes an excerpt of a Bach chorale, a Haydn/Mozart/Beethoven string-quartet
movement, a Monteverdi madrigal or a Palestrina mass section, and assigns its parts to instrument families of
`fxlens.data.instruments` (all parts on one ensemble, melody + accompaniment + bass, or one instrument per part;
several parts may share one instrument, which is then one stem). Parts are moved by octaves into their
program's range; velocities follow the score's dynamics where it has them, otherwise slow phrase curves with
downbeat accents; timing is lightly humanized. The result is the same `Song` object the procedural generator
returns, so the renderer treats both alike.

music21 is imported lazily (it takes ~0.3 s and is only needed here). Parsing a chorale takes ~0.1 s, a quartet
movement 1-3 s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from fxlens.data.instruments import INSTRUMENTS, IN_DOMAIN_INSTRUMENTS, get_instrument, program_range
from fxlens.data.songs import DRUM_KEYS, KEY_NAMES, Note, Section, Song, Track, _as_rng, fit_to_range

__all__ = ["CORPUS_COLLECTIONS", "CORPUS_LICENCE", "corpus_paths", "corpus_song", "music21_available"]

CORPUS_LICENCE = (
    "public-domain composition; encoding from the music21 core corpus, which music21 (BSD-3-Clause) describes "
    "as freely distributable music licensed to it or under a free licence (to its knowledge, in the US)"
)

# collection -> (music21 composer directories, file suffixes, weight, tempo range if the score has none)
CORPUS_COLLECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], float, tuple[float, float]]] = {
    "chorale": (("bach",), (".mxl",), 0.4, (60.0, 96.0)),
    "quartet": (("haydn", "mozart", "beethoven"), (".mxl", ".krn"), 0.3, (76.0, 140.0)),
    "madrigal": (("monteverdi",), (".mxl",), 0.15, (60.0, 100.0)),
    "renaissance": (("palestrina",), (".krn",), 0.15, (60.0, 96.0)),
}

# Whole multi-movement files and the longest movements take 10-90 s to parse; pieces above this size are left
# out so that one corpus song costs about as much as a generated one (a 64 KiB movement parses in ~1-3 s).
MAX_FILE_BYTES = 64 * 1024

_DYNAMICS = {"ppp": 30, "pp": 40, "p": 52, "mp": 64, "mf": 76, "f": 90, "ff": 104, "fff": 116, "sf": 100,
             "sfz": 104, "fp": 88}
_LEGATO = {"strings": 0.97, "voice": 0.97, "organ": 0.98, "synth_pad": 0.98, "brass": 0.9, "reeds": 0.92,
           "piano": 0.95, "acoustic_guitar": 0.92, "electric_guitar": 0.9, "bass": 0.92, "synth_lead": 0.9}
_ENSEMBLES = ("strings", "voice", "brass", "organ", "piano", "reeds", "synth_pad")
_TOP = ("voice", "reeds", "brass", "strings", "synth_lead", "electric_guitar", "piano", "organ")
_INNER = ("piano", "acoustic_guitar", "electric_guitar", "strings", "brass", "voice", "organ", "synth_pad", "reeds")
_BOTTOM = ("bass", "strings", "brass", "piano", "organ", "reeds")
_ACCOMP = ("piano", "organ", "strings", "synth_pad", "acoustic_guitar", "voice", "electric_guitar")


def music21_available() -> bool:
    """True if music21 (and so its corpus) can be imported."""
    try:
        import music21  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=None)
def corpus_paths(collection: str) -> tuple[str, ...]:
    """Corpus-relative paths ("bach/bwv1.6.mxl") of one collection, sorted; one encoding per piece
    (MusicXML preferred over Humdrum when both exist); files over `MAX_FILE_BYTES` are left out."""
    from music21 import corpus

    dirs, suffixes, _, _ = CORPUS_COLLECTIONS[collection]
    chosen: dict[str, str] = {}
    for comp in dirs:
        for p in corpus.getComposer(comp):
            s = str(p).replace("\\", "/")
            rel = s.split("/corpus/")[-1]
            if not rel.endswith(suffixes):
                continue
            if collection == "chorale" and not rel.split("/")[-1].startswith("bwv"):
                continue
            if os.path.getsize(s) > MAX_FILE_BYTES:
                continue
            stem, ext = rel.rsplit(".", 1)
            prev = chosen.get(stem)
            if prev is None or suffixes.index("." + ext) < suffixes.index("." + prev.rsplit(".", 1)[1]):
                chosen[stem] = rel
    return tuple(sorted(chosen.values()))


def _parse(rel: str):
    from music21 import corpus

    return corpus.parse(rel)


def _tempo_and_meter(score, rng: np.random.Generator, fallback: tuple[float, float]) -> tuple[float, int]:
    tempo = None
    for mm in score.flatten().getElementsByClass("MetronomeMark"):
        try:
            q = mm.getQuarterBPM()
        except Exception:  # music21 raises various errors for text-only marks; a missing tempo is fine
            q = None
        if q and 30 <= q <= 240:
            tempo = float(q)
            break
    if tempo is None:
        tempo = float(np.round(rng.uniform(*fallback), 1))
    meter = 4
    ts = score.flatten().getElementsByClass("TimeSignature")
    if len(ts):
        meter = int(ts[0].numerator) if ts[0].numerator in (2, 3, 4, 6, 9, 12) else 4
        if ts[0].denominator == 2:  # alla breve: two half-note beats, count in quarters for the drum grid
            meter = ts[0].numerator * 2
    return tempo, meter


def _part_events(part) -> tuple[list[tuple[float, float, int]], list[tuple[float, int]]]:
    """(start quarter, duration quarters, MIDI pitch) of every sounding note, ties merged; and dynamics."""
    flat = part.stripTies().flatten()
    notes = []
    for el in flat.notes:
        ql = float(el.duration.quarterLength)
        if ql <= 0:  # grace notes carry no duration
            continue
        off = float(el.offset)
        for p in el.pitches:
            notes.append((off, ql, int(p.midi)))
    dyn = []
    for d in flat.getElementsByClass("Dynamic"):
        v = _DYNAMICS.get(str(d.value))
        if v is not None:
            dyn.append((float(d.offset), v))
    return notes, dyn


def _choose_program(inst: str, pitches: Sequence[int], rng: np.random.Generator) -> tuple[int, int]:
    """Program of `inst` that fits `pitches` best after a whole-part octave shift; returns (program, shift)."""
    best: list[tuple[float, int, int]] = []
    for prog in INSTRUMENTS[inst].programs:
        lo, hi = program_range(inst, prog)
        for shift in (-24, -12, 0, 12, 24):
            out = sum(1 for p in pitches if not lo <= p + shift <= hi) / max(1, len(pitches))
            best.append((out + 0.02 * abs(shift) / 12, prog, shift))
    best.sort()
    top = [b for b in best if b[0] <= best[0][0] + 0.05]
    _, prog, shift = top[int(rng.integers(len(top)))]
    return prog, shift


def _assign(n_parts: int, allowed: list[str], required: list[str], rng: np.random.Generator) -> list[str]:
    """Instrument for each part (parts ordered from highest to lowest)."""

    def pick(pool: Iterable[str], used: set[str]) -> str | None:
        cands = [i for i in pool if i in allowed and i not in used]
        return str(rng.choice(cands)) if cands else None

    r = rng.random()
    assign: list[str | None]
    if r < 0.12 or n_parts == 1:
        inst = pick(_ENSEMBLES, set()) or allowed[0]
        assign = [inst] * n_parts
    elif r < 0.5 or n_parts == 2:
        used: set[str] = set()
        top = pick(_TOP, used)
        used.add(top or "")
        bottom = pick(_BOTTOM, used)
        used.add(bottom or "")
        mid = pick(_ACCOMP, used) or top
        assign = [top] + [mid] * (n_parts - 2) + [bottom] if n_parts > 2 else [top, bottom]
    else:
        used = set()
        assign = []
        for k in range(n_parts):
            pool = _TOP if k == 0 else (_BOTTOM if k == n_parts - 1 else _INNER)
            inst = pick(pool, used)
            if inst is None:  # more parts than instruments: share an inner one
                inst = assign[-1] if assign else None
            assign.append(inst)
            if inst:
                used.add(inst)
    fallback = next(i for i in allowed)
    out = [a if a is not None else fallback for a in assign]
    for req in required:
        if req in out:
            continue
        free = [k for k in range(n_parts) if out[k] not in required]
        if not free:
            break
        # reeds take the top line, anything else an inner part (the top one if there is no inner part)
        want = 0 if (req == "reeds" or n_parts < 3) else n_parts // 2
        out[want if want in free else free[0]] = req
    return out


def _drum_notes(rng: np.random.Generator, meter: int, tempo: float, start_q: float, end_q: float,
                t_of) -> list[Note]:
    """A light groove under a corpus excerpt: kick on 1, cross-stick backbeat, hi-hat or ride eighths."""
    notes = []
    ride = rng.random() < 0.5
    q = math.ceil(start_q / meter) * meter
    while q < end_q - 1e-9:
        for k in range(meter * 2):
            beat = q + k / 2
            if beat >= end_q:
                break
            v = int(np.clip(rng.normal(60 if k % 2 else 75, 5), 1, 127))
            notes.append(Note(t_of(beat), 0.2, DRUM_KEYS["ride" if ride else "hat"], v))
            if k == 0:
                notes.append(Note(t_of(beat), 0.2, DRUM_KEYS["kick"], int(np.clip(rng.normal(85, 5), 1, 127))))
            if meter >= 3 and k == (meter if meter % 2 == 0 else 2):
                notes.append(Note(t_of(beat), 0.2, DRUM_KEYS["rim"], int(np.clip(rng.normal(70, 5), 1, 127))))
        q += meter
    return notes


def corpus_song(
    seed: int | Sequence[int] | np.random.SeedSequence | np.random.Generator,
    seconds: float = 30.0,
    song_id: str | None = None,
    instruments: Iterable[str] | None = None,
    required: Iterable[str] = (),
    collection: str | None = None,
) -> Song:
    """An arranged excerpt of a music21-corpus piece.

    Args:
        seed: picks the collection, the piece, the excerpt, the instrumentation and the expression.
        seconds: excerpt length in seconds (shorter if the piece is shorter).
        song_id: name of the song (default ``"corpus"``).
        instruments: instruments the arrangement may use (default: the in-domain ones).
        required: instruments it must use (out-of-domain split).
        collection: force one of `CORPUS_COLLECTIONS`; default: drawn from the seed by weight.
    """
    import music21

    rng = _as_rng(seed)
    allowed = list(instruments) if instruments is not None else list(IN_DOMAIN_INSTRUMENTS)
    req = list(required)
    for name in allowed + req:
        get_instrument(name)
    allowed += [r for r in req if r not in allowed]
    melodic_allowed = [a for a in allowed if not INSTRUMENTS[a].is_drum]
    if collection is None:
        names = list(CORPUS_COLLECTIONS)
        w = np.array([CORPUS_COLLECTIONS[n][2] for n in names])
        collection = str(rng.choice(names, p=w / w.sum()))
    paths = corpus_paths(collection)
    if not paths:
        raise RuntimeError(f"the music21 corpus has no {collection} pieces in this installation")
    rel = paths[int(rng.integers(len(paths)))]
    score = _parse(rel)
    tempo, meter = _tempo_and_meter(score, rng, CORPUS_COLLECTIONS[collection][3])
    total_q = float(score.highestTime)
    window_q = seconds * tempo / 60.0
    # excerpt starts on a bar line so the phrase structure is intact
    starts = [0.0]
    parts = list(score.parts)
    if parts:
        starts = sorted({float(m.offset) for m in parts[0].getElementsByClass("Measure")}) or [0.0]
    ok = [s for s in starts if s + window_q <= total_q + 1e-6]
    start_q = float(ok[int(rng.integers(len(ok)))]) if ok else 0.0
    end_q = min(total_q, start_q + window_q)
    beat_s = 60.0 / tempo
    jitter = float(rng.uniform(0.003, 0.01))

    def t_of(q: float) -> float:
        return (q - start_q) * beat_s

    part_data = []
    for p in parts:
        evs, dyn = _part_events(p)
        evs = [e for e in evs if start_q <= e[0] < end_q]
        if evs:
            part_data.append((evs, dyn))
    if not part_data:
        raise RuntimeError(f"{rel}: no notes between quarter {start_q} and {end_q}")
    part_data.sort(key=lambda pd: -float(np.mean([e[2] for e in pd[0]])))
    assign = _assign(len(part_data), melodic_allowed, req, rng)
    groups: dict[str, list[int]] = {}
    for k, inst in enumerate(assign):
        groups.setdefault(inst, []).append(k)
    tracks: dict[str, Track] = {}
    phrase_q = float(rng.choice([8.0, 16.0]))
    base = float(rng.uniform(58, 88))
    for inst, idxs in groups.items():
        pitches = [e[2] for k in idxs for e in part_data[k][0]]
        program, shift = _choose_program(inst, pitches, rng)
        lo, hi = program_range(inst, program)
        legato = _LEGATO.get(inst, 0.93) * (0.65 if rng.random() < 0.08 else 1.0)
        notes = []
        for k in idxs:
            evs, dyn = part_data[k]
            for q, ql, pitch in evs:
                d = [v for off, v in dyn if off <= q]
                if d:
                    vel = d[-1]
                else:
                    vel = base + 14 * math.sin(2 * math.pi * (q - start_q) / phrase_q)
                if (q - start_q) % meter == 0:
                    vel += 6
                vel = int(np.clip(round(vel + rng.normal(0, 4)), 1, 127))
                t0 = max(0.0, t_of(q) + float(rng.normal(0, jitter)))
                dur = min(ql, end_q - q) * beat_s * legato
                notes.append(Note(t0, max(0.03, dur), fit_to_range(pitch + shift, lo, hi), vel))
        track = Track(inst, program, "part", notes, [], collection).sanitized()
        if track.notes:
            tracks[inst] = track
    duration = (end_q - start_q) * beat_s
    if "drums" in allowed and collection in ("chorale", "madrigal") and rng.random() < 0.2:
        kit = int(rng.choice([0, 32, 40]))
        dn = _drum_notes(rng, meter, tempo, start_q, end_q, t_of)
        if dn:
            tracks["drums"] = Track("drums", kit, "drums", dn, [], "light").sanitized()
    key, mode = "C", "unknown"
    try:
        k = score.analyze("key")
        key, mode = KEY_NAMES[k.tonic.pitchClass], str(k.mode)
    except Exception:  # key analysis is a description only; some encodings defeat it
        pass
    meta = score.metadata
    title = (meta.title if meta is not None and meta.title else rel)
    composer = (meta.composer if meta is not None and meta.composer else rel.split("/")[0])
    source = {
        "kind": "music21-corpus", "collection": collection, "path": rel, "title": str(title),
        "composer": str(composer), "music21_version": music21.__version__,
        "excerpt_quarters": [round(start_q, 3), round(end_q, 3)], "licence": CORPUS_LICENCE,
        "parts": [f"part {k} -> {inst}" for k, inst in enumerate(assign)],
    }
    return Song(
        song_id=song_id or "corpus", tempo=tempo, key=key, mode=mode, meter=meter, style=collection,
        duration=duration, sections=[Section("excerpt", 0.0, duration, int(math.ceil((end_q - start_q) / meter)),
                                             0.6)],
        tracks=tracks, source=source,
    )

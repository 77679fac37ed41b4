"""Single guitar notes, as IDMT-SMT-Audio-Effects records them: AutoFX's source material (issue 6).

AutoFX (../shared/seeds/autofx-effect-recognition-configuration-2022.txt, §4.1.1 and §5.2) recognizes effects and
estimates their settings on single guitar notes: every note of a guitar's fretboard, open string to the 12th fret
on each of the six strings, each about 1.5 s long after its onset, played again with other settings. IDMT's
recordings are not on this machine; fxlens renders the same plan with fluidsynth and free soundfonts, so that its
models can be measured on the paper's kind of sound beside fxlens's own phrases of twelve instruments.

Plan
    One "song" per (soundfont, GM guitar program, string, take): the 13 notes of that string, open to 12th fret,
    one every `NOTE_SLOT_S` (1.75 s), each held `NOTE_HOLD_S` (1.4 s) and then released, at a velocity drawn per
    note (`VELOCITY`). A 1.5 s clip cut at a note's onset (``fxlens data fxset --onset-fraction 1``) holds that
    note alone. Programs: the taxonomy's clean guitars (`fxlens.data.instruments`: acoustic nylon and steel,
    electric jazz, clean and muted). The overdriven and distortion guitar programs (29, 30) are left out: their
    sound is an effect.

Splits
    The in-domain soundfonts' songs are split at random, seeded (`VAL_FRACTION`, `TEST_FRACTION` of them to val
    and test), as AutoFX split its files at random: a test song's notes are played on a string and program that
    train has too, in another take. The held-out soundfont (`fxlens.data.render.HELD_OUT_SOUNDFONT`) gives the
    ood split: guitars never heard in training.

Layout
    fxlens's stem layout (`fxlens.data.stems.FxlensStems`): ``<out>/<split>/<song_id>/<instrument>.flac`` and
    ``song.json`` (written last; a song whose ``song.json`` exists is kept on a rerun), so every command that reads
    stems reads it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fxlens.data.instruments import get_instrument
from fxlens.data.render import (HELD_OUT_SOUNDFONT, IN_DOMAIN_MELODIC_SOUNDFONTS, SAMPLE_RATE, SOUNDFONTS,
                                StemAssignment, process_renderer, render_song, save_stem, write_json)
from fxlens.data.songs import Note, Song, Track
from fxlens.errors import FxlensError

__all__ = ["FRETS", "GUITAR_STRINGS", "NOTE_HOLD_S", "NOTE_SLOT_S", "NotePlan", "plan_notes", "render_note_song",
           "render_notes"]

GUITAR_STRINGS = (40, 45, 50, 55, 59, 64)  # standard tuning, MIDI: E2 A2 D3 G3 B3 E4
FRETS = 13  # open string to the 12th fret, as IDMT records them
NOTE_SLOT_S = 1.75  # one note every 1.75 s: a 1.5 s clip from an onset holds no other note
NOTE_HOLD_S = 1.4
LEAD_S = 0.25  # silence before the first note
VELOCITY = (70, 120)
INSTRUMENTS = ("acoustic_guitar", "electric_guitar")
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class NotePlan:
    """One song of single notes: where it goes, what plays it and the notes' velocities."""

    song_id: str
    split: str
    font: str
    instrument: str
    program: int
    string_midi: int
    take: int
    velocities: tuple[int, ...]

    def track(self) -> Track:
        notes = [Note(LEAD_S + k * NOTE_SLOT_S, NOTE_HOLD_S, self.string_midi + k, v)
                 for k, v in enumerate(self.velocities)]
        return Track(self.instrument, self.program, "notes", notes)

    def song(self) -> Song:
        source = {"kind": "single notes", "generator": "fxlens.data.notes"}
        return Song(self.song_id, 60.0, "C", "unknown", 4, "single notes", self.seconds, [],
                    {self.instrument: self.track()}, source)

    @property
    def seconds(self) -> float:
        return LEAD_S + FRETS * NOTE_SLOT_S


def plan_notes(takes: int = 3, seed: int = 0) -> list[NotePlan]:
    """Every song of the set: `takes` takes of each (in-domain soundfont, program, string), split at random, and one
    take of each (held-out soundfont, program, string) as ood."""
    if takes < 1:
        raise FxlensError(f"takes must be >= 1, got {takes}")
    rng = np.random.default_rng(seed)
    combos = [(font, inst, prog, s) for font in IN_DOMAIN_MELODIC_SOUNDFONTS for inst in INSTRUMENTS
              for prog in get_instrument(inst).programs for s in GUITAR_STRINGS]
    in_domain = [(c, t) for c in combos for t in range(takes)]
    order = rng.permutation(len(in_domain))
    n_val = max(1, round(VAL_FRACTION * len(in_domain)))
    n_test = max(1, round(TEST_FRACTION * len(in_domain)))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[int(i)] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    plans = []
    for i, ((font, inst, prog, s), take) in enumerate(in_domain):
        vel = tuple(int(v) for v in rng.integers(VELOCITY[0], VELOCITY[1] + 1, FRETS))
        plans.append(NotePlan(f"n-{font}-{prog}-{s}-{take}", split_of[i], font, inst, prog, s, take, vel))
    for inst in INSTRUMENTS:
        for prog in get_instrument(inst).programs:
            for s in GUITAR_STRINGS:
                vel = tuple(int(v) for v in rng.integers(VELOCITY[0], VELOCITY[1] + 1, FRETS))
                plans.append(NotePlan(f"n-{HELD_OUT_SOUNDFONT}-{prog}-{s}-0", "ood", HELD_OUT_SOUNDFONT, inst, prog,
                                      s, 0, vel))
    return plans


def render_note_song(plan: NotePlan, out_dir: str | Path, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> bool:
    """Render one song of single notes into ``<out_dir>/<split>/<song_id>/`` (song.json last); False when it is
    already there."""
    p = plan
    folder = Path(out_dir).expanduser() / p.split / p.song_id
    if (folder / "song.json").is_file():
        return False
    song = p.song()
    stems, info, dropped = render_song(song, {p.instrument: StemAssignment(p.font, 0, p.program)},
                                       process_renderer(sample_rate),
                                       n_samples=int(round(p.seconds * sample_rate)))
    if dropped or info[p.instrument]["soundfont"] != SOUNDFONTS[p.font].name:
        raise FxlensError(f"{p.song_id}: soundfont {p.font} did not play program {p.program}")
    save_stem(folder / f"{p.instrument}.flac", stems[p.instrument], sample_rate)
    write_json(folder / "song.json", {
        **song.metadata(), "source": {**song.source, "seed": seed}, "stems": info,
        "soundfont": p.font, "instrument": p.instrument, "program": p.program, "string_midi": p.string_midi,
        "take": p.take,
        "notes": [{"start_s": n.start, "duration_s": n.duration, "pitch": n.pitch, "velocity": n.velocity}
                  for n in song.tracks[p.instrument].notes],
    })
    return True


def render_notes(out_dir: str | Path, takes: int = 3, seed: int = 0, sample_rate: int = SAMPLE_RATE,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the single-note set into `out_dir` (resumable); returns a summary {root, songs, splits, rendered,
    seconds}."""
    out = Path(out_dir).expanduser()
    plans = plan_notes(takes, seed)
    t0 = time.perf_counter()
    rendered = 0
    for k, p in enumerate(plans):
        rendered += render_note_song(p, out, seed, sample_rate)
        if progress is not None:
            progress(k + 1, len(plans))
    summary = {"root": str(out), "songs": len(plans), "splits": dict(Counter(p.split for p in plans)),
               "rendered": rendered, "notes": len(plans) * FRETS, "seconds": round(time.perf_counter() - t0, 2), "takes": takes,
               "seed": seed, "sample_rate": sample_rate}
    write_json(out / "dataset.json", {"dataset": "single notes", "summary": summary,
                                      "layout": "<split>/<song_id>/<instrument>.flac + song.json (written last)"})
    return summary

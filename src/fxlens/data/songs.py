"""Procedural songs: seeded, varied, multitrack note lists ready for the renderer.

`generate_song(seed, seconds)` composes one song: a groove family (rock, pop, funk, shuffle, jazz,
four-on-the-floor, half-time, bossa, waltz, ballad, reggae, hip-hop) decides tempo, meter, swing and drum
patterns; a key and mode and per-section chord progressions give the harmony; sections (intro, verse, chorus,
bridge, outro) change the energy, which instruments play, and the register; each instrument gets its own line
(drums with fills and crashes, bass in one of several styles, chords comped as blocks, arpeggios, guitar strums,
fingerpicking, funk chops, off-beat skanks or sustained pads, a lead melody built from repeated and varied
phrases, optional string pads or counter-lines and brass stabs). Velocities follow section energy, phrase arcs
and metric accents; sustained instruments get expression (CC 11) swells; timing is humanized. Everything comes
from one `numpy.random.Generator`, so a seed gives the same song on every machine.

Times are in seconds from the start of the song, pitches are MIDI note numbers, velocities 1..127.
The `music21` corpus arrangements (chorales, quartets, madrigals) live in `fxlens.data.corpus` and produce the
same `Song` object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fxlens.data.instruments import (
    INSTRUMENTS,
    IN_DOMAIN_INSTRUMENTS,
    get_instrument,
    program_range,
)

__all__ = [
    "GENERATOR_VERSION",
    "Note",
    "Track",
    "Section",
    "Song",
    "STYLES",
    "KEY_NAMES",
    "generate_song",
    "fit_to_range",
]

GENERATOR_VERSION = 1
"""Bumped whenever the same seed would give a different song; recorded in every song.json."""

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}

# Progressions as 0-based scale degrees, one chord per harmonic-rhythm slot.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 0), (0, 2, 3, 4),
              (3, 0, 4, 5), (0, 3, 5, 4), (0, 4, 3, 0), (0, 0, 3, 4), (3, 4, 0, 5), (0, 5, 1, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 4, 3, 0),
              (0, 2, 6, 3), (5, 6, 0, 0)),
    "dorian": ((0, 3, 0, 3), (0, 1, 0, 3), (0, 6, 3, 0), (0, 3, 6, 0)),
    "mixolydian": ((0, 6, 3, 0), (0, 3, 6, 0), (0, 4, 6, 3), (0, 0, 6, 3)),
}
BLUES_12 = (0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4)
JAZZ_PROGRESSIONS = ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (3, 6, 2, 5))

# GM percussion keys (channel 10) that every kit fxlens uses has, AVL kits included (their range is 36-68).
DRUM_KEYS = {
    "kick": 36, "rim": 37, "snare": 38, "clap": 39, "snare2": 40, "tom_lo": 41, "hat": 42, "tom_lm": 43,
    "pedal": 44, "tom_mid": 45, "open": 46, "tom_hm": 47, "tom_hi": 48, "crash": 49, "ride": 51,
    "bell": 53, "tamb": 54, "crash2": 57,
}

# Drum patterns: 4 steps per beat. "X" accent, "x" normal, "g" ghost, "o" open/secondary, "." rest.
_PATTERNS: dict[str, tuple[dict[str, str], ...]] = {
    "rock": (
        {"kick": "x.......x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.....x.x.......", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.x.....x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.......x.......", "snare": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx"},
    ),
    "pop": (
        {"kick": "x.....x...x.....", "snare": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx"},
        {"kick": "x.......x.x.....", "snare": "....X.......X..g", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x..x..x...x.....", "snare": "....X.......X...", "hat": "x.xxx.xxx.xxx.xx"},
    ),
    "funk": (
        {"kick": "x..x......x..x..", "snare": "....X..g.g..X..g", "hat": "xxxxxxxxxxxxxx.o"},
        {"kick": "x.x....x..x.....", "snare": "....X.g..g..X.g.", "hat": "xxxxxxxxxxxxxxxx"},
        {"kick": "x......x.xx.....", "snare": "..g.X..g.g.gX..g", "hat": "x.x.x.x.x.x.x.o."},
    ),
    "shuffle": (
        {"kick": "x.......x.......", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.....x.x.......", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
    ),
    "jazz": (
        {"ride": "x...x.x.x...x.x.", "pedal": "....x.......x...", "kick": "g...g...g...g...",
         "snare": "..........g....."},
        {"ride": "x...x.x.x...x.x.", "pedal": "....x.......x...", "snare": "......g.......g."},
    ),
    "four_on_floor": (
        {"kick": "X...X...X...X...", "clap": "....x.......x...", "hat": "x.x.x.x.x.x.x.x.",
         "open": "..o...o...o...o."},
        {"kick": "X...X...X...X...", "snare": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx"},
        {"kick": "X...X...X...X...", "clap": "....x.......x...", "open": "..o...o...o...o.",
         "tamb": "....x.......x..."},
    ),
    "halftime": (
        {"kick": "x.........x.....", "snare": "........X.......", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x..x......x.....", "snare": "........X......g", "hat": "xxxxxxxxxxxxxxxx"},
    ),
    "bossa": (
        {"kick": "x..xx..xx..xx..x", "rim": "x..x..x...x..x..", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x..xx..xx..xx..x", "rim": "x..x...x..x..x..", "ride": "x.x.x.x.x.x.x.x."},
    ),
    "waltz": (
        {"kick": "x...........", "snare": "....x...x...", "hat": "x.x.x.x.x.x."},
        {"kick": "x.......x...", "rim": "....x...x...", "ride": "x...x...x..."},
    ),
    "ballad": (
        {"kick": "x.........x.....", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.......x.......", "snare": "....x.......x...", "ride": "x.x.x.x.x.x.x.x."},
    ),
    "reggae": (
        {"kick": "........X.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "X...X...X...X...", "snare": "........x.......", "hat": "..x...x...x...x."},
    ),
    "hiphop": (
        {"kick": "x......x..x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.x.......x..x..", "clap": "....X.......X...", "hat": "xxxxxxxxxxxxxxxx"},
    ),
}


@dataclass(frozen=True)
class _Style:
    tempo: tuple[float, float]
    swing: tuple[float, float] = (0.5, 0.5)  # position of the off-beat inside its swing unit, 0.5 = straight
    swing_unit: float = 0.5  # beats: 0.5 swings 8ths, 0.25 swings 16ths
    meter: int = 4
    kits: tuple[int, ...] = (0, 8, 16)
    bass: tuple[str, ...] = ("pulse8", "root_fifth")
    comp: dict[str, tuple[str, ...]] = field(default_factory=dict)
    modes: tuple[str, ...] = ("major", "minor")
    sevenths: float = 0.2
    harmonic_rhythm: tuple[float, ...] = (1.0,)  # chords per bar
    drums_prob: float = 0.95


_DEFAULT_COMP = {
    "piano": ("block", "pulse8", "arp", "ballad"),
    "electric_guitar": ("strum", "arp", "chop"),
    "acoustic_guitar": ("strum", "fingerpick"),
    "organ": ("sustain", "block"),
    "synth_pad": ("sustain",),
    "strings": ("sustain",),
    "brass": ("stabs", "sustain"),
    "reeds": ("sustain", "stabs"),
    "voice": ("sustain",),
}

STYLES: dict[str, _Style] = {
    "rock": _Style((100, 150), kits=(0, 8, 16), bass=("pulse8", "root_fifth", "sync"),
                   comp={"piano": ("block", "pulse8"), "electric_guitar": ("strum", "power", "arp"),
                         "organ": ("sustain", "block")},
                   modes=("major", "minor", "mixolydian"), harmonic_rhythm=(1.0, 0.5)),
    "pop": _Style((88, 124), swing=(0.5, 0.54), swing_unit=0.25, kits=(0, 8, 24),
                  bass=("pulse8", "sync", "root_fifth"),
                  comp={"piano": ("block", "pulse8", "arp"), "electric_guitar": ("strum", "arp", "chop"),
                        "acoustic_guitar": ("strum",)},
                  sevenths=0.25, harmonic_rhythm=(1.0, 0.5, 2.0)),
    "funk": _Style((90, 116), swing=(0.5, 0.56), swing_unit=0.25, kits=(0, 8, 24), bass=("sync", "octave"),
                   comp={"piano": ("chop", "block"), "electric_guitar": ("chop", "offbeat"),
                         "organ": ("stabs", "sustain"), "brass": ("stabs",)},
                   modes=("dorian", "minor", "mixolydian"), sevenths=0.85, harmonic_rhythm=(0.5, 1.0)),
    "shuffle": _Style((80, 130), swing=(0.62, 0.68), kits=(0, 8), bass=("walking", "root_fifth"),
                      comp={"piano": ("block", "pulse8"), "electric_guitar": ("power", "chop"),
                            "organ": ("sustain", "block")},
                      modes=("mixolydian", "major"), sevenths=0.9, harmonic_rhythm=(1.0,)),
    "jazz": _Style((100, 180), swing=(0.6, 0.68), kits=(32, 40), bass=("walking",),
                   comp={"piano": ("jazz",), "electric_guitar": ("jazz",), "organ": ("sustain", "jazz")},
                   modes=("major", "minor"), sevenths=1.0, harmonic_rhythm=(1.0, 2.0)),
    "four_on_floor": _Style((116, 128), kits=(24, 25), bass=("octave", "pulse8"),
                            comp={"piano": ("offbeat", "block"), "electric_guitar": ("chop", "offbeat"),
                                  "synth_pad": ("sustain",)},
                            modes=("minor", "dorian", "major"), sevenths=0.4, harmonic_rhythm=(0.5, 1.0)),
    "halftime": _Style((130, 170), kits=(0, 16, 25), bass=("whole", "sync"),
                       comp={"piano": ("sustain", "arp"), "electric_guitar": ("arp", "strum")},
                       modes=("minor", "major"), harmonic_rhythm=(0.5, 1.0)),
    "bossa": _Style((120, 145), kits=(32, 40, 0), bass=("root_fifth",),
                    comp={"piano": ("jazz", "block"), "acoustic_guitar": ("bossa",), "electric_guitar": ("bossa",)},
                    modes=("major", "minor"), sevenths=0.9, harmonic_rhythm=(1.0, 0.5)),
    "waltz": _Style((90, 160), meter=3, kits=(0, 32, 40), bass=("waltz",),
                    comp={"piano": ("waltz", "arp"), "acoustic_guitar": ("waltz", "fingerpick"),
                          "electric_guitar": ("waltz", "arp")},
                    modes=("major", "minor"), harmonic_rhythm=(1.0, 0.5)),
    "ballad": _Style((60, 84), swing=(0.5, 0.53), swing_unit=0.25, kits=(0, 40, 32), bass=("whole", "root_fifth"),
                     comp={"piano": ("ballad", "arp"), "acoustic_guitar": ("fingerpick", "arp"),
                           "electric_guitar": ("arp",)},
                     sevenths=0.35, harmonic_rhythm=(1.0, 2.0), drums_prob=0.6),
    "reggae": _Style((68, 90), swing=(0.5, 0.58), kits=(0, 8), bass=("reggae",),
                     comp={"piano": ("offbeat",), "electric_guitar": ("offbeat",), "organ": ("offbeat",)},
                     modes=("major", "minor"), sevenths=0.2, harmonic_rhythm=(1.0, 0.5)),
    "hiphop": _Style((80, 98), swing=(0.52, 0.6), swing_unit=0.25, kits=(25, 24, 0), bass=("sync", "whole"),
                     comp={"piano": ("block", "sustain", "arp"), "electric_guitar": ("arp",)},
                     modes=("minor", "dorian"), sevenths=0.6, harmonic_rhythm=(0.5, 1.0)),
}

# Programs that suit a style better than the instrument's default spread (chosen 60% of the time).
_STYLE_PROGRAMS: dict[str, dict[str, tuple[int, ...]]] = {
    "jazz": {"bass": (32,), "piano": (0, 4), "electric_guitar": (26,), "brass": (56, 59, 57), "reeds": (65, 66)},
    "bossa": {"bass": (32, 35), "acoustic_guitar": (24,), "piano": (0, 4), "reeds": (65, 66, 71)},
    "funk": {"bass": (36, 37, 33), "piano": (7, 4), "electric_guitar": (28, 27), "organ": (16, 17)},
    "four_on_floor": {"bass": (38, 39), "piano": (0, 1, 4)},
    "hiphop": {"bass": (38, 39, 33), "piano": (4, 0, 2)},
    "rock": {"bass": (34, 33), "piano": (0, 1), "organ": (18, 16)},
    "shuffle": {"bass": (33, 32), "piano": (0, 3), "organ": (16, 18)},
    "reggae": {"bass": (33, 32), "organ": (16, 17)},
    "ballad": {"piano": (0, 4, 2), "bass": (33, 35, 32)},
}

_ENERGY = {"intro": 0.45, "verse": 0.62, "chorus": 0.9, "bridge": 0.7, "outro": 0.5}
# Probability that a role plays in a section.
_ACTIVITY = {
    "intro": {"drums": 0.5, "bass": 0.5, "chords": 0.9, "lead": 0.2, "extra": 0.3},
    "verse": {"drums": 0.95, "bass": 0.95, "chords": 0.95, "lead": 0.9, "extra": 0.35},
    "chorus": {"drums": 0.98, "bass": 0.98, "chords": 0.95, "lead": 0.95, "extra": 0.85},
    "bridge": {"drums": 0.7, "bass": 0.8, "chords": 0.9, "lead": 0.6, "extra": 0.6},
    "outro": {"drums": 0.6, "bass": 0.8, "chords": 0.95, "lead": 0.4, "extra": 0.5},
}
_CHORD_INSTRUMENTS = ("piano", "electric_guitar", "acoustic_guitar", "organ", "synth_pad")
_LEAD_INSTRUMENTS = ("voice", "reeds", "brass", "synth_lead", "electric_guitar", "piano", "strings")
_SUSTAINED_ROLES = {"sustain"}
_LEAD_ARTICULATION = {  # (legato ratio range, timing jitter s)
    "voice": ((0.88, 0.98), 0.012), "reeds": ((0.7, 0.97), 0.008), "brass": ((0.6, 0.92), 0.006),
    "synth_lead": ((0.35, 0.98), 0.002), "electric_guitar": ((0.6, 0.95), 0.006), "piano": ((0.7, 0.95), 0.005),
    "strings": ((0.9, 1.0), 0.01), "organ": ((0.8, 0.98), 0.004),
}


# --------------------------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Note:
    """One note: `start` and `duration` in seconds, MIDI `pitch` 0..127, MIDI `velocity` 1..127."""

    start: float
    duration: float
    pitch: int
    velocity: int


@dataclass
class Track:
    """All notes of one instrument (= one stem).

    Attributes:
        instrument: a name from `fxlens.data.instruments.INSTRUMENTS`.
        program: 0-based GM program; for drums the GM kit number (bank 128).
        role: what it does in the arrangement ("drums", "bass", "chords", "lead", "pad", "counter", "stabs",
            "part" for corpus parts).
        notes: the notes, in any order (`sanitized()` sorts them).
        controls: (time s, MIDI CC number, value 0..127) events, e.g. CC 11 expression swells.
        articulation: the comping / playing style used (documentation only).
    """

    instrument: str
    program: int
    role: str
    notes: list[Note] = field(default_factory=list)
    controls: list[tuple[float, int, int]] = field(default_factory=list)
    articulation: str = ""

    @property
    def is_drum(self) -> bool:
        return INSTRUMENTS[self.instrument].is_drum

    def sanitized(self, min_duration: float = 0.01) -> Track:
        """A copy that a synthesizer can play as is: notes sorted, pitches/velocities clamped, no overlapping
        notes of the same pitch (a MIDI note-off ends every voice of that key, so an overlap would cut the
        later note; the earlier one is shortened to end 5 ms before the next onset instead)."""
        notes = sorted(self.notes, key=lambda n: (n.start, n.pitch))
        last: dict[int, int] = {}
        out: list[Note] = []
        for n in notes:
            start = max(0.0, n.start)
            note = Note(start, max(min_duration, n.duration), int(min(127, max(0, n.pitch))),
                        int(min(127, max(1, n.velocity))))
            j = last.get(note.pitch)
            if j is not None:
                prev = out[j]
                if prev.start + prev.duration > note.start - 0.005:
                    new_dur = note.start - 0.005 - prev.start
                    if new_dur < min_duration:  # simultaneous duplicates: keep the louder one
                        if note.velocity > prev.velocity:
                            out[j] = Note(prev.start, note.duration, prev.pitch, note.velocity)
                        continue
                    out[j] = Note(prev.start, new_dur, prev.pitch, prev.velocity)
            last[note.pitch] = len(out)
            out.append(note)
        controls = sorted((max(0.0, t), int(c), int(min(127, max(0, v)))) for t, c, v in self.controls)
        return Track(self.instrument, self.program, self.role, out, controls, self.articulation)

    @property
    def end(self) -> float:
        """Time (s) at which the last note is released."""
        return max((n.start + n.duration for n in self.notes), default=0.0)


@dataclass(frozen=True)
class Section:
    """A song section: `name` (intro/verse/chorus/bridge/outro), `start`/`end` in seconds, `bars`, `energy` 0..1."""

    name: str
    start: float
    end: float
    bars: int
    energy: float


@dataclass
class Song:
    """A multitrack song: one `Track` per instrument (the stems), plus what describes it.

    Attributes:
        song_id: identifier, also the folder name on disk.
        tempo: beats per minute (quarter notes for corpus pieces).
        key: tonic name ("Eb"); mode: "major", "minor", "dorian", "mixolydian" (or "unknown").
        meter: beats per bar.
        style: groove family (a key of `STYLES`) or the corpus collection ("chorale", "quartet", ...).
        duration: seconds until the music ends (the renderer adds a release tail).
        sections: the form.
        tracks: instrument name -> Track; at most one track per instrument.
        source: provenance written to song.json (generator + seed, or corpus path + licence).
    """

    song_id: str
    tempo: float
    key: str
    mode: str
    meter: int
    style: str
    duration: float
    sections: list[Section]
    tracks: dict[str, Track]
    source: dict

    @property
    def instruments(self) -> list[str]:
        return list(self.tracks)

    def metadata(self) -> dict:
        """JSON-ready description (no note lists): what song.json records about the music."""
        return {
            "song_id": self.song_id,
            "source": self.source,
            "style": self.style,
            "tempo_bpm": round(float(self.tempo), 3),
            "key": self.key,
            "mode": self.mode,
            "meter": self.meter,
            "music_duration_s": round(float(self.duration), 4),
            "sections": [
                {"name": s.name, "start_s": round(s.start, 4), "end_s": round(s.end, 4), "bars": s.bars,
                 "energy": round(s.energy, 3)}
                for s in self.sections
            ],
        }


def fit_to_range(pitch: int, low: int, high: int) -> int:
    """Move `pitch` by whole octaves until it lies in [low, high] (closest octave if the range is < 1 octave)."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return max(low, pitch)


# ----------------------------------------------------------------------------------------------- harmony
@dataclass(frozen=True)
class _Chord:
    root: int  # pitch class 0..11
    intervals: tuple[int, ...]  # semitones above the root, root (0) first

    def pcs(self) -> list[int]:
        return [(self.root + i) % 12 for i in self.intervals]


@dataclass(frozen=True)
class _ChordSpan:
    start: float  # beats from the song start
    end: float
    chord: _Chord


# -------------------------------------------------------------------------------------------- the composer
class _Composer:
    """Holds one song's random state and shared decisions; each `_part_*` method writes one track."""

    def __init__(self, rng: np.random.Generator, seconds: float, style: str | None,
                 allowed: Sequence[str], required: Sequence[str]):
        self.rng = rng
        self.style_name = style if style is not None else str(rng.choice(list(STYLES)))
        if self.style_name not in STYLES:
            raise ValueError(f"unknown style {self.style_name!r}; known: {', '.join(STYLES)}")
        st = STYLES[self.style_name]
        self.st = st
        self.tempo = float(np.round(rng.uniform(*st.tempo), 1))
        self.meter = st.meter
        self.beat_s = 60.0 / self.tempo
        self.bar_s = self.beat_s * self.meter
        self.swing = float(rng.uniform(*st.swing))
        self.swing_unit = st.swing_unit
        self.tonic = int(rng.integers(12))
        self.mode = str(rng.choice(st.modes))
        self.scale = MODES[self.mode]
        self.sevenths = st.sevenths
        self.seconds = seconds
        self.n_bars = max(1, int(round(seconds / self.bar_s)))
        self.allowed = [a for a in allowed if a in INSTRUMENTS]
        self.required = list(required)
        self._build_form()
        self._build_harmony()

    # ---- time ------------------------------------------------------------------------------------------
    def time(self, beat: float) -> float:
        """Seconds of an absolute beat position, with swing: the off-beat of each swing unit moves from
        the middle of the unit to `swing` of it (piecewise-linear, so the grid stays monotonic)."""
        u = self.swing_unit
        k, frac = divmod(beat, u)
        f = frac / u
        s = self.swing
        g = f * (s / 0.5) if f < 0.5 else s + (f - 0.5) * ((1.0 - s) / 0.5)
        return (k + g) * u * self.beat_s

    def energy_at(self, beat: float) -> float:
        """Section energy, ramping over the last bar of a section into a louder next one."""
        bar = beat / self.meter
        for i, (sec, b0, b1) in enumerate(self.form):
            if b0 <= bar < b1:
                e = sec.energy
                if i + 1 < len(self.form) and bar >= b1 - 1:
                    nxt = self.form[i + 1][0].energy
                    if nxt > e:
                        e = e + (nxt - e) * (bar - (b1 - 1))
                return e
        return self.form[-1][0].energy

    def section_at(self, bar: int) -> str:
        for sec, b0, b1 in self.form:
            if b0 <= bar < b1:
                return sec.name
        return self.form[-1][0].name

    def velocity(self, level: float, beat: float, accent: float = 1.0, spread: float = 5.0) -> int:
        e = self.energy_at(beat)
        v = 127.0 * level * (0.55 + 0.5 * e) * accent + self.rng.normal(0.0, spread)
        return int(np.clip(round(v), 1, 127))

    # ---- form and harmony ------------------------------------------------------------------------------
    def _build_form(self) -> None:
        rng = self.rng
        templates = (
            ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
            ("verse", "chorus", "verse", "chorus", "outro"),
            ("intro", "verse", "verse", "chorus", "bridge", "chorus"),
            ("intro", "chorus", "verse", "chorus", "outro"),
            ("verse", "verse", "bridge", "verse"),
        )
        template = templates[int(rng.integers(len(templates)))]
        lens = {"intro": (2, 4), "outro": (2, 4), "verse": (4, 8), "chorus": (4, 8), "bridge": (4, 8)}
        if self.style_name == "shuffle":
            lens = {k: (v if k in ("intro", "outro") else (12,)) for k, v in lens.items()}
        # short songs take short sections so that they still have a form
        short = self.n_bars < 16
        plan: list[tuple[str, int]] = []
        total = 0
        i = 0
        while total < self.n_bars:
            name = template[i % len(template)]
            choices = lens[name]
            n = int(min(choices) if short else rng.choice(choices))
            plan.append((name, n))
            total += n
            i += 1
        # trim the last section to land exactly on n_bars
        excess = total - self.n_bars
        while excess > 0:
            name, n = plan[-1]
            if n > excess:
                plan[-1] = (name, n - excess)
                excess = 0
            else:
                plan.pop()
                excess -= n
        self.form: list[tuple[Section, int, int]] = []
        b = 0
        for name, n in plan:
            energy = float(np.clip(_ENERGY[name] + rng.normal(0, 0.06), 0.2, 1.0))
            sec = Section(name, b * self.bar_s, (b + n) * self.bar_s, n, energy)
            self.form.append((sec, b, b + n))
            b += n

    def _chord(self, degree: int, seventh: bool) -> _Chord:
        sc = self.scale
        root_abs = sc[degree % 7]

        def tone(k: int) -> int:
            d = degree + k
            return sc[d % 7] + 12 * (d // 7) - root_abs

        ints = [0, tone(2), tone(4)]
        if self.mode in ("minor", "dorian") and degree % 7 == 4 and self.rng.random() < 0.5:
            ints[1] = 4  # harmonic-minor dominant: major third on V
        if seventh:
            ints.append(tone(6))
        r = self.rng.random()
        if r < 0.06:
            ints[1] = 5  # sus4
        elif r < 0.1:
            ints[1] = 2  # sus2
        elif r < 0.16 and len(ints) == 3:
            ints.append(14)  # add9
        return _Chord((self.tonic + root_abs) % 12, tuple(ints))

    def _progression(self) -> tuple[int, ...]:
        if self.style_name == "jazz":
            bank = JAZZ_PROGRESSIONS
        else:
            bank = PROGRESSIONS[self.mode]
        return bank[int(self.rng.integers(len(bank)))]

    def _build_harmony(self) -> None:
        rng = self.rng
        hr = float(rng.choice(self.st.harmonic_rhythm))  # chords per bar
        if self.meter == 3 and hr > 1:
            hr = 1.0
        progs = {name: self._progression() for name in ("verse", "chorus", "bridge")}
        progs["intro"] = progs["verse"] if rng.random() < 0.6 else progs["chorus"]
        progs["outro"] = progs["chorus"]
        if self.style_name == "shuffle":
            progs = {k: BLUES_12 for k in progs}
            hr = 1.0
        seventh_song = rng.random() < self.sevenths
        spans: list[_ChordSpan] = []
        beats_per_chord = self.meter / hr
        for sec, b0, b1 in self.form:
            prog = progs[sec.name]
            pos = b0 * self.meter
            end = b1 * self.meter
            k = 0
            while pos < end - 1e-9:
                deg = prog[k % len(prog)]
                seventh = seventh_song and (rng.random() < 0.85)
                if self.style_name == "shuffle":
                    seventh = True
                chord = self._chord(deg, seventh)
                if self.style_name == "shuffle":  # blues: dominant sevenths on every degree
                    chord = _Chord(chord.root, (0, 4, 7, 10))
                span_end = min(end, pos + beats_per_chord)
                spans.append(_ChordSpan(pos, span_end, chord))
                pos = span_end
                k += 1
            # end the outro (and the song) on the tonic
            if sec.name == "outro" and spans:
                last = spans[-1]
                spans[-1] = _ChordSpan(last.start, last.end, self._chord(0, seventh_song and self.sevenths > 0.8))
        self.spans = spans

    def chord_at(self, beat: float) -> _Chord:
        for s in self.spans:
            if s.start <= beat < s.end:
                return s.chord
        return self.spans[-1].chord

    # ---- voicing --------------------------------------------------------------------------------------
    def voice(self, chord: _Chord, center: int, prev: list[int] | None, n_max: int = 4) -> list[int]:
        """Close voicing of `chord` near `center`, choosing the inversion nearest to `prev` (voice leading)."""
        pcs = chord.pcs()[:n_max]
        best: list[int] | None = None
        best_cost = math.inf
        for bottom in range(len(pcs)):
            order = pcs[bottom:] + pcs[:bottom]
            for base in range(center - 12, center + 1):
                if base % 12 != order[0]:
                    continue
                notes = [base]
                for pc in order[1:]:
                    p = notes[-1] + 1
                    while p % 12 != pc:
                        p += 1
                    notes.append(p)
                if prev:
                    cost = sum(abs(a - b) for a, b in zip(sorted(notes), sorted(prev)))
                    cost += 0.5 * abs(len(notes) - len(prev))
                else:
                    cost = abs(sum(notes) / len(notes) - center)
                if cost < best_cost:
                    best, best_cost = notes, cost
        assert best is not None
        return best

    def guitar_voicing(self, chord: _Chord, low: int) -> list[int]:
        """Five or six 'strings': root low, then chord tones stacked in fourths/thirds up to ~2 octaves."""
        root = fit_to_range(40 + (chord.root - 40) % 12, low, low + 11)
        notes = [root]
        pcs = chord.pcs()
        cycle = [pcs[2 % len(pcs)], pcs[0], pcs[1], pcs[2 % len(pcs)], pcs[0]] + pcs[3:]
        for pc in cycle:
            p = notes[-1] + 3
            while p % 12 != pc:
                p += 1
            if p > root + 26:
                break
            notes.append(p)
        return notes[:6]

    # ---- instrument lineup ------------------------------------------------------------------------------
    def lineup(self) -> dict[str, tuple[str, str]]:
        """instrument -> (role, articulation)."""
        rng = self.rng
        allowed = set(self.allowed)
        out: dict[str, tuple[str, str]] = {}

        def comp_style(inst: str, avoid: str | None = None) -> str:
            opts = self.st.comp.get(inst) or _DEFAULT_COMP.get(inst, ("sustain",))
            # a second chord instrument plays a different pattern than the first when it can
            others = [o for o in opts if o != avoid] or list(opts)
            return str(rng.choice(others))

        if "drums" in allowed and rng.random() < self.st.drums_prob:
            out["drums"] = ("drums", self.style_name)
        if "bass" in allowed and rng.random() < 0.93:
            out["bass"] = ("bass", str(rng.choice(self.st.bass)))
        chord_pool = [i for i in _CHORD_INSTRUMENTS if i in allowed]
        # the style's own comp instruments first
        weights = np.array([3.0 if i in self.st.comp else 1.0 for i in chord_pool])
        if chord_pool:
            first = str(rng.choice(chord_pool, p=weights / weights.sum()))
            out[first] = ("chords", comp_style(first))
            rest = [i for i in chord_pool if i not in out]
            if rest and rng.random() < 0.4:
                second = str(rng.choice(rest))
                out[second] = ("chords", comp_style(second, avoid=out[first][1]))
        lead_pool = [i for i in _LEAD_INSTRUMENTS if i in allowed and i not in out]
        if lead_pool and rng.random() < 0.88:
            lead = str(rng.choice(lead_pool))
            out[lead] = ("lead", "melody")
        if "strings" in allowed and "strings" not in out and rng.random() < 0.35:
            out["strings"] = ("pad", "sustain") if rng.random() < 0.6 else ("counter", "line")
        if "brass" in allowed and "brass" not in out and rng.random() < 0.25:
            out["brass"] = ("stabs", "stabs")
        if "synth_pad" in allowed and "synth_pad" not in out and rng.random() < 0.2:
            out["synth_pad"] = ("pad", "sustain")
        for inst in self.required:
            if inst in out:
                continue
            if inst == "drums":
                out[inst] = ("drums", self.style_name)
            elif inst == "bass":
                out[inst] = ("bass", str(rng.choice(self.st.bass)))
            elif inst in _LEAD_INSTRUMENTS and not any(r == "lead" for r, _ in out.values()):
                out[inst] = ("lead", "melody")
            elif inst in _CHORD_INSTRUMENTS or inst in ("strings", "brass", "voice", "reeds"):
                out[inst] = ("chords", comp_style(inst)) if inst in _CHORD_INSTRUMENTS else ("pad", "sustain")
            else:
                out[inst] = ("lead", "melody")
        if len(out) < 2:  # a song needs at least two stems to be a mix
            for inst in ("bass", "piano", "acoustic_guitar", "synth_pad", "strings", "electric_guitar"):
                if inst in allowed and inst not in out:
                    out[inst] = ("bass", "root_fifth") if inst == "bass" else ("chords", comp_style(inst))
                    if len(out) >= 2:
                        break
        return out

    def program(self, inst: str) -> int:
        rng = self.rng
        if inst == "drums":
            return int(rng.choice(self.st.kits))
        progs = INSTRUMENTS[inst].programs
        pref = [p for p in _STYLE_PROGRAMS.get(self.style_name, {}).get(inst, ()) if p in progs]
        if pref and rng.random() < 0.6:
            return int(rng.choice(pref))
        return int(rng.choice(progs))

    def activity(self, lineup: dict[str, tuple[str, str]]) -> dict[str, list[bool]]:
        rng = self.rng
        act: dict[str, list[bool]] = {}
        for inst, (role, _) in lineup.items():
            key = role if role in ("drums", "bass", "chords", "lead") else "extra"
            mask = [bool(rng.random() < _ACTIVITY[sec.name][key]) for sec, _, _ in self.form]
            if not any(mask):  # every stem must sound somewhere: its best section
                best = max(range(len(self.form)), key=lambda i: _ACTIVITY[self.form[i][0].name][key]
                           + 0.01 * self.form[i][0].bars)
                mask[best] = True
            act[inst] = mask
        # at least one harmonic instrument in every section so no section is drums alone
        harmonic = [i for i, (r, _) in lineup.items() if r in ("chords", "pad")]
        for k in range(len(self.form)):
            if harmonic and not any(act[i][k] for i in harmonic):
                act[harmonic[0]][k] = True
        return act

    def bars_active(self, mask: list[bool]) -> list[int]:
        return [b for (sec, b0, b1), on in zip(self.form, mask) if on for b in range(b0, b1)]

    # ---- helpers --------------------------------------------------------------------------------------
    def note(self, beat: float, dur_beats: float, pitch: int, vel: int, jitter: float = 0.0,
             min_dur: float = 0.03) -> Note:
        t0 = self.time(beat)
        t1 = self.time(beat + dur_beats)
        if jitter > 0:
            t0 += float(self.rng.normal(0.0, jitter))
        return Note(max(0.0, t0), max(min_dur, t1 - t0), int(pitch), int(vel))

    def spans_in_bar(self, bar: int) -> list[_ChordSpan]:
        b0, b1 = bar * self.meter, (bar + 1) * self.meter
        out = []
        for s in self.spans:
            if s.end > b0 and s.start < b1:
                out.append(_ChordSpan(max(s.start, b0), min(s.end, b1), s.chord))
        return out

    def expression(self, start_beat: float, end_beat: float, shape: str, lo: int, hi: int) -> list[tuple]:
        """CC 11 (expression) ramps every 60 ms: 'swell' rises then falls, 'cresc' rises, 'flat' holds."""
        t0, t1 = self.time(start_beat), self.time(end_beat)
        n = max(2, int((t1 - t0) / 0.06))
        out = []
        for i in range(n):
            x = i / (n - 1)
            if shape == "swell":
                y = math.sin(math.pi * x) ** 0.7
            elif shape == "cresc":
                y = x
            else:
                y = 1.0
            out.append((t0 + x * (t1 - t0), 11, int(round(lo + (hi - lo) * y))))
        return out

    # ---- parts ----------------------------------------------------------------------------------------
    def part_drums(self, bars: list[int], kit: int) -> list[Note]:
        rng = self.rng
        steps = self.meter * 4
        variants = _PATTERNS[self.style_name]
        electronic = kit in (24, 25)
        main = dict(variants[int(rng.integers(len(variants)))])
        alt = dict(variants[int(rng.integers(len(variants)))])
        if not electronic:  # claps and tambourines belong to electronic kits here
            for d in (main, alt):
                if "clap" in d:
                    d["snare"] = d.pop("clap")
                d.pop("tamb", None)
        chorus_ride = rng.random() < 0.4
        fill_prob = float(rng.uniform(0.4, 0.9))
        hat_level = float(rng.uniform(0.5, 0.75))
        jitter = 0.002 if electronic else float(rng.uniform(0.002, 0.007))
        level = {"kick": 0.95, "snare": 0.9, "clap": 0.85, "rim": 0.7, "hat": hat_level, "pedal": 0.5,
                 "open": hat_level + 0.1, "ride": hat_level + 0.05, "tamb": 0.5, "crash": 0.85}
        active = set(bars)
        notes: list[Note] = []
        section_starts = {b0 for _, b0, _ in self.form}
        section_ends = {b1 - 1 for _, _, b1 in self.form}
        for bar in bars:
            sec = self.section_at(bar)
            pat = dict(alt if (sec in ("chorus", "bridge") and rng.random() < 0.5) else main)
            if sec == "intro" and rng.random() < 0.5:  # sparse intro: time-keeping only
                pat = {k: v for k, v in pat.items() if k in ("hat", "ride", "pedal", "kick")}
            if chorus_ride and sec == "chorus" and "hat" in pat:
                pat["ride"] = pat.pop("hat")
            fill_from = steps
            if bar in section_ends and bar + 1 in active and rng.random() < fill_prob:
                fill_from = steps - int(rng.choice([4, 8])) if steps >= 12 else steps - 4
            elif (bar % 4 == 3) and rng.random() < 0.2:
                fill_from = steps - 2
            for voice, patt in pat.items():
                patt = (patt * 2)[:steps]
                for s, ch in enumerate(patt):
                    if ch == "." or s >= fill_from:
                        continue
                    acc = {"X": 1.12, "x": 1.0, "g": 0.38, "o": 0.9}[ch]
                    if voice in ("hat", "ride") and s % 4 != 0:
                        acc *= 0.78 if s % 2 == 0 else 0.62
                    key = DRUM_KEYS["open" if ch == "o" and voice == "hat" else voice]
                    if voice == "ride" and s % 16 == 0 and rng.random() < 0.15:
                        key = DRUM_KEYS["bell"]
                    notes.append(self.note(bar * self.meter + s / 4, 0.2, key,
                                           self.velocity(level.get(voice, 0.8), bar * self.meter + s / 4, acc, 6),
                                           jitter))
                # per-bar variation: an extra kick or a ghost note now and then
                if voice == "kick" and rng.random() < 0.3:
                    s = int(rng.choice([2 * k + 1 for k in range(steps // 2)] if rng.random() < 0.3
                                       else [2 * k for k in range(steps // 2)]))
                    if s < fill_from and patt[s] == ".":
                        notes.append(self.note(bar * self.meter + s / 4, 0.2, DRUM_KEYS["kick"],
                                               self.velocity(0.8, bar * self.meter + s / 4, 0.9), jitter))
            if fill_from < steps:
                toms = ["snare", "tom_hi", "tom_hm", "tom_mid", "tom_lm", "tom_lo"]
                start = int(rng.integers(0, 3))
                n = steps - fill_from
                for k, s in enumerate(range(fill_from, steps)):
                    if rng.random() < 0.12:
                        continue
                    drum = toms[min(len(toms) - 1, start + (k * 4) // max(1, n))]
                    beat = bar * self.meter + s / 4
                    notes.append(self.note(beat, 0.2, DRUM_KEYS[drum],
                                           self.velocity(0.7 + 0.3 * k / n, beat, 1.0, 6), jitter))
            if bar in section_starts and bar > 0 and sec != "intro":
                beat = bar * self.meter
                notes.append(self.note(beat, 0.5, DRUM_KEYS["crash" if rng.random() < 0.7 else "crash2"],
                                       self.velocity(0.9, beat, 1.0), jitter))
                if "kick" in pat and pat["kick"][0] == ".":
                    notes.append(self.note(beat, 0.2, DRUM_KEYS["kick"], self.velocity(0.9, beat), jitter))
        return notes

    def part_bass(self, bars: list[int], style: str, low: int, high: int) -> list[Note]:
        rng = self.rng
        reg_low = int(rng.integers(low, min(low + 8, high - 12) + 1))
        legato = float(rng.uniform(0.6, 0.95))
        jitter = float(rng.uniform(0.002, 0.008))
        kick = _PATTERNS[self.style_name][0].get("kick", "x.......x.......")
        notes: list[Note] = []

        def root(ch: _Chord) -> int:
            return reg_low + (ch.root - reg_low) % 12

        for bar in bars:
            spans = self.spans_in_bar(bar)
            for si, sp in enumerate(spans):
                r = root(sp.chord)
                fifth = r + 7 if r + 7 <= high and rng.random() < 0.5 else r - 5
                if fifth < low:
                    fifth += 12
                length = sp.end - sp.start
                nxt = self.chord_at(sp.end) if sp.end < self.n_bars * self.meter else sp.chord
                nxt_root = root(nxt)
                events: list[tuple[float, float, int, float]] = []  # beat offset, dur, pitch, accent
                if style == "whole":
                    events.append((0, length * 0.97, r, 1.0))
                elif style == "pulse8":
                    k = 0.0
                    while k < length - 1e-9:
                        p = r
                        if rng.random() < 0.12:
                            p = r + 12 if r + 12 <= high else r
                        events.append((k, 0.5 * legato, p, 1.0 if k % 1 == 0 else 0.85))
                        k += 0.5
                    if length >= 2 and rng.random() < 0.5:  # approach note into the next chord
                        events[-1] = (events[-1][0], events[-1][1], nxt_root + (1 if rng.random() < 0.5 else -1),
                                      0.85)
                elif style == "root_fifth":
                    k = 0.0
                    alt = False
                    step = 2.0 if self.tempo < 100 or length < 2 else 1.0
                    if self.meter == 3:
                        step = 1.0 if length < 3 else 3.0
                    while k < length - 1e-9:
                        events.append((k, min(step, length - k) * legato, fifth if alt else r, 1.0))
                        alt = not alt
                        k += step
                elif style == "walking":
                    k = 0.0
                    cur = r
                    while k < length - 1e-9:
                        if k == 0:
                            p = r
                        elif k + 1 >= length - 1e-9:  # chromatic approach to the next root
                            p = nxt_root + (1 if rng.random() < 0.5 else -1)
                        else:
                            tones = [root(sp.chord) + i for i in sp.chord.intervals] + [cur + 2, cur - 2]
                            p = int(rng.choice(tones))
                        p = fit_to_range(p, low, high)
                        events.append((k, 0.92, p, 1.0 if k % 2 == 0 else 0.9))
                        cur = p
                        k += 1.0
                elif style == "sync":
                    steps = int(round(length * 4))
                    off = int(round((sp.start - bar * self.meter) * 4))
                    for s in range(steps):
                        ks = (s + off) % len(kick)
                        if kick[ks] != "." or (s == 0):
                            dur = 0.25 * int(rng.integers(1, 4))
                            events.append((s / 4, dur * legato, r, 1.0))
                        elif rng.random() < 0.12:
                            events.append((s / 4, 0.2, r + 12 if r + 12 <= high else fifth, 0.6))
                elif style == "octave":
                    k = 0.0
                    while k < length - 1e-9:
                        events.append((k, 0.4, r, 0.9))
                        events.append((k + 0.5, 0.4, r + 12 if r + 12 <= high else r, 1.0))
                        k += 1.0
                elif style == "reggae":
                    for k, d, which in ((0.0, 0.9, 0), (1.5, 0.4, 1), (2.0, 0.9, 2), (3.0, 0.45, 0)):
                        if k < length:
                            p = (r, fifth, r + sp.chord.intervals[1] if r + sp.chord.intervals[1] <= high else r)[which]
                            events.append((k, d, p, 1.0))
                elif style == "waltz":
                    events.append((0, 0.9, r, 1.0))
                    if length >= 3:
                        events.append((2, 0.9, fifth, 0.8))
                else:
                    raise ValueError(f"unknown bass style {style!r}")
                for k, d, p, acc in events:
                    if k >= length:
                        continue
                    beat = sp.start + k
                    p = fit_to_range(int(p), low, high)
                    notes.append(self.note(beat, min(d, length - k), p, self.velocity(0.85, beat, acc, 6), jitter))
        return notes

    def part_chords(self, bars: list[int], inst: str, style: str, low: int, high: int,
                    role: str = "chords") -> tuple[list[Note], list[tuple]]:
        rng = self.rng
        notes: list[Note] = []
        controls: list[tuple] = []
        center = int(np.clip(rng.integers(55, 68), low + 12, high - 12))
        if inst in ("strings", "synth_pad", "voice") and role == "pad":
            center = int(np.clip(center + int(rng.integers(0, 8)), low + 12, high - 12))
        prev: list[int] | None = None
        level = float(rng.uniform(0.6, 0.85))
        jitter = float(rng.uniform(0.002, 0.01))
        legato = float(rng.uniform(0.5, 0.95))
        # a comping rhythm fixed for the song (onsets in beats within a bar, with accents)
        patterns_44 = (
            ((0, 1.0), (1.5, 0.8), (3, 0.85)), ((0, 1.0), (2, 0.9)), ((0, 1.0), (1, 0.7), (2, 0.9), (3, 0.7)),
            ((0, 1.0), (0.5, 0.6), (1.5, 0.8), (2.5, 0.8), (3.5, 0.6)), ((0, 1.0), (2.5, 0.85)),
        )
        block_pat = patterns_44[int(rng.integers(len(patterns_44)))] if self.meter == 4 else ((0, 1.0),)
        strum_pats = ("D.DU.UDU", "D.D.D.DU", "D..UD.DU", "D.DUDUDU", "D...D.U.", "D.DU.U.U")
        strum = strum_pats[int(rng.integers(len(strum_pats)))]
        strum_ms = float(rng.uniform(0.006, 0.025))
        arp_unit = float(rng.choice([0.5, 0.25])) if self.tempo < 130 else 0.5
        arp_shape = str(rng.choice(["up", "down", "updown", "broken"]))
        jazz_hits = ((0.5, 0.9), (1.5, 0.8), (2.5, 0.85), (3.5, 0.75), (0.0, 0.9), (2.0, 0.8), (3.0, 0.7))
        for bar in bars:
            for sp in self.spans_in_bar(bar):
                ch = sp.chord
                length = sp.end - sp.start
                voicing = self.voice(ch, center, prev, 4 if len(ch.intervals) > 3 else 3)
                voicing = [fit_to_range(p, low, high) for p in voicing]
                prev = voicing
                hits: list[tuple[float, float, list[int], float, float]] = []  # beat, dur, pitches, acc, spread s
                if style == "sustain":
                    hits.append((0, length * 0.99, voicing, 1.0, 0.0))
                    shape = str(rng.choice(["swell", "cresc", "flat"]))
                    controls += self.expression(sp.start, sp.end, shape, int(rng.integers(60, 90)),
                                                int(rng.integers(100, 128)))
                elif style in ("block", "pulse8"):
                    pat = block_pat if style == "block" else tuple((k / 2, 1.0 if k % 2 == 0 else 0.75)
                                                                   for k in range(self.meter * 2))
                    onsets = [(k, a) for k, a in pat if sp.start - bar * self.meter <= k < sp.end - bar * self.meter]
                    if not onsets:
                        onsets = [(sp.start - bar * self.meter, 1.0)]
                    for i, (k, a) in enumerate(onsets):
                        nxt = onsets[i + 1][0] if i + 1 < len(onsets) else sp.end - bar * self.meter
                        hits.append((bar * self.meter + k - sp.start, (nxt - k) * legato, voicing, a, 0.0))
                elif style == "arp":
                    tones = voicing + ([voicing[0] + 12] if rng.random() < 0.5 else [])
                    if arp_shape == "down":
                        tones = tones[::-1]
                    elif arp_shape == "updown":
                        tones = tones + tones[-2:0:-1]
                    elif arp_shape == "broken":
                        tones = [tones[i] for i in (0, 2, 1, 3, 2, 1) if i < len(tones)]
                    k = 0.0
                    i = 0
                    while k < length - 1e-9:
                        hits.append((k, arp_unit * float(rng.uniform(1.0, 2.5)), [tones[i % len(tones)]],
                                     1.0 if k % 1 == 0 else 0.8, 0.0))
                        k += arp_unit
                        i += 1
                elif style in ("strum", "power"):
                    gv = self.guitar_voicing(ch, max(low, 40))
                    if style == "power":
                        gv = [gv[0], gv[0] + 7, gv[0] + 12]
                    for s, c in enumerate(strum):
                        k = s * 0.5
                        if c == "." or not (sp.start <= bar * self.meter + k < sp.end):
                            continue
                        nxt = next((j * 0.5 for j in range(s + 1, len(strum)) if strum[j] != "."), self.meter)
                        dur = (nxt - k) * (0.45 if style == "power" else legato)
                        if c == "D":
                            hits.append((bar * self.meter + k - sp.start, dur, gv, 1.0, strum_ms))
                        else:
                            hits.append((bar * self.meter + k - sp.start, dur, gv[::-1][:4], 0.7, strum_ms * 0.8))
                elif style == "fingerpick":
                    gv = self.guitar_voicing(ch, max(low, 40))
                    bass_notes = [gv[0], gv[min(2, len(gv) - 1)]]
                    k = 0.0
                    i = 0
                    while k < length - 1e-9:
                        if k % 1 == 0:
                            hits.append((k, 0.95, [bass_notes[i % 2]], 1.0, 0.0))
                            i += 1
                        else:
                            hits.append((k, 0.9, [gv[int(rng.integers(2, len(gv)))]], 0.75, 0.0))
                        k += 0.5
                elif style == "ballad":
                    r = fit_to_range(ch.root + 36, max(low, 36), 52)
                    hits.append((0, length * 0.98, [r, r + 12] if rng.random() < 0.5 else [r], 1.0, 0.0))
                    k = 0.0 if rng.random() < 0.5 else 1.0
                    while k < length - 1e-9:
                        hits.append((k, min(2.0, length - k) * 0.95, voicing, 0.8, 0.012))
                        k += 2.0
                elif style == "chop":
                    for s in range(int(round(length * 4))):
                        if (s % 4 in (1, 3) or s % 8 == 6) and rng.random() < 0.55:
                            hits.append((s / 4, 0.12, voicing[-3:], 1.0 if s % 2 else 0.8, 0.004))
                elif style == "offbeat":
                    k = 0.5
                    while k < length - 1e-9:
                        hits.append((k, 0.22, voicing, 1.0, 0.003))
                        k += 1.0
                elif style == "stabs":
                    opts = (0.0, 0.5, 1.5, 2.5, 3.0, 3.5)
                    for k in opts:
                        if k < length and rng.random() < 0.35:
                            hits.append((k, 0.3, voicing, 1.0, 0.0))
                elif style == "jazz":
                    for k, a in jazz_hits:
                        if k < length and rng.random() < 0.3:
                            hits.append((k, float(rng.choice([0.3, 0.5, 1.0])), voicing, a, 0.006))
                    if not hits:
                        hits.append((0, min(1.0, length), voicing, 0.9, 0.006))
                elif style == "bossa":
                    for k, d in ((0.0, 1.2), (1.5, 1.0), (3.0, 0.5)):
                        if k < length:
                            hits.append((k, d, voicing, 1.0 if k == 0 else 0.85, 0.01))
                    r = fit_to_range(ch.root + 36, max(low, 40), 52)
                    for k in (0.0, 2.0):
                        if k < length:
                            hits.append((k, 1.4, [r if k == 0 else r + 7], 0.9, 0.0))
                elif style == "waltz":
                    r = fit_to_range(ch.root + 36, max(low, 36), 52)
                    hits.append((0, 0.95, [r], 1.0, 0.0))
                    for k in (1.0, 2.0):
                        if k < length:
                            hits.append((k, 0.8, voicing, 0.75, 0.004))
                else:
                    raise ValueError(f"unknown comping style {style!r}")
                for k, d, pitches, acc, spread in hits:
                    if k >= length:
                        continue
                    beat = sp.start + k
                    vel = self.velocity(level, beat, acc, 5)
                    for j, p in enumerate(pitches):
                        n = self.note(beat, max(0.05, min(d, length - k + 0.25)), fit_to_range(p, low, high),
                                      max(1, vel - int(rng.integers(0, 8))), jitter)
                        if spread:  # strum / rolled chord: one string after the other
                            n = Note(n.start + j * spread, max(0.03, n.duration - j * spread), n.pitch, n.velocity)
                        notes.append(n)
        return notes, controls

    def part_lead(self, bars: list[int], inst: str, low: int, high: int) -> list[Note]:
        """A melody made of two-bar phrases: a rhythm motif reused with variation, chord tones on strong
        beats, steps and occasional leaps between them, a breath at phrase ends, velocity arcs."""
        rng = self.rng
        (lg_lo, lg_hi), jitter = _LEAD_ARTICULATION.get(inst, ((0.7, 0.95), 0.006))
        legato = float(rng.uniform(lg_lo, lg_hi))
        density = float(rng.uniform(0.3, 0.75))
        unit = 0.25 if (inst in ("synth_lead", "reeds") and rng.random() < 0.4 and self.tempo < 130) else 0.5
        level = float(rng.uniform(0.65, 0.9))
        span = high - low
        center_deg = self._degree_of(int(low + span * float(rng.uniform(0.35, 0.6))))
        phrase_beats = 2 * self.meter
        motifs: dict[str, list[tuple[float, float]]] = {}
        notes: list[Note] = []
        deg = center_deg
        breath = inst in ("voice", "reeds", "brass")
        bar_set = set(bars)
        for bar in bars:
            if (bar % 2) == 1 and (bar - 1) in bar_set:
                continue  # handled with its phrase start
            sec = self.section_at(bar)
            key = f"{sec}:{(bar // 2) % 2}"
            if key not in motifs or rng.random() < 0.25:
                motifs[key] = self._rhythm_motif(phrase_beats, unit, density * (1.2 if sec == "chorus" else 1.0),
                                                 breath)
            motif = motifs[key]
            lift = 2 if sec == "chorus" else (-1 if sec in ("intro", "outro") else 0)
            two = (bar + 1) in bar_set
            for i, (k, d) in enumerate(motif):
                if not two and k >= self.meter:
                    break
                beat = bar * self.meter + k
                chord = self.chord_at(beat)
                strong = (k % 1 == 0) and (k % 2 == 0 or self.meter == 3)
                if i == 0 or strong:
                    deg = self._nearest_chord_degree(deg, chord, center_deg + lift)
                else:
                    r = rng.random()
                    step = 1 if r < 0.6 else (2 if r < 0.85 else int(rng.integers(3, 6)))
                    direction = 1 if rng.random() < 0.5 + 0.08 * ((center_deg + lift) - deg) else -1
                    deg += direction * step
                p = self._pitch_of(deg)
                if p < low or p > high:
                    deg = self._degree_of(fit_to_range(p, low, high))
                    p = self._pitch_of(deg)
                arc = math.sin(math.pi * (k + 0.5) / phrase_beats)
                vel = self.velocity(level * (0.85 + 0.2 * arc), beat, 1.05 if strong else 0.92, 4)
                notes.append(self.note(beat, d * legato, p, vel, jitter))
        return notes

    def _rhythm_motif(self, beats: int, unit: float, density: float, breath: bool) -> list[tuple[float, float]]:
        rng = self.rng
        slots = int(round(beats / unit))
        end = slots - (int(round(1.0 / unit)) if breath else 0)
        onsets = [0] + [s for s in range(1, end) if rng.random() < density * (1.3 if (s * unit) % 1 == 0 else 0.8)]
        out = []
        for i, s in enumerate(onsets):
            nxt = onsets[i + 1] if i + 1 < len(onsets) else (end if breath else slots)
            out.append((s * unit, max(unit, (nxt - s) * unit)))
        return out

    def _pitch_of(self, deg: int) -> int:
        return 12 + self.tonic + self.scale[deg % 7] + 12 * (deg // 7)

    def _degree_of(self, pitch: int) -> int:
        rel = pitch - 12 - self.tonic
        octave, pc = divmod(rel, 12)
        best = min(range(7), key=lambda d: abs(self.scale[d] - pc))
        return octave * 7 + best

    def _nearest_chord_degree(self, deg: int, chord: _Chord, center: int) -> int:
        pcs = set(chord.pcs())
        cands = [d for d in range(deg - 4, deg + 5) if (self.tonic + self.scale[d % 7]) % 12 in pcs]
        if not cands:
            return deg
        return min(cands, key=lambda d: abs(d - deg) + 0.15 * abs(d - center) + 0.01 * self.rng.random())

    def part_counter(self, bars: list[int], low: int, high: int) -> list[Note]:
        """A slow counter-line: one chord tone per chord, long notes, smooth motion."""
        rng = self.rng
        notes = []
        cur = int(low + (high - low) * 0.55)
        level = float(rng.uniform(0.55, 0.75))
        for bar in bars:
            for sp in self.spans_in_bar(bar):
                cands = [fit_to_range(cur - 7 + ((pc - cur + 7) % 12), low, high) for pc in sp.chord.pcs()]
                cur = min(cands, key=lambda p: abs(p - cur) + 0.1 * rng.random())
                notes.append(self.note(sp.start, (sp.end - sp.start) * 0.97, cur,
                                       self.velocity(level, sp.start, 1.0, 4), 0.01))
        return notes

    # ---- the song ---------------------------------------------------------------------------------------
    def compose(self, song_id: str, source: dict) -> Song:
        rng = self.rng
        lineup = self.lineup()
        act = self.activity(lineup)
        tracks: dict[str, Track] = {}
        for inst, (role, art) in lineup.items():
            program = self.program(inst)
            low, high = program_range(inst, program)
            bars = self.bars_active(act[inst])
            controls: list[tuple] = []
            if role == "drums":
                notes = self.part_drums(bars, program)
            elif role == "bass":
                notes = self.part_bass(bars, art, low, high)
            elif role in ("chords", "pad"):
                notes, controls = self.part_chords(bars, inst, art, low, high, role)
            elif role == "stabs":
                notes, controls = self.part_chords(bars, inst, "stabs", low, high, role)
            elif role == "counter":
                notes = self.part_counter(bars, low, high)
            elif role == "lead":
                notes = self.part_lead(bars, inst, low, high)
            else:  # pragma: no cover - lineup only makes the roles above
                raise ValueError(role)
            if role in ("lead", "counter") and inst in ("strings", "voice", "brass", "reeds", "synth_lead"):
                # sustained monophonic lines breathe: a swell per two bars
                for b in bars[::2]:
                    controls += self.expression(b * self.meter, (b + 2) * self.meter, "swell",
                                                int(rng.integers(80, 100)), 127)
            track = Track(inst, program, role, notes, controls, art).sanitized()
            # notes that start after the music ends (humanize jitter) are dropped
            track.notes = [n for n in track.notes if n.start < self.n_bars * self.bar_s]
            if track.notes:
                tracks[inst] = track
        sections = [sec for sec, _, _ in self.form]
        return Song(
            song_id=song_id, tempo=self.tempo, key=KEY_NAMES[self.tonic], mode=self.mode, meter=self.meter,
            style=self.style_name, duration=self.n_bars * self.bar_s, sections=sections, tracks=tracks,
            source=source,
        )


def _as_rng(seed: int | Sequence[int] | np.random.SeedSequence | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (int, np.integer)):
        return np.random.default_rng(int(seed))
    return np.random.default_rng(np.random.SeedSequence([int(s) for s in seed]))


def generate_song(
    seed: int | Sequence[int] | np.random.SeedSequence | np.random.Generator,
    seconds: float = 30.0,
    song_id: str | None = None,
    instruments: Iterable[str] | None = None,
    required: Iterable[str] = (),
    style: str | None = None,
) -> Song:
    """Compose one song.

    Args:
        seed: an int, a sequence of ints (e.g. ``(dataset_seed, song_index)``), a SeedSequence or a Generator.
            The same seed gives the same song (same numpy version).
        seconds: target length in seconds; the song is a whole number of bars, so its `duration` is within half
            a bar of it (and at least one bar).
        song_id: name of the song (default ``"song-<seed>"``).
        instruments: the instruments the song may use (default: the in-domain ones, i.e. all but
            `HELD_OUT_INSTRUMENTS`).
        required: instruments the song must contain (used to build the out-of-domain split).
        style: force a groove family (a key of `STYLES`); default: drawn from the seed.

    Returns:
        a `Song` whose tracks are sanitized (sorted, no overlapping same-pitch notes) and non-empty.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    allowed = list(instruments) if instruments is not None else list(IN_DOMAIN_INSTRUMENTS)
    req = list(required)
    for name in allowed + req:
        get_instrument(name)
    for name in req:
        if name not in allowed:
            allowed.append(name)
    rng = _as_rng(seed)
    if song_id is None:
        song_id = f"song-{seed}" if isinstance(seed, (int, np.integer)) else "song"
    seed_repr = (int(seed) if isinstance(seed, (int, np.integer))
                 else [int(s) for s in seed] if isinstance(seed, (list, tuple)) else None)
    source = {"kind": "generated", "generator": "fxlens.data.songs", "generator_version": GENERATOR_VERSION,
              "seed": seed_repr}
    return _Composer(rng, float(seconds), style, allowed, req).compose(song_id, source)

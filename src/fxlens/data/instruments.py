"""The one instrument taxonomy of fxlens.

Every module that names an instrument (the song generator, the renderer, the stem readers, the text queries
"this is the sound of {instrument}") imports it from here, so a stem called ``bass.flac`` on disk, the ``bass``
query and the ``bass`` track of a generated song are the same thing.

==================  =========================================  ===========  =====================================
name                GM programs that render it (0-based)       MIDI range   description
==================  =========================================  ===========  =====================================
drums               drum kits 0 Standard, 8 Room, 16 Power,     35-81        acoustic or electronic drum kit
                    24 Electronic, 25 TR-808, 32 Jazz,
                    40 Brush (bank 128), AVL acoustic kits
bass                32-39 (acoustic, fingered, picked,          28-67        bass guitar, double bass, synth bass
                    fretless, slap 1/2, synth bass 1/2)
piano               0-4, 6, 7 (grand, bright, electric grand,   21-108       acoustic, electric piano, harpsichord,
                    honky-tonk, Rhodes, harpsichord, clavinet)               clavinet
electric_guitar     26, 27, 28 (jazz, clean, muted)             40-88        clean electric guitar
acoustic_guitar     24, 25 (nylon, steel)                       40-84        nylon or steel string guitar
organ               16-20 (drawbar, percussive, rock, church,   36-96        electric, church or reed organ
                    reed)
strings             40-45, 48, 49 (violin, viola, cello,        28-103       bowed or plucked orchestral strings
                    contrabass, tremolo, pizzicato, ensembles)
brass               56-61 (trumpet, trombone, tuba, muted       28-84        trumpet, trombone, tuba, horn, section
                    trumpet, French horn, brass section)
reeds               64-71, 21, 22 (saxophones, oboe, English    36-91        saxophone, double reeds, clarinet,
                    horn, bassoon, clarinet, accordion,                      accordion, harmonica
                    harmonica)
synth_lead          80-83, 86, 87 (square, saw, calliope,       36-96        monophonic synthesizer lead
                    chiff, fifths, bass+lead)
synth_pad           88-90, 92-95, 50, 51 (new age, warm,        36-96        sustained synthesizer pad
                    polysynth, bowed, metallic, halo, sweep,
                    synth strings)
voice               52, 53, 54, 85 (choir aahs, voice oohs,     40-84        sung vowels (solo line or choir)
                    synth voice, voice lead)
==================  =========================================  ===========  =====================================

GM programs whose timbre *is* an effect are left out on purpose, because fxlens must not learn "no effect" from
a sound that has one baked in: overdriven and distortion guitar (29, 30), lead 5 "charang" (84, distorted),
electric piano 2 (5, a chorused preset), synth brass (62, 63, heavy detune chorus), and the sound effects
(96-103, 120-127: echo drops, atmosphere, ...).

Held-out instruments: ``organ`` and ``reeds`` never occur in the train/val/test splits; they only occur in the
``ood`` split (together with the held-out TimGM6mb soundfont, see `fxlens.data.render`). Each has a close
relative in training (organ ~ synth_pad/piano, reeds ~ brass/voice), so the out-of-domain test asks whether a
model generalizes to an unseen-but-plausible timbre rather than to something alien.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Instrument",
    "INSTRUMENTS",
    "INSTRUMENT_NAMES",
    "HELD_OUT_INSTRUMENTS",
    "IN_DOMAIN_INSTRUMENTS",
    "GM_PROGRAM_NAMES",
    "GM_DRUM_KITS",
    "program_range",
    "instrument_of_program",
    "get_instrument",
]


@dataclass(frozen=True)
class Instrument:
    """One instrument class.

    Attributes:
        name: snake_case identifier, also the stem file name (``<name>.flac``).
        programs: 0-based General MIDI programs that render it (for ``drums``: GM drum-kit numbers in bank 128).
        low, high: playable MIDI note range (inclusive) over all its programs.
        description: one plain-English sentence, used for text queries and reports.
        is_drum: True for the percussion kit (rendered on MIDI channel 10 with a kit preset).
    """

    name: str
    programs: tuple[int, ...]
    low: int
    high: int
    description: str
    is_drum: bool = False

    @property
    def query(self) -> str:
        """The text query for this instrument ("this is the sound of electric guitar")."""
        return f"this is the sound of {self.name.replace('_', ' ')}"


GM_DRUM_KITS: dict[int, str] = {
    0: "Standard",
    8: "Room",
    16: "Power",
    24: "Electronic",
    25: "TR-808",
    32: "Jazz",
    40: "Brush",
}
"""GM/GS drum kits (bank 128 program numbers) present in FluidR3_GM, MuseScore_General and TimGM6mb."""

_TABLE: tuple[Instrument, ...] = (
    Instrument("drums", tuple(GM_DRUM_KITS), 35, 81,
               "a drum kit: kick, snare, hi-hat, toms and cymbals", is_drum=True),
    Instrument("bass", (32, 33, 34, 35, 36, 37, 38, 39), 28, 67,
               "a bass line on electric bass, double bass or synth bass"),
    Instrument("piano", (0, 1, 2, 3, 4, 6, 7), 21, 108,
               "a keyboard: acoustic or electric piano, harpsichord or clavinet"),
    Instrument("electric_guitar", (26, 27, 28), 40, 88,
               "a clean electric guitar, strummed, picked or muted"),
    Instrument("acoustic_guitar", (24, 25), 40, 84,
               "a nylon or steel string acoustic guitar, strummed or fingerpicked"),
    Instrument("organ", (16, 17, 18, 19, 20), 36, 96,
               "an electric, church or reed organ holding chords"),
    Instrument("strings", (40, 41, 42, 43, 44, 45, 48, 49), 28, 103,
               "bowed or plucked orchestral strings: violin, viola, cello, ensemble"),
    Instrument("brass", (56, 57, 58, 59, 60, 61), 28, 84,
               "brass: trumpet, trombone, tuba, French horn or a brass section"),
    Instrument("reeds", (64, 65, 66, 67, 68, 69, 70, 71, 21, 22), 36, 91,
               "a reed instrument: saxophone, oboe, clarinet, bassoon, accordion or harmonica"),
    Instrument("synth_lead", (80, 81, 82, 83, 86, 87), 36, 96,
               "a monophonic synthesizer lead line"),
    Instrument("synth_pad", (88, 89, 90, 92, 93, 94, 95, 50, 51), 36, 96,
               "a sustained synthesizer pad or synth strings"),
    Instrument("voice", (52, 53, 54, 85), 40, 84,
               "a singing voice or choir on sustained vowels"),
)

INSTRUMENTS: dict[str, Instrument] = {inst.name: inst for inst in _TABLE}
"""All instruments by name, in a fixed order (the order of the table above)."""

INSTRUMENT_NAMES: tuple[str, ...] = tuple(INSTRUMENTS)

HELD_OUT_INSTRUMENTS: tuple[str, ...] = ("organ", "reeds")
"""Instruments that only the out-of-domain split contains."""

IN_DOMAIN_INSTRUMENTS: tuple[str, ...] = tuple(n for n in INSTRUMENT_NAMES if n not in HELD_OUT_INSTRUMENTS)

GM_PROGRAM_NAMES: tuple[str, ...] = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer",
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
    "Tango Accordion",
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
    "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics",
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1",
    "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp",
    "Timpani",
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs",
    "Synth Voice", "Orchestra Hit",
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1",
    "Synth Brass 2",
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet",
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)", "Lead 5 (charang)",
    "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)",
    "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
    "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum",
    "Reverse Cymbal",
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause",
    "Gunshot",
)
"""General MIDI level 1 program names, index = 0-based program number."""

# Comfortable ranges of the individual programs: a part is moved by octaves into its program's range so that a
# cello line never lands on a violin preset two octaves below its lowest sample. Programs not listed use the
# range of their instrument.
_PROGRAM_RANGES: dict[int, tuple[int, int]] = {
    0: (21, 108), 1: (21, 108), 2: (28, 103), 3: (28, 103), 4: (28, 103), 6: (29, 89), 7: (36, 96),
    16: (36, 96), 17: (36, 96), 18: (36, 96), 19: (24, 96), 20: (36, 89),
    21: (41, 89), 22: (60, 84),
    24: (40, 83), 25: (40, 83), 26: (40, 86), 27: (40, 88), 28: (40, 84),
    32: (28, 60), 33: (28, 67), 34: (28, 67), 35: (28, 67), 36: (28, 67), 37: (28, 67), 38: (24, 67),
    39: (24, 67),
    40: (55, 100), 41: (48, 88), 42: (36, 76), 43: (28, 60), 44: (36, 96), 45: (36, 96), 48: (28, 103),
    49: (28, 103), 50: (36, 96), 51: (36, 96),
    52: (43, 81), 53: (43, 81), 54: (43, 84), 85: (48, 84),
    56: (54, 84), 57: (40, 72), 58: (28, 58), 59: (54, 82), 60: (41, 77), 61: (40, 82),
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 69), 68: (58, 91), 69: (52, 81), 70: (34, 75),
    71: (50, 91),
    80: (36, 96), 81: (36, 96), 82: (48, 96), 83: (48, 96), 86: (36, 84), 87: (36, 84),
}


def get_instrument(name: str) -> Instrument:
    """The `Instrument` called `name`; raises KeyError listing the valid names."""
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise KeyError(f"unknown instrument {name!r}; known: {', '.join(INSTRUMENT_NAMES)}") from None


def program_range(instrument: str, program: int) -> tuple[int, int]:
    """Playable MIDI range (low, high), inclusive, of `program` as used for `instrument`."""
    inst = get_instrument(instrument)
    if inst.is_drum:
        return inst.low, inst.high
    return _PROGRAM_RANGES.get(program, (inst.low, inst.high))


def instrument_of_program(program: int, is_drum: bool = False) -> str | None:
    """The instrument that GM `program` belongs to in this taxonomy, or None if fxlens does not use it."""
    if is_drum:
        return "drums"
    for inst in _TABLE:
        if not inst.is_drum and program in inst.programs:
            return inst.name
    return None

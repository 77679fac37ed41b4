"""Data: the instrument taxonomy, song generation, dry multitrack rendering, stem datasets, Fx normalization.

- `fxlens.data.instruments`: the one instrument taxonomy (`INSTRUMENTS`, `HELD_OUT_INSTRUMENTS`).
- `fxlens.data.songs`: seeded procedural songs (`generate_song`) -> `Song` (per-instrument note lists).
- `fxlens.data.corpus`: arrangements of the music21 corpus (`corpus_song`), same `Song` object.
- `fxlens.data.render`: fluidsynth rendering to dry stems (`render_dataset`, `render_demo_clip`).
- `fxlens.data.stems`: readers of rendered and third-party stem datasets (`open_dataset`).
- `fxlens.data.fxnorm`: Fx normalization of wet stems (`compute_stats`, `normalize_stem`).
- `fxlens.data.real`: the real recordings installed with apt (`list_real_recordings`).
- `fxlens.data.paths`: `default_data_dir()` = ``$FXLENS_DATA`` or ``~/.cache/fxlens``.

fluidsynth and music21 are imported only when something is rendered or arranged.
"""

from fxlens.data.instruments import (
    HELD_OUT_INSTRUMENTS,
    IN_DOMAIN_INSTRUMENTS,
    INSTRUMENT_NAMES,
    INSTRUMENTS,
    Instrument,
)
from fxlens.data.paths import default_data_dir
from fxlens.data.render import render_dataset, render_demo_clip
from fxlens.data.songs import Note, Song, Track, generate_song
from fxlens.data.stems import SongRef, StemDataset, open_dataset
from fxlens.data.fxnorm import FxNormStats, compute_stats, normalize_stem
from fxlens.data.real import RealRecording, list_real_recordings

__all__ = [
    "Instrument",
    "INSTRUMENTS",
    "INSTRUMENT_NAMES",
    "HELD_OUT_INSTRUMENTS",
    "IN_DOMAIN_INSTRUMENTS",
    "default_data_dir",
    "Note",
    "Track",
    "Song",
    "generate_song",
    "render_dataset",
    "render_demo_clip",
    "SongRef",
    "StemDataset",
    "open_dataset",
    "FxNormStats",
    "compute_stats",
    "normalize_stem",
    "RealRecording",
    "list_real_recordings",
]

"""Stem dataset readers: one interface, song -> {instrument: audio}, over five folder layouts.

Layouts (``open_dataset(path, layout=...)``; ``"auto"`` detects them in this order):

- ``"fxlens"``: what ``fxlens data render`` writes: ``<data-dir>/<dataset>/<split>/<song_id>/<instrument>.flac`` plus
  ``song.json``. ``path`` may be the dataset folder (all splits, or ``split=``) or one split folder.
- ``"musdb"``: MUSDB18-HQ, ``<root>/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav`` (or one split folder).
  ``vocals`` -> ``voice``; ``drums`` and ``bass`` keep their names; ``other`` (everything else: guitars, keys,
  strings, ... mixed together) matches no single instrument of the taxonomy and is returned under the key
  ``"other"`` (`OTHER`), or dropped with ``include_other=False``. ``mixture.wav`` is the song's mixture.
- ``"moisesdb"``: MoisesDB, ``<root>[/moisesdb_v0.1]/<song_uuid>/data.json`` and one folder per stem
  (``vocals/``, ``guitar/``, ``other_keys/``, ...) holding one file per recorded track; the files of one
  instrument are summed. Each track's ``trackType`` in data.json refines the stem into the taxonomy (see
  `moisesdb_instrument`): e.g. the ``guitar`` stem splits into ``acoustic_guitar`` and ``electric_guitar``,
  ``other_keys`` into ``organ`` / ``synth_lead`` / ``synth_pad``, ``wind`` into ``brass`` / ``reeds``.
- ``"folder"``: a plain folder of stems per song (``<root>/<song>/*.wav|flac|ogg|...``) with a mapping file,
  ``mapping.json`` or ``mapping.csv`` (also ``stems.json`` / ``stems.csv``), at the root (all songs) and/or in a
  song folder (that song; overrides the root's entries). See `read_mapping` for the format. Without any mapping
  file, files named after an instrument or a common alias (``vocals.wav``, ``Guitar 2.flac``, ``kick.wav`` is
  *not* one) are recognised. Files mapped to the same instrument are summed.
- ``"tracks"``: full mixes without stems (a music library, game soundtracks): ``<root>/tracks.json`` plus audio
  files anywhere below ``<root>``. Each file is one song with a single stem, ``"mix"`` (`FULL_MIX`); a file's
  split is a top-level ``train``/``val``/``test`` folder when it sits in one, else a stable hash of its path
  below the root (80 / 10 / 10 %). ``fxlens data music`` writes such a folder. Detected by ``tracks.json`` only.

Every loader returns float32 audio of shape (1, 2, T) at the requested sample rate (44.1 kHz by default), through
`fxlens.audio.load`, which reads only the frames asked for. The stems of one song are zero-padded to a common
length (files of a multitrack can differ by a few samples).

`StemDataset.sample_segment` draws a random, non-silent segment of a stem, reproducibly under a seed, reading
only that segment's frames.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import random
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fxlens import audio as fxaudio
from fxlens.data.instruments import INSTRUMENT_NAMES
from fxlens.errors import FxlensError, InvalidAudioError

__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "OTHER",
    "MUSDB_STEMS",
    "SongRef",
    "Segment",
    "StemDataset",
    "FxlensStems",
    "MusdbStems",
    "MoisesdbStems",
    "FolderStems",
    "TrackStems",
    "FULL_MIX",
    "open_dataset",
    "detect_layout",
    "taxonomy",
    "instrument_from_name",
    "moisesdb_instrument",
    "read_mapping",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
LAYOUTS = ("fxlens", "musdb", "moisesdb", "folder", "tracks")

#: Key of a stem that mixes several instruments and so matches none of the taxonomy (MUSDB's and MoisesDB's
#: "other"). Kept by default so that the stems still sum to the mixture; readers can drop it.
OTHER = "other"

#: Key of the only stem of a `TrackStems` song: the whole mix of a recording that has no stems. Not an instrument:
#: the encoder's trainer gives such batches the mixture objective only.
FULL_MIX = "mix"
TRACKS_FILE = "tracks.json"  # marks a "tracks" dataset folder (and says where its files came from)

#: MUSDB18 stem file name -> fxlens key.
MUSDB_STEMS = {"drums": "drums", "bass": "bass", "vocals": "voice", "other": OTHER}

_MIX_NAMES = ("mixture", "mix")
_MAPPING_FILES = ("mapping.json", "mapping.csv", "stems.json", "stems.csv")
_SPLIT_NAMES = ("train", "valid", "validation", "val", "test", "eval", "dev", "ood")


def taxonomy() -> tuple[str, ...]:
    """The instrument names of fxlens (drums, bass, piano, ..., voice): `fxlens.data.instruments.INSTRUMENT_NAMES`."""
    return INSTRUMENT_NAMES


# Common stem-file names -> instrument (checked after the exact taxonomy names). Names are normalized first:
# lower case, separators to "_", a trailing number dropped ("Guitar 2" -> "guitar").
_ALIASES = {
    "vocals": "voice", "vocal": "voice", "vox": "voice", "voice": "voice", "voices": "voice", "singer": "voice",
    "lead_vocals": "voice", "lead_vocal": "voice", "backing_vocals": "voice", "bvs": "voice", "choir": "voice",
    "drum": "drums", "drums": "drums", "drumkit": "drums", "drum_kit": "drums", "kit": "drums",
    "percussion": "drums", "perc": "drums", "drum_machine": "drums",
    "bass": "bass", "bass_guitar": "bass", "bassguitar": "bass", "synth_bass": "bass", "double_bass": "bass",
    "piano": "piano", "grand_piano": "piano", "electric_piano": "piano", "epiano": "piano", "rhodes": "piano",
    "keys": "piano",
    "guitar": "electric_guitar", "guitars": "electric_guitar", "gtr": "electric_guitar",
    "electric_guitar": "electric_guitar", "eguitar": "electric_guitar", "lead_guitar": "electric_guitar",
    "rhythm_guitar": "electric_guitar", "distorted_guitar": "electric_guitar", "clean_guitar": "electric_guitar",
    "acoustic_guitar": "acoustic_guitar", "acoustic": "acoustic_guitar", "aguitar": "acoustic_guitar",
    "organ": "organ", "hammond": "organ",
    "strings": "strings", "string_section": "strings", "violin": "strings", "violins": "strings",
    "viola": "strings", "cello": "strings",
    "brass": "brass", "trumpet": "brass", "trombone": "brass", "horn": "brass", "horns": "brass",
    "french_horn": "brass", "tuba": "brass",
    "reeds": "reeds", "sax": "reeds", "saxophone": "reeds", "clarinet": "reeds", "oboe": "reeds",
    "bassoon": "reeds", "flute": "reeds", "woodwind": "reeds", "woodwinds": "reeds",
    "synth_lead": "synth_lead", "lead_synth": "synth_lead", "lead": "synth_lead", "synth": "synth_lead",
    "synth_pad": "synth_pad", "pad": "synth_pad", "pads": "synth_pad",
    "other": OTHER,
}


def _normalize_name(name: str) -> str:
    s = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return re.sub(r"_?\d+$", "", s).strip("_")


def instrument_from_name(name: str) -> str | None:
    """The instrument a stem file name (without extension) stands for, or None.

    Exact taxonomy names first ("electric_guitar"), then common aliases ("vocals" -> voice, "Guitar 2" ->
    electric_guitar, "sax" -> reeds, "other" -> `OTHER`). Only whole names match: "bass_drum" is not bass.
    """
    n = _normalize_name(name)
    if n in taxonomy():
        return n
    return _ALIASES.get(n)


# MoisesDB: stem folder -> instrument when the track type says nothing more specific.
_MOISES_STEMS = {
    "vocals": "voice",
    "bass": "bass",
    "drums": "drums",
    "percussion": "drums",  # shakers, congas, mallets: no percussion class in the taxonomy; drums is the nearest
    "guitar": "electric_guitar",
    "other_plucked": "acoustic_guitar",  # banjo, mandolin, ukulele, harp: plucked strings
    "piano": "piano",
    "other_keys": "synth_pad",
    "bowed_strings": "strings",
    "wind": "brass",
    "other": OTHER,
}

# (stem, keyword in the normalized track type) -> instrument; first match wins.
_MOISES_TRACK_RULES = (
    ("guitar", "acoustic", "acoustic_guitar"),
    ("other_plucked", "harp", "strings"),
    ("other_keys", "organ", "organ"),
    ("other_keys", "lead", "synth_lead"),
    ("other_keys", "pad", "synth_pad"),
    ("wind", "reed", "reeds"),
    ("wind", "flute", "reeds"),
    ("wind", "sax", "reeds"),
    ("wind", "clarinet", "reeds"),
    ("wind", "brass", "brass"),
)


def moisesdb_instrument(stem: str, track_type: str | None = None) -> str:
    """Instrument of a MoisesDB track from its stem folder name and (optional) data.json ``trackType``.

    Stems: vocals -> voice, bass -> bass, drums and percussion -> drums, guitar -> electric_guitar (acoustic
    guitar tracks -> acoustic_guitar), other_plucked -> acoustic_guitar (harp -> strings), piano -> piano,
    other_keys -> synth_pad (organ -> organ, synth lead -> synth_lead), bowed_strings -> strings, wind -> brass
    (reeds, flutes -> reeds), other (effects, click) and unknown stems -> `OTHER`.
    """
    s = _normalize_name(stem)
    t = _normalize_name(track_type or "")
    for rule_stem, keyword, instrument in _MOISES_TRACK_RULES:
        if s == rule_stem and keyword in t:
            return instrument
    return _MOISES_STEMS.get(s, OTHER)


# ------------------------------------------------------------------------------------------------------------------
# Songs and segments
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SongRef:
    """One song of a dataset: where it is and which files make each stem. Cheap to build, holds no audio.

    ``stems`` maps an instrument (or `OTHER`) to the files summed into that stem; ``mixture`` is the song's mixture
    file when the dataset has one (else the mixture is the sum of the stems). ``meta`` holds what the layout's
    metadata file says (song.json, data.json), untouched.
    """

    song_id: str
    path: Path
    layout: str
    split: str | None = None
    stems: Mapping[str, tuple[Path, ...]] = field(default_factory=dict, compare=False, hash=False)
    mixture: Path | None = field(default=None, compare=False, hash=False)
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def instruments(self) -> list[str]:
        """The stems of this song, sorted."""
        return sorted(self.stems)


class Segment(NamedTuple):
    """A segment drawn by `StemDataset.sample_segment`: audio (1, 2, N) and where it starts in the stem."""

    audio: torch.Tensor
    offset_s: float
    song: SongRef
    instrument: str


def _as_rng(rng: Any) -> Any:
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


def _uniform(rng: Any) -> float:
    """A float in [0, 1) from a numpy Generator, a random.Random or a torch.Generator."""
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    if isinstance(rng, random.Random):
        return rng.random()
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng, dtype=torch.float64))
    raise TypeError(f"rng must be an int seed, numpy Generator, random.Random or torch.Generator, got {type(rng)}")


@lru_cache(maxsize=65536)
def _file_info(path: str, mtime_ns: int) -> fxaudio.AudioInfo:
    return fxaudio.info(path)


def _info(path: Path) -> fxaudio.AudioInfo:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0  # let fxaudio.info raise its own error
    return _file_info(str(path), mtime)


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad or cut (..., T) to n samples."""
    T = x.shape[-1]
    if T == n:
        return x
    if T > n:
        return x[..., :n]
    return F.pad(x, (0, n - T))


def _sum_padded(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    n = max(p.shape[-1] for p in parts)
    out = _fit(parts[0], n).clone()
    for p in parts[1:]:
        out += _fit(p, n)
    return out


def _db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 0 else -math.inf


# ------------------------------------------------------------------------------------------------------------------
# The common interface
# ------------------------------------------------------------------------------------------------------------------


class StemDataset:
    """A folder of multitrack songs read as {instrument: audio}. Subclasses only implement `_scan`.

    Args:
        root: the dataset folder.
        split: keep only the songs of this split (layouts with splits); None keeps every song.
    """

    layout: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike, split: str | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FxlensError(f"dataset folder not found: '{self.root}'")
        self.split = split
        self._songs: list[SongRef] | None = None

    # --- what subclasses provide ----------------------------------------------------------------------------------
    def _scan(self) -> list[SongRef]:
        raise NotImplementedError

    # --- listing ----------------------------------------------------------------------------------------------------
    def songs(self) -> list[SongRef]:
        """Every song (of the chosen split), sorted by split then song id. Scanned once, then cached."""
        if self._songs is None:
            found = [s for s in self._scan() if s.stems]
            if self.split is not None:
                found = [s for s in found if s.split == self.split]
            self._songs = sorted(found, key=lambda s: (s.split or "", s.song_id))
        return list(self._songs)

    def __len__(self) -> int:
        return len(self.songs())

    def __iter__(self) -> Iterator[SongRef]:
        return iter(self.songs())

    def __getitem__(self, key: int | str) -> SongRef:
        songs = self.songs()
        if isinstance(key, int):
            return songs[key]
        for s in songs:
            if s.song_id == key:
                return s
        raise FxlensError(f"no song '{key}' in {self.layout} dataset '{self.root}'")

    def splits(self) -> list[str]:
        """The splits present (empty for layouts without splits)."""
        return sorted({s.split for s in self.songs() if s.split is not None})

    def instruments(self) -> list[str]:
        """Every stem name present in at least one song, sorted."""
        return sorted({i for s in self.songs() for i in s.stems})

    def songs_with(self, instrument: str) -> list[SongRef]:
        """The songs that have a stem for `instrument`."""
        return [s for s in self.songs() if instrument in s.stems]

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return f"{type(self).__name__}('{self.root}'{split})"

    # --- loading ----------------------------------------------------------------------------------------------------
    def _files(self, ref: SongRef, instrument: str) -> tuple[Path, ...]:
        try:
            return ref.stems[instrument]
        except KeyError:
            have = ", ".join(ref.instruments) or "none"
            raise FxlensError(f"song '{ref.song_id}' has no '{instrument}' stem (it has: {have})") from None

    def stem_duration(self, ref: SongRef, instrument: str) -> float:
        """Length of a stem in seconds: the longest of its files (shorter files are zero-padded)."""
        return max(_info(p).duration_s for p in self._files(ref, instrument))

    def load_stem(
        self,
        ref: SongRef,
        instrument: str,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        offset_s: float = 0.0,
        duration_s: float | None = None,
    ) -> torch.Tensor:
        """One stem as float32 (1, 2, T) at `sample_rate` Hz: its files summed, `duration_s` seconds from `offset_s`.

        With `duration_s` given, exactly round(duration_s * sample_rate) samples come back (zero-padded past the end
        of the files). Only the frames asked for are read.
        """
        files = self._files(ref, instrument)
        parts = []
        for p in files:
            if offset_s > 0 and offset_s >= _info(p).duration_s:
                continue  # this file ended before the segment starts: it contributes silence
            parts.append(fxaudio.load(p, sample_rate=sample_rate, stereo=True, offset_s=offset_s,
                                      duration_s=duration_s))
        if duration_s is not None:
            n = max(int(round(duration_s * sample_rate)), 1)
            if not parts:
                return torch.zeros(1, 2, n)
            return _fit(_sum_padded(parts), n)
        if not parts:
            raise FxlensError(f"offset {offset_s:.3f} s is past the end of stem '{instrument}' of '{ref.song_id}'")
        return _sum_padded(parts)

    def load_song(
        self,
        ref: SongRef | str | int,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        instruments: Sequence[str] | None = None,
        offset_s: float = 0.0,
        duration_s: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every stem of a song (or those in `instruments`) as {name: float32 (1, 2, T)}, all of one length T."""
        ref = ref if isinstance(ref, SongRef) else self[ref]
        names = ref.instruments if instruments is None else list(instruments)
        stems = {n: self.load_stem(ref, n, sample_rate, offset_s, duration_s) for n in names}
        if stems:
            n = max(x.shape[-1] for x in stems.values())
            stems = {k: _fit(v, n) for k, v in stems.items()}
        return stems

    def load_mixture(
        self,
        ref: SongRef | str | int,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        offset_s: float = 0.0,
        duration_s: float | None = None,
    ) -> torch.Tensor:
        """The song's mixture (1, 2, T): its mixture file when it has one, else the sum of all its stems."""
        ref = ref if isinstance(ref, SongRef) else self[ref]
        if ref.mixture is not None:
            x = fxaudio.load(ref.mixture, sample_rate=sample_rate, offset_s=offset_s, duration_s=duration_s)
            return x if duration_s is None else _fit(x, max(int(round(duration_s * sample_rate)), 1))
        return _sum_padded(list(self.load_song(ref, sample_rate, None, offset_s, duration_s).values()))

    # --- random segments ----------------------------------------------------------------------------------------
    def sample_segment(
        self,
        ref: SongRef | str | int,
        instrument: str,
        seconds: float,
        rng: Any = None,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        threshold_db: float = -45.0,
        min_active: float = 0.5,
        max_tries: int = 20,
    ) -> Segment:
        """A random `seconds`-long segment of a stem that is not silent, reading only that segment's frames.

        A start is drawn uniformly (on the sample grid of the stem's first file) and the segment kept when its RMS
        is at least `threshold_db` dBFS *and* at least a fraction `min_active` of its 50 ms frames are above
        `threshold_db` (so a segment that is one loud note and silence is skipped). Otherwise another start is
        drawn, up to `max_tries` times. Stems shorter than `seconds` are read whole and zero-padded at the end.

        `rng`: an int seed, a numpy Generator, a random.Random or a torch.Generator; the same seed gives the same
        segment. Raises `InvalidAudioError` when no draw passes (a silent or nearly silent stem).
        """
        ref = ref if isinstance(ref, SongRef) else self[ref]
        if not seconds > 0:
            raise FxlensError(f"segment length must be > 0 s, got {seconds}")
        rng = _as_rng(rng)
        files = self._files(ref, instrument)
        first = _info(files[0])
        total_frames = max(int(round(_info(p).duration_s * first.sample_rate)) for p in files)
        seg_frames = int(round(seconds * first.sample_rate))
        n_out = max(int(round(seconds * sample_rate)), 1)
        last_start = max(total_frames - seg_frames, 0)
        frame = max(int(0.05 * sample_rate), 1)
        thr = 10.0 ** (threshold_db / 10.0)  # power threshold
        best = -math.inf
        for _ in range(max(int(max_tries), 1)):
            start = min(int(_uniform(rng) * (last_start + 1)), last_start)
            offset_s = start / first.sample_rate
            x = self.load_stem(ref, instrument, sample_rate, offset_s, seconds)
            power = x.double().square().mean(dim=1)[0]  # (T,) mean over channels
            rms_pow = float(power.mean())
            nf = max(power.shape[-1] // frame, 1)
            frames = power[: nf * frame].reshape(nf, -1).mean(dim=1) if power.shape[-1] >= frame else power.mean()[None]
            active = float((frames >= thr).double().mean())
            best = max(best, _db(rms_pow))
            if rms_pow >= thr and active >= min_active:
                return Segment(_fit(x, n_out), offset_s, ref, instrument)
        raise InvalidAudioError(
            f"no non-silent {seconds:g} s segment of stem '{instrument}' of song '{ref.song_id}' in {max_tries} draws "
            f"(loudest draw {best:.1f} dBFS RMS, threshold {threshold_db:g} dBFS, min_active {min_active:g})"
        )

    def random_segment(
        self,
        seconds: float,
        rng: Any = None,
        instrument: str | None = None,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        max_songs: int = 10,
        **kwargs: Any,
    ) -> Segment:
        """A non-silent segment of a random song (having `instrument`, or of a random stem when None).

        Tries up to `max_songs` songs, skipping those whose stem has no non-silent segment. kwargs go to
        `sample_segment`.
        """
        rng = _as_rng(rng)
        songs = self.songs() if instrument is None else self.songs_with(instrument)
        if not songs:
            what = f" with a '{instrument}' stem" if instrument else ""
            raise FxlensError(f"no songs{what} in {self.layout} dataset '{self.root}'")
        last: Exception | None = None
        for _ in range(max(int(max_songs), 1)):
            ref = songs[min(int(_uniform(rng) * len(songs)), len(songs) - 1)]
            names = ref.instruments
            name = instrument or names[min(int(_uniform(rng) * len(names)), len(names) - 1)]
            try:
                return self.sample_segment(ref, name, seconds, rng, sample_rate, **kwargs)
            except InvalidAudioError as e:
                last = e
        raise InvalidAudioError(f"no non-silent segment found in {max_songs} songs: {last}")


# ------------------------------------------------------------------------------------------------------------------
# Layout helpers
# ------------------------------------------------------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _audio_files(path: Path) -> list[Path]:
    try:
        return sorted(
            p for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
        )
    except OSError:
        return []


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FxlensError(f"cannot read '{path}': {e}") from None


# ------------------------------------------------------------------------------------------------------------------
# fxlens rendered layout
# ------------------------------------------------------------------------------------------------------------------


class FxlensStems(StemDataset):
    """fxlens's rendered layout: ``<dataset>/<split>/<song_id>/<instrument>.flac`` + ``song.json``.

    `root` is the dataset folder (songs in split subfolders), one split folder, or one song folder. Stems are the
    song folder's audio files named after an instrument (or an alias, see `instrument_from_name`); ``mix.*`` /
    ``mixture.*`` is the mixture; ``song.json`` is kept in ``SongRef.meta``.
    """

    layout = "fxlens"

    @staticmethod
    def _song(folder: Path, split: str | None) -> SongRef:
        meta = _read_json(folder / "song.json") if (folder / "song.json").is_file() else {}
        stems: dict[str, list[Path]] = {}
        mixture = None
        for f in _audio_files(folder):
            if f.stem.lower() in _MIX_NAMES:
                mixture = f
                continue
            name = f.stem if f.stem in taxonomy() else instrument_from_name(f.stem)
            if name is not None:
                stems.setdefault(name, []).append(f)
        song_id = str(meta.get("song_id", folder.name)) if isinstance(meta, dict) else folder.name
        return SongRef(song_id=song_id, path=folder, layout="fxlens", split=split,
                       stems={k: tuple(v) for k, v in stems.items()}, mixture=mixture,
                       meta=meta if isinstance(meta, dict) else {})

    def _scan(self) -> list[SongRef]:
        root = self.root
        if (root / "song.json").is_file():  # one song folder
            return [self._song(root, None)]
        songs = [d for d in _subdirs(root) if (d / "song.json").is_file()]
        if songs:  # a split folder
            return [self._song(d, root.name) for d in songs]
        out = []
        for split_dir in _subdirs(root):
            out += [self._song(d, split_dir.name) for d in _subdirs(split_dir) if (d / "song.json").is_file()]
        return out


# ------------------------------------------------------------------------------------------------------------------
# MUSDB18-HQ
# ------------------------------------------------------------------------------------------------------------------


def _is_musdb_song(folder: Path) -> bool:
    names = {f.stem.lower() for f in _audio_files(folder)}
    return set(MUSDB_STEMS) <= names


class MusdbStems(StemDataset):
    """MUSDB18-HQ: ``<root>/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav``.

    vocals -> ``voice``; ``other`` is kept under `OTHER` unless ``include_other=False``. The mp4 "stems" edition
    of MUSDB18 is not read: decode it to wav first (``musdbconvert`` of the ``musdb`` package).
    """

    layout = "musdb"

    def __init__(self, root: str | os.PathLike, split: str | None = None, include_other: bool = True) -> None:
        super().__init__(root, split)
        self.include_other = include_other

    def _song(self, folder: Path, split: str | None) -> SongRef:
        files = {f.stem.lower(): f for f in _audio_files(folder)}
        stems = {}
        for name, key in MUSDB_STEMS.items():
            if name in files and (self.include_other or key != OTHER):
                stems[key] = (files[name],)
        return SongRef(song_id=folder.name, path=folder, layout="musdb", split=split, stems=stems,
                       mixture=files.get("mixture"), meta={})

    def _scan(self) -> list[SongRef]:
        root = self.root
        if _is_musdb_song(root):
            return [self._song(root, None)]
        direct = [d for d in _subdirs(root) if _is_musdb_song(d)]
        if direct:
            return [self._song(d, root.name if root.name in _SPLIT_NAMES else None) for d in direct]
        out = []
        for split_dir in _subdirs(root):
            out += [self._song(d, split_dir.name) for d in _subdirs(split_dir) if _is_musdb_song(d)]
        return out


# ------------------------------------------------------------------------------------------------------------------
# MoisesDB
# ------------------------------------------------------------------------------------------------------------------


def _is_moises_song(folder: Path) -> bool:
    if (folder / "data.json").is_file():
        return True
    # without data.json: at least one known stem folder holding audio files
    return any(_normalize_name(d.name) in _MOISES_STEMS and _audio_files(d) for d in _subdirs(folder))


class MoisesdbStems(StemDataset):
    """MoisesDB: ``<root>[/<provider>]/<song_uuid>/{data.json, <stem>/<track_id>.wav, ...}``.

    Each stem folder holds one file per recorded track; tracks are mapped to instruments with
    `moisesdb_instrument` (using data.json's ``trackType`` when present) and the files of one instrument are summed.
    ``SongRef.meta`` carries data.json (artist, song, genre, ...). `OTHER` (effects, click) is kept unless
    ``include_other=False``.
    """

    layout = "moisesdb"

    def __init__(self, root: str | os.PathLike, split: str | None = None, include_other: bool = True) -> None:
        super().__init__(root, split)
        self.include_other = include_other

    def _song(self, folder: Path) -> SongRef:
        meta = _read_json(folder / "data.json") if (folder / "data.json").is_file() else {}
        meta = meta if isinstance(meta, dict) else {}
        stems: dict[str, list[Path]] = {}
        listed: set[Path] = set()
        for stem in meta.get("stems", []) or []:
            stem_name = str(stem.get("stemName", ""))
            stem_dir = folder / stem_name
            if not stem_dir.is_dir():
                stem_dir = folder / stem_name.replace(" ", "_")
            for track in stem.get("tracks", []) or []:
                tid, ext = track.get("id"), track.get("extension", "wav")
                if tid is None:
                    continue
                path = stem_dir / f"{tid}.{ext}"
                if not path.is_file():
                    continue  # listed but not downloaded: skip rather than fail the whole song
                stems.setdefault(moisesdb_instrument(stem_name, track.get("trackType")), []).append(path)
                listed.add(path)
        # files that data.json does not list (or no data.json at all): by their stem folder
        for d in _subdirs(folder):
            for f in _audio_files(d):
                if f not in listed:
                    stems.setdefault(moisesdb_instrument(d.name), []).append(f)
        if not self.include_other:
            stems.pop(OTHER, None)
        song_id = folder.name
        return SongRef(song_id=song_id, path=folder, layout="moisesdb", split=None,
                       stems={k: tuple(sorted(v)) for k, v in stems.items()}, mixture=None, meta=meta)

    def _scan(self) -> list[SongRef]:
        root = self.root
        if (root / "data.json").is_file():
            return [self._song(root)]
        out = [self._song(d) for d in _subdirs(root) if _is_moises_song(d)]
        if out:
            return out
        for provider in _subdirs(root):  # moisesdb/moisesdb_v0.1/<uuid>
            out += [self._song(d) for d in _subdirs(provider) if _is_moises_song(d)]
        return out


# ------------------------------------------------------------------------------------------------------------------
# Plain folders with a mapping file
# ------------------------------------------------------------------------------------------------------------------


def _check_instrument(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "ignore", "-")):
        return None
    name = str(value).strip()
    valid = taxonomy()
    if name in valid or name == OTHER:
        return name
    alias = instrument_from_name(name)
    if alias is not None:
        return alias
    raise FxlensError(f"{where}: unknown instrument '{name}' (use one of: {', '.join(valid)}, {OTHER}, or null)")


def read_mapping(path: str | os.PathLike) -> dict[str | None, dict[str, str | None]]:
    """Read a stem mapping file: ``{song_id or None (every song): {file pattern: instrument or None}}``.

    JSON: either a flat object ``{"gtr_*.wav": "electric_guitar", "Vox.wav": "voice", "click.wav": null}``, or
    ``{"default": {...}, "songs": {"<song folder>": {...}}}``. CSV: rows ``file,instrument`` or
    ``song,file,instrument`` (a header row naming those columns is allowed; ``#`` starts a comment line).

    Patterns are file names or shell globs (``*``, ``?``), matched case-insensitively against the file name with
    and without its extension. Instruments are taxonomy names, aliases (``vocals``), ``other``, or null/empty to
    ignore a file. Raises `FxlensError` on unreadable files and unknown instruments.
    """
    p = Path(path)
    out: dict[str | None, dict[str, str | None]] = {}
    if p.suffix.lower() == ".json":
        data = _read_json(p)
        if not isinstance(data, dict):
            raise FxlensError(f"'{p}': a mapping must be a JSON object")
        if "songs" in data or "default" in data:
            sections: list[tuple[str | None, Any]] = [(None, data.get("default", {}))]
            sections += list((data.get("songs") or {}).items())
        else:
            sections = [(None, data)]
        for song, entries in sections:
            if not isinstance(entries, dict):
                raise FxlensError(f"'{p}': the entries of {song or 'default'} must be an object {{file: instrument}}")
            for pattern, inst in entries.items():
                out.setdefault(song, {})[str(pattern)] = _check_instrument(inst, f"'{p}' ({pattern})")
        return out
    if p.suffix.lower() == ".csv":
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise FxlensError(f"cannot read '{p}': {e}") from None
        for i, row in enumerate(csv.reader(text.splitlines()), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if i == 1 and row[-1].lower() == "instrument":
                continue  # header
            if len(row) == 2:
                song, pattern, inst = None, row[0], row[1]
            elif len(row) == 3:
                song, pattern, inst = row[0] or None, row[1], row[2]
            else:
                raise FxlensError(f"'{p}' line {i}: expected 'file,instrument' or 'song,file,instrument'")
            out.setdefault(song, {})[pattern] = _check_instrument(inst, f"'{p}' line {i}")
        return out
    raise FxlensError(f"'{p}': a stem mapping must be a .json or .csv file")


def _match(entries: Mapping[str, str | None], file: Path) -> tuple[bool, str | None]:
    name, stem = file.name.lower(), file.stem.lower()
    for pattern, inst in entries.items():
        pat = pattern.lower()
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(stem, pat):
            return True, inst
    return False, None


def _mapping_file(folder: Path) -> Path | None:
    for n in _MAPPING_FILES:
        if (folder / n).is_file():
            return folder / n
    return None


class FolderStems(StemDataset):
    """Plain folders of stems: ``<root>/<song>/<any name>.wav|flac|ogg|...`` (or `root` itself is one song).

    Which file is which instrument comes from `mapping` (a dict or a mapping file, see `read_mapping`), else from a
    mapping file found at the root, plus any mapping file in a song folder (its entries win for that song); files
    no mapping names fall back to `instrument_from_name`, and are ignored when that fails too. ``mix.*`` /
    ``mixture.*`` is the song's mixture. Files mapped to the same instrument are summed.
    """

    layout = "folder"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        mapping: str | os.PathLike | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(root, split)
        if mapping is None:
            f = _mapping_file(self.root)
            self.mapping = read_mapping(f) if f else {}
        elif isinstance(mapping, Mapping):
            self.mapping = {}
            flat = "songs" not in mapping and "default" not in mapping
            sections = [(None, mapping)] if flat else [(None, mapping.get("default", {}))] + list(
                (mapping.get("songs") or {}).items())
            for song, entries in sections:
                for pattern, inst in entries.items():
                    self.mapping.setdefault(song, {})[str(pattern)] = _check_instrument(inst, f"mapping ({pattern})")
        else:
            self.mapping = read_mapping(mapping)

    def _song(self, folder: Path, split: str | None) -> SongRef:
        local = _mapping_file(folder)
        local_map = read_mapping(local) if local and folder != self.root else {}
        tables = [local_map.get(None, {}), self.mapping.get(folder.name, {}), self.mapping.get(None, {})]
        stems: dict[str, list[Path]] = {}
        mixture = None
        for f in _audio_files(folder):
            matched, inst = False, None
            for table in tables:
                matched, inst = _match(table, f)
                if matched:
                    break
            if not matched:
                if f.stem.lower() in _MIX_NAMES:
                    mixture = f
                    continue
                inst = instrument_from_name(f.stem)
            if inst is not None:
                stems.setdefault(inst, []).append(f)
        return SongRef(song_id=folder.name, path=folder, layout="folder", split=split,
                       stems={k: tuple(v) for k, v in stems.items()}, mixture=mixture,
                       meta={"mapping": str(local)} if local else {})

    def _scan(self) -> list[SongRef]:
        root = self.root
        subdirs = [d for d in _subdirs(root) if _audio_files(d)]
        if not subdirs and _audio_files(root):
            return [self._song(root, None)]
        if subdirs:
            split = root.name if root.name in _SPLIT_NAMES else None
            return [self._song(d, split) for d in subdirs]
        out = []
        for split_dir in _subdirs(root):
            out += [self._song(d, split_dir.name) for d in _subdirs(split_dir) if _audio_files(d)]
        return out


# ------------------------------------------------------------------------------------------------------------------
# Full mixes without stems
# ------------------------------------------------------------------------------------------------------------------


def track_split(relative: str) -> str:
    """The split of a track without a split folder: a stable hash (crc32) of its path below the dataset root, so
    a file keeps its split when others are added: 80 % train, 10 % val, 10 % test."""
    h = zlib.crc32(relative.replace(os.sep, "/").encode("utf-8")) % 10
    return "val" if h == 0 else "test" if h == 1 else "train"


class TrackStems(StemDataset):
    """Full mixes, one song per audio file below the root (symbolic links followed), the only stem `FULL_MIX`.

    The root holds ``tracks.json`` (`TRACKS_FILE`: written by ``fxlens data music``; it lists the collections and
    their licences, its content is kept in each ``SongRef.meta``). Splits: see `track_split`.
    """

    layout = "tracks"

    def _scan(self) -> list[SongRef]:
        root = self.root
        meta = _read_json(root / TRACKS_FILE) if (root / TRACKS_FILE).is_file() else {}
        out = []
        for dirpath, _dirs, files in sorted(os.walk(root, followlinks=True)):
            for name in sorted(files):
                f = Path(dirpath) / name
                if f.suffix.lower() not in AUDIO_EXTENSIONS or name.startswith("."):
                    continue
                rel = f.relative_to(root).as_posix()
                top = rel.split("/", 1)[0]
                split = top if "/" in rel and top in ("train", "val", "test") else track_split(rel)
                out.append(SongRef(song_id=rel, path=f, layout=self.layout, split=split, stems={FULL_MIX: (f,)},
                                   mixture=f, meta=meta if isinstance(meta, dict) else {}))
        return out


# ------------------------------------------------------------------------------------------------------------------
# Detection and the one entry point
# ------------------------------------------------------------------------------------------------------------------


_CLASSES: dict[str, type[StemDataset]] = {
    "fxlens": FxlensStems,
    "musdb": MusdbStems,
    "moisesdb": MoisesdbStems,
    "folder": FolderStems,
    "tracks": TrackStems,
}


def _levels(root: Path, depth: int) -> Iterator[Path]:
    """root, its subfolders, their subfolders ... down to `depth` levels (at most 200 folders per level)."""
    level = [root]
    for _ in range(depth + 1):
        yield from level
        nxt: list[Path] = []
        for d in level:
            nxt += _subdirs(d)[:200]
        level = nxt[:200]


def detect_layout(path: str | os.PathLike) -> str:
    """Which layout a folder holds: "tracks" (a ``tracks.json`` at its root), "fxlens", "musdb", "moisesdb" or
    "folder" (checked in that order).

    Raises `FxlensError` when the folder is missing or matches none of them, saying what each layout looks like.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FxlensError(f"dataset folder not found: '{root}'")
    if (root / TRACKS_FILE).is_file():
        return "tracks"
    folders = list(_levels(root, 2))
    if any((d / "song.json").is_file() and _audio_files(d) for d in folders):
        return "fxlens"
    if any(_is_musdb_song(d) for d in folders):
        return "musdb"
    if any((d / "data.json").is_file() and _subdirs(d) for d in folders):
        return "moisesdb"
    if _mapping_file(root) is not None or any(_mapping_file(d) is not None for d in folders):
        return "folder"
    if any(any(instrument_from_name(f.stem) for f in _audio_files(d)) for d in folders):
        return "folder"
    raise FxlensError(
        f"cannot tell which stem dataset '{root}' holds: expected fxlens's rendered layout "
        "(<split>/<song>/<instrument>.flac + song.json), MUSDB18-HQ (<split>/<song>/{mixture,drums,bass,other,"
        "vocals}.wav), MoisesDB (<song>/data.json + one folder per stem) or song folders of stems with a "
        "mapping.json/mapping.csv (file -> instrument)"
    )


def open_dataset(
    path: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    **options: Any,
) -> StemDataset:
    """Open a stem dataset. `layout`: "auto" (detect), "fxlens", "musdb", "moisesdb" or "folder".

    `split` keeps one split (fxlens, musdb, and folder datasets with split subfolders). `options` go to the
    layout's class: ``include_other`` (musdb, moisesdb), ``mapping`` (folder). Raises `FxlensError` for a missing
    or unrecognizable folder, an unknown layout, or a dataset with no songs (of that split).
    """
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in _CLASSES:
        raise FxlensError(f"unknown dataset layout '{layout}' (use auto, {', '.join(LAYOUTS)})")
    try:
        ds = _CLASSES[layout](path, split=split, **options)
    except TypeError as e:
        raise FxlensError(f"bad option for the {layout} layout: {e}") from None
    if not ds.songs():
        where = f" in split '{split}'" if split else ""
        raise FxlensError(f"no songs with stems{where} found in '{ds.root}' (read as the {layout} layout)")
    return ds

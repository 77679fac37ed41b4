"""Real recordings installed by Debian/Ubuntu packages: an evaluation source with known licences.

fxlens's training data is rendered from MIDI; these are the real, human-produced recordings it is checked on.
They come from three apt packages (nothing is downloaded by fxlens)::

    sudo apt-get install fretsonfire-songs-muldjord fretsonfire-songs-sectoid wesnoth-1.16-music

=====================  ======================================  ================  ======================================
collection             what                                     licence           author
=====================  ======================================  ================  ======================================
fretsonfire-muldjord   4 metal songs: backing track song.ogg +  CC-BY-SA-3.0      El Senator (Muldjord)
                       isolated lead guitar guitar.ogg
fretsonfire-sectoid    4 songs, same layout                     MIT               Carlos Viola Iborra (Sectoid)
wesnoth                ~40 orchestral / folk game-music tracks  GPL-2.0-or-later  The Battle for Wesnoth contributors
                       (full mixes, no stems)
=====================  ======================================  ================  ======================================

The licences are those of the packages' ``/usr/share/doc/<package>/copyright`` files (sectoid's is the MIT
permission text). A Frets on Fire song is a multitrack: ``song.ogg`` is the band *without* the lead guitar and
``guitar.ogg`` the guitar alone, so their sum is the full mix and the guitar is an isolated, effected (distorted,
reverberant) real electric-guitar stem. Other stem files that Frets on Fire songs can carry (``rhythm.ogg`` for
a rhythm guitar or bass, ``drums.ogg``) are picked up too.

Three further packages hold game soundtracks that fxlens may *train* on (`TRAINING_COLLECTIONS`: Hedgewars,
SuperTux, Warzone 2100; 107 full-mix tracks, no stems): real, produced music of other genres than the rendered
soundfonts, kept apart from the evaluation collections above, which no training command reads.
`link_training_music` gathers them into a ``tracks`` dataset folder (`fxlens.data.stems.TrackStems`; the command
``fxlens data music``).

`list_real_recordings()` lists them (sorted by collection, then name); `load_real_recording` reads one as
{stem: (1, 2, T)} and `load_mix` gives its full mix. `FretsOnFireStems` exposes the Frets on Fire songs through
the `fxlens.data.stems.StemDataset` interface (segment sampling, Fx-normalization statistics).
"""

from __future__ import annotations

import configparser
import glob
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fxlens import audio as fxaudio
from fxlens.data.stems import SongRef, StemDataset, _fit, _sum_padded
from fxlens.errors import AudioFileError, FxlensError

__all__ = [
    "APT_PACKAGES",
    "COLLECTIONS",
    "TRAINING_COLLECTIONS",
    "link_training_music",
    "RealRecording",
    "Collection",
    "list_real_recordings",
    "load_real_recording",
    "load_mix",
    "FretsOnFireStems",
]

APT_PACKAGES = ("fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid", "wesnoth-1.16-music")

_FOF_ROOT = "/usr/share/games/fretsonfire/data/songs"
_WESNOTH_GLOB = "/usr/share/games/wesnoth/*/data/core/music"


@dataclass(frozen=True)
class Collection:
    """Where one collection lives once its apt package is installed, and under which terms it may be used."""

    name: str
    package: str
    kind: str  # "fretsonfire" (song folders with stems) or "music" (folder of full-mix tracks)
    paths: tuple[str, ...]  # folder, or glob patterns of folders (the Wesnoth version is in the path)
    licence: str  # SPDX identifier
    author: str
    pattern: str = "*.ogg"  # the audio files of a "music" folder (a glob below it)


COLLECTIONS: tuple[Collection, ...] = (
    Collection("fretsonfire-muldjord", "fretsonfire-songs-muldjord", "fretsonfire", (f"{_FOF_ROOT}/muldjord",),
               "CC-BY-SA-3.0", "El Senator (Muldjord)"),
    Collection("fretsonfire-sectoid", "fretsonfire-songs-sectoid", "fretsonfire", (f"{_FOF_ROOT}/sectoid",),
               "MIT", "Carlos Viola Iborra (Sectoid)"),
    Collection("wesnoth", "wesnoth-1.16-music", "music", (_WESNOTH_GLOB,),
               "GPL-2.0-or-later", "The Battle for Wesnoth contributors"),
)

#: Game soundtracks for training (full mixes): never read by a benchmark. Licences as the packages' copyright and
#: license files state them (Hedgewars: the package's default terms; its Music/credits.txt names the composers).
TRAINING_COLLECTIONS: tuple[Collection, ...] = (
    Collection("hedgewars", "hedgewars-data", "music", ("/usr/share/games/hedgewars/Data/Music",),
               "GPL-2.0-only", "the Hedgewars project (composers in Data/Music/credits.txt)"),
    Collection("supertux", "supertux-data", "music", ("/usr/share/games/supertux2/music",),
               "GPL-2.0-or-later", "Marek Moeckel and the SuperTux contributors", pattern="*/*.ogg"),
    Collection("warzone2100", "warzone2100-music", "music", ("/usr/share/games/warzone2100/music",),
               "CC-BY-SA-3.0 OR GPL-2.0-or-later", "LupusMechanicus, Martin Severn (Warzone 2100)",
               pattern="**/*.opus"),
)

# Frets on Fire stem file -> fxlens stem name. "backing" is the band without the guitar (not one instrument).
_FOF_STEMS = {"guitar": "electric_guitar", "song": "backing", "rhythm": "rhythm", "drums": "drums"}


@dataclass(frozen=True)
class RealRecording:
    """One real recording.

    Attributes:
        name: the song's title (from song.ini for Frets on Fire, else the file name).
        collection: a `COLLECTIONS` name.
        path: the song folder (Frets on Fire) or the audio file (Wesnoth).
        stems: stem name -> file: ``electric_guitar`` and ``backing`` for Frets on Fire (their sum is the mix),
            ``mix`` alone for Wesnoth.
        licence: SPDX identifier of the recording's licence; ``author``: who to credit; ``package``: the apt
            package that installed it.
        duration_s: length in seconds (the longest stem).
    """

    name: str
    collection: str
    path: Path
    stems: Mapping[str, Path] = field(hash=False, compare=False)
    licence: str
    duration_s: float
    author: str = ""
    package: str = ""

    @property
    def has_stems(self) -> bool:
        """True when the recording has isolated stems (not only a full mix)."""
        return set(self.stems) != {"mix"}


def _folders(collection: Collection, roots: Mapping[str, str | os.PathLike] | None) -> list[Path]:
    if roots is not None and collection.name in roots:
        p = Path(roots[collection.name])
        return [p] if p.is_dir() else []
    out: list[Path] = []
    for pattern in collection.paths:
        out += [Path(p) for p in sorted(glob.glob(pattern))]
    return [p for p in out if p.is_dir()]


def _song_title(folder: Path) -> str:
    ini = folder / "song.ini"
    if ini.is_file():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(ini.read_text(encoding="utf-8", errors="replace"))
            if parser.has_option("song", "name"):
                return parser.get("song", "name").strip()
        except configparser.Error:
            pass
    return folder.name


def _duration(paths: Sequence[Path]) -> float:
    return max(fxaudio.info(p).duration_s for p in paths)


def _fretsonfire(collection: Collection, folder: Path) -> list[RealRecording]:
    out = []
    for song in sorted(d for d in folder.iterdir() if d.is_dir()):
        stems = {}
        for stem_file, name in _FOF_STEMS.items():
            f = song / f"{stem_file}.ogg"
            if f.is_file():
                stems[name] = f
        if "electric_guitar" not in stems or "backing" not in stems:
            continue
        try:
            duration = _duration(list(stems.values()))
        except AudioFileError:
            continue  # a broken file: leave the song out rather than fail the listing
        out.append(RealRecording(name=_song_title(song), collection=collection.name, path=song, stems=stems,
                                 licence=collection.licence, duration_s=duration, author=collection.author,
                                 package=collection.package))
    return out


def _music(collection: Collection, folder: Path) -> list[RealRecording]:
    out = []
    for f in sorted(folder.glob(collection.pattern)):
        try:
            duration = _duration([f])
        except AudioFileError:
            continue
        out.append(RealRecording(name=f.stem, collection=collection.name, path=f, stems={"mix": f},
                                 licence=collection.licence, duration_s=duration, author=collection.author,
                                 package=collection.package))
    return out


def list_real_recordings(
    collections: Sequence[str] | None = None,
    roots: Mapping[str, str | os.PathLike] | None = None,
) -> list[RealRecording]:
    """Every installed real recording of the named `collections` (default: the evaluation collections,
    `COLLECTIONS`; `TRAINING_COLLECTIONS` by name), sorted by collection then name.

    `roots` overrides where a collection is looked for ({collection name: folder}), e.g. a copy of the files
    elsewhere. Raises `FxlensError` naming the apt packages to install when none is found, and for unknown
    collection names.
    """
    known = {c.name: c for c in COLLECTIONS + TRAINING_COLLECTIONS}
    names = [c.name for c in COLLECTIONS] if collections is None else list(collections)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FxlensError(f"unknown real-recording collection(s) {unknown} (known: {', '.join(known)})")
    out: list[RealRecording] = []
    for n in names:
        c = known[n]
        for folder in _folders(c, roots):
            out += _fretsonfire(c, folder) if c.kind == "fretsonfire" else _music(c, folder)
    if not out:
        packages = " ".join(known[n].package for n in names)
        raise FxlensError(f"no real recordings installed; install them with: sudo apt-get install {packages}")
    return sorted(out, key=lambda r: (r.collection, r.name.lower()))


def link_training_music(out: str | os.PathLike, collections: Sequence[str] | None = None,
                        roots: Mapping[str, str | os.PathLike] | None = None) -> tuple[Path, int]:
    """Gather the installed training soundtracks into a ``tracks`` dataset folder: ``<out>/<collection>/<file>``
    as symbolic links (no copy), and ``<out>/tracks.json`` naming each collection, its package, licence and author.

    `collections`: names from `TRAINING_COLLECTIONS` (default all; those not installed are skipped). Links already
    there are kept, so a second run only adds what is new. Raises `FxlensError` naming the apt packages when none is
    installed, and for unknown or evaluation collections. Returns (out, number of tracks linked).
    """
    from fxlens.atomic import write_text_atomic
    from fxlens.data.stems import TRACKS_FILE

    known = {c.name: c for c in TRAINING_COLLECTIONS}
    names = list(known) if collections is None else list(collections)
    evaluation = [n for n in names if n in {c.name for c in COLLECTIONS}]
    if evaluation:
        raise FxlensError(f"{evaluation} are evaluation collections: fxlens never trains on them")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FxlensError(f"unknown training collection(s) {unknown} (known: {', '.join(known)})")
    # (collection folder, recording) pairs: a link keeps the file's path below its folder (SuperTux's and Warzone's
    # tracks sit in subfolders, and names repeat across them)
    found = {n: [(folder, r) for folder in _folders(known[n], roots) for r in _music(known[n], folder)] for n in names}
    found = {n: recs for n, recs in found.items() if recs}
    if not found:
        packages = " ".join(known[n].package for n in names)
        raise FxlensError(f"no training soundtracks installed; install them with: sudo apt-get install {packages}")
    out = Path(out)
    n_linked = 0
    for name, recs in found.items():
        for folder, r in recs:
            link = out / name / r.path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and link.resolve() == r.path.resolve():
                n_linked += 1
                continue
            if link.exists() or link.is_symlink():
                raise FxlensError(f"'{link}' exists and is not a link to '{r.path}'; use an empty folder")
            link.symlink_to(r.path.resolve())
            n_linked += 1
    meta = {"layout": "tracks", "collections": [
        {"name": n, "package": known[n].package, "licence": known[n].licence, "author": known[n].author,
         "tracks": len(recs), "minutes": round(sum(r.duration_s for _, r in recs) / 60.0, 1)} for n, recs in found.items()]}
    write_text_atomic(out / TRACKS_FILE, json.dumps(meta, indent=1) + "\n")
    return out, n_linked


def load_real_recording(
    recording: RealRecording,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> dict[str, torch.Tensor]:
    """Every stem of a recording as {name: float32 (1, 2, T)} at `sample_rate` Hz, all of one length."""
    stems = {n: fxaudio.load(p, sample_rate=sample_rate, offset_s=offset_s, duration_s=duration_s)
             for n, p in recording.stems.items()}
    n = max(x.shape[-1] for x in stems.values())
    if duration_s is not None:
        n = max(int(round(duration_s * sample_rate)), 1)
    return {k: _fit(v, n) for k, v in stems.items()}


def load_mix(
    recording: RealRecording,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> torch.Tensor:
    """The recording's full mix (1, 2, T): the sum of its stems (Frets on Fire) or its single file (Wesnoth)."""
    return _sum_padded(list(load_real_recording(recording, sample_rate, offset_s, duration_s).values()))


class FretsOnFireStems(StemDataset):
    """The installed Frets on Fire songs as a `StemDataset`: stems ``electric_guitar`` and ``backing``.

    `root` defaults to the Debian install folder; ``SongRef.meta`` carries the licence, author and collection.
    Raises `FxlensError` (naming the apt packages) when no song is installed.
    """

    layout = "fretsonfire"

    def __init__(self, root: str | os.PathLike = _FOF_ROOT, split: str | None = None) -> None:
        if not Path(root).is_dir():
            raise FxlensError(
                f"no Frets on Fire songs at '{root}'; install them with: sudo apt-get install "
                + " ".join(c.package for c in COLLECTIONS if c.kind == "fretsonfire")
            )
        super().__init__(root, split)

    def _scan(self) -> list[SongRef]:
        roots = {c.name: self.root / c.paths[0].rsplit("/", 1)[-1] for c in COLLECTIONS if c.kind == "fretsonfire"}
        names = [n for n, p in roots.items() if p.is_dir()]
        if not names:
            return []
        recs = list_real_recordings(names, roots)
        return [
            SongRef(song_id=r.path.name, path=r.path, layout=self.layout, split=None,
                    stems={k: (v,) for k, v in r.stems.items()}, mixture=None,
                    meta={"name": r.name, "collection": r.collection, "licence": r.licence, "author": r.author})
            for r in recs
        ]

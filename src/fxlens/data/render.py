"""Dry multitrack rendering: songs -> one FLAC stem per instrument, with fluidsynth and free soundfonts.

Layout written by `render_dataset`::

    <data-dir>/<dataset>/dataset.json                      settings, held-out definitions, licences, summary
    <data-dir>/<dataset>/<split>/<song_id>/<instrument>.flac   stereo, 44.1 kHz, 24-bit, one per instrument
    <data-dir>/<dataset>/<split>/<song_id>/song.json        written last: its presence marks a finished song

Splits are by song: ``train``, ``val``, ``test`` (in-domain) and ``ood`` (out-of-domain). The ``ood`` split is the
only place where the held-out soundfont (TimGM6mb, `HELD_OUT_SOUNDFONT`) and the held-out instruments (``organ``
and ``reeds``, `fxlens.data.instruments.HELD_OUT_INSTRUMENTS`) occur; each ood song is held out by its soundfont,
by its instruments, or by both (``song.json["ood"]`` says which). In-domain stems use FluidR3_GM and
MuseScore_General_Lite for melodic instruments, and the AVL Black Pearl / Red Zeppelin acoustic kits or the GM
kits of those two soundfonts for drums.

Every decision is a pure function of ``(seed, song index)``: the split, the song's length, whether it is generated
(`fxlens.data.songs`) or an arrangement of the music21 corpus (`fxlens.data.corpus`), the music, the soundfont and
program of each stem. Asking for more hours with the same seed adds songs and keeps the existing ones.

Dryness is enforced, not assumed: the synthesizer is created with its reverb and chorus units inactive (fluidsynth
turns both on by default, ~20 dB down), the settings are checked before each stem, and CC 91/93 (effect sends)
are zeroed on the channel. A stem that comes out silent is re-rendered once with another program/soundfont and
dropped if still silent; a stem whose peak exceeds -1 dBFS is scaled down (never clipped); the gain is recorded.

Speed: notes are driven directly (noteon/noteoff between `fluid_synth_write_float` calls, no MIDI files), one
synthesizer per worker process keeps every soundfont loaded once (MuseScore_General_Lite's .sf3 takes ~2 s to
decode), and songs run in parallel across processes.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fxlens.data.instruments import (
    GM_DRUM_KITS,
    GM_PROGRAM_NAMES,
    HELD_OUT_INSTRUMENTS,
    IN_DOMAIN_INSTRUMENTS,
    INSTRUMENT_NAMES,
    INSTRUMENTS,
)
from fxlens.data.paths import default_data_dir
from fxlens.data.songs import GENERATOR_VERSION, Song, Track, generate_song
from fxlens.errors import FxlensError, ParameterError
from fxlens.pool import spawn_pool

__all__ = [
    "SAMPLE_RATE",
    "SoundFont",
    "SOUNDFONTS",
    "HELD_OUT_SOUNDFONT",
    "IN_DOMAIN_MELODIC_SOUNDFONTS",
    "AVL_KITS",
    "SPLITS",
    "SongPlan",
    "StemAssignment",
    "StemRenderer",
    "default_data_dir",
    "find_soundfont",
    "missing_soundfonts",
    "fluidsynth_available",
    "plan_dataset",
    "make_song",
    "assign_soundfonts",
    "render_song",
    "render_dataset",
    "render_demo_clip",
    "process_renderer",
    "save_stem",
    "write_json",
]

SAMPLE_RATE = 44100
RENDER_VERSION = 1
TAIL_SECONDS = 1.5  # release tail rendered after the music ends (instrument releases, not reverb)
SYNTH_GAIN = 0.5  # fluidsynth master gain: keeps dense pads and chords under 0 dBFS most of the time
SILENCE_PEAK = 10 ** (-60 / 20)  # a stem whose peak is below -60 dBFS counts as silent
PEAK_LIMIT = 10 ** (-1 / 20)  # stems peaking above -1 dBFS are scaled down to it
FADE_SECONDS = 0.05  # fade at the very end, where a long release may still be sounding
SUBTYPE = "PCM_24"

SPLITS = ("train", "val", "test", "ood")
OOD_FRACTION = 0.08
VAL_FRACTION = 0.1  # of the in-domain songs
TEST_FRACTION = 0.1
CORPUS_FRACTION = 0.2  # songs arranged from the music21 corpus instead of generated
# A song's music comes out a little shorter than planned on average (whole bars; corpus pieces that end early), so
# the plan counts each song at this fraction of its planned length: `hours` is then a lower bound in practice.
PLAN_MARGIN = 0.97


@dataclass(frozen=True)
class SoundFont:
    """A soundfont fxlens renders with: `key` (short id), file name, licence, the Debian package that ships it."""

    key: str
    name: str
    filename: str
    licence: str
    package: str
    drums_only: bool = False


SOUNDFONTS: dict[str, SoundFont] = {
    "fluidr3": SoundFont("fluidr3", "FluidR3_GM", "FluidR3_GM.sf2", "MIT", "fluid-soundfont-gm"),
    "musescore": SoundFont("musescore", "MuseScore_General_Lite", "MuseScore_General_Lite.sf3", "MIT",
                           "musescore-general-soundfont-small"),
    "timgm6mb": SoundFont("timgm6mb", "TimGM6mb", "TimGM6mb.sf2", "GPL-2.0", "timgm6mb-soundfont"),
    "avl_black_pearl": SoundFont("avl_black_pearl", "AVL Drumkits Black Pearl 4", "Black_Pearl_4_LV2.sf2",
                                 "CC-BY-SA-3.0", "avldrums.lv2-soundfont", drums_only=True),
    "avl_red_zeppelin": SoundFont("avl_red_zeppelin", "AVL Drumkits Red Zeppelin 4", "Red_Zeppelin_4_LV2.sf2",
                                  "CC-BY-SA-3.0", "avldrums.lv2-soundfont", drums_only=True),
}
HELD_OUT_SOUNDFONT = "timgm6mb"
IN_DOMAIN_MELODIC_SOUNDFONTS = ("fluidr3", "musescore")
AVL_KITS = ("avl_black_pearl", "avl_red_zeppelin")
_ACOUSTIC_KITS = (0, 8, 16)  # GM kits that an AVL acoustic kit can stand in for

_SEARCH_DIRS = (
    "/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts", "/usr/lib/lv2/avldrums.lv2",
    "/usr/local/share/sounds/sf2", "/usr/local/share/sounds/sf3", "/usr/local/share/soundfonts",
    "/usr/local/lib/lv2/avldrums.lv2", "/opt/homebrew/share/soundfonts", "~/.local/share/soundfonts",
)


def _search_dirs() -> list[Path]:
    extra = [p for p in os.environ.get("FXLENS_SOUNDFONTS", "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in (*extra, *_SEARCH_DIRS)]


def find_soundfont(key: str) -> Path | None:
    """Path of soundfont `key` (see `SOUNDFONTS`), looked up in ``$FXLENS_SOUNDFONTS`` (os.pathsep-separated
    folders) and then the usual system folders; None if absent."""
    sf = SOUNDFONTS[key]
    for d in _search_dirs():
        p = d / sf.filename
        if p.is_file():
            return p
    return None


def missing_soundfonts(keys: Iterable[str] = tuple(SOUNDFONTS)) -> list[str]:
    """Keys of the soundfonts among `keys` that `find_soundfont` cannot find."""
    return [k for k in keys if find_soundfont(k) is None]


def fluidsynth_available() -> bool:
    """True if pyfluidsynth imports and finds the fluidsynth shared library."""
    try:
        _import_fluidsynth()
    except FxlensError:
        return False
    return True


def _import_fluidsynth():
    try:
        import fluidsynth
    except (ImportError, OSError) as e:  # pyfluidsynth raises ImportError when libfluidsynth is missing
        raise FxlensError(
            f"fluidsynth is not usable ({e}); install the library (Debian/Ubuntu: apt install fluidsynth, "
            "macOS: brew install fluid-synth) and the Python binding (pip install pyfluidsynth)"
        ) from None
    return fluidsynth


def _require_soundfonts(keys: Iterable[str]) -> dict[str, Path]:
    missing = missing_soundfonts(keys)
    if missing:
        pkgs = sorted({SOUNDFONTS[k].package for k in missing})
        raise FxlensError(
            f"soundfont(s) not found: {', '.join(SOUNDFONTS[k].filename for k in missing)}; install them "
            f"(apt install {' '.join(pkgs)}) or point $FXLENS_SOUNDFONTS at a folder holding them"
        )
    return {k: find_soundfont(k) for k in keys}  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------- synthesis
class StemRenderer:
    """One fluidsynth synthesizer (reverb and chorus off) with soundfonts loaded on first use.

    Create one per process and reuse it: loading the soundfonts is the slow part. Not thread-safe.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, gain: float = SYNTH_GAIN):
        fs = _import_fluidsynth()
        self._fs = fs
        self.sample_rate = int(sample_rate)
        self.gain = float(gain)
        self.synth = fs.Synth(
            gain=self.gain, samplerate=float(self.sample_rate),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 1024,
               "synth.cpu-cores": 1},
        )
        self._sfids: dict[str, int] = {}
        # fluid_synth_write_float renders 32-bit float straight into our buffer; pyfluidsynth's get_samples
        # only offers dithered 16-bit, which would put a noise floor under every "silent" sample.
        self._write = fs._fl.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._write.restype = ctypes.c_int
        self.check_dry()

    def check_dry(self) -> None:
        """Raise FxlensError unless the synthesizer's reverb and chorus are both inactive."""
        rev = self.synth.get_setting("synth.reverb.active")
        cho = self.synth.get_setting("synth.chorus.active")
        if rev not in (0, False) or cho not in (0, False):
            raise FxlensError(f"fluidsynth reverb/chorus are active (reverb={rev}, chorus={cho}); stems must be dry")

    @property
    def fluidsynth_version(self) -> str:
        maj, mi, mic = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._fs.fluid_version(maj, mi, mic)
        return f"{maj.value}.{mi.value}.{mic.value}"

    def load(self, key: str) -> int:
        """Soundfont id of `key`, loading it on first use."""
        if key not in self._sfids:
            path = _require_soundfonts([key])[key]
            sfid = self.synth.sfload(str(path))
            if sfid < 0:
                raise FxlensError(f"fluidsynth could not load soundfont '{path}'")
            self._sfids[key] = sfid
        return self._sfids[key]

    def has_preset(self, key: str, bank: int, program: int) -> bool:
        return bool(self.synth.sfpreset_name(self.load(key), bank, program))

    def preset_name(self, key: str, bank: int, program: int) -> str:
        return self.synth.sfpreset_name(self.load(key), bank, program) or ""

    def render_track(self, track: Track, font: str, bank: int, program: int, n_samples: int) -> np.ndarray:
        """Render `track` with preset (bank, program) of soundfont `font`; float32 array (2, n_samples).

        Notes beyond `n_samples` are cut. The synthesizer is reset first, so nothing rings over from a
        previous stem.
        """
        self.check_dry()
        s = self.synth
        sfid = self.load(font)
        chan = 9 if track.is_drum else 0
        s.system_reset()  # silences every voice and restores default controllers
        if not s.sfpreset_name(sfid, bank, program):
            raise FxlensError(f"soundfont {font} has no preset bank {bank} program {program}")
        s.program_select(chan, sfid, bank, program)
        s.cc(chan, 91, 0)  # reverb send
        s.cc(chan, 93, 0)  # chorus send
        sr = self.sample_rate
        # (sample, order, a, b): at equal times note-offs go first, so a repeated note is re-struck
        events: list[tuple[int, int, int, int]] = []
        for n in track.notes:
            on = int(round(n.start * sr))
            off = max(on + 1, int(round((n.start + n.duration) * sr)))
            events.append((on, 2, n.pitch, n.velocity))
            events.append((off, 0, n.pitch, 0))
        for t, cc, v in track.controls:
            events.append((int(round(t * sr)), 1, cc, v))
        events.sort()
        buf = np.zeros((n_samples, 2), dtype=np.float32)
        ptr = buf.ctypes.data
        pos = 0
        synth = s.synth
        for t, kind, a, b in events:
            t = min(t, n_samples)
            if t > pos:
                self._write(synth, t - pos, ptr, 2 * pos, 2, ptr, 2 * pos + 1, 2)
                pos = t
            if kind == 2:
                s.noteon(chan, a, b)
            elif kind == 0:
                s.noteoff(chan, a)
            else:
                s.cc(chan, a, b)
        if pos < n_samples:
            self._write(synth, n_samples - pos, ptr, 2 * pos, 2, ptr, 2 * pos + 1, 2)
        s.system_reset()
        return np.ascontiguousarray(buf.T)

    def close(self) -> None:
        if self.synth is not None:
            self.synth.delete()
            self.synth = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


_RENDERER: StemRenderer | None = None


def process_renderer(sample_rate: int = SAMPLE_RATE) -> StemRenderer:
    """This process's synthesizer (one per worker process, created on first use)."""
    global _RENDERER
    if _RENDERER is None or _RENDERER.sample_rate != sample_rate:
        _RENDERER = StemRenderer(sample_rate)
    return _RENDERER


def release_synth() -> None:
    """Free this process's synthesizer and its soundfonts (a few hundred MB)."""
    global _RENDERER
    if _RENDERER is not None:
        _RENDERER.close()
        _RENDERER = None


# ---------------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class SongPlan:
    """Everything decided about one song before it is composed: a pure function of (seed, index)."""

    index: int
    song_id: str
    split: str
    kind: str  # "generated" or "corpus"
    seconds: float
    ood_soundfont: bool
    ood_instruments: tuple[str, ...]
    seed: int

    def rng(self, stream: int) -> np.random.Generator:
        """Independent random stream `stream` of this song (0 planning, 1 music, 2 soundfonts)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.index, stream]))


def _plan_one(seed: int, index: int, song_seconds: tuple[float, float]) -> SongPlan:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0]))
    lo, hi = song_seconds
    seconds = float(np.round(rng.uniform(lo, hi), 3))
    kind = "corpus" if rng.random() < CORPUS_FRACTION else "generated"
    u = rng.random()
    if u < OOD_FRACTION:
        split = "ood"
    else:
        v = (u - OOD_FRACTION) / (1 - OOD_FRACTION)
        split = "val" if v < VAL_FRACTION else ("test" if v < VAL_FRACTION + TEST_FRACTION else "train")
    ood_sf, ood_inst = False, ()
    if split == "ood":
        flavour = rng.random()
        ood_sf = flavour < 2 / 3  # soundfont only, or both
        if flavour >= 1 / 3:  # instruments only, or both
            picks = [i for i in HELD_OUT_INSTRUMENTS if rng.random() < 0.6]
            ood_inst = tuple(picks or [HELD_OUT_INSTRUMENTS[int(rng.integers(len(HELD_OUT_INSTRUMENTS)))]])
    return SongPlan(index, f"s{seed}-{index:05d}", split, kind, seconds, ood_sf, ood_inst, seed)


def plan_dataset(hours: float, seed: int = 0, song_seconds: tuple[float, float] = (20, 45)) -> list[SongPlan]:
    """The songs of a dataset of at least about `hours` hours of music: song k is planned from (seed, k) alone,
    and songs are added until `PLAN_MARGIN` times their planned lengths sum to `hours`."""
    lo, hi = _check_song_seconds(song_seconds)
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise ParameterError(f"hours must be a positive number, got {hours!r}")
    plans: list[SongPlan] = []
    total = 0.0
    target = hours * 3600.0
    while total < target:
        p = _plan_one(int(seed), len(plans), (lo, hi))
        plans.append(p)
        total += p.seconds * PLAN_MARGIN
    return plans


def _check_song_seconds(song_seconds: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in song_seconds)
    except (TypeError, ValueError):
        raise ParameterError(f"song_seconds must be two numbers (min, max), got {song_seconds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ParameterError(f"song_seconds must satisfy 0 < min <= max, got {song_seconds!r}")
    return lo, hi


def make_song(plan: SongPlan) -> Song:
    """Compose the song of `plan` (generated, or arranged from the music21 corpus)."""
    instruments = list(INSTRUMENT_NAMES) if plan.ood_instruments else list(IN_DOMAIN_INSTRUMENTS)
    rng = plan.rng(1)
    song = None
    if plan.kind == "corpus":
        from fxlens.data.corpus import corpus_song

        try:
            song = corpus_song(rng, plan.seconds, plan.song_id, instruments, plan.ood_instruments)
        except Exception as e:  # music21 parsers raise many exception types; the fallback is deterministic
            song = generate_song(plan.rng(3), plan.seconds, plan.song_id, instruments, plan.ood_instruments)
            song.source["corpus_fallback"] = f"{type(e).__name__}: {e}"[:300]
    else:
        song = generate_song(rng, plan.seconds, plan.song_id, instruments, plan.ood_instruments)
    song.source["seed"] = [plan.seed, plan.index]
    return song


@dataclass(frozen=True)
class StemAssignment:
    """How one stem is rendered: soundfont key, bank, preset number."""

    font: str
    bank: int
    program: int


def assign_soundfonts(song: Song, plan: SongPlan) -> dict[str, StemAssignment]:
    """Soundfont and preset of every stem. In-domain songs never get TimGM6mb; songs held out by soundfont get
    TimGM6mb for every stem (drums included)."""
    rng = plan.rng(2)
    out: dict[str, StemAssignment] = {}
    for inst, track in song.tracks.items():
        if plan.ood_soundfont:
            out[inst] = StemAssignment(HELD_OUT_SOUNDFONT, 128 if track.is_drum else 0, track.program)
        elif track.is_drum:
            if track.program in _ACOUSTIC_KITS and rng.random() < 0.65:
                out[inst] = StemAssignment(str(rng.choice(AVL_KITS)), 0, 0)
            else:
                out[inst] = StemAssignment(str(rng.choice(IN_DOMAIN_MELODIC_SOUNDFONTS)), 128, track.program)
        else:
            out[inst] = StemAssignment(str(rng.choice(IN_DOMAIN_MELODIC_SOUNDFONTS)), 0, track.program)
    return out


# --------------------------------------------------------------------------------------------------- rendering
def _fallback(inst: str, a: StemAssignment) -> StemAssignment:
    """Another way to render a stem that came out silent, within the same domain."""
    if a.font == HELD_OUT_SOUNDFONT:  # stay in the held-out soundfont: its first program of the instrument
        return StemAssignment(a.font, a.bank, 0 if INSTRUMENTS[inst].is_drum else INSTRUMENTS[inst].programs[0])
    if INSTRUMENTS[inst].is_drum:
        return StemAssignment("fluidr3", 128, 0)
    other = [f for f in IN_DOMAIN_MELODIC_SOUNDFONTS if f != a.font]
    return StemAssignment(other[0], 0, a.program)


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _db(x: float) -> float:
    return round(20 * math.log10(x), 2) if x > 0 else -200.0


def render_song(
    song: Song,
    assignment: dict[str, StemAssignment],
    renderer: StemRenderer | None = None,
    tail_seconds: float = TAIL_SECONDS,
    n_samples: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict], list[dict]]:
    """Render every stem of `song`; checks each one (finite, not silent, not clipping).

    Returns:
        stems: instrument -> float32 (2, T), all of length T = `n_samples` or (duration + tail) * rate;
        info: instrument -> what song.json records about the stem;
        dropped: stems that stayed silent after a re-render (instrument, reason).
    """
    r = renderer or process_renderer()
    sr = r.sample_rate
    T = n_samples if n_samples is not None else int(math.ceil((song.duration + tail_seconds) * sr))
    fade = min(T, int(FADE_SECONDS * sr))
    ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32) if fade else None
    stems: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    dropped: list[dict] = []
    for inst, track in song.tracks.items():
        a = assignment[inst]
        tries = [a, _fallback(inst, a)]
        audio = None
        used = a
        for cand in tries:
            if not r.has_preset(cand.font, cand.bank, cand.program):
                continue
            x = r.render_track(track, cand.font, cand.bank, cand.program, T)
            if not np.all(np.isfinite(x)):
                raise FxlensError(f"{song.song_id}/{inst}: fluidsynth produced non-finite samples")
            if _peak(x) >= SILENCE_PEAK:
                audio, used = x, cand
                break
        if audio is None:
            dropped.append({"instrument": inst, "reason": "silent after re-render", "font": a.font,
                            "program": a.program})
            continue
        if ramp is not None:
            audio[:, T - fade:] *= ramp
        peak = _peak(audio)
        gain = 1.0
        if peak > PEAK_LIMIT:  # scale, never clip
            gain = PEAK_LIMIT / peak
            audio *= gain
        rms = math.sqrt(float(np.einsum("ij,ij->", audio, audio, dtype=np.float64)) / audio.size)
        sf = SOUNDFONTS[used.font]
        kit = INSTRUMENTS[inst].is_drum
        info[inst] = {
            "file": f"{inst}.flac",
            "instrument": inst,
            "role": track.role,
            "articulation": track.articulation,
            "soundfont": sf.name,
            "soundfont_file": sf.filename,
            "soundfont_licence": sf.licence,
            "bank": used.bank,
            "program": used.program,
            "gm_program": track.program,
            "gm_program_name": (GM_DRUM_KITS.get(track.program, f"kit {track.program}") + " kit") if kit
            else GM_PROGRAM_NAMES[track.program],
            "preset_name": r.preset_name(used.font, used.bank, used.program),
            "rerendered": used != a,
            "notes": len(track.notes),
            "pitch_range": [min(n.pitch for n in track.notes), max(n.pitch for n in track.notes)],
            "peak_dbfs": _db(_peak(audio)),
            "rms_dbfs": _db(rms),
            "gain_db": _db(gain),
        }
        stems[inst] = audio
    return stems, info, dropped


def save_stem(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import torch

    from fxlens.audio import save

    save(path, torch.from_numpy(audio), sample_rate, subtype=SUBTYPE)


def write_json(path: Path, obj: dict) -> None:
    from fxlens.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _licences(fonts: Iterable[str]) -> dict[str, str]:
    return {SOUNDFONTS[f].name: SOUNDFONTS[f].licence for f in sorted(set(fonts))}


def _render_plan(plan: SongPlan, root: str, dataset: str, sample_rate: int) -> dict:
    """Worker: compose, render, check and write one song; song.json last. Returns a small summary."""
    t0 = time.perf_counter()
    r = process_renderer(sample_rate)
    song = make_song(plan)
    assignment = assign_soundfonts(song, plan)
    stems, info, dropped = render_song(song, assignment, r)
    if not stems:
        raise FxlensError(f"{plan.song_id}: every stem came out silent")
    folder = Path(root) / plan.split / plan.song_id
    folder.mkdir(parents=True, exist_ok=True)
    for inst, audio in stems.items():
        save_stem(folder / f"{inst}.flac", audio, sample_rate)
    T = next(iter(stems.values())).shape[1]
    meta = song.metadata()
    source_licence = song.source.get("licence", "Apache-2.0 (generated by fxlens; no third-party music)")
    meta.update({
        "dataset": dataset,
        "split": plan.split,
        "index": plan.index,
        "ood": {"soundfont": plan.ood_soundfont, "instruments": list(plan.ood_instruments)},
        "duration_s": round(T / sample_rate, 6),
        "num_frames": T,
        "sample_rate": sample_rate,
        "channels": 2,
        "subtype": SUBTYPE,
        "stems": info,
        "dropped_stems": dropped,
        "licences": {"source": source_licence, "soundfonts": _licences(
            f.font for k, f in assignment.items() if k in info)},
        "render": {
            "renderer": "fluidsynth", "fluidsynth_version": r.fluidsynth_version, "reverb": False,
            "chorus": False, "synth_gain": r.gain, "tail_s": TAIL_SECONDS, "render_version": RENDER_VERSION,
            "generator_version": GENERATOR_VERSION, "seconds": round(time.perf_counter() - t0, 3),
        },
    })
    write_json(folder / "song.json", meta)  # last: marks the song as finished
    return {"song_id": plan.song_id, "split": plan.split, "music_s": song.duration, "audio_s": T / sample_rate,
            "stems": len(stems), "dropped": len(dropped), "seconds": time.perf_counter() - t0}


def _song_done(root: Path, plan: SongPlan) -> dict | None:
    p = root / plan.split / plan.song_id / "song.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a damaged marker: render the song again


def _dataset_config(dataset: str, seed: int, song_seconds: tuple[float, float], sample_rate: int) -> dict:
    return {
        "dataset": dataset, "seed": int(seed), "song_seconds": list(song_seconds), "sample_rate": sample_rate,
        "generator_version": GENERATOR_VERSION, "render_version": RENDER_VERSION,
    }


def render_dataset(
    data_dir: Path,
    dataset: str = "fxlens-dry",
    hours: float = 3.0,
    seed: int = 0,
    workers: int = 2,
    song_seconds: tuple[float, float] = (20, 45),
    progress: bool = True,
) -> dict:
    """Render (or finish rendering) a dry multitrack dataset under ``<data_dir>/<dataset>``.

    Args:
        data_dir: root data folder (see `default_data_dir`).
        dataset: dataset folder name.
        hours: total planned music length; songs are added until their planned lengths reach it.
        seed: decides every song (split, music, soundfonts). Same seed + more hours = the same songs plus more.
        workers: processes rendering in parallel, one synthesizer each; 1 renders in this process. Workers are
            spawned (not forked), so a script calling this with workers > 1 needs the usual
            ``if __name__ == "__main__":`` guard.
        song_seconds: (min, max) length of a song in seconds.
        progress: show a rich progress bar.

    Returns:
        summary dict: ``songs`` (total in the dataset), ``rendered`` and ``skipped`` (this call), ``hours`` (music
        in the dataset), ``audio_hours`` (file length incl. release tails), ``splits`` (songs per split),
        ``stems``, ``dropped_stems``, ``seconds`` (wall time of this call), ``x_real_time`` (music seconds
        rendered per wall second in this call), ``workers``, ``root``.

    Raises:
        FxlensError: fluidsynth, a soundfont or music21 missing; the folder holds a dataset rendered with other
            settings; a song failed to render (finished songs stay, a re-run resumes).
        ParameterError: bad `hours`, `workers`, `song_seconds` or `dataset`.
    """
    t_start = time.perf_counter()
    if not isinstance(dataset, str) or not dataset or "/" in dataset or "\\" in dataset or dataset in (".", ".."):
        raise ParameterError(f"dataset must be a plain folder name, got {dataset!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers must be an integer >= 1, got {workers!r}")
    song_seconds = _check_song_seconds(song_seconds)
    plans = plan_dataset(hours, seed, song_seconds)
    _import_fluidsynth()
    _require_soundfonts(SOUNDFONTS)
    root = Path(data_dir).expanduser() / dataset
    config = _dataset_config(dataset, seed, song_seconds, SAMPLE_RATE)
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
        except (OSError, json.JSONDecodeError):
            old = {}
        if old and old != config:
            diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
            raise FxlensError(
                f"'{root}' holds a dataset rendered with other settings {diff}; choose another dataset name or "
                "delete that folder"
            )
    todo = [p for p in plans if _song_done(root, p) is None]
    if any(p.kind == "corpus" for p in todo):
        from fxlens.data.corpus import music21_available

        if not music21_available():
            raise FxlensError("music21 is needed for the corpus arrangements: pip install music21")
    root.mkdir(parents=True, exist_ok=True)
    # write the settings first, so a concurrent or later run with other settings is refused
    write_json(manifest, {"config": config, "complete": False})

    results: list[dict] = []
    rendered_music = 0.0
    with _progress(progress, len(plans), len(plans) - len(todo)) as bar:
        def done(res: dict) -> None:
            nonlocal rendered_music
            results.append(res)
            rendered_music += res["music_s"]
            bar.advance(rendered_music / max(1e-9, time.perf_counter() - t_start))

        if workers == 1 or len(todo) <= 1:
            for p in todo:
                done(_render_plan(p, str(root), dataset, SAMPLE_RATE))
        else:
            # each worker builds its own synthesizer
            with spawn_pool(min(workers, len(todo))) as ex:
                # longest songs first keeps the workers busy until the end
                futs = [ex.submit(_render_plan, p, str(root), dataset, SAMPLE_RATE)
                        for p in sorted(todo, key=lambda p: -p.seconds)]
                pending = set(futs)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in finished:
                        if f.exception() is not None:
                            for g in pending:
                                g.cancel()
                            raise f.exception()
                        done(f.result())

    # summary over the whole dataset (skipped songs included)
    splits = {s: 0 for s in SPLITS}
    music_s = audio_s = 0.0
    n_stems = n_dropped = 0
    fonts: set[str] = set()
    for p in plans:
        meta = _song_done(root, p)
        if meta is None:  # pragma: no cover - every plan was rendered above
            raise FxlensError(f"{p.song_id} is missing after rendering")
        splits[p.split] += 1
        music_s += float(meta.get("music_duration_s", 0.0))
        audio_s += float(meta.get("duration_s", 0.0))
        n_stems += len(meta.get("stems", {}))
        n_dropped += len(meta.get("dropped_stems", []))
        fonts.update(s.get("soundfont", "") for s in meta.get("stems", {}).values())
    elapsed = time.perf_counter() - t_start
    summary = {
        "dataset": dataset,
        "root": str(root),
        "songs": len(plans),
        "rendered": len(results),
        "skipped": len(plans) - len(todo),
        "hours": round(music_s / 3600.0, 4),
        "audio_hours": round(audio_s / 3600.0, 4),
        "splits": splits,
        "stems": n_stems,
        "dropped_stems": n_dropped,
        "seconds": round(elapsed, 2),
        "x_real_time": round(rendered_music / elapsed, 2) if results else 0.0,
        "workers": workers,
    }
    write_json(manifest, {
        "config": config,
        "complete": True,
        "summary": summary,
        "layout": "<split>/<song_id>/<instrument>.flac + song.json (written last)",
        "splits": {"train/val/test": "in-domain", "ood": "held-out soundfont and/or held-out instruments"},
        "held_out": {"soundfont": SOUNDFONTS[HELD_OUT_SOUNDFONT].name, "instruments": list(HELD_OUT_INSTRUMENTS)},
        "instruments": list(INSTRUMENT_NAMES),
        "soundfonts": {sf.name: asdict(sf) for sf in SOUNDFONTS.values()},
        "soundfonts_used": sorted(f for f in fonts if f),
    })
    return summary


class _NoBar:
    def __init__(self):
        self.n = 0

    def advance(self, xrt: float) -> None:
        self.n += 1


class _RichBar:
    def __init__(self, total: int, done: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]rendering[/] {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        self.task = self.progress.add_task("songs", total=total, completed=done)

    def advance(self, xrt: float) -> None:
        self.progress.update(self.task, advance=1, description=f"songs ({xrt:.0f}x real time)")


class _progress:
    def __init__(self, enabled: bool, total: int, done: int):
        self.bar = _RichBar(total, done) if enabled else _NoBar()

    def __enter__(self):
        if isinstance(self.bar, _RichBar):
            self.bar.progress.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if isinstance(self.bar, _RichBar):
            self.bar.progress.__exit__(*exc)
        return False


# ------------------------------------------------------------------------------------------------------- demo
def render_demo_clip(seconds: float = 8.0, seed: int = 0):
    """A short dry mix rendered in memory: drums, bass, a chord instrument and a lead, summed.

    Uses FluidR3_GM (MuseScore_General_Lite if FluidR3 is missing) and, for drums, the same soundfont's kit.
    The mix is scaled to peak at -1 dBFS.

    Returns:
        (audio, sample_rate): float32 torch tensor of shape (1, 2, round(seconds * 44100)), and 44100.
    """
    import torch

    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0.5 <= seconds <= 600):
        raise ParameterError(f"seconds must be between 0.5 and 600, got {seconds!r}")
    font = next((f for f in ("fluidr3", "musescore") if find_soundfont(f) is not None), None)
    if font is None:
        _require_soundfonts(["fluidr3"])  # raises with the install hint
    r = process_renderer(SAMPLE_RATE)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    style = str(rng.choice(["rock", "pop", "funk", "four_on_floor", "hiphop", "shuffle", "bossa"]))
    song = None
    # a few attempts at finding a seed whose song has drums, bass and something on top (nearly always the first)
    for attempt in range(8):
        cand = generate_song([int(seed), 7, attempt], seconds, f"demo-{seed}", style=style,
                             required=("drums", "bass"))
        if len(cand.tracks) >= 3:
            song = cand
            break
        song = cand
    assert song is not None
    keep = ["drums", "bass"]
    chords = [i for i, t in song.tracks.items() if t.role == "chords"][:1]
    lead = [i for i, t in song.tracks.items() if t.role == "lead"][:1]
    keep += chords + lead
    tracks = {i: song.tracks[i] for i in keep if i in song.tracks}
    song.tracks = tracks
    assignment = {i: StemAssignment(font, 128 if INSTRUMENTS[i].is_drum else 0, t.program)
                  for i, t in tracks.items()}
    T = int(round(seconds * SAMPLE_RATE))
    stems, _, _ = render_song(song, assignment, r, n_samples=T)
    mix = np.sum(list(stems.values()), axis=0) if stems else np.zeros((2, T), np.float32)
    peak = _peak(mix)
    if peak > 0:
        mix = mix * (PEAK_LIMIT / peak)
    return torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))[None], SAMPLE_RATE

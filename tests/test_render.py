"""Dry multitrack rendering: layout, song.json, stem checks, dryness, determinism, resumability, splits.

Rendering tests need the fluidsynth library and the five soundfonts (FluidR3_GM, MuseScore_General_Lite, TimGM6mb,
AVL Black Pearl / Red Zeppelin); they skip cleanly without them. The tiny dataset (2 songs of 3-4 s, one worker)
renders in a few seconds (5.8 s planned at 0.97 per song: exactly two songs).
"""

from __future__ import annotations

import ctypes
import json
import math

import numpy as np
import pytest
import soundfile as sf

from conftest import need_renderer
from fxlens.data import render as R
from fxlens.data.instruments import (
    GM_PROGRAM_NAMES,
    HELD_OUT_INSTRUMENTS,
    IN_DOMAIN_INSTRUMENTS,
    INSTRUMENT_NAMES,
    INSTRUMENTS,
    program_range,
)
from fxlens.data.paths import default_data_dir
from fxlens.data.songs import Note, Track, generate_song
from fxlens.errors import FxlensError, ParameterError

SR = 44100
TINY = dict(dataset="tiny", hours=5.8 / 3600, seed=0, workers=1, song_seconds=(3.0, 4.0), progress=False)


def _need_music21() -> None:
    pytest.importorskip("music21")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    need_renderer()
    plans = R.plan_dataset(TINY["hours"], TINY["seed"], TINY["song_seconds"])
    if any(p.kind == "corpus" for p in plans):
        _need_music21()
    data_dir = tmp_path_factory.mktemp("data")
    summary = R.render_dataset(data_dir, **TINY)
    return data_dir, summary, plans


def _songs(root):
    return sorted(root.glob("*/*/song.json"))


# ----------------------------------------------------------------------------------------------- taxonomy
def test_taxonomy_table():
    assert INSTRUMENT_NAMES == ("drums", "bass", "piano", "electric_guitar", "acoustic_guitar", "organ", "strings",
                                "brass", "reeds", "synth_lead", "synth_pad", "voice")
    assert set(HELD_OUT_INSTRUMENTS) == {"organ", "reeds"}
    assert set(IN_DOMAIN_INSTRUMENTS) | set(HELD_OUT_INSTRUMENTS) == set(INSTRUMENT_NAMES)
    # programs whose timbre is an effect (distortion, chorus, detune, sound effects) are never used
    used = {p for i in INSTRUMENTS.values() if not i.is_drum for p in i.programs}
    assert not used & {5, 29, 30, 62, 63, 84, *range(96, 104), *range(120, 128)}
    # no program belongs to two instruments, and ranges are sane MIDI ranges
    assert sum(len(i.programs) for i in INSTRUMENTS.values() if not i.is_drum) == len(used)
    for inst in INSTRUMENTS.values():
        assert inst.description and inst.query.startswith("this is the sound of ")
        for p in inst.programs:
            lo, hi = program_range(inst.name, p)
            assert 0 <= lo < hi <= 127 and hi - lo >= 12
    assert len(GM_PROGRAM_NAMES) == 128


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FXLENS_DATA", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("FXLENS_DATA")
    assert default_data_dir().parts[-2:] == (".cache", "fxlens")


# ------------------------------------------------------------------------------------------------ generator
def test_generator_deterministic_and_valid():
    a = generate_song((5, 1), 12.0)
    b = generate_song((5, 1), 12.0)
    assert a == b
    c = generate_song((5, 2), 12.0)
    assert c != a
    for song in (a, c):
        bar = 60.0 / song.tempo * song.meter
        assert abs(song.duration - 12.0) <= bar / 2 + 1e-9
        assert len(song.tracks) >= 2
        for name, tr in song.tracks.items():
            assert name == tr.instrument and name in IN_DOMAIN_INSTRUMENTS
            assert tr.notes, name
            lo, hi = program_range(name, tr.program)
            last: dict[int, float] = {}
            for n in tr.notes:  # sorted, in range, inside the song, no overlapping same-pitch notes
                assert 0 <= n.start < song.duration and n.duration > 0 and 1 <= n.velocity <= 127
                assert lo <= n.pitch <= hi, (name, tr.program, n.pitch)
                assert n.start >= last.get(n.pitch, -1.0), (name, n)
                last[n.pitch] = n.start + n.duration
    # many seeds give many different songs: styles, tempi, line-ups
    songs = [generate_song((9, k), 20.0) for k in range(24)]
    assert len({s.style for s in songs}) >= 6
    assert len({round(s.tempo) for s in songs}) >= 15
    assert len({tuple(sorted(s.tracks)) for s in songs}) >= 8


def test_generator_respects_instrument_sets():
    for k in range(12):
        s = generate_song((3, k), 10.0, instruments=IN_DOMAIN_INSTRUMENTS, required=("organ",))
        assert "organ" in s.tracks
        assert set(s.tracks) <= set(IN_DOMAIN_INSTRUMENTS) | {"organ"}
    with pytest.raises(KeyError):
        generate_song(0, 10.0, instruments=["kazoo"])


def test_corpus_arrangement_deterministic():
    _need_music21()
    from fxlens.data.corpus import corpus_song

    a = corpus_song((1, 2), 10.0, collection="chorale")
    b = corpus_song((1, 2), 10.0, collection="chorale")
    assert a == b
    assert a.source["kind"] == "music21-corpus" and a.source["path"].startswith("bach/")
    assert set(a.tracks) <= set(IN_DOMAIN_INSTRUMENTS)
    assert 0 < a.duration <= 10.0 + 1e-6
    # a chorale has four voices: every arranged note is inside its program's range
    for name, tr in a.tracks.items():
        lo, hi = program_range(name, tr.program)
        assert all(lo <= n.pitch <= hi for n in tr.notes)


# ---------------------------------------------------------------------------------------------------- splits
def test_plan_splits_disjoint_deterministic_and_sized():
    plans = R.plan_dataset(3.0, seed=0)
    assert plans == R.plan_dataset(3.0, seed=0)
    assert len(plans) >= 300
    assert sum(p.seconds for p in plans) >= 3 * 3600
    ids = [p.song_id for p in plans]
    assert len(set(ids)) == len(ids)  # one song, one split
    assert {p.split for p in plans} == set(R.SPLITS)
    # more hours with the same seed keep the same songs in the same splits
    small = R.plan_dataset(1.0, seed=0)
    assert plans[: len(small)] == small
    assert R.plan_dataset(1.0, seed=1)[0].song_id != small[0].song_id
    # held-out material is planned only into the ood split
    for p in plans:
        assert (p.split == "ood") == (p.ood_soundfont or bool(p.ood_instruments))


def test_out_of_domain_material_only_in_ood():
    plans = [p for p in R.plan_dataset(3.0, seed=0) if p.kind == "generated"][:60]
    assert any(p.split == "ood" for p in plans)
    for p in plans:
        song = R.make_song(p)
        fonts = {a.font for a in R.assign_soundfonts(song, p).values()}
        held_inst = set(song.tracks) & set(HELD_OUT_INSTRUMENTS)
        if p.split == "ood":
            assert (R.HELD_OUT_SOUNDFONT in fonts) or held_inst
            if p.ood_soundfont:
                assert fonts == {R.HELD_OUT_SOUNDFONT}
            assert set(p.ood_instruments) <= set(song.tracks)
        else:
            assert R.HELD_OUT_SOUNDFONT not in fonts and not held_inst


def test_bad_arguments(tmp_path):
    with pytest.raises(ParameterError):
        R.render_dataset(tmp_path, hours=0.0, progress=False)
    with pytest.raises(ParameterError):
        R.render_dataset(tmp_path, workers=0, progress=False)
    with pytest.raises(ParameterError):
        R.render_dataset(tmp_path, song_seconds=(5.0, 3.0), progress=False)
    with pytest.raises(ParameterError):
        R.render_dataset(tmp_path, dataset="../x", progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------------------------------------- rendering
def test_layout_and_summary(tiny):
    data_dir, summary, plans = tiny
    root = data_dir / "tiny"
    assert summary["songs"] == 2 and summary["rendered"] == 2 and summary["skipped"] == 0
    assert sum(summary["splits"].values()) == 2
    assert (root / "dataset.json").is_file()
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["complete"] and manifest["held_out"]["instruments"] == ["organ", "reeds"]
    for p in plans:
        folder = root / p.split / p.song_id
        meta = json.loads((folder / "song.json").read_text())
        files = sorted(f.name for f in folder.iterdir())
        assert files == sorted(["song.json"] + [s["file"] for s in meta["stems"].values()])  # no temp files
        assert all(f"{inst}.flac" == s["file"] for inst, s in meta["stems"].items())
    assert math.isclose(summary["hours"] * 3600, sum(
        json.loads(f.read_text())["music_duration_s"] for f in _songs(root)), abs_tol=0.5)


def test_song_json_and_stems(tiny):
    data_dir, _, _ = tiny
    licences = {"FluidR3_GM": "MIT", "MuseScore_General_Lite": "MIT", "TimGM6mb": "GPL-2.0",
                "AVL Drumkits Black Pearl 4": "CC-BY-SA-3.0", "AVL Drumkits Red Zeppelin 4": "CC-BY-SA-3.0"}
    for path in _songs(data_dir / "tiny"):
        meta = json.loads(path.read_text())
        for key in ("song_id", "split", "source", "tempo_bpm", "key", "mode", "duration_s", "music_duration_s",
                    "sample_rate", "stems", "licences", "ood", "render"):
            assert key in meta, key
        assert meta["sample_rate"] == SR and meta["render"]["reverb"] is False and meta["render"]["chorus"] is False
        assert meta["licences"]["source"]
        for name, lic in meta["licences"]["soundfonts"].items():
            assert licences[name] == lic
        lengths = set()
        for inst, s in meta["stems"].items():
            assert inst in INSTRUMENT_NAMES
            assert licences[s["soundfont"]] == s["soundfont_licence"]
            assert 0 <= s["program"] <= 127 and s["bank"] in (0, 128)
            if meta["split"] != "ood":
                assert s["soundfont"] != "TimGM6mb" and inst not in HELD_OUT_INSTRUMENTS
            info = sf.info(str(path.parent / s["file"]))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 2, "PCM_24", "FLAC")
            assert info.frames == meta["num_frames"]
            x, _ = sf.read(str(path.parent / s["file"]), dtype="float32")
            peak = float(np.abs(x).max())
            assert np.isfinite(x).all()
            assert peak > R.SILENCE_PEAK, f"{inst} is silent"
            assert peak <= R.PEAK_LIMIT + 1e-4, f"{inst} clips"  # 24-bit rounding allowance
            assert math.isclose(20 * math.log10(peak), s["peak_dbfs"], abs_tol=0.05)
            lengths.add(len(x))
        assert len(lengths) == 1
        assert math.isclose(meta["duration_s"], lengths.pop() / SR, abs_tol=1e-5)


def test_splits_disjoint_on_disk(tiny):
    data_dir, _, plans = tiny
    root = data_dir / "tiny"
    seen: dict[str, str] = {}
    for split in R.SPLITS:
        for d in (root / split).glob("*") if (root / split).is_dir() else []:
            assert d.name not in seen, f"{d.name} in {seen.get(d.name)} and {split}"
            seen[d.name] = split
    assert seen == {p.song_id: p.split for p in plans}


def test_resume_skips_finished_songs(tiny):
    data_dir, _, plans = tiny
    root = data_dir / "tiny"
    stamps = {f: f.stat().st_mtime_ns for f in root.rglob("*.flac")}
    again = R.render_dataset(data_dir, **TINY)
    assert again["rendered"] == 0 and again["skipped"] == 2
    assert {f: f.stat().st_mtime_ns for f in root.rglob("*.flac")} == stamps
    # a song without song.json (interrupted) is rendered again, the finished one is not
    victim = root / plans[0].split / plans[0].song_id
    (victim / "song.json").unlink()
    third = R.render_dataset(data_dir, **TINY)
    assert third["rendered"] == 1 and third["skipped"] == 1
    assert (victim / "song.json").is_file()
    other = root / plans[1].split / plans[1].song_id
    assert all(f.stat().st_mtime_ns == stamps[f] for f in other.glob("*.flac"))
    # the same dataset folder with other settings is refused before anything is written
    with pytest.raises(FxlensError, match="other settings"):
        R.render_dataset(data_dir, **{**TINY, "seed": 1})


class _FakeRenderer:
    """Stands in for fluidsynth to test the render-time checks: "fluidr3" renders silence, "musescore" a sine of
    the given amplitude."""

    sample_rate = SR

    def __init__(self, amplitude: float):
        self.amplitude = amplitude
        self.calls: list[str] = []

    def has_preset(self, font, bank, program):
        return True

    def preset_name(self, font, bank, program):
        return "fake"

    def render_track(self, track, font, bank, program, n):
        self.calls.append(font)
        if font == "fluidr3":
            return np.zeros((2, n), np.float32)
        t = np.arange(n) / SR
        return np.stack([self.amplitude * np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32)


def test_render_checks_rerender_silent_and_scale_hot_stems():
    melodic = [i for i in IN_DOMAIN_INSTRUMENTS if i != "drums"]
    song = generate_song((4, 4), 4.0, instruments=melodic)
    fonts = {inst: R.StemAssignment("fluidr3", 0, tr.program) for inst, tr in song.tracks.items()}
    stems, info, dropped = R.render_song(song, fonts, _FakeRenderer(amplitude=3.0))
    assert not dropped and set(stems) == set(song.tracks)
    for inst, x in stems.items():
        # silent with FluidR3 -> re-rendered with the other in-domain soundfont
        assert info[inst]["rerendered"] and info[inst]["soundfont"] == "MuseScore_General_Lite"
        # a +9.5 dBFS peak is scaled (not clipped) to -1 dBFS, and the gain is recorded
        assert math.isclose(float(np.abs(x).max()), R.PEAK_LIMIT, rel_tol=1e-5)
        assert math.isclose(info[inst]["gain_db"], 20 * math.log10(R.PEAK_LIMIT / 3.0), abs_tol=0.01)
        assert x.shape == (2, int(math.ceil((song.duration + R.TAIL_SECONDS) * SR)))


def test_render_checks_drop_stems_that_stay_silent():
    song = generate_song((4, 4), 4.0, required=("drums",))
    fonts = {inst: R.StemAssignment("fluidr3", 128 if tr.is_drum else 0, tr.program)
             for inst, tr in song.tracks.items()}
    stems, info, dropped = R.render_song(song, fonts, _FakeRenderer(amplitude=0.5))
    # drums re-render with FluidR3's standard kit, which the fake also renders silent: dropped, and recorded
    assert [d["instrument"] for d in dropped] == ["drums"] and "drums" not in stems and "drums" not in info
    assert set(stems) == set(song.tracks) - {"drums"}
    for inst in stems:
        assert info[inst]["rerendered"] and info[inst]["gain_db"] == 0.0  # 0.5 peak: left as it is


def _tail_db(x: np.ndarray, a: float, b: float) -> float:
    seg = x[:, int(a * SR):int(b * SR)]
    rms = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))
    return 20 * math.log10(rms / float(np.abs(x).max()) + 1e-15)


def test_single_note_is_dry():
    """A bass note released at 0.6 s is silent 0.5 s later; the same note through fluidsynth with its default
    reverb and chorus (an independent reference synthesizer, driven directly) still rings there."""
    need_renderer()
    import fluidsynth

    renderer = R.StemRenderer()
    renderer.check_dry()
    track = Track("bass", 33, "bass", [Note(0.1, 0.5, 45, 100)])
    dry = renderer.render_track(track, "fluidr3", 0, 33, int(2.0 * SR))
    assert float(np.abs(dry[:, : int(0.6 * SR)]).max()) > 0.01
    assert _tail_db(dry, 1.1, 2.0) < -100.0

    ref = fluidsynth.Synth(gain=0.5, samplerate=float(SR))  # fluidsynth defaults: reverb and chorus on
    try:
        sfid = ref.sfload(str(R.find_soundfont("fluidr3")))
        ref.program_select(0, sfid, 0, 33)
        ref.cc(0, 91, 127)
        ref.cc(0, 93, 127)
        write = fluidsynth._fl.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                          ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        buf = np.zeros((int(2.0 * SR), 2), np.float32)
        ptr = buf.ctypes.data
        n0, n1 = int(0.1 * SR), int(0.6 * SR)
        write(ref.synth, n0, ptr, 0, 2, ptr, 1, 2)
        ref.noteon(0, 45, 100)
        write(ref.synth, n1 - n0, ptr, 2 * n0, 2, ptr, 2 * n0 + 1, 2)
        ref.noteoff(0, 45)
        write(ref.synth, len(buf) - n1, ptr, 2 * n1, 2, ptr, 2 * n1 + 1, 2)
    finally:
        ref.delete()
    assert _tail_db(buf.T, 1.1, 2.0) > -90.0  # the reverb tail the dry render must not have
    renderer.close()


def test_every_program_has_a_preset():
    """Every GM program of the taxonomy (and every GM kit) exists in the three GM soundfonts."""
    need_renderer()
    r = R.process_renderer()
    for font in ("fluidr3", "musescore", "timgm6mb"):
        for inst in INSTRUMENTS.values():
            for p in inst.programs:
                assert r.has_preset(font, 128 if inst.is_drum else 0, p), (font, inst.name, p)
    for kit in R.AVL_KITS:
        assert r.has_preset(kit, 0, 0)


def test_demo_clip():
    need_renderer()
    x, sr = R.render_demo_clip(seconds=2.0, seed=3)
    assert sr == SR and x.shape == (1, 2, 2 * SR) and str(x.dtype) == "torch.float32"
    peak = float(x.abs().max())
    assert math.isclose(peak, R.PEAK_LIMIT, rel_tol=1e-4)
    assert float(x.pow(2).mean().sqrt()) > 0.01

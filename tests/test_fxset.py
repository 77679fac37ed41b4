"""fxset: a labelled effect-recognition set built from tiny synthetic stems written in the fxlens layout.

Checks are made against independent readings: the source segment is read back with soundfile, loudness measured
with pyloudnorm, and the class sub-ranges restated here as the physical limits the issue asks for.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from fxlens.data import fxset
from fxlens.errors import FxlensError
from fxlens.fx.chain import Chain
from fxlens.fx.effect import get_effect

SR = 44100
SPLITS = {"train": ["s000", "s001"], "val": ["s002"], "test": ["s003"], "ood": ["s004"]}


def notes(seconds: float, f0: float, seed: int, channels: int) -> np.ndarray:
    """(T, C) float32: decaying harmonic notes every 0.5 s (clear onsets), a little noise, a quiet gap."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros(n)
    for k, start in enumerate(np.arange(0.0, seconds, 0.5)):
        f = f0 * 2 ** (rng.integers(0, 12) / 12)
        tt = t - start
        env = np.where(tt >= 0, np.exp(-np.clip(tt, 0, None) * 3.0), 0.0)
        y += env * sum(0.3 / h * np.sin(2 * np.pi * f * h * tt) for h in (1, 2, 3))
    y[int(1.0 * SR): int(1.6 * SR)] = 0.0  # a silent stretch the sampler must skip
    cols = [y + 0.003 * rng.standard_normal(n) for _ in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def stems(tmp_path_factory):
    root = tmp_path_factory.mktemp("stems") / "toy"
    k = 0
    for split, songs in SPLITS.items():
        for song in songs:
            d = root / split / song
            d.mkdir(parents=True)
            sf.write(str(d / "piano.flac"), notes(4.0, 220.0, k, 2), SR, subtype="PCM_24")
            sf.write(str(d / "bass.flac"), notes(4.0, 55.0, k + 100, 1), SR, subtype="PCM_24")
            (d / "song.json").write_text(json.dumps({"song_id": song}))
            k += 1
    return root


def tiny_fxset_of(stems, tmp_path_factory, name: str, seed: int):  # noqa: F811
    """A tiny fxset (2 clips per class of dry, feedback delay, fuzz, tremolo) for the model tests."""
    out = tmp_path_factory.mktemp(name)
    fxset.build_fxset(stems, out, clips_per_class=2, seed=seed, chains=False,
                      classes=["dry", "feedback_delay", "fuzz", "tremolo"])
    return out


@pytest.fixture(scope="module")
def built(stems, tmp_path_factory):
    out = tmp_path_factory.mktemp("fxset")
    summary = fxset.build_fxset(stems, out, clips_per_class=1, seed=3, chain_clips=4)
    labels = {s: fxset.read_labels(out, s) for s in SPLITS}
    return out, summary, labels


def read_source(stems, rec) -> torch.Tensor:
    """The clip's dry source segment, read with soundfile from the stem file: (1, 2, T)."""
    path = stems / rec["song_split"] / rec["song_id"] / f"{rec['instrument']}.flac"
    n = int(round(rec["seconds"] * SR))
    data, sr = sf.read(str(path), start=int(round(rec["offset_s"] * SR)), frames=n, dtype="float32", always_2d=True)
    assert sr == SR
    data = np.pad(data, ((0, n - data.shape[0]), (0, 0)))
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    return torch.from_numpy(np.ascontiguousarray(data.T))[None]


def read_clip(out, rec) -> torch.Tensor:
    data, sr = sf.read(str(out / rec["split"] / f"{rec['clip_id']}.flac"), dtype="float32", always_2d=True)
    assert sr == SR
    return torch.from_numpy(np.ascontiguousarray(data.T))[None]


def lufs(x: torch.Tensor) -> float:
    return float(pyloudnorm.Meter(SR).integrated_loudness(x[0].double().numpy().T))


def at_input_loudness(x: torch.Tensor) -> torch.Tensor:
    return x * float(10 ** ((fxset.INPUT_LUFS - lufs(x)) / 20))


def all_records(labels):
    return [r for recs in labels.values() for r in recs]


# ---------------------------------------------------------------------------------------------------------------


def test_layout_counts_and_fields(built):
    out, summary, labels = built
    assert summary["clips"] == summary["rendered"] == 4 * (len(fxset.FINE_CLASSES) + 4)
    fields = {"clip_id", "split", "song_id", "song_split", "instrument", "offset_s", "seconds", "segment",
              "fine_class", "aggregated_class", "fine_labels", "labels", "effects", "implementation", "preset",
              "controls", "output_gain_db"}
    for split, recs in labels.items():
        assert sorted(r["fine_class"] for r in recs) == sorted(list(fxset.FINE_CLASSES) + ["chain"] * 4)
        for r in recs:
            assert fields <= set(r)
            assert r["implementation"] == "fxlens" and r["instrument"] in ("piano", "bass")
            assert r["segment"] in ("onset", "phrase")
            if r["fine_class"] != "chain":
                assert r["aggregated_class"] == fxset.FXSET_CLASSES[r["fine_class"]].aggregated
                assert r["aggregated_class"] in fxset.AGGREGATED_CLASSES
            clip = read_clip(out, r)
            assert clip.shape == (1, 2, int(1.5 * SR))
            # output loudness: -18 LUFS, or quieter with the peak at -1 dBFS
            peak = 20 * np.log10(float(clip.abs().max()))
            assert peak <= fxset.OUTPUT_PEAK_DB + 0.01
            assert lufs(clip) == pytest.approx(fxset.OUTPUT_LUFS, abs=0.1) or peak == pytest.approx(-1.0, abs=0.01)
    segs = {r["segment"] for r in all_records(labels)}
    assert segs == {"onset", "phrase"}  # notes/chords at their attack and phrases both occur
    assert (out / "fxset.json").is_file()


def test_split_is_the_source_songs_split(built):
    _, _, labels = built
    for split, recs in labels.items():
        for r in recs:
            assert r["split"] == r["song_split"] == split
            assert r["song_id"] in SPLITS[split]
            assert r["clip_id"].startswith(split + "-")


def test_seen_sources_pool_train_val_test_songs_and_keep_ood(stems, tmp_path):
    """AutoFX's split: train, val and test clips come from the songs of all three; ood keeps its own; each split
    still draws its own settings."""
    out = tmp_path / "seen"
    summary = fxset.build_fxset(stems, out, clips_per_class=12, seed=1, chains=False, classes=["feedback_delay"],
                                seen_sources=True)
    assert summary["seen_sources"] is True
    pooled = {s: v for s, v in SPLITS.items() if s != "ood"}
    labels = {s: fxset.read_labels(out, s) for s in SPLITS}
    for split, recs in labels.items():
        for r in recs:
            assert r["split"] == split
            if split == "ood":
                assert r["song_split"] == "ood" and r["song_id"] in SPLITS["ood"]
            else:
                assert r["song_id"] in pooled[r["song_split"]]
    # 36 in-domain clips, each from one of 4 songs: each split's songs feed some (missing one: p < 1e-4; seeded)
    assert {r["song_split"] for s in pooled for r in labels[s]} == set(pooled)
    # the same clip index in two splits is drawn from different seeds
    t = [r["controls"][0]["controls"] for r in labels["train"]]
    v = [r["controls"][0]["controls"] for r in labels["val"]]
    assert all(a != b for a, b in zip(t, v))


# The sub-ranges the issue names, restated independently of the module's table.
PHYSICAL_LIMITS = {
    "slapback_delay": {"time_ms": (60, 150), "feedback": (0, 0.2)},
    "feedback_delay": {"time_ms": (200, 600), "feedback": (0.35, 0.75)},
    "flanger": {"delay_ms": (0.5, 5), "feedback": (0.3, 0.7)},
    "chorus": {"delay_ms": (8, 20), "feedback": (0, 0.1)},
    "vibrato": {"mix": (1, 1), "feedback": (0, 0)},
    "overdrive": {"drive_db": (10, 25), "low_shelf_gain": (-3, 3), "high_shelf_gain": (-3, 3)},
    "distortion": {"drive_db": (25, 40), "low_shelf_gain": (-3, 3), "high_shelf_gain": (-3, 3)},
    "fuzz": {"drive_db": (40, 60), "low_shelf_gain": (-3, 3), "high_shelf_gain": (-3, 3)},
    "compression": {"threshold_db": (-60, -28), "ratio": (4, 20)},
    "tremolo": {"depth": (0.5, 1)},
}


def _stages(rec):
    return [(e["name"], {k: v["value"] for k, v in e["params"].items()}) for e in rec["preset"]["effects"]]


def test_presets_lie_in_their_class_subranges(built):
    _, _, labels = built
    seen = set()
    for r in all_records(labels):
        if r["fine_class"] == "dry":
            assert r["preset"] is None and r["effects"] == [] and r["labels"] == ["dry"]
            continue
        stages = _stages(r)
        assert len(stages) == len(r["fine_labels"]) == len(r["controls"])
        for fine, (name, values), ctl in zip(r["fine_labels"], stages, r["controls"]):
            cls = fxset.FXSET_CLASSES[fine]
            assert name == cls.effect == ctl["effect"]
            for p, (lo, hi) in cls.ranges.items():
                assert lo - 1e-4 * max(1, abs(lo)) <= values[p] <= hi + 1e-4 * max(1, abs(hi)), (fine, p, values[p])
            for p, (lo, hi) in PHYSICAL_LIMITS.get(fine, {}).items():
                assert lo - 1e-4 <= values[p] <= hi + 1e-4, (fine, p, values[p])
            if fine == "eq":
                assert max(abs(v) for k, v in values.items() if k.endswith("_gain")) >= 6.0
            # normalized controls in [0, 1] that map back to the physical values
            effect = get_effect(name)
            assert len(ctl["controls"]) == effect.n_params
            for spec, u in zip(effect.specs, ctl["controls"]):
                assert -1e-6 <= u <= 1 + 1e-6
                back = float(spec.to_physical(torch.tensor(u, dtype=torch.float64)))
                assert back == pytest.approx(values[spec.name], rel=1e-4, abs=1e-4)
            seen.add(fine)
    assert seen == set(fxset.FINE_CLASSES) - {"dry"}


def _sines(freqs_gains: dict[float, float], seconds: float = 1.0) -> torch.Tensor:
    t = np.arange(int(seconds * SR)) / SR
    y = sum(10 ** (g / 20) * np.sin(2 * np.pi * f * t) for f, g in freqs_gains.items())
    return torch.from_numpy(np.stack([y, y]))[None]


def test_spectrum_change_is_the_largest_band_gain_change():
    # two tones in distinct third-octave bands; one turned up by 6 dB. Level-matched (total power), the bands move
    # by closed-form amounts: total power ratio r = (10^0.6 + 1) / 2, so the changes are 6 - 10 log10 r and -10 log10 r
    x = _sines({250.0: 0.0, 2000.0: 0.0})
    y = _sines({250.0: 0.0, 2000.0: 6.0})
    r = 10 * np.log10((10 ** 0.6 + 1) / 2)
    assert fxset.spectrum_change_db(x, y, SR) == pytest.approx(max(6 - r, r), abs=0.05)
    assert fxset.spectrum_change_db(x, x * 0.5, SR) == pytest.approx(0.0, abs=1e-9)  # a level change is no EQ
    # a change in a band 60 dB under the loudest is not heard (floor BAND_FLOOR_DB = 40 dB)
    quiet = _sines({250.0: 0.0, 8000.0: -60.0})
    assert fxset.spectrum_change_db(quiet, _sines({250.0: 0.0, 8000.0: -54.0}), SR) == pytest.approx(0.0, abs=1e-3)


def test_single_eq_and_drive_clips_are_heard_on_their_source(built, stems):
    _, _, labels = built
    eqs = [r for r in all_records(labels) if r["fine_class"] in ("eq", "overdrive", "distortion", "fuzz")]
    assert {r["fine_class"] for r in eqs} == {"eq", "overdrive", "distortion", "fuzz"}
    for r in eqs:
        x = at_input_loudness(read_source(stems, r))
        y = Chain.from_preset(r["preset"])(x, SR)
        assert fxset.spectrum_change_db(x, y, SR) >= fxset.AUDIBLE_CHANGE_DB


def test_rerendering_the_preset_reproduces_the_clip(built, stems):
    out, _, labels = built
    for r in all_records(labels):
        x = at_input_loudness(read_source(stems, r))
        y = x if r["preset"] is None else Chain.from_preset(r["preset"])(x, SR)
        y = y * float(10 ** (r["output_gain_db"] / 20))
        clip = read_clip(out, r)
        err = float((clip - y).abs().max())
        assert err < 2e-4, (r["clip_id"], err)  # 24-bit FLAC step is 1.2e-7; loudness meters agree to ~1e-3 dB


def test_dry_is_the_unprocessed_source(built, stems):
    out, _, labels = built
    for r in all_records(labels):
        if r["fine_class"] != "dry":
            continue
        x, clip = read_source(stems, r), read_clip(out, r)
        g = float((clip * x).sum() / (x * x).sum())  # least-squares gain: dry = gain only
        assert float((clip - g * x).abs().max()) < 1e-5


def test_chains_have_2_to_3_distinct_aggregated_labels(built):
    _, _, labels = built
    chains = [r for r in all_records(labels) if r["fine_class"] == "chain"]
    assert len(chains) == 16
    sizes = set()
    for r in chains:
        assert 2 <= len(r["labels"]) <= 3 and len(set(r["labels"])) == len(r["labels"])
        assert "dry" not in r["labels"]
        assert [fxset.FXSET_CLASSES[f].aggregated for f in r["fine_labels"]] == r["labels"]
        assert r["labels"] == sorted(r["labels"], key=fxset.CHAIN_ORDER.index)
        sizes.add(len(r["labels"]))
    assert sizes == {2, 3}


def test_deterministic_and_resumable(built, stems, tmp_path):
    out, _, labels = built
    kw = dict(clips_per_class=1, seed=3, chain_clips=4, splits=["val"])
    again = fxset.build_fxset(stems, tmp_path / "a", **kw)
    assert again["rendered"] == len(labels["val"])
    strip = lambda recs: [{k: v for k, v in r.items() if k != "song_path"} for r in recs]  # noqa: E731
    assert strip(fxset.read_labels(tmp_path / "a", "val")) == strip(labels["val"])
    for r in labels["val"]:
        torch.testing.assert_close(read_clip(tmp_path / "a", r), read_clip(out, r), atol=0, rtol=0)
    # resume: delete one clip, rebuild; only that clip is rendered again, identical
    victim = labels["val"][5]
    (tmp_path / "a" / "val" / f"{victim['clip_id']}.flac").unlink()
    resumed = fxset.build_fxset(stems, tmp_path / "a", **kw)
    assert resumed["rendered"] == 1 and resumed["resumed"] == len(labels["val"]) - 1
    torch.testing.assert_close(read_clip(tmp_path / "a", victim), read_clip(out, victim), atol=0, rtol=0)
    # two worker processes build the same set, in the same order: the same draws, and the same samples but for
    # float rounding (a worker runs one torch thread; reductions split over threads round differently: 1 LSB)
    par = fxset.build_fxset(stems, tmp_path / "w", workers=2, **kw)
    assert par["rendered"] == len(labels["val"])
    assert strip(fxset.read_labels(tmp_path / "w", "val")) == strip(labels["val"])
    for r in labels["val"]:
        torch.testing.assert_close(read_clip(tmp_path / "w", r), read_clip(out, r), atol=2.0 ** -22, rtol=0)
    # another seed draws other settings
    other = fxset.build_fxset(stems, tmp_path / "b", **{**kw, "seed": 4})
    assert other["rendered"] == len(labels["val"])
    assert strip(fxset.read_labels(tmp_path / "b", "val")) != strip(labels["val"])


def test_randomized_internals_change_only_the_internals(stems, tmp_path):
    kw = dict(clips_per_class=1, seed=2, chain_clips=2, splits=["val"],
              classes=["chorus", "phaser", "reverb", "overdrive"])
    fxset.build_fxset(stems, tmp_path / "a", **kw)
    plain = {r["clip_id"]: r for r in fxset.read_labels(tmp_path / "a", "val")}
    summary = fxset.build_fxset(stems, tmp_path / "b", randomize_internals=True, **kw)
    assert summary["randomize_internals"] == sorted(fxset.RANDOMIZED_INTERNALS)
    for r in fxset.read_labels(tmp_path / "b", "val"):
        p = plain[r["clip_id"]]
        assert r["randomized_internals"] == sorted(set(r["fine_labels"]) & set(fxset.RANDOMIZED_INTERNALS))
        assert p["randomized_internals"] == []
        assert (r["offset_s"], r["instrument"], r["fine_labels"]) == (p["offset_s"], p["instrument"], p["fine_labels"])
        for e, pe, fine in zip(r["preset"]["effects"], p["preset"]["effects"], r["fine_labels"]):
            internals = fxset.RANDOMIZED_INTERNALS.get(fine, {})
            same = {k for k in e["params"] if not ("mix_scale" in internals and k == "mix")}
            assert {k: e["params"][k] for k in same} == {k: pe["params"][k] for k in same}  # the same settings ...
            if "mix_scale" in internals:  # ... but the mix law: a scaled mix
                lo, hi = internals["mix_scale"]
                ratio = e["params"]["mix"]["value"] / pe["params"]["mix"]["value"]
                assert lo - 1e-6 <= ratio <= hi + 1e-6
            for key, spec in internals.items():  # ... and other internals, in range (or the effect's default)
                if key == "mix_scale":
                    continue
                v = e["config"].get(key)
                if v is None:  # the effect's default, which a config leaves out (a bias of 0, a mid frequency
                    # without a mid gain)
                    assert (spec[3:] == (None,) or (key == "bias" and spec[0] == 0.0)
                            or (key == "mid_freq_hz" and "mid_gain_db" not in e["config"])), (fine, key)
                    continue
                assert v in spec if isinstance(spec[0], int) else spec[0] <= v <= spec[1], (fine, key, v)
            if fine == "reverb":
                assert e["config"] == pe["config"]
        # the preset carries the internals: re-rendering it gives the clip
        x = at_input_loudness(read_source(stems, r))
        y = Chain.from_preset(r["preset"])(x, SR) * float(10 ** (r["output_gain_db"] / 20))
        assert float((read_clip(tmp_path / "b", r) - y).abs().max()) < 2e-4, r["clip_id"]


def test_randomized_stereo_phase_is_mono_and_each_amp_stage_off_half_the_time():
    rng = np.random.default_rng(0)
    phases = np.array([fxset._draw_internals("flanger", rng)["stereo_phase_deg"] for _ in range(2000)])
    mono = phases == 0.0
    assert abs(mono.mean() - 0.5) < 0.05  # binomial sd 0.011
    assert 0.0 < phases[~mono].min() and phases[~mono].max() <= 180.0 and phases[~mono].std() > 40  # U(0, 180): 52
    drives = [fxset._draw_internals("fuzz", rng) for _ in range(2000)]
    for key, (lo, hi) in (("cabinet_lowpass_hz", (2500.0, 12000.0)), ("input_highpass_hz", (60.0, 800.0)),
                          ("mid_gain_db", (-15.0, 6.0))):
        on = np.array([d[key] for d in drives if d.get(key) is not None])
        assert abs(len(on) / 2000 - 0.5) < 0.05 and lo <= on.min() and on.max() <= hi, key
    biased = np.array([d["bias"] for d in drives]) > 0.0
    assert abs(biased.mean() - 0.5) < 0.05
    get_effect("distortion", **drives[0])  # every draw is a valid config


def test_randomizing_some_classes_leaves_the_others_as_built(stems, tmp_path):
    kw = dict(clips_per_class=1, seed=3, chain_clips=3, splits=["val"], classes=["phaser", "overdrive", "eq"])
    fxset.build_fxset(stems, tmp_path / "a", **kw)
    plain = {r["clip_id"]: r for r in fxset.read_labels(tmp_path / "a", "val")}
    summary = fxset.build_fxset(stems, tmp_path / "b", randomize_internals=["overdrive"], **kw)
    assert summary["randomize_internals"] == ["overdrive"]
    for r in fxset.read_labels(tmp_path / "b", "val"):
        p = plain[r["clip_id"]]
        configs = {e["name"]: e["config"] for e in r["preset"]["effects"]}
        if "overdrive" in r["fine_labels"]:
            assert r["randomized_internals"] == ["overdrive"]
            cabinet = configs["distortion"].get("cabinet_lowpass_hz")  # on half the clips
            assert cabinet is None or 2500.0 <= cabinet <= 12000.0
        else:  # the phaser's internals stay the class's, and the clip is the one built without randomization
            assert r["randomized_internals"] == [] and r["preset"] == p["preset"]
            assert torch.equal(read_clip(tmp_path / "b", r), read_clip(tmp_path / "a", p))
    with pytest.raises(FxlensError, match="no internals to randomize.*reverb"):
        fxset.build_fxset(stems, tmp_path / "c", randomize_internals=["reverb"], **kw)


def test_pedalboard_variant(stems, tmp_path):
    pedalboard = pytest.importorskip("pedalboard")
    summary = fxset.build_fxset(stems, tmp_path, clips_per_class=1, seed=1, chain_clips=3, splits=["test"],
                                implementation="pedalboard")
    assert summary["skipped_classes"] == ["tremolo"]
    recs = fxset.read_labels(tmp_path, "test")
    assert sorted(r["fine_class"] for r in recs) == sorted([c for c in fxset.FINE_CLASSES if c != "tremolo"]
                                                            + ["chain"] * 3)
    for r in recs:
        assert r["implementation"] == "pedalboard" and r["preset"] is None and "tremolo" not in r["fine_labels"]
        x = at_input_loudness(read_source(stems, r))
        board = pedalboard.Pedalboard([getattr(pedalboard, s["plugin"])(**s["params"]) for s in r["pedalboard"]])
        y = torch.from_numpy(board(x[0].numpy(), float(SR)))[None][..., : x.shape[-1]]
        y = y * float(10 ** (r["output_gain_db"] / 20))
        assert float((read_clip(tmp_path, r) - y).abs().max()) < 2e-4, r["clip_id"]
        if r["fine_class"] == "fuzz":
            assert 40 <= r["pedalboard"][0]["params"]["drive_db"] <= 60


def test_pedalboard_missing_is_a_clear_error(stems, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pedalboard", None)  # import pedalboard -> ImportError
    with pytest.raises(FxlensError, match="pedalboard"):
        fxset.build_fxset(stems, tmp_path, clips_per_class=1, implementation="pedalboard")
    assert not any(tmp_path.iterdir())


def test_bad_arguments(stems, tmp_path):
    with pytest.raises(FxlensError, match="implementation"):
        fxset.build_fxset(stems, tmp_path, implementation="vst")
    with pytest.raises(FxlensError, match="fxlens renderings only"):
        fxset.build_fxset(stems, tmp_path, implementation="pedalboard", randomize_internals=True)
    with pytest.raises(FxlensError, match="unknown fxset class"):
        fxset.build_fxset(stems, tmp_path, classes=["wah"])
    with pytest.raises(FxlensError, match="splits"):
        fxset.build_fxset(stems, tmp_path, splits=["nope"])
    with pytest.raises(FxlensError, match="workers"):
        fxset.build_fxset(stems, tmp_path, workers=0)
    with pytest.raises(FxlensError):
        fxset.read_labels(tmp_path, "train")

"""Single guitar notes (`fxlens.data.notes`, AutoFX's kind of sound) and AutoFX's parameter protocol classes.

The plan is checked against the fretboard it claims (open string to 12th fret on six strings in standard tuning);
a rendered song against the plan (each note's onset where the plan puts it, its pitch from a spectrum peak); the
protocol classes' draws against a uniform law with scipy's Kolmogorov-Smirnov test. Rendering needs fluidsynth and
the soundfonts and skips without them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from conftest import need_renderer
from fxlens import audio as fxaudio
from fxlens.data import fxset
from fxlens.data import notes as N
from fxlens.data import render as R
from fxlens.errors import FxlensError
from fxlens.fx.effect import get_effect


def test_plan_covers_the_fretboard_and_splits_by_song():
    plans = N.plan_notes(takes=3, seed=0)
    combos = 2 * 5 * 6  # in-domain soundfonts x clean guitar programs x strings
    assert len(plans) == 3 * combos + 5 * 6
    by_split = {s: [p for p in plans if p.split == s] for s in ("train", "val", "test", "ood")}
    assert [len(by_split[s]) for s in ("val", "test", "ood")] == [18, 18, 30]
    assert {p.font for p in by_split["ood"]} == {R.HELD_OUT_SOUNDFONT}
    assert R.HELD_OUT_SOUNDFONT not in {p.font for s in ("train", "val", "test") for p in by_split[s]}
    assert len({p.song_id for p in plans}) == len(plans)
    for p in plans:
        track = p.track()
        assert [n.pitch for n in track.notes] == list(range(p.string_midi, p.string_midi + 13))
        assert all(70 <= n.velocity <= 120 for n in track.notes)
        starts = [n.start for n in track.notes]
        assert np.allclose(np.diff(starts), N.NOTE_SLOT_S) and N.NOTE_HOLD_S < N.NOTE_SLOT_S
        assert p.program not in (29, 30)  # overdriven and distortion guitars carry an effect
    assert {p.string_midi for p in plans} == {40, 45, 50, 55, 59, 64}
    assert N.plan_notes(takes=3, seed=0) == plans and N.plan_notes(takes=3, seed=1) != plans
    with pytest.raises(FxlensError):
        N.plan_notes(takes=0)


@pytest.fixture(scope="module")
def one_song(tmp_path_factory):
    need_renderer(("fluidr3",))
    plan = next(p for p in N.plan_notes() if p.font == "fluidr3" and p.instrument == "electric_guitar"
                and p.string_midi == 45)
    plan = N.NotePlan(plan.song_id, "val", *[getattr(plan, k) for k in ("font", "instrument", "program",
                                                                           "string_midi", "take", "velocities")])
    root = tmp_path_factory.mktemp("notes")
    assert N.render_note_song(plan, root) is True
    assert N.render_note_song(plan, root) is False  # kept on a rerun
    return root, plan


def test_rendered_notes_start_where_planned_at_the_planned_pitch(one_song):
    root, plan = one_song
    folder = root / "val" / plan.song_id
    meta = json.loads((folder / "song.json").read_text())
    assert meta["string_midi"] == 45 and len(meta["notes"]) == 13
    x, sr = fxaudio.load_with_rate(folder / f"{plan.instrument}.flac", None)
    mono = x[0].double().mean(0).numpy()
    hop = int(0.005 * sr)
    env = 10 * np.log10(np.add.reduceat(mono ** 2, np.arange(0, len(mono), hop)) / hop + 1e-12)
    for n in plan.track().notes:
        k = int(round(n.start * sr / hop))
        before, after = env[k - 6:k - 1].max(), env[k + 1:k + 8].max()
        assert after - before > 10.0, f"no attack at {n.start:.2f} s"
        seg = mono[int((n.start + 0.05) * sr): int((n.start + 0.55) * sr)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
        freqs = np.fft.rfftfreq(8 * len(seg), 1 / sr)
        f0 = 440.0 * 2 ** ((n.pitch - 69) / 12)
        peaks = freqs[np.argsort(spec)[-5:]]  # the strongest partials are harmonics of the note's f0
        ratios = peaks / f0
        assert np.all(np.abs(ratios - np.round(ratios)) < 0.03) and np.all(np.round(ratios) >= 1)


def test_onset_clips_of_the_notes_hold_one_note(one_song, tmp_path):
    root, plan = one_song
    fxset.build_fxset(root, tmp_path / "fx", clips_per_class=6, chains=False, classes=["dry"], onset_fraction=1.0)
    labels = fxset.read_labels(tmp_path / "fx", "val")
    starts = np.array([n.start for n in plan.track().notes])
    onset = [r for r in labels if r["segment"] == "onset"]
    assert len(onset) >= 4  # an onset needs 1.5 s after it in the 3 s window searched: most draws find one
    for r in onset:  # 10 ms before a planned onset (the envelope's 10 ms hop), and the next note outside the clip
        gap = starts - (r["offset_s"] + fxset.ONSET_PRE_S)
        k = int(np.argmin(np.abs(gap)))
        assert abs(gap[k]) <= 0.011
        assert k == len(starts) - 1 or starts[k + 1] >= r["offset_s"] + r["seconds"]


def test_autofx_parameter_classes_draw_uniformly_over_the_whole_range():
    assert not set(fxset.AUTOFX_PARAMETER_CLASSES) & set(fxset.FINE_CLASSES)
    rng = np.random.default_rng(0)
    for name in fxset.AUTOFX_PARAMETER_CLASSES:
        cls = fxset.FXSET_CLASSES[name]
        effect = get_effect(cls.effect)
        draws = [fxset._draw_fxlens(cls, rng) for _ in range(1500)]
        for spec in effect.specs:
            v = np.array([d[spec.name] for d in draws])
            if spec.name in cls.ranges and cls.ranges[spec.name][0] == cls.ranges[spec.name][1]:
                assert np.all(v == cls.ranges[spec.name][0])
                continue
            assert v.min() >= spec.min and v.max() <= spec.max
            # uniform in physical units (log-scaled times and rates too, as AutoFX draws them)
            p = stats.kstest(v, stats.uniform(spec.min, spec.max - spec.min).cdf).pvalue
            assert p > 1e-3, (name, spec.name, p)


def test_autofx_parameter_classes_only_on_request(one_song, tmp_path):
    root, _ = one_song
    with pytest.raises(FxlensError, match="unknown fxset class"):
        fxset.build_fxset(root, tmp_path / "x", classes=["autofx_chorus"])
    fxset.build_fxset(root, tmp_path / "afx", clips_per_class=2, chains=False, onset_fraction=1.0,
                      classes=list(fxset.AUTOFX_PARAMETER_CLASSES))
    labels = fxset.read_labels(tmp_path / "afx", "val")
    assert sorted({r["fine_class"] for r in labels}) == sorted(fxset.AUTOFX_PARAMETER_CLASSES)
    assert {r["effects"][0] for r in labels} == {"modulated_delay", "delay", "distortion"}
    assert fxset.aggregated_of(list(fxset.AUTOFX_PARAMETER_CLASSES)) == ["modulation", "delay", "distortion"]


def test_cli_bad_arguments_are_one_line(tmp_path, capsys):
    from fxlens.cli import main

    assert main(["data", "notes", str(tmp_path / "n"), "--takes", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "takes must be >= 1" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "n").exists()
    assert main(["data", "fxset", str(tmp_path), str(tmp_path / "f"), "--onset-fraction", "2"]) == 1
    assert "--onset-fraction" in capsys.readouterr().err

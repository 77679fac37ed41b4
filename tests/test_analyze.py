"""`fxlens.analyze` / `fxlens analyze`: shipped checkpoints, any input format, bad input, preset round trip.

The effects are put on synthetic notes with fxlens's own chain (the reference is the effect we applied, not an
earlier output of the analyzer); only the three classes that the shipped recognizer gets right on 85 % or more of
test clips (distortion, delay, tremolo) are asked for by name.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import fxlens
from fxlens.errors import CheckpointError, InvalidAudioError, ParameterError
from fxlens.fx.chain import Chain
from fxlens.fx.effect import get_effect
from fxlens.fx.preset import read_preset
from fxlens.models.classifier import fit_temperature
from fxlens.models.estimator import REFINEMENTS
from fxlens.tasks.analyze import MAX_WINDOWS, assets_dir, timed_windows, windows
from test_cli import assert_one_line_error, run
from test_fxset import notes

SR = 44100


@pytest.fixture(scope="module")
def dry():
    return torch.from_numpy(notes(6.0, 220.0, 1, 2).T.copy())[None]  # (1, 2, T)


def _wet(dry, name, params):
    with torch.no_grad():
        return Chain([(get_effect(name), params)])(dry, SR)


def test_shipped_checkpoints_are_small_and_documented():
    for name, kind in (("recognizer-small", "recognizer"), ("estimator-small", "estimator")):
        folder = assets_dir() / name
        size = sum(p.stat().st_size for p in folder.iterdir())
        assert size < 5e6, f"{name} is {size / 1e6:.1f} MB"
        card = (folder / "MODEL_CARD.md").read_text()
        assert "fxlens train" in card and json.loads((folder / "config.json").read_text())["kind"] == kind


@pytest.mark.parametrize("effect,params,expected", [
    ("distortion", {"drive_db": 55.0, "mix": 1.0}, "distortion"),
    ("delay", {"time_ms": 400.0, "feedback": 0.6, "mix": 0.5}, "delay"),
    ("tremolo", {"rate_hz": 6.0, "depth": 1.0}, "tremolo"),
])
def test_detects_clear_effects(dry, effect, params, expected):
    result = fxlens.analyze(_wet(dry, effect, params), SR)
    found = [d.aggregated_class for d in result.effects]
    if result.multilabel:  # independent effects: each probability in [0, 1], "dry" = none on
        assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
        # anything reported beside the effect put on must be what the source itself is heard as (the synthetic
        # notes' hard harmonics read as mild distortion)
        on_source = {d.aggregated_class for d in fxlens.analyze(dry, SR).effects}
        assert expected in found and set(found) - {expected} <= on_source
    else:
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert found == [expected]
    assert result.probabilities[expected] == max(result.probabilities.values())
    d = next(d for d in result.effects if d.aggregated_class == expected)
    assert d.effect == effect
    # settings are physical values inside each parameter's declared range, with units
    for spec in get_effect(effect).specs:
        assert spec.min <= d.settings[spec.name] <= spec.max and d.units[spec.name] == spec.unit
    if d.fine_class in REFINEMENTS:  # a tremolo's rate, a delay's time: re-read from the audio, within 2 %
        p = REFINEMENTS[d.fine_class].param
        assert d.settings[p] == pytest.approx(params[p], rel=0.02) and d.measured == [p]
    else:
        assert d.measured == []


def test_typical_errors_are_the_validation_errors_around_the_estimate(dry, tmp_path):
    """Each regressed free setting carries the estimator's validation MAE for its class (the checkpoint's
    metrics.json), turned into physical units around the estimate: recomputed here with numpy from the file and the
    parameter's range. Settings read from the audio and settings the class pins carry none; an estimator folder
    without metrics.json gives none at all."""
    import shutil

    from fxlens.data.fxset import FXSET_CLASSES

    metrics = json.loads((assets_dir() / "estimator-small" / "metrics.json").read_text())
    result = fxlens.analyze(_wet(dry, "delay", {"time_ms": 400.0, "feedback": 0.6, "mix": 0.5}), SR)
    d = next(d for d in result.effects if d.aggregated_class == "delay")
    val = metrics["splits"]["val"]["per_class"][d.fine_class]["params"]
    pinned = {k for k, (lo, hi) in FXSET_CLASSES[d.fine_class].ranges.items() if lo == hi}
    free = [s for s in get_effect(d.effect).specs if s.name not in pinned and s.name not in d.measured]
    assert set(d.typical_error) == {s.name for s in free} and d.measured == ["time_ms"]
    for s in free:
        u, e = d.controls[s.name], val[s.name]["model"]
        a, b = np.clip([u - e, u + e], 0.0, 1.0)
        phys = (lambda v: s.min * (s.max / s.min) ** v) if s.scale == "log" else (lambda v: s.min + v * (s.max - s.min))
        assert d.typical_error[s.name] == pytest.approx((phys(b) - phys(a)) / 2, rel=1e-5)
    assert d.near_class_mean == [s.name for s in free if val[s.name]["model"] >= 0.95 * val[s.name]["class_mean"]]
    bare = tmp_path / "est"
    shutil.copytree(assets_dir() / "estimator-small", bare)
    (bare / "metrics.json").unlink()
    result = fxlens.analyze(_wet(dry, "delay", {"time_ms": 400.0, "feedback": 0.6, "mix": 0.5}), SR, estimator=bare)
    assert all(not d.typical_error and not d.near_class_mean for d in result.effects)


def test_a_clip_shorter_than_a_window_has_its_period_read_without_the_padding(dry):
    """0.8 s of tremolo is padded with silence to one 1.5 s window for the recognizer; the rate is read from the
    0.8 s themselves (a padded envelope's step would swamp its period)."""
    result = fxlens.analyze(_wet(dry[..., : int(0.8 * SR)], "tremolo", {"rate_hz": 6.0, "depth": 1.0}), SR)
    assert result.windows == 1 and [d.aggregated_class for d in result.effects] == ["tremolo"]
    assert result.effects[0].settings["rate_hz"] == pytest.approx(6.0, rel=0.02)


def test_multilabel_reports_each_effect_over_threshold_and_dry_as_none_on(dry, monkeypatch):
    """A multi-label recognizer has no "dry" sigmoid: a window is dry when none of its effects is on, so
    P(dry) = mean over windows of prod(1 - p_k) (independent sigmoids) — checked against that closed form."""
    import fxlens.tasks.analyze as an

    classes = ["delay", "reverb", "modulation", "tremolo", "distortion", "compression", "eq"]
    per_window = torch.tensor([[0.9, 0.7, 0.1, 0.0, 0.2, 0.0, 0.1], [0.8, 0.5, 0.3, 0.0, 0.0, 0.1, 0.1]])

    class Fixed:
        def probabilities(self, features, audio=None):
            return per_window[torch.arange(features.shape[0]) % 2]

    _, ecfg = an.load_estimator()
    monkeypatch.setattr(an, "load_recognizer", lambda folder=None: (
        Fixed(), {"classes": classes, "multilabel": True, "feature_set": ecfg["feature_set"]}))
    x = dry[..., : int(3.0 * SR)]  # two 1.5 s windows: one of each row
    result = fxlens.analyze(x, SR, threshold=0.5)
    mean = per_window.double().mean(0)
    dry_p = (1 - per_window.double()).prod(1).mean()
    assert result.probabilities["dry"] == pytest.approx(float(dry_p), abs=1e-6)
    for c, m in zip(classes, mean):
        assert result.probabilities[c] == pytest.approx(float(m), abs=1e-6)
    assert [d.aggregated_class for d in result.effects] == ["delay", "reverb"]  # 0.85 and 0.6; the rest below


def test_aggregate_probabilities_closed_forms():
    from fxlens.data.fxset import AGGREGATED_CLASSES, aggregate_probabilities

    classes = ["chorus", "phaser", "reverb"]
    p = np.array([[0.4, 0.5, 0.1]])
    ml = dict(zip(AGGREGATED_CLASSES, aggregate_probabilities(classes, p, multilabel=True)[0]))
    assert ml["modulation"] == pytest.approx(1 - 0.6 * 0.5) and ml["reverb"] == pytest.approx(0.1)
    assert ml["dry"] == pytest.approx(0.6 * 0.5 * 0.9) and ml["delay"] == 0.0
    soft = aggregate_probabilities(classes + ["dry"], np.array([[0.2, 0.3, 0.1, 0.4]]))[0]
    soft = dict(zip(AGGREGATED_CLASSES, soft))
    assert soft["modulation"] == pytest.approx(0.5) and soft["dry"] == pytest.approx(0.4)


def test_fine_multilabel_reports_a_group_and_its_most_probable_member(dry, monkeypatch):
    """Over fine classes, a group is on when any member is (1 - prod(1 - p)): chorus 0.4 and phaser 0.5 give
    modulation 0.7, reported as its most probable member, the phaser."""
    import fxlens.tasks.analyze as an

    classes = ["chorus", "phaser", "reverb", "fuzz"]

    class Fixed:
        def probabilities(self, features, audio=None):
            return torch.tensor([[0.4, 0.5, 0.1, 0.3]]).expand(features.shape[0], -1)

    _, ecfg = an.load_estimator()
    monkeypatch.setattr(an, "load_recognizer", lambda folder=None: (
        Fixed(), {"classes": classes, "multilabel": True, "feature_set": ecfg["feature_set"]}))
    result = fxlens.analyze(dry[..., : int(3.0 * SR)], SR, threshold=0.5)
    assert result.probabilities["modulation"] == pytest.approx(0.7, abs=1e-6)
    assert result.probabilities["dry"] == pytest.approx(0.6 * 0.5 * 0.9 * 0.7, abs=1e-6)
    assert [(d.aggregated_class, d.fine_class, d.effect) for d in result.effects] == [
        ("modulation", "phaser", "phaser")]


def test_delay_time_estimate_is_near_the_applied_time(dry):
    result = fxlens.analyze(_wet(dry, "delay", {"time_ms": 400.0, "feedback": 0.6, "mix": 0.5}), SR)
    assert result.effects[0].settings["time_ms"] == pytest.approx(400.0, rel=0.25)


def test_preset_rebuilds_a_chain(dry):
    result = fxlens.analyze(_wet(dry, "distortion", {"drive_db": 55.0, "mix": 1.0}), SR)
    chain = Chain.from_preset(result.preset)
    assert [e.name for e in chain.effects] == ["distortion"]
    assert result.preset["effects"][0]["params"]["mix"]["value"] == 1.0  # fixed by the fuzz class
    y = chain(dry, SR)
    assert y.shape == dry.shape and bool(torch.isfinite(y).all())


def test_any_rate_channels_and_layout(dry):
    fuzz = _wet(dry, "distortion", {"drive_db": 55.0, "mix": 1.0})[0]  # (2, T)
    mono22 = fxlens.audio.resample(fuzz.mean(0), SR, 22050).numpy()  # (T,) numpy at 22.05 kHz
    r = fxlens.analyze(mono22, 22050)
    assert r.sample_rate == 22050 and r.duration_s == pytest.approx(6.0, abs=1e-3)
    six = torch.cat([fuzz, fuzz, fuzz], 0)  # 6 channels (read as 5.1)
    r6 = fxlens.analyze(fxlens.audio.resample(six, SR, 48000), 48000)
    assert [d.aggregated_class for d in r6.effects] == ["distortion"]
    pcm = (fuzz.T.numpy() * 20000).astype(np.int16).T.copy()  # int16 PCM (C, T)
    assert [d.aggregated_class for d in fxlens.analyze(pcm, SR).effects] == ["distortion"]


def test_windows_of_long_and_short_audio():
    g = torch.Generator().manual_seed(0)
    long = torch.randn(1, 2, 200 * SR, generator=g) * 0.01
    w = windows(long)
    assert w.shape == (MAX_WINDOWS, 2, int(1.5 * SR))
    # every window is normalized to the fxset output loudness (-18 LUFS) or peak-limited below it
    lufs = fxlens.audio.integrated_loudness(w, SR)
    assert bool(((lufs - (-18.0)).abs() < 0.1).all())
    short = torch.randn(1, 2, SR // 2, generator=g) * 0.1  # 0.5 s: padded to one 1.5 s window
    assert windows(short).shape == (1, 2, int(1.5 * SR))
    half_silent = torch.cat([torch.zeros(1, 2, 3 * SR), torch.randn(1, 2, 3 * SR, generator=g) * 0.1], -1)
    assert windows(half_silent).shape[0] == 2  # the silent windows are skipped
    segs, starts = timed_windows(half_silent)
    assert torch.equal(segs, windows(half_silent)) and starts == [3.0, 4.5]  # where the kept windows start
    assert timed_windows(long)[1] == [round(k * 1.5 * SR) / SR for k in np.linspace(0, 132, MAX_WINDOWS).round()]


def test_timeline_averages_to_the_probabilities_and_effects_heard_in_part(dry):
    """The per-window readings average to the reported probabilities; an effect on the second half of a recording
    only is named, with where it is heard."""
    from fxlens.tasks.analyze import AnalysisResult, heard_in_part

    r = fxlens.analyze(torch.cat([dry, _wet(dry, "tremolo", {"rate_hz": 6.0, "depth": 1.0})], -1), SR)
    assert [w["start_s"] for w in r.timeline] == [1.5 * k for k in range(8)]
    for a, v in r.probabilities.items():
        assert v == pytest.approx(np.mean([w["probabilities"][a] for w in r.timeline]), abs=1e-6)
    probs = {a: 0.0 for a in r.probabilities}
    timeline = [{"start_s": 1.5 * k, "probabilities": probs | {"dry": 1.0 - 0.9 * (k >= 4), "reverb": 0.9 * (k >= 4)}}
                for k in range(8)]
    timeline[1]["probabilities"] = probs | {"reverb": 0.9}  # one stray window: not a run
    made = AnalysisResult(SR, 12.0, 8, probs | {"reverb": 0.45}, {}, [], {}, True, timeline=timeline)
    assert heard_in_part(made) == [{"aggregated_class": "reverb", "windows": 5, "of": 8, "run": 4, "from_s": 6.0,
                                    "to_s": 12.0}]
    assert heard_in_part(made, min_run=5) == [] and heard_in_part(made, threshold=0.95) == []
    timeline[5]["probabilities"] = probs  # the run broken in two: 1 + 2 windows, under the 3 in a row asked
    assert heard_in_part(made) == []


@pytest.mark.parametrize("bad,error", [
    (torch.zeros(1, 2, 3 * SR), InvalidAudioError),  # silent
    (torch.full((1, 2, 3 * SR), float("nan")), InvalidAudioError),
    (torch.randn(1, 2, SR // 10), InvalidAudioError),  # 0.1 s: too short
    (torch.randn(2, 2, SR), InvalidAudioError),  # a batch, not one recording
    (torch.randn(1, 10, SR), InvalidAudioError),  # 10 channels
])
def test_bad_audio_raises(bad, error):
    with pytest.raises(error):
        fxlens.analyze(bad, SR)


def test_bad_rate_and_wrong_checkpoint(dry, tmp_path):
    with pytest.raises(ParameterError):
        fxlens.analyze(dry, 0)
    with pytest.raises(CheckpointError, match="'estimator' checkpoint"):
        fxlens.analyze(dry, SR, recognizer=assets_dir() / "estimator-small")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        fxlens.analyze(dry, SR, estimator=tmp_path)


def test_fit_temperature_recovers_a_known_temperature():
    """Labels drawn from softmax(z / 3) make T = 3 the maximum-likelihood temperature for logits z."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 5, generator=g) * 6
    y = torch.multinomial(torch.softmax(z / 3.0, dim=1), 1, generator=g)[:, 0]
    assert fit_temperature(z, y) == pytest.approx(3.0, rel=0.05)


# ------------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_file(dry, tmp_path_factory):
    path = tmp_path_factory.mktemp("analyze") / "fuzz.wav"
    sf.write(path, _wet(dry, "distortion", {"drive_db": 55.0, "mix": 1.0})[0].T.numpy(), SR, subtype="FLOAT")
    return path


def test_cli_analyze_writes_json_plot_and_preset(fuzz_file, tmp_path, capsys):
    out_json, plot, preset = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "p.json"
    code, out, err = run(["analyze", fuzz_file, "--json", out_json, "--plot", plot, "--preset", preset], capsys)
    assert code == 0, err
    assert "distortion" in out and "drive_db" in out and "dB" in out
    data = json.loads(out_json.read_text())
    assert data["effects"][0]["effect"] == "distortion" and data["preset"]["format"] == "fxlens-preset"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_preset(preset)["effects"][0]["name"] == "distortion"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    # the stereo image, measured (stereo_image's own test checks its values)
    assert -1.0 <= data["stereo"]["lr_correlation"] <= 1.0 and -60.0 <= data["stereo"]["side_mid_db"] <= 20.0
    assert len(data["stereo"]["bands"]) == 8 and "stereo image (measured)" in out
    assert [w["start_s"] for w in data["timeline"]] == [0.0, 1.5, 3.0, 4.5]  # the 6 s clip's windows


def test_cli_marks_the_settings_read_from_the_audio(dry, tmp_path, capsys):
    path = tmp_path / "trem.wav"
    sf.write(path, _wet(dry, "tremolo", {"rate_hz": 6.0, "depth": 1.0})[0].T.numpy(), SR, subtype="FLOAT")
    plot = tmp_path / "trem.png"
    code, out, err = run(["analyze", path, "--plot", plot], capsys)
    assert code == 0, err
    assert "rate_hz *" in out and "depth *" not in out and "read from the audio itself" in out
    assert "typical error" in out  # the ± column's caption
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # with the periodogram panel


def test_cli_preset_round_trip_into_fx_apply(fuzz_file, dry, tmp_path, capsys):
    """The preset `fxlens analyze` writes is accepted by `fxlens fx apply`, which renders what the preset says."""
    preset = tmp_path / "p.json"
    assert run(["analyze", fuzz_file, "--preset", preset], capsys)[0] == 0
    src = tmp_path / "dry.wav"
    sf.write(src, dry[0].T.numpy(), SR, subtype="FLOAT")
    out = tmp_path / "wet.wav"
    code, _, err = run(["fx", "apply", src, out, "--preset", preset], capsys)
    assert code == 0, err
    y, sr = sf.read(out, dtype="float32", always_2d=True)
    values = {k: v["value"] for k, v in json.loads(preset.read_text())["effects"][0]["params"].items()}
    # the reference renders the module form in float64; `fx apply` renders in float32, which at a fuzz's 40-60 dB
    # of drive (x100-1000 before the tanh, then float32 biquads) is about 1e-3 from float64
    ref = get_effect("distortion")(dry.double(), SR, get_effect("distortion").to_normalized(
        {k: torch.tensor([v], dtype=torch.float64) for k, v in values.items()})).float()
    assert sr == SR and y.shape == (dry.shape[-1], 2)
    assert np.abs(y.T - ref[0].numpy()).max() < 2e-3


def _bad_files(d):
    nan = d / "nan.wav"
    x = np.zeros((SR, 2), dtype=np.float32)
    x[100] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    silent = d / "silent.wav"
    sf.write(silent, np.zeros((3 * SR, 2), dtype=np.float32), SR)
    short = d / "short.wav"
    sf.write(short, 0.1 * np.ones((SR // 10, 2), dtype=np.float32), SR)
    corrupt = d / "corrupt.wav"
    corrupt.write_text("not audio")
    return {"missing": d / "missing.wav", "corrupt": corrupt, "nan": nan, "silent": silent, "short": short}


@pytest.mark.parametrize("case", ["missing", "corrupt", "nan", "silent", "short"])
def test_cli_bad_input_one_line_no_outputs(tmp_path, capsys, case):
    src = _bad_files(tmp_path)[case]
    outs = [tmp_path / "o.json", tmp_path / "o.png", tmp_path / "o.preset.json"]
    code, _, err = run(["analyze", src, "--json", outs[0], "--plot", outs[1], "--preset", outs[2]], capsys)
    assert_one_line_error(code, err)
    assert not any(p.exists() for p in outs)


def test_cli_bad_options(fuzz_file, tmp_path, capsys):
    assert_one_line_error(*run(["analyze", fuzz_file, "--plot", tmp_path / "x.txt"], capsys)[::2])
    assert_one_line_error(*run(["analyze", fuzz_file, "--threshold", "1.5"], capsys)[::2])
    assert_one_line_error(*run(["analyze", fuzz_file, "--recognizer", assets_dir() / "estimator-small"], capsys)[::2])
    assert not (tmp_path / "x.txt").exists()


def test_plot_draws_eq_and_compressor_curves(dry, tmp_path):
    from fxlens.tasks.analyze import AnalysisResult, DetectedEffect, plot_analysis

    eq, comp = get_effect("parametric_eq"), get_effect("compressor")
    eq_settings = {s.name: s.default for s in eq.specs} | {"peak2_gain": 9.0}
    comp_settings = {s.name: s.default for s in comp.specs} | {"threshold_db": -30.0, "ratio": 4.0}
    effects = [DetectedEffect("eq", 0.6, "eq", 0.6, "parametric_eq", eq.config(), eq_settings),
               DetectedEffect("compression", 0.3, "compression", 0.3, "compressor", comp.config(), comp_settings)]
    probs = {a: 0.0 for a in ("dry", "delay", "reverb", "modulation", "tremolo", "distortion", "compression", "eq")}
    result = AnalysisResult(44100, 6.0, 4, probs | {"eq": 0.6, "compression": 0.3}, {}, effects, {}, True)
    import matplotlib.pyplot as plt

    drawn = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn["titles"] = [ax.get_title() for ax in fig.axes]
        drawn["lines"] = {ax.get_title(): [ln.get_ydata() for ln in ax.get_lines()] for ax in fig.axes}
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        path = plot_analysis(result, dry, tmp_path / "a.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert len(drawn["titles"]) == 4
    eq_curve = drawn["lines"]["estimated EQ curve"][0]
    assert 8.0 < float(np.max(eq_curve)) < 10.0  # the +9 dB peak (shelves at 0 dB)
    comp_title = [t for t in drawn["titles"] if t.startswith("compressor")][0]
    out_level = drawn["lines"][comp_title][0]
    # static curve: 0 dBFS in, threshold -30 dB, ratio 4 -> -30 + 30 / 4 = -22.5 dB out (knee well below 0 dB)
    assert float(out_level[-1]) == pytest.approx(-22.5, abs=0.05)


def test_bench_reads_real_guitar_stems_window_by_window(fuzz_file, monkeypatch):
    import fxlens.data.real as real
    from fxlens.bench.recognition import markdown_report, real_guitar_readout
    from fxlens.tasks.analyze import load_recognizer

    song = real.RealRecording(name="Fuzz Song", collection="fretsonfire-muldjord", path=fuzz_file.parent,
                              stems={"electric_guitar": fuzz_file, "backing": fuzz_file}, licence="CC-BY-SA-3.0",
                              duration_s=6.0)
    monkeypatch.setattr(real, "list_real_recordings", lambda *a, **k: [song])
    model, config = load_recognizer(None)
    out = real_guitar_readout(model, config, max_windows=3)
    v = out["songs"]["Fuzz Song"]
    assert v["windows"] == 3 and sum(v["readings"].values()) == 3  # 6 s of audio, at most 3 windows asked for
    assert v["distortion_detected"] == 3 and out["share"] == 1.0  # the 55 dB fuzz we put on it, in every window
    assert "| Fuzz Song | 3 | 100.0 |" in markdown_report({"recognition": {}, "real_guitar": out})
    monkeypatch.setattr(real, "list_real_recordings", lambda *a, **k: [])
    assert real_guitar_readout(model, config) is None  # not installed: no readout


def test_cli_does_not_call_a_recording_dry_when_dry_is_unlikely(fuzz_file, monkeypatch, capsys):
    """A mix whose every effect stays under the threshold, while "dry" (none on) is unlikely too, is reported as
    undecided with its two most likely effects, not as "(none: dry)"; a likely dry one still reads as dry."""
    import fxlens.tasks.analyze as analyze_mod
    from fxlens.tasks.analyze import AnalysisResult

    def fake(probabilities):
        result = AnalysisResult(SR, 2.0, 1, probabilities, dict(probabilities), [], {"effects": []}, True)
        return lambda *a, **k: (result, torch.zeros(1, 2, SR))

    monkeypatch.setattr(analyze_mod, "analyze_file", fake({"dry": 0.07, "reverb": 0.44, "modulation": 0.46,
                                                            "delay": 0.1}))
    code, out, err = run(["analyze", fuzz_file], capsys)
    assert code == 0, err
    assert "(none: dry)" not in out and "(none reaches 0.5)" in out
    assert "modulation 0.46, reverb 0.44" in out and "--threshold 0.4" in out
    monkeypatch.setattr(analyze_mod, "analyze_file", fake({"dry": 0.8, "reverb": 0.2}))
    code, out, err = run(["analyze", fuzz_file], capsys)
    assert code == 0 and "(none: dry)" in out and "reaches" not in out


def test_plot_draws_the_windows_and_the_stereo_image(dry, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    r = fxlens.analyze(dry, SR)
    titles = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    from fxlens.tasks.analyze import plot_analysis

    plot_analysis(r, dry, tmp_path / "a.png")
    assert "effect probabilities per 1.5 s window" in titles
    assert any(t.startswith("stereo image (measured)") for t in titles)

"""The command line: normal use, and every bad input giving one line, a non-zero exit and no output file."""

import json

import numpy as np
import pytest
import soundfile as sf

from fxlens.cli import main

SR = 44100


@pytest.fixture
def clip(tmp_path):
    t = np.arange(SR) / SR
    x = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    path = tmp_path / "clip.wav"
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_24")
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err


def test_fx_list(capsys):
    code, out, _ = run(["fx", "list", "--json"], capsys)
    assert code == 0
    table = json.loads(out)
    assert table["compressor"]["params"][0]["unit"]


def test_info(clip, capsys):
    code, out, _ = run(["info", clip], capsys)
    assert code == 0 and "44100 Hz" in out and "LUFS" in out


def test_apply_random_then_preset(clip, tmp_path, capsys):
    out = tmp_path / "out.wav"
    code, _, err = run(["fx", "apply", clip, out, "--random", "--seed", "4", "--effects", "gain,compressor,delay"], capsys)
    assert code == 0, err
    preset = tmp_path / "out.preset.json"
    assert out.exists() and preset.exists()
    again = tmp_path / "again.flac"
    code, _, err = run(["fx", "apply", clip, again, "--preset", preset], capsys)
    assert code == 0, err
    a, _ = sf.read(out)
    b, _ = sf.read(again)
    assert np.abs(a - b).max() < 1e-4  # flac is 24-bit


def test_apply_a_preset_with_a_cabinet_shows_and_renders_it(clip, tmp_path, capsys):
    import scipy.signal as ss

    from fxlens.fx.chain import Chain
    from fxlens.fx.distortion import Distortion

    # drive 0 dB and a quiet input keep tanh near linear: the output is the cabinet's 4th-order Butterworth low-pass
    preset = tmp_path / "cab.json"
    preset.write_text(json.dumps(Chain([(Distortion(cabinet_lowpass_hz=2000.0), {"drive_db": 0.0})]).to_preset(SR)))
    quiet = tmp_path / "quiet.wav"
    x = 1e-3 * np.random.default_rng(0).standard_normal((SR, 2))
    sf.write(quiet, x, SR, subtype="FLOAT")
    out = tmp_path / "out.wav"
    code, shown, err = run(["fx", "apply", quiet, out, "--preset", preset], capsys)
    assert code == 0, err
    assert "cabinet_lowpass_hz (config)" in shown and "2000" in shown
    y, _ = sf.read(out)
    ref = ss.sosfilt(ss.butter(4, 2000.0, "low", fs=SR, output="sos"), x, axis=0)
    assert np.abs(y - ref).max() < 1e-3 * np.abs(ref).max() + 1e-7


@pytest.mark.parametrize(
    "make_input,extra",
    [
        (lambda d: d / "missing.wav", ["--random"]),
        (lambda d: (d / "text.wav").write_text("not audio") and d / "text.wav", ["--random"]),
        (lambda d: (d / "empty.wav").write_bytes(b"") or d / "empty.wav", ["--random"]),
    ],
    ids=["missing", "corrupt", "empty"],
)
def test_apply_bad_input_file(tmp_path, capsys, make_input, extra):
    src = make_input(tmp_path)
    out = tmp_path / "never.wav"
    code, _, err = run(["fx", "apply", src, out, *extra], capsys)
    assert_one_line_error(code, err)
    assert not out.exists() and not (tmp_path / "never.preset.json").exists()


def test_apply_nan_and_zero_length(tmp_path, capsys):
    nan = tmp_path / "nan.wav"
    x = np.zeros((SR, 2), dtype=np.float32)
    x[100] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros((0, 2), dtype=np.float32), SR)
    for src in (nan, zero):
        code, _, err = run(["fx", "apply", src, tmp_path / "o.wav", "--random"], capsys)
        assert_one_line_error(code, err)
    assert not (tmp_path / "o.wav").exists()


def test_apply_bad_options(clip, tmp_path, capsys):
    out = tmp_path / "o.wav"
    cases = [
        ["fx", "apply", clip, out, "--random", "--effects", "gain,wobble"],  # unknown effect
        ["fx", "apply", clip, out],  # neither preset nor random
        ["fx", "apply", clip, tmp_path / "o.mp4", "--random"],  # unsupported output
        ["fx", "apply", clip, out, "--preset", tmp_path / "nope.json"],  # missing preset
    ]
    for argv in cases:
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err)
    bad = tmp_path / "range.json"
    bad.write_text(json.dumps({"format": "fxlens-preset", "sample_rate": SR, "effects": [
        {"name": "gain", "config": {}, "params": {"gain_db": {"value": 60.0, "unit": "dB"}}}]}))
    code, _, err = run(["fx", "apply", clip, out, "--preset", bad], capsys)
    assert_one_line_error(code, err)
    assert "outside its range" in err
    assert not out.exists()


def test_info_silent_file_reports_minus_inf(tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((SR, 2), dtype=np.float32), SR)
    code, out, _ = run(["info", silent], capsys)
    assert code == 0 and "-inf" in out


def test_the_command_runs_under_jemalloc_when_it_is_installed():
    """`fxlens` re-executes itself with jemalloc preloaded (fxlens.launch): when, and with what environment."""
    from fxlens.launch import JEMALLOC_CONF, jemalloc_environment

    lib = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"]
    env = jemalloc_environment({"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"}, libraries=lib)
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{lib[0]} /opt/other.so", "MALLOC_CONF": JEMALLOC_CONF}
    assert jemalloc_environment({"MALLOC_CONF": "narenas:1"}, libraries=lib)["MALLOC_CONF"] == "narenas:1"
    assert jemalloc_environment(env, libraries=lib) is None  # already under it: no second re-execution
    assert jemalloc_environment({"FXLENS_MALLOC": "system"}, libraries=lib) is None
    assert jemalloc_environment({}, libraries=[]) is None  # not installed: glibc's malloc


def test_the_command_exits_with_the_cli_code_through_the_launcher(tmp_path):
    import subprocess
    import sys

    script = "import sys; sys.argv = ['fxlens', 'info', sys.argv[1]]; from fxlens.launch import run; run()"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing.wav")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr

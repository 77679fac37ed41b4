"""The recognition features as an exported program (`fxlens.features.export`, `fxlens features export`): soxr's
filter inside the graph, agreement with the eager features, fixed shapes, bad files."""

import json

import pytest
import torch

from fxlens.audio import resample
from fxlens.cli import main
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.features.export import decimate2, export_features, load_exported_features
from fxlens.features.sets import FEATURE_SETS, compute_features

SR = 44100
# The spectral skewness and kurtosis (and their deltas / per-pitch versions) weight each bin by its distance from
# the centroid to the 3rd / 4th power, so the spectrum's floor far below the peak moves them: on these signals
# float32 rounding alone changes them visibly. The skewness and kurtosis over frames of a frame-to-frame difference
# are also rounding-sensitive (they move with the FFT's thread count). Those are checked for finiteness only;
# every other feature within 1e-3 (absolute or relative). (On music the spectral slope and frames of near-silence
# are ill-conditioned too, docs/analyze.md; these test signals have neither.)
_MOMENTS = ("skewness", "kurtosis", "delta_skewness", "delta_kurtosis")


def _well_conditioned(names):
    return [i for i, n in enumerate(names)
            if not n.startswith(_MOMENTS) and not (n.startswith("delta_") and n.endswith(("_skew", "_kurtosis")))]


def _signals(n: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / SR
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (1 + 0.8 * torch.sin(2 * torch.pi * 5 * t))
    noise = torch.randn(2, n, generator=g) * 0.05
    x = torch.stack([torch.stack([tone + noise[0], tone + noise[1]]), torch.randn(2, n, generator=g) * 0.1])
    return x[:batch] if batch <= 2 else x.repeat(batch, 1, 1)[:batch]


@pytest.mark.parametrize("n", [4000, 22051, 66150])
def test_decimate2_is_soxr(n):
    """The graph's 2:1 decimation reproduces `fxlens.audio.resample` (soxr "HQ"), ends included."""
    x = _signals(n, 2)
    ref = resample(x, SR, SR // 2)
    out = decimate2(x, SR, SR // 2)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 2e-6
    with pytest.raises(FxlensError, match="decimate by 2 only"):
        decimate2(x, SR, 16000)


def test_decimate2_keeps_digital_silence_exact_and_the_filters_gradient():
    """Outputs whose whole input window is digital silence are exactly 0, as a direct convolution by the same taps
    leaves them (float64, torch's conv1d as the reference); elsewhere the two agree to float64 rounding, and the
    gradient is the direct convolution's, silent stretches included."""
    import torch.nn.functional as F

    from fxlens.features.export import soxr_halfband

    taps, lead = soxr_halfband()

    def direct(x):
        w = torch.from_numpy(taps).view(1, 1, -1)
        return F.conv1d(F.pad(x.reshape(-1, 1, x.shape[-1]), (lead, taps.size - 1 - lead)), w, stride=2)

    x = _signals(22050, 2).double()
    x[..., :3000] = 0.0  # an onset after silence, a gap, a tail
    x[..., 9000:13000] = 0.0
    x[..., -2500:] = 0.0
    out, ref = decimate2(x, SR, SR // 2).reshape(4, -1), direct(x).reshape(4, -1)
    assert bool(((out == 0) == (ref == 0)).all()) and int((ref == 0).sum()) > 1000
    assert float((out - ref).abs().max()) < 1e-12
    xx = x.clone().requires_grad_(True)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (ours,) = torch.autograd.grad((decimate2(xx, SR, SR // 2).reshape(4, -1) * g).sum(), xx)
    (theirs,) = torch.autograd.grad((direct(xx).reshape(4, -1) * g).sum(), xx)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert float(ours[..., 9500:12500].abs().min()) > 0  # silent input still gets the filter's gradient


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "features.pt2"
    info = export_features(path, "fxlens-406", seconds=0.5, batch=2)
    return path, info


def test_exported_program_matches_the_eager_features(exported):
    path, info = exported
    assert info["input_shape"] == [2, 2, 22050] and info["n_features"] == 406
    assert json.loads(path.with_suffix(".json").read_text())["feature_names"] == list(FEATURE_SETS["fxlens-406"][1])
    x = _signals(22050, 2)
    # the program runs without fxlens: torch.export.load alone
    out = torch.export.load(str(path)).module()(x)
    ref = compute_features(x, SR, "fxlens-406")
    assert out.shape == ref.shape == (2, 406) and bool(torch.isfinite(out).all())
    keep = _well_conditioned(FEATURE_SETS["fxlens-406"][1])
    assert len(keep) > 300
    torch.testing.assert_close(out[:, keep], ref[:, keep], rtol=1e-3, atol=1e-3)


def test_exported_program_checks_its_shape_and_bad_files(exported, tmp_path, caplog):
    path, _ = exported
    run = load_exported_features(path)
    assert run(_signals(22050, 2)).shape == (2, 406)
    with pytest.raises(InvalidAudioError, match=r"shape \(2, 2, 22050\)"):
        run(_signals(22050, 1))
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a program")
    caplog.clear()
    with pytest.raises(FxlensError, match="not an exported feature program"):
        load_exported_features(junk)
    assert not [r for r in caplog.records if r.name.startswith("torch.export")]  # torch's logged traceback
    with pytest.raises(FxlensError, match="no exported feature program"):
        load_exported_features(tmp_path / "missing.pt2")


def test_cli_export_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys):
    for args, msg in [(["x.pt"], "must end in .pt2"), (["x.pt2", "--feature-set", "mfcc"], "unknown feature set"),
                      (["x.pt2", "--seconds", "0"], "--seconds must be within")]:
        args[0] = str(tmp_path / args[0])
        assert main(["features", "export", *args]) == 1
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_bench_speed_times_the_features(tmp_path):
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", "--part", "features", "--batch", "1", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["feature_rows"]
    assert {r["case"] for r in rows} == {f"{s} ({k})" for s in FEATURE_SETS for k in ("eager", "exported program")}
    assert all(r["x_real_time"] > 0 and r["seconds"] == 1.5 for r in rows)
    assert main(["bench", "speed", "--part", "nothing"]) == 1


def test_busy_cpu_warning_follows_the_load_average(monkeypatch):
    import os

    from fxlens.bench import speed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert speed.busy_cpu_warning() is None
    assert speed.machine_description()["load_average_1min"] == 0.3
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))  # one busy process of two CPUs' worth
    line = speed.busy_cpu_warning()
    assert line.startswith("warning: the CPU is already busy (load 1.2 on 2 CPUs)") and "\n" not in line

    def unsupported():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unsupported)
    assert speed.busy_cpu_warning() is None and speed.machine_description()["load_average_1min"] is None


def test_bench_analyze_times_the_main_job():
    from fxlens.bench.speed import bench_analyze

    rows = bench_analyze(lengths=(2.0,), repeats=1)
    assert [r["seconds"] for r in rows] == [2.0] and rows[0]["x_real_time"] > 0

"""`fxlens match` / `fxlens.match`: a reference's effects put on your audio by inference-time optimization.

References independent of the code under test: pyloudnorm for the level match, soundfile for what the files hold,
`fxlens fx apply` (the preset path, not the optimizer's) for re-rendering the written chain, numpy for the windows.
"""

from __future__ import annotations

import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from fxlens.cli import main
from fxlens.errors import FxlensError, InvalidAudioError, ParameterError
from fxlens.fx.chain import Chain
from fxlens.models.encoder import load_encoder
from fxlens.tasks.match import average_spectrum_db, excerpt_windows, match

SR = 44100


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()  # the shipped encoder-small (offline)


def _tone_mix(seconds: float, seed: int = 0) -> torch.Tensor:
    """(2, T) a few decaying harmonic notes with a little noise: music-like, not silent, not white."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for start in np.arange(0.0, seconds, 0.25):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 6.0), 0.0)
        x += env * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    x = 0.2 * x / np.abs(x).max() + 0.002 * rng.standard_normal(t.size)
    return torch.as_tensor(np.stack([x, np.roll(x, 40)]), dtype=torch.float32)


def test_excerpt_windows_keeps_short_audio_whole_and_skips_quiet_windows():
    x = torch.zeros(1, 2, 20 * SR)
    x[..., : 2 * SR] = 1e-4  # a quiet intro (-80 dB), then loud windows
    x[..., 2 * SR:] = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 18 * SR))).float() * 0.1
    short = x[..., : 6 * SR]
    assert excerpt_windows(short, SR, 8.0, 2.0) is short  # no longer than the excerpt: used whole
    w = excerpt_windows(x, SR, 8.0, 2.0)
    assert w.shape == (4, 2, 2 * SR)
    # the loud windows are 1..9; four evenly spaced among them: 1, 4, 6, 9 (np.linspace(0, 8, 4).round())
    expected = [1 + int(i) for i in np.linspace(0, 8, 4).round()]
    for k, j in enumerate(expected):
        assert torch.equal(w[k], x[0, :, j * 2 * SR: (j + 1) * 2 * SR])


def test_match_renders_the_written_chain_and_matches_the_input_loudness(encoder):
    x = _tone_mix(3.0, seed=1)
    ref = Chain.from_preset({"format": "fxlens-preset", "sample_rate": SR, "effects": [
        {"name": "distortion", "params": {"drive_db": {"value": 24.0}}}]})(_tone_mix(3.0, seed=2)[None], SR)[0]
    steps = []
    res = match(x, SR, ref, SR, model=encoder, effects=["parametric_eq", "distortion"], iterations=4,
                progress=lambda k, n, best: steps.append((k, n, best)))
    assert res.audio.shape == (2, x.shape[-1]) and res.sample_rate == SR
    assert [s[0] for s in steps] == list(range(1, 6)) and all(s[1] == 5 for s in steps)
    assert all(a >= b for a, b in zip(res.history, res.history[1:]))  # best-so-far never rises
    assert res.distance_after == pytest.approx(min(res.history))
    # the preset, rendered by the preset path (what `fxlens fx apply --preset` does), gives the same audio
    again = Chain.from_preset(res.preset)(x[None], SR)[0]
    assert torch.allclose(again, res.audio, atol=1e-6)
    assert [e["name"] for e in res.preset["effects"]] == ["parametric_eq", "distortion", "gain"]
    meter = pyloudnorm.Meter(SR)
    lin = meter.integrated_loudness(x.double().numpy().T)
    lout = meter.integrated_loudness(res.audio.double().numpy().T)
    assert lout == pytest.approx(lin, abs=0.1)
    # the caller's model comes back as it was given: training mode and trainable weights untouched
    encoder.train()
    try:
        match(x, SR, ref, SR, model=encoder, effects=["gain"], iterations=1)
        assert encoder.training and all(p.requires_grad for p in encoder.parameters())
        assert all(p.grad is None for p in encoder.parameters())
    finally:
        encoder.eval()


def test_match_with_an_audio_query_takes_gradient_steps(encoder):
    """An audio query's vector is a constant of the search: every step backpropagates through the chain only."""
    x = _tone_mix(1.0, seed=10)
    res = match(x, SR, _tone_mix(1.5, seed=11), SR, model=encoder, query=_tone_mix(1.0, seed=12), query_sample_rate=SR,
                effects=["gain", "distortion"], iterations=3)
    assert res.query == "audio example" and len(res.history) == 4


def test_match_with_cmaes_and_a_text_query(encoder):
    pytest.importorskip("cma")
    x = _tone_mix(2.0, seed=3)
    res = match(x, SR, _tone_mix(2.0, seed=4), SR, model=encoder, query="bass", effects=["gain", "distortion"],
                method="cmaes", iterations=2, popsize=4, loudness="off")
    assert res.query == "bass" and res.level_gain_db is None and len(res.history) == 2
    assert [e["name"] for e in res.preset["effects"]] == ["gain", "distortion"]
    assert torch.allclose(Chain.from_preset(res.preset)(x[None], SR)[0], res.audio, atol=1e-6)


def test_blend_aims_between_two_references(encoder):
    """The target with a blend is the normalized point `blend_amount` of the way between the two references'
    embeddings (computed here from `FxEncoder.embed`, the public path): the input's distance to it says so."""
    x, a, b = _tone_mix(1.0, seed=7), _tone_mix(1.0, seed=8), _tone_mix(1.0, seed=9) ** 3 * 20
    e_x, e_a, e_b = (encoder.embed(v, SR)[0].double() for v in (x, a, b))
    kw = dict(model=encoder, effects=["gain"], iterations=1, loudness="off")
    for amount in (0.0, 0.3, 1.0):
        target = torch.nn.functional.normalize((1 - amount) * e_a + amount * e_b, dim=0)
        res = match(x, SR, a, SR, blend=b, blend_amount=amount, **kw)
        assert res.distance_before == pytest.approx(1.0 - float(e_x @ target), abs=1e-5)
    assert float(e_a @ e_b) < 0.99  # the two references differ, so the three targets do
    with pytest.raises(ParameterError, match="blend_amount"):
        match(x, SR, a, SR, blend=b, blend_amount=1.5, **kw)


def test_match_rejects_bad_input(encoder):
    x = _tone_mix(1.0)
    with pytest.raises(InvalidAudioError, match="silent"):
        match(torch.zeros(2, SR), SR, x, SR, model=encoder, iterations=1)
    with pytest.raises(InvalidAudioError, match="too short"):
        match(x[:, :100], SR, x, SR, model=encoder, iterations=1)
    with pytest.raises(InvalidAudioError, match="NaN|inf"):
        match(x, SR, torch.full((2, SR), float("nan")), SR, model=encoder, iterations=1)
    with pytest.raises(FxlensError, match="unknown effect|nope"):
        match(x, SR, x, SR, model=encoder, effects=["nope"], iterations=1)
    with pytest.raises(ParameterError, match="twice"):
        match(x, SR, x, SR, model=encoder, effects=["gain", "gain"], iterations=1)
    with pytest.raises(ParameterError, match="method"):
        match(x, SR, x, SR, model=encoder, method="adam")
    with pytest.raises(ParameterError, match="loudness"):
        match(x, SR, x, SR, model=encoder, loudness="loud")


def test_cli_match_writes_audio_preset_and_json_and_fails_cleanly(tmp_path, capsys):
    inp, ref = tmp_path / "in.wav", tmp_path / "ref.flac"
    sf.write(str(inp), _tone_mix(2.5, seed=5).numpy().T, SR, subtype="FLOAT")
    sf.write(str(ref), _tone_mix(3.0, seed=6).numpy().T, 48000 // 2 * 2, subtype="PCM_24")  # another rate
    out = tmp_path / "out.wav"
    args = ["match", str(inp), str(ref), str(out), "--effects", "parametric_eq,stereo_imager", "--iterations", "2"]
    assert main(args + ["--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    y, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == SR and y.shape == (int(2.5 * SR), 2)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["preset_file"] == str(tmp_path / "out.preset.json") and len(doc["history"]) == 3
    # `fxlens fx apply` with the written preset re-renders the written audio
    assert main(["fx", "apply", str(inp), str(tmp_path / "again.wav"), "--preset", str(tmp_path / "out.preset.json")]) == 0
    again, _ = sf.read(str(tmp_path / "again.wav"), dtype="float32", always_2d=True)
    assert np.abs(again - y).max() < 1e-6
    capsys.readouterr()

    bad_out = tmp_path / "bad.wav"
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros((SR, 2), dtype=np.float32), SR)
    for argv in (["match", str(silent), str(ref), str(bad_out)],
                 ["match", str(tmp_path / "missing.wav"), str(ref), str(bad_out)],
                 ["match", str(inp), str(ref), str(tmp_path / "out.mp3")],
                 ["match", str(inp), str(ref), str(bad_out), "--effects", "nope"],
                 ["match", str(inp), str(ref), str(bad_out), "--method", "adam"],
                 ["match", str(inp), str(ref), str(bad_out), "--plot", str(tmp_path / "m.txt")],
                 ["match", str(inp), str(ref), str(bad_out), "--blend", str(inp), "--blend-amount", "2"],
                 ["match", str(inp), str(ref), str(bad_out), "--blend", str(silent)],
                 ["match", str(inp), str(ref), str(bad_out), "--query", "bass", "--query-audio", str(inp)],
                 ["match", str(inp), str(ref), str(bad_out), "--model", str(tmp_path)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
        assert not bad_out.exists() and not (tmp_path / "bad.preset.json").exists()


def test_average_spectrum_follows_a_known_tilt():
    """White noise through a first-order low-pass (scipy) against the closed-form |H(f)|^2 of that filter."""
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(0)
    b, a = butter(1, 1000.0, fs=SR)
    x = lfilter(b, a, rng.standard_normal(10 * SR))
    f, db = average_spectrum_db(torch.as_tensor(np.stack([x, x]))[None].float(), SR)
    expected = 10 * np.log10(1.0 / (1.0 + (f / 1000.0) ** 2))  # analog prototype; fine below ~5 kHz
    keep = (f > 200) & (f < 5000)
    offset = np.mean(db[keep] - expected[keep])  # each curve is relative to its own mid-band level
    assert np.max(np.abs(db[keep] - expected[keep] - offset)) < 0.5


def test_bench_speed_times_match():
    from fxlens.bench.speed import bench_match

    rows = bench_match(lengths=(1.0,), repeats=1)
    assert len(rows) == 1 and rows[0]["seconds"] == 1.0
    assert rows[0]["x_real_time"] == pytest.approx(1.0 / rows[0]["wall_seconds"])

"""Tests of fxlens.audio against independent references: soundfile/numpy for I/O, numpy FFTs for resampling,
closed-form BS.775 coefficients for the downmix, scipy.signal.lfilter and pyloudnorm for loudness."""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path

import numpy as np
import pyloudnorm as pyln
import pytest
import scipy.signal
import soundfile as sf
import torch

from fxlens import audio
from fxlens.audio import (
    WORKING_SAMPLE_RATE,
    AudioInfo,
    check_finite,
    downmix_matrix,
    info,
    integrated_loudness,
    k_weight,
    load,
    load_with_rate,
    normalize_loudness,
    normalize_peak,
    peak_db,
    resample,
    save,
    to_stereo,
)
from fxlens.errors import AudioFileError, FxlensError, InvalidAudioError, ParameterError

G = 1 / math.sqrt(2)  # -3 dB


# ------------------------------------------------------------------------------------------------------------------
# helpers (numpy, independent of the code under test)
# ------------------------------------------------------------------------------------------------------------------


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return amp * np.sin(2 * np.pi * freq * t + phase)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f-power noise by shaping white noise in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / np.abs(x).max()


def peak_freq(x: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a 1-D signal (Hann window)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


def write_chunked(path: Path, data: np.ndarray, sr: int, subtype: str, fmt: str | None = None) -> None:
    """soundfile write in small chunks: one large write of ogg vorbis crashes libvorbis (python-soundfile #396)."""
    with sf.SoundFile(str(path), "w", sr, data.shape[1], subtype=subtype, format=fmt) as f:
        for i in range(0, data.shape[0], 4096):
            f.write(data[i : i + 4096])


def pyln_lufs(x: np.ndarray, sr: int) -> float:
    """pyloudnorm reference on (T, C) float64."""
    return float(pyln.Meter(sr).integrated_loudness(np.ascontiguousarray(x, dtype=np.float64)))


def to_torch(x: np.ndarray) -> torch.Tensor:
    """(T, C) numpy -> (1, C, T) float32 torch."""
    return torch.from_numpy(np.ascontiguousarray(x.T)).float()[None]


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------------------------
# loading every format
# ------------------------------------------------------------------------------------------------------------------

# (extension, format, subtype, sample rate, tolerance on samples (None for lossy codecs))
FORMATS = [
    ("wav", "WAV", "PCM_U8", 44100, 1 / 64),
    ("wav", "WAV", "PCM_16", 44100, 2 / 2**15),
    ("wav", "WAV", "PCM_24", 44100, 2 / 2**23),
    ("wav", "WAV", "PCM_32", 44100, 1e-6),
    ("wav", "WAV", "FLOAT", 44100, 1e-7),
    ("wav", "WAV", "DOUBLE", 44100, 1e-7),
    ("flac", "FLAC", "PCM_16", 44100, 2 / 2**15),
    ("flac", "FLAC", "PCM_24", 44100, 2 / 2**23),
    ("ogg", "OGG", "VORBIS", 44100, None),
    ("opus", "OGG", "OPUS", 48000, None),  # opus only runs at 8/12/16/24/48 kHz
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, None),
]


@pytest.mark.parametrize("ext,fmt,subtype,sr,tol", FORMATS, ids=[f"{f[0]}-{f[2]}" for f in FORMATS])
def test_load_every_format(tmp_path, ext, fmt, subtype, sr, tol):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    data = np.stack([sine(440, sr, 1.0, 0.5), sine(660, sr, 1.0, 0.25)], axis=1).astype(np.float32)
    path = tmp_path / f"x.{ext}"
    write_chunked(path, data, sr, subtype, fmt)

    i = info(path)
    assert isinstance(i, AudioInfo)
    assert (i.format, i.subtype, i.sample_rate, i.channels) == (fmt, subtype, sr, 2)
    assert i.duration_s == pytest.approx(i.frames / sr)

    x, rate = load_with_rate(path, sample_rate=None, stereo=False)
    assert rate == sr and x.dtype == torch.float32 and x.shape[:2] == (1, 2)
    got = x[0].numpy().T
    if tol is not None:  # lossless: sample-exact up to quantization
        assert got.shape == data.shape
        np.testing.assert_allclose(got, data, atol=tol)
    else:  # lossy: same length give or take codec padding, same tones, similar level
        assert abs(got.shape[0] - data.shape[0]) < 0.1 * sr
        assert abs(peak_freq(got[:, 0], sr) - 440) <= 2
        assert abs(peak_freq(got[:, 1], sr) - 660) <= 2
        assert np.abs(got[:, 0]).max() == pytest.approx(0.5, abs=0.1)

    # The default path: stereo at the working rate.
    y = load(path)
    assert y.shape[:2] == (1, 2) and y.dtype == torch.float32
    n_expected = got.shape[0] * WORKING_SAMPLE_RATE / sr
    assert abs(y.shape[-1] - n_expected) <= 1


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000])
def test_load_any_rate_resamples_to_working_rate(tmp_path, sr):
    data = np.stack([sine(1000, sr, 0.5)] * 2, axis=1).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(str(path), data, sr, subtype="PCM_24")
    x = load(path)
    assert x.shape == (1, 2, round(data.shape[0] * 44100 / sr))
    assert abs(peak_freq(x[0, 0].numpy(), 44100) - 1000) <= 2
    # Level preserved (a 1 kHz tone is far inside every passband).
    mid = x[0, 0, x.shape[-1] // 4 : -x.shape[-1] // 4].numpy()
    assert np.abs(mid).max() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("channels", range(1, 9))
def test_load_channels_and_downmix(tmp_path, channels):
    rng = np.random.default_rng(channels)
    data = (rng.uniform(-0.3, 0.3, size=(2000, channels))).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(str(path), data, 44100, subtype="FLOAT")

    raw = load(path, stereo=False)
    assert raw.shape == (1, channels, 2000)
    np.testing.assert_array_equal(raw[0].numpy().T, data)

    st = load(path)
    assert st.shape == (1, 2, 2000)
    expected = data @ reference_matrix(channels).T  # (T, 2)
    np.testing.assert_allclose(st[0].numpy().T, expected, atol=1e-6)


def test_load_segment(tmp_path):
    sr = 22050
    data = np.random.default_rng(0).uniform(-0.5, 0.5, size=(sr * 2, 2)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(str(path), data, sr, subtype="FLOAT")
    x = load(path, sample_rate=None, offset_s=0.5, duration_s=0.25)
    np.testing.assert_array_equal(x[0].numpy().T, data[sr // 2 : sr // 2 + sr // 4])
    # duration past the end: the rest of the file
    x = load(path, sample_rate=None, offset_s=1.5, duration_s=10.0)
    assert x.shape[-1] == sr // 2
    with pytest.raises(AudioFileError):
        load(path, offset_s=3.0)
    with pytest.raises(ParameterError):
        load(path, offset_s=-1.0)
    with pytest.raises(ParameterError):
        load(path, duration_s=0.0)


# ------------------------------------------------------------------------------------------------------------------
# channels
# ------------------------------------------------------------------------------------------------------------------


def reference_matrix(channels: int) -> np.ndarray:
    """BS.775 downmix written out by hand (WAVE/SMPTE order), normalized by its largest row L1 norm."""
    if channels == 1:
        return np.ones((2, 1))
    if channels == 2:
        return np.eye(2)
    rows = {
        3: ([1, 0, G], [0, 1, G]),  # L R C
        4: ([1, 0, G, 0], [0, 1, 0, G]),  # L R Ls Rs
        5: ([1, 0, G, G, 0], [0, 1, G, 0, G]),  # L R C Ls Rs
        6: ([1, 0, G, 0, G, 0], [0, 1, G, 0, 0, G]),  # L R C LFE Ls Rs
        7: ([1, 0, G, 0, 0.5, G, 0], [0, 1, G, 0, 0.5, 0, G]),  # L R C LFE Cs Ls Rs
        8: ([1, 0, G, 0, G, 0, G, 0], [0, 1, G, 0, 0, G, 0, G]),  # L R C LFE Ls Rs Lb Rb
    }[channels]
    m = np.array(rows, dtype=np.float64)
    return m / np.abs(m).sum(axis=1).max()


@pytest.mark.parametrize("channels", range(1, 9))
def test_downmix_matrix_coefficients(channels):
    np.testing.assert_allclose(downmix_matrix(channels).numpy(), reference_matrix(channels), rtol=1e-12)


def test_downmix_known_values():
    # 5.1: L = (L + 0.707 C + 0.707 Ls) / 2.414, LFE dropped
    m = downmix_matrix(6).numpy()
    assert m[0, 0] == pytest.approx(1 / (1 + 2 * G))
    assert m[0, 2] == pytest.approx(G / (1 + 2 * G))
    assert m[0, 4] == pytest.approx(G / (1 + 2 * G))
    assert m[0, 3] == 0 and m[1, 3] == 0 and m[0, 5] == 0 and m[1, 4] == 0
    # 7.1 has three contributions per side
    assert downmix_matrix(8).numpy()[1, 1] == pytest.approx(1 / (1 + 3 * G))


@pytest.mark.parametrize("channels", range(3, 9))
def test_downmix_never_clips_more_than_input(channels):
    # Worst case: every channel at full scale with the sign of its coefficient (all coefficients are >= 0).
    assert bool((downmix_matrix(channels) >= 0).all())
    worst = torch.ones(1, channels, 1)
    rng = torch.Generator().manual_seed(0)
    x = torch.cat([worst, torch.rand(4, channels, 1, generator=rng) * 2 - 1], dim=0).expand(-1, -1, 64)
    y = to_stereo(x.contiguous())
    assert y.shape == (5, 2, 64)
    assert float(y.abs().max()) <= float(x.abs().max()) + 1e-6


def test_to_stereo_mono_and_stereo():
    x = torch.randn(3, 1, 100)
    y = to_stereo(x)
    assert y.shape == (3, 2, 100)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 1], x[:, 0])
    s = torch.randn(2, 2, 50)
    assert to_stereo(s) is s
    with pytest.raises(InvalidAudioError):
        to_stereo(torch.randn(1, 9, 10))
    with pytest.raises(InvalidAudioError):
        to_stereo(torch.randn(10))


# ------------------------------------------------------------------------------------------------------------------
# resampling
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orig,target", [(48000, 44100), (44100, 48000), (8000, 44100), (192000, 44100), (22050, 16000)]
)
def test_resample_keeps_frequency_and_length_ratio(orig, target):
    freq = 1234.0
    x = torch.from_numpy(sine(freq, orig, 1.0)).float()
    y = resample(x, orig, target)
    assert y.dtype == torch.float32
    assert abs(y.shape[-1] - x.shape[-1] * target / orig) <= 0.5
    assert abs(peak_freq(y.numpy(), target) - freq) <= 1.5
    # amplitude kept in the steady state
    core = y[y.shape[-1] // 4 : -y.shape[-1] // 4]
    assert float(core.abs().max()) == pytest.approx(0.5, abs=0.005)


def test_resample_batched_equals_items_and_identity():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4410, dtype=torch.float64)
    y = resample(x, 44100, 48000)
    assert y.shape == (3, 2, 4800) and y.dtype == torch.float64
    for b in range(3):
        for c in range(2):
            ref = resample(x[b, c], 44100, 48000)
            torch.testing.assert_close(y[b, c], ref, rtol=1e-10, atol=1e-10)
    assert resample(x, 44100, 44100) is x


# ------------------------------------------------------------------------------------------------------------------
# loudness against pyloudnorm
# ------------------------------------------------------------------------------------------------------------------


def make_signal(kind: str, sr: int, seconds: float = 2.0) -> np.ndarray:
    """Varied (T, C) test signals."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{sr}".encode()))  # stable across runs
    n = int(seconds * sr)
    if kind == "white":
        return 0.1 * rng.standard_normal((n, 2))
    if kind == "pink":
        return 0.5 * np.stack([pink(n, rng), pink(n, rng)], axis=1)
    if kind.startswith("sine"):
        f = float(kind[4:])
        return np.stack([sine(f, sr, seconds, 0.5), sine(f, sr, seconds, 0.5, 0.3)], axis=1)
    if kind == "bursts":  # loud bursts in digital silence: only the absolute gate matters
        x = 0.3 * rng.standard_normal((n, 2))
        t = np.arange(n) / sr
        x[(t % 1.0) > 0.35] = 0.0
        return x
    if kind == "loud_quiet":  # loud and -30 dB parts: the relative gate drops the quiet blocks
        x = 0.3 * rng.standard_normal((n, 2))
        t = np.arange(n) / sr
        x[t > seconds / 2] *= 10 ** (-30 / 20)
        return x
    if kind == "near_gate":  # quiet around the -70 LUFS absolute gate
        x = 10 ** (-62 / 20) * rng.standard_normal((n, 2))
        t = np.arange(n) / sr
        x[(t % 0.8) > 0.4] *= 10 ** (-15 / 20)
        return x
    if kind == "different_channels":
        return np.stack([sine(100, sr, seconds, 0.6), 0.05 * rng.standard_normal(n)], axis=1)
    if kind == "mono":
        return 0.2 * rng.standard_normal((n, 1))
    raise ValueError(kind)


KINDS = ["white", "pink", "sine100", "sine1000", "sine10000", "bursts", "loud_quiet", "near_gate",
         "different_channels", "mono"]


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
@pytest.mark.parametrize("kind", KINDS)
def test_loudness_matches_pyloudnorm(kind, sr):
    x = make_signal(kind, sr)
    ref = pyln_lufs(x, sr)
    got = float(integrated_loudness(to_torch(x), sr)[0])
    assert abs(got - ref) < 0.1, (got, ref)


@pytest.mark.parametrize("sr", [8000, 96000, 192000])
def test_loudness_extreme_rates(sr):
    for kind in ("pink", "sine100"):
        x = make_signal(kind, sr, seconds=1.5)
        assert abs(float(integrated_loudness(to_torch(x), sr)[0]) - pyln_lufs(x, sr)) < 0.1


def test_loudness_odd_length_and_fractional_hop():
    # 11025 Hz: a 100 ms hop is 1102.5 samples; a length that makes pyloudnorm round its block count.
    sr = 11025
    x = make_signal("white", sr, seconds=1.234567)
    assert abs(float(integrated_loudness(to_torch(x), sr)[0]) - pyln_lufs(x, sr)) < 0.1


def test_loudness_batch_equals_items():
    sr = 44100
    kinds = ["white", "pink", "sine1000", "bursts", "loud_quiet", "different_channels"]
    items = [make_signal(k, sr, 2.0) for k in kinds]
    batch = torch.cat([to_torch(x) for x in items], dim=0)
    lufs = integrated_loudness(batch, sr)
    assert lufs.shape == (len(kinds),) and lufs.dtype == torch.float32
    for i, x in enumerate(items):
        one = float(integrated_loudness(to_torch(x), sr)[0])
        assert float(lufs[i]) == pytest.approx(one, abs=1e-5)
        assert abs(float(lufs[i]) - pyln_lufs(x, sr)) < 0.1
    # deterministic
    assert torch.equal(lufs, integrated_loudness(batch, sr))


def test_loudness_silence_gives_minus_inf_in_a_batch():
    sr = 44100
    x = torch.zeros(3, 2, sr)
    x[1] = to_torch(make_signal("white", sr, 1.0))[0]
    x[2] = 1e-6  # -120 dBFS DC: K-weighting removes it; below the absolute gate anyway
    lufs = integrated_loudness(x, sr)
    assert math.isinf(float(lufs[0])) and float(lufs[0]) < 0
    assert math.isfinite(float(lufs[1]))
    assert math.isinf(float(lufs[2]))


def test_loudness_too_short_raises():
    with pytest.raises(InvalidAudioError):
        integrated_loudness(torch.randn(1, 2, 17639), 44100)
    integrated_loudness(torch.randn(1, 2, 17640), 44100)  # exactly one block is fine
    with pytest.raises(InvalidAudioError):
        integrated_loudness(torch.randn(2, 17640), 44100)  # wrong rank
    bad = torch.randn(1, 2, 44100)
    bad[0, 1, 5] = float("nan")
    with pytest.raises(InvalidAudioError):
        integrated_loudness(bad, 44100)


def test_loudness_surround_weights():
    sr = 48000
    rng = np.random.default_rng(5)
    five = 0.1 * rng.standard_normal((sr * 2, 5)) * np.array([1.0, 0.5, 0.8, 0.3, 0.6])
    # 5 channels (L R C Ls Rs): pyloudnorm applies the same 1.41 surround weights.
    assert abs(float(integrated_loudness(to_torch(five), sr)[0]) - pyln_lufs(five, sr)) < 0.1
    # 5.1 (L R C LFE Ls Rs): same as the 5-channel measure without the LFE.
    lfe = 0.5 * rng.standard_normal((sr * 2, 1))
    six = np.concatenate([five[:, :3], lfe, five[:, 3:]], axis=1)
    assert abs(float(integrated_loudness(to_torch(six), sr)[0]) - pyln_lufs(five, sr)) < 0.1


@pytest.mark.parametrize("sr", [8000, 44100, 48000, 192000])
def test_k_weight_matches_scipy_lfilter_with_pyloudnorm_filters(sr):
    meter = pyln.Meter(sr)
    x = np.random.default_rng(1).standard_normal((2, 3000))
    ref = x
    for stage in meter._filters.values():  # high shelf then high pass, pyloudnorm's own design
        ref = scipy.signal.lfilter(stage.b, stage.a, ref, axis=-1)
    got = k_weight(torch.from_numpy(x), sr).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_k_weight_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 300, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: k_weight(v, 8000), (x,), fast_mode=True)
    x = torch.randn(2, 32, dtype=torch.float64, requires_grad=True)  # full Jacobian on a shorter signal
    assert torch.autograd.gradcheck(lambda v: k_weight(v, 44100), (x,))


def test_loudness_gradcheck_and_gain_derivative():
    sr = 8000
    torch.manual_seed(0)
    x = (0.1 * torch.randn(2, 2, 4000, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: integrated_loudness(v, sr), (x,), fast_mode=True)
    # L(g x) = L(x) + 20 log10 g when every block stays gated the same: dL/dg = 20 / ln 10 at g = 1.
    g = torch.ones((), dtype=torch.float64, requires_grad=True)
    integrated_loudness(g * x.detach(), sr)[0].backward()
    assert float(g.grad) == pytest.approx(20 / math.log(10), rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loudness_same_on_gpu():
    x = to_torch(make_signal("pink", 44100, 2.0)).repeat(2, 1, 1)
    cpu = integrated_loudness(x, 44100)
    gpu = integrated_loudness(x.cuda(), 44100).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# normalization
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [-23.0, -14.0, -9.0])
def test_normalize_loudness_hits_target_by_pyloudnorm(target):
    sr = 44100
    kinds = ["pink", "sine1000", "bursts", "loud_quiet"]
    items = [make_signal(k, sr, 2.0) * s for k, s in zip(kinds, [0.1, 1.0, 0.5, 0.02])]
    batch = torch.cat([to_torch(x) for x in items], dim=0)
    out = normalize_loudness(batch, sr, target_lufs=target)
    assert out.shape == batch.shape and out.dtype == torch.float32
    for i in range(len(items)):
        assert abs(pyln_lufs(out[i].numpy().T, sr) - target) < 0.1


def test_normalize_loudness_silent_raises():
    x = torch.zeros(2, 2, 44100)
    x[0] = 0.1 * torch.randn(2, 44100)
    with pytest.raises(InvalidAudioError, match=r"\[1\]"):
        normalize_loudness(x, 44100)


def test_peak_db_and_normalize_peak():
    x = torch.zeros(3, 2, 100)
    x[0, 0, 10] = 0.5
    x[1, 1, 3] = -0.25
    x[2] = 2.0
    torch.testing.assert_close(peak_db(x), torch.tensor([20 * math.log10(0.5), 20 * math.log10(0.25),
                                                         20 * math.log10(2.0)]))
    y = normalize_peak(x, target_db=-1.0)
    torch.testing.assert_close(y.abs().flatten(1).amax(1), torch.full((3,), 10 ** (-1 / 20)))
    assert float(peak_db(torch.zeros(1, 2, 10))[0]) == -math.inf
    with pytest.raises(InvalidAudioError):
        normalize_peak(torch.zeros(2, 2, 10))


def test_check_finite():
    check_finite(torch.randn(2, 2, 10))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(1, 2, 10)
        x[0, 1, 4] = bad
        with pytest.raises(InvalidAudioError, match="stem"):
            check_finite(x, what="stem")


# ------------------------------------------------------------------------------------------------------------------
# saving
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,subtype,tol",
    [("a.wav", "PCM_16", 1 / 2**15), ("a.wav", "PCM_24", 1 / 2**23), ("a.wav", "FLOAT", 0.0),
     ("a.flac", "PCM_16", 1 / 2**15), ("a.flac", "PCM_24", 1 / 2**23)],
)
def test_save_round_trip(tmp_path, name, subtype, tol):
    x = torch.rand(1, 2, 1000) * 1.8 - 0.9
    out = save(tmp_path / "deep" / "er" / name, x, 48000, subtype=subtype)
    assert out == tmp_path / "deep" / "er" / name and out.is_file()
    i = sf.info(str(out))
    assert (i.samplerate, i.channels, i.frames, i.subtype) == (48000, 2, 1000, subtype)
    data, _ = sf.read(str(out), dtype="float64")
    np.testing.assert_allclose(data.T, x[0].double().numpy(), atol=tol + 1e-12)
    assert no_temp_files(out.parent)
    # plain permissions, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_save_accepts_c_t_and_overwrites(tmp_path):
    p = tmp_path / "x.wav"
    save(p, torch.zeros(1, 10), 8000)
    save(p, torch.full((2, 20), 0.5), 8000, subtype="pcm_16")
    data, sr = sf.read(str(p))
    assert data.shape == (20, 2) and sr == 8000


def test_save_clips_integer_formats_with_warning(tmp_path, caplog):
    x = torch.tensor([[0.0, 1.5, -2.0, 0.5]])
    with caplog.at_level(logging.WARNING, logger="fxlens.audio"):
        save(tmp_path / "c.wav", x, 8000, subtype="PCM_16")
    assert any("clipping 2" in r.message for r in caplog.records)
    data, _ = sf.read(str(tmp_path / "c.wav"))
    np.testing.assert_allclose(data, [0.0, 32767 / 32768, -1.0, 0.5], atol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fxlens.audio"):
        save(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    assert not caplog.records
    data, _ = sf.read(str(tmp_path / "f.wav"))
    np.testing.assert_allclose(data, [0.0, 1.5, -2.0, 0.5])


@pytest.mark.parametrize(
    "name,audio_,subtype,err",
    [
        ("x.wav", torch.tensor([[0.0, float("nan")]]), "PCM_24", InvalidAudioError),
        ("x.wav", torch.tensor([[0.0, float("inf")]]), "FLOAT", InvalidAudioError),
        ("x.wav", torch.zeros(2, 0), "PCM_24", InvalidAudioError),
        ("x.wav", torch.zeros(2, 2, 10), "PCM_24", InvalidAudioError),
        ("x.mp3", torch.zeros(2, 10), "PCM_24", AudioFileError),
        ("x.flac", torch.zeros(2, 10), "FLOAT", AudioFileError),
        ("x.wav", torch.zeros(2, 10), "PCM_U8", AudioFileError),
    ],
)
def test_save_bad_input_leaves_nothing(tmp_path, name, audio_, subtype, err):
    target = tmp_path / "sub" / name
    with pytest.raises(err):
        save(target, audio_, 44100, subtype=subtype)
    assert not (tmp_path / "sub").exists()  # not even the parent directory
    assert list(tmp_path.iterdir()) == []


def test_save_failure_midway_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "x.wav"
    sf.write(str(p), np.zeros(10), 8000)
    before = p.read_bytes()

    def broken_write(file, data, samplerate, subtype=None, format=None, **kw):
        Path(file).write_bytes(b"RIFF partial")
        raise sf.LibsndfileError(0, "disk full (simulated)")

    monkeypatch.setattr(audio.sf, "write", broken_write)
    with pytest.raises(AudioFileError, match="disk full"):
        save(p, torch.zeros(2, 100), 8000)
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.wav"]


# ------------------------------------------------------------------------------------------------------------------
# bad input files
# ------------------------------------------------------------------------------------------------------------------


def _missing(tmp_path):
    return tmp_path / "nope.wav"


def _text(tmp_path):
    p = tmp_path / "text.wav"
    p.write_text("this is not audio, just text renamed to .wav\n" * 20)
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.wav"
    p.touch()
    return p


def _zero_frames(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(str(p), np.zeros((0, 2), dtype=np.float32), 44100, subtype="PCM_16")
    assert p.stat().st_size > 0  # a valid header with no data
    return p


def _truncated_flac(tmp_path):
    p = tmp_path / "trunc.flac"
    sf.write(str(p), np.zeros((1000, 2)), 44100)
    p.write_bytes(p.read_bytes()[:20])
    return p


def _directory(tmp_path):
    p = tmp_path / "dir.wav"
    p.mkdir()
    return p


@pytest.mark.parametrize("make", [_missing, _text, _empty, _zero_frames, _truncated_flac, _directory])
def test_bad_files_raise_audio_file_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(AudioFileError):
        info(path)
    with pytest.raises(AudioFileError):
        load(path)
    with pytest.raises(FxlensError):  # the CLI catches the base class
        load_with_rate(str(path), sample_rate=None)


def test_nan_in_float_file_raises_invalid_audio(tmp_path):
    data = np.zeros((100, 2), dtype=np.float32)
    data[50, 1] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(str(p), data, 44100, subtype="FLOAT")
    with pytest.raises(InvalidAudioError):
        load(p)
    data[50, 1] = np.inf
    sf.write(str(p), data, 44100, subtype="FLOAT")
    with pytest.raises(InvalidAudioError):
        load(p, sample_rate=None)


def test_load_then_save_pipeline_leaves_no_output_on_bad_input(tmp_path):
    out = tmp_path / "out" / "y.wav"
    with pytest.raises(FxlensError):
        save(out, load(_text(tmp_path))[0], 44100)
    assert not out.exists() and not out.parent.exists()

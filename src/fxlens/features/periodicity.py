"""Periods that an effect leaves in the audio itself: a tremolo's or a vibrato's LFO rate and a delay's echo lag.

**LFO rate** (`amplitude_lfo_rate`). A tremolo multiplies the source by a periodic gain, so the log of the level
envelope is the source's log envelope plus the log gain: a periodic component at the LFO rate.
`envelope_modulation_power` is the periodogram of that log envelope (RMS frames of the channel mean, hop
`ENVELOPE_HOP` samples, floored 60 dB under the loudest frame, a quadratic trend removed, which takes out the slow
rise and decay of notes; Hann-windowed), evaluated at any frequencies: a direct DFT on a fine log grid instead of
zero-padded FFT bins, so a 1.5 s clip's peak is located to a small fraction of its 0.67 Hz bin width. It does not
use the LFO's phase, so it works on recordings whose tremolo started anywhere.

**Pitch LFO rate** (`pitch_lfo_rate`). A vibrato reads its input through a swept delay, ``y(t) = x(t - d(t))``,
so every partial's frequency is scaled by ``1 - d'(t)``: the whole spectrum slides up and down the log-frequency
axis at the LFO rate. `log_pitch_track` measures that slide frame by frame (STFT of 4096 samples, hop 256; log
magnitudes on a log-frequency grid of `PITCH_GRID_POINTS` points from 80 Hz to 6 kHz; the shift between
consecutive frames that maximizes their cross-correlation, within +-12 %, to a fraction of a grid step; shifts
beyond +-3 % per frame, which are note changes, clipped) and sums it into a log-pitch curve; its periodogram,
computed as the envelope's, peaks at the LFO rate.

**Echo lag** (`echo_lag_ms`). A delay adds copies of the signal D, 2D, ... later: ``y = x * h`` with ``h`` a train
of impulses D apart, so ``log |Y| = log |X| + log |H|`` and ``log |H|`` ripples with period 1/D in frequency; the
real cepstrum (inverse FFT of the log magnitude) has a peak at quefrency D (Bogert, Healy and Tukey 1963; the
classic echo detector). `real_cepstrum` computes it on the Hann-windowed channel mean, zero-padded to twice the
length; the peak is refined to a fraction of a sample by a parabola through its neighbours.

Inside a wide band any of these peaks can be something else (the music's rhythm, its note changes or a harmonic of
the LFO — the log of a deep sine gain is far from a sine —; a pitch period or a multiple of the echo lag), so
`fxlens.models.estimator.refine_controls` searches only near a model's estimate. Every reader takes a batch
``(B, C, T)`` and, with ``pool=True``, sums the spectra (cepstra) of all items first: the windows of one recording.

Written here rather than taken from a library: librosa's tempogram and onset-strength functions track note onsets,
not a smooth gain; scipy's periodograms give FFT bins only; neither library has a cepstrum or a tracker of a whole
spectrum's pitch slide (librosa's pyin tracks one monophonic pitch; these clips are chords and phrases).
"""

from __future__ import annotations

import math

import torch

from fxlens.errors import ParameterError

ENVELOPE_HOP = 128  # samples per envelope frame: 345 frames/s at 44.1 kHz, far above a 20 Hz LFO's Nyquist needs
_FLOOR_NEPERS = 60.0 / 20.0 * math.log(10.0)  # 60 dB as a natural-log amplitude ratio
N_FREQUENCIES = 2000  # log-spaced search points in a band (a 1.4x band: steps of 0.02 %)
PITCH_N_FFT, PITCH_HOP = 4096, 256
PITCH_GRID_HZ = (80.0, 6000.0)
PITCH_GRID_POINTS = 6000  # 1/960 octave per step
PITCH_MAX_SHIFT = 0.12  # largest frame-to-frame spectral shift searched (relative frequency)
PITCH_CLIP = 0.03  # larger shifts are note changes: clipped before they are summed into the curve


def _check(x: torch.Tensor, min_samples: int) -> None:
    if x.dim() != 3:
        raise ParameterError(f"expected audio of shape (batch, channels, samples), got {tuple(x.shape)}")
    if x.shape[-1] < min_samples:
        raise ParameterError(f"audio too short: {x.shape[-1]} samples (needs {min_samples})")


def _band(lo: float, hi: float, what: str) -> None:
    if not 0.0 < lo < hi:
        raise ParameterError(f"need 0 < low < high {what}, got {lo} and {hi}")


def _periodogram(z: torch.Tensor, rate: float, freqs_hz: torch.Tensor) -> torch.Tensor:
    """|DFT|^2 / n (B, F) of the Hann-windowed rows of z (B, n) sampled at `rate` Hz, at `freqs_hz` (F,)."""
    n = z.shape[-1]
    t = torch.arange(n, dtype=z.dtype) / rate
    phase = 2.0 * math.pi * freqs_hz.to(z.dtype)[:, None] * t[None]  # (F, n)
    zw = z * torch.hann_window(n, periodic=False, dtype=z.dtype)
    re, im = zw @ torch.cos(phase).T, zw @ torch.sin(phase).T
    return (re.square() + im.square()) / n


def _parabolic_offset(y0: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """Offset (-0.5...0.5 steps) of the vertex of the parabola through three equally spaced samples around a peak
    y1; 0 where they do not curve down."""
    den = y0 - 2.0 * y1 + y2
    return torch.where(den < 0, 0.5 * (y0 - y2) / den.clamp(max=-1e-300), torch.zeros_like(den)).clamp(-0.5, 0.5)


def _peak(candidates: torch.Tensor, scores: torch.Tensor, pool: bool) -> torch.Tensor:
    """The candidate with the largest score per row of `scores` (B, N), or (1,) for the rows summed first."""
    if pool:
        scores = scores.sum(0, keepdim=True)
    return candidates[scores.argmax(-1)]


def _detrend(z: torch.Tensor) -> torch.Tensor:
    """Rows of z (B, n) minus their least-squares quadratic."""
    t = torch.linspace(-1.0, 1.0, z.shape[-1], dtype=z.dtype)
    basis = torch.stack([torch.ones_like(t), t, t * t], 1)  # (n, 3)
    coef = torch.linalg.lstsq(basis, z.T).solution  # (3, B)
    return z - (basis @ coef).T


# ------------------------------------------------------------------------------------------------------------------
# LFO rate from the level envelope
# ------------------------------------------------------------------------------------------------------------------


def log_envelope(x: torch.Tensor, sample_rate: int, hop: int = ENVELOPE_HOP) -> tuple[torch.Tensor, float]:
    """(B, C, T) -> (log RMS of the channel mean per `hop`-sample frame (B, n), floored 60 dB under its maximum, a
    quadratic trend removed; frames per second)."""
    _check(x, 8 * hop)
    n = x.shape[-1] // hop
    mono = x.mean(1)[:, : n * hop].double().reshape(x.shape[0], n, hop)
    le = 0.5 * torch.log(mono.square().mean(-1) + 1e-20)
    # floored: digital silence between notes would otherwise dominate the spectrum
    le = torch.maximum(le, le.amax(-1, keepdim=True) - _FLOOR_NEPERS)
    return _detrend(le), sample_rate / hop


def envelope_modulation_power(x: torch.Tensor, sample_rate: int, freqs_hz: torch.Tensor) -> torch.Tensor:
    """Periodogram (B, F) of the detrended, Hann-windowed log envelope of `x` (B, C, T) at `freqs_hz` (F,)."""
    le, rate = log_envelope(x, sample_rate)
    return _periodogram(le, rate, freqs_hz)


def search_frequencies(lo_hz: float, hi_hz: float, n: int = N_FREQUENCIES) -> torch.Tensor:
    """`n` log-spaced frequencies from `lo_hz` to `hi_hz` (0 < lo < hi)."""
    _band(lo_hz, hi_hz, "frequency (Hz)")
    return torch.logspace(math.log10(lo_hz), math.log10(hi_hz), n, dtype=torch.float64)


def amplitude_lfo_scores(x: torch.Tensor, sample_rate: int, lo_hz: float, hi_hz: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(`N_FREQUENCIES` log-spaced rates in [`lo_hz`, `hi_hz`], the envelope periodogram of each item of `x`
    (B, C, T) at them (B, N))."""
    f = search_frequencies(lo_hz, hi_hz)
    return f, envelope_modulation_power(x, sample_rate, f)


def amplitude_lfo_rate(x: torch.Tensor, sample_rate: int, lo_hz: float, hi_hz: float, pool: bool = False
                       ) -> torch.Tensor:
    """The frequency (Hz) in [`lo_hz`, `hi_hz`] where the log envelope of each item of `x` (B, C, T) is most
    periodic (the peak of `envelope_modulation_power`): (B,), or (1,) for the items pooled."""
    return _peak(*amplitude_lfo_scores(x, sample_rate, lo_hz, hi_hz), pool)


# ------------------------------------------------------------------------------------------------------------------
# Echo lag from the cepstrum
# ------------------------------------------------------------------------------------------------------------------


def real_cepstrum(x: torch.Tensor) -> torch.Tensor:
    """Real cepstrum (B, n) of the Hann-windowed channel mean of `x` (B, C, T), n = the power of two >= 2 T (index
    = quefrency in samples). The log magnitude is floored 180 dB under each item's largest bin."""
    _check(x, 16)
    mono = x.mean(1).double()
    T = mono.shape[-1]
    n = 1 << math.ceil(math.log2(2 * T))
    mag = torch.fft.rfft(mono * torch.hann_window(T, periodic=False, dtype=mono.dtype), n=n).abs()
    return torch.fft.irfft(torch.log(mag + 1e-9 * mag.amax(-1, keepdim=True) + 1e-300), n=n)


def echo_lag_scores(x: torch.Tensor, sample_rate: int, lo_ms: float, hi_ms: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(every whole-sample lag in ms from one sample below `lo_ms` to one above `hi_ms`, the real cepstrum of each
    item of `x` (B, C, T) at them (B, L))."""
    _band(lo_ms, hi_ms, "lag (ms)")
    c = real_cepstrum(x)
    lo = max(int(math.floor(lo_ms * sample_rate / 1000.0)), 1)
    hi = min(int(math.ceil(hi_ms * sample_rate / 1000.0)), x.shape[-1] - 1, c.shape[-1] // 2 - 1)
    if hi < lo:
        raise ParameterError(f"audio too short for lags up to {hi_ms} ms: {x.shape[-1]} samples")
    j = torch.arange(lo - 1, hi + 2)
    return j.double() * 1000.0 / sample_rate, c[:, lo - 1:hi + 2]


def echo_lag_ms(x: torch.Tensor, sample_rate: int, lo_ms: float, hi_ms: float, pool: bool = False) -> torch.Tensor:
    """The quefrency (ms) of the largest real-cepstrum peak in [`lo_ms`, `hi_ms`] for each item of `x` (B, C, T),
    to a fraction of a sample (parabolic interpolation): (B,), or (1,) for the items pooled."""
    lags, c = echo_lag_scores(x, sample_rate, lo_ms, hi_ms)
    if pool:
        c = c.sum(0, keepdim=True)
    j = 1 + c[:, 1:-1].argmax(-1)  # (B,) inside the band; its neighbours exist for the parabola
    rows = torch.arange(c.shape[0])
    shift = _parabolic_offset(c[rows, j - 1], c[rows, j], c[rows, j + 1])
    return lags[j] + shift * 1000.0 / sample_rate


# ------------------------------------------------------------------------------------------------------------------
# Pitch LFO rate from the spectrum's slide along log frequency
# ------------------------------------------------------------------------------------------------------------------


def log_pitch_track(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, float]:
    """(B, C, T) -> (the cumulative frame-to-frame shift of the log-frequency spectrum of the channel mean, in
    nepers (B, frames - 1), quadratic trend removed; frames per second)."""
    _check(x, 8 * PITCH_HOP + PITCH_N_FFT)
    mono = x.mean(1).double()
    spec = torch.stft(mono, PITCH_N_FFT, PITCH_HOP, window=torch.hann_window(PITCH_N_FFT, dtype=mono.dtype),
                      center=True, return_complex=True).abs()  # (B, bins, frames)
    lo, hi = PITCH_GRID_HZ
    grid = torch.logspace(math.log10(lo), math.log10(min(hi, 0.45 * sample_rate)), PITCH_GRID_POINTS,
                          dtype=mono.dtype)
    pos = grid * PITCH_N_FFT / sample_rate  # fractional bin of each grid point: linear interpolation
    i0 = pos.floor().long()
    w = (pos - i0)[None, :, None]
    logspec = torch.log(spec[:, i0] * (1 - w) + spec[:, i0 + 1] * w + 1e-6).transpose(1, 2)  # (B, frames, G)
    logspec = logspec - logspec.mean(-1, keepdim=True)
    step = math.log(float(grid[1] / grid[0]))
    m = int(PITCH_MAX_SHIFT / step)
    G = logspec.shape[-1]
    cur, prev = logspec[:, 1:, m:G - m], logspec[:, :-1]  # (B, n, G - 2m), (B, n, G)
    n_fft = 1 << math.ceil(math.log2(G + 1))
    # c[k] = sum_j cur[j] prev[j + k], k = 0..2m (shift k - m grid steps), by FFT
    c = torch.fft.irfft(torch.fft.rfft(prev, n_fft).mul(torch.fft.rfft(cur, n_fft).conj()), n_fft)[..., :2 * m + 1]
    k = c.argmax(-1)
    kc = k.clamp(1, 2 * m - 1)
    frac = _parabolic_offset(*(c.gather(-1, (kc + d)[..., None])[..., 0] for d in (-1, 0, 1)))
    shift = (kc.to(c.dtype) + frac - m) * step  # prev at j + shift matches cur at j: the pitch went down by shift
    shift = (-shift).clamp(-PITCH_CLIP, PITCH_CLIP)
    return _detrend(shift.cumsum(-1)), sample_rate / PITCH_HOP


def pitch_lfo_scores(x: torch.Tensor, sample_rate: int, lo_hz: float, hi_hz: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(`N_FREQUENCIES` log-spaced rates in [`lo_hz`, `hi_hz`], the periodogram of each item's log-pitch curve
    (`log_pitch_track`) at them (B, N))."""
    f = search_frequencies(lo_hz, hi_hz)
    power = []
    for item in x.split(1):  # one at a time: a clip's frame-pair correlations take ~50 MB
        track, rate = log_pitch_track(item, sample_rate)
        power.append(_periodogram(track, rate, f))
    return f, torch.cat(power)


def pitch_lfo_rate(x: torch.Tensor, sample_rate: int, lo_hz: float, hi_hz: float, pool: bool = False
                   ) -> torch.Tensor:
    """The frequency (Hz) in [`lo_hz`, `hi_hz`] where the log-pitch curve (`log_pitch_track`) of each item of `x`
    (B, C, T) is most periodic: (B,), or (1,) for the items pooled."""
    return _peak(*pitch_lfo_scores(x, sample_rate, lo_hz, hi_hz), pool)

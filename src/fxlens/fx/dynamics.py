"""Dynamics: Compressor (soft knee, makeup), MultibandCompressor (3 bands, LR4 crossovers), Limiter.

Ballistics come from torchcomp (``torchcomp.core.compressor_core``): the exact per-sample one-pole recursion whose
coefficient switches between attack and release, with a numba CPU/CUDA kernel and a custom backward that runs the
adjoint recursion through torchlpc. No Python loop over samples anywhere.

Conventions shared by the three effects:

- **Detector**: instantaneous peak level ``|x[n]|``, stereo-linked by taking the *max* over channels (default) or
  the *mean* of ``|x|`` over channels (``link="mean"``). Max linking means a source panned hard to one side is
  compressed exactly as it would be in mono; mean linking under-reads it by 6 dB on a stereo pair. The same gain
  is applied to every channel, so the stereo image does not wander.
- **Time constants**: ``attack_ms`` / ``release_ms`` go through ``torchcomp.ms2coef``: a per-sample coefficient
  ``alpha = 1 - exp(-2200 / (ms * sample_rate))``. 2200 ~ 1000 * ln(9), so ``ms`` is the 10 % -> 90 % rise (or fall)
  time of the smoothed quantity after a step (exactly ``ms * ln(9) / 2.2 = 0.9987 * ms``). Times must be > 0.
- **Levels** in dBFS (0 dB = full scale 1.0); levels below -160 dB are floored (silence is below any threshold).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchcomp import ms2coef
from torchcomp.core import CompressorFunction

from fxlens.errors import ParameterError
from fxlens.fx.effect import Effect, as_batch, check_audio, register_effect
from fxlens.fx.filters import apply_biquads, biquad, padded_fft_length, u_values
from fxlens.fx.params import ParamSpec

LINKS = ("max", "mean")
BACKENDS = ("fft", "iir")
LEVEL_FLOOR = 1e-8  # -160 dBFS: the detector's floor, keeps log10 and 1/x finite on digital silence
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)
BAND_NAMES = ("low", "mid", "high")


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------
def amplitude_to_db(a: torch.Tensor) -> torch.Tensor:
    """20 * log10(a), with a floored at LEVEL_FLOOR (-160 dB) so silence stays finite."""
    return 20.0 * torch.log10(a.clamp_min(LEVEL_FLOOR))


def db_to_amplitude(db: torch.Tensor) -> torch.Tensor:
    """10 ** (db / 20), computed as exp(db * ln(10) / 20) (one kernel, faster than pow on CPU)."""
    return torch.exp(db * (math.log(10.0) / 20.0))


def linked_level(x: torch.Tensor, link: str = "max") -> torch.Tensor:
    """Stereo-linked instantaneous peak level |x| (linear amplitude): (B, C, T) -> (B, T)."""
    if link == "max":
        return x.abs().amax(dim=1)
    if link == "mean":
        return x.abs().mean(dim=1)
    raise ParameterError(f"unknown stereo link {link!r}; expected one of {LINKS}")


def _time_coef(ms: torch.Tensor | float, x: torch.Tensor, sample_rate: int, name: str) -> torch.Tensor:
    """Milliseconds -> torchcomp one-pole coefficient in (0, 1], as a contiguous (B,) tensor."""
    t = as_batch(ms, x)
    if not bool(torch.all(t > 0)):
        raise ParameterError(f"parameter '{name}' must be > 0 ms")
    return ms2coef(t, sample_rate).contiguous()


def _check_rate(sample_rate: int) -> None:
    if not (isinstance(sample_rate, (int, float)) and sample_rate > 0):
        raise ParameterError(f"sample_rate must be a positive number, got {sample_rate!r}")


def static_gain_db(
    level_db: torch.Tensor,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    knee_db: torch.Tensor | float,
) -> torch.Tensor:
    """Soft-knee gain computer of Giannoulis, Massberg & Reiss (JAES 2012, eq. 4), returned as a gain y_G - x_G (dB).

    With d = x_G - T and knee width W:
        d < -W/2         -> 0                                  (below the knee: untouched)
        |d| <= W/2       -> (1/R - 1) (d + W/2)^2 / (2W)       (quadratic knee, C1-continuous at both ends)
        d > W/2          -> (1/R - 1) d                        (above: slope 1/R)
    All arguments broadcast; W = 0 is the hard knee. The gain is <= 0 for R >= 1.
    """
    d = level_db - threshold_db
    knee = torch.as_tensor(knee_db, dtype=level_db.dtype, device=level_db.device)
    # the three branches in one expression (fewer full-length temporaries than nested torch.where):
    # clamp(d + W/2, 0, W)^2 / (2W) is 0 below the knee, the quadratic inside it, W/2 above it, where
    # relu(d - W/2) adds the rest to make d. W is floored so that W = 0 (a hard knee: clamp gives 0) stays finite.
    inside = torch.minimum((d + knee / 2).clamp_min(0.0), knee)
    q = inside.square() / (2 * knee.clamp_min(1e-6)) + (d - knee / 2).clamp_min(0.0)
    return (1.0 / ratio - 1.0) * q


def smooth_gain_db(
    gain_db: torch.Tensor, attack_ms: torch.Tensor | float, release_ms: torch.Tensor | float, sample_rate: int
) -> torch.Tensor:
    """Branching one-pole smoothing of a gain in dB (B, T), starting from 0 dB (no reduction).

    g[n] = g[n-1] + alpha (gs[n] - g[n-1]) with alpha = attack coefficient while the target gs[n] is below the state
    (gain reduction growing) and the release coefficient otherwise: Giannoulis et al.'s "smooth branching" peak
    detector placed after the gain computer, in the log domain.

    Why the log domain and not torchcomp's `compexp_gain` (which smooths the *linear* gain): torchcomp has no
    knee, so we compute the static curve ourselves and only borrow its recursion (`compressor_core`: numba kernel,
    exact custom backward for the signal *and* both time constants). Smoothing in dB also makes the attack and
    release times independent of the amount of gain reduction (an exponential in dB), as Giannoulis recommend.
    """
    ref = gain_db
    at = _time_coef(attack_ms, ref, sample_rate, "attack_ms")
    rt = _time_coef(release_ms, ref, sample_rate, "release_ms")
    zi = ref.new_zeros(ref.shape[0])
    return one_pole_recursion(gain_db.contiguous(), zi, at, rt)


class _OnePoleRecursion(CompressorFunction):
    """torchcomp's autograd Function for the recursion, unchanged but for `setup_context`'s return value.

    torchcomp's `setup_context` ends with ``return ctx``; given that, torch keeps the graph node alive for good, and
    with it every input that requires grad and what was saved for backward: every call with gradients on leaked its
    graph (parameter matching grew by ~30-100 MB a triplet until a 2-core machine ran out of memory; a 4-line custom
    Function whose `setup_context` returns its ctx leaks the same way, one that returns nothing does not). Forward,
    backward, jvp and vmap are torchcomp's."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        CompressorFunction.setup_context(ctx, inputs, output)


def one_pole_recursion(x: torch.Tensor, zi: torch.Tensor, at: torch.Tensor, rt: torch.Tensor) -> torch.Tensor:
    """torchcomp's `compressor_core` (the branching one-pole recursion: coefficient `at` while the input is below
    the state, `rt` otherwise, from state `zi`; numba kernel, exact backward for the signal and both coefficients),
    with two of its side effects undone (`_OnePoleRecursion` for the memory). Every call goes through here.

    Threads: the kernel is numba-parallel: numba's first parallel call starts its OpenMP pool at NUMBA_NUM_THREADS
    (every core) and sets the thread count of the OpenMP runtime torch shares. Left so, a process limited to one
    thread (`torch.set_num_threads`, OMP_NUM_THREADS) ran two from then on, one spinning at barriers (three
    one-thread `fxlens bench match` processes on two cores took 2.9x the wall time). The caller's count is put back.
    """
    threads = torch.get_num_threads()
    out = _OnePoleRecursion.apply(x, zi, at, rt)[0]
    if torch.get_num_threads() != threads:
        import numba

        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return out


# ---------------------------------------------------------------------------------------------------------------
# compressor
# ---------------------------------------------------------------------------------------------------------------
def compressor_gain_db(
    x: torch.Tensor,
    sample_rate: int,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    knee_db: torch.Tensor | float = 0.0,
    link: str = "max",
) -> torch.Tensor:
    """The compressor's smoothed gain in dB (B, T), without makeup: detector -> soft-knee computer -> ballistics."""
    check_audio(x)
    _check_rate(sample_rate)
    level_db = amplitude_to_db(linked_level(x, link))
    g = static_gain_db(
        level_db, as_batch(threshold_db, x)[:, None], as_batch(ratio, x)[:, None], as_batch(knee_db, x)[:, None]
    )
    return smooth_gain_db(g, attack_ms, release_ms, sample_rate)


def compressor(
    x: torch.Tensor,
    sample_rate: int,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    knee_db: torch.Tensor | float = 0.0,
    makeup_db: torch.Tensor | float = 0.0,
    link: str = "max",
) -> torch.Tensor:
    """Feed-forward downward compressor. x: (B, C, T); parameters floats or (B,) tensors.

    threshold_db (dBFS peak), ratio (:1, >= 1), attack_ms / release_ms (10-90 % times, both honoured),
    knee_db (soft-knee width, 0 = hard), makeup_db (output gain). One stereo-linked gain for all channels.
    A steady sine of peak level L dBFS comes out at L + static_gain_db(L) + makeup (within the release ripple).
    """
    g = compressor_gain_db(x, sample_rate, threshold_db, ratio, attack_ms, release_ms, knee_db, link)
    g = g + as_batch(makeup_db, x)[:, None]
    return x * db_to_amplitude(g)[:, None, :]


def _time_spec(name: str, lo: float, hi: float, default: float, what: str) -> ParamSpec:
    return ParamSpec(name, "ms", lo, hi, "log", default, what)


def _compressor_specs(prefix: str = "") -> tuple[ParamSpec, ...]:
    p = prefix
    return (
        ParamSpec(f"{p}threshold_db", "dB", -60.0, 0.0, "dB", -20.0, "level (dBFS peak) above which gain is reduced"),
        ParamSpec(f"{p}ratio", ":1", 1.0, 20.0, "log", 4.0, "input dB above threshold per output dB"),
        _time_spec(f"{p}attack_ms", 0.1, 100.0, 10.0, "10-90 % time of growing gain reduction"),
        _time_spec(f"{p}release_ms", 10.0, 1000.0, 100.0, "10-90 % time of recovering gain"),
    )


@register_effect
class Compressor(Effect):
    """Feed-forward compressor with soft knee and makeup; exact attack/release ballistics (torchcomp).

    Ranges: threshold -60..0 dB covers BE-AFX (-40..0) and Fx-Encoder++ (-30..-5); FXmanipulator's -80 dB is
    extreme (it compresses noise floors) and left out. Ratio 1..20 on a log scale: covers BE-AFX (2-10) and
    Fx-Encoder++ (1.5-6), starts at 1 (no compression, so a model can switch it off) and stops at 20, beyond which
    a compressor is a limiter (FXmanipulator's 40:1 differs from 20:1 by 2.5 % of the level above threshold).
    """

    name = "compressor"
    description = "Feed-forward compressor: soft knee, makeup, stereo-linked peak detector, attack and release."

    def __init__(self, link: str = "max") -> None:
        if link not in LINKS:
            raise ParameterError(f"unknown stereo link {link!r}; expected one of {LINKS}")
        super().__init__(
            _compressor_specs()
            + (
                ParamSpec("knee_db", "dB", 0.0, 12.0, "dB", 6.0, "soft-knee width (0 = hard knee)"),
                ParamSpec("makeup_db", "dB", 0.0, 24.0, "dB", 0.0, "output gain after compression"),
            )
        )
        self.link = link

    def process(self, x, sample_rate, **params):
        return compressor(x, sample_rate, link=self.link, **params)

    def config(self) -> dict:
        return {"link": self.link}


# ---------------------------------------------------------------------------------------------------------------
# multiband compressor
# ---------------------------------------------------------------------------------------------------------------
def crossover_sections(
    low_freq_hz: torch.Tensor, high_freq_hz: torch.Tensor, sample_rate: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The five biquads of a Linkwitz-Riley 4th-order 3-way crossover, as {name: (b, a)} with b, a of shape (B, 3).

    lp1/hp1: Butterworth (Q = 1/sqrt 2) low/high-pass at f1; lp2/hp2 the same at f2; ap2 the 2nd-order all-pass
    at f2 with Q = 1/sqrt 2. An LR4 filter is a Butterworth biquad squared, and the bands are
        low = lp1^2 ap2,   mid = hp1^2 lp2^2,   high = hp1^2 hp2^2.
    Since lp2^2 + hp2^2 = ap2 (the analog identity (s^2 - sqrt2 s + 1)/(s^2 + sqrt2 s + 1) survives the bilinear
    transform, which all three RBJ designs share), low + mid + high = ap1 ap2: flat magnitude for any f1, f2; the
    low band's all-pass puts it in phase with mid + high. Frequencies are clamped to 0.45 * sample_rate (a 12 kHz
    split at 22.05 kHz would lie beyond Nyquist).
    """
    f1 = low_freq_hz.clamp(max=0.45 * sample_rate)
    f2 = high_freq_hz.clamp(max=0.45 * sample_rate)
    q = torch.full_like(f1, BUTTERWORTH_Q)
    return {
        "lp1": biquad("lowpass", f1, q, 0.0, sample_rate),
        "hp1": biquad("highpass", f1, q, 0.0, sample_rate),
        "lp2": biquad("lowpass", f2, q, 0.0, sample_rate),
        "hp2": biquad("highpass", f2, q, 0.0, sample_rate),
        "ap2": biquad("allpass", f2, q, 0.0, sample_rate),
    }


def _band_responses(sec: dict[str, tuple[torch.Tensor, torch.Tensor]], n_fft: int, dtype: torch.dtype) -> torch.Tensor:
    """Complex responses (B, 3, F) of the low, mid and high bands on the rfft grid, in complex `dtype`.

    Each of the five biquads (float64 coefficients) evaluated in the u form (`fxlens.fx.filters.u_values`: no
    cancellation near DC, so float32 evaluation loses nothing for float32 audio); the bands are products of the
    biquads (never multiplied out into 7-tap polynomials, whose LR4 denominator ~w0^4 would again cancel).
    """
    names = ("lp1", "hp1", "lp2", "hp2", "ap2")
    p = torch.stack([torch.stack(sec[n], 1) for n in names], 1)  # (B, 5, 2, 3): b and a of each biquad, float64
    values = u_values(p, n_fft, dtype)  # (B, 5, 2, F): numerators and denominators
    lp1, hp1, lp2, hp2, ap2 = (values[:, :, 0] / values[:, :, 1]).unbind(1)
    hp1_sq = hp1.square()
    return torch.stack([lp1.square() * ap2, hp1_sq * lp2.square(), hp1_sq * hp2.square()], 1)


def split_bands(
    x: torch.Tensor,
    sample_rate: int,
    low_freq_hz: torch.Tensor | float,
    high_freq_hz: torch.Tensor | float,
    backend: str = "fft",
) -> torch.Tensor:
    """Split x (B, C, T) into low, mid and high bands (B, 3, C, T) with LR4 crossovers; the bands sum flat.

    backend "iir": exact recursion through `fxlens.fx.filters.apply_biquads` (torchlpc), sharing the hp1^2 stage
    between mid and high (9 biquad passes instead of 12). backend "fft": frequency sampling as in
    `fxlens.fx.filters.filter_fft`, but with one forward FFT of x for the three bands and the five biquad responses
    evaluated directly on the FFT grid (filter_fft would transform x three times and each zero-padded section).
    """
    check_audio(x)
    _check_rate(sample_rate)
    if backend not in BACKENDS:
        raise ParameterError(f"unknown filter backend {backend!r}; expected one of {BACKENDS}")
    B, C, T = x.shape
    # designed in float64 whatever x's dtype: 1 - cos(w0) of a 20 Hz corner is ~4e-6, which float32 knows to ~2 %
    sec = crossover_sections(as_batch(low_freq_hz, x).double(), as_batch(high_freq_hz, x).double(), sample_rate)

    if backend == "iir":
        # the recursion runs in float64 whatever x's dtype: in float32, the 20 Hz pole pair (3e-3 rad from z = 1)
        # leaves the bands' sum 0.14 dB off flat near DC; float64 costs about the same time in torchlpc
        x64 = x.double()

        def cascade(*names: str) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.stack([sec[n][0] for n in names], 1), torch.stack([sec[n][1] for n in names], 1)

        low = apply_biquads(x64, *cascade("lp1", "lp1", "ap2"), backend="iir")
        hp = apply_biquads(x64, *cascade("hp1", "hp1"), backend="iir")
        (b_mid, a_mid), (b_high, a_high) = cascade("lp2", "lp2"), cascade("hp2", "hp2")
        # mid and high filter the same hp1^2 output: one call on a batch of 2B
        mid_high = apply_biquads(
            hp.repeat(2, 1, 1), torch.cat([b_mid, b_high]), torch.cat([a_mid, a_high]), backend="iir"
        ).reshape(2, B, C, T)
        return torch.stack([low, mid_high[0], mid_high[1]], dim=1).to(x.dtype)

    n_fft = padded_fft_length(T)
    resp = _band_responses(sec, n_fft, torch.complex128 if x.dtype == torch.float64 else torch.complex64)
    spec = torch.fft.rfft(x, n=n_fft)  # (B, C, F): one forward transform serves the three bands
    return torch.fft.irfft(spec[:, None] * resp[:, :, None, :], n=n_fft)[..., :T]


def multiband_compressor(
    x: torch.Tensor,
    sample_rate: int,
    low_freq_hz: torch.Tensor | float,
    high_freq_hz: torch.Tensor | float,
    low_threshold_db: torch.Tensor | float,
    low_ratio: torch.Tensor | float,
    low_attack_ms: torch.Tensor | float,
    low_release_ms: torch.Tensor | float,
    mid_threshold_db: torch.Tensor | float,
    mid_ratio: torch.Tensor | float,
    mid_attack_ms: torch.Tensor | float,
    mid_release_ms: torch.Tensor | float,
    high_threshold_db: torch.Tensor | float,
    high_ratio: torch.Tensor | float,
    high_attack_ms: torch.Tensor | float,
    high_release_ms: torch.Tensor | float,
    knee_db: torch.Tensor | float = 0.0,
    mix: torch.Tensor | float = 1.0,
    backend: str = "fft",
    link: str = "max",
) -> torch.Tensor:
    """3-band compressor: LR4 split at low_freq_hz / high_freq_hz, one compressor per band (shared knee), sum.

    Parallel (New York) mix: each band is scaled by (1 - mix) + mix * gain_band, i.e. the dry signal is the *sum of
    the uncompressed bands*, not x itself. That keeps dry and wet phase-coherent (both went through the crossover's
    all-passes); mixing x with the crossover output would comb-filter around the split frequencies. So mix = 0
    returns AP(f1) AP(f2) x: flat magnitude, crossover phase. backend: "fft" (frequency sampling, fast) or "iir"
    (exact recursion).
    """
    bands = split_bands(x, sample_rate, low_freq_hz, high_freq_hz, backend)  # (B, 3, C, T)
    B, _, C, T = bands.shape
    per_band = {
        "threshold_db": (low_threshold_db, mid_threshold_db, high_threshold_db),
        "ratio": (low_ratio, mid_ratio, high_ratio),
        "attack_ms": (low_attack_ms, mid_attack_ms, high_attack_ms),
        "release_ms": (low_release_ms, mid_release_ms, high_release_ms),
    }
    # the three bands' compressors run as one batch of 3B through the gain computer and torchcomp's kernel
    stacked = {k: torch.stack([as_batch(v, x) for v in vals], dim=1).reshape(B * 3) for k, vals in per_band.items()}
    knee = as_batch(knee_db, x).repeat_interleave(3)
    g_db = compressor_gain_db(bands.reshape(B * 3, C, T), sample_rate, knee_db=knee, link=link, **stacked)
    m = as_batch(mix, x)[:, None, None]
    scale = (1.0 - m) + m * db_to_amplitude(g_db).reshape(B, 3, T)  # (B, 3, T)
    return (bands * scale[:, :, None, :]).sum(dim=1)


@register_effect
class MultibandCompressor(Effect):
    """3-band compressor (Fx-Encoder++ style augmentation): LR4 crossovers, a compressor per band, parallel mix.

    Crossover ranges: low 20-500 Hz and high 1-12 kHz (log), so low < high always; they contain Fx-Encoder++'s
    20-300 Hz and 2-12 kHz. Per-band ranges as `Compressor` (contain Fx-Encoder++'s -30..-5 dB, 1.5-6:1, 1-20 ms,
    20-500 ms); parallel mix 0-1 (Fx-Encoder++ draws .2-.7).
    """

    name = "multiband_compressor"
    description = "3-band compressor with Linkwitz-Riley crossovers and parallel mix."

    def __init__(self, backend: str = "fft", link: str = "max") -> None:
        if backend not in BACKENDS:
            raise ParameterError(f"unknown filter backend {backend!r}; expected one of {BACKENDS}")
        if link not in LINKS:
            raise ParameterError(f"unknown stereo link {link!r}; expected one of {LINKS}")
        specs = (
            ParamSpec("low_freq_hz", "Hz", 20.0, 500.0, "log", 200.0, "low/mid crossover frequency"),
            ParamSpec("high_freq_hz", "Hz", 1000.0, 12000.0, "log", 3000.0, "mid/high crossover frequency"),
        )
        for band in BAND_NAMES:
            specs += _compressor_specs(f"{band}_")
        specs += (
            ParamSpec("knee_db", "dB", 0.0, 12.0, "dB", 6.0, "soft-knee width shared by the bands"),
            ParamSpec("mix", "", 0.0, 1.0, "linear", 1.0, "parallel mix: 0 dry (crossover only), 1 compressed"),
        )
        super().__init__(specs)
        self.backend = backend
        self.link = link

    def process(self, x, sample_rate, **params):
        return multiband_compressor(x, sample_rate, backend=self.backend, link=self.link, **params)

    def config(self) -> dict:
        return {"backend": self.backend, "link": self.link}


# ---------------------------------------------------------------------------------------------------------------
# limiter
# ---------------------------------------------------------------------------------------------------------------
def limiter_gain(
    x: torch.Tensor,
    sample_rate: int,
    threshold_db: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    link: str = "max",
) -> torch.Tensor:
    """The limiter's linear gain (B, T): torchcomp's `limiter_gain` formula on the stereo-linked level.

    torchcomp's limiter: a peak envelope e = follower(|x|) rising with the attack and falling with the release
    coefficient, a target gain min(1, 10^(thr/20) / e), and that target smoothed again (attack when it falls,
    release when it rises). We rebuild it from `compressor_core` instead of calling `torchcomp.limiter_gain`
    because the latter divides by an envelope that starts at 0: on input that begins with digital silence its
    forward is fine but its gradients are NaN. Here the envelope is floored at -160 dB; otherwise identical.
    """
    check_audio(x)
    _check_rate(sample_rate)
    level = linked_level(x, link).contiguous()
    at = _time_coef(attack_ms, x, sample_rate, "attack_ms")
    rt = _time_coef(release_ms, x, sample_rate, "release_ms")
    lt = db_to_amplitude(as_batch(threshold_db, x))
    zeros = level.new_zeros(level.shape[0])
    env = one_pole_recursion(level, zeros, rt, at)  # coefficient order swapped: rises with `at`, decays with `rt`
    target = 1.0 - F.relu(1.0 - lt[:, None] / env.clamp_min(LEVEL_FLOOR))
    return one_pole_recursion(target.contiguous(), torch.ones_like(zeros), at, rt)


def limiter(
    x: torch.Tensor,
    sample_rate: int,
    threshold_db: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    lookahead_ms: float = 0.0,
    link: str = "max",
) -> torch.Tensor:
    """Peak limiter with attack/release ballistics (torchcomp). x: (B, C, T); threshold_db (dBFS), times in ms.

    NOT a brickwall: the gain reaches its target through two one-pole stages, so a transient overshoots the
    threshold for about the attack time (a step 19 dB over the threshold passes its first sample untouched). What
    it does guarantee, once a sustained signal has lasted a few attack times (tested):
    - a constant-magnitude signal (square wave, DC) is held exactly at the threshold;
    - a sustained sine peaks at most +2.5 dB over the threshold anywhere in the parameter ranges (measured worst
      +2.0 dB at attack 5 ms / release 20 ms: the envelope rises slowly at each waveform peak and sags between
      them), and at most +0.3 dB when release >= 100 x attack (e.g. attack 1 ms, release 100 ms).
    `lookahead_ms` (config, >= 0) applies the gain computed lookahead_ms later, y[n] = x[n] g[n + L], offline and
    without latency (non-causal), so the gain is already down when a transient arrives. With L = 3 attack times a
    step overshoots < 0.15 dB, with 5 attack times < 0.01 dB. The last L samples reuse the final gain.
    """
    g = limiter_gain(x, sample_rate, threshold_db, attack_ms, release_ms, link)
    L = int(round(float(lookahead_ms) * sample_rate / 1000.0))
    if L < 0:
        raise ParameterError(f"lookahead_ms must be >= 0, got {lookahead_ms}")
    if L > 0:  # shift the gain L samples earlier; the end holds the last gain
        g = torch.cat([g[:, L:], g[:, -1:].expand(-1, min(L, g.shape[-1]))], dim=1)
    return x * g[:, None, :]


@register_effect
class Limiter(Effect):
    """Peak limiter with attack and release (torchcomp ballistics); Fx-Encoder++'s ranges.

    Not a brickwall (see `limiter` for the bounds it does hold); `lookahead_ms` (config, default 0: torchcomp's
    causal limiter) makes the gain non-causal so transients are caught: 5 x attack_ms holds a step to < 0.01 dB.
    """

    name = "limiter"
    description = "Peak limiter with attack and release; optional zero-latency lookahead."

    def __init__(self, lookahead_ms: float = 0.0, link: str = "max") -> None:
        if link not in LINKS:
            raise ParameterError(f"unknown stereo link {link!r}; expected one of {LINKS}")
        if not (math.isfinite(float(lookahead_ms)) and 0.0 <= float(lookahead_ms) <= 50.0):
            raise ParameterError(f"lookahead_ms must lie in [0, 50] ms, got {lookahead_ms}")
        super().__init__(
            (
                ParamSpec("threshold_db", "dB", -20.0, 0.0, "dB", -1.0, "output peak ceiling (dBFS) once settled"),
                _time_spec("attack_ms", 0.1, 5.0, 1.0, "10-90 % time of the envelope and of growing reduction"),
                _time_spec("release_ms", 20.0, 1000.0, 100.0, "10-90 % time of the envelope decay and recovery"),
            )
        )
        self.lookahead_ms = float(lookahead_ms)
        self.link = link

    def process(self, x, sample_rate, **params):
        return limiter(x, sample_rate, lookahead_ms=self.lookahead_ms, link=self.link, **params)

    def config(self) -> dict:
        return {"lookahead_ms": self.lookahead_ms, "link": self.link}

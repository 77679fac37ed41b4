"""Artificial reverb: a seeded, band-wise exponentially decaying noise impulse response, applied by FFT convolution.

Why this design. A late reverberant tail is, to a very good approximation, Gaussian noise whose envelope decays
exponentially at a rate that depends on frequency (Moorer 1979; Polack's model). So the impulse response (IR) is
built from a *fixed* noise buffer (seeded: the same seed gives the same room, bit for bit, on every device), split
once into `n_bands` log-spaced bands by smooth complementary masks in the frequency domain; each band gets its own
exponential envelope whose RT60 follows the parameters. Per call the only per-sample work is one envelope multiply
per band over the IR and three FFTs for the convolution -- no time-domain convolution with a long IR, and no
recursion, so it is batched, differentiable in every parameter and identical in form on CPU and GPU. (dasp's noise
reverb draws fresh noise on every call, so it is not deterministic; this one is.)

The pre-delay moves the band *envelopes*, not the noise under them: the noise stays at absolute time, which is
statistically the same (it is stationary) but makes two IRs that differ only in pre-delay or decay share their fine
structure -- so a loss between them changes smoothly with these parameters, where a true delay of the noise (a
phase ramp) would decorrelate them within a sample and leave a flat, useless loss landscape. It also needs no FFT
for the delay, and an item's IR cannot depend on the rest of its batch.

Parameters (physical units; the `Reverb` module maps normalized controls to these):

- ``decay_s``           RT60 in seconds (time for the tail to fall by 60 dB) at 1 kHz, the middle of the bands.
- ``low_decay_ratio``   RT60 multiplier at the lowest band centre (62.5 Hz); > 1 = boomy, < 1 = thin.
- ``high_decay_ratio``  RT60 multiplier at the highest band centre (16 kHz); < 1 = dark / damped (air absorption).
                        Between the band centres, log(RT60) is interpolated linearly on log frequency, so the RT60
                        of band k is ``band_rt60(...)[..., k]``.
- ``pre_delay_ms``      delay of the wet onset, milliseconds, fractional: the band envelopes start at the pre-delay
                        with a 1 ms raised-cosine fade-in, so the onset moves continuously (and has a gradient).
- ``stereo_width``      0 = the same IR on both channels (mono wet), 1 = decorrelated left/right IRs. The left/right
                        IRs are cos(t) M +- sin(t) S with independent noises M, S and t = width * pi / 4, so each
                        channel keeps unit energy and the expected left/right correlation is cos(width * pi / 2).
- ``mix``               dry/wet crossfade, linear: ``(1 - mix) * x + mix * wet`` (0 = dry, exactly the input).

Level. Every band envelope is scaled to unit energy (over its samples), so the IR has close to unit energy (a few
per cent off for one noise realisation) and, in expectation, a flat magnitude spectrum whatever the decay times:
the wet level does not jump when ``decay_s`` changes (a white input leaves the wet path at about the same RMS),
and ``mix`` alone sets the balance.

Length. The IR of one item lasts its pre-delay + ``min(longest band RT60, max_ir_s)`` seconds; the last 10 % of the
tail is a raised-cosine fade to exactly zero, i.e. a tail that reached -54 dB is faded out by -60 dB.
RT60s longer than ``max_ir_s`` (config, default 4 s, bounds memory and time) are truncated at ``max_ir_s``:
their envelope still decays at the right rate, it just stops early. The output has the input's length; to hear
the whole tail, pad the input with ``Reverb.tail_seconds(params)`` seconds of silence first.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from fxlens.errors import InvalidAudioError, ParameterError
from fxlens.fx.effect import Effect, as_batch, bcast, check_audio, register_effect
from fxlens.fx.filters import fft_length
from fxlens.fx.params import ParamSpec

LOWEST_BAND_HZ = 62.5  # centre of the lowest band; low_decay_ratio applies here
MID_BAND_HZ = 1000.0  # decay_s is the RT60 here
HIGHEST_BAND_HZ = 16000.0  # centre of the highest band; high_decay_ratio applies here
FADE_OUT_FRACTION = 0.1  # the last 10 % of the IR fades to zero (from about -54 dB to nothing at -60 dB)
ONSET_S = 0.001  # the wet onset fades in over 1 ms (raised cosine)
MAX_PRE_DELAY_MS = 100.0  # ParamSpec upper bound; the noise bank covers max_ir_s + this without repeating
_LN_1000 = math.log(1000.0)  # amplitude falls by 60 dB (x 1/1000) over one RT60


# ---------------------------------------------------------------------------------------------------------------
# bands and decay times
# ---------------------------------------------------------------------------------------------------------------
def band_centres_hz(n_bands: int = 12) -> torch.Tensor:
    """Centre frequencies in Hz (float64, (n_bands,)): log-spaced from 62.5 Hz to 16 kHz (1 kHz alone if 1 band)."""
    if n_bands < 1:
        raise ParameterError(f"reverb needs n_bands >= 1, got {n_bands}")
    if n_bands == 1:
        return torch.tensor([MID_BAND_HZ], dtype=torch.float64)
    k = torch.arange(n_bands, dtype=torch.float64)
    return LOWEST_BAND_HZ * (HIGHEST_BAND_HZ / LOWEST_BAND_HZ) ** (k / (n_bands - 1))


def band_rt60(
    decay_s: torch.Tensor | float,
    low_decay_ratio: torch.Tensor | float,
    high_decay_ratio: torch.Tensor | float,
    n_bands: int = 12,
) -> torch.Tensor:
    """RT60 in seconds of each band, (B, n_bands) (or (1, n_bands) for float inputs).

    log RT60 is linear in log frequency on each side of 1 kHz: ``decay_s`` at 1 kHz, ``decay_s * low_decay_ratio``
    at 62.5 Hz and ``decay_s * high_decay_ratio`` at 16 kHz (both 4 octaves away from 1 kHz).
    """
    ref = next((p for p in (decay_s, low_decay_ratio, high_decay_ratio) if isinstance(p, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    decay, low, high = (torch.as_tensor(p, dtype=dtype, device=device).reshape(-1, 1) for p in
                        (decay_s, low_decay_ratio, high_decay_ratio))
    # u = -1 at the lowest centre, 0 at 1 kHz, +1 at the highest centre
    u = (torch.log2(band_centres_hz(n_bands) / MID_BAND_HZ) / math.log2(HIGHEST_BAND_HZ / MID_BAND_HZ))
    u = u.to(dtype=dtype, device=device)
    log_ratio = torch.where(u < 0, -u * torch.log(low), u * torch.log(high))
    return decay * torch.exp(log_ratio)


def band_masks(n_bins: int, n_fft: int, sample_rate: int, n_bands: int = 12) -> torch.Tensor:
    """Zero-phase band masks (n_bands, n_bins) on the rfft bins of an n_fft-point FFT; they sum to exactly 1.

    Band k is cos^2 on a log2-frequency axis, 1 at its centre and 0 at its neighbours' centres, so adjacent bands
    cross over at -6 dB in amplitude and add back to 1 (amplitude complementary: equal envelopes -> white noise).
    The lowest band extends down to DC, the highest up to Nyquist.
    """
    centres = band_centres_hz(n_bands)
    if n_bands == 1:
        return torch.ones(1, n_bins, dtype=torch.float64)
    f = torch.arange(n_bins, dtype=torch.float64) * (sample_rate / n_fft)
    step = math.log2(centres[1].item() / centres[0].item())
    pos = (torch.log2(f.clamp_min(1e-3)) - math.log2(centres[0].item())) / step  # 0 at band 0, 1 at band 1, ...
    pos = pos.clamp(0.0, n_bands - 1.0)
    d = pos[None, :] - torch.arange(n_bands, dtype=torch.float64)[:, None]
    return torch.where(d.abs() < 1.0, torch.cos(0.5 * math.pi * d) ** 2, torch.zeros_like(d))


@lru_cache(maxsize=4)
def _noise_bank_cpu(seed: int, n_samples: int, sample_rate: int, n_bands: int) -> torch.Tensor:
    # Generated on the CPU in float64 with its own Generator: the same numbers on every device and every run, and
    # the global RNG is left alone. Two independent noises: mid (channel 0) and side (channel 1) of the wet signal.
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(2, n_samples, generator=gen, dtype=torch.float64)
    spec = torch.fft.rfft(noise, dim=-1)  # (2, F); circular band-splitting is fine: the noise is stationary
    masks = band_masks(spec.shape[-1], n_samples, sample_rate, n_bands)  # (K, F)
    return torch.fft.irfft(spec[None] * masks[:, None, :], n=n_samples, dim=-1)  # (K, 2, n_samples)


def reverb_noise_bank(
    seed: int,
    sample_rate: int,
    max_ir_s: float = 4.0,
    n_bands: int = 12,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The band-split seeded noise, (n_bands, 2, ceil((max_ir_s + 0.1) * sample_rate)).

    Channel 0 is the mid noise, channel 1 the side noise; the bands of a channel sum to a unit-variance white noise.
    """
    if max_ir_s <= 0:
        raise ParameterError(f"reverb needs max_ir_s > 0, got {max_ir_s}")
    n = max(1, math.ceil((max_ir_s + MAX_PRE_DELAY_MS / 1000.0) * sample_rate))
    return _noise_bank_cpu(int(seed), n, int(sample_rate), int(n_bands)).to(dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------------------------
# impulse response and convolution
# ---------------------------------------------------------------------------------------------------------------
def fft_convolve(x: torch.Tensor, h: torch.Tensor, n_out: int | None = None) -> torch.Tensor:
    """Linear convolution along the last axis by FFT, the first `n_out` samples (default: x's length)."""
    n_out = x.shape[-1] if n_out is None else n_out
    n = fft_length(x.shape[-1] + h.shape[-1] - 1)
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(h, n=n), n=n)
    return y[..., :n_out]


def _batch_size(*params) -> int:
    sizes = {p.numel() for p in params if isinstance(p, torch.Tensor) and p.dim() > 0}
    if len(sizes) > 1:
        raise ParameterError(f"reverb parameters have different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def reverb_impulse_response(
    sample_rate: int,
    decay_s: torch.Tensor | float = 1.5,
    low_decay_ratio: torch.Tensor | float = 1.0,
    high_decay_ratio: torch.Tensor | float = 0.5,
    pre_delay_ms: torch.Tensor | float = 10.0,
    stereo_width: torch.Tensor | float = 1.0,
    *,
    channels: int = 2,
    n_bands: int = 12,
    max_ir_s: float = 4.0,
    seed: int = 0,
    noise_bank: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The wet impulse response (B, channels, samples) that `reverb` convolves with; see the module docstring.

    Parameters are floats or (B,) tensors (B = their common batch size, 1 if all are floats). `channels` is 1
    (mid noise only) or 2. `noise_bank` (from `reverb_noise_bank`) skips rebuilding the band-split noise.

    ``ir[b, c, n] = sum_k g_k * E_k(n / sr - d) * noise_k[c', n]`` with d the pre-delay in seconds, E_k the band
    envelope ``onset(tau) * exp(-ln(1000) * tau / RT60_k) * fade(tau)`` (zero for tau <= 0 and from the item's own
    length on) and g_k the factor that gives each band envelope unit energy. The length is the longest item's
    ``pre-delay + min(max band RT60, max_ir_s)`` in samples, rounded up; an item's IR is exactly zero past its own
    end, so it does not depend on the rest of the batch.
    """
    if channels not in (1, 2):
        raise InvalidAudioError(f"reverb works on mono or stereo audio, got {channels} channels")
    if not sample_rate > 0:
        raise ParameterError(f"sample rate must be positive, got {sample_rate}")
    params = (decay_s, low_decay_ratio, high_decay_ratio, pre_delay_ms, stereo_width)
    tensor_params = [p for p in params if isinstance(p, torch.Tensor)]
    if dtype is None:
        floats = [p.dtype for p in tensor_params if p.is_floating_point()]
        dtype = floats[0] if floats else torch.get_default_dtype()
    if device is None and tensor_params:
        device = tensor_params[0].device
    ref = torch.empty(_batch_size(*params), channels, 0, dtype=dtype, device=device)
    decay, low, high, pre_delay, width = (as_batch(p, ref) for p in params)

    bank = noise_bank
    if bank is None:
        bank = reverb_noise_bank(seed, sample_rate, max_ir_s, n_bands, dtype, ref.device)
    bank = bank.to(dtype=dtype, device=ref.device)
    if bank.dim() != 3 or bank.shape[0] != n_bands or bank.shape[1] != 2:
        raise ParameterError(f"noise bank of shape {tuple(bank.shape)} does not fit {n_bands} bands")

    rt = band_rt60(decay, low, high, n_bands)  # (B, K) seconds
    if not bool(torch.all(rt > 0)):
        raise ParameterError("reverb decay times must be positive")
    own_s = torch.clamp(rt.max(dim=-1).values, max=max_ir_s)[:, None]  # (B, 1) seconds of tail per item
    delay_s = pre_delay.clamp_min(0.0)[:, None] / 1000.0  # (B, 1) seconds (a negative pre-delay would be acausal)
    with torch.no_grad():  # the allocated length is a size, not a function to differentiate
        n_ir = max(1, math.ceil(float((own_s + delay_s).max()) * sample_rate))

    t = torch.arange(n_ir, dtype=dtype, device=ref.device) / sample_rate
    tau = t - delay_s  # (B, L) seconds since the wet onset
    # Onset: a 1 ms raised-cosine fade-in, so the onset time -- and with it the pre-delay -- moves continuously with
    # a gradient (a hard step would only move in whole samples). Fade-out: raised cosine over the last 10 % of the
    # item's own length, C1-smooth and exactly zero from there on (the tail has reached -54 dB where it starts).
    onset = torch.sin(0.5 * math.pi * (tau / ONSET_S).clamp(0.0, 1.0)) ** 2
    fade = torch.sin(0.5 * math.pi * ((own_s - tau) / (FADE_OUT_FRACTION * own_s)).clamp(0.0, 1.0)) ** 2
    window = onset * fade  # (B, L)
    tau = tau.clamp_min(0.0)  # before the onset the window is 0; clamping keeps exp() finite there
    rate = _LN_1000 / rt  # (B, K) amplitude decay rate, 1/s

    # The noise sits at absolute time n (it is not delayed with the envelope): a stationary noise needs no delay,
    # the IR onset moves all the same, and two settings that differ only in pre-delay (or decay) share their fine
    # structure, which keeps a spectral loss smooth in these parameters instead of decorrelating at every sample.
    n_noise = 1 if channels == 1 else 2
    if n_ir <= bank.shape[-1]:
        noise = bank[:, :n_noise, :n_ir]
    else:  # pre-delays beyond MAX_PRE_DELAY_MS: the bank is circular (band-split by FFT), so it wraps seamlessly
        noise = bank[:, :n_noise, torch.arange(n_ir, device=ref.device) % bank.shape[-1]]

    # One band at a time: memory stays O(B * L) instead of O(B * K * L).
    wet = torch.zeros(ref.shape[0], n_noise, n_ir, dtype=dtype, device=ref.device)
    for k in range(n_bands):
        env = torch.exp(-rate[:, k : k + 1] * tau) * window  # (B, L)
        # unit energy per band envelope: the IR has ~unit energy and a flat expected spectrum at any decay time
        env = env * torch.rsqrt(env.square().sum(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny))
        wet = wet + env[:, None, :] * noise[k]
    if channels == 2:
        # Mid/side rotation: left/right correlation cos(width * pi / 2), unit energy per channel at every width.
        theta = bcast(width, ref) * (math.pi / 4)
        mid, side = wet[:, 0:1] * torch.cos(theta), wet[:, 1:2] * torch.sin(theta)
        wet = torch.cat([mid + side, mid - side], dim=1)
    return wet


def reverb(
    x: torch.Tensor,
    sample_rate: int,
    decay_s: torch.Tensor | float = 1.5,
    low_decay_ratio: torch.Tensor | float = 1.0,
    high_decay_ratio: torch.Tensor | float = 0.5,
    pre_delay_ms: torch.Tensor | float = 10.0,
    stereo_width: torch.Tensor | float = 1.0,
    mix: torch.Tensor | float = 0.25,
    *,
    n_bands: int = 12,
    max_ir_s: float = 4.0,
    seed: int = 0,
    noise_bank: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reverberate x (B, C, T) with C = 1 or 2; returns (B, C, T): ``(1 - mix) * x + mix * (x conv ir)``.

    Units: ``decay_s`` seconds (RT60 at 1 kHz), ``low_decay_ratio`` / ``high_decay_ratio`` multipliers of it at
    62.5 Hz / 16 kHz, ``pre_delay_ms`` milliseconds, ``stereo_width`` in [0, 1], ``mix`` in [0, 1]. Each channel
    is convolved with its own IR channel (`reverb_impulse_response`), by FFT. The output keeps x's length: pad x
    with silence to keep the tail.
    """
    check_audio(x)
    if x.shape[1] not in (1, 2):
        raise InvalidAudioError(f"reverb works on mono or stereo audio, got {x.shape[1]} channels")
    ir = reverb_impulse_response(
        sample_rate, bcast(decay_s, x).flatten(), bcast(low_decay_ratio, x).flatten(),
        bcast(high_decay_ratio, x).flatten(), bcast(pre_delay_ms, x).flatten(), bcast(stereo_width, x).flatten(),
        channels=x.shape[1], n_bands=n_bands, max_ir_s=max_ir_s, seed=seed, noise_bank=noise_bank,
        dtype=x.dtype, device=x.device,
    )
    wet = fft_convolve(x, ir)
    m = bcast(mix, x)
    return (1.0 - m) * x + m * wet


@register_effect
class Reverb(Effect):
    """Seeded noise reverb with per-band decay (see `reverb`); config: n_bands, max_ir_s, seed."""

    name = "reverb"
    description = "Seeded band-wise decaying noise reverb: RT60 with low/high ratios, pre-delay, width, mix."

    def __init__(self, n_bands: int = 12, max_ir_s: float = 4.0, seed: int = 0) -> None:
        super().__init__(
            (
                ParamSpec("decay_s", "s", 0.1, 4.0, "log", 1.5, "RT60 at 1 kHz (time to decay by 60 dB; at most max_ir_s)"),
                ParamSpec("low_decay_ratio", "x", 0.25, 2.0, "log", 1.0, "RT60 multiplier at 62.5 Hz"),
                ParamSpec("high_decay_ratio", "x", 0.25, 2.0, "log", 0.5, "RT60 multiplier at 16 kHz (damping)"),
                ParamSpec("pre_delay_ms", "ms", 0.0, MAX_PRE_DELAY_MS, "linear", 10.0, "delay of the wet onset"),
                ParamSpec("stereo_width", "", 0.0, 1.0, "linear", 1.0, "0 mono wet, 1 decorrelated L/R"),
                ParamSpec("mix", "", 0.0, 1.0, "linear", 0.25, "0 dry, 1 wet (linear crossfade)"),
            )
        )
        if int(n_bands) < 1:
            raise ParameterError(f"reverb needs n_bands >= 1, got {n_bands}")
        if not float(max_ir_s) > 0:
            raise ParameterError(f"reverb needs max_ir_s > 0, got {max_ir_s}")
        self.n_bands, self.max_ir_s, self.seed = int(n_bands), float(max_ir_s), int(seed)
        # The band-split noise depends on the sample rate, so it is built on first use; as a (non-persistent)
        # buffer it follows .to(device) / .double() and stays out of checkpoints (it is a function of the config).
        self.register_buffer("noise_bank", torch.empty(0), persistent=False)
        self._bank_rate: int | None = None

    def _bank(self, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if self._bank_rate != sample_rate or self.noise_bank.numel() == 0 or self.noise_bank.dtype != x.dtype:
            self.noise_bank = reverb_noise_bank(self.seed, sample_rate, self.max_ir_s, self.n_bands, x.dtype, x.device)
            self._bank_rate = sample_rate
        return self.noise_bank.to(dtype=x.dtype, device=x.device)

    def process(self, x, sample_rate, decay_s, low_decay_ratio, high_decay_ratio, pre_delay_ms, stereo_width, mix):
        return reverb(
            x, sample_rate, decay_s, low_decay_ratio, high_decay_ratio, pre_delay_ms, stereo_width, mix,
            n_bands=self.n_bands, max_ir_s=self.max_ir_s, seed=self.seed, noise_bank=self._bank(x, sample_rate),
        )

    def config(self) -> dict:
        return {"n_bands": self.n_bands, "max_ir_s": self.max_ir_s, "seed": self.seed}

    def tail_seconds(self, params: dict[str, torch.Tensor]) -> float:
        """Pre-delay + the longest band RT60 (capped at max_ir_s), seconds; the largest over the batch."""
        def value(name: str) -> torch.Tensor:
            v = params.get(name, self.spec(name).default)
            v = v.detach().cpu() if isinstance(v, torch.Tensor) else v
            return torch.as_tensor(v, dtype=torch.float64).reshape(-1)

        rt = band_rt60(value("decay_s"), value("low_decay_ratio"), value("high_decay_ratio"), self.n_bands)
        longest = rt.max(dim=-1).values.clamp(max=self.max_ir_s)
        return float((value("pre_delay_ms").clamp_min(0.0) / 1000.0 + longest).max())

"""Equalizers: a parametric EQ (low shelf, N peaking bands, high shelf) and a 10-band octave graphic EQ.

Both are cascades of RBJ Audio-EQ-Cookbook biquads (`fxlens.fx.filters.biquad`) applied by one of two backends:

- ``"fft"`` (default, for training): frequency sampling, fast and cheap to differentiate; it differs from the exact
  recursion only by the impulse-response energy that outlasts the signal (see `fxlens.fx.filters.filter_fft`);
- ``"iir"``: the exact recursion through torchlpc; matches ``scipy.signal.sosfilt`` (rendering, reference).

Ranges cover the peers (REFERENCES.md):

- BE-AFX parametric EQ: low shelf 30-160 Hz, peaks 100-2k / 500-6k / 2k-16k Hz, high shelf 5k-20k Hz, Q 0.1-2;
  FXmanipulator: 5 RBJ bands, +-15 dB; Fx-Encoder++ (dasp): 6 biquads, +-12 dB, Q 0.5-5.
  -> gains +-15 dB, Q 0.1-5 (log), frequencies log-scaled; ``n_peaks=3`` reproduces BE-AFX's bands exactly and the
  default ``n_peaks=4`` gives dasp's six sections (low shelf + 4 peaks + high shelf; the peak ranges are BE-AFX's,
  interpolated in log frequency, see `peak_ranges`).
- BE-AFX graphic EQ: 10 octave bands centred at 31.25 Hz * 2**k (k = 0..9, up to 16 kHz), +-15 dB each.

Frequencies are clamped to [1 Hz, 0.45 * sample_rate] inside the functional forms, so the 20 kHz end of the high
shelf (and the 16 kHz graphic band at low sample rates) stays below Nyquist, where the bilinear transform's
cookbook formulas stop making sense; above the clamp the frequency gets no gradient. Q is clamped to >= 1e-3.

Precision: coefficients are designed in float64 and cast to the audio's dtype. In float32 a low-frequency, high-Q
band still loses precision to the rounding of a1 ~ -2, a2 ~ 1 (either backend): outputs stay within ~1e-3 of the
float64 result relative to the peak, curves within ~0.5 dB at 20-30 Hz; use float64 where that matters.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from fxlens.errors import ParameterError
from fxlens.fx.effect import Effect, as_batch, check_audio, register_effect
from fxlens.fx.filters import apply_biquads, biquad, decay_seconds, magnitude_db
from fxlens.fx.params import ParamSpec

BACKENDS = ("fft", "iir")

#: Highest filter frequency, as a fraction of the sample rate (kept clear of Nyquist = 0.5).
MAX_FREQ_RATIO = 0.45
MIN_FREQ_HZ = 1.0
MIN_Q = 1e-3

GAIN_RANGE_DB = (-15.0, 15.0)
Q_RANGE = (0.1, 5.0)  # log scale; the geometric middle sqrt(0.1 * 5) = 1/sqrt(2) is the default
LOW_SHELF_RANGE_HZ = (30.0, 160.0)
HIGH_SHELF_RANGE_HZ = (5000.0, 20000.0)
# BE-AFX's three peaking bands; other band counts interpolate these anchors in log frequency (see `peak_ranges`).
_PEAK_ANCHORS_HZ = ((100.0, 2000.0), (500.0, 6000.0), (2000.0, 16000.0))

#: Graphic EQ: octave band centres 31.25 Hz ... 16 kHz, and the constant Q of every band.
GRAPHIC_CENTERS_HZ = tuple(31.25 * 2.0**k for k in range(10))
GRAPHIC_Q = math.sqrt(2.0)  # one octave between the half-gain (in dB) points of the analog prototype
_GRAPHIC_PROTO_GAIN_DB = 12.0  # prototype gain at which the band-interaction matrix is measured
_GRAPHIC_REFINEMENTS = 3  # fixed-point refinements after the linear solve (the dB response is not linear in gain)


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ParameterError(f"unknown EQ backend {backend!r}; expected one of {BACKENDS}")
    return backend


def _clamp_freq(freq_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    return freq_hz.clamp(MIN_FREQ_HZ, MAX_FREQ_RATIO * sample_rate)


def _design_precision(t: torch.Tensor) -> torch.Tensor:
    """Parameters in float64 for the coefficient design (differentiable cast; the coefficients are cast back).

    Low-frequency biquads have a1 ~ -2, a2 ~ 1 and |A(e^jw)| ~ w0^2 near their frequency: designing them in float32
    (cos, sin, A in float32) adds a few ulps on top of the final rounding and triples the float32 error at 30-100 Hz
    (e.g. 7e-4 -> 2e-4 of the peak for a 38 Hz shelf at Q 2.5). It costs nothing (B x S scalars). MPS has no float64.
    """
    return t if t.device.type == "mps" else t.to(torch.float64)


def _label_hz(f: float) -> str:
    """31.25 -> '31hz', 1000 -> '1khz', 16000 -> '16khz' (parameter names)."""
    return f"{int(f // 1000)}khz" if f >= 1000 else f"{int(f)}hz"


def _fmt_hz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"


# --------------------------------------------------------------------------------------------------------------------
# Parametric EQ
# --------------------------------------------------------------------------------------------------------------------


def peak_ranges(n_peaks: int) -> list[tuple[float, float]]:
    """Frequency range (Hz) of each peaking band for `n_peaks` bands, low to high.

    Band k of n sits at position t = k / (n - 1) along BE-AFX's three bands (100-2k, 500-6k, 2k-16k Hz at
    t = 0, 1/2, 1); its lower and upper edges are interpolated piecewise-linearly in log frequency between those
    anchors. n = 3 gives BE-AFX's ranges exactly; n = 1 gives one band over the whole span 100 Hz - 16 kHz.
    """
    if not isinstance(n_peaks, int) or isinstance(n_peaks, bool) or not 1 <= n_peaks <= 16:
        raise ParameterError(f"n_peaks must be an integer in [1, 16], got {n_peaks!r}")
    if n_peaks == 1:
        return [(_PEAK_ANCHORS_HZ[0][0], _PEAK_ANCHORS_HZ[-1][1])]

    def interp(t: float, edge: int) -> float:
        pos = t * (len(_PEAK_ANCHORS_HZ) - 1)
        i = min(int(pos), len(_PEAK_ANCHORS_HZ) - 2)
        w = pos - i
        lo, hi = math.log(_PEAK_ANCHORS_HZ[i][edge]), math.log(_PEAK_ANCHORS_HZ[i + 1][edge])
        return float(round(math.exp(lo + w * (hi - lo)), 6))

    return [(interp(k / (n_peaks - 1), 0), interp(k / (n_peaks - 1), 1)) for k in range(n_peaks)]


def parametric_eq_specs(n_peaks: int = 4) -> tuple[ParamSpec, ...]:
    """ParamSpecs of the parametric EQ, in cascade order: low shelf, peak1..peakN, high shelf.

    Each band has `<band>_freq` (Hz, log), `<band>_gain` (dB) and `<band>_q` ("", log). Defaults sit at the middle of
    every range (normalized control 0.5): gains 0 dB, Q 1/sqrt(2), frequencies at the geometric mean of their range.
    """

    def band(prefix: str, kind: str, f_range: tuple[float, float]) -> list[ParamSpec]:
        f_mid = math.sqrt(f_range[0] * f_range[1])
        where = f"{_fmt_hz(f_range[0])}-{_fmt_hz(f_range[1])}"
        return [
            ParamSpec(f"{prefix}_freq", "Hz", *f_range, "log", f_mid, f"{kind} frequency ({where})"),
            ParamSpec(f"{prefix}_gain", "dB", *GAIN_RANGE_DB, "dB", 0.0, f"{kind} gain"),
            ParamSpec(f"{prefix}_q", "", *Q_RANGE, "log", math.sqrt(Q_RANGE[0] * Q_RANGE[1]), f"{kind} Q"),
        ]

    specs = band("low_shelf", "low shelf", LOW_SHELF_RANGE_HZ)
    for k, f_range in enumerate(peak_ranges(n_peaks), start=1):
        specs += band(f"peak{k}", f"peaking band {k}", f_range)
    specs += band("high_shelf", "high shelf", HIGH_SHELF_RANGE_HZ)
    return tuple(specs)


def _peq_bands(params: dict) -> list[tuple[str, str]]:
    """(kind, prefix) of every section named by `params`, in cascade order; checks that the names are complete."""
    n_peaks = sum(1 for k in params if k.startswith("peak") and k.endswith("_freq"))
    bands = [("low_shelf", "low_shelf")] + [("peaking", f"peak{k}") for k in range(1, n_peaks + 1)]
    bands.append(("high_shelf", "high_shelf"))
    expected = {f"{prefix}_{p}" for _, prefix in bands for p in ("freq", "gain", "q")}
    if set(params) != expected:
        missing, unknown = sorted(expected - set(params)), sorted(set(params) - expected)
        raise ParameterError(f"parametric_eq: missing parameters {missing}, unknown parameters {unknown}")
    return bands


def _as_batched(params: dict, like: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every parameter as a (B,) tensor: on `like`'s batch/dtype/device, or else broadcast among themselves."""
    if like is not None:
        return {k: as_batch(v, like) for k, v in params.items()}
    tensors = [v for v in params.values() if isinstance(v, torch.Tensor)]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    out = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in params.items()}
    shape = torch.broadcast_shapes(*(v.shape for v in out.values()))
    if len(shape) > 1:
        raise ParameterError(f"EQ parameters must be floats or (batch,) tensors, got shape {tuple(shape)}")
    shape = shape if len(shape) == 1 else (1,)
    return {k: v.expand(shape) for k, v in out.items()}


def parametric_eq_coefficients(
    sample_rate: int, like: torch.Tensor | None = None, **params: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Biquad cascade (b, a), each (B, n_peaks + 2, 3), of the parametric EQ: low shelf, peaks, high shelf.

    params: `low_shelf_freq` (Hz), `low_shelf_gain` (dB), `low_shelf_q`, `peak1_freq` ... `peakN_q`,
    `high_shelf_*`; floats or (B,) tensors (the number of peaks is read from the names). `like`: an audio tensor
    (B, C, T) whose batch size, dtype and device the coefficients take; without it, the parameters' own. Use with
    `fxlens.fx.filters.magnitude_db` for the EQ curve.
    """
    bands = _peq_bands(params)
    p = _as_batched(params, like)
    dtype = next(iter(p.values())).dtype
    p = {k: _design_precision(v) for k, v in p.items()}
    bs, as_ = [], []
    for kind, prefix in bands:
        freq = _clamp_freq(p[f"{prefix}_freq"], sample_rate)
        q = p[f"{prefix}_q"].clamp_min(MIN_Q)
        b, a = biquad(kind, freq, q, p[f"{prefix}_gain"], sample_rate)
        bs.append(b)
        as_.append(a)
    return torch.stack(bs, dim=1).to(dtype), torch.stack(as_, dim=1).to(dtype)


def parametric_eq(
    x: torch.Tensor, sample_rate: int, backend: str = "fft", **params: torch.Tensor | float
) -> torch.Tensor:
    """Parametric EQ: low shelf, N peaking bands, high shelf (RBJ cookbook), same filter on every channel.

    x: (B, C, T). params as in `parametric_eq_coefficients` (frequencies in Hz, gains in dB, Q unitless).
    backend: "fft" (frequency sampling) or "iir" (exact recursion, = scipy.signal.sosfilt). Returns (B, C, T).
    """
    check_audio(x)
    _check_backend(backend)
    b, a = parametric_eq_coefficients(sample_rate, like=x, **params)
    return apply_biquads(x, b, a, backend=backend)


@register_effect
class ParametricEQ(Effect):
    """Low shelf + `n_peaks` peaking bands + high shelf. Config: n_peaks (default 4; 3 = BE-AFX), backend."""

    name = "parametric_eq"
    description = "Parametric EQ: low shelf, peaking bands and high shelf (RBJ biquads)."

    def __init__(self, n_peaks: int = 4, backend: str = "fft") -> None:
        self.n_peaks = n_peaks
        self.backend = _check_backend(backend)
        super().__init__(parametric_eq_specs(n_peaks))

    def process(self, x, sample_rate, **params):
        return parametric_eq(x, sample_rate, backend=self.backend, **params)

    def coefficients(self, sample_rate: int, **params) -> tuple[torch.Tensor, torch.Tensor]:
        """The cascade (b, a), each (B, n_peaks + 2, 3), for physical params (for EQ-curve plots)."""
        return parametric_eq_coefficients(sample_rate, **params)

    def config(self) -> dict:
        return {"n_peaks": self.n_peaks, "backend": self.backend}

    def tail_seconds(self, params: dict[str, torch.Tensor]) -> float:
        """Ringing of the slowest band down to -60 dB (up to ~1 s for a 30 Hz shelf at Q 5 and +15 dB)."""
        _, a = parametric_eq_coefficients(44100, **params)
        return decay_seconds(a, 44100)


# --------------------------------------------------------------------------------------------------------------------
# Graphic EQ
# --------------------------------------------------------------------------------------------------------------------
#
# Band interaction. Constant-Q peaking bands one octave apart overlap: with Q = sqrt(2), setting every band to +6 dB
# gives +7.4 to +8.8 dB at the band centres and +5.9 to +8.8 dB between 62.5 Hz and 8 kHz (about +2.8 dB too much
# and 2.9 dB of ripple); near the top the 16 kHz band is squeezed by the bilinear transform (8-16 kHz dips to
# +3.1 dB at 44.1 kHz). With `compensate=True` the gains are read as the *target* response at the band centres and
# the filter gains are solved for: a linear solve with the interaction matrix (dB response of each band at every
# centre, measured at a 12 dB prototype, divided by 12), then 3 fixed-point refinements that evaluate the true
# cascade at the centres (the dB response is not linear in the gain). The centres are then hit to within ~0.05 dB
# (within ~0.2 dB for alternating +-15 dB), the all +6 dB curve stays within +4.5..+6.0 dB between 62.5 Hz and 8 kHz
# (the remaining ripple is the gap between octave bands of Q sqrt(2)), and the filter gains themselves may exceed
# +-15 dB (up to ~+-26 dB for alternating +-15 dB targets). All of it is differentiable.


GRAPHIC_GAIN_RANGE_DB = GAIN_RANGE_DB
GRAPHIC_PARAM_NAMES = tuple(f"gain_{_label_hz(f)}" for f in GRAPHIC_CENTERS_HZ)


def graphic_eq_specs() -> tuple[ParamSpec, ...]:
    """One gain (dB, +-15, default 0) per octave band: gain_31hz, gain_62hz, ..., gain_1khz, ..., gain_16khz."""
    return tuple(
        ParamSpec(name, "dB", *GRAPHIC_GAIN_RANGE_DB, "dB", 0.0, f"gain of the octave band at {_fmt_hz(f)}")
        for name, f in zip(GRAPHIC_PARAM_NAMES, GRAPHIC_CENTERS_HZ)
    )



def _graphic_cascade(gains_db: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten peaking biquads with the given filter gains (B, 10) dB -> b, a of shape (B, 10, 3)."""
    B, dtype = gains_db.shape[0], gains_db.dtype
    gains = _design_precision(gains_db)
    centers = torch.tensor(GRAPHIC_CENTERS_HZ, dtype=gains.dtype, device=gains.device)
    freq = _clamp_freq(centers, sample_rate).expand(B, -1).reshape(-1)
    q = torch.full_like(freq, GRAPHIC_Q)
    b, a = biquad("peaking", freq, q, gains.reshape(-1), sample_rate)
    return b.reshape(B, 10, 3).to(dtype), a.reshape(B, 10, 3).to(dtype)


def _band_db_at_centres(b: torch.Tensor, a: torch.Tensor, centres: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """dB response of each section separately at the centres: (B, S, 3), (F,) -> (B, S, F)."""
    return magnitude_db(b[:, :, None, :], a[:, :, None, :], centres, sample_rate)


@lru_cache(maxsize=16)
def graphic_interaction_inverse(sample_rate: int) -> torch.Tensor:
    """Inverse of the band-interaction matrix M (10, 10), float64 CPU: M[i, j] = dB at centre i per dB of band j."""
    centres = _clamp_freq(torch.tensor(GRAPHIC_CENTERS_HZ, dtype=torch.float64), sample_rate)
    b, a = _graphic_cascade(torch.full((1, 10), _GRAPHIC_PROTO_GAIN_DB, dtype=torch.float64), sample_rate)
    per_band = _band_db_at_centres(b, a, centres, sample_rate)[0]  # (band j, centre i)
    return torch.linalg.inv(per_band.T / _GRAPHIC_PROTO_GAIN_DB)


def graphic_filter_gains(gains_db: torch.Tensor, sample_rate: int, compensate: bool = False) -> torch.Tensor:
    """Filter gains (B, 10) dB of the ten bands. Without compensation, `gains_db` itself; with it, the gains whose
    cascade has the response `gains_db` at the band centres (see the band-interaction note above)."""
    if not compensate:
        return gains_db
    inv = graphic_interaction_inverse(sample_rate).to(gains_db.device, gains_db.dtype)
    centres = _clamp_freq(torch.tensor(GRAPHIC_CENTERS_HZ, dtype=gains_db.dtype, device=gains_db.device), sample_rate)
    g = gains_db @ inv.T
    for _ in range(_GRAPHIC_REFINEMENTS):
        b, a = _graphic_cascade(g, sample_rate)
        actual = magnitude_db(b, a, centres, sample_rate)  # (B, 10): whole cascade at each centre
        g = g + (gains_db - actual) @ inv.T
    return g


def graphic_eq_coefficients(
    sample_rate: int, like: torch.Tensor | None = None, compensate: bool = False, **params: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Biquad cascade (b, a), each (B, 10, 3), of the graphic EQ. params: gain_31hz ... gain_16khz in dB (floats or
    (B,) tensors). `like`: audio (B, C, T) giving batch size, dtype and device (else the parameters' own)."""
    if set(params) != set(GRAPHIC_PARAM_NAMES):
        names = set(GRAPHIC_PARAM_NAMES)
        missing, unknown = sorted(names - set(params)), sorted(set(params) - names)
        raise ParameterError(f"graphic_eq: missing parameters {missing}, unknown parameters {unknown}")
    p = _as_batched(params, like)
    gains = torch.stack([p[name] for name in GRAPHIC_PARAM_NAMES], dim=1)
    return _graphic_cascade(graphic_filter_gains(gains, sample_rate, compensate), sample_rate)


def graphic_eq(
    x: torch.Tensor,
    sample_rate: int,
    backend: str = "fft",
    compensate: bool = False,
    **params: torch.Tensor | float,
) -> torch.Tensor:
    """10-band octave graphic EQ (peaking biquads, Q sqrt(2), centres 31.25 Hz * 2**k up to 16 kHz).

    x: (B, C, T); params gain_31hz ... gain_16khz in dB. compensate: read the gains as the target response at the
    band centres and pre-compensate the band interaction (see the note above). Returns (B, C, T).
    """
    check_audio(x)
    _check_backend(backend)
    b, a = graphic_eq_coefficients(sample_rate, like=x, compensate=compensate, **params)
    return apply_biquads(x, b, a, backend=backend)


@register_effect
class GraphicEQ(Effect):
    """Ten octave bands, 31.25 Hz - 16 kHz, +-15 dB. Config: backend, compensate (band-interaction correction)."""

    name = "graphic_eq"
    description = "10-band octave graphic EQ (31.25 Hz - 16 kHz, constant-Q peaking biquads)."

    def __init__(self, backend: str = "fft", compensate: bool = False) -> None:
        self.backend = _check_backend(backend)
        self.compensate = bool(compensate)
        super().__init__(graphic_eq_specs())

    def process(self, x, sample_rate, **params):
        return graphic_eq(x, sample_rate, backend=self.backend, compensate=self.compensate, **params)

    def coefficients(self, sample_rate: int, **params) -> tuple[torch.Tensor, torch.Tensor]:
        """The cascade (b, a), each (B, 10, 3), for physical gains (for EQ-curve plots)."""
        return graphic_eq_coefficients(sample_rate, compensate=self.compensate, **params)

    def config(self) -> dict:
        return {"backend": self.backend, "compensate": self.compensate}

    def tail_seconds(self, params: dict[str, torch.Tensor]) -> float:
        """Ringing of the slowest band down to -60 dB (the 31.25 Hz band: ~0.1-0.3 s)."""
        _, a = graphic_eq_coefficients(44100, compensate=self.compensate, **params)
        return decay_seconds(a, 44100)

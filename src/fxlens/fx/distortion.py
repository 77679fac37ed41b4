"""Memoryless distortion: BE-AFX's parametric clipper, Taylor and Chebyshev polynomial waveshapers, and AutoFX's
tanh distortion with two tone shelves.

Four effects, each a functional form (x (B, C, T), sample_rate, physical parameters as floats or (B,) tensors)
and a registered module form:

- `clipper` / `Clipper` ("clipper"): BE-AFX (Peladeau & Peeters, ICASSP 2024) eqs. 1-3. Drive -10..+20 dB,
  offset 0..1 (asymmetry), hardness 0..2 blending tanh -> cubic soft clip -> hard clip.
- `taylor_waveshaper` / `TaylorWaveshaper` ("taylor_waveshaper") and `chebyshev_waveshaper` /
  `ChebyshevWaveshaper` ("chebyshev_waveshaper"): BE-AFX eqs. 4-6, 24 coefficients each, plus a drive.
- `distortion` / `Distortion` ("distortion"): AutoFX (fig. 5.1): tanh waveshaper with drive 0..60 dB, then a low
  shelf (50-500 Hz) and a higher shelf (500-2000 Hz), +-10 dB, Q 0.5-2, and a dry/wet mix; optionally (config,
  `AMP_CONFIG_RANGES`) the stages of a guitar amplifier around it: an input high-pass, an asymmetric bias, a mid
  peak or scoop and a speaker-cabinet low-pass.

DC. An asymmetric curve (clipper offset, even polynomial orders) adds DC. Two stages remove it:

1. *static* (always on): the curve is shifted so that it passes through the origin, f(0) = 0 -- BE-AFX eq. 3
   subtracts f(o, h), the clipper's output for a silent input; the Chebyshev shaper subtracts P(0) = sum_k c_k T_k(0)
   (the Taylor shaper has no constant term). Silence stays silence; memoryless.
2. *mean* (config ``remove_dc=True``, the default): the per-channel time mean of the output is subtracted, exactly
   what BE-AFX's ``remove_DC`` does to a clip before each effect of its chain. This removes the signal-dependent
   DC that even-order distortion of a non-silent signal leaves (the mean of cos^2 is 1/2). It depends on the whole
   clip (not causal, not streaming), like the FFT filters here. With ``remove_dc=False`` the effect is the pure
   static curve, y[n] = f(x[n]).
"""

from __future__ import annotations

import math
import numbers

import torch

from fxlens.errors import ParameterError
from fxlens.fx.effect import Effect, as_batch, bcast, check_audio, register_effect
from fxlens.fx.filters import apply_biquads, biquad, decay_seconds
from fxlens.fx.params import ParamSpec

BACKENDS = ("fft", "iir")
BOUNDS = ("clamp", "tanh")

# --------------------------------------------------------------------------------------------------------------------
# BE-AFX parametric clipper (eqs. 1-3)
# --------------------------------------------------------------------------------------------------------------------

CLIPPER_DRIVE_RANGE_DB = (-10.0, 20.0)  # BE-AFX synthesis range (its code's analysis clipper uses -20..20)
#: The cubic soft clip x - 4 x^3 / 27 reaches +-1 with zero slope at |x| = 3/2.
CUBIC_KNEE = 1.5


def hard_clip(x: torch.Tensor) -> torch.Tensor:
    """f_hard(x) = max(-1, min(1, x)). Gradient 1 inside, 0 beyond +-1."""
    return x.clamp(-1.0, 1.0)


def cubic_clip(x: torch.Tensor) -> torch.Tensor:
    """f_cubic(x) = x - 4 x^3 / 27 for |x| <= 3/2, sign(x) beyond: continuous, with a continuous slope (C1).

    The ICASSP paper's eq. 2 is printed as "x + 4x^3/27 on [-2/3, 2/3]", which jumps from 0.71 to 1 at 2/3; the
    authors' code (peladeaucome/ICASSP-2024-BEAFX-using-DDSP, ``cc``) uses x - 4x^3/27 on |x| < 1.5, the standard
    cubic soft clipper, and so do we. Clamping first makes the polynomial return exactly +-1 (and zero gradient)
    beyond the knee without a `where`.
    """
    xc = x.clamp(-CUBIC_KNEE, CUBIC_KNEE)
    return xc - (4.0 / 27.0) * xc * xc * xc


def clip_curve(x: torch.Tensor, hardness: torch.Tensor | float) -> torch.Tensor:
    """BE-AFX eq. 1: hardness h in [0, 2] blends tanh (h=0) -> cubic (h=1) -> hard clip (h=2), linearly.

    (1 - h) tanh + h cubic for h <= 1, (2 - h) cubic + (h - 1) hard for h > 1; written with triangular weights
    w_tanh = clamp(1 - h), w_cubic = 1 - |h - 1|, w_hard = clamp(h - 1), which equal eq. 1 on [0, 2].
    Bounded by |f| <= 1 and nondecreasing in x for every h in [0, 2] (a convex mix of nondecreasing curves).
    """
    h = torch.as_tensor(hardness, dtype=x.dtype, device=x.device)
    w_tanh = (1.0 - h).clamp(0.0, 1.0)
    w_hard = (h - 1.0).clamp(0.0, 1.0)
    w_cubic = 1.0 - (h - 1.0).abs()
    return w_tanh * torch.tanh(x) + w_cubic * cubic_clip(x) + w_hard * hard_clip(x)


def clipper(
    x: torch.Tensor,
    sample_rate: int,
    drive_db: torch.Tensor | float = 0.0,
    offset: torch.Tensor | float = 0.0,
    hardness: torch.Tensor | float = 0.0,
    remove_dc: bool = True,
    compensate: bool = True,
) -> torch.Tensor:
    """BE-AFX parametric clipper, eq. 3: y = (f(g x + o, h) - f(o, h)) / g, with g = 10 ** (drive_db / 20).

    x: (B, C, T). drive_db: input gain in dB (BE-AFX range -10..+20). offset: o, added after the drive, moves the
    operating point up the curve so positive and negative half-waves clip differently (even harmonics); 0..1.
    hardness: h in [0, 2], see `clip_curve`.

    Level compensation (``compensate=True``, eq. 3 as written): dividing by g gives unity small-signal gain at
    o = 0 for every drive and hardness (f'(0) = 1 for all three curves), so drive changes the amount of clipping,
    not the level of quiet passages; the small-signal gain is f'(o, h) in general (tanh: 1 - tanh(o)^2 = 0.42 at
    o = 1), and the clipped peaks end up at most 2 / g (the output range of f(.) - f(o) over g). With
    ``compensate=False`` the output is f(g x + o, h) - f(o, h): drive then also raises the level (+6.02 dB doubles a
    small signal) and |y| <= 2. DC: see the module docstring (the f(o, h) subtraction is the static stage).
    """
    check_audio(x)
    g = torch.pow(10.0, bcast(drive_db, x) / 20.0)
    o = bcast(offset, x)
    h = bcast(hardness, x)
    y = clip_curve(g * x + o, h) - clip_curve(o, h)
    if compensate:
        y = y / g
    if remove_dc:
        y = y - y.mean(dim=-1, keepdim=True)
    return y


@register_effect
class Clipper(Effect):
    """BE-AFX's parametric clipper (tanh / cubic / hard blend). Config: remove_dc, compensate (see `clipper`)."""

    name = "clipper"
    description = "Clipper with drive, asymmetry offset and hardness (tanh -> cubic -> hard), after BE-AFX."

    def __init__(self, remove_dc: bool = True, compensate: bool = True) -> None:
        self.remove_dc = bool(remove_dc)
        self.compensate = bool(compensate)
        super().__init__(
            (
                ParamSpec("drive_db", "dB", *CLIPPER_DRIVE_RANGE_DB, "dB", 0.0, "input gain before the curve"),
                ParamSpec("offset", "", 0.0, 1.0, "linear", 0.0, "bias added after the drive (asymmetry)"),
                ParamSpec("hardness", "", 0.0, 2.0, "linear", 0.0, "0 tanh, 1 cubic soft clip, 2 hard clip"),
            )
        )

    def process(self, x, sample_rate, drive_db, offset, hardness):
        return clipper(x, sample_rate, drive_db, offset, hardness, self.remove_dc, self.compensate)

    def config(self) -> dict:
        return {"remove_dc": self.remove_dc, "compensate": self.compensate}


# --------------------------------------------------------------------------------------------------------------------
# Polynomial waveshapers (BE-AFX eqs. 4-6)
# --------------------------------------------------------------------------------------------------------------------
#
# y = sum_{k=1..K} c_k phi_k(u), u = bound(g x), phi_k(u) = u^k (Taylor) or T_k(u) (Chebyshev, T_k(cos t) = cos(k t)).
#
# Orders. BE-AFX sums h = 0..23 (eq. 4, 5; eq. 5's "T_h(y[n])" is a typo for T_h(x[n])); its code uses orders 1..K
# for Taylor. We use orders 1..24 for both: the order-0 term is a constant, i.e. pure DC, which the DC stages remove
# anyway, so it would be a parameter without an audible effect.
#
# Stability. The pre-bound keeps u in [-1, 1], where |u^k| <= 1 and |T_k(u)| <= 1, so no order can blow up:
# ``bound="clamp"`` (default) is the identity on [-1, 1] -- the polynomial is applied exactly to a signal that stays
# within full scale after the drive (a full-scale cosine through T_k alone gives exactly cos(k t)), and samples beyond
# are hard-clipped (zero gradient there); ``bound="tanh"`` squashes smoothly (gradient everywhere, but it adds its own
# odd harmonics). The output is then divided by max(1, sum_k w_k |c_k|), where w_k bounds |phi_k(u) - phi_k(0)| on
# [-1, 1] (1 for u^k and odd T_k, 2 for even T_k), so |y| <= 1 whatever the coefficients, and nothing is rescaled
# while the coefficients are modest (sum <= 1: e.g. the identity default).
#
# Cost. Evaluating 24 orders in plain autograd would keep ~24 signal-sized tensors alive for the backward pass
# (1.3 GB for 16 x 10 s of stereo). `_Polynomial` evaluates with Horner / Clenshaw in the forward pass and recomputes
# the derivative and the basis on the fly in the backward pass, so it stores only u; its backward is made of
# differentiable ops, so double backward works as well.

N_COEFS = 24
POLY_DRIVE_RANGE_DB = (-20.0, 20.0)
COEF_RANGE = (-1.0, 1.0)
COEF_NAMES = tuple(f"coef_{k}" for k in range(1, N_COEFS + 1))


def _poly_value(u: torch.Tensor, c: torch.Tensor, basis: str) -> torch.Tensor:
    """sum_{k=1..K} c[:, k-1] phi_k(u). u: (B, C, T), c: (B, K). Horner (Taylor) or Clenshaw (Chebyshev).

    In-place updates on fresh buffers: it runs inside `_Polynomial.forward`, where nothing is recorded.
    """
    K = c.shape[1]
    cs = [c[:, k, None, None] for k in range(K)]  # cs[k - 1] = c_k, each (B, 1, 1)
    if basis == "taylor":
        p = cs[K - 1].expand_as(u).clone()
        for k in range(K - 2, -1, -1):  # p <- p u + c_k, down to c_1
            p.mul_(u).add_(cs[k])
        return p.mul_(u)
    # Clenshaw: b_k = c_k + 2 u b_{k+1} - b_{k+2} (k = K..1); sum_{k>=1} c_k T_k(u) = u b_1 - b_2
    two_u = 2.0 * u
    b1 = cs[K - 1].expand_as(u).clone()
    b2 = torch.zeros_like(u)
    for k in range(K - 2, -1, -1):
        b2.neg_().addcmul_(two_u, b1).add_(cs[k])  # b2 now holds b_k
        b1, b2 = b2, b1
    return b2.neg_().addcmul_(u, b1)


def _poly_derivative(u: torch.Tensor, c: torch.Tensor, basis: str) -> torch.Tensor:
    """d/du sum_k c_k phi_k(u) = sum_{j=0..K-1} d_j psi_j(u), d_j = (j + 1) c_{j+1}; psi_j = u^j or U_j (2nd kind).

    In-place on fresh buffers unless autograd records (double backward), where it uses out-of-place ops.
    """
    K = c.shape[1]
    d = [(j + 1) * c[:, j, None, None] for j in range(K)]
    inplace = not torch.is_grad_enabled()
    if basis == "taylor":
        p = d[K - 1].expand_as(u).clone()
        for j in range(K - 2, -1, -1):
            p = p.mul_(u).add_(d[j]) if inplace else p * u + d[j]
        return p
    # Clenshaw for U_j: b_j = d_j + 2 u b_{j+1} - b_{j+2}, sum = b_0  (T_k' = k U_{k-1})
    two_u = 2.0 * u
    b1 = d[K - 1].expand_as(u).clone()
    b2 = torch.zeros_like(u)
    for j in range(K - 2, -1, -1):
        if inplace:
            b1, b2 = b2.neg_().addcmul_(two_u, b1).add_(d[j]), b1
        else:
            b1, b2 = two_u * b1 - b2 + d[j], b1
    return b1


def _basis_dot(u: torch.Tensor, g: torch.Tensor, K: int, basis: str) -> torch.Tensor:
    """(B, K): sum over channels and time of g * phi_k(u), k = 1..K (the gradient w.r.t. the coefficients).

    Each sum is a batched dot product (bmm), which does not materialize g * phi_k.
    """
    B = u.shape[0]
    gv = g.reshape(B, 1, -1)
    inplace = not torch.is_grad_enabled()

    def dot(phi: torch.Tensor) -> torch.Tensor:
        return torch.bmm(gv, phi.reshape(B, -1, 1)).reshape(B)

    out = []
    if basis == "taylor":
        phi = u.clone()
        for k in range(K):
            out.append(dot(phi))
            if k + 1 < K:
                phi = phi.mul_(u) if inplace else phi * u
    else:
        two_u = 2.0 * u
        t_prev, t = torch.ones_like(u), u.clone()
        for k in range(K):
            out.append(dot(t))
            if k + 1 < K:  # T_{k+1} = 2 u T_k - T_{k-1}
                t_prev, t = t, (t_prev.neg_().addcmul_(two_u, t) if inplace else two_u * t - t_prev)
    return torch.stack(out, dim=1)


class _Polynomial(torch.autograd.Function):
    """y = sum_k c_k phi_k(u) with O(1) saved signals (see the cost note above)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, c: torch.Tensor, basis: str) -> torch.Tensor:
        ctx.basis = basis
        ctx.save_for_backward(u, c)
        return _poly_value(u, c, basis)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        u, c = ctx.saved_tensors
        gu = gc = None
        if ctx.needs_input_grad[0]:
            gu = g * _poly_derivative(u, c, ctx.basis)
        if ctx.needs_input_grad[1]:
            gc = _basis_dot(u, g, c.shape[1], ctx.basis)
        return gu, gc, None


def _basis_at_zero_and_bound(K: int, basis: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_k(0) and the bound w_k >= max_{|u|<=1} |phi_k(u) - phi_k(0)|, k = 1..K, as (K,) tensors."""
    k = torch.arange(1, K + 1, dtype=like.dtype, device=like.device)
    if basis == "taylor":
        return torch.zeros_like(k), torch.ones_like(k)
    at_zero = torch.cos(k * (math.pi / 2)).round()  # T_k(0) = cos(k pi / 2): 0, -1, 0, 1, ...
    return at_zero, 1.0 + at_zero.abs()


def _coefficients(x: torch.Tensor, coefs: dict, who: str) -> torch.Tensor:
    """coef_1..coef_24 keyword arguments -> (B, 24); missing ones take the identity default (coef_1 = 1, others 0)."""
    unknown = sorted(set(coefs) - set(COEF_NAMES))
    if unknown:
        raise ParameterError(f"{who}: unknown parameters {unknown} (expected coef_1 .. coef_{N_COEFS})")
    return torch.stack([as_batch(coefs.get(n, 1.0 if n == "coef_1" else 0.0), x) for n in COEF_NAMES], dim=1)


def polynomial_waveshaper(
    x: torch.Tensor,
    sample_rate: int,
    drive_db: torch.Tensor | float,
    coefs: torch.Tensor,
    basis: str = "chebyshev",
    bound: str = "clamp",
    remove_dc: bool = True,
) -> torch.Tensor:
    """y = (P(u) - P(0)) / max(1, sum_k w_k |c_k|), u = bound(10 ** (drive_db / 20) * x), P = sum_k c_k phi_k.

    x: (B, C, T). drive_db: float or (B,). coefs: (B, K) or (K,) coefficients of orders 1..K. basis: "taylor"
    (phi_k = u^k) or "chebyshev" (phi_k = T_k). bound: "clamp" or "tanh". See the notes above for the order, the
    bound, the normalization and the DC stages.
    """
    check_audio(x)
    if basis not in ("taylor", "chebyshev"):
        raise ParameterError(f"unknown polynomial basis {basis!r}; expected 'taylor' or 'chebyshev'")
    _check_choice("bound", bound, BOUNDS)
    c = torch.as_tensor(coefs, dtype=x.dtype, device=x.device)
    if c.dim() == 1:
        c = c.expand(x.shape[0], -1)
    if c.dim() != 2 or c.shape[0] != x.shape[0] or c.shape[1] < 1:
        raise ParameterError(f"coefficients must have shape (K,) or ({x.shape[0]}, K), got {tuple(c.shape)}")
    gx = torch.pow(10.0, bcast(drive_db, x) / 20.0) * x
    u = gx.clamp(-1.0, 1.0) if bound == "clamp" else torch.tanh(gx)
    at_zero, w = _basis_at_zero_and_bound(c.shape[1], basis, x)
    y = _Polynomial.apply(u, c, basis) - (c @ at_zero)[:, None, None]
    y = y / (c.abs() @ w).clamp_min(1.0)[:, None, None]
    if remove_dc:
        y = y - y.mean(dim=-1, keepdim=True)
    return y


def taylor_waveshaper(
    x: torch.Tensor,
    sample_rate: int,
    drive_db: torch.Tensor | float = 0.0,
    bound: str = "clamp",
    remove_dc: bool = True,
    **coefs: torch.Tensor | float,
) -> torch.Tensor:
    """Taylor waveshaper (BE-AFX eq. 4): y = sum_{k=1..24} coef_k u^k, u = bound(g x), normalized (see above).

    coef_1 .. coef_24: floats or (B,) tensors in [-1, 1]; missing ones default to the identity (coef_1 = 1).
    """
    return polynomial_waveshaper(
        x, sample_rate, drive_db, _coefficients(x, coefs, "taylor_waveshaper"), "taylor", bound, remove_dc
    )


def chebyshev_waveshaper(
    x: torch.Tensor,
    sample_rate: int,
    drive_db: torch.Tensor | float = 0.0,
    bound: str = "clamp",
    remove_dc: bool = True,
    **coefs: torch.Tensor | float,
) -> torch.Tensor:
    """Chebyshev waveshaper (BE-AFX eqs. 5-6): y = sum_{k=1..24} coef_k T_k(u), u = bound(g x), normalized.

    T_k(cos t) = cos(k t): coef_k is the level of the k-th harmonic of a full-scale cosine (a full-scale cosine
    through coef_k = 1 alone comes out as cos(k t) / w_k, w_k = 1 for odd k and 2 for even k, plus DC that the DC
    stages handle). coef_1 .. coef_24: floats or (B,) tensors in [-1, 1]; missing ones default to coef_1 = 1.
    """
    return polynomial_waveshaper(
        x, sample_rate, drive_db, _coefficients(x, coefs, "chebyshev_waveshaper"), "chebyshev", bound, remove_dc
    )


def _poly_specs(basis_label: str) -> tuple[ParamSpec, ...]:
    specs = [ParamSpec("drive_db", "dB", *POLY_DRIVE_RANGE_DB, "dB", 0.0, "input gain before the pre-bound")]
    for k, name in enumerate(COEF_NAMES, start=1):
        specs.append(ParamSpec(name, "", *COEF_RANGE, "linear", 1.0 if k == 1 else 0.0, f"weight of {basis_label}{k}"))
    return tuple(specs)


class _PolynomialWaveshaperEffect(Effect):
    basis: str = ""

    def __init__(self, bound: str = "clamp", remove_dc: bool = True) -> None:
        self.bound = _check_choice("bound", bound, BOUNDS)
        self.remove_dc = bool(remove_dc)
        super().__init__(_poly_specs("u^" if self.basis == "taylor" else "T_"))

    def process(self, x, sample_rate, drive_db, **coefs):
        c = _coefficients(x, coefs, self.name)
        return polynomial_waveshaper(x, sample_rate, drive_db, c, self.basis, self.bound, self.remove_dc)

    def config(self) -> dict:
        return {"bound": self.bound, "remove_dc": self.remove_dc}


@register_effect
class TaylorWaveshaper(_PolynomialWaveshaperEffect):
    """sum_{k=1..24} coef_k u^k after a drive and a pre-bound. Config: bound ("clamp" | "tanh"), remove_dc."""

    name = "taylor_waveshaper"
    description = "Polynomial waveshaper, 24 power-series coefficients (BE-AFX Taylor clipper)."
    basis = "taylor"


@register_effect
class ChebyshevWaveshaper(_PolynomialWaveshaperEffect):
    """sum_{k=1..24} coef_k T_k(u) after a drive and a pre-bound. Config: bound ("clamp" | "tanh"), remove_dc."""

    name = "chebyshev_waveshaper"
    description = "Harmonic waveshaper, 24 Chebyshev-polynomial weights (BE-AFX Chebyshev clipper)."
    basis = "chebyshev"


# --------------------------------------------------------------------------------------------------------------------
# AutoFX distortion: tanh waveshaper + two shelves (fig. 5.1)
# --------------------------------------------------------------------------------------------------------------------

DISTORTION_DRIVE_RANGE_DB = (0.0, 60.0)
LOW_SHELF_RANGE_HZ = (50.0, 500.0)
HIGH_SHELF_RANGE_HZ = (500.0, 2000.0)
SHELF_GAIN_RANGE_DB = (-10.0, 10.0)
SHELF_Q_RANGE = (0.5, 2.0)
SHELF_PARAM_NAMES = tuple(f"{s}_shelf_{p}" for s in ("low", "high") for p in ("freq", "gain", "q"))
_MAX_FREQ_RATIO = 0.45  # keep the shelves clear of Nyquist at low sample rates (as fxlens.fx.eq does)
#: The amplifier stages around the tanh (config, all off by default: AutoFX's effect). Each is a fixed part of the
#: sound, like a pedal's or an amp's circuit, not a setting the estimators read; fxset draws them per clip for
#: training sets (domain randomization), and a preset stores them in the effect's config.
#: - ``input_highpass_hz``: a 2nd-order Butterworth high-pass *before* the waveshaper, an amp's input coupling or a
#:   Tube Screamer's bass cut: low notes then clip less and stop blurring the distortion of the rest ("tight").
#: - ``bias``: an offset into the tanh, y = tanh(g x + bias) - tanh(bias) (the static curve still passes through 0): a
#:   valve stage's asymmetric clipping, which adds even harmonics; a 2nd-order Butterworth 20 Hz high-pass after it
#:   (the stage's output coupling capacitor) removes the DC that even harmonics of a loud signal carry.
#: - ``mid_gain_db`` (with ``mid_freq_hz``, default 700 Hz): an RBJ peaking filter of Q 0.7 after the shelves, a tone
#:   stack's mid scoop (metal) or hump; the middle band that two shelves cannot shape.
#: - ``cabinet_lowpass_hz``: a 4th-order Butterworth low-pass after all of that, as two RBJ low-pass biquads with the
#:   Butterworth pole-pair Qs 1 / (2 cos(pi / 8)) and 1 / (2 cos(3 pi / 8)): scipy.signal.butter(4, f)'s response
#:   (both bilinear, prewarped at f; tested), a speaker cabinet's roll-off.
#: The 2nd-order high-passes use the RBJ high-pass at Q 1/sqrt(2), which is scipy.signal.butter(2, f, "high").
CABINET_BUTTERWORTH_QS = (1.0 / (2.0 * math.cos(math.pi / 8.0)), 1.0 / (2.0 * math.cos(3.0 * math.pi / 8.0)))
BUTTERWORTH_Q2 = 1.0 / math.sqrt(2.0)
COUPLING_HIGHPASS_HZ = 20.0
MID_Q = 0.7
#: config key -> (low, high) of its allowed values; None (the default) switches the stage off, except bias (0 = off)
AMP_CONFIG_RANGES = {
    "input_highpass_hz": (20.0, 2000.0),
    "bias": (0.0, 1.0),
    "mid_gain_db": (-18.0, 18.0),
    "mid_freq_hz": (200.0, 3000.0),
    "cabinet_lowpass_hz": (500.0, 20000.0),
}
AMP_CONFIG_DEFAULTS = {"input_highpass_hz": None, "bias": 0.0, "mid_gain_db": None, "mid_freq_hz": 700.0,
                       "cabinet_lowpass_hz": None}


def check_amp_config(**config) -> dict:
    """Validate the amplifier stages' config (see `AMP_CONFIG_RANGES`); returns it with floats, defaults filled in."""
    out = dict(AMP_CONFIG_DEFAULTS)
    for key, value in config.items():
        if key not in AMP_CONFIG_RANGES:
            raise ParameterError(f"unknown distortion config {key!r}; expected backend or one of "
                                 f"{tuple(AMP_CONFIG_RANGES)}")
        if value is None and AMP_CONFIG_DEFAULTS[key] is None:
            continue
        lo, hi = AMP_CONFIG_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= float(value) <= hi:
            none = "None or " if AMP_CONFIG_DEFAULTS[key] is None else ""
            raise ParameterError(f"{key} must be {none}a value in [{lo:g}, {hi:g}], got {value!r}")
        out[key] = float(value)
    return out


def _fixed_biquad(kind: str, hz: float, q: float, gain_db: float, sample_rate: int,
                  like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One RBJ section at a fixed frequency (clamped to 0.45 x the rate) and Q, batched as `like` (B,): b, a (B, 3)."""
    fc = torch.full_like(like, min(float(hz), _MAX_FREQ_RATIO * sample_rate))
    return biquad(kind, fc, torch.full_like(fc, q), gain_db, sample_rate)


def distortion_coefficients(
    sample_rate: int,
    low_shelf_freq: torch.Tensor,
    low_shelf_gain: torch.Tensor,
    low_shelf_q: torch.Tensor,
    high_shelf_freq: torch.Tensor,
    high_shelf_gain: torch.Tensor,
    high_shelf_q: torch.Tensor,
    cabinet_lowpass_hz: float | None = None,
    bias: float = 0.0,
    mid_gain_db: float | None = None,
    mid_freq_hz: float = 700.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stages after the waveshaper as a biquad cascade (b, a), each (B, S, 3): with a bias, the 20 Hz coupling
    high-pass; the RBJ low shelf and high shelf; with `mid_gain_db`, the mid peak; with `cabinet_lowpass_hz`, the
    cabinet's two low-pass sections. Shelf args (B,)."""
    fmax = _MAX_FREQ_RATIO * sample_rate

    def fixed(kind: str, hz: float, q: float, gain_db: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        return _fixed_biquad(kind, hz, q, gain_db, sample_rate, low_shelf_freq)

    sections = [fixed("highpass", COUPLING_HIGHPASS_HZ, BUTTERWORTH_Q2)] if bias else []
    sections += [
        biquad("low_shelf", low_shelf_freq.clamp(1.0, fmax), low_shelf_q, low_shelf_gain, sample_rate),
        biquad("high_shelf", high_shelf_freq.clamp(1.0, fmax), high_shelf_q, high_shelf_gain, sample_rate),
    ]
    if mid_gain_db is not None:
        sections.append(fixed("peaking", mid_freq_hz, MID_Q, mid_gain_db))
    if cabinet_lowpass_hz is not None:
        sections += [fixed("lowpass", cabinet_lowpass_hz, q) for q in CABINET_BUTTERWORTH_QS]
    return torch.stack([b for b, _ in sections], dim=1), torch.stack([a for _, a in sections], dim=1)


def distortion(
    x: torch.Tensor,
    sample_rate: int,
    drive_db: torch.Tensor | float = 0.0,
    low_shelf_freq: torch.Tensor | float = 100.0,
    low_shelf_gain: torch.Tensor | float = 0.0,
    low_shelf_q: torch.Tensor | float = 1.0 / math.sqrt(2.0),
    high_shelf_freq: torch.Tensor | float = 1000.0,
    high_shelf_gain: torch.Tensor | float = 0.0,
    high_shelf_q: torch.Tensor | float = 1.0 / math.sqrt(2.0),
    mix: torch.Tensor | float = 1.0,
    backend: str = "fft",
    cabinet_lowpass_hz: float | None = None,
    input_highpass_hz: float | None = None,
    bias: float = 0.0,
    mid_gain_db: float | None = None,
    mid_freq_hz: float = 700.0,
) -> torch.Tensor:
    """AutoFX distortion: y = (1 - mix) x + mix * shelves(tanh(10 ** (drive_db / 20) * x)), and optional amp stages.

    x: (B, C, T). drive_db: 0..60 dB input gain into tanh, as pedalboard.Distortion (AutoFX's waveshaper); no level
    compensation, so the shaped signal is bounded by +-1 and +6.02 dB of drive doubles a small signal. The drive
    range spans three pedal families (one effect, named here only for orientation): roughly 0-20 dB overdrive (soft,
    mostly the peaks saturate), 20-40 dB distortion (most of the waveform is clipped), 40-60 dB fuzz (an almost
    square wave). Tone: an RBJ low shelf (low_shelf_freq 50-500 Hz, low_shelf_gain +-10 dB, low_shelf_q 0.5-2) and an
    RBJ high shelf (high_shelf_freq 500-2000 Hz, same gain and Q ranges) after the waveshaper, on the wet signal
    only. mix: dry/wet, 0..1. backend: "fft" (frequency sampling, default) or "iir" (exact recursion).

    Amp stages (floats, off by default; `AMP_CONFIG_RANGES`, comment above it), on the wet path in this order:
    input_highpass_hz (before the tanh), bias (asymmetric tanh + 20 Hz coupling high-pass), the shelves,
    mid_gain_db at mid_freq_hz, cabinet_lowpass_hz. Filter frequencies are clamped to 0.45 x the rate.
    """
    check_audio(x)
    _check_choice("backend", backend, BACKENDS)
    amp = check_amp_config(cabinet_lowpass_hz=cabinet_lowpass_hz, input_highpass_hz=input_highpass_hz, bias=bias,
                           mid_gain_db=mid_gain_db, mid_freq_hz=mid_freq_hz)
    g = torch.pow(10.0, bcast(drive_db, x) / 20.0)
    if amp["input_highpass_hz"] is not None:
        b, a = _fixed_biquad("highpass", amp["input_highpass_hz"], BUTTERWORTH_Q2, 0.0, sample_rate,
                             x.new_empty(x.shape[0]))
        driven = apply_biquads(x, b[:, None], a[:, None], backend=backend)
    else:
        driven = x
    wet = torch.tanh(g * driven + amp["bias"]) - math.tanh(amp["bias"])
    b, a = distortion_coefficients(
        sample_rate,
        *(as_batch(p, x) for p in (low_shelf_freq, low_shelf_gain, low_shelf_q)),
        *(as_batch(p, x) for p in (high_shelf_freq, high_shelf_gain, high_shelf_q)),
        amp["cabinet_lowpass_hz"], amp["bias"], amp["mid_gain_db"], amp["mid_freq_hz"],
    )
    wet = apply_biquads(wet, b, a, backend=backend)
    m = bcast(mix, x)
    return m * wet + (1.0 - m) * x


@register_effect
class Distortion(Effect):
    """AutoFX's distortion: tanh drive (0-60 dB: overdrive / distortion / fuzz) + low and high shelves + mix.

    Config: backend ("fft" | "iir") for the filters; the amp stages input_highpass_hz, bias, mid_gain_db,
    mid_freq_hz, cabinet_lowpass_hz (off by default, see `AMP_CONFIG_RANGES` and `distortion`) — fixed parts of the
    sound, not settings the estimators read.
    """

    name = "distortion"
    description = "tanh distortion (drive 0-60 dB) with a low and a high tone shelf and dry/wet mix, after AutoFX."

    def __init__(self, backend: str = "fft", **amp) -> None:
        self.backend = _check_choice("backend", backend, BACKENDS)
        self.amp = check_amp_config(**amp)
        q0 = 1.0 / math.sqrt(2.0)
        super().__init__(
            (
                ParamSpec("drive_db", "dB", *DISTORTION_DRIVE_RANGE_DB, "dB", 0.0, "input gain into tanh"),
                ParamSpec("low_shelf_freq", "Hz", *LOW_SHELF_RANGE_HZ, "log", 100.0, "low shelf frequency"),
                ParamSpec("low_shelf_gain", "dB", *SHELF_GAIN_RANGE_DB, "dB", 0.0, "low shelf gain"),
                ParamSpec("low_shelf_q", "", *SHELF_Q_RANGE, "linear", q0, "low shelf Q"),
                ParamSpec("high_shelf_freq", "Hz", *HIGH_SHELF_RANGE_HZ, "log", 1000.0, "high shelf frequency"),
                ParamSpec("high_shelf_gain", "dB", *SHELF_GAIN_RANGE_DB, "dB", 0.0, "high shelf gain"),
                ParamSpec("high_shelf_q", "", *SHELF_Q_RANGE, "linear", q0, "high shelf Q"),
                ParamSpec("mix", "", 0.0, 1.0, "linear", 1.0, "0 dry, 1 wet"),
            )
        )

    def process(self, x, sample_rate, **params):
        return distortion(x, sample_rate, backend=self.backend, **self.amp, **params)

    def coefficients(self, sample_rate: int, **params) -> tuple[torch.Tensor, torch.Tensor]:
        """The cascade after the waveshaper (b, a), each (B, S, 3), for physical shelf parameters given as (B,)
        tensors (with the coupling high-pass, mid peak and cabinet sections when the config has them)."""
        shelves = (torch.atleast_1d(torch.as_tensor(params[n])) for n in SHELF_PARAM_NAMES)
        amp = self.amp
        return distortion_coefficients(sample_rate, *shelves, amp["cabinet_lowpass_hz"], amp["bias"],
                                       amp["mid_gain_db"], amp["mid_freq_hz"])

    def config(self) -> dict:
        # the amp keys only when their stage is on: presets written before they existed read back unchanged
        return {"backend": self.backend, **amp_config_set(self.amp)}

    def tail_seconds(self, params: dict[str, torch.Tensor]) -> float:
        """Ringing of the slowest filter section down to -60 dB (tens of ms at most: a 50 Hz shelf at Q 2, the
        20 Hz coupling high-pass)."""
        _, a = self.coefficients(44100, **params)
        return decay_seconds(a, 44100)


def amp_config_set(amp: dict) -> dict:
    """The amp stages that are on, as config entries (mid_freq_hz only with a mid gain)."""
    on = {k: v for k, v in amp.items() if v is not None and v != AMP_CONFIG_DEFAULTS[k] and k != "mid_freq_hz"}
    if amp.get("mid_gain_db") is not None:
        on["mid_freq_hz"] = amp["mid_freq_hz"]
    return {k: on[k] for k in AMP_CONFIG_RANGES if k in on}


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParameterError(f"unknown {what} {value!r}; expected one of {choices}")
    return value

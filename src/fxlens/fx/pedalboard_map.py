"""fxlens presets rendered by pedalboard: the *unseen implementation* of the cross-domain tests.

pedalboard (Spotify; GPL-3, C++/JUCE) is an optional extra, never a hard dependency: everything here imports it
lazily and `require_pedalboard` turns a missing install into one clear `FxlensError`. Users: the recognition
cross-domain set (`fxlens.data.fxset`, stages drawn directly in pedalboard's units) and the retrieval benchmark's
``pedalboard/...`` groups (`fxlens.bench.retrieval`, the same fxlens presets rendered by pedalboard).

A rendering is a list of JSON-ready *stages*, applied in order:

- ``{"plugin": name, "params": {...}}``: a pedalboard plugin (consecutive plugins run as one `pedalboard.Pedalboard`);
- ``{"op": "mid_side_width", "width": w}``: L/R -> M = (L + R) / 2, S = w (L - R) / 2 -> M + S, M - S, in numpy
  (pedalboard has no stereo imager);
- ``{"op": "dry_wet", "mix": m, "wet_gain": k, "wet": [stages]}``: ``(1 - m) x + m k wet(x)``, in numpy
  (pedalboard's Distortion has no mix; its Reverb's wet level is calibrated through k);
- ``{"op": "multiband", "low_freq_hz": f1, "high_freq_hz": f2, "mix": m, "bands": [[stages] x 3]}``: a
  Linkwitz-Riley 4th-order 3-way split designed with scipy (Butterworth sections squared, the low band through
  the f2 all-pass so the bands sum flat), each band ``(1 - m) band + m stages(band)``, summed.

`preset_to_stages(preset, sample_rate)` maps an fxlens preset effect by effect, same settings in physical units
where pedalboard has the effect. Where they differ (each also in `docs/benchmarks.md`):

================== =====================================================================================================
fxlens effect      pedalboard rendering and its departures
================== =====================================================================================================
gain               Gain(gain_db): exact.
parametric_eq      LowShelfFilter, PeakFilter x n, HighShelfFilter with the same frequency (clamped to 0.45 x rate as
                   fxlens does), gain and Q: JUCE's designs are the RBJ cookbook biquads fxlens uses, so the magnitude
                   responses agree (JUCE filters in float32).
delay              Delay(time_ms / 1000, feedback, mix): same echo law ``(1 - mix) x + mix sum fb^(k-1) x(t - k D)``;
                   pedalboard rounds the delay to whole samples (fxlens: fractional, band-limited). No ping-pong.
distortion         dry_wet(mix, [Distortion(drive_db), LowShelfFilter, HighShelfFilter]): tanh(10^(drive/20) x)
                   then the two tone shelves on the wet signal, as fxlens. None with an amp stage (config: input
                   high-pass, bias, mid peak, cabinet low-pass; pedalboard's filters are first order or lack them).
stereo_imager      mid_side_width in numpy (pedalboard has no imager; the matrix is fxlens's, so it is exact).
multiband_compressor  scipy LR4 crossover + one Compressor(threshold, ratio, attack, release) per band, parallel mix
                   per band as fxlens. Departures: JUCE's compressor has a hard knee (knee_db dropped), detects each
                   channel on its own (fxlens links the channels by their max) and smooths a linear peak envelope
                   (fxlens smooths the gain in dB); times are converted so the 10-90 % times match (below).
limiter            Limiter(threshold_db, release) + Gain(threshold_db - 3.75). JUCE's limiter adds (3.75 - threshold)
                   dB of make-up gain and hard-clips at 0 dBFS; the Gain undoes the make-up so that audio below the
                   threshold passes unchanged as in fxlens. It keeps JUCE's fixed first stage (-10 dB, 4:1, 2 ms /
                   200 ms) and its clip (3.75 dB above the threshold once the make-up is undone); no attack control
                   (attack_ms dropped).
reverb             dry_wet(mix, [Delay(pre_delay, 0, 1), Reverb(room_size, damping, wet 1, dry 0, width)]).
                   pedalboard's reverb (JUCE Freeverb) has no decay time: room_size and damping are fitted so that
                   the RT60 of Freeverb's combs (mean loop 31.25 ms, feedback 0.7 + 0.28 room_size, one-pole damping
                   0.4 x damping in the loop) is decay_s at 1 kHz and decay_s x high_decay_ratio at 16 kHz (or 0.4 x
                   rate below 32 kHz); measured RT60s land within ~10 % of the fit. Freeverb cannot decay faster than
                   ~0.6 s (room_size 0) nor make highs ring longer than mids (damping 0), and has no low-band control
                   (low_decay_ratio dropped). The wet gain k gives the wet impulse response unit energy per channel,
                   as fxlens's reverb has, so ``mix`` sets the same balance.
================== =====================================================================================================

Times: fxlens's attack/release are 10-90 % times of a one-pole (tau ln 9); JUCE's ballistics filter with time T
has the coefficient exp(-2 pi / (T rate)), i.e. tau = T / (2 pi), so a pedalboard time = fxlens time x 2 pi / ln 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fxlens.errors import FxlensError, ParameterError
from fxlens.fx.distortion import AMP_CONFIG_RANGES, amp_config_set, check_amp_config
from fxlens.fx.preset import stages_from_preset  # validates names, units and ranges as `fx apply` does

__all__ = [
    "JUCE_TIME_FACTOR",
    "PEDALBOARD_EFFECTS",
    "freeverb_settings",
    "preset_to_stages",
    "render_pedalboard",
    "render_preset_pedalboard",
    "require_pedalboard",
]

#: pedalboard (JUCE ballistics) time for an fxlens 10-90 % time: x 2 pi / ln 9
JUCE_TIME_FACTOR = 2.0 * math.pi / math.log(9.0)
#: make-up gain of JUCE's Limiter on top of -threshold: 10 (1 - 1/4) / 40 in log10 units = 3.75 dB
JUCE_LIMITER_MAKEUP_DB = 3.75
#: Freeverb (JUCE Reverb): mean comb length at 44.1 kHz (scaled with the rate, so a constant time), feedback law
FREEVERB_COMB_S = float(np.mean([1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617])) / 44100.0
FREEVERB_ROOM_SCALE, FREEVERB_ROOM_OFFSET, FREEVERB_DAMP_SCALE = 0.28, 0.7, 0.4
MAX_FREQ_RATIO = 0.45  # as fxlens.fx.eq: filter frequencies stay clear of Nyquist
_IR_CAP_S = 12.0  # the calibration impulse response of the reverb is cut here


def require_pedalboard():
    """The pedalboard module, or one clear FxlensError when it is not installed."""
    try:
        import pedalboard
    except ImportError:
        raise FxlensError("the pedalboard variant needs pedalboard: pip install 'pedalboard' (GPL, optional)") from None
    return pedalboard


# ------------------------------------------------------------------------------------------------------------------
# Mapping fxlens presets to stages
# ------------------------------------------------------------------------------------------------------------------


def _freq(f: float, sample_rate: int) -> float:
    return float(min(max(f, 1.0), MAX_FREQ_RATIO * sample_rate))


def _plugin(name: str, **params: float) -> dict:
    return {"plugin": name, "params": {k: float(v) for k, v in params.items()}}


def _map_gain(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    return [_plugin("Gain", gain_db=p["gain_db"])]


def _map_parametric_eq(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    n_peaks = sum(1 for k in p if k.startswith("peak") and k.endswith("_freq"))
    bands = [("LowShelfFilter", "low_shelf")] + [("PeakFilter", f"peak{k}") for k in range(1, n_peaks + 1)]
    bands.append(("HighShelfFilter", "high_shelf"))
    return [_plugin(plugin, cutoff_frequency_hz=_freq(p[f"{b}_freq"], sr), gain_db=p[f"{b}_gain"], q=p[f"{b}_q"])
            for plugin, b in bands]


def _map_delay(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    if config.get("ping_pong"):
        raise FxlensError("pedalboard has no ping-pong delay: no pedalboard mapping for delay(ping_pong=True)")
    return [_plugin("Delay", delay_seconds=p["time_ms"] / 1000.0, feedback=p["feedback"], mix=p["mix"])]


def _map_distortion(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    stages = list(amp_config_set(check_amp_config(**{k: v for k, v in config.items() if k in AMP_CONFIG_RANGES})))
    if stages:  # pedalboard's high- and low-pass filters are first order, its Distortion has no bias
        raise FxlensError(f"no pedalboard mapping for distortion with amp stages ({', '.join(stages)}): pedalboard "
                          "has no 2nd/4th-order high- or low-pass and no biased waveshaper")
    wet = [_plugin("Distortion", drive_db=p["drive_db"]),
           _plugin("LowShelfFilter", cutoff_frequency_hz=_freq(p["low_shelf_freq"], sr), gain_db=p["low_shelf_gain"],
                   q=p["low_shelf_q"]),
           _plugin("HighShelfFilter", cutoff_frequency_hz=_freq(p["high_shelf_freq"], sr),
                   gain_db=p["high_shelf_gain"], q=p["high_shelf_q"])]
    return [{"op": "dry_wet", "mix": float(p.get("mix", 1.0)), "wet_gain": 1.0, "wet": wet}]


def _map_stereo_imager(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    return [{"op": "mid_side_width", "width": float(p["width"])}]


def _map_multiband_compressor(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    bands = [[_plugin("Compressor", threshold_db=p[f"{b}_threshold_db"], ratio=p[f"{b}_ratio"],
                      attack_ms=p[f"{b}_attack_ms"] * JUCE_TIME_FACTOR,
                      release_ms=p[f"{b}_release_ms"] * JUCE_TIME_FACTOR)] for b in ("low", "mid", "high")]
    return [{"op": "multiband", "low_freq_hz": _freq(p["low_freq_hz"], sr),
             "high_freq_hz": _freq(p["high_freq_hz"], sr), "mix": float(p.get("mix", 1.0)), "bands": bands}]


def _map_limiter(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    thr = p["threshold_db"]
    return [_plugin("Limiter", threshold_db=thr, release_ms=p["release_ms"] * JUCE_TIME_FACTOR),
            _plugin("Gain", gain_db=thr - JUCE_LIMITER_MAKEUP_DB)]


def freeverb_settings(decay_s: float, high_decay_ratio: float, sample_rate: int) -> tuple[float, float]:
    """(room_size, damping) of pedalboard's Reverb whose comb RT60 is `decay_s` at 1 kHz and `decay_s` x
    `high_decay_ratio` at 16 kHz (RT60 interpolated log-linearly in log frequency, as fxlens's reverb, when 16 kHz
    is above 0.4 x `sample_rate`), both within Freeverb's reach (see the module docstring).

    A comb of D seconds with loop gain |G(f)| = g (1 - d) / |1 - d e^{-jw}| (g = 0.7 + 0.28 room_size,
    d = 0.4 damping) decays by 60 dB in -3 D / log10 |G(f)| seconds; damping is found on a grid, g in closed form.
    """
    f1 = 1000.0
    fh = min(16000.0, 0.4 * sample_rate)
    t1 = float(decay_s)
    th = t1 * float(high_decay_ratio) ** (math.log(fh / f1) / math.log(16.0))
    damp = np.linspace(0.0, 1.0, 401)
    d = FREEVERB_DAMP_SCALE * damp

    def shape(f: float) -> np.ndarray:  # log10 of the damping filter's loop gain at f
        w = 2.0 * math.pi * f / sample_rate
        return np.log10((1.0 - d) / np.abs(1.0 - d * np.exp(-1j * w)))

    s1, sh = shape(f1), shape(fh)
    log_g = -3.0 * FREEVERB_COMB_S / t1 - s1  # loop gain at 1 kHz gives decay_s exactly (before clipping)
    g = np.clip(10.0 ** log_g, FREEVERB_ROOM_OFFSET, FREEVERB_ROOM_OFFSET + FREEVERB_ROOM_SCALE)
    with np.errstate(divide="ignore"):
        got1 = -3.0 * FREEVERB_COMB_S / (np.log10(g) + s1)
        goth = -3.0 * FREEVERB_COMB_S / (np.log10(g) + sh)
    err = np.log(got1 / t1) ** 2 + np.log(goth / th) ** 2
    i = int(np.nanargmin(err))
    room = (g[i] - FREEVERB_ROOM_OFFSET) / FREEVERB_ROOM_SCALE
    return float(np.clip(room, 0.0, 1.0)), float(damp[i])


def _map_reverb(p: Mapping[str, float], sr: int, config: Mapping) -> list[dict]:
    room, damping = freeverb_settings(p["decay_s"], p.get("high_decay_ratio", 1.0), sr)
    wet = []
    if p.get("pre_delay_ms", 0.0) * sr / 1000.0 >= 0.5:  # less than half a sample rounds to no delay
        wet.append(_plugin("Delay", delay_seconds=p["pre_delay_ms"] / 1000.0, feedback=0.0, mix=1.0))
    wet.append(_plugin("Reverb", room_size=room, damping=damping, wet_level=1.0, dry_level=0.0,
                       width=p.get("stereo_width", 1.0)))
    return [{"op": "dry_wet", "mix": float(p["mix"]), "wet_gain": _unit_energy_gain(wet[-1:], sr), "wet": wet}]


def _unit_energy_gain(stages: list[dict], sample_rate: int) -> float:
    """The gain that gives the stages' impulse response (an impulse on both channels) unit energy per channel."""
    room = stages[-1]["params"]["room_size"]
    g = FREEVERB_ROOM_OFFSET + FREEVERB_ROOM_SCALE * room
    rt60 = -3.0 * FREEVERB_COMB_S / math.log10(g)
    n = int(min(1.5 * rt60 + 0.2, _IR_CAP_S) * sample_rate)
    x = np.zeros((1, 2, n), dtype=np.float32)
    x[:, :, 0] = 1.0
    ir = _run(torch.from_numpy(x), sample_rate, stages)[0].double()
    energy = float(ir.square().sum(dim=-1).mean())
    return 1.0 / math.sqrt(energy) if energy > 0 else 1.0


_MAPPERS: dict[str, Callable[[Mapping[str, float], int, Mapping], list[dict]]] = {
    "gain": _map_gain,
    "parametric_eq": _map_parametric_eq,
    "delay": _map_delay,
    "distortion": _map_distortion,
    "stereo_imager": _map_stereo_imager,
    "multiband_compressor": _map_multiband_compressor,
    "limiter": _map_limiter,
    "reverb": _map_reverb,
}
#: fxlens effects that `preset_to_stages` maps (the encoder's training pool)
PEDALBOARD_EFFECTS = tuple(_MAPPERS)


def preset_to_stages(preset: Mapping[str, Any], sample_rate: int) -> list[dict]:
    """The pedalboard rendering (JSON-ready stages) of an fxlens preset, effect by effect in the preset's order.

    Raises FxlensError for an effect pedalboard cannot render (see `PEDALBOARD_EFFECTS`) or when pedalboard is
    missing (the reverb's wet gain is measured with pedalboard itself)."""
    stages: list[dict] = []
    for effect, values in stages_from_preset(preset):
        if effect.name not in _MAPPERS:
            raise FxlensError(f"no pedalboard mapping for effect '{effect.name}' "
                              f"(mapped: {', '.join(PEDALBOARD_EFFECTS)})")
        stages += _MAPPERS[effect.name](values, int(sample_rate), effect.config())
    return stages


# ------------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------------


def _lr4_bands(x: np.ndarray, sample_rate: int, f1: float, f2: float) -> list[np.ndarray]:
    """Low, mid and high bands (each like x, (C, T) float64) of a Linkwitz-Riley 4th-order 3-way crossover.

    Deliberately not `fxlens.fx.dynamics.split_bands`: pedalboard has no crossover, and the cross-domain renderer
    must not share fxlens's DSP where it can avoid it (scipy's Butterworth design and `sosfilt` instead of
    fxlens's biquad formulas and torchlpc/FFT filtering), so an error in one shows up as a difference."""
    from scipy import signal

    def butter(kind: str, f: float) -> np.ndarray:
        return signal.butter(2, f, btype=kind, fs=sample_rate, output="sos")

    lp1, hp1, lp2, hp2 = butter("lowpass", f1), butter("highpass", f1), butter("lowpass", f2), butter("highpass", f2)
    low_lr = signal.sosfilt(np.vstack([lp1, lp1]), x, axis=-1)
    # the f2 all-pass on the low band (keeps it in phase with mid + high): lp2^2 + hp2^2 = AP(f2)
    low = (signal.sosfilt(np.vstack([lp2, lp2]), low_lr, axis=-1)
           + signal.sosfilt(np.vstack([hp2, hp2]), low_lr, axis=-1))
    hp = signal.sosfilt(np.vstack([hp1, hp1]), x, axis=-1)
    return [low, signal.sosfilt(np.vstack([lp2, lp2]), hp, axis=-1), signal.sosfilt(np.vstack([hp2, hp2]), hp, axis=-1)]


def _board(plugins: Sequence[dict]):
    pb = require_pedalboard()
    try:
        return pb.Pedalboard([getattr(pb, s["plugin"])(**s["params"]) for s in plugins])
    except (AttributeError, TypeError, ValueError) as e:
        raise ParameterError(f"bad pedalboard stage {list(plugins)}: {e}") from None


def _run_item(x: np.ndarray, sample_rate: int, stages: Sequence[dict]) -> np.ndarray:
    """(C, T) float32 through the stages; keeps the length."""
    y = np.ascontiguousarray(x, dtype=np.float32)
    i = 0
    while i < len(stages):
        if "plugin" in stages[i]:
            j = i
            while j < len(stages) and "plugin" in stages[j]:
                j += 1
            out = _board(stages[i:j])(y, float(sample_rate), reset=True)
            n = y.shape[-1]
            out = out[..., :n] if out.shape[-1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[-1])))
            y = np.ascontiguousarray(out, dtype=np.float32)
            i = j
            continue
        s = stages[i]
        op = s.get("op")
        if op == "mid_side_width":
            if y.shape[0] != 2:
                raise ParameterError(f"the stereo imager needs 2 channels, got {y.shape[0]}")
            mid, side = 0.5 * (y[0] + y[1]), 0.5 * (y[0] - y[1]) * s["width"]
            y = np.stack([mid + side, mid - side]).astype(np.float32)
        elif op == "dry_wet":
            wet = _run_item(y, sample_rate, s["wet"])
            y = ((1.0 - s["mix"]) * y + s["mix"] * s["wet_gain"] * wet).astype(np.float32)
        elif op == "multiband":
            bands = _lr4_bands(y.astype(np.float64), sample_rate, s["low_freq_hz"], s["high_freq_hz"])
            m = s["mix"]
            y = sum((1.0 - m) * b + m * _run_item(b.astype(np.float32), sample_rate, st)
                    for b, st in zip(bands, s["bands"])).astype(np.float32)
        else:
            raise ParameterError(f"unknown pedalboard stage {s!r}")
        i += 1
    return y


def _run(x: torch.Tensor, sample_rate: int, stages: Sequence[dict]) -> torch.Tensor:
    out = [_run_item(item.detach().cpu().numpy(), sample_rate, stages) for item in x]
    return torch.from_numpy(np.ascontiguousarray(np.stack(out), dtype=np.float32))


def render_pedalboard(x: torch.Tensor, sample_rate: int, stages: list[dict]) -> torch.Tensor:
    """Process (B, C, T) audio with pedalboard stages (see the module docstring), keeping the length; float32 on
    the CPU. No stages: x unchanged."""
    if not stages:
        return x
    require_pedalboard()
    return _run(x, sample_rate, stages)


def render_preset_pedalboard(x: torch.Tensor, sample_rate: int, preset: Mapping[str, Any] | None) -> torch.Tensor:
    """An fxlens preset rendered by pedalboard: `render_pedalboard(x, sample_rate, preset_to_stages(...))`."""
    if preset is None or not preset.get("effects"):
        return x
    require_pedalboard()
    return _run(x, sample_rate, preset_to_stages(preset, sample_rate))

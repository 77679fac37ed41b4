"""A labelled synthetic effect-recognition set ("fxset") cut from rendered dry stems (issue 6, data part).

Every clip is a ``seconds``-long segment of one dry stem (any instrument of the dataset), processed by one effect
class (or a chain of 2-3 classes), and written as ``<out_dir>/<split>/<clip_id>.flac`` with one JSON line per clip
in ``<out_dir>/<split>/labels.jsonl``.

Clip length
    1.5 s by default: AutoFX computes its 163 hand-crafted features on 1.5 s sounds (IDMT-SMT-Audio-Effects notes
    are 2 s long with ~0.5 s of leading silence, i.e. ~1.5 s of note).

Sources: phrases, single notes and chords
    Segments come from the stem dataset (`fxlens.data.stems`), silence skipped by `StemDataset.sample_segment`,
    every instrument of the dataset (the instrument is drawn first, uniformly, then a song of the split that has
    it). A fraction ``onset_fraction`` of clips are *onset-aligned*: the clip starts 10 ms before the strongest
    energy onset found in a 2 x ``seconds`` window, so it opens with a note or chord attack (as the IDMT single
    notes do); the rest are arbitrary phrase segments. Label field ``segment`` says which ("onset" / "phrase").
    Notes and chords are thus cut from the stems (not re-rendered from MIDI): one sound source for both kinds.

Splits
    A clip's split is its source song's split (train / val / test / ood, whatever the dataset holds); splits are
    never mixed. ``clips_per_class`` is per split (an int, or a {split: n} mapping). With ``seen_sources``, the
    clips of train, val and test are cut from the songs of all three (ood keeps its own): AutoFX's split, which
    divides processed files at random (its code: ``torch.utils.data.random_split``), so a test clip's dry note is
    also in train under other settings. Each split's clips still draw their own settings (their seeds differ).

Loudness
    The dry segment is normalized to ``INPUT_LUFS`` (-23 LUFS) before processing, so level-dependent effects
    (compressor threshold, distortion drive) act the same on every source; the processed clip is normalized to
    ``OUTPUT_LUFS`` (-18 LUFS), then turned down further if its sample peak would pass ``OUTPUT_PEAK_DB``
    (-1 dBFS), so loudness is no cue for the class and nothing clips in the 24-bit FLAC. The gain applied after
    processing is recorded (``output_gain_db``).

Fine classes and their sub-ranges (physical units; parameters not listed keep their full declared range)
    =============== ============ =============== ========================================================
    fine class      aggregated   fxlens effect   sub-range that makes it that class
    =============== ============ =============== ========================================================
    dry             dry          (none)          the loudness-normalized segment, unprocessed
    slapback_delay  delay        delay           time 60-150 ms, feedback 0-0.2, mix 0.3-0.6
    feedback_delay  delay        delay           time 200-600 ms, feedback 0.35-0.75, mix 0.3-0.6
    reverb          reverb       reverb          decay 0.6-4 s, pre-delay 0-40 ms, mix 0.25-0.6
    chorus          modulation   modulated_delay centre 8-20 ms, rate 0.1-3 Hz, depth 0.1-0.6, fb 0-0.1, mix .4-.6
    flanger         modulation   modulated_delay centre 0.5-5 ms, rate 0.1-1 Hz, depth 0.5-1, fb 0.3-0.7, mix .4-.6
    phaser          modulation   phaser          rate 0.1-2 Hz, depth 0.5-1, centre 300-1500 Hz, fb 0-0.7, mix .4-.6
    vibrato         modulation   modulated_delay mix 1, feedback 0, centre 2-10 ms, rate 3-8 Hz, depth 0.1-0.6
    tremolo         tremolo      tremolo         rate 2-12 Hz, depth 0.5-1
    overdrive       distortion   distortion      drive 10-25 dB, mix 1, tone shelves -3..3 dB
    distortion      distortion   distortion      drive 25-40 dB, mix 1, tone shelves -3..3 dB
    fuzz            distortion   distortion      drive 40-60 dB, mix 1, tone shelves -3..3 dB
    compression     compression  compressor      threshold -45..-28 dB (input at -23 LUFS: it acts), ratio
                                                 4-20, attack 0.1-30 ms, release 30-300 ms, knee 0-6 dB, makeup 0
    eq              eq           parametric_eq   every gain -12..12 dB and at least one band with abs(gain) >= 6 dB
                                                 (redrawn until so); high shelf 5-10 kHz; a single-effect EQ
                                                 clip must also be heard on its source (below)
    =============== ============ =============== ========================================================

    Heard on the source. A gain in a band where the source has no energy changes nothing (a +10 dB high shelf on
    a bass line), and a light drive on a quiet, sparse part may not clip at all: a single-effect EQ or drive
    (overdrive, distortion, fuzz) clip's settings are redrawn (up to `AUDIBLE_TRIES` times, then another source)
    until some third-octave band within `BAND_FLOOR_DB` (40 dB) of the loudest moves by `AUDIBLE_CHANGE_DB` (3 dB) or
    more, spectra level-matched (`spectrum_change_db`), for both implementations. (The drive classes follow this
    rule since 2026-12-05, "-v3" sets: on v2 test, 14 of the 26 overdrives the recognizer heard as dry had changed
    their source by less than 3 dB; the overdrives it detected, by 9.9 dB, median.) The drive classes keep their tone
    shelves within 3 dB: with +-12 dB shelves (the first sets), a light overdrive was mostly an EQ and was labelled
    only "overdrive" (the shipped recognizer read 13 of the 60 val overdrive clips as dry or EQ). Sets built before
    these two rules (named without ``-v2`` in docs/benchmarks.md) differ in those classes only; every other clip is
    identical.

    Each class's sub-range is `FXSET_CLASSES[name].ranges` (the source of truth); `class_table()` prints it.

AutoFX's parameter protocol (built only when asked for by name)
    ``autofx_modulation`` (modulated delay), ``autofx_delay`` and ``autofx_distortion`` (drive, shelves +-10 dB):
    every parameter over the effect's whole declared range (AutoFX's ranges, §5.1), uniform on its linear scale,
    with no audibility rule: the paper's Table C.2 data, rendered by fxlens on any stems (`fxlens.data.notes`
    renders its single guitar notes). `AUTOFX_PARAMETER_CLASSES`.

Chains
    2-3 fine classes from distinct aggregated classes (never dry), in the usual pedalboard order
    eq -> compression -> distortion -> modulation -> tremolo -> delay -> reverb; labelled with every aggregated
    and fine class (multi-label).

Cross-domain ("pedalboard")
    ``implementation="pedalboard"`` renders the same classes with pedalboard's own plugins (an implementation the
    model never saw): Delay, Reverb, Chorus (chorus, flanger, vibrato), Phaser, Distortion, Compressor, and
    PeakFilter + Low/HighShelfFilter for EQ. pedalboard has no tremolo, so that class is skipped (and never
    drawn in chains). Labels say ``"implementation": "pedalboard"`` and hold the plugin settings instead of an
    fxlens preset. Never train the shipped model on it.

Determinism and resuming
    Every clip draws from its own generator seeded by (seed, split, class, index), so a clip does not depend on
    the others: the same seed gives the same set, and a run that stops can be resumed (clips whose label part
    ``<split>/.parts/<clip_id>.json`` exists are kept). Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.atomic import write_text_atomic
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.fx.chain import Chain
from fxlens.fx.effect import get_effect
from fxlens.fx.pedalboard_map import render_pedalboard, require_pedalboard  # shared with the retrieval benchmark

__all__ = [
    "AGGREGATED_CLASSES",
    "AUTOFX_CLASSES",
    "AUTOFX_PARAMETER_CLASSES",
    "CHAIN_ORDER",
    "FINE_CLASSES",
    "FXSET_CLASSES",
    "INPUT_LUFS",
    "OUTPUT_LUFS",
    "OUTPUT_PEAK_DB",
    "FxClass",
    "aggregate_probabilities",
    "aggregated_of",
    "build_fxset",
    "class_table",
    "finish_clip",
    "read_labels",
    "render_fxlens",
    "render_pedalboard",
]

INPUT_LUFS = -23.0
OUTPUT_LUFS = -18.0
OUTPUT_PEAK_DB = -1.0
ONSET_PRE_S = 0.010

AGGREGATED_CLASSES = ("dry", "delay", "reverb", "modulation", "tremolo", "distortion", "compression", "eq")
#: the aggregated classes of the AutoFX paper (its Table 4.2, where its 97 % was measured): IDMT-SMT's classes
#: without EQ, and no compression (IDMT has none)
AUTOFX_CLASSES = ("dry", "delay", "reverb", "modulation", "tremolo", "distortion")
#: order of aggregated classes inside a chain (a guitarist's pedalboard, then the room)
CHAIN_ORDER = ("eq", "compression", "distortion", "modulation", "tremolo", "delay", "reverb")


#: a single-effect EQ or drive clip must change its source's level-matched third-octave spectrum by this much in
#: some band
AUDIBLE_CHANGE_DB = 3.0
#: ... among the bands within this many dB of the source's (or the clip's) loudest band
BAND_FLOOR_DB = 40.0
#: settings redrawn at most this many times per source before another source is drawn
AUDIBLE_TRIES = 10
_THIRD_OCTAVE_HZ = 1000.0 * 2.0 ** (np.arange(-15, 14) / 3.0)  # 31.5 Hz ... 20 kHz (nominal centres)


def _eq_gains_large(params: Mapping[str, float]) -> bool:
    return max(abs(v) for k, v in params.items() if k.endswith("_gain")) >= 6.0


def third_octave_levels_db(x: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Long-term level (dB, relative to the clip's total power) of each third-octave band of x (1, C, T), channels'
    power averaged: Welch power spectrum (scipy, 4096-point Hann segments) summed over each band's bins; bands with no
    bin (above Nyquist) are -inf."""
    from scipy.signal import welch

    v = x[0].double().numpy()
    freqs, power = welch(v, fs=sample_rate, nperseg=min(4096, v.shape[-1]), axis=-1)
    power = power.mean(axis=0)
    total = float(power.sum())
    lo, hi = _THIRD_OCTAVE_HZ * 2.0 ** (-1 / 6), _THIRD_OCTAVE_HZ * 2.0 ** (1 / 6)
    bands = np.array([power[(freqs >= a) & (freqs < b)].sum() for a, b in zip(lo, hi)])
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(bands / max(total, 1e-30))


def spectrum_change_db(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> float:
    """Largest level-matched change (dB) of a third-octave band from x to y, over the bands within `BAND_FLOOR_DB` of
    the loudest band of either (a change where neither has energy is not heard)."""
    lx, ly = third_octave_levels_db(x, sample_rate), third_octave_levels_db(y, sample_rate)
    top = max(float(lx.max()), float(ly.max()))
    heard = (np.maximum(lx, ly) > top - BAND_FLOOR_DB) & np.isfinite(lx) & np.isfinite(ly)
    return float(np.abs(ly - lx)[heard].max()) if heard.any() else 0.0


def _changes_spectrum(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> bool:
    return spectrum_change_db(x, y, sample_rate) >= AUDIBLE_CHANGE_DB


@dataclass(frozen=True)
class FxClass:
    """One fine class: an fxlens effect (+config) and the physical sub-ranges that make it that class.

    ``ranges`` maps parameter -> (low, high) in physical units (low == high fixes it); unlisted parameters keep
    their declared range. ``accept`` rejects draws that are inside the ranges but not audibly the class.
    ``pedalboard`` maps the class to pedalboard: (plugin name, {param: (low, high)}) stages, None when pedalboard
    has no such effect.
    """

    name: str
    aggregated: str
    effect: str | None
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    accept: Callable[[Mapping[str, float]], bool] | None = None
    audible: Callable[[torch.Tensor, torch.Tensor, int], bool] | None = None
    pedalboard: tuple[tuple[str, Mapping[str, tuple[float, float]]], ...] | None = ()
    linear: bool = False  # draw every parameter uniformly in physical units (AutoFX's draws), not in its controls


_MIX = (0.4, 0.6)
#: the drive classes' tone shelves stay near flat: a +-10 dB shelf after a light drive is an EQ more than a drive
_TONE = {"low_shelf_gain": (-3.0, 3.0), "high_shelf_gain": (-3.0, 3.0)}
_EQ_GAINS = {f"{b}_gain": (-12.0, 12.0) for b in ("low_shelf", "peak1", "peak2", "peak3", "peak4", "high_shelf")}

FXSET_CLASSES: dict[str, FxClass] = {c.name: c for c in [
    FxClass("dry", "dry", None),
    FxClass("slapback_delay", "delay", "delay", {"time_ms": (60.0, 150.0), "feedback": (0.0, 0.2), "mix": (0.3, 0.6)},
            pedalboard=(("Delay", {"delay_seconds": (0.06, 0.15), "feedback": (0.0, 0.2), "mix": (0.3, 0.6)}),)),
    FxClass("feedback_delay", "delay", "delay",
            {"time_ms": (200.0, 600.0), "feedback": (0.35, 0.75), "mix": (0.3, 0.6)},
            pedalboard=(("Delay", {"delay_seconds": (0.2, 0.6), "feedback": (0.35, 0.75), "mix": (0.3, 0.6)}),)),
    FxClass("reverb", "reverb", "reverb", {"decay_s": (0.6, 4.0), "pre_delay_ms": (0.0, 40.0), "mix": (0.25, 0.6)},
            pedalboard=(("Reverb", {"room_size": (0.5, 0.95), "damping": (0.2, 0.8), "wet_level": (0.25, 0.5),
                                    "dry_level": (0.5, 0.8), "width": (0.5, 1.0)}),)),
    FxClass("chorus", "modulation", "modulated_delay",
            {"delay_ms": (8.0, 20.0), "rate_hz": (0.1, 3.0), "depth": (0.1, 0.6), "feedback": (0.0, 0.1), "mix": _MIX},
            config={"stereo_phase_deg": 90.0},
            pedalboard=(("Chorus", {"centre_delay_ms": (8.0, 20.0), "rate_hz": (0.1, 3.0), "depth": (0.1, 0.6),
                                    "feedback": (0.0, 0.1), "mix": _MIX}),)),
    FxClass("flanger", "modulation", "modulated_delay",
            {"delay_ms": (0.5, 5.0), "rate_hz": (0.1, 1.0), "depth": (0.5, 1.0), "feedback": (0.3, 0.7), "mix": _MIX},
            pedalboard=(("Chorus", {"centre_delay_ms": (0.5, 5.0), "rate_hz": (0.1, 1.0), "depth": (0.5, 1.0),
                                    "feedback": (0.3, 0.7), "mix": _MIX}),)),
    FxClass("phaser", "modulation", "phaser",
            {"rate_hz": (0.1, 2.0), "depth": (0.5, 1.0), "centre_hz": (300.0, 1500.0), "feedback": (0.0, 0.7),
             "mix": _MIX},
            pedalboard=(("Phaser", {"rate_hz": (0.1, 2.0), "depth": (0.5, 1.0), "centre_frequency_hz": (300.0, 1500.0),
                                    "feedback": (0.0, 0.7), "mix": _MIX}),)),
    FxClass("vibrato", "modulation", "modulated_delay",
            {"delay_ms": (2.0, 10.0), "rate_hz": (3.0, 8.0), "depth": (0.1, 0.6), "feedback": (0.0, 0.0),
             "mix": (1.0, 1.0)},
            pedalboard=(("Chorus", {"centre_delay_ms": (2.0, 10.0), "rate_hz": (3.0, 8.0), "depth": (0.1, 0.6),
                                    "feedback": (0.0, 0.0), "mix": (1.0, 1.0)}),)),
    FxClass("tremolo", "tremolo", "tremolo", {"rate_hz": (2.0, 12.0), "depth": (0.5, 1.0)}, pedalboard=None),
    FxClass("overdrive", "distortion", "distortion", {"drive_db": (10.0, 25.0), "mix": (1.0, 1.0), **_TONE},
            audible=_changes_spectrum,
            pedalboard=(("Distortion", {"drive_db": (10.0, 25.0)}),)),
    FxClass("distortion", "distortion", "distortion", {"drive_db": (25.0, 40.0), "mix": (1.0, 1.0), **_TONE},
            audible=_changes_spectrum,
            pedalboard=(("Distortion", {"drive_db": (25.0, 40.0)}),)),
    FxClass("fuzz", "distortion", "distortion", {"drive_db": (40.0, 60.0), "mix": (1.0, 1.0), **_TONE},
            audible=_changes_spectrum,
            pedalboard=(("Distortion", {"drive_db": (40.0, 60.0)}),)),
    FxClass("compression", "compression", "compressor",
            {"threshold_db": (-45.0, -28.0), "ratio": (4.0, 20.0), "attack_ms": (0.1, 30.0),
             "release_ms": (30.0, 300.0), "knee_db": (0.0, 6.0), "makeup_db": (0.0, 0.0)},
            pedalboard=(("Compressor", {"threshold_db": (-45.0, -28.0), "ratio": (4.0, 20.0),
                                        "attack_ms": (0.1, 30.0), "release_ms": (30.0, 300.0)}),)),
    FxClass("eq", "eq", "parametric_eq", {**_EQ_GAINS, "high_shelf_freq": (5000.0, 10000.0)}, accept=_eq_gains_large,
            audible=_changes_spectrum,
            pedalboard=(("LowShelfFilter", {"cutoff_frequency_hz": (60.0, 160.0), "gain_db": (-12.0, 12.0)}),
                        ("PeakFilter", {"cutoff_frequency_hz": (200.0, 1500.0), "gain_db": (-12.0, 12.0),
                                        "q": (0.5, 4.0)}),
                        ("PeakFilter", {"cutoff_frequency_hz": (1500.0, 6000.0), "gain_db": (-12.0, 12.0),
                                        "q": (0.5, 4.0)}),
                        ("HighShelfFilter", {"cutoff_frequency_hz": (5000.0, 10000.0), "gain_db": (-12.0, 12.0)}))),
]}
FINE_CLASSES = tuple(FXSET_CLASSES)  # the classes a recognizer learns and a default set holds

#: AutoFX's parameter-estimation protocol (its §5.1-5.2, Table C.2): one effect stands for each of three groups,
#: every parameter over its whole range, drawn uniformly on its linear scale, nothing required to be heard (a mix of
#: 0 is dry, as in the paper). fxlens's effects declare AutoFX's ranges (the modulated delay's centre from 0.5 ms
#: and feedback to 0.9, the delay's time from 1 ms and feedback to 0.95: fxlens's limits). Built on request only
#: (``fxlens data fxset --classes autofx_modulation,autofx_delay,autofx_distortion``), never by default, and no
#: recognizer class: the estimator is measured on them, true class given, as the paper measures.
AUTOFX_PARAMETER_CLASSES = ("autofx_modulation", "autofx_delay", "autofx_distortion")
FXSET_CLASSES.update({c.name: c for c in [
    FxClass("autofx_modulation", "modulation", "modulated_delay", pedalboard=None, linear=True),
    FxClass("autofx_delay", "delay", "delay", pedalboard=None, linear=True),
    FxClass("autofx_distortion", "distortion", "distortion", {"mix": (1.0, 1.0)}, pedalboard=None, linear=True),
]})


def aggregated_of(classes: list[str]) -> list[str]:
    """The aggregated class of each of a recognizer's classes (fine class names map to their group; aggregated or
    unknown names stay as they are)."""
    return [FXSET_CLASSES[c].aggregated if c in FXSET_CLASSES else c for c in classes]


def aggregate_probabilities(classes: list[str], probs: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """(N, 8) probabilities of the `AGGREGATED_CLASSES` from a recognizer's (N, K) probabilities over `classes`
    (fine or aggregated class names; other names are ignored).

    A softmax recognizer's fine probabilities add up within their group. A multi-label recognizer's are independent
    sigmoids over effects (no "dry" output): a group is on when any of its members is, 1 - prod(1 - p), and "dry"
    is the probability that no effect is on, prod(1 - p) over every class.
    """
    probs = np.asarray(probs, dtype=np.float64)
    out = np.zeros((probs.shape[0], len(AGGREGATED_CLASSES)))
    agg_of = aggregated_of(classes)
    for a_idx, a in enumerate(AGGREGATED_CLASSES):
        cols = [j for j, g in enumerate(agg_of) if g == a]
        if not cols:
            continue
        out[:, a_idx] = (1.0 - np.prod(1.0 - probs[:, cols], axis=1)) if multilabel else probs[:, cols].sum(1)
    if multilabel:
        effects = [j for j, g in enumerate(agg_of) if g in AGGREGATED_CLASSES and g != "dry"]
        out[:, AGGREGATED_CLASSES.index("dry")] = np.prod(1.0 - probs[:, effects], axis=1)
    return out


def class_table() -> str:
    """The class table (fine class, aggregated class, effect, sub-ranges) as plain text, from `FXSET_CLASSES`."""
    lines = []
    for c in FXSET_CLASSES.values():
        ranges = ", ".join(f"{k} {lo:g}" + ("" if lo == hi else f"..{hi:g}") for k, (lo, hi) in c.ranges.items())
        lines.append(f"{c.name:15s} {c.aggregated:12s} {c.effect or '-':16s} {ranges}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Drawing settings
# ------------------------------------------------------------------------------------------------------------------


def _draw_fxlens(cls: FxClass, rng: np.random.Generator, max_tries: int = 100) -> dict[str, float]:
    """Physical parameters (float32-exact) of one draw of `cls`: uniform in normalized controls inside the
    sub-range (so log-scaled parameters are log-uniform), as `RandomChain` draws; uniform in physical units for a
    `linear` class."""
    effect = get_effect(cls.effect, **cls.config)
    for _ in range(max_tries):
        values: dict[str, float] = {}
        for spec in effect.specs:
            lo, hi = cls.ranges.get(spec.name, (spec.min, spec.max))
            if cls.linear:
                values[spec.name] = float(np.float32(lo + (hi - lo) * float(rng.random())))
                continue
            ulo, uhi = (float(spec.to_normalized(torch.tensor(v, dtype=torch.float64))) for v in (lo, hi))
            u = ulo + (uhi - ulo) * float(rng.random())
            v = float(np.float32(spec.to_physical(torch.tensor(u, dtype=torch.float64))))
            values[spec.name] = float(np.float32(min(max(v, lo), hi)))  # float32 rounding stays in the sub-range
        if cls.accept is None or cls.accept(values):
            return values
    raise FxlensError(f"could not draw settings for class '{cls.name}' in {max_tries} tries")


def _controls(effect, values: Mapping[str, float]) -> list[float]:
    controls = effect.to_normalized({k: torch.tensor([v], dtype=torch.float64) for k, v in values.items()})
    return [float(c) for c in controls[0]]


#: ``randomize_internals``: per-clip draws of the effects' fixed internals for the classes listed:
#: {config key: (low, high)} uniform, (low, high, p) exactly `low` with probability p and uniform otherwise,
#: (low, high, p, None) the effect's own default (no such config) with probability p, or a tuple of choices
#: (ints). The stereo phase is 0 (the same modulation on both channels, as the flanger and phaser classes have it)
#: half the time: drawn from U(0, 180) alone it is never 0, and a recognizer trained from scratch
#: on such clips took the left/right movement for the cue and missed mono flangers and phasers (docs/benchmarks.md,
#: 2026-11-22). ``mix_scale`` is the mix law: the drawn mix is multiplied by it (another implementation's
#: "mix 0.5" may put its wet path lower: at the same settings pedalboard's flanger and phaser sit as far from the
#: dry sound as fxlens's at about half the mix; below half, U(0.3, 1) put 0.12-0.18 mixes in the set, which sound
#: dry, and a recognizer trained on them read dry clips as modulation). The drive classes get, each on half their
#: clips and independently, the amplifier stages of `fxlens.fx.distortion` (`AMP_CONFIG_RANGES`): a speaker-cabinet
#: low-pass (2.5-12 kHz),
#: an input high-pass (60-800 Hz), an asymmetric bias (0-0.6) and a mid peak or scoop (-15..+6 dB at 300-1500 Hz):
#: a real amplifier's distortion has no fizz above its speaker's roll-off, a tight low end and a shaped middle, and
#: a recognizer trained on bare tanh reads such audio as EQ; with the cabinet on every clip it forgot some bare ones
#: (docs/benchmarks.md, 2026-11-22)
RANDOMIZED_INTERNALS: dict[str, dict[str, tuple]] = {
    "chorus": {"max_sweep_ms": (1.0, 10.0), "stereo_phase_deg": (0.0, 180.0, 0.5), "mix_scale": (0.5, 1.0)},
    "flanger": {"max_sweep_ms": (1.0, 10.0), "stereo_phase_deg": (0.0, 180.0, 0.5), "mix_scale": (0.5, 1.0)},
    "phaser": {"stages": (2, 4, 6, 8, 12), "sweep_octaves": (0.5, 3.0), "stereo_phase_deg": (0.0, 180.0, 0.5),
               "mix_scale": (0.5, 1.0)},
    **{c: {"cabinet_lowpass_hz": (2500.0, 12000.0, 0.5, None), "input_highpass_hz": (60.0, 800.0, 0.5, None),
           "bias": (0.0, 0.6, 0.5), "mid_gain_db": (-15.0, 6.0, 0.5, None), "mid_freq_hz": (300.0, 1500.0)}
       for c in ("overdrive", "distortion", "fuzz")},
}


def _randomized_classes(randomize_internals: bool | Iterable[str] | None) -> frozenset[str]:
    """The fine classes whose internals are drawn: True -> all of `RANDOMIZED_INTERNALS`, False/None -> none."""
    if randomize_internals is True:
        return frozenset(RANDOMIZED_INTERNALS)
    if not randomize_internals:
        return frozenset()
    chosen = frozenset([randomize_internals] if isinstance(randomize_internals, str) else randomize_internals)
    unknown = sorted(chosen - set(RANDOMIZED_INTERNALS))
    if unknown:
        raise FxlensError(f"no internals to randomize for class(es) {unknown} (classes with internals: "
                          f"{', '.join(RANDOMIZED_INTERNALS)})")
    return chosen


def _draw_internals(name: str, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in RANDOMIZED_INTERNALS.get(name, {}).items():
        if all(isinstance(v, int) for v in spec):
            out[key] = int(spec[int(rng.integers(len(spec)))])
        elif len(spec) >= 3 and float(rng.random()) < spec[2]:
            fixed = spec[3] if len(spec) == 4 else spec[0]
            if fixed is not None:
                out[key] = float(fixed)
        else:
            out[key] = float(np.float32(spec[0] + (spec[1] - spec[0]) * float(rng.random())))
    return out


def _draw_pedalboard(cls: FxClass, rng: np.random.Generator) -> list[dict]:
    stages = []
    for plugin, ranges in cls.pedalboard or ():
        stages.append({"plugin": plugin,
                       "params": {k: float(np.float32(lo + (hi - lo) * float(rng.random())))
                                  for k, (lo, hi) in ranges.items()}})
    return stages


# ------------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------------


def render_fxlens(x: torch.Tensor, sample_rate: int, preset: Mapping | None) -> torch.Tensor:
    """Process (1, C, T) audio with an fxlens preset (None = dry), keeping the length."""
    if preset is None or not preset.get("effects"):
        return x
    with torch.no_grad():
        return Chain.from_preset(preset)(x, sample_rate)


def finish_clip(y: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, float]:
    """Output normalization: to `OUTPUT_LUFS`, lowered so the sample peak stays at or below `OUTPUT_PEAK_DB`.
    Returns the clip and the gain applied in dB."""
    fxaudio.check_finite(y, "processed clip")
    lufs = float(fxaudio.integrated_loudness(y, sample_rate)[0])
    peak = float(fxaudio.peak_db(y)[0])
    if not (math.isfinite(lufs) and math.isfinite(peak)):
        raise InvalidAudioError("processed clip is silent")
    gain_db = min(OUTPUT_LUFS - lufs, OUTPUT_PEAK_DB - peak)
    return y * float(10.0 ** (gain_db / 20.0)), gain_db


# ------------------------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------------------------


def _onset_start(x: torch.Tensor, sample_rate: int, seconds: float) -> int | None:
    """Sample index (10 ms before) of the strongest energy onset of x (1, C, T) that leaves `seconds` after it."""
    hop = max(int(0.010 * sample_rate), 1)
    power = x.double().square().mean(dim=1)[0]
    n = power.shape[-1] // hop
    if n < 3:
        return None
    env = 10.0 * torch.log10(power[: n * hop].reshape(n, hop).mean(dim=1) + 1e-10)
    rise = env[1:] - env[:-1]
    last = int((x.shape[-1] - seconds * sample_rate) // hop) - 1
    if last < 1:
        return None
    rise = rise[:last]
    i = int(torch.argmax(rise))
    if float(rise[i]) < 6.0:  # no clear attack
        return None
    return max((i + 1) * hop - int(ONSET_PRE_S * sample_rate), 0)


def _source(ds, ref, instrument: str, seconds: float, sample_rate: int, rng: np.random.Generator,
            onset: bool) -> tuple[torch.Tensor, float, str]:
    """(segment (1, 2, T), offset_s, "onset" | "phrase") of a non-silent stem segment."""
    if onset:
        seg = ds.sample_segment(ref, instrument, 2 * seconds, rng, sample_rate)
        start = _onset_start(seg.audio, sample_rate, seconds)
        if start is not None:
            offset = seg.offset_s + start / sample_rate
            x = ds.load_stem(ref, instrument, sample_rate, offset, seconds)
            if float(fxaudio.integrated_loudness(x, sample_rate)[0]) > -60.0:  # not silent after the shift
                return x, offset, "onset"
    seg = ds.sample_segment(ref, instrument, seconds, rng, sample_rate)
    # reload from the offset so the clip is exactly what `load_stem(offset_s, seconds)` returns (re-rendering)
    return ds.load_stem(ref, instrument, sample_rate, seg.offset_s, seconds), seg.offset_s, "phrase"


# ------------------------------------------------------------------------------------------------------------------
# Building the set
# ------------------------------------------------------------------------------------------------------------------


def _clip_rng(seed: int, *keys: str | int) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [zlib.crc32(str(k).encode()) for k in keys])


def _plan(split: str, counts: Mapping[str, int], chains: bool, chain_clips: int, classes: list[str]) -> list[tuple]:
    jobs = [(name, i) for name in classes for i in range(counts[split])]
    if chains:
        jobs += [("chain", i) for i in range(chain_clips)]
    return jobs


def _pick_chain(rng: np.random.Generator, classes: list[str]) -> list[str]:
    by_agg: dict[str, list[str]] = {}
    for name in classes:
        agg = FXSET_CLASSES[name].aggregated
        if agg != "dry":
            by_agg.setdefault(agg, []).append(name)
    aggs = sorted(by_agg)
    k = min(int(rng.integers(2, 4)), len(aggs))
    chosen = [aggs[i] for i in rng.choice(len(aggs), size=k, replace=False)]
    chosen.sort(key=CHAIN_ORDER.index)
    return [by_agg[a][int(rng.integers(len(by_agg[a])))] for a in chosen]


def build_fxset(
    stems_root: str | Path,
    out_dir: str | Path,
    clips_per_class: int | Mapping[str, int] = 100,
    seconds: float = 1.5,
    seed: int = 0,
    chains: bool = True,
    implementation: str = "fxlens",
    progress: Callable[[int, int], None] | bool | None = None,
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    chain_clips: int | None = None,
    onset_fraction: float = 0.5,
    splits: list[str] | None = None,
    classes: list[str] | None = None,
    randomize_internals: bool | Iterable[str] = False,
    workers: int = 1,
    seen_sources: bool = False,
) -> dict:
    """Build an fxset; returns a summary {out_dir, implementation, splits: {split: {class: n}}, clips, seconds, ...}.

    Args:
        stems_root: a stem dataset (any layout `open_dataset` reads; splits come from it).
        out_dir: where ``<split>/<clip_id>.flac`` and ``<split>/labels.jsonl`` go.
        clips_per_class: clips of each fine class per split (an int, or {split: n}).
        seconds: clip length (1.5 s, AutoFX's feature length).
        chains: also write chains of 2-3 effects from distinct aggregated classes; `chain_clips` of them per split
            (default 2 x clips_per_class of that split).
        implementation: "fxlens" or "pedalboard" (cross-domain; raises FxlensError when pedalboard is missing).
        progress: a callback(done, total), or True for a rich progress bar.
        onset_fraction: share of clips cut at a note/chord onset (the rest are phrase segments).
        splits / classes: restrict to these splits / fine classes.
        randomize_internals: draw the fixed internals of chorus, flanger, phaser and the drive classes per clip
            (`RANDOMIZED_INTERNALS`: sweep widths, phaser stages, stereo phase, mix law; the distortion's amp
            stages) — domain randomization for training sets, so a model does not learn one
            implementation's knob scaling or sound; recorded in each preset (its config, and the scaled mix: such
            clips leave their class's mix sub-range). True: every class of `RANDOMIZED_INTERNALS`; a collection of
            fine class names: only those (in chains too).
        workers: processes rendering clips side by side (one torch thread each). Every clip draws from its own
            seed, so the set does not depend on the number of workers (its samples, to float rounding: a sum split
            over threads rounds differently).
        seen_sources: cut the clips of train, val and test from the songs of all three (AutoFX's split: the dry
            sources of val and test are seen in training, under other settings); ood keeps its own songs.
    """
    from fxlens.data.stems import open_dataset

    if implementation not in ("fxlens", "pedalboard"):
        raise FxlensError(f"unknown implementation '{implementation}' (use fxlens or pedalboard)")
    randomized = _randomized_classes(randomize_internals)
    if implementation == "pedalboard":
        if randomized:
            raise FxlensError("randomizing the internals applies to fxlens renderings only (pedalboard's are fixed)")
        require_pedalboard()
    if workers < 1:
        raise FxlensError(f"workers must be >= 1, got {workers}")
    if not seconds >= 0.5:
        raise FxlensError(f"clip length must be at least 0.5 s (loudness needs 400 ms), got {seconds}")
    ds = open_dataset(stems_root)
    all_splits = ds.splits() or [None]
    chosen_splits = [s for s in all_splits if splits is None or s in splits]
    if not chosen_splits:
        raise FxlensError(f"none of the splits {splits} in '{stems_root}' (it has: {', '.join(map(str, all_splits))})")
    names = list(FINE_CLASSES) if classes is None else list(classes)
    unknown = [c for c in names if c not in FXSET_CLASSES]
    if unknown:
        raise FxlensError(f"unknown fxset class(es) {unknown} (known: {', '.join(FXSET_CLASSES)})")
    skipped = []
    if implementation == "pedalboard":
        skipped = [c for c in names if FXSET_CLASSES[c].pedalboard is None]
        names = [c for c in names if c not in skipped]
    counts = ({s: int(clips_per_class) for s in chosen_splits} if not isinstance(clips_per_class, Mapping)
              else {s: int(clips_per_class.get(s, 0)) for s in chosen_splits})
    out = Path(out_dir).expanduser()
    jobs_by_split = {s: _plan(s, counts, chains, counts[s] * 2 if chain_clips is None else int(chain_clips), names)
                     for s in chosen_splits}
    total = sum(len(j) for j in jobs_by_split.values())
    bar = None
    if progress is True:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("fxset", total=total)
        progress = lambda done, tot: bar.update(task, completed=done)  # noqa: E731
    done, made, resumed = 0, 0, 0
    t0 = time.perf_counter()
    summary_splits: dict[str, dict[str, int]] = {}
    settings = (str(out), seed, seconds, sample_rate, implementation, tuple(names), onset_fraction, randomized)
    pool = None
    try:
        for split in chosen_splits:
            split_name = split or "all"
            by_id: dict[str, dict] = {}
            todo = []
            for cls_name, i in jobs_by_split[split]:
                clip_id = _clip_id(split_name, cls_name, i)
                part = out / split_name / ".parts" / f"{clip_id}.json"
                if part.is_file() and (out / split_name / f"{clip_id}.flac").is_file():
                    by_id[clip_id] = json.loads(part.read_text(encoding="utf-8"))
                    resumed += 1
                    done += 1
                else:
                    todo.append((cls_name, i))
            if callable(progress):
                progress(done, total)

            def finished(rec: dict) -> None:
                nonlocal done, made
                by_id[rec["clip_id"]] = rec
                done, made = done + 1, made + 1
                if callable(progress):
                    progress(done, total)

            source_splits = _source_splits(split, all_splits, seen_sources)
            if workers == 1 or len(todo) < 2:
                sources = _split_sources(ds, source_splits)
                for cls_name, i in todo:
                    finished(_build_clip(ds, sources, split, cls_name, i, *settings))
            else:
                if pool is None:
                    from fxlens.pool import spawn_pool

                    pool = spawn_pool(workers, _worker_init, (str(stems_root),))
                futures = [pool.submit(_build_clip_in_worker, source_splits, split, cls_name, i, *settings)
                           for cls_name, i in todo]
                try:
                    for f in futures:  # in order: a failure stops the build at the first bad clip
                        finished(f.result())
                finally:
                    for f in futures:
                        f.cancel()
            records = [by_id[_clip_id(split_name, c, i)] for c, i in jobs_by_split[split]]
            write_text_atomic(out / split_name / "labels.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            tally: dict[str, int] = {}
            for r in records:
                tally[r["fine_class"]] = tally.get(r["fine_class"], 0) + 1
            summary_splits[split_name] = tally
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.stop()
    elapsed = time.perf_counter() - t0
    summary = {
        "out_dir": str(out), "implementation": implementation, "seconds": seconds, "sample_rate": sample_rate,
        "seed": seed, "randomize_internals": sorted(randomized), "seen_sources": bool(seen_sources),
        "splits": summary_splits, "clips": done,
        "rendered": made, "resumed": resumed,
        "skipped_classes": skipped, "elapsed_s": round(elapsed, 3),
        "clips_per_s": round(made / elapsed, 2) if made and elapsed > 0 else None,
        "input_lufs": INPUT_LUFS, "output_lufs": OUTPUT_LUFS, "output_peak_db": OUTPUT_PEAK_DB,
    }
    write_text_atomic(out / "fxset.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _draw_settings(fine: list[str], rng: np.random.Generator, sample_rate: int, implementation: str,
                   internals_rng: np.random.Generator | None = None,
                   randomized: frozenset[str] = frozenset()) -> dict:
    if implementation != "fxlens":
        return {"preset": None, "controls": None,
                "pedalboard": [s for name in fine for s in _draw_pedalboard(FXSET_CLASSES[name], rng)]}
    stages, controls = [], []
    for name in fine:
        c = FXSET_CLASSES[name]
        if c.effect is None:
            continue
        values = _draw_fxlens(c, rng)
        internals = _draw_internals(name, internals_rng) if name in randomized else {}
        mix_scale = internals.pop("mix_scale", None)
        if mix_scale is not None:
            values["mix"] = float(np.float32(values["mix"] * mix_scale))
        effect = get_effect(c.effect, **{**c.config, **internals})
        stages.append((effect, values))
        controls.append({"effect": c.effect, "controls": _controls(effect, values)})
    return {"preset": Chain(stages).to_preset(sample_rate) if stages else None, "controls": controls}


def _render(x: torch.Tensor, sample_rate: int, settings: dict, implementation: str) -> torch.Tensor:
    if implementation == "fxlens":
        return render_fxlens(x, sample_rate, settings["preset"])
    return render_pedalboard(x, sample_rate, settings["pedalboard"])


def _clip_id(split_name: str, cls_name: str, i: int) -> str:
    return f"{split_name}-{cls_name}-{i:05d}"


SEEN_SOURCE_SPLITS = ("train", "val", "test")  # pooled by `seen_sources`; ood keeps its own songs


def _source_splits(split, all_splits: list, seen_sources: bool) -> tuple:
    """The splits whose songs the clips of `split` are cut from: its own, or with `seen_sources` (and `split` one of
    `SEEN_SOURCE_SPLITS`) every one of those that the dataset holds."""
    if seen_sources and split in SEEN_SOURCE_SPLITS:
        return tuple(s for s in all_splits if s in SEEN_SOURCE_SPLITS)
    return (split,)


def _split_sources(ds, source_splits: tuple) -> tuple[list, list[str]]:
    """The songs of `source_splits` and the instruments they hold (what a clip of a split is cut from)."""
    songs = [r for r in ds.songs() if r.split in source_splits]
    return songs, sorted({i for r in songs for i in r.instruments})


def _build_clip(ds, sources: tuple[list, list[str]], split, cls_name: str, i: int, out: str, seed: int,
                seconds: float, sample_rate: int, implementation: str, names: tuple[str, ...], onset_fraction: float,
                randomized: frozenset[str]) -> dict:
    """Render clip `i` of a class (or "chain") of a split, write its audio and its label part; its record."""
    split_name = split or "all"
    clip_id = _clip_id(split_name, cls_name, i)
    rng = _clip_rng(seed, implementation, split_name, cls_name, i)
    rec = _make_clip(ds, *sources, cls_name, rng, seconds, sample_rate, implementation, list(names), onset_fraction,
                     randomized)
    rec = {"clip_id": clip_id, "split": split_name, **rec}
    fxaudio.save(Path(out) / split_name / f"{clip_id}.flac", rec.pop("_audio"), sample_rate)
    write_text_atomic(Path(out) / split_name / ".parts" / f"{clip_id}.json", json.dumps(rec) + "\n")
    return rec


_WORKER: dict = {"ds": None, "sources": {}}  # a worker process's dataset and its sources per source splits, once


def _worker_init(stems_root: str) -> None:
    from fxlens.data.stems import open_dataset

    _WORKER["ds"] = open_dataset(stems_root)


def _build_clip_in_worker(source_splits: tuple, split, *args) -> dict:
    ds, sources = _WORKER["ds"], _WORKER["sources"]
    if source_splits not in sources:
        sources[source_splits] = _split_sources(ds, source_splits)
    return _build_clip(ds, sources[source_splits], split, *args)


def _make_clip(ds, songs, instruments, cls_name, rng, seconds, sample_rate, implementation, names,
               onset_fraction, randomized: frozenset[str] = frozenset()) -> dict:
    fine = _pick_chain(rng, names) if cls_name == "chain" else [cls_name]
    # the internals draw from a child of the clip's seed: the parameters and the source stay those of the same clip
    # built without randomization
    internals_rng = (np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
                     if randomized and implementation == "fxlens" else None)
    # settings first (independent of the source draws), then the source
    settings = _draw_settings(fine, rng, sample_rate, implementation, internals_rng, randomized)
    audible = FXSET_CLASSES[cls_name].audible if cls_name in FXSET_CLASSES else None
    last: Exception | None = None
    for _ in range(10):
        instrument = instruments[int(rng.integers(len(instruments)))]
        with_inst = [r for r in songs if instrument in r.instruments]
        ref = with_inst[int(rng.integers(len(with_inst)))]
        onset = bool(rng.random() < onset_fraction)
        try:
            x, offset, kind = _source(ds, ref, instrument, seconds, sample_rate, rng, onset)
            x = fxaudio.normalize_loudness(x, sample_rate, INPUT_LUFS)
        except InvalidAudioError as e:
            last = e
            continue
        y = _render(x, sample_rate, settings, implementation)
        for _ in range(AUDIBLE_TRIES):  # the class must be heard on this source: redraw the settings until it is
            if audible is None or audible(x, y, sample_rate):
                break
            settings = _draw_settings(fine, rng, sample_rate, implementation, internals_rng, randomized)
            y = _render(x, sample_rate, settings, implementation)
        else:
            last = InvalidAudioError(f"no audible '{cls_name}' settings for this source in {AUDIBLE_TRIES} draws")
            continue
        break
    else:
        raise InvalidAudioError(f"no usable source segment after 10 draws: {last}")
    y, gain_db = finish_clip(y, sample_rate)
    aggregated = [FXSET_CLASSES[n].aggregated for n in fine]
    return {
        "_audio": y,
        "song_id": ref.song_id, "song_split": ref.split, "song_path": str(ref.path), "instrument": instrument,
        "offset_s": offset, "seconds": seconds, "sample_rate": sample_rate, "segment": kind,
        "fine_class": cls_name, "aggregated_class": "chain" if cls_name == "chain" else aggregated[0],
        "fine_labels": fine, "labels": aggregated,
        "effects": ([FXSET_CLASSES[n].effect for n in fine if FXSET_CLASSES[n].effect] if implementation == "fxlens"
                    else [s["plugin"] for s in settings["pedalboard"]]),
        "implementation": implementation, "randomized_internals": sorted(set(fine) & randomized), **settings,
        "input_lufs": INPUT_LUFS, "output_gain_db": gain_db,
    }


def read_labels(out_dir: str | Path, split: str) -> list[dict]:
    """The label records of one split of an fxset."""
    p = Path(out_dir) / split / "labels.jsonl"
    if not p.is_file():
        raise FxlensError(f"no labels.jsonl in '{p.parent}' (build the fxset first)")
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

"""The peers' nearest equivalents of fxlens effects, for speed comparisons in the same run.

pedalboard (GPL-3, C++/JUCE; not differentiable) and dasp-pytorch (Apache-2.0, differentiable) are optional
extras (`pip install fxlens[peers]`); each factory returns None when the peer has no equivalent or is missing.
Settings are mid-range, representative values: the speed of these effects does not depend much on them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def pedalboard_processor(name: str) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """A function (C, T) float32 -> (C, T) applying pedalboard's nearest equivalent of effect `name`."""
    try:
        import pedalboard as pb
    except ImportError:
        return None
    boards = {
        "gain": lambda: [pb.Gain(gain_db=6.0)],
        "parametric_eq": lambda: [pb.LowShelfFilter(100, 3.0, 0.7)] + [pb.PeakFilter(f, 4.0, 1.0) for f in (300, 1000, 3000, 8000)]
        + [pb.HighShelfFilter(10000, -3.0, 0.7)],
        "graphic_eq": lambda: [pb.PeakFilter(31.25 * 2**k, 3.0, 1.41) for k in range(10)],
        "compressor": lambda: [pb.Compressor(threshold_db=-24, ratio=4, attack_ms=5, release_ms=100)],
        "limiter": lambda: [pb.Limiter(threshold_db=-6, release_ms=100)],
        "clipper": lambda: [pb.Gain(6.0), pb.Clipping(threshold_db=-6.0)],
        "distortion": lambda: [pb.Distortion(drive_db=20), pb.LowShelfFilter(200, 3.0, 0.7), pb.HighShelfFilter(1000, -3.0, 0.7)],
        "delay": lambda: [pb.Delay(delay_seconds=0.25, feedback=0.4, mix=0.3)],
        "modulated_delay": lambda: [pb.Chorus(rate_hz=1.0, depth=0.25, centre_delay_ms=7.0, feedback=0.0, mix=0.5)],
        "phaser": lambda: [pb.Phaser(rate_hz=0.5, depth=0.5, centre_frequency_hz=1000, feedback=0.3, mix=0.5)],
        "reverb": lambda: [pb.Reverb(room_size=0.7, wet_level=0.33, dry_level=0.7)],
    }
    if name not in boards:
        return None
    board = pb.Pedalboard(boards[name]())

    def run(x: np.ndarray, sample_rate: int) -> np.ndarray:
        board.reset()
        return board(x, sample_rate)

    return run


def dasp_processor(name: str) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    """A function (B, 2, T) -> (B, 2, T) applying dasp-pytorch's nearest equivalent of effect `name`."""
    try:
        import dasp_pytorch.functional as D
    except ImportError:
        return None

    def full(x: torch.Tensor, v: float) -> torch.Tensor:
        return torch.full((x.shape[0],), v, dtype=x.dtype)

    def peq(x, sr):
        kw = {"low_shelf_gain_db": 3.0, "low_shelf_cutoff_freq": 100.0, "low_shelf_q_factor": 0.7,
              "high_shelf_gain_db": -3.0, "high_shelf_cutoff_freq": 10000.0, "high_shelf_q_factor": 0.7}
        for i, f in enumerate((300.0, 1000.0, 3000.0, 8000.0)):
            kw.update({f"band{i}_gain_db": 4.0, f"band{i}_cutoff_freq": f, f"band{i}_q_factor": 1.0})
        return D.parametric_eq(x, sr, **{k: full(x, v) for k, v in kw.items()})

    def comp(x, sr):
        return D.compressor(x, sr, full(x, -24.0), full(x, 4.0), full(x, 5.0), full(x, 100.0), full(x, 6.0), full(x, 0.0))

    def reverb(x, sr):
        kw = {f"band{i}_gain": 0.5 for i in range(12)} | {f"band{i}_decay": 0.5 for i in range(12)} | {"mix": 0.3}
        return D.noise_shaped_reverberation(x, sr, **{k: full(x, v) for k, v in kw.items()})

    table = {
        "gain": lambda x, sr: D.gain(x, sr, full(x, 6.0)),
        "parametric_eq": peq,
        "compressor": comp,
        "reverb": reverb,
        "stereo_imager": lambda x, sr: D.stereo_widener(x, sr, full(x, 0.7)),
    }
    return table.get(name)

"""The main job on shipped defaults (`fxlens demo`): render a short dry clip, put a random chain on it, write both.

Until trained models ship, this is what `install.sh` runs to show that the installation works end to end:
fluidsynth rendering, the effects, presets and atomic audio writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fxlens import audio
from fxlens.fx.chain import DEFAULT_POOL, Chain, RandomChain
from fxlens.fx.preset import write_preset


@dataclass
class DemoResult:
    dry_path: Path
    wet_path: Path
    preset_path: Path
    preset: dict
    seconds: float
    dry_lufs: float
    wet_lufs: float


def run_demo(out_dir: str | os.PathLike = "fxlens-demo", seed: int = 0, seconds: float = 8.0) -> DemoResult:
    from fxlens.data.render import render_demo_clip

    out = Path(out_dir)
    dry, sr = render_demo_clip(seconds=seconds, seed=seed)
    chain = Chain.from_preset(RandomChain(DEFAULT_POOL, probabilities=0.5, min_effects=2, max_effects=4)
                              .sample_presets(1, sr, seed=seed)[0])
    with torch.no_grad():
        wet = chain(dry, sr, keep_tail=True)
        # Match the wet loudness to the dry one with a final gain stage, so a listener compares the effects and not
        # the level (a 40 dB drive is loud); being a stage of the chain, the preset still reproduces wet.wav.
        match_db = float(audio.integrated_loudness(dry, sr)[0] - audio.integrated_loudness(wet, sr)[0])
        stages = [(e, p) for e, p in zip(chain.effects, chain.params)]
        chain = Chain(stages + [("gain", {"gain_db": max(-24.0, min(24.0, match_db))})])
        wet = chain(dry, sr, keep_tail=True)
    preset = chain.to_preset(sr)
    dry_path = audio.save(out / "dry.wav", dry[0], sr, subtype="FLOAT")
    wet_path = audio.save(out / "wet.wav", wet[0], sr, subtype="FLOAT")  # float: a hot chain is kept, not clipped
    preset_path = write_preset(out / "wet.preset.json", preset)
    return DemoResult(dry_path, wet_path, preset_path, preset, wet.shape[-1] / sr,
                      float(audio.integrated_loudness(dry, sr)[0]), float(audio.integrated_loudness(wet, sr)[0]))

"""Put effects on a file: from a preset, or a random chain (`fxlens fx apply`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fxlens import audio
from fxlens.errors import AudioFileError
from fxlens.fx.chain import DEFAULT_POOL, Chain, RandomChain
from fxlens.fx.preset import read_preset, write_preset

OUTPUT_SUFFIXES = (".wav", ".flac")


@dataclass
class ProcessResult:
    output: Path
    preset_path: Path
    preset: dict
    seconds: float


def preset_path_for(output: str | os.PathLike) -> Path:
    """The preset written beside an output file: song.wav -> song.preset.json."""
    out = Path(output)
    return out.with_name(out.stem + ".preset.json")


def check_output_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise AudioFileError(f"output must end in {' or '.join(OUTPUT_SUFFIXES)}: {out}")
    return out


def render_chain(x: torch.Tensor, sample_rate: int, chain: Chain, keep_tail: bool) -> torch.Tensor:
    with torch.no_grad():
        return chain(x, sample_rate, keep_tail=keep_tail)


def apply_to_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    preset_file: str | os.PathLike | None = None,
    random_effects: list[str] | None = None,
    seed: int = 0,
    keep_tail: bool = False,
    max_effects: int | None = None,
) -> ProcessResult:
    """Process a file with a preset file, or with a random chain drawn from `random_effects` (None = the default pool).

    The output audio and its preset (the exact settings used) are both written atomically, after every input has
    been validated, so a failure never leaves a partial output.
    """
    out = check_output_path(output_path)
    x = audio.load(input_path, sample_rate=audio.WORKING_SAMPLE_RATE)
    sr = audio.WORKING_SAMPLE_RATE
    if preset_file is not None:
        preset = read_preset(preset_file)
        chain = Chain.from_preset(preset)
    else:
        pool = random_effects or list(DEFAULT_POOL)
        rc = RandomChain(pool, probabilities=0.5, min_effects=1, max_effects=max_effects)
        chain = Chain.from_preset(rc.sample_presets(1, sr, seed=seed)[0])
    y = render_chain(x, sr, chain, keep_tail)
    preset = chain.to_preset(sr)
    audio.save(out, y[0], sr, subtype="FLOAT" if out.suffix.lower() == ".wav" else "PCM_24")
    preset_path = write_preset(preset_path_for(out), preset)
    return ProcessResult(out, preset_path, preset, y.shape[-1] / sr)

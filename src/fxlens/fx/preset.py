"""Presets: a chain's effects, order, physical parameter values (with units) and sample rate, as JSON.

    {
      "format": "fxlens-preset", "fxlens_version": "0.1.0", "sample_rate": 44100,
      "effects": [
        {"name": "compressor", "config": {}, "params": {"threshold_db": {"value": -24.0, "unit": "dB"}, ...}},
        ...
      ]
    }

Rendering a preset (`Chain.from_preset`) reproduces the audio it was made with: values are stored as the exact
float32 numbers that were used. A preset read from disk is validated: unknown effects or parameters and
out-of-range values raise one clear error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fxlens.atomic import write_text_atomic
from fxlens.errors import FxlensError, PresetError
from fxlens.fx.effect import Effect, get_effect

PRESET_FORMAT = "fxlens-preset"


def preset_from_stages(stages: Sequence[tuple[Effect, Mapping[str, float]]], sample_rate: int) -> dict:
    """Build a preset dict from (effect, {param: physical value}) pairs."""
    from fxlens import __version__

    effects = []
    for effect, values in stages:
        effects.append(
            {
                "name": effect.name,
                "config": effect.config(),
                "params": {s.name: {"value": float(values[s.name]), "unit": s.unit} for s in effect.specs},
            }
        )
    return {"format": PRESET_FORMAT, "fxlens_version": __version__, "sample_rate": int(sample_rate), "effects": effects}


def stages_from_preset(preset: Mapping) -> list[tuple[Effect, dict[str, float]]]:
    """Validate a preset dict and build its (effect, values) stages."""
    if not isinstance(preset, Mapping) or preset.get("format") != PRESET_FORMAT:
        raise PresetError("not an fxlens preset (missing \"format\": \"fxlens-preset\")")
    items = preset.get("effects")
    if not isinstance(items, list):
        raise PresetError("preset has no 'effects' list")
    stages = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise PresetError(f"preset effect #{i + 1} has no name")
        config = item.get("config") or {}
        params = item.get("params") or {}
        if not isinstance(config, Mapping) or not isinstance(params, Mapping):
            raise PresetError(f"preset effect #{i + 1} ('{item['name']}'): config and params must be objects")
        effect = get_effect(item["name"], **config)
        values = {}
        for key, entry in params.items():
            spec = effect.spec(key)
            value = entry.get("value") if isinstance(entry, Mapping) else entry
            unit = entry.get("unit", spec.unit) if isinstance(entry, Mapping) else spec.unit
            if unit != spec.unit:
                raise PresetError(f"'{item['name']}.{key}' is in {unit!r} but the effect expects {spec.unit!r}")
            values[key] = spec.check(value)
        stages.append((effect, values))
    return stages


def read_preset(path: str | os.PathLike) -> dict:
    """Read a preset JSON file; raises PresetError with the reason (missing, not JSON, not a preset)."""
    p = Path(path)
    if not p.is_file():
        raise PresetError(f"preset file not found: {p}")
    try:
        preset = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"preset file {p} is not valid JSON: {e}") from None
    try:
        stages_from_preset(preset)  # validate now, so the error names the file
    except FxlensError as e:
        raise type(e)(f"{p}: {e}") from None
    return preset


def write_preset(path: str | os.PathLike, preset: Mapping) -> Path:
    """Write a preset as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(preset, indent=2) + "\n")

"""Human-facing views of fxlens objects: rich tables for the terminal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rich.table import Table


def _fmt(value: float) -> str:
    if value == 0 or (1e-3 <= abs(value) < 1e5):
        return f"{value:.4g}"
    return f"{value:.3e}"


def _non_default_config(fx: Mapping) -> dict:
    """The config entries of a preset effect that differ from the effect's defaults (all of them for an unknown
    effect name; a preset is validated before it is shown, so that is not expected)."""
    from fxlens.errors import FxlensError
    from fxlens.fx.effect import get_effect

    config = dict(fx.get("config") or {})
    try:
        defaults = get_effect(fx["name"]).config()
    except FxlensError:
        return config
    return {k: v for k, v in config.items() if defaults.get(k, object()) != v}


def preset_table(preset: Mapping, title: str = "Effect chain") -> Table:
    """One row per parameter of each effect in a preset, in processing order, then a row per fixed internal set
    away from the effect's default (its config, e.g. a phaser's stages or a distortion's cabinet)."""
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("effect", style="bold cyan")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    table.add_column("unit")
    effects = preset.get("effects", [])
    if not effects:
        table.add_row("-", "(none: dry)", "", "", "")
    for i, fx in enumerate(effects, 1):
        for j, (name, entry) in enumerate(fx["params"].items()):
            table.add_row(str(i) if j == 0 else "", fx["name"] if j == 0 else "", name, _fmt(entry["value"]), entry["unit"])
        for name, value in _non_default_config(fx).items():
            shown = _fmt(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
            table.add_row("", "", f"[dim]{name} (config)[/]", shown, "")
        if i < len(effects):
            table.add_section()
    return table


def effects_table(effects: Sequence) -> Table:
    """Every effect with its parameters: unit, range, scale, default (`fxlens fx list`)."""
    table = Table(title="fxlens effects")
    for col, kw in [("effect", {"style": "bold cyan"}), ("parameter", {}), ("unit", {}), ("min", {"justify": "right"}),
                    ("max", {"justify": "right"}), ("scale", {}), ("default", {"justify": "right"})]:
        table.add_column(col, **kw)
    for k, effect in enumerate(effects):
        for j, s in enumerate(effect.specs):
            table.add_row(effect.name if j == 0 else "", s.name, s.unit, _fmt(s.min), _fmt(s.max), s.scale, _fmt(s.default))
        if k < len(effects) - 1:
            table.add_section()
    return table


def info_table(rows: Sequence[tuple[str, str]], title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    return table


def db_str(value: float, unit: str) -> str:
    return f"-inf {unit}" if math.isinf(value) and value < 0 else f"{value:.2f} {unit}"

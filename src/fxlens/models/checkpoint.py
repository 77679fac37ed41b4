"""Checkpoints: a folder with `model.safetensors` (weights), `config.json` (kind + everything to rebuild the model)
and `MODEL_CARD.md` (the command that made it, data, time, metrics). Loading checks the kind."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.errors import CheckpointError


ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
"""Where the shipped checkpoints live (package data: `fxlens/assets/<name>`)."""


def shipped_checkpoint(name: str) -> Path:
    """The folder of a checkpoint shipped with fxlens; CheckpointError when this install lacks it."""
    folder = ASSETS_DIR / name
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"the shipped checkpoint '{name}' is missing from this install ({folder})")
    return folder


def save_checkpoint(folder: str | os.PathLike, state: dict[str, torch.Tensor], config: dict, card: str,
                    metrics: dict | None = None) -> Path:
    """Write a checkpoint folder (every file atomically); `metrics` also goes to metrics.json."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, no permission: one line, not a traceback
        raise CheckpointError(f"cannot write a checkpoint folder at {out} ({e.strerror})") from None
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    write_text_atomic(out / "MODEL_CARD.md", card)
    if metrics is not None:
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return out


def load_checkpoint(folder: str | os.PathLike, kind: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of a checkpoint folder; CheckpointError if missing, corrupt or of another kind
    (`kind` None: any kind)."""
    p = Path(folder)
    cfg_path, weights = p / "config.json", p / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(f"not a checkpoint folder (needs config.json and model.safetensors): {p}")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: unreadable config ({e})") from None
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(f"{p} holds a '{config.get('kind')}' checkpoint, not a '{kind}'")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{weights}: corrupt weights ({type(e).__name__})") from None
    return state, config


def load_model(folder: str | os.PathLike, kind: str, build: Callable[[dict], torch.nn.Module]
               ) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, config): `build(config)` makes the network, the checkpoint's weights go in;
    CheckpointError when the folder is not a `kind` checkpoint or its weights do not fit its config."""
    state, config = load_checkpoint(folder, kind)
    try:
        model = build(config)
        model.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{folder}: {kind} checkpoint does not match its config ({first})") from None
    return model.eval(), config


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of several state dicts of one architecture (a "model soup", Wortsman et al. 2022):
    floating-point tensors averaged in float64 and cast back; integer ones (BatchNorm's batch counters) taken from
    the first. CheckpointError when the keys, shapes or dtypes differ. Written here because it is five lines on
    safetensors' dicts; torch.optim.swa_utils averages a live module over an optimizer's steps instead."""
    if not states:
        raise CheckpointError("nothing to average")
    first = states[0]
    for i, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            extra = sorted(set(state) ^ set(first))[:3]
            raise CheckpointError(f"checkpoint {i} has other weights than the first ({', '.join(extra)} ...)")
        for k, v in state.items():
            if v.shape != first[k].shape or v.dtype != first[k].dtype:
                raise CheckpointError(f"checkpoint {i}: '{k}' is {tuple(v.shape)} {v.dtype}, the first's "
                                      f"{tuple(first[k].shape)} {first[k].dtype}")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out

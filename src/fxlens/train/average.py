"""Average the weights of trained checkpoints (`fxlens train average`): a uniform "model soup" (Wortsman et al.,
ICML 2022). It helps when the checkpoints share an initialization and were fine-tuned from it (one loss basin);
averaging unrelated runs gives a broken model. Any checkpoint kind whose configs agree apart from how each was
trained (`training`, `step`) can be averaged; the result is an ordinary checkpoint of that kind."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fxlens import __version__
from fxlens.errors import CheckpointError
from fxlens.models.checkpoint import average_states, load_checkpoint, save_checkpoint

# config entries that record how a checkpoint was trained, not what network it is: they may differ between soups
TRAINING_KEYS = ("training", "step")


def _architecture(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in TRAINING_KEYS}


def _card(folder: Path) -> tuple[str, list[str]]:
    """(title, body) of a checkpoint's model card, the body without its title and surrounding blank lines."""
    card = folder / "MODEL_CARD.md"
    lines = card.read_text().splitlines() if card.is_file() else []
    if not lines:
        return "(no model card)", []
    return lines[0].lstrip("# ").strip(), "\n".join(lines[1:]).strip("\n").splitlines()


def average_checkpoints(folders: list[str | os.PathLike], out: str | os.PathLike,
                        command: str | None = None) -> Path:
    """Write the uniform average of `folders` (two or more checkpoints of one kind and architecture) to `out`."""
    paths = [Path(f) for f in folders]
    if len(paths) < 2:
        raise CheckpointError("averaging needs two or more checkpoints")
    if len({p.resolve() for p in paths}) < len(paths):
        raise CheckpointError("the same checkpoint is given twice (a weighted average is not what this does)")
    first_state, first_config = load_checkpoint(paths[0], None)
    kind = first_config.get("kind")  # the first decides the kind; load_checkpoint checks the others against it
    states, configs = [first_state], [first_config]
    for p in paths[1:]:
        state, config = load_checkpoint(p, kind)
        states.append(state)
        configs.append(config)
    for p, config in zip(paths[1:], configs[1:]):
        if _architecture(config) != _architecture(configs[0]):
            keys = sorted(k for k in set(_architecture(config)) | set(_architecture(configs[0]))
                          if config.get(k) != configs[0].get(k))
            raise CheckpointError(f"{p} is another network than {paths[0]} (config differs in: {', '.join(keys)})")
    started = time.time()
    state = average_states(states)
    config = {**configs[0], "training": {"average_of": [str(p) for p in paths],
                                         "ingredients": [c.get("training") for c in configs]},
              "step": [c.get("step") for c in configs]}
    lines = [f"# Uniform weight average of {len(paths)} `{kind}` checkpoints (fxlens {__version__})", "",
             "A model soup (Wortsman et al., ICML 2022): every floating-point weight is the mean of the same weight in "
             "the checkpoints below (BatchNorm running statistics included; its batch counters are the first's). "
             "No further training.", "", "## How it was made",
             f"- Command: `{command or 'fxlens.train.average.average_checkpoints(...)'}` "
             f"({time.time() - started:.1f} s)", "- Ingredients (each one's own model card says how it was trained; "
             "it is also kept in this config's `training.ingredients`):"]
    cards = [_card(p) for p in paths]
    lines += [f"  {i}. `{p}`: {title} (step {c.get('step')})" for i, (p, c, (title, _)) in
              enumerate(zip(paths, configs, cards), start=1)]
    lines += ["", "## Metrics", "Not measured by this command: see the benchmark that chose it (docs/benchmarks.md).",
              "", "## The ingredients' model cards (headings two levels down)"]
    for i, (p, (_, body)) in enumerate(zip(paths, cards), start=1):  # the whole story in one file
        lines += ["", f"### Ingredient {i}: `{p}`", ""]
        lines += [("##" + line if line.startswith("#") else line) for line in body] or ["(no model card)"]
    return save_checkpoint(out, state, config, "\n".join(lines) + "\n")

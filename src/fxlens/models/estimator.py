"""Parameter estimation from features (AutoFX §5.3, the MLP variant): which settings made this effect?

`ParameterEstimator` maps standardized clip features plus a one-hot of the (fine) effect class to the normalized
controls ([0, 1]) of every effect it knows, laid out in *slots*: one block of outputs per (effect, config) — e.g.
``delay``, ``modulated_delay`` with a 90 degree stereo phase (chorus), ``parametric_eq`` — whose width is that
effect's parameter count. A class selects one slot (`class_slots`); only that slot's outputs are trained
(`masked_l1`) and read. Outputs go through a sigmoid, so every estimate is a valid control.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from fxlens.errors import FxlensError

Z_CLIP = 5.0


def slot_key(effect: str, config: dict | None) -> str:
    """A stable name for an (effect, config) pair: ``name`` or ``name{json config}`` when the config is not empty."""
    return effect if not config else f"{effect}{json.dumps(config, sort_keys=True)}"


class ParameterEstimator(nn.Module):
    """features (B, F) + class one-hot (B, K) -> normalized controls (B, P) in [0, 1], P = sum of slot widths.

    Args:
        classes: class names, the order of the one-hot.
        slots: [(slot key, width)] in output order.
        class_slots: class name -> slot key, or None for classes without an effect (dry).
        n_features: input feature count (standardized with stored train statistics).
    """

    def __init__(self, classes: list[str], slots: list[tuple[str, int]], class_slots: dict[str, str | None],
                 n_features: int, hidden: tuple[int, ...] = (512, 512), dropout: float = 0.3) -> None:
        super().__init__()
        self.classes = list(classes)
        self.slots = [(str(k), int(w)) for k, w in slots]
        self.class_slots = dict(class_slots)
        offsets, o = {}, 0
        for k, w in self.slots:
            offsets[k] = (o, o + w)
            o += w
        self.offsets = offsets
        self.n_outputs = o
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features + len(self.classes)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, self.n_outputs))
        self.net = nn.Sequential(*layers)
        # output mask of each class: 1 on its slot's outputs
        mask = torch.zeros(len(self.classes), self.n_outputs)
        for i, c in enumerate(self.classes):
            k = self.class_slots.get(c)
            if k is not None:
                a, b = self.offsets[k]
                mask[i, a:b] = 1.0
        self.register_buffer("class_mask", mask, persistent=False)

    def set_standardization(self, features: torch.Tensor) -> None:
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-8))

    def forward(self, features: torch.Tensor, class_probs: torch.Tensor) -> torch.Tensor:
        """(B, F) features, (B, K) class one-hot or probabilities -> (B, P) controls in [0, 1]."""
        # clipped at +-5 standard deviations: a few heavy-tailed features (kurtoses, cepstral peaks) otherwise
        # dominate the first layer on unusual clips
        z = ((features - self.feature_mean) / self.feature_std).clamp(-Z_CLIP, Z_CLIP)
        return torch.sigmoid(self.net(torch.cat([z, class_probs.to(z.dtype)], dim=1)))

    def one_hot(self, names: list[str]) -> torch.Tensor:
        try:
            idx = torch.tensor([self.classes.index(n) for n in names], dtype=torch.long)
        except ValueError:
            raise FxlensError(f"unknown class in {names} (known: {', '.join(self.classes)})") from None
        return nn.functional.one_hot(idx, len(self.classes)).float()

    def estimate(self, features: torch.Tensor, class_name: str) -> torch.Tensor:
        """Controls (B, width) of `class_name`'s slot, conditioned on that class."""
        k = self.class_slots.get(class_name)
        if k is None:
            raise FxlensError(f"class '{class_name}' has no effect to estimate")
        a, b = self.offsets[k]
        out = self.forward(features, self.one_hot([class_name] * features.shape[0]))
        return out[:, a:b]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean absolute error: per row, the mean of ``|pred - target|`` over the entries where ``mask`` is 1
    (the active effect's controls), then the mean over rows that have any; 0 if none has.

    Every clip weighs the same whatever its effect's parameter count (an 18-parameter EQ clip does not outweigh a
    3-parameter delay clip). Entries outside the mask contribute neither to the value nor to the gradient, whatever
    the target holds there (NaN included).
    """
    m = (mask > 0).to(pred.dtype)
    safe_target = torch.where(m > 0, target, pred.detach())
    per_row = ((pred - safe_target).abs() * m).sum(dim=1)
    n = m.sum(dim=1)
    rows = n > 0
    if not bool(rows.any()):
        return pred.sum() * 0.0
    return (per_row[rows] / n[rows]).mean()

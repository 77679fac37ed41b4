"""Effect recognition from hand-crafted features (AutoFX §5.2): an MLP on standardized AutoFX features."""

from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """Standardize features with stored train statistics, then MLP -> class logits.

    `multilabel` models are read with a sigmoid per class (effect chains), others with a softmax.
    """

    def __init__(self, classes: list[str], n_features: int = 163, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.2, multilabel: bool = False) -> None:
        super().__init__()
        self.classes = list(classes)
        self.multilabel = multilabel
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, len(self.classes)))
        self.net = nn.Sequential(*layers)

    def set_standardization(self, features: torch.Tensor) -> None:
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-8))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.feature_mean) / self.feature_std)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.forward(features)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)

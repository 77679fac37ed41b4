"""Effect recognition from hand-crafted features (AutoFX §5.2): an MLP on standardized AutoFX features."""

from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """Standardize features with stored train statistics, then MLP -> class logits.

    `multilabel` models are read with a sigmoid per class (effect chains), others with a softmax. `temperature`
    divides the logits in `probabilities` (fitted on validation data after training, so that a 0.9 means right
    about 9 times in 10; `forward` returns the raw logits).
    """

    def __init__(self, classes: list[str], n_features: int = 163, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.2, multilabel: bool = False, temperature: float = 1.0) -> None:
        super().__init__()
        self.classes = list(classes)
        self.multilabel = multilabel
        self.temperature = float(temperature)
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
        logits = self.forward(features) / self.temperature
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool = False) -> float:
    """The temperature T > 0 minimizing the negative log-likelihood of ``logits / T`` on held-out ``targets``
    (class indices, or 0/1 floats for `multilabel`) — Guo et al. 2017, temperature scaling. 1.0 with no data."""
    if len(targets) == 0:
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)
    logits = logits.detach()

    def closure():
        opt.zero_grad()
        z = logits / log_t.exp()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, targets.float()) if multilabel
                else torch.nn.functional.cross_entropy(z, targets))
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))

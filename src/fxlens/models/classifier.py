"""Effect recognition (AutoFX §5.2).

- `FeatureClassifier`: an MLP on standardized hand-crafted features (the paper's model; ``input_kind =
  "features"``).
- `MelResNetClassifier`: the same features through an MLP branch, fused with a small ResNet on the clip's stereo
  log-mel spectrogram (`fxlens.models.resnet`), which sees what the summary features average away (reverb tails,
  tremolo's level dips, echoes). ``input_kind = "features+audio"``: it takes the features and the audio (or its
  log-mel).
- `StackedRecognizer`: a multi-label recognizer of either kind whose logits, beside the features, go through
  boosted trees (`fxlens.models.trees`, fitted by `fxlens train stack`) that give the final probabilities. Same
  inputs as its base.

The first two return raw logits from ``forward`` and calibrated probabilities from ``probabilities`` (softmax, or
one sigmoid per class for `multilabel` models), after dividing by a fitted `temperature`; the stacked one returns its
trees' raw scores and their sigmoids.
"""

from __future__ import annotations

import torch
from torch import nn

from fxlens.errors import ParameterError
from fxlens.models.resnet import MelInput, resnet_stages, run_stages
from fxlens.models.trees import BoostedTrees


class FeatureClassifier(nn.Module):
    """Standardize features with stored train statistics, then MLP -> class logits.

    `multilabel` models are read with a sigmoid per class (effect chains), others with a softmax. `temperature`
    divides the logits in `probabilities` (fitted on validation data after training, so that a 0.9 means right
    about 9 times in 10; `forward` returns the raw logits).
    """

    input_kind = "features"

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

    def probabilities(self, features: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated class probabilities (B, K); `audio` is accepted (and unused) so that every recognizer is
        called the same way."""
        return calibrated_probabilities(self, self.forward(features))


class MelResNetClassifier(MelInput, nn.Module):
    """Standardized features (B, F) and the clip's log-mel -> class logits (B, K).

    Two branches, concatenated before the head: the ResNet (`resnet_stages`, no FiLM) pooled to 2 x its last
    width, and the features (standardized with stored train statistics, clipped at +-5 standard deviations)
    through Linear-LayerNorm-GELU to `feature_width`; then a hidden layer of `hidden` units and the class layer.

    Args:
        classes: class names, in output order.
        n_features: features per clip (0: the ResNet alone).
        sample_rate, n_mels, n_fft, hop, audio_channels: the log-mel front end (`MelInput`).
        channels: convolution widths per ResNet stage.
    """

    input_kind = "features+audio"

    def __init__(self, classes: list[str], n_features: int, sample_rate: int, channels: tuple[int, ...] = (16, 32, 64),
                 n_mels: int = 64, n_fft: int = 2048, hop: int = 512, audio_channels: int = 2,
                 feature_width: int = 256, hidden: int = 256, dropout: float = 0.2, multilabel: bool = False,
                 temperature: float = 1.0) -> None:
        nn.Module.__init__(self)
        self.set_mel_input(sample_rate, n_mels, n_fft, hop, audio_channels)
        self.classes = list(classes)
        self.multilabel = multilabel
        self.temperature = float(temperature)
        self.n_features = int(n_features)
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_std", torch.ones(self.n_features))
        self.stem, self.blocks = resnet_stages(self.audio_channels, tuple(channels), 0)
        width = 2 * channels[-1]
        self.feature_branch = None
        if self.n_features:
            self.feature_branch = nn.Sequential(nn.Linear(self.n_features, feature_width), nn.LayerNorm(feature_width),
                                                nn.GELU(), nn.Dropout(dropout))
            width += feature_width
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, len(self.classes)))

    def set_standardization(self, features: torch.Tensor) -> None:
        if self.n_features:
            self.feature_mean.copy_(features.mean(0))
            self.feature_std.copy_(features.std(0).clamp_min(1e-8))

    def forward(self, features: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """`features` (B, F); `audio` (B, C, T) at `sample_rate`, or its log-mel (B, C, n_mels, frames)."""
        z = run_stages(self.stem, self.blocks, self.mel_of(audio))
        if self.feature_branch is not None:
            f = ((features.float() - self.feature_mean) / self.feature_std).clamp(-5.0, 5.0)
            z = torch.cat([z, self.feature_branch(f)], dim=1)
        return self.head(z)

    def probabilities(self, features: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        if audio is None:
            raise ParameterError("the ResNet recognizer needs the audio (or its log-mel) beside the features")
        return calibrated_probabilities(self, self.forward(features, audio))


class StackedRecognizer(MelInput, nn.Module):
    """A multi-label recognizer `base` stacked under boosted trees: the trees read the clip's features and the
    base's raw logits (N, F + K) and give one raw score per class; `probabilities` are their sigmoids (the trees
    were fitted for probabilities: no temperature). Takes the same inputs as `base` (``input_kind``), including its
    log-mel front end for a ResNet base."""

    def __init__(self, base: FeatureClassifier | MelResNetClassifier, trees: BoostedTrees) -> None:
        nn.Module.__init__(self)
        if not getattr(base, "multilabel", False):
            raise ParameterError("only a multi-label recognizer can be stacked under trees")
        n_features = int(base.feature_mean.numel())
        if trees.n_inputs != n_features + len(base.classes) or trees.n_outputs != len(base.classes):
            raise ParameterError(f"trees for {trees.n_inputs} inputs and {trees.n_outputs} outputs do not fit a "
                                 f"recognizer of {n_features} features and {len(base.classes)} classes")
        self.base, self.trees = base, trees
        self.classes, self.multilabel, self.temperature = list(base.classes), True, 1.0
        self.input_kind = base.input_kind
        if isinstance(base, MelInput):
            self.set_mel_input(base.sample_rate, base.n_mels, base.n_fft, base.hop, base.audio_channels)

    def forward(self, features: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        """The trees' raw scores (B, K), float32, from the features (B, F) and (for a ResNet base) the audio or
        its log-mel."""
        if self.input_kind == "features+audio" and audio is None:
            raise ParameterError("the ResNet recognizer needs the audio (or its log-mel) beside the features")
        z = self.base(features) if self.input_kind == "features" else self.base(features, audio)
        return self.trees(torch.cat([features.double(), z.double()], dim=1)).float()

    def probabilities(self, features: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.forward(features, audio))


def calibrated_probabilities(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from a recognizer's raw `logits`: divided by its temperature, then softmax (or sigmoid for a
    multi-label model)."""
    logits = logits / model.temperature
    return torch.sigmoid(logits) if model.multilabel else torch.softmax(logits, dim=-1)


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

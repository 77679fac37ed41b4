"""What the recognition and estimation models read from an `fxlens data fxset` folder, one row per clip label.

- `split_features`: a hand-crafted feature set (`FEATURE_SETS`: the 163 AutoFX features or fxlens's 406) of
  every clip, cached beside the clips as ``features-<set>.pt``;
- `split_log_mels`: stereo log-mel spectrograms as a model computes them (`model.log_mel`), cached as float16
  ``logmel-<C>x<n_mels>-<n_fft>-<hop>.pt``;
- `load_clip`: one clip, fitted to the length its label records.

A clip file newer than its cache is recomputed; rows of unchanged clips are reused when a set grows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from fxlens import audio
from fxlens.atomic import atomic_path
from fxlens.data.fxset import read_labels
from fxlens.features.sets import FEATURE_SET, FEATURE_SETS, check_feature_set, compute_features
from fxlens.models.resnet import MelInput
from fxlens.pool import ordered_map


def _load_cache(cache: Path) -> dict:
    """A split cache's contents ({} when there is none)."""
    return torch.load(cache, weights_only=True) if cache.is_file() else {}


def _reusable_rows(cache: Path, cached: dict, key: str) -> dict[str, torch.Tensor]:
    """{clip id: cached row} of a split cache loaded from `cache` (`key`: its tensor) for the clips still there and
    unchanged: a set that grew, or was partly re-rendered, keeps the rows of clips whose file is not newer than the
    cache."""
    if not cached:
        return {}
    stamp = cache.stat().st_mtime
    known = {}
    for cid, row in zip(cached.get("clip_ids", []), cached.get(key, [])):
        wav = cache.parent / f"{cid}.flac"
        if wav.is_file() and wav.stat().st_mtime <= stamp:
            known[cid] = row
    return known


def _features_of_batch(job: tuple[list[str], str]) -> torch.Tensor:
    """The features of a batch of clip files, cut to the shortest (one job of `split_features`)."""
    paths, feature_set = job
    clips = [audio.load(p) for p in paths]
    T = min(c.shape[-1] for c in clips)
    return compute_features(torch.cat([c[..., :T] for c in clips]), audio.WORKING_SAMPLE_RATE, feature_set)


def split_features(fxset: str | os.PathLike, split: str, batch: int = 64,
                   progress: Callable[[int, int], None] | None = None,
                   feature_set: str = FEATURE_SET, workers: int = 1) -> tuple[torch.Tensor, list[dict]]:
    """Features (N, n) of every clip of a split, cached beside the clips (recomputed if clips change). `workers`
    > 1 computes the batches in that many processes (`fxlens.pool`); the rows are the same either way."""
    check_feature_set(feature_set)
    labels = read_labels(fxset, split)
    if not labels:
        return torch.zeros(0, len(FEATURE_SETS[feature_set][1])), []
    ids = [r["clip_id"] for r in labels]
    cache = Path(fxset) / split / f"features-{feature_set}.pt"
    cached = _load_cache(cache)
    known = _reusable_rows(cache, cached, "features")
    todo = [cid for cid in ids if cid not in known]
    if not todo and cached.get("clip_ids") == ids:  # nothing added, removed or re-rendered
        return cached["features"], labels
    parts = [todo[i:i + batch] for i in range(0, len(todo), batch)]
    jobs = [([str(Path(fxset) / split / f"{cid}.flac") for cid in part], feature_set) for part in parts]
    done = 0
    for part, rows in zip(parts, ordered_map(_features_of_batch, jobs, workers)):
        known.update(zip(part, rows))
        done += len(part)
        if progress:
            progress(done, len(todo))
    features = torch.stack([known[cid] for cid in ids]).float()
    with atomic_path(cache) as tmp:
        torch.save({"clip_ids": ids, "features": features}, tmp)
    return features, labels


def _log_mels_of_batch(job: tuple[str, list[dict], MelInput]) -> torch.Tensor:
    """The float16 log-mels of a batch of clips (one job of `split_log_mels`)."""
    fxset, records, front = job
    clips = [load_clip(fxset, r, front.sample_rate) for r in records]
    with torch.no_grad():
        return front.log_mel(torch.cat(clips)).to(torch.float16)


def split_log_mels(fxset: str | os.PathLike, split: str, model: MelInput, rows: list[int] | None = None,
                   batch: int = 32, progress: Callable[[int, int], None] | None = None, workers: int = 1
                   ) -> tuple[torch.Tensor, list[dict]]:
    """Log-mels (N, C, n_mels, frames), float16, of the clips of a split as `model` computes them; one row per label.

    Only the clips `rows` (label indices; default all) are computed, the other rows are zero. Cached beside the
    clips (``logmel-<C>x<n_mels>-<n_fft>-<hop>.pt``, float16: the mels are in [-1, 1]); a clip file newer than the
    cache is recomputed. Clips are fitted to the length their label records. `workers` > 1 computes the batches in
    that many processes (`fxlens.pool`).
    """
    labels = read_labels(fxset, split)
    if not labels:
        return torch.zeros(0, model.audio_channels, model.n_mels, 1, dtype=torch.float16), []
    ids = [r["clip_id"] for r in labels]
    rows = list(range(len(labels))) if rows is None else list(rows)
    cache = Path(fxset) / split / f"logmel-{model.audio_channels}x{model.n_mels}-{model.n_fft}-{model.hop}.pt"
    known = _reusable_rows(cache, _load_cache(cache), "mels")
    todo = [i for i in rows if ids[i] not in known]
    front = MelInput()  # the model's front end alone: what a worker process needs of it
    front.set_mel_input(model.sample_rate, model.n_mels, model.n_fft, model.hop, model.audio_channels)
    parts = [todo[k:k + batch] for k in range(0, len(todo), batch)]
    jobs = [(str(fxset), [{**labels[i], "split": split} for i in part], front) for part in parts]
    done = 0
    for part, mels in zip(parts, ordered_map(_log_mels_of_batch, jobs, workers)):
        known.update(zip((ids[i] for i in part), mels))
        done += len(part)
        if progress:
            progress(done, len(todo))
    if todo:
        with atomic_path(cache) as tmp:
            kept = [cid for cid in ids if cid in known]
            torch.save({"clip_ids": kept, "mels": torch.stack([known[c] for c in kept])}, tmp)
    shape = next(iter(known.values())).shape if known else (model.audio_channels, model.n_mels, 1)
    out = torch.zeros((len(labels),) + tuple(shape), dtype=torch.float16)
    for i in rows:
        out[i] = known[ids[i]]
    return out, labels


def load_clip(fxset, record: dict, sample_rate: int) -> torch.Tensor:
    """An fxset clip (1, 2, T), fitted to the length its label records."""
    n = int(round(float(record["seconds"]) * sample_rate))
    x = audio.load(Path(fxset) / record["split"] / f"{record['clip_id']}.flac", sample_rate=sample_rate)
    return torch.nn.functional.pad(x, (0, max(n - x.shape[-1], 0)))[..., :n]

"""Train the Fx-Encoder++ model (`fxlens train encoder`): contrastive effects embeddings, the audio query encoder
and the extractor, in one Lightning Fabric loop that runs the same on a CPU, one GPU or several (DDP).

Objective per step (paper eq. 3-4), on a batch of `fxlens.data.pairs`:
- mixture NT-Xent (tau 0.1) between the embeddings of mixtures A and B; the batch's other mixtures and its hard
  negatives (same music, other effects) are the negatives;
- instrument NT-Xent on extracted embeddings: for each instrument j of the batch, extractor(E(A_i), q_ij) against
  extractor(E(B_i), q'_ij), where a query is the instrument's MiniLM text vector (probability `text_query_prob`)
  or the audio query encoder's vector of the instrument's stem in the *other* mixture (other music, same effects),
  with dropout p ~ U(0.75, 0.95) on the query (paper; `query_dropout`). fxlens's other target (`inst_target`):
  "stem", the encoder's embedding of stem j alone in the other mixture; with `inst_negatives` (fxlens's addition,
  "stem" target only) the other stems of every pair's other mixture are negatives of each extraction too. Why: the
  two mixtures of a pair share every stem's chain, and the batch's other items differ in all of them, so without
  those negatives the mixture embedding alone finds stem j's partner and the extractor may ignore the query (it
  did: docs/benchmarks.md, instrument-wise rows); stem k of the same pair differs from stem j only in its chain,
  so telling them apart needs the query;
- lambda_inst rises linearly from 0 to `lambda_inst` between `curriculum[0]` and `curriculum[1]` of the run,
  lambda_mix = 1 - lambda_inst (paper: 1 -> 0.8 / 0.2);
- audio query alignment: cross-entropy of the query encoder's vector of each stem against the text vectors of all
  instruments (temperature 0.1): CLAP-style alignment on rendered stems, fxlens's offline stand-in for CLAP.

Full-mix batches (`tracks`, fxlens's addition): batches saved from a ``tracks`` dataset (real recordings without
stems, `fxlens.data.stems.TrackStems`: `fxlens data music`, then `fxlens data pairs`) are interleaved with the
rendered ones, a share `tracks_share` of the steps, drawn per step under the seed. They hold one "stem", the whole
mix, which is no instrument: those steps train the mixture objective alone (NT-Xent with their hard negatives); no
query, instrument or stem-pair loss. Why: the rendered soundfont songs do not teach what real, produced recordings
under a further chain sound like, and the benchmark's real recordings are where the learned embedding's lead over
hand-made features shrinks (docs/benchmarks.md).

Data come either on the fly (`PairBuilder` in DataLoader workers, log-mels computed there) or from batches saved
by `precompute_batches` (`fxlens data pairs`): identical batches for the same seed. Every step takes a random
`crop_seconds` window of each clip's log-mel (A and B cropped independently) and swaps left/right on a random half
of the items - free augmentation that leaves the effects alone.

AFx-Rep-style objective (`objective="classify"`, a baseline of the benchmark issue): the same encoder, data and
schedule, trained instead to classify which pool effects sit on each instrument of a mixture (multi-label, one
sigmoid per (instrument, effect), binary cross-entropy over the instruments present) through a small head on the
embedding. AFx-Rep (ST-ITO) classifies which plugin and preset separate a clip from its processed copy; fxlens's
pairs record which effects each stem's chain holds but not presets, and hold no dry copy, so the classification is
of the effects present - its nearest equivalent on these data. No query encoder or extractor is trained.

Probability scheduling: every item's mixture loss is credited to the effects in its chains; every
`schedule_every` steps the running mean loss per effect is min-max scaled to [0.1, 1.0] and becomes that effect's
application probability for the batches built next (FX-Encoder's rule on its quantity; the paper measured
single-effect probe batches, which would cost extra rendering on a CPU). Saved batches are fixed, so there the
difficulty is logged only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fxlens import __version__
from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.data.pairs import PAIR_POOL, POSITIVES, PairBatch, PairBuilder
from fxlens.data.stems import open_dataset, taxonomy
from fxlens.errors import FxlensError
from fxlens.features.mel import log_mel
from fxlens.models.checkpoint import save_checkpoint
from fxlens.models.encoder import (EMBED_DIM, ENCODER_PRESETS, EXTRACTOR_INPUTS, SAMPLE_RATE, FxEncoder, describe,
                                   load_encoder, match_power)
from fxlens.pool import ordered_map

MEL_KEYS = ("mix_a", "mix_b", "negatives", "stems_a", "stems_b")
OBJECTIVES = ("contrastive", "classify")
# what an extracted embedding is pulled towards: "mixture" (the paper) the extracted embedding of the other mixture of
# the pair; "stem" the encoder's embedding of the queried stem alone in the other mixture (same chain, other song)
INST_TARGETS = ("mixture", "stem")
EXTRACTOR_WORDS = {"embedding": "embedding", "hidden": "hidden layer", "statistics": "band statistics",
                   "film": "band statistics, scaled and shifted by the query (FiLM), through the encoder's layers",
                   "mask": "log-mel, attenuated in time and frequency by the query, through the whole encoder"}


@dataclass
class EncoderTrainConfig:
    data_root: str
    out_dir: str
    preset: str = "small"
    steps: int = 2000
    batch_size: int = 16
    seconds: float = 2.0
    crop_seconds: float = 1.5
    max_instruments: int = 4
    hard_negatives: int = 2
    use_hard_negatives: bool = True
    positives: str = "same-song"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    tau: float = 0.1
    lambda_inst: float = 0.2
    stem_weight: float = 0.0  # weight of an NT-Xent on the stems themselves (fxlens's addition; 0: the paper)
    inst_target: str = "mixture"  # INST_TARGETS
    inst_negatives: bool = False  # the other stems as negatives of each extraction ("stem" target; fxlens's addition)
    curriculum: tuple[float, float] = (0.2, 0.5)
    query_dropout: tuple[float, float] = (0.75, 0.95)
    freeze_query_encoder: bool = False  # keep the audio query encoder of `init` as it is (no query loss)
    freeze_encoder: bool = False  # keep the effects encoder of `init` as it is: train the extractor alone
    extractor_input: str = "embedding"  # EXTRACTOR_INPUTS: what the extractor reads of a mixture
    recon_weight: float = 0.0  # "mask" extractor: weight of the L1 between the masked log-mel and the stem's
    text_query_prob: float = 0.5
    schedule_every: int = 200
    log_every: int = 10
    val_every: int = 250
    val_batches: int = 3
    ckpt_every: int = 250
    precomputed: str | None = None
    tracks: str | None = None  # saved full-mix batches (a tracks dataset) interleaved with `precomputed`
    tracks_share: float = 0.25  # the share of steps that take a full-mix batch
    workers: int = 1
    threads: int | None = None
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    resume: bool = True
    objective: str = "contrastive"
    init: str | None = None  # an encoder checkpoint folder whose weights start the run (fine-tuning)
    command: str | None = field(default=None, repr=False)

    def batch_options(self) -> dict:
        """What decides the batches besides the seed (`_builder`'s options; `fxlens data pairs` saves the same)."""
        return {"batch_size": self.batch_size, "seconds": self.seconds, "max_instruments": self.max_instruments,
                "hard_negatives": self.hard_negatives, "positives": self.positives}

    def check(self) -> None:
        if self.preset not in ENCODER_PRESETS:
            raise FxlensError(f"unknown preset '{self.preset}' (choose {', '.join(ENCODER_PRESETS)})")
        if self.steps < 1 or self.batch_size < 2 or not 0 < self.crop_seconds <= self.seconds:
            raise FxlensError("need steps >= 1, batch size >= 2 and 0 < crop seconds <= seconds")
        if not 0.0 <= self.lambda_inst < 1.0 or not 0.0 <= self.text_query_prob <= 1.0:
            raise FxlensError("lambda_inst must be in [0, 1) and text_query_prob in [0, 1]")
        if not 0.0 <= self.stem_weight <= 10.0:
            raise FxlensError("stem_weight must be in [0, 10]")
        if self.positives not in POSITIVES:
            raise FxlensError(f"unknown positives '{self.positives}' (choose {', '.join(POSITIVES)})")
        if self.inst_target not in INST_TARGETS:
            raise FxlensError(f"unknown instrument target '{self.inst_target}' (choose {', '.join(INST_TARGETS)})")
        if self.inst_negatives and self.inst_target != "stem":
            raise FxlensError("--inst-negatives needs --inst-target stem (the negatives are stems alone)")
        lo, hi = self.query_dropout
        if not 0.0 <= lo <= hi < 1.0:
            raise FxlensError(f"query dropout must be 0 <= low <= high < 1, got {lo:g}..{hi:g}")
        if self.freeze_query_encoder and not self.init and self.lambda_inst > 0:
            # with --lambda-inst 0 nothing uses the query encoder (the mixture-only FX-Encoder-style baseline)
            raise FxlensError("freezing the query encoder needs --init (a checkpoint whose query encoder is trained), "
                              "unless --lambda-inst 0")
        if self.extractor_input not in EXTRACTOR_INPUTS:
            raise FxlensError(f"unknown extractor input '{self.extractor_input}' (choose {', '.join(EXTRACTOR_INPUTS)})")
        if not 0.0 <= self.recon_weight <= 100.0:
            raise FxlensError(f"--recon-weight must be in [0, 100], got {self.recon_weight:g}")
        if self.recon_weight > 0 and self.extractor_input != "mask":
            raise FxlensError("--recon-weight compares a masked log-mel with the stem's: "
                              "it needs --extractor-input mask")
        if self.freeze_encoder:
            # the extractor alone learns: the loss is the instrument loss, nothing else has a gradient
            if not (self.init and self.freeze_query_encoder):
                raise FxlensError("--freeze-encoder trains the extractor alone: it needs --init (a trained encoder and "
                                  "query encoder) and --freeze-query-encoder")
            if self.objective != "contrastive" or self.tracks is not None or self.stem_weight > 0:
                raise FxlensError("--freeze-encoder trains the extractor alone: not with --objective classify, "
                                  "--tracks (full mixes train no extractor) or --stem-weight")
        if self.objective not in OBJECTIVES:
            raise FxlensError(f"unknown objective '{self.objective}' (choose {', '.join(OBJECTIVES)})")
        if self.tracks is not None:
            if self.precomputed is None:
                raise FxlensError("--tracks needs --precomputed (the rendered batches it is interleaved with)")
            if self.objective != "contrastive":
                raise FxlensError("--tracks trains the contrastive mixture objective; not with --objective classify")
            if not 0.0 < self.tracks_share < 1.0:
                raise FxlensError(f"--tracks-share must be between 0 and 1 (exclusive), got {self.tracks_share:g}")


# ------------------------------------------------------------------------------------------------------------------
# Batches as log-mels
# ------------------------------------------------------------------------------------------------------------------


def batch_mels(batch: PairBatch, n_mels: int = 64) -> dict:
    """The log-mels the networks read, float16 (stems as (B, k, 2, M, N)), plus the labels of the batch."""
    out: dict = {}
    for key in MEL_KEYS:
        x = getattr(batch, key)
        flat = x.reshape(-1, 2, x.shape[-1])
        mel = (log_mel(flat, SAMPLE_RATE, n_mels=n_mels) if flat.shape[0]
               else torch.zeros(0, 2, n_mels, 1, device=x.device))
        out[key] = mel.reshape(*x.shape[:-2], *mel.shape[1:]).half()
    out["active"] = batch.active
    out["negative_of"] = batch.negative_of
    out["instruments"] = list(batch.instruments)
    out["effects"] = list(batch.effects)
    return out


def _builder(data_root: str, split: str, cfg: Mapping, seed: int, device: str | torch.device = "cpu") -> PairBuilder:
    ds = open_dataset(data_root, split=split)
    return PairBuilder(ds, batch_size=cfg["batch_size"], seconds=cfg["seconds"], max_instruments=cfg["max_instruments"],
                       hard_negatives=cfg["hard_negatives"], positives=cfg.get("positives", "same-song"), seed=seed,
                       device=device)


class _Batches(torch.utils.data.Dataset):
    """DataLoader view (batch_size=None): a request (index, probabilities) -> `batch_mels` of that batch."""

    def __init__(self, data_root: str, split: str, cfg: Mapping, seed: int, device: str | torch.device = "cpu") -> None:
        self.args = (data_root, split, dict(cfg), seed, device)
        self.builder: PairBuilder | None = None

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, request) -> dict:
        index, probs = request
        if self.builder is None:  # built in the worker process
            self.builder = _builder(*self.args)
        return batch_mels(self.builder.batch(index, dict(probs) if probs else None))


class _Requests(torch.utils.data.Sampler):
    """Endless (index, probabilities) requests; this rank's share of the indices. Runs in the main process, so the
    probabilities it sends follow the scheduler."""

    def __init__(self, start: int, rank: int, world: int, probabilities: dict[str, float]) -> None:
        self.start, self.rank, self.world, self.probabilities = start, rank, world, probabilities

    def __iter__(self):
        i = self.start
        while True:
            yield (i * self.world + self.rank, tuple(sorted(self.probabilities.items())))
            i += 1


class _Saved(torch.utils.data.Dataset):
    def __init__(self, folder: Path, indices: Sequence[int]) -> None:
        self.folder, self.indices = folder, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return torch.load(saved_path(self.folder, self.indices[i]), weights_only=True)


def saved_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"batch-{int(index):07d}.pt"


def saved_indices(folder: str | os.PathLike) -> list[int]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("batch-*.pt"))


def _saved_options(folder: str | os.PathLike) -> dict | None:
    """The options a batch folder was made with (its pairs.json), None when it has none."""
    meta_path = Path(folder) / "pairs.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    meta.setdefault("positives", "same-song")  # folders saved before the option existed
    return meta


def check_saved_batches(cfg: EncoderTrainConfig) -> None:
    """The saved batches exist and were made with the training run's batch options (full-mix batches: the same
    but for the instrument count and the seed, which they do not share with the rendered ones)."""
    folders = [(cfg.precomputed, {**cfg.batch_options(), "seed": cfg.seed})]
    if cfg.tracks is not None:
        folders.append((cfg.tracks, {k: v for k, v in cfg.batch_options().items() if k != "max_instruments"}))
    for folder, want in folders:
        if not saved_indices(folder):
            raise FxlensError(f"no saved batches in '{folder}' (make them with `fxlens data pairs`)")
        meta = _saved_options(folder) or {}
        wrong = {k: (meta[k], v) for k, v in want.items() if k in meta and meta[k] != v}
        if wrong:
            raise FxlensError(f"the batches in '{folder}' were made with other options than this run's: "
                              + ", ".join(f"{k} {a} (run: {b})" for k, (a, b) in wrong.items()))


def _precompute_worker(args) -> int:
    data_root, cfg, seed, folder, indices, threads = args
    torch.set_num_threads(threads)
    builder = _builder(data_root, "train", cfg, seed)
    for i in indices:
        path = saved_path(folder, i)
        if path.exists():
            continue
        with atomic_path(path) as tmp:
            torch.save(batch_mels(builder.batch(i)), tmp)
    return len(indices)


def precompute_batches(data_root: str | os.PathLike, folder: str | os.PathLike, n_batches: int, batch_size: int = 16,
                       seconds: float = 2.0, max_instruments: int = 4, hard_negatives: int = 2, seed: int = 0,
                       workers: int = 1, positives: str = "same-song",
                       progress: Callable[[int, int], None] | None = None) -> int:
    """Build training batches 0..n_batches-1 of the train split and save their log-mels to `folder` (resumable:
    batches already there are kept). The options must match the training run's. Returns the number present."""
    folder = Path(folder)
    cfg = {"batch_size": batch_size, "seconds": seconds, "max_instruments": max_instruments,
           "hard_negatives": hard_negatives, "positives": positives}
    _builder(str(data_root), "train", cfg, seed)  # fail on a bad dataset before writing anything
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"seed": seed, **cfg}
    old = _saved_options(folder)
    if old is None:
        write_text_atomic(folder / "pairs.json", json.dumps(meta, indent=1) + "\n")
    elif old != meta:
        raise FxlensError(f"{folder} holds batches made with other options ({old}); use another folder")
    todo = [i for i in range(n_batches) if not saved_path(folder, i).exists()]
    chunks = [todo[i: i + 4] for i in range(0, len(todo), 4)]
    done = n_batches - len(todo)
    if progress:
        progress(done, n_batches)
    for n in ordered_map(_precompute_worker, [(str(data_root), cfg, seed, folder, c, 1) for c in chunks], workers):
        done += n
        if progress:
            progress(done, n_batches)
    return len(saved_indices(folder))


# ------------------------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------------------------


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1, extra: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent (SimCLR) of L2-normalized views a, b (B, D): item i of a and of b are positives, every other view
    (and `extra`, (H, D), used as negatives only) a negative. Returns (per-anchor losses (2B,), top-1 hits (2B,))."""
    B = a.shape[0]
    z = torch.cat([a, b])
    cands = z if extra is None or extra.shape[0] == 0 else torch.cat([z, extra])
    logits = z @ cands.T / tau
    logits[torch.arange(2 * B), torch.arange(2 * B)] = float("-inf")
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(a.device)
    losses = F.cross_entropy(logits, target, reduction="none")
    hits = logits.argmax(dim=1) == target
    return losses, hits


def lambda_inst_at(step: int, steps: int, final: float, curriculum: tuple[float, float]) -> float:
    """Weight of the instrument loss at `step`: 0 until curriculum[0] of the run, linear to `final` at curriculum[1]."""
    t = step / max(steps, 1)
    lo, hi = curriculum
    if t <= lo:
        return 0.0
    if t >= hi:
        return final
    return final * (t - lo) / max(hi - lo, 1e-9)


def lr_at(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0, as a factor of the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(steps - warmup, 1), 1.0)))


def _crop(mel: torch.Tensor, frames: int, gen: torch.Generator, start: int | None = None) -> tuple[torch.Tensor, int]:
    """`frames` frames of `mel` from `start` (drawn from `gen` when None), and the start."""
    n = mel.shape[-1]
    if n <= frames:
        return mel, 0
    if start is None:
        start = int(torch.randint(0, n - frames + 1, (), generator=gen))
    return mel[..., start: start + frames], start


def _swap(mel: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Swap left/right channels of the items where `flip` (B,) is set; mel (B, ..., 2, M, N)."""
    if mel.shape[0] == 0:
        return mel
    ch = mel.dim() - 3
    f = flip.view(-1, *([1] * (mel.dim() - 1))).to(mel.device)
    return torch.where(f, mel.flip(ch), mel)


class EncoderObjective:
    """The losses and metrics of one batch (shared by training and validation)."""

    def __init__(self, model: FxEncoder, cfg: EncoderTrainConfig, text_index: Mapping[str, int]) -> None:
        self.model, self.cfg, self.text_index = model, cfg, text_index
        self.crop_frames = 1 + int(cfg.crop_seconds * SAMPLE_RATE) // 512

    def __call__(self, batch: Mapping, lambda_inst: float, gen: torch.Generator, device: torch.device,
                 train: bool = True) -> tuple[torch.Tensor, dict, torch.Tensor]:
        m, cfg = self.model, self.cfg
        # each key its own crop; a mask extractor's reconstruction compares a mixture with its stems frame by frame,
        # so there the stems take their mixture's crop
        aligned = {"stems_a": "mix_a", "stems_b": "mix_b"} if cfg.extractor_input == "mask" else {}
        mels, starts = {}, {}
        for k in MEL_KEYS:
            mels[k], starts[k] = _crop(batch[k].to(device).float(), self.crop_frames, gen, starts.get(aligned.get(k)))
        B = mels["mix_a"].shape[0]
        if train:
            flip = torch.rand(B, generator=gen) < 0.5
            for k in ("mix_a", "mix_b", "stems_a", "stems_b"):
                mels[k] = _swap(mels[k], flip)
        H = mels["negatives"].shape[0]
        if cfg.freeze_encoder:
            m.encoder.eval()  # batch norm statistics and dropout as in the checkpoint
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.freeze_encoder):
            e, src = m.encoder.represent(torch.cat([mels["mix_a"], mels["mix_b"], mels["negatives"]]),
                                         m.extractor_input)
        e_a, e_b, e_neg = e[:B], e[B: 2 * B], e[2 * B:]
        src_a, src_b = src[:B], src[B: 2 * B]  # what the extractor reads of each mixture
        mix_losses, mix_hits = nt_xent(e_a, e_b, cfg.tau, e_neg if cfg.use_hard_negatives else None)
        names = batch["instruments"]
        if any(n not in self.text_index for n in names):  # a full-mix batch (tracks): the mixture objective alone
            loss = mix_losses.mean()
            metrics = {"loss": float(loss.detach()), "mix_loss": float(loss.detach()),
                       "mix_acc": float(mix_hits.float().mean()), "hard_negatives": H, "full_mix": 1.0}
            return loss, metrics, (mix_losses[:B] + mix_losses[B:]).detach() / 2
        # audio query encoder: each stem against every instrument's text vector
        k = mels["stems_a"].shape[1]
        labels = torch.tensor([self.text_index[n] for n in names], device=device).repeat(B)
        text = m.text.vectors  # (n_instruments, 384)
        stems = torch.cat([mels["stems_a"].reshape(B * k, *mels["stems_a"].shape[2:]),
                           mels["stems_b"].reshape(B * k, *mels["stems_b"].shape[2:])])
        query_metrics, query_loss = {}, None
        if not cfg.freeze_query_encoder:
            q_audio = m.query_encoder.embed_mel(stems)  # (2Bk, 384)
        elif not train:  # frozen, validation: every stem's vector (the query accuracy is reported)
            m.query_encoder.eval()  # its batch norm statistics stay those of the checkpoint
            with torch.no_grad():
                q_audio = m.query_encoder.embed_mel(stems)
        else:  # frozen, training: only the vectors a step uses, computed below (the CNN is most of a step's time)
            m.query_encoder.eval()
            q_audio = None
        if q_audio is not None:
            q_logits = q_audio @ text.T / 0.1
            q_labels = labels.repeat(2)
            query_loss = F.cross_entropy(q_logits, q_labels)
            query_metrics = {"query_loss": float(query_loss.detach()),
                             "query_acc": float((q_logits.argmax(1) == q_labels).float().mean())}
        # the processed stems alone: the instrument target "stem" and the stem pairs
        e_s = None
        if cfg.inst_target == "stem" or (cfg.stem_weight > 0 and k > 1):
            stems_in = stems
            if cfg.extractor_input == "mask":  # at their mixture's level, as the masked mixtures are embedded
                stems_in = match_power(stems, torch.cat([mels["mix_a"].repeat_interleave(k, 0),
                                                         mels["mix_b"].repeat_interleave(k, 0)]))
            with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.freeze_encoder):
                e_s = m.encoder.embed_mel(stems_in)
        # instrument-wise NT-Xent through the extractor
        inst_loss = torch.zeros((), device=device)
        recon_loss = torch.zeros((), device=device)
        inst_hits = []
        if lambda_inst > 0 or not train:
            if q_audio is not None:
                qa, qb = q_audio[: B * k].detach().reshape(B, k, -1), q_audio[B * k:].detach().reshape(B, k, -1)
            p_drop = float(torch.empty(()).uniform_(*cfg.query_dropout, generator=gen)) if train else 0.0
            if e_s is not None:  # (B, k, D): each pair's stems alone, mixture A's and mixture B's
                all_a, all_b = e_s[: B * k].reshape(B, k, -1), e_s[B * k:].reshape(B, k, -1)
            for j, name in enumerate(names):
                t = text[self.text_index[name]].expand(B, -1)
                use_text = (torch.rand(B, 1, generator=gen) < cfg.text_query_prob).to(device) if train else \
                    torch.ones(B, 1, dtype=torch.bool, device=device)
                if q_audio is not None:
                    qa_j, qb_j = qa[:, j], qb[:, j]
                else:  # frozen query encoder (eval mode: each item's vector is independent of the others)
                    qa_j, qb_j = torch.zeros(B, text.shape[1], device=device), torch.zeros(B, text.shape[1], device=device)
                    rows = ~use_text[:, 0]
                    if rows.any():
                        with torch.no_grad():
                            qa_j[rows] = m.query_encoder.embed_mel(mels["stems_a"][rows, j])
                            qb_j[rows] = m.query_encoder.embed_mel(mels["stems_b"][rows, j])
                q_for_a = torch.where(use_text, t, qb_j)  # the query comes from the other mixture's stem
                q_for_b = torch.where(use_text, t, qa_j)
                if p_drop > 0:
                    q_for_a, q_for_b = F.dropout(q_for_a, p_drop), F.dropout(q_for_b, p_drop)
                if cfg.extractor_input == "mask":  # the masked log-mels are kept for the reconstruction loss
                    z_a, masked_a = m.extract_masked(src_a, q_for_a)
                    z_b, masked_b = m.extract_masked(src_b, q_for_b)
                    if cfg.recon_weight > 0:
                        recon = F.l1_loss(masked_a, mels["stems_a"][:, j]) + F.l1_loss(masked_b, mels["stems_b"][:, j])
                        recon_loss = recon_loss + recon / (2 * k)
                else:
                    z_a, z_b = m.extract(src_a, q_for_a), m.extract(src_b, q_for_b)
                if cfg.inst_target == "stem":
                    # each mixture's extraction against stem j alone in the other mixture: the mixtures of a pair
                    # share every stem's chain, so against each other's extraction the query could be ignored
                    s_a, s_b = all_a[:, j], all_b[:, j]
                    neg_a = neg_b = None
                    if cfg.inst_negatives and k > 1:  # the other stems, same pairs: only the query separates them
                        others = [o for o in range(k) if o != j]
                        neg_a = all_a[:, others].reshape(-1, all_a.shape[-1])
                        neg_b = all_b[:, others].reshape(-1, all_b.shape[-1])
                    la, hits = nt_xent(z_a, s_b, cfg.tau, neg_b)
                    lb, _ = nt_xent(z_b, s_a, cfg.tau, neg_a)
                    losses = torch.cat([la, lb])
                else:
                    losses, hits = nt_xent(z_a, z_b, cfg.tau)
                inst_loss = inst_loss + losses.mean() / k
                inst_hits.append(hits.float().mean())
        # the stems of mixtures of 2+ instruments as positive pairs of their own (each stem's chain on two songs)
        stem_loss = torch.zeros((), device=device)
        if cfg.stem_weight > 0 and k > 1:
            stem_loss = nt_xent(e_s[: B * k], e_s[B * k:], cfg.tau)[0].mean()
        mix_loss = mix_losses.mean()
        loss = (1.0 - lambda_inst) * mix_loss + lambda_inst * (inst_loss + cfg.recon_weight * recon_loss) \
            + cfg.stem_weight * stem_loss
        if not cfg.freeze_query_encoder:
            loss = loss + query_loss
        metrics = {"loss": float(loss.detach()), "mix_loss": float(mix_loss.detach()), "mix_acc": float(mix_hits.float().mean()),
                   **query_metrics, "inst_loss": float(inst_loss.detach()), "lambda_inst": lambda_inst, "hard_negatives": H,
                   "stem_loss": float(stem_loss.detach()), "recon_loss": float(recon_loss.detach())}
        if inst_hits:
            metrics["inst_acc"] = float(torch.stack(inst_hits).mean())
        item_loss = (mix_losses[:B] + mix_losses[B:]).detach() / 2
        return loss, metrics, item_loss


class EffectHead(torch.nn.Module):
    """The AFx-Rep-style objective's classifier: embedding (B, D) -> logits (B, instruments, effects)."""

    def __init__(self, dim: int, n_instruments: int, n_effects: int, hidden: int = 256) -> None:
        super().__init__()
        self.shape = (n_instruments, n_effects)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, n_instruments * n_effects))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).view(e.shape[0], *self.shape)


class ClassifyObjective:
    """AFx-Rep-style losses of one batch: which pool effects are on which instrument (see the module docstring).
    The mixture NT-Xent and in-batch accuracy are computed without gradient, to compare runs on one scale."""

    def __init__(self, model: FxEncoder, head: EffectHead, cfg: EncoderTrainConfig, text_index: Mapping[str, int]) -> None:
        self.model, self.head, self.cfg, self.text_index = model, head, cfg, text_index
        self.crop_frames = 1 + int(cfg.crop_seconds * SAMPLE_RATE) // 512

    def __call__(self, batch: Mapping, lambda_inst: float, gen: torch.Generator, device: torch.device,
                 train: bool = True) -> tuple[torch.Tensor, dict, torch.Tensor]:
        mels = {k: _crop(batch[k].to(device).float(), self.crop_frames, gen)[0] for k in ("mix_a", "mix_b")}
        B = mels["mix_a"].shape[0]
        if train:
            flip = torch.rand(B, generator=gen) < 0.5
            mels = {k: _swap(v, flip) for k, v in mels.items()}
        e = self.model.encoder.embed_mel(torch.cat([mels["mix_a"], mels["mix_b"]]))
        n_inst, n_fx = self.head.shape
        # targets (B, instruments, effects) and the mask of the instruments present
        rows = torch.tensor([self.text_index[n] for n in batch["instruments"]], device=device)
        cols = [i for i, name in enumerate(batch["effects"]) if name in PAIR_POOL]
        fx_index = torch.tensor([PAIR_POOL.index(batch["effects"][i]) for i in cols], device=device)
        target = torch.zeros(B, n_inst, n_fx, device=device)
        active = batch["active"].to(device).float()[:, :, cols]  # (B, k, E')
        target[:, rows.unsqueeze(1), fx_index.unsqueeze(0)] = active
        mask = torch.zeros(n_inst, device=device)
        mask[rows] = 1.0
        logits = self.head(e)
        target2 = torch.cat([target, target])
        bce = F.binary_cross_entropy_with_logits(logits, target2, reduction="none")  # (2B, I, E)
        per_item = (bce * mask[None, :, None]).sum(dim=(1, 2)) / (mask.sum() * n_fx)
        loss = per_item.mean()
        with torch.no_grad():
            hits = ((logits > 0).float() == target2).float() * mask[None, :, None]
            acc = hits.sum() / (mask.sum() * n_fx * 2 * B)
            mix_losses, mix_hits = nt_xent(e[:B], e[B:], self.cfg.tau)
        metrics = {"loss": float(loss.detach()), "cls_loss": float(loss.detach()), "cls_acc": float(acc),
                   "mix_loss": float(mix_losses.mean()), "mix_acc": float(mix_hits.float().mean())}
        item_loss = (per_item[:B] + per_item[B:]).detach() / 2
        return loss, metrics, item_loss


class Difficulty:
    """Running mean mixture loss per effect (items credited to every effect in their stems' chains)."""

    def __init__(self, effects: Sequence[str], momentum: float = 0.9) -> None:
        self.effects, self.momentum = list(effects), momentum
        self.value: dict[str, float | None] = {e: None for e in self.effects}

    def update(self, item_loss: torch.Tensor, active: torch.Tensor, names: Sequence[str]) -> None:
        """item_loss (B,); active (B, k, E) effects of each stem's chain; names: the E effects of `active`."""
        has = active.any(dim=1).float().cpu()  # (B, E): the item's mixture holds the effect
        loss = item_loss.float().cpu()
        for i, e in enumerate(names):
            if e not in self.value:
                continue
            w = has[:, i]
            if w.sum() > 0:
                v = float((loss * w).sum() / w.sum())
                old = self.value[e]
                self.value[e] = v if old is None else self.momentum * old + (1 - self.momentum) * v

    def probabilities(self, low: float = 0.1, high: float = 1.0) -> dict[str, float] | None:
        vals = {e: v for e, v in self.value.items() if v is not None}
        if len(vals) < 2:
            return None
        lo, hi = min(vals.values()), max(vals.values())
        span = max(hi - lo, 1e-9)
        return {e: low + (high - low) * (v - lo) / span for e, v in vals.items()}


# ------------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------------


def start_from(model: FxEncoder, folder: str | os.PathLike) -> None:
    """Load the weights of an encoder checkpoint folder into `model` (same preset and instruments)."""
    source = load_encoder(folder)
    if source.preset != model.preset:
        raise FxlensError(f"{folder}: a '{source.preset}' encoder cannot start a '{model.preset}' run")
    state = source.state_dict()
    if source.extractor_input != model.extractor_input:  # another extractor input: the extractor starts afresh
        state = {k: v for k, v in state.items() if not k.startswith("extractor.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("extractor.")})
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FxlensError(f"{folder}: its weights do not fit this run's model ({str(e).splitlines()[0]})") from None


def _dropout_note(dropout: tuple[float, float]) -> str:
    """The model card's words for a query dropout other than the paper's."""
    if dropout == (0.75, 0.95):
        return ""
    return "; no query dropout" if dropout == (0.0, 0.0) else f"; query dropout {dropout[0]:g}-{dropout[1]:g}"


def _model_card(cfg: EncoderTrainConfig, model: FxEncoder, history: dict, elapsed: float, device: str) -> str:
    params = describe(model)
    last = history["train"][-1] if history["train"] else {}
    val = history["val"][-1] if history["val"] else {}
    n_saved = history.get("saved_batches", 0)
    share = cfg.tracks_share if cfg.tracks else 0.0
    data = (f"{n_saved} batches saved in `{cfg.precomputed}` by `fxlens data pairs` (each read "
            f"~{history['step'] * (1 - share) / max(n_saved, 1):.1f} times)" if cfg.precomputed else
            "batches built on the fly")
    if cfg.tracks:
        n_tracks = history.get("saved_track_batches", 0)
        data += (f"; and {n_tracks} full-mix batches of real tracks saved in `{cfg.tracks}` (a share "
                 f"{cfg.tracks_share:g} of the steps, each read ~{history['step'] * share / max(n_tracks, 1):.1f} "
                 "times; mixture objective only)")
    if cfg.objective == "classify":
        title = f"# AFx-Rep-style effects classifier `{cfg.preset}` (fxlens {__version__}; a benchmark baseline)"
        what = ("Effects embeddings (128-d, L2-normalized) for mixtures, trained to classify which pool effects are on "
                "each instrument (multi-label) - no contrastive loss, no query encoder or extractor (untrained here). "
                "Trained by fxlens's own trainer on fxlens's rendered dry multitracks.")
        objective = "objective: effect classification (binary cross-entropy per instrument and effect)"
    else:
        title = f"# Fx-Encoder++ `{cfg.preset}` (fxlens {__version__})"
        what = ("Effects embeddings (128-d, L2-normalized) for mixtures, and per instrument through the extractor with "
                "a text or audio query. Trained by fxlens's own trainer on fxlens's rendered dry multitracks.")
        weights = ("effects encoder frozen (from the start weights): the extractor alone trained, on the instrument "
                   "loss (no mixture loss)" if cfg.freeze_encoder else
                   f"lambda_inst 0 -> {cfg.lambda_inst:g} over {cfg.curriculum[0]:.0%}-{cfg.curriculum[1]:.0%}")
        objective = (f"tau {cfg.tau:g}; {weights}"
                     + (f"; the extractor reads the mixture's {EXTRACTOR_WORDS[cfg.extractor_input]}"
                        if cfg.extractor_input != "embedding" else "")
                     + (f"; plus {cfg.recon_weight:g} x the L1 of the masked log-mel to the queried stem's"
                        if cfg.recon_weight else "")
                     + (f"; stem pairs weight {cfg.stem_weight:g}" if cfg.stem_weight else "")
                     + ("; instrument target: the queried stem alone" if cfg.inst_target == "stem" else "")
                     + ("; the other stems as negatives of each extraction" if cfg.inst_negatives else "")
                     + _dropout_note(tuple(cfg.query_dropout))
                     + (("; audio query encoder frozen (from the start weights)" if cfg.init else
                         "; audio query encoder frozen at its random initialization (not trained)")
                        if cfg.freeze_query_encoder else ""))
    lines = [
        title,
        "",
        what,
        "",
        "## How it was made",
        f"- Command: `{cfg.command or 'fxlens.train.encoder.train_encoder(...)'}`",
        f"- Data: `{cfg.data_root}`, train split; {data}; {cfg.batch_size} mixture pairs per batch, 1-"
        f"{cfg.max_instruments} instruments, {cfg.hard_negatives} hard negatives, {cfg.seconds:g} s segments "
        f"cropped to {cfg.crop_seconds:g} s; positives: {cfg.positives}; effect pool {', '.join(PAIR_POOL)}.",
        *([f"- Started from the weights of `{cfg.init}` (fine-tuned; the optimizer started fresh)."]
          if cfg.init else []),
        f"- Steps: {history['step']} of {cfg.steps}; AdamW lr {cfg.lr:g}, warm-up {cfg.warmup_steps}, cosine; "
        f"{objective}.",
        f"- Time: {elapsed / 60:.1f} min on {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads).",
        f"- Parameters: encoder {params['encoder']:,}, audio query encoder {params['query_encoder']:,}, "
        f"extractor {params['extractor']:,}. Text queries: all-MiniLM-L6-v2 vectors of "
        f"\"this is the sound of <instrument>\" for {len(model.text.instruments)} instruments, stored here.",
        "",
        "## Metrics (in-batch retrieval, top-1 among the batch's other clips)",
        f"- Last training log: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()})}",
        f"- Validation (val split, fixed batches): "
        f"{json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in val.items()})}",
        f"- Effect difficulty (running mixture loss per effect): "
        f"{json.dumps({k: round(v, 3) for k, v in history.get('difficulty', {}).items() if v is not None})}",
        "",
        "Retrieval against the baselines on held-out songs: `fxlens bench retrieval` (docs/benchmarks.md).",
        "",
    ]
    return "\n".join(lines)


def train_encoder(cfg: EncoderTrainConfig, progress: Callable[[int, int, dict], None] | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) an encoder into `cfg.out_dir`; returns the history (train/val metrics per log)."""
    from lightning.fabric import Fabric

    cfg.check()
    say = log or (lambda s: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # bad data fails before anything is built or written
    open_dataset(cfg.data_root, split="train")
    if cfg.precomputed:
        check_saved_batches(cfg)
    out = Path(cfg.out_dir)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, precision=cfg.precision)
    fabric.launch()
    fabric.seed_everything(cfg.seed)
    device = fabric.device

    instruments = list(taxonomy())
    text_index = {n: i for i, n in enumerate(instruments)}
    model = FxEncoder(cfg.preset, instruments, segment_seconds=cfg.seconds, extractor_input=cfg.extractor_input)
    if cfg.init:
        start_from(model, cfg.init)
    out.mkdir(parents=True, exist_ok=True)  # after every check that can refuse the run
    head = EffectHead(EMBED_DIM, len(instruments), len(PAIR_POOL)) if cfg.objective == "classify" else None
    frozen = ("query_encoder." if cfg.freeze_query_encoder else None, "encoder." if cfg.freeze_encoder else None)
    for n, p in model.named_parameters():
        if n.startswith(tuple(f for f in frozen if f)):
            p.requires_grad_(False)  # no gradient kept for what does not learn (a FiLM extractor backpropagates
            # through the encoder's layers)
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(head.parameters()) if head is not None else []
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = fabric.setup(model, optimizer)
    net: FxEncoder = model.module if hasattr(model, "module") else model
    if head is not None:
        head = fabric.setup_module(head)
        objective = ClassifyObjective(net, head, cfg, text_index)
    else:
        objective = EncoderObjective(net, cfg, text_index)
    difficulty = Difficulty(PAIR_POOL)
    history: dict = {"train": [], "val": [], "step": 0, "probabilities": {}, "config": _jsonable(asdict(cfg))}
    state_path = out / "state.pt"
    start = 0
    if cfg.resume and state_path.exists():
        state = {"model": model, "optimizer": optimizer, "history": {}, "difficulty": {}}
        if head is not None:
            state["head"] = head
        fabric.load(state_path, state)
        history, start = state["history"], state["history"]["step"]
        difficulty.value.update(state["difficulty"])
        say(f"resumed from step {start}")

    # validation batches: the val split, built once
    bcfg = cfg.batch_options()
    val_builder = _builder(cfg.data_root, "val", bcfg, seed=10_000 + cfg.seed)
    val_data = [batch_mels(val_builder.batch(i)) for i in range(cfg.val_batches)]

    probabilities: dict[str, float] = dict(history.get("probabilities") or {})
    if cfg.precomputed:
        history["saved_batches"] = len(saved_indices(cfg.precomputed))

        def batches(folder: str, key: str, seed: int):
            epoch = 0
            while True:
                g = torch.Generator().manual_seed(seed + epoch)
                current = saved_indices(folder)  # the folder may still be filling
                history[key] = len(current)
                order = [current[i] for i in torch.randperm(len(current), generator=g).tolist()]
                for i in order[fabric.global_rank:: fabric.world_size]:
                    yield torch.load(saved_path(Path(folder), i), weights_only=True)
                epoch += 1

        def interleaved():
            rendered = batches(cfg.precomputed, "saved_batches", cfg.seed)
            if cfg.tracks is None:
                yield from rendered
                return
            history["saved_track_batches"] = len(saved_indices(cfg.tracks))
            tracks = batches(cfg.tracks, "saved_track_batches", cfg.seed + 1_000_003)
            # which steps take a full-mix batch: decided by (seed, step), so a resumed run continues the same way
            for step in range(start, cfg.steps):
                take = torch.rand((), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
                yield next(tracks) if float(take) < cfg.tracks_share else next(rendered)
        stream = interleaved()
    else:
        sampler = _Requests(start, fabric.global_rank, fabric.world_size, probabilities)
        # workers > 0: batches built in CPU processes; workers == 0: in this process, effects on the training device
        build_device = device if cfg.workers == 0 else "cpu"
        loader = torch.utils.data.DataLoader(_Batches(cfg.data_root, "train", bcfg, cfg.seed, build_device),
                                             batch_size=None,
                                             sampler=sampler, num_workers=cfg.workers,
                                             persistent_workers=cfg.workers > 0,
                                             prefetch_factor=2 if cfg.workers > 0 else None)
        stream = iter(loader)

    gen = torch.Generator().manual_seed(cfg.seed * 7919 + start)
    t0 = time.time() - history.get("elapsed", 0.0)
    model.train()
    for step in range(start, cfg.steps):
        batch = next(stream)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_at(step, cfg.steps, cfg.warmup_steps)
        # a frozen encoder: the instrument loss alone, from the first step (nothing else can learn)
        lam = 1.0 if cfg.freeze_encoder else lambda_inst_at(step, cfg.steps, cfg.lambda_inst, cfg.curriculum)
        loss, metrics, item_loss = objective(batch, lam, gen, device)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        difficulty.update(item_loss, batch["active"], batch["effects"])
        history["step"] = step + 1
        history["elapsed"] = time.time() - t0
        if (step + 1) % cfg.log_every == 0 or step == start:
            history["train"].append({"step": step + 1, "lr": optimizer.param_groups[0]["lr"], **metrics})
        if cfg.schedule_every and (step + 1) % cfg.schedule_every == 0:
            new = difficulty.probabilities()
            history["difficulty"] = dict(difficulty.value)
            if new and not cfg.precomputed:
                probabilities.clear()
                probabilities.update(new)  # the sampler sends these with the next requests
                history["probabilities"] = dict(new)
                say("effect probabilities: " + ", ".join(f"{k} {v:.2f}" for k, v in new.items()))
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            history["val"].append({"step": step + 1, **validate(net, objective, val_data, device)})
            model.train()
            if head is not None:
                head.train()
            say(f"step {step + 1}: val {json.dumps({k: round(v, 3) for k, v in history['val'][-1].items()})}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            history["difficulty"] = dict(difficulty.value)
            _save(fabric, out, model, optimizer, net, cfg, history, difficulty, str(device), head)
        if progress is not None:
            progress(step + 1, cfg.steps, metrics)
    return history


@torch.no_grad()
def validate(net: FxEncoder, objective: EncoderObjective | ClassifyObjective, data: Sequence[Mapping], device) -> dict:
    net.eval()
    if isinstance(objective, ClassifyObjective):
        objective.head.eval()
    gen = torch.Generator().manual_seed(0)
    rows = [objective(b, 1.0, gen, device, train=False)[1] for b in data]
    keys = ("mix_loss", "mix_acc", "query_acc", "inst_acc", "cls_loss", "cls_acc")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys if all(k in r for r in rows)}


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _save(fabric, out: Path, model, optimizer, net: FxEncoder, cfg: EncoderTrainConfig, history: dict,
          difficulty: Difficulty, device: str, head: EffectHead | None = None) -> None:
    tmp = out / "state.pt.tmp"
    state = {"model": model, "optimizer": optimizer, "history": history, "difficulty": difficulty.value}
    if head is not None:
        state["head"] = head
    fabric.save(tmp, state)
    if fabric.is_global_zero:
        os.replace(tmp, out / "state.pt")
        config = {**net.config(), "training": _jsonable(asdict(cfg)), "step": history["step"]}
        save_checkpoint(out / "model", net.state_dict(), config,
                        _model_card(cfg, net, history, history.get("elapsed", 0.0), device))
        write_text_atomic(out / "history.json", json.dumps(_jsonable(history), indent=1) + "\n")

"""Contrastive training batches for the effects encoder (Fx-Encoder++ paper, section 3.1).

One batch = `batch_size` pairs of mixtures. For a batch:

1. k instruments (1..`max_instruments`, uniform) are drawn, and the batch's songs among those of the split that
   have all k stems: the same instrument combination across the whole batch, so the instruments are no cue.
2. For each item and instrument, two non-silent segments of that stem with different content (two start times at
   least a segment apart when the stem is long enough) are cut (`StemDataset.sample_segment`).
3. Each (item, instrument) gets its own random chain (`RandomChain`, pool `PAIR_POOL`: parametric EQ, delay,
   distortion, stereo imager, multiband compressor, limiter, gain, reverb); the *same* chain processes both
   segments. Before processing, both segments of a stem are brought to the same random loudness in
   `stem_lufs` (-18..-14 LUFS), so level-dependent effects act alike on both.
4. The processed stems are summed into mixture A (first segments) and mixture B (second segments), each
   normalized to `mix_lufs` (-18 LUFS). A and B are the positive pair: same effects, different music.
   With `positives="other-song"` (fxlens's departure, see below) item i's second segments come from the song of
   item i - 1 (a cyclic shift over the batch), so the positive is another song under the same chains, and B_i
   shares its music with A_{i-1}, which carries other chains: every item also gets a same-music negative.
5. Hard negatives (`hard_negatives` per batch): the first segments of an item's stems again, each under a fresh
   chain (other effects, count, order and settings), mixed and normalized the same way - same music, other effects.

Where: segments are read on the CPU; the effects, loudness and mixing run on `device` (the training GPU when the
trainer builds batches in its own process, `fxlens train encoder --workers 0` on a GPU).

Determinism: batch `index` draws only from generators seeded by (seed, index), so the same seed gives the same
batches whether they are built on the fly (in DataLoader workers) or saved to disk first (`fxlens data pairs`, which
saves their log-mels: `fxlens.train.encoder.precompute_batches`). Effect probabilities (probability scheduling) are part of the request: a batch is
the same for the same (seed, index, probabilities).

Departures from the paper: positives from another song (`positives="other-song"`): with the paper's two segments
of one song (`"same-song"`), and a batch of different songs, the in-batch task can be solved by recognizing the
song (its timbre, key, tempo) without hearing any effect, while the benchmark's target is always another song
under the same chain (`fxlens.bench.retrieval`). 2 s segments instead of 10 s (CPU budget; the benchmark uses 2 s
clips), and loudness normalization of the stems before their effects rather than after (the paper's text allows
both; before keeps compressor thresholds and distortion drive meaningful, after would erase the gain effect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.data.stems import StemDataset
from fxlens.errors import FxlensError, InvalidAudioError
from fxlens.fx.chain import RandomChain

POSITIVES = ("same-song", "other-song")  # where a positive's second mixture takes its music from (module docstring)
PAIR_POOL = ("parametric_eq", "delay", "distortion", "stereo_imager", "multiband_compressor", "limiter", "gain",
             "reverb")

# Application probabilities (the released Fx-Encoder++ augmentation: EQ .6, distortion .3, multiband compressor .8,
# the others .6) and the parameter sub-ranges it draws from where fxlens's full ranges are wider than useful.
PAIR_PROBABILITIES = {"parametric_eq": 0.6, "delay": 0.6, "distortion": 0.3, "stereo_imager": 0.6,
                      "multiband_compressor": 0.8, "limiter": 0.6, "gain": 0.6, "reverb": 0.6}
PAIR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "parametric_eq": {f"{b}_gain": (-12.0, 12.0) for b in ("low_shelf", "peak1", "peak2", "peak3", "peak4",
                                                           "high_shelf")}
    | {f"{b}_q": (0.5, 5.0) for b in ("peak1", "peak2", "peak3", "peak4")},
    "distortion": {"drive_db": (0.0, 30.0)},
    "multiband_compressor": {"low_threshold_db": (-30.0, -5.0), "mid_threshold_db": (-30.0, -5.0),
                             "high_threshold_db": (-30.0, -5.0), "low_ratio": (1.5, 6.0), "mid_ratio": (1.5, 6.0),
                             "high_ratio": (1.5, 6.0), "low_attack_ms": (1.0, 20.0), "mid_attack_ms": (1.0, 20.0),
                             "high_attack_ms": (1.0, 20.0), "low_release_ms": (20.0, 500.0),
                             "mid_release_ms": (20.0, 500.0), "high_release_ms": (20.0, 500.0),
                             "mix": (0.2, 0.7)},
    "gain": {"gain_db": (-12.0, 12.0)},
    "delay": {"time_ms": (20.0, 1000.0), "feedback": (0.0, 0.8), "mix": (0.1, 0.6)},
    "reverb": {"decay_s": (0.1, 2.0), "mix": (0.1, 0.7)},  # the peer's IR is 1.5 s; longer tails cost time
}


@dataclass
class PairBatch:
    """One contrastive batch. Audio is float32 stereo at 44.1 kHz, T samples.

    mix_a, mix_b: (B, 2, T) the positive pairs. stems_a, stems_b: (B, k, 2, T) the processed stems as they sit in
    the mixtures. negatives: (H, 2, T) hard negatives, negative_of: (H,) the item each one shares music with.
    active: (B, k, E) which pool effects each stem's chain holds. instruments: the k instrument names.
    """

    mix_a: torch.Tensor
    mix_b: torch.Tensor
    stems_a: torch.Tensor
    stems_b: torch.Tensor
    negatives: torch.Tensor
    negative_of: torch.Tensor
    active: torch.Tensor
    instruments: list[str]
    effects: list[str]

    def to(self, device: torch.device | str) -> "PairBatch":
        return PairBatch(**{f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                                     else getattr(self, f.name)) for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return self.mix_a.shape[0]


def _loudness_gain(x: torch.Tensor, target_lufs: torch.Tensor | float, sample_rate: int) -> torch.Tensor:
    """Per-item gains (B,) that bring (B, C, T) audio to target_lufs; 1 for silent items."""
    lufs = fxaudio.integrated_loudness(x.double(), sample_rate)
    gain = torch.pow(10.0, (torch.as_tensor(target_lufs, dtype=torch.float64, device=x.device) - lufs) / 20.0)
    return torch.where(torch.isfinite(lufs), gain, torch.ones_like(gain)).float()


class PairBuilder:
    """Builds `PairBatch`es from a stem dataset (see the module docstring for the recipe)."""

    def __init__(
        self,
        dataset: StemDataset,
        batch_size: int = 16,
        seconds: float = 2.0,
        max_instruments: int = 4,
        hard_negatives: int = 4,
        effects: Sequence[str] = PAIR_POOL,
        probabilities: Mapping[str, float] | None = None,
        param_ranges: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
        min_effects: int = 1,
        stem_lufs: tuple[float, float] = (-18.0, -14.0),
        mix_lufs: float = -18.0,
        sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
        seed: int = 0,
        device: str | torch.device = "cpu",
        positives: str = "same-song",
    ) -> None:
        if batch_size < 2:
            raise FxlensError(f"a contrastive batch needs at least 2 pairs, got batch_size={batch_size}")
        if not 1 <= max_instruments:
            raise FxlensError("max_instruments must be >= 1")
        if positives not in POSITIVES:
            raise FxlensError(f"unknown positives '{positives}' (choose {', '.join(POSITIVES)})")
        self.positives = positives
        self.dataset, self.batch_size, self.seconds = dataset, int(batch_size), float(seconds)
        self.max_instruments, self.hard_negatives = int(max_instruments), min(int(hard_negatives), int(batch_size))
        self.stem_lufs, self.mix_lufs, self.sample_rate, self.seed = stem_lufs, float(mix_lufs), sample_rate, int(seed)
        self.device = torch.device(device)  # where the effects run (a GPU when training on one); audio loads on CPU
        ranges = {e: r for e, r in (PAIR_RANGES if param_ranges is None else param_ranges).items() if e in effects}
        probs = {e: p for e, p in (probabilities or PAIR_PROBABILITIES).items() if e in effects}
        self.chain = RandomChain(effects, probabilities=probs or 0.6, min_effects=min_effects, shuffle=True,
                                 param_ranges=ranges)
        self.songs = dataset.songs()
        if not self.songs:
            raise FxlensError(f"no songs in '{dataset.root}'")
        self._with: dict[str, set[int]] = {}
        for i, ref in enumerate(self.songs):
            for name in ref.instruments:
                self._with.setdefault(name, set()).add(i)
        self.instruments = sorted(self._with)

    @property
    def effects(self) -> list[str]:
        return self.chain.names

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index), stream])

    def _combination(self, rng: np.random.Generator, instruments: Sequence[str] | None) -> tuple[list[str], list[int]]:
        """An instrument combination and the songs holding all of it (preferably 2 or more; 1 song in a tiny split)."""
        for _ in range(50):
            if instruments is not None:
                names = list(instruments)
            else:
                ref = self.songs[int(rng.integers(len(self.songs)))]
                k = int(rng.integers(1, self.max_instruments + 1))
                have = ref.instruments
                names = sorted(rng.choice(have, size=min(k, len(have)), replace=False).tolist())
            songs = set.intersection(*(self._with.get(n, set()) for n in names))
            if len(songs) >= 2 or (songs and len(self.songs) < 2):
                return names, sorted(songs)
            if instruments is not None:
                break
        raise FxlensError(f"fewer than 2 songs hold the stems {', '.join(names)}")

    def _segments(self, ref, name: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two non-silent segments of one stem, starting at least a segment apart when the stem allows it."""
        # a segment counts as playing when 30 % of its 50 ms frames are above -45 dBFS (the sampler's default, 50 %,
        # rejects most segments of sparse parts such as strings or pads and costs many reads)
        kw = {"min_active": 0.3}
        first = self.dataset.sample_segment(ref, name, self.seconds, rng, self.sample_rate, **kw)
        long_enough = self.dataset.stem_duration(ref, name) >= 2.5 * self.seconds
        for _ in range(10):
            second = self.dataset.sample_segment(ref, name, self.seconds, rng, self.sample_rate, **kw)
            if not long_enough or abs(second.offset_s - first.offset_s) >= self.seconds:
                break
        return first.audio[0], second.audio[0]

    def _draw_sources(self, rng: np.random.Generator, n: int, names: list[str], songs: list[int]):
        """(n, k, 2, T) x 2 segment pairs, skipping songs whose stems turn out silent."""
        a, b = [], []
        order = rng.permutation(songs).tolist()
        order = (order * (2 * n // len(order) + 2))  # fewer songs than items: reuse songs (other segments)
        silent: set[int] = set()
        for song in order:
            if song in silent:
                continue
            try:
                pairs = [self._segments(self.songs[song], name, rng) for name in names]
            except InvalidAudioError:
                silent.add(song)
                continue
            a.append(torch.stack([p[0] for p in pairs]))
            b.append(torch.stack([p[1] for p in pairs]))
            if len(a) == n:
                return torch.stack(a), torch.stack(b)
        raise FxlensError(f"not enough non-silent stems of {', '.join(names)} to fill a batch of {n}")

    def _process(self, stems: torch.Tensor, lufs: torch.Tensor, gen: torch.Generator, copies: int):
        """Process (N, 2, T) stems (N = items x k): one drawn chain per stem, applied to `copies` stacked versions."""
        N = stems.shape[0] // copies
        active, order, controls = self.chain.draw(N, gen)
        x = stems * _loudness_gain(stems, lufs.repeat(copies), self.sample_rate)[:, None, None]
        y, _ = self.chain.apply(x, self.sample_rate, active.repeat(copies, 1), order,
                                [c.repeat(copies, 1) for c in controls])
        return torch.nan_to_num(y), active

    def _mix(self, stems: torch.Tensor) -> torch.Tensor:
        """(M, k, 2, T) processed stems -> (M, 2, T) mixtures at mix_lufs (stems scaled with them)."""
        mix = stems.sum(dim=1)
        g = _loudness_gain(mix, self.mix_lufs, self.sample_rate)
        return mix * g[:, None, None], stems * g[:, None, None, None]

    def batch(self, index: int, probabilities: Mapping[str, float] | None = None,
              instruments: Sequence[str] | None = None, effects_only: Sequence[str] | None = None) -> PairBatch:
        """Batch number `index` (deterministic in seed, index and probabilities).

        `instruments` fixes the combination; `effects_only` switches every other effect off (probe batches of the
        probability scheduler).
        """
        rng = self._rng(index, 0)
        gen = torch.Generator().manual_seed(int(self._rng(index, 1).integers(2**62)))
        saved = dict(self.chain.probabilities)
        if probabilities:
            self.chain.set_probabilities(probabilities)
        if effects_only is not None:
            self.chain.set_probabilities({n: (1.0 if n in effects_only else 0.0) for n in self.chain.names})
        saved_min = self.chain.min_effects
        if effects_only is not None:
            self.chain.min_effects = 0
        try:
            for attempt in range(10):  # a combination whose stems are mostly silent: draw another one
                names, songs = self._combination(rng, instruments)
                try:
                    seg_a, seg_b = self._draw_sources(rng, self.batch_size, names, songs)  # (B, k, 2, T)
                    break
                except FxlensError:
                    if attempt == 9 or instruments is not None:
                        raise
            B, k = self.batch_size, len(names)
            if self.positives == "other-song":
                seg_b = seg_b.roll(1, dims=0)  # item i's second segments: item i - 1's song
            seg_a, seg_b = seg_a.to(self.device), seg_b.to(self.device)
            T = seg_a.shape[-1]
            lufs = torch.as_tensor(rng.uniform(*self.stem_lufs, size=B * k), dtype=torch.float64)
            both = torch.cat([seg_a.reshape(B * k, 2, T), seg_b.reshape(B * k, 2, T)])
            wet, active = self._process(both, lufs, gen, copies=2)
            mix_a, stems_a = self._mix(wet[: B * k].reshape(B, k, 2, T))
            mix_b, stems_b = self._mix(wet[B * k:].reshape(B, k, 2, T))
            H = self.hard_negatives
            if H > 0:
                neg, _ = self._process(seg_a[:H].reshape(H * k, 2, T), lufs[: H * k], gen, copies=1)
                negatives, _ = self._mix(neg.reshape(H, k, 2, T))
            else:
                negatives = torch.zeros(0, 2, T, device=self.device)
        finally:
            self.chain.set_probabilities(saved)
            self.chain.min_effects = saved_min
        return PairBatch(mix_a, mix_b, stems_a, stems_b, negatives, torch.arange(H), active.reshape(B, k, -1).cpu(),
                         names, self.chain.names)

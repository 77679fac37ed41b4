"""Chains of effects: `Chain` (fixed settings, the pedalboard-style one obvious call) and `RandomChain`
(random effects, count, order and settings per batch item, for training data), both speaking presets.

    chain = Chain([("compressor", {"threshold_db": -24.0, "ratio": 4.0}), "reverb"])
    wet = chain(audio, 44100)                      # audio (B, C, T) -> (B, C, T)
    preset = chain.to_preset(44100)                # JSON-ready dict; Chain.from_preset(preset) rebuilds it
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from fxlens.errors import ParameterError
from fxlens.fx.effect import Effect, check_audio, get_effect
from fxlens.fx.preset import preset_from_stages, stages_from_preset

StageSpec = Effect | str | tuple[Effect | str, Mapping[str, float]]


def _as_effect(item: Effect | str) -> Effect:
    return item if isinstance(item, Effect) else get_effect(item)


class Chain(nn.Module):
    """A fixed sequence of effects, each with physical parameter values (unset parameters take their defaults)."""

    def __init__(self, stages: Iterable[StageSpec]) -> None:
        super().__init__()
        effects, params = [], []
        for item in stages:
            effect, values = (item if isinstance(item, tuple) else (item, {}))
            effect = _as_effect(effect)
            for key in values:
                effect.spec(key)  # unknown names raise ParameterError
            params.append({s.name: s.check(values[s.name]) if s.name in values else s.default for s in effect.specs})
            effects.append(effect)
        self.effects = nn.ModuleList(effects)
        self.params: list[dict[str, float]] = params

    def __len__(self) -> int:
        return len(self.effects)

    def tail_seconds(self) -> float:
        """Sum of the effects' ring-out times at these settings."""
        total = 0.0
        for effect, values in zip(self.effects, self.params):
            total += effect.tail_seconds({k: torch.tensor([v]) for k, v in values.items()})
        return total

    def forward(self, audio: torch.Tensor, sample_rate: int, keep_tail: bool = False) -> torch.Tensor:
        """Process (B, C, T) audio. With keep_tail, the input is first padded with `tail_seconds()` of silence."""
        check_audio(audio)
        x = audio
        if keep_tail:
            pad = int(math.ceil(self.tail_seconds() * sample_rate))
            x = torch.nn.functional.pad(x, (0, pad))
        for effect, values in zip(self.effects, self.params):
            x = effect.process(x, sample_rate, **effect.resolve(values, x))
        return x

    def to_preset(self, sample_rate: int) -> dict:
        return preset_from_stages([(e, p) for e, p in zip(self.effects, self.params)], sample_rate)

    @classmethod
    def from_preset(cls, preset: Mapping) -> "Chain":
        """Rebuild a chain from a preset dict (see `fxlens.fx.preset`); raises PresetError / UnknownEffectError."""
        return cls(stages_from_preset(preset))


DEFAULT_POOL = (
    "parametric_eq",
    "compressor",
    "distortion",
    "delay",
    "modulated_delay",
    "reverb",
    "stereo_imager",
    "gain",
)


class RandomChain(nn.Module):
    """Random effect chains, vectorized over the batch.

    For each call: the order of the pool is shuffled once (shared by the batch, as in Fx-Encoder++, so every
    effect runs once on the sub-batch of items that use it); each item switches each effect on with that effect's
    probability, then the count is clipped to [min_effects, max_effects] by switching random effects on or off;
    settings are uniform in normalized controls (so log-scaled parameters are log-uniform). Returns the processed
    audio and, per item, the exact preset that `Chain.from_preset` re-renders.

    `probabilities` can be changed while training runs (`set_probabilities`), e.g. by probability scheduling.
    `param_ranges` narrows the settings drawn, in physical units: ``{"reverb": {"mix": (0.1, 0.4)}}`` (a value
    pair with lo == hi fixes the parameter); the draw stays uniform in normalized controls inside the sub-range.
    """

    def __init__(
        self,
        effects: Sequence[Effect | str] = DEFAULT_POOL,
        probabilities: float | Mapping[str, float] = 0.5,
        min_effects: int = 0,
        max_effects: int | None = None,
        shuffle: bool = True,
        param_ranges: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    ) -> None:
        super().__init__()
        self.effects = nn.ModuleList([_as_effect(e) for e in effects])
        names = [e.name for e in self.effects]
        if len(set(names)) != len(names):
            raise ParameterError(f"an effect appears twice in the pool: {names}")
        self.max_effects = len(names) if max_effects is None else max_effects
        if not 0 <= min_effects <= self.max_effects <= len(names):
            raise ParameterError(f"need 0 <= min_effects <= max_effects <= {len(names)}")
        self.min_effects = min_effects
        self.shuffle = shuffle
        self.probabilities: dict[str, float] = {}
        self.set_probabilities(probabilities)
        self.control_bounds = [self._control_bounds(e, (param_ranges or {}).get(e.name, {})) for e in self.effects]
        unknown = set(param_ranges or {}) - set(self.names)
        if unknown:
            raise ParameterError(f"param_ranges names effects not in the pool: {', '.join(sorted(unknown))}")

    @staticmethod
    def _control_bounds(effect: Effect, ranges: Mapping[str, tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (low, high) per parameter of `effect`, (n_params,) each, from physical sub-ranges."""
        lo, hi = torch.zeros(effect.n_params, dtype=torch.float64), torch.ones(effect.n_params, dtype=torch.float64)
        for name, pair in ranges.items():
            spec = effect.spec(name)
            try:
                a, b = (spec.check(v) for v in pair)
            except (TypeError, ValueError):
                raise ParameterError(f"range of '{effect.name}.{name}' must be a (low, high) pair, got {pair!r}") from None
            if a > b:
                raise ParameterError(f"range of '{effect.name}.{name}' has low {a:g} > high {b:g}")
            i = effect.param_names.index(name)
            lo[i], hi[i] = (spec.to_normalized(torch.tensor([a, b], dtype=torch.float64))).tolist()
        return lo.float(), hi.float()

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.effects]

    def set_probabilities(self, probabilities: float | Mapping[str, float]) -> None:
        if not isinstance(probabilities, Mapping):
            probabilities = {n: float(probabilities) for n in self.names}
        for name, p in probabilities.items():
            if name not in self.names:
                raise ParameterError(f"'{name}' is not in this chain's pool ({', '.join(self.names)})")
            if not 0.0 <= float(p) <= 1.0:
                raise ParameterError(f"probability of '{name}' must be in [0, 1], got {p}")
            self.probabilities[name] = float(p)
        for n in self.names:
            self.probabilities.setdefault(n, 0.5)

    def sample_active(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, E) boolean mask of effects switched on, with the count clipped to [min_effects, max_effects]."""
        E = len(self.effects)
        p = torch.tensor([self.probabilities[n] for n in self.names])
        active = torch.rand(batch, E, generator=generator) < p
        # Random priorities decide which effects to add (below min) or drop (above max).
        priority = torch.rand(batch, E, generator=generator)
        # rank of each effect among the active ones, highest priority first
        key_on = torch.where(active, priority, torch.full_like(priority, -1.0))
        rank_on = key_on.argsort(dim=1, descending=True).argsort(dim=1)
        active = active & (rank_on < self.max_effects)
        count = active.sum(1, keepdim=True)
        key_off = torch.where(active, torch.full_like(priority, -1.0), priority)
        rank_off = key_off.argsort(dim=1, descending=True).argsort(dim=1)
        active = active | ((rank_off < (self.min_effects - count)) & ~active)
        return active

    @staticmethod
    def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        g = torch.Generator()
        g.manual_seed(int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed)
        return g

    def draw(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, list[int], list[torch.Tensor]]:
        """Draw (active mask (B, E), effect order, normalized controls per effect (B, n_params))."""
        active = self.sample_active(batch, generator)
        E = len(self.effects)
        order = torch.randperm(E, generator=generator).tolist() if self.shuffle else list(range(E))
        controls = [lo + (hi - lo) * torch.rand(batch, e.n_params, generator=generator)
                    for e, (lo, hi) in zip(self.effects, self.control_bounds)]
        return active, order, controls

    def sample_presets(self, n: int, sample_rate: int, seed: int | None = None) -> list[dict]:
        """Draw n chains without processing audio (the same draws `forward` makes under the same seed)."""
        active, order, controls = self.draw(n, self._generator(seed, None))
        stages: list[list] = [[] for _ in range(n)]
        for i in order:
            effect = self.effects[i]
            physical = effect.to_physical(controls[i])
            for item in active[:, i].nonzero().flatten().tolist():
                stages[item].append((effect, {k: float(v[item]) for k, v in physical.items()}))
        return [preset_from_stages(s, sample_rate) for s in stages]

    def forward(
        self, audio: torch.Tensor, sample_rate: int, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[dict]]:
        """Process (B, C, T) audio with one random chain per item; returns (audio, presets)."""
        check_audio(audio)
        active, order, controls = self.draw(audio.shape[0], self._generator(seed, generator))
        return self.apply(audio, sample_rate, active, order, controls)

    def apply(
        self, audio: torch.Tensor, sample_rate: int, active: torch.Tensor, order: Sequence[int],
        controls: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, list[dict]]:
        """Process (B, C, T) audio with drawn chains (`draw`'s output, or rows of it repeated to give several
        clips the same chain); returns (audio, presets)."""
        check_audio(audio)
        B = audio.shape[0]
        if active.shape != (B, len(self.effects)):
            raise ParameterError(f"active mask of shape {tuple(active.shape)} does not match {B} clips x "
                                 f"{len(self.effects)} effects")
        stages: list[list[tuple[Effect, dict[str, float]]]] = [[] for _ in range(B)]
        x = audio
        for i in order:
            idx = active[:, i].nonzero().flatten()
            if idx.numel() == 0:
                continue
            effect = self.effects[i]
            physical = effect.to_physical(controls[i][idx].to(device=audio.device, dtype=audio.dtype))
            y = effect.process(x[idx.to(audio.device)], sample_rate, **physical)
            x = x.index_put((idx.to(audio.device),), y)
            for j, item in enumerate(idx.tolist()):
                stages[item].append((effect, {k: float(v[j]) for k, v in physical.items()}))
        return x, [preset_from_stages(s, sample_rate) for s in stages]

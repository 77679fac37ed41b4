"""Put a reference's effects on your audio (`fxlens match`, `fxlens.match`): inference-time optimization (ITO).

Fx-Encoder++ §4.2 and ST-ITO (Steinmetz et al., ISMIR 2024): a chain of fxlens effects with a fixed structure
(default `DEFAULT_CHAIN`, the paper's seven: EQ -> multiband compressor -> stereo imager -> gain -> distortion ->
delay -> limiter) is set so that the effects embedding of *your audio through the chain* comes as close as it can
(cosine distance) to the embedding of the *reference*: by gradient descent through the differentiable chain and
encoder (Adam on logits of the controls, the default) or by CMA-ES (gradient-free, the `cma` package). Then your
whole file is rendered through the chain with the settings found, and the chain is returned as a preset that
`fxlens fx apply --preset` puts on any other file.

The reference can be a whole mix and your audio a stem: with a query (an instrument name, or an example clip of the
instrument) both sides go through the extractor with that query, so the target is that instrument's effects inside
the reference mix. `fxlens bench match` scores this procedure on rendered triplets with a known answer
(`fxlens.bench.matching`, docs/benchmarks.md).

What it departs from, and why: the optimization runs on an excerpt of your audio (`excerpt_seconds`, default 8 s:
evenly spaced 2 s windows among the non-quiet ones, each rendered from silence), not on the whole file — a render
with gradients costs ~0.1-0.3 s per second of audio and step on a CPU; the whole file is rendered once at the end.
The settings live in the *search box* of the encoder's training pairs (`fxlens.data.pairs.PAIR_RANGES`; the full
range where those do not narrow a parameter): outside it the encoder has never heard the effects.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.errors import FxlensError, ParameterError
from fxlens.fx.chain import Chain, RandomChain
from fxlens.fx.effect import Effect, get_effect
from fxlens.fx.preset import preset_from_stages, stages_from_preset

# Fx-Encoder++ §4.2: "seven sequential effects (EQ, multiband compressor, stereo imager, gain, distortion, delay,
# limiter)". ST-ITO's own chain would be e.g. ("parametric_eq", "compressor", "distortion", "delay", "reverb").
DEFAULT_CHAIN = ("parametric_eq", "multiband_compressor", "stereo_imager", "gain", "distortion", "delay", "limiter")
# ST-ITO (Steinmetz et al., ISMIR 2024): CMA-ES population 32, sigma0 0.33, 100 iterations, cosine distance
POPSIZE, SIGMA0, ITERATIONS = 32, 0.33, 100
LEARNING_RATE = 0.1  # Adam on logits: ~30 steps to cross the box from its middle
OPTIMIZERS = ("grad", "cmaes")
LOUDNESS_MODES = ("input", "reference", "off")
# Steps of `match` (both optimizers): more gradient steps lower the embedding distance but not the audio distance to
# the target (val split, docs/match.md: L_d after 10 / 20 / 50 / 100 steps), so few steps act as early stopping
MATCH_STEPS = 20


# ------------------------------------------------------------------------------------------------------------------
# The chain whose settings are estimated
# ------------------------------------------------------------------------------------------------------------------


def search_ranges(param_ranges: Mapping | None | str) -> Mapping | None:
    """`ChainModel`'s ranges from a user's choice: "training" (the encoder's training ranges,
    `fxlens.data.pairs.PAIR_RANGES`), None (every parameter's full range) or a mapping (as it is)."""
    if isinstance(param_ranges, str):
        if param_ranges != "training":
            raise ParameterError(f"param_ranges must be 'training', None or a mapping, got '{param_ranges}'")
        from fxlens.data.pairs import PAIR_RANGES

        return PAIR_RANGES
    return param_ranges


class ChainModel:
    """A fixed chain structure whose settings are one flat vector ``s`` in [0, 1]^P: coordinates in the search box.

    Effect k's normalized controls are ``u = lo + (hi - lo) * s[k-th slice]``, where [lo, hi] is the box searched
    (and, in `fxlens bench match`, the box the true settings are drawn from) (`param_ranges` in physical units, as
    `RandomChain`; the full range of a parameter it does not name). `render` is differentiable in ``s`` and batched
    over candidates.
    """

    def __init__(self, effects: Sequence[str | Effect] = DEFAULT_CHAIN,
                 param_ranges: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> None:
        if not effects:
            raise ParameterError("the chain to match needs at least one effect")
        self.effects = [e if isinstance(e, Effect) else get_effect(e) for e in effects]
        names = [e.name for e in self.effects]
        if len(set(names)) != len(names):
            raise ParameterError(f"an effect appears twice in the chain: {', '.join(names)}")
        unknown = set(param_ranges or {}) - set(names)
        if unknown:  # ranges of effects outside the chain are simply not used (PAIR_RANGES covers a larger pool)
            param_ranges = {k: v for k, v in param_ranges.items() if k in names}
        bounds = [RandomChain._control_bounds(e, (param_ranges or {}).get(e.name, {})) for e in self.effects]
        self.lo = torch.cat([b[0] for b in bounds]).double()
        self.hi = torch.cat([b[1] for b in bounds]).double()
        self.sizes = [e.n_params for e in self.effects]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.effects]

    @property
    def n_params(self) -> int:
        return int(sum(self.sizes))

    @property
    def param_names(self) -> list[str]:
        return [f"{e.name}.{p}" for e in self.effects for p in e.param_names]

    def controls(self, s: torch.Tensor) -> torch.Tensor:
        """Box coordinates ``(B, P)`` -> normalized controls ``(B, P)`` of the effects (differentiable)."""
        lo, hi = self.lo.to(s), self.hi.to(s)
        return lo + (hi - lo) * s

    def physical(self, s: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Box coordinates ``(B, P)`` -> per effect ``{parameter: (B,) physical values}``."""
        out, u = [], self.controls(s)
        for effect, part in zip(self.effects, torch.split(u, self.sizes, dim=1)):
            out.append(effect.to_physical(part))
        return out

    def render(self, x: torch.Tensor, sample_rate: int, s: torch.Tensor) -> torch.Tensor:
        """Process ``x`` (1 or B, C, T) with the settings ``s`` (B, P): ``(B, C, T)``; differentiable in both."""
        if s.dim() != 2 or s.shape[1] != self.n_params:
            raise ParameterError(f"settings must be (batch, {self.n_params}), got {tuple(s.shape)}")
        y = x.expand(s.shape[0], -1, -1) if x.shape[0] == 1 else x
        for effect, physical in zip(self.effects, self.physical(s.to(device=x.device, dtype=x.dtype))):
            y = effect.process(y, sample_rate, **physical)
        return y

    def preset(self, s: torch.Tensor | np.ndarray, sample_rate: int) -> dict:
        """The fxlens preset (physical values, JSON-ready) of one setting vector ``(P,)``."""
        s = torch.as_tensor(np.asarray(s, dtype=np.float64)).reshape(1, -1)
        stages = [(e, {k: float(v[0]) for k, v in p.items()}) for e, p in zip(self.effects, self.physical(s))]
        return preset_from_stages(stages, sample_rate)



def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)`` row-wise (b broadcast): in [0, 2]."""
    return 1.0 - torch.nn.functional.cosine_similarity(a, b.to(a), dim=-1, eps=1e-12)



# ------------------------------------------------------------------------------------------------------------------
# Optimizers
# ------------------------------------------------------------------------------------------------------------------


def require_cma():
    """The `cma` module, or a clear `FxlensError` when it is not installed (no hand-written CMA-ES)."""
    try:
        import cma  # noqa: F401
    except ImportError:
        raise FxlensError("CMA-ES needs the 'cma' package (pip install 'fxlens[bench]'), "
                          "or use --method grad") from None
    return cma


@dataclass
class Estimate:
    settings: np.ndarray  # (P,) box coordinates of the best candidate
    distance: float  # its objective value (embedding cosine distance)
    history: list[float]  # best-so-far objective after each iteration
    evaluations: int


def optimize_cmaes(objective: Callable[[np.ndarray], np.ndarray], n_params: int, iterations: int = ITERATIONS,
                   popsize: int = POPSIZE, sigma0: float = SIGMA0, seed: int = 1,
                   x0: np.ndarray | None = None, callback: Callable[[int, float], None] | None = None) -> Estimate:
    """Minimize ``objective((N, P) candidates in [0, 1]^P) -> (N,)`` with CMA-ES (bounded to the box, seeded).

    A one-parameter problem gets a second, ignored coordinate (`cma` does not handle dimension 1). `callback(k,
    best)` after each generation k = 1, 2, ... with the best objective value so far."""
    cma = require_cma()
    start = np.full(n_params, 0.5) if x0 is None else np.asarray(x0, dtype=np.float64)
    if n_params == 1:
        start = np.append(start, 0.5)
    es = cma.CMAEvolutionStrategy(start.tolist(), float(sigma0),
                                  {"popsize": int(popsize), "bounds": [0.0, 1.0], "seed": int(seed) % (2**31 - 2) + 1,
                                   "verbose": -9, "maxiter": int(iterations), "verb_log": 0, "verb_disp": 0})
    best_s, best_v, history, evals = start[:n_params].copy(), math.inf, [], 0
    for _ in range(int(iterations)):
        candidates = es.ask()
        pop = np.clip(np.asarray(candidates, dtype=np.float64), 0.0, 1.0)[:, :n_params]
        values = np.asarray(objective(pop), dtype=np.float64)
        values = np.where(np.isfinite(values), values, 2.0)  # a failed render is as far as can be
        evals += len(values)
        i = int(values.argmin())
        if values[i] < best_v:
            best_v, best_s = float(values[i]), pop[i].copy()
        history.append(best_v)
        if callback is not None:
            callback(len(history), best_v)
        es.tell(candidates, values.tolist())
        if es.stop():
            break
    return Estimate(best_s, best_v, history, evals)


def optimize_grad(loss: Callable[[torch.Tensor], torch.Tensor], n_params: int, iterations: int = ITERATIONS,
                  lr: float = LEARNING_RATE, x0: np.ndarray | None = None,
                  callback: Callable[[int, float], None] | None = None) -> Estimate:
    """Minimize ``loss((1, P) settings in (0, 1)) -> scalar`` with Adam on logits; keeps the best setting seen.

    Starts at `x0` (default the middle of the box). `iterations` gradient steps, `iterations` + 1 evaluations;
    `callback(k, best)` after evaluation k = 1, 2, ... with the best value so far.
    """
    start = np.full(n_params, 0.5) if x0 is None else np.clip(np.asarray(x0, dtype=np.float64), 1e-4, 1 - 1e-4)
    z = torch.logit(torch.as_tensor(start, dtype=torch.float32)).reshape(1, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=float(lr))
    best_s, best_v, history = start.copy(), math.inf, []
    for step in range(int(iterations) + 1):
        last = step == int(iterations)
        # The last evaluation is not backpropagated, so it needs no graph (cheaper; it once also leaked one, through
        # torchcomp: `fxlens.fx.dynamics._OnePoleRecursion`).
        with torch.set_grad_enabled(not last):
            s = torch.sigmoid(z)
            value = loss(s)
        v = float(value.detach())
        if math.isfinite(v) and v < best_v:
            best_v, best_s = v, s.detach().double().numpy()[0].copy()
        history.append(best_v)
        if callback is not None:
            callback(len(history), best_v)
        if last or not math.isfinite(v):
            break
        opt.zero_grad()
        value.backward()
        opt.step()
    return Estimate(best_s, best_v, history, len(history))


# ------------------------------------------------------------------------------------------------------------------
# Matching a reference
# ------------------------------------------------------------------------------------------------------------------


def excerpt_windows(x: torch.Tensor, sample_rate: int, seconds: float, window_seconds: float,
                    quiet_db: float = 30.0) -> torch.Tensor:
    """The part of ``x`` (1, C, T) the optimizer listens to: ``(K, C, L)`` windows of `window_seconds`.

    Audio no longer than `seconds` is used whole (one item, K = 1, L = T). Otherwise K = seconds // window windows
    (at least one), evenly spaced over the full windows whose RMS is within `quiet_db` of the loudest window's (so
    intros, breaks and fade-outs do not fill the excerpt)."""
    T = x.shape[-1]
    L = int(round(window_seconds * sample_rate))
    if T <= int(round(seconds * sample_rate)) or T < 2 * L:
        return x
    n = T // L
    windows = x[0, :, : n * L].reshape(x.shape[1], n, L).transpose(0, 1)  # (n, C, L)
    rms_db = 10.0 * torch.log10(windows.double().square().mean(dim=(1, 2)).clamp_min(1e-20))
    loud = (rms_db >= rms_db.max() - quiet_db).nonzero().flatten()
    k = max(1, min(int(seconds // window_seconds), loud.numel()))
    pick = loud[np.linspace(0, loud.numel() - 1, k).round().astype(int)]
    return windows[pick].contiguous()


@dataclass
class MatchResult:
    """What `match` found: the processed audio ``(C, T)`` at `sample_rate` (44.1 kHz), the chain as a preset
    (physical values; with `loudness` != "off" it ends in the level-matching gain stage), the cosine distance of
    the embeddings to the reference's before (the input as it is) and after (through the chain), the best-so-far
    distance after each step, and the settings as box coordinates."""

    audio: torch.Tensor
    sample_rate: int
    preset: dict
    distance_before: float
    distance_after: float
    history: list[float]
    settings: np.ndarray
    method: str
    iterations: int
    excerpt_seconds: float
    level_gain_db: float | None
    query: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "iterations": self.iterations, "query": self.query,
                "distance_before": self.distance_before, "distance_after": self.distance_after,
                "excerpt_seconds": self.excerpt_seconds, "level_gain_db": self.level_gain_db,
                "history": [round(v, 6) for v in self.history], "preset": self.preset, "notes": self.notes}


@contextmanager
def _searching(enc) -> Iterator[None]:
    """The encoder in eval mode with its weights frozen (gradients flow to the audio only) for the search; the
    caller's model comes back in its own mode with its weights as trainable as they were."""
    was_training, trainable = enc.training, [p for p in enc.parameters() if p.requires_grad]
    enc.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        enc.train(was_training)


def match(
    audio: torch.Tensor,
    sample_rate: int,
    reference: torch.Tensor,
    reference_sample_rate: int,
    *,
    query: str | torch.Tensor | None = None,
    query_sample_rate: int | None = None,
    blend: torch.Tensor | None = None,
    blend_sample_rate: int | None = None,
    blend_amount: float = 0.5,
    model=None,
    effects: Sequence[str | Effect] = DEFAULT_CHAIN,
    param_ranges: Mapping | None | str = "training",
    method: str = "grad",
    iterations: int | None = None,
    lr: float = LEARNING_RATE,
    popsize: int = POPSIZE,
    sigma0: float = SIGMA0,
    excerpt_seconds: float = 8.0,
    loudness: str = "input",
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> MatchResult:
    """Set a chain of effects so that `audio` through it sounds processed like `reference`; render `audio` with it.

    `audio`, `reference`: (T,), (C, T) or (1, C, T) tensors at their own rates (1-8 channels, at least the encoder's
    0.5 s; the result is stereo at 44.1 kHz). `query`: an instrument name or an example clip (at
    `query_sample_rate`) to match that instrument's effects inside the reference mix. `blend`: a second reference
    (at `blend_sample_rate`, default `reference_sample_rate`); the target is then the point `blend_amount` of the
    way from the reference's embedding to the blend's (normalized: FXencoder's interpolation of two references).
    `model`: an `FxEncoder` or a checkpoint folder (None: the shipped encoder-small). `effects`: the chain's
    structure, each effect once. `param_ranges`: "training" (the encoder's training ranges), None (every parameter's
    full range) or a mapping {effect: {parameter: (lo, hi)}} in physical units. `method`: "grad" (Adam through the
    chain and the encoder) or "cmaes" (generations of `popsize` candidates); `iterations` default `MATCH_STEPS`.
    `loudness`: "input" (the output's integrated loudness set to the input's, so that you hear the effects and not a
    level change), "reference", or "off" (as the chain leaves it). `progress(step, steps, best distance)` after each
    step.
    """
    from fxlens.models.encoder import SAMPLE_RATE, FxEncoder, load_encoder, prepare_audio

    if method not in OPTIMIZERS:
        raise ParameterError(f"method must be one of {', '.join(OPTIMIZERS)}, got '{method}'")
    if loudness not in LOUDNESS_MODES:
        raise ParameterError(f"loudness must be one of {', '.join(LOUDNESS_MODES)}, got '{loudness}'")
    iterations = MATCH_STEPS if iterations is None else int(iterations)
    if iterations < 1 or popsize < 2 or not (lr > 0 and sigma0 > 0) or not excerpt_seconds > 0:
        raise ParameterError("need iterations >= 1, popsize >= 2, lr > 0, sigma0 > 0 and excerpt_seconds > 0")
    if blend is not None and not 0.0 <= float(blend_amount) <= 1.0:
        raise ParameterError(f"blend_amount must lie in [0, 1], got {blend_amount}")
    chain = ChainModel(list(effects), search_ranges(param_ranges))
    if method == "cmaes":
        require_cma()
    enc = model if isinstance(model, FxEncoder) else load_encoder(model)
    with _searching(enc):
        for a, what in ((audio, "input"), (reference, "reference"), (blend, "blend reference")):
            if isinstance(a, torch.Tensor) and a.dim() == 3 and a.shape[0] != 1:
                raise ParameterError(f"the {what} must be one clip, got a batch of {a.shape[0]}")
        x = prepare_audio(audio, sample_rate, "input")  # (1, 2, T) float32 at 44.1 kHz: checked, resampled
        r = prepare_audio(reference, reference_sample_rate, "reference")
        r2 = None if blend is None else prepare_audio(blend, blend_sample_rate or reference_sample_rate,
                                                      "blend reference")
        sr = SAMPLE_RATE

        q = None
        with torch.no_grad():  # the query and the target are constants of the search: no graph to backpropagate into
            if query is not None:
                q = enc.text_query([query]) if isinstance(query, str) else enc.audio_query(
                    query, query_sample_rate or sample_rate)
            e_ref = enc.embed_prepared(r, q).double()
            if r2 is not None:
                a = float(blend_amount)
                e_blend = enc.embed_prepared(r2, q).double()
                e_ref = torch.nn.functional.normalize((1.0 - a) * e_ref + a * e_blend, dim=-1)
        windows = excerpt_windows(x, sr, excerpt_seconds, enc.segment_seconds)  # (K, 2, L)
        K, L = windows.shape[0], windows.shape[-1]

        def embed_renders(out: torch.Tensor, n: int) -> torch.Tensor:
            # (n * K, 2, L) renders -> n items of K windows side by side -> (n, D): `embed` of the excerpt as one clip
            joined = out.reshape(n, K, 2, L).permute(0, 2, 1, 3).reshape(n, 2, K * L)
            return enc.embed_prepared(joined, q, batch_size=max(16, n * K))

        with torch.no_grad():
            distance_before = float(cosine_distance(embed_renders(windows, 1).double(), e_ref)[0])

        def step(k: int, best: float) -> None:
            if progress is not None:
                progress(k, total, best)

        if method == "grad":
            total = iterations + 1

            def loss(s: torch.Tensor) -> torch.Tensor:
                out = chain.render(windows, sr, s.expand(K, -1))
                return cosine_distance(embed_renders(out, 1), e_ref.float())[0]

            est = optimize_grad(loss, chain.n_params, iterations, lr, callback=step)
        else:
            total = iterations

            def objective(pop: np.ndarray) -> np.ndarray:
                d = np.full(pop.shape[0], 2.0)
                for i in range(0, pop.shape[0], 8):  # 8 candidates x K windows per render: bounded memory
                    s = torch.as_tensor(pop[i: i + 8], dtype=torch.float32)
                    with torch.no_grad():
                        out = chain.render(windows.repeat(s.shape[0], 1, 1), sr, s.repeat_interleave(K, dim=0))
                        ok = torch.isfinite(out).reshape(s.shape[0], -1).all(dim=1)
                        if bool(ok.any()):
                            e = embed_renders(out, s.shape[0])
                            d[i: i + s.shape[0]][ok.numpy()] = cosine_distance(e.double(), e_ref)[ok].numpy()
                return d

            est = optimize_cmaes(objective, chain.n_params, iterations, popsize, sigma0, seed=seed + 1, callback=step)
        if not math.isfinite(est.distance):
            raise FxlensError("the optimization found no setting that renders finite audio")

        notes = []
        if query is not None:
            notes.append("matching one instrument inside a mix is not reliable yet: on rendered mixes it left the "
                         "stem further from the target than it was (docs/match.md); a reference of the instrument "
                         "alone works")
        if est.distance >= distance_before:
            notes.append(f"no setting of this chain brought your audio closer to the reference than it already is "
                         f"({est.distance:.3f} vs {distance_before:.3f}); try more --iterations, other --effects or "
                         "--full-ranges")
        preset = chain.preset(est.settings, sr)
        with torch.no_grad():
            y = Chain.from_preset(preset)(x, sr)
        gain_db = None
        if loudness != "off":
            target = fxaudio.integrated_loudness(x if loudness == "input" else r, sr)
            have = fxaudio.integrated_loudness(y, sr)
            if bool(torch.isfinite(target).all()) and bool(torch.isfinite(have).all()):
                gain_db = float((target - have).mean())
                if abs(gain_db) > 24.0:
                    notes.append(f"level match needs {gain_db:+.1f} dB; clamped to the gain stage's +-24 dB")
                    gain_db = max(-24.0, min(24.0, gain_db))
                preset = _with_level_gain(preset, gain_db, sr)
                with torch.no_grad():
                    y = Chain.from_preset(preset)(x, sr)
            else:
                notes.append("too quiet to measure loudness (BS.1770 gate): the level was left as the chain made it")
        fxaudio.check_finite(y, "the matched audio")
        peak = float(fxaudio.peak_db(y).max())
        if peak > 0.0:
            notes.append(f"the output peaks at {peak:+.1f} dBFS: keep it as float WAV, or lower its level")
        return MatchResult(y[0], sr, preset, distance_before, float(est.distance), est.history, est.settings, method,
                           iterations, K * L / sr, gain_db, query if isinstance(query, str) or query is None
                           else "audio example", notes)





def _with_level_gain(preset: Mapping, gain_db: float, sample_rate: int) -> dict:
    """`preset` with one more stage at the end: a gain of `gain_db` (the level match)."""
    return preset_from_stages(stages_from_preset(preset) + [(get_effect("gain"), {"gain_db": float(gain_db)})],
                              sample_rate)


def match_files(
    input_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    query: str | None = None,
    query_audio: str | os.PathLike | None = None,
    blend_path: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    **options,
) -> tuple[MatchResult, Path]:
    """`match` on files: writes `output_path` (.wav as float, .flac as 24-bit), the chain beside it as
    ``<name>.preset.json`` (for `fxlens fx apply --preset`), with `json_path` the result as JSON and with `plot_path`
    a figure (`plot_match`). Every input
    is read and checked, and the optimization done, before anything is written. Returns the result and the preset's
    path. `options`: `match`'s keyword arguments."""
    from fxlens.atomic import write_text_atomic
    from fxlens.fx.preset import write_preset
    from fxlens.tasks.process import check_output_path, preset_path_for

    out = check_output_path(output_path)
    for p in (out, json_path, plot_path):
        if p is not None and Path(p).is_dir():
            raise FxlensError(f"output path is a folder: {p}")
    if plot_path is not None and Path(plot_path).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise FxlensError(f"--plot must end in .png, .svg or .pdf: {plot_path}")
    if json_path is not None and Path(json_path).suffix.lower() != ".json":
        raise FxlensError(f"--json must end in .json: {json_path}")
    if query is not None and query_audio is not None:
        raise ParameterError("give a text query or an audio query, not both")
    x, sr = fxaudio.load_with_rate(input_path)
    r, rsr = fxaudio.load_with_rate(reference_path)
    q, q_sr = query, None
    if query_audio is not None:
        q, q_sr = fxaudio.load_with_rate(query_audio)
    if blend_path is not None:
        options["blend"], options["blend_sample_rate"] = fxaudio.load_with_rate(blend_path)
    result = match(x, sr, r, rsr, query=q, query_sample_rate=q_sr, **options)
    if query_audio is not None:
        result.query = f"example {Path(query_audio).name}"
    if plot_path is not None:  # first: the output most likely to fail, and a failure must leave nothing behind
        from fxlens.models.encoder import prepare_audio

        plot_match(result, prepare_audio(x, sr, "input"), prepare_audio(r, rsr, "reference"), plot_path)
    fxaudio.save(out, result.audio, result.sample_rate, subtype="FLOAT" if out.suffix.lower() == ".wav" else "PCM_24")
    preset_path = write_preset(preset_path_for(out), result.preset)
    if json_path is not None:
        doc = {"input": str(input_path), "reference": str(reference_path), "output": str(out),
               **({"blend": str(blend_path), "blend_amount": options.get("blend_amount", 0.5)} if blend_path else {}),
               "preset_file": str(preset_path), **result.to_dict()}
        write_text_atomic(json_path, json.dumps(doc, indent=2) + "\n")
    return result, preset_path


def average_spectrum_db(x: torch.Tensor, sample_rate: int, bands_per_octave: int = 6,
                        f_lo: float = 30.0, f_hi: float = 18000.0) -> tuple[np.ndarray, np.ndarray]:
    """The long-term average spectrum of (1, C, T) audio on a log-frequency grid: Welch's power spectrum of the
    channels' mean (scipy, 8192-sample Hann segments), averaged over 1/`bands_per_octave`-octave bands, in dB
    relative to its own power-weighted mean over 100 Hz-10 kHz (so curves of different levels compare by shape).
    Returns (band centres in Hz, dB); a band without a bin is NaN."""
    from scipy.signal import welch

    mono = x[0].double().mean(0).numpy()
    f, p = welch(mono, fs=sample_rate, nperseg=min(8192, mono.size))
    n = int(np.floor(bands_per_octave * np.log2(f_hi / f_lo))) + 1
    centres = f_lo * 2.0 ** (np.arange(n) / bands_per_octave)
    half = 2.0 ** (0.5 / bands_per_octave)
    power = np.array([p[(f >= c / half) & (f < c * half)].mean() if np.any((f >= c / half) & (f < c * half))
                      else np.nan for c in centres])
    ref = p[(f >= 100.0) & (f <= 10000.0)].mean()
    return centres, 10.0 * np.log10(np.maximum(power, 1e-30) / max(ref, 1e-30))


def plot_match(result: MatchResult, x: torch.Tensor, reference: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a figure of a match: the average spectra (`average_spectrum_db`) of your input, the reference and the
    result, and the embedding distance to the reference step by step (before: the input as it is). `x`,
    `reference`: (1, C, T) at `result.sample_rate`. Written atomically; the format comes from the extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fxlens.atomic import atomic_path

    sr = result.sample_rate
    fig, axes = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    ax = axes[0]
    for audio, label, style in ((x, "your input", dict(color="tab:gray")),
                                (reference, "reference", dict(color="tab:blue", lw=2)),
                                (result.audio[None], "result", dict(color="tab:red", ls="--"))):
        f, db = average_spectrum_db(audio, sr)
        ax.semilogx(f, db, label=label, **style)
    ax.set(title="average spectrum (1/6 octave; each relative to its own 100 Hz-10 kHz level)", xlabel="Hz",
           ylabel="dB")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax = axes[1]
    steps = np.arange(len(result.history) + 1)
    ax.plot(steps, [result.distance_before] + list(result.history), marker=".", color="tab:red")
    ax.axhline(result.distance_before, color="tab:gray", ls=":", label="your input as it is")
    what = f", query: {result.query}" if result.query else ""
    ax.set(title=f"embedding distance to the reference ({result.method}{what}; best so far)",
           xlabel="evaluation (0: your input as it is; 1: the middle of the search box)" if result.method == "grad"
           else "generation (0: your input as it is)", ylabel="cosine distance")
    ax.legend()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)
    return out

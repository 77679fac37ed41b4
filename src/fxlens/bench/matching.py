"""The audio-effects parameter-matching benchmark (Fx-Encoder++ §4.2, ST-ITO protocol), for any embedder.

A *triplet* per test item: a dry input ``x`` (a segment of one song's stem of an instrument), a reference ``r`` (a
segment of *another* song's stem of the same instrument, processed by a chain P) and the target ``y`` (``x``
processed by the same P). The chain's *structure* is fixed and known (`DEFAULT_CHAIN`, the paper's seven effects:
EQ -> multiband compressor -> stereo imager -> gain -> distortion -> delay -> limiter; or any list); its settings
are drawn uniformly in normalized controls inside the encoder's training sub-ranges (`PAIR_RANGES`; full range for
parameters it does not narrow).

Inference-time optimization (ITO) estimates the settings from the reference alone: minimize the cosine distance
between ``emb(chain_θ(x))`` and ``emb(r)`` over θ, then render ``x`` through the estimate and score
``L_d = MRSTFT(output, y)`` (auraloss `MultiResolutionSTFTLoss`, default resolutions: FFT 1024/2048/512, the
loss of [48] in the paper). Lower is better. Two optimizers:

- **CMA-ES** (the `cma` package; ST-ITO: population 32, sigma0 0.33, 100 iterations), gradient-free, for every
  embedder. Candidates of a generation are rendered and embedded as one batch.
- **Gradient descent**: Adam on logits of the controls (θ = lo + (hi - lo) * sigmoid(z), z = 0 at the start, i.e.
  the middle of the search box) through the differentiable chain and a differentiable embedder (the Fx-Encoder++
  network; log-mel statistics and the random CNN can too). The best θ seen is kept.

The chain model and both optimizers are `fxlens.tasks.match`'s, the code `fxlens match` runs on a user's files.

θ lives in the *search box*: the same box the true settings are drawn from, so every method, the random-parameter
baseline included, knows the same prior. Rows of the table, per instrument (mean and 95 % bootstrap CI over
triplets):

- ``input (unprocessed)``: L_d(x, y) — what doing nothing costs; ITO must beat it to be of any use.
- ``random parameters``: the mean L_d of `n_random` random settings per triplet (chance).
- ``ITO CMA-ES · <embedder>``, ``ITO grad · <embedder>``.
- ``oracle (true parameters)``: x rendered with the true θ through the optimizer's own rendering path: L_d ~ 0,
  a check that the rendering the optimizers use is the one that made the target.

Hand-crafted features (MFCC + spectral, log-mel statistics) are z-scored with statistics of unlabeled clips of the
instrument (inputs, references and a random rendering of each input) of `CALIBRATION_TRIPLETS` triplets drawn apart
from the scored ones — fixed, so a triplet's numbers do not depend on how many are scored; the random embedder
(vectors independent of the audio) is skipped: ITO on it is the random-parameter row.

A full run is long on a CPU (on 2 cores about a minute per triplet and seven objectives at 20 CMA-ES generations
of 16, some ten times that at ST-ITO's 100 of 32), so each triplet's results are journaled as it is done
(`TripletJournal`): the same run started again continues where it stopped, a larger `n_triplets` adds triplets,
another embedder adds its rows, and instruments run as separate processes share one ``--out``.

    results = run_matching_benchmark("/data/fxlens-dry", instruments=["bass"], n_triplets=10, iterations=100,
                                     embedders=default_baselines() + encoder_embedders(None))
    results["methods"]["ITO CMA-ES · mfcc+spectral"]["instruments"]["bass"]["L_d"]   # {"mean", "lo", "hi"}
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fxlens import audio as fxaudio
from fxlens.atomic import write_text_atomic
from fxlens.bench.metrics import bootstrap_ci
from fxlens.errors import FxlensError, ParameterError
from fxlens.features.spectral import AUTOFX_SAMPLE_RATE, autofx_features
from fxlens.fx.chain import DEFAULT_POOL, Chain
from fxlens.tasks.match import (  # noqa: F401  (re-exported: the benchmark's names for the ITO core)
    DEFAULT_CHAIN, ITERATIONS, LEARNING_RATE, POPSIZE, SIGMA0, ChainModel, Estimate, cosine_distance, optimize_cmaes,
    optimize_grad, require_cma, search_ranges)

METHODS = ("grad", "cmaes", "both")
REFERENCES = ("stem", "mix")  # the reference: the processed stem alone (the paper), or inside a mixture of its song
MIX_MAX_EFFECTS, MIX_STREAM = 4, 4  # accompaniment chains: 1-4 effects; drawn from generators (seed, inst, i, 4)
ROW_INPUT, ROW_RANDOM, ROW_ORACLE = "input (unprocessed)", "random parameters", "oracle (true parameters)"
ALL = "all"
# Hand-crafted features are z-scored on the clips of this many triplets, drawn from their own generators (stream 3:
# (seed, instrument, i, 3)), apart from the scored triplets (seed, instrument, i).
CALIBRATION_TRIPLETS, CALIBRATION_STREAM = 16, 3
JOURNAL_VERSION = 1


# ------------------------------------------------------------------------------------------------------------------
# Triplets
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Triplet:
    """One test item: `x` (dry input), `reference` (other content through P), `target` (x through P), each
    ``(1, 2, T)`` float32; `settings` ``(P,)`` the true box coordinates of P; `preset` P as an fxlens preset
    (``Chain.from_preset(preset)(x)`` re-renders `target`); `meta` where the two segments come from."""

    instrument: str
    x: torch.Tensor
    reference: torch.Tensor
    target: torch.Tensor
    settings: np.ndarray
    preset: dict
    meta: dict = field(default_factory=dict)


def _seed_seq(seed: int, instrument: str, *more: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(instrument.encode()), *map(int, more)])


def build_triplets(dataset, instrument: str, n: int, seconds: float, seed: int, chain: ChainModel,
                   sample_rate: int = fxaudio.WORKING_SAMPLE_RATE, indices: Sequence[int] | None = None,
                   stream: int | None = None, reference: str = "stem") -> list[Triplet]:
    """`n` triplets of `instrument` from a `StemDataset` (e.g. ``open_dataset(root, split="test")``).

    Triplet i is drawn from its own generator, seeded by (seed, instrument, i): the first k triplets are the same
    whatever `n` is, and `indices` (instead of ``range(n)``) builds any of them alone. `stream` draws from another
    family of generators, (seed, instrument, i, stream): the benchmark's calibration clips, disjoint from the scored
    triplets. Dry segments are brought to -18 LUFS before the chain (as in the retrieval benchmark and the encoder's
    training pairs); the reference comes from another song than the input.

    `reference`: "stem" (the paper's protocol: the reference is the instrument's processed stem alone) or "mix"
    (instrument-wise: that same processed stem inside a mixture of its song — 0 to 3 other stems at the same offset,
    each under its own random chain of 1-4 effects of `DEFAULT_POOL` in the encoder's training ranges, the mixture
    at -18 LUFS, as in the retrieval benchmark's instrument-wise groups). The accompaniment is drawn from its own
    generators, so triplet i has the same input, chain, target and reference stem in both scenarios: they are paired.
    """
    from fxlens.bench.retrieval import InstrumentMixSource, StemSource, _chain_samplers, _draw_clip
    from fxlens.data.pairs import PAIR_RANGES

    if reference not in REFERENCES:
        raise ParameterError(f"reference must be one of {', '.join(REFERENCES)}, got '{reference}'")
    source = StemSource(dataset, instrument) if reference == "stem" else InstrumentMixSource(dataset, instrument)
    samplers = _chain_samplers(DEFAULT_POOL, MIX_MAX_EFFECTS, PAIR_RANGES) if reference == "mix" else {}

    def draw_chain(r: np.random.Generator) -> tuple[int, dict]:
        k = int(r.integers(1, MIX_MAX_EFFECTS + 1))
        return k, samplers[k].sample_presets(1, sample_rate, seed=int(r.integers(2**31 - 1)))[0]

    if len(source.keys) < 2:
        raise FxlensError(f"instrument '{instrument}' has {len(source.keys)} song(s) in this split; "
                          "a triplet needs two (input and reference come from different songs)")
    out = []
    for i in (range(int(n)) if indices is None else indices):
        extra = () if stream is None else (stream,)
        rng = np.random.default_rng(_seed_seq(seed, instrument, i, *extra))
        a = source.keys[int(rng.integers(len(source.keys)))]
        x, mx = _draw_clip(source, a, seconds, sample_rate, rng, exclude=set())
        rest = [k for k in source.keys if k != mx["song"]]
        b = rest[int(rng.integers(len(rest)))]
        r, mr = _draw_clip(source, b, seconds, sample_rate, rng, exclude={mx["song"]})
        settings = rng.random(chain.n_params)
        preset = chain.preset(settings, sample_rate)
        with torch.no_grad():
            wet = Chain.from_preset(preset)(torch.cat([x, r]), sample_rate).float()
        fxaudio.check_finite(wet, f"triplet {i} of '{instrument}'")
        ref, meta = wet[1:2], {"index": int(i), "input": mx, "reference": mr}
        if reference == "mix":
            mix_rng = np.random.default_rng(_seed_seq(seed, instrument, i, *extra, MIX_STREAM))
            ref, others = source._accompany(ref, mr, mix_rng, seconds, sample_rate, draw_chain)
            fxaudio.check_finite(ref, f"triplet {i} of '{instrument}' (reference mixture)")
            meta["reference_others"] = [o["stem"] for o in others if "preset" in o]
        out.append(Triplet(instrument, x, ref.float(), wet[0:1], settings, preset, meta))
    return out


# ------------------------------------------------------------------------------------------------------------------
# Embedders as ITO objectives
# ------------------------------------------------------------------------------------------------------------------


class ITOEmbedder:
    """An embedder seen by the optimizers: ``embed(audio)`` (no gradient, float64) and, when `differentiable`,
    ``embed_torch(audio)`` with gradients to the audio.

    Knows fxlens's embedders: `EncoderEmbedder` (the Fx-Encoder++ network on `segment_seconds` windows, averaged
    and L2-normalized, as `FxEncoder.embed`), `LogMelStatsEmbedder`, `BandStatsEmbedder` and `AutoFXEmbedder`
    (z-scored with statistics set by `fit`; the AutoFX features are differentiable at 44.1 kHz, where they resample
    through `fxlens.features.export.decimate2`), `RandomCNNEmbedder`. Any other object with
    ``embed(audio, sample_rate)`` works with CMA-ES; with ``embed_torch(audio, sample_rate)`` also with gradients.

    `text_query` (encoders only): every clip is embedded through the extractor with the text query of the
    instrument set by `set_instrument` (the instrument-wise objective of ``--reference mix``); the row is named
    "... · text query".
    """

    def __init__(self, embedder: Any, sample_rate: int, text_query: bool = False) -> None:
        from fxlens.bench.baselines import (AutoFXEmbedder, EncoderEmbedder, RandomCNNEmbedder, _MelStandardized,
                                            _Standardized)

        if text_query and not isinstance(embedder, EncoderEmbedder):
            raise ParameterError("only an encoder embeds with a text query")
        self.embedder, self.sample_rate = embedder, int(sample_rate)
        self.text_query, self.query_vector = bool(text_query), None
        self.name = str(getattr(embedder, "name", type(embedder).__name__)) + (" · text query" if text_query else "")
        self.standardized = isinstance(embedder, _Standardized)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._torch: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._features: Callable[[torch.Tensor, int], torch.Tensor] | None = getattr(embedder, "features", None)
        if isinstance(embedder, EncoderEmbedder):
            self._torch = self._encoder_forward
            self.is_encoder = True
            for p in embedder.model.parameters():  # gradients to the audio only
                p.requires_grad_(False)
        else:
            self.is_encoder = False
            if isinstance(embedder, AutoFXEmbedder) and self.sample_rate == 2 * AUTOFX_SAMPLE_RATE:
                # soxr (numpy) has no gradient; its own 2:1 filter as a torch convolution gives the same features
                # (within 0.2 %, tests/test_features_export.py), with gradients. Used for every row of this
                # embedder, fitting included, so that CMA-ES and gradient descent see one objective
                from fxlens.features.export import decimate2

                self._features = lambda a, sr: autofx_features(a, sr, resample=decimate2)
                self._torch = lambda a: self._standardize(self._features(a, self.sample_rate))
            elif isinstance(embedder, _MelStandardized):  # log-mel stats, band statistics: torch all the way
                self._torch = lambda a: self._standardize(embedder.features(a, self.sample_rate))
            elif isinstance(embedder, RandomCNNEmbedder):
                from fxlens.features.mel import log_mel

                self._torch = lambda a: embedder.model(log_mel(a.to(embedder.device), self.sample_rate))
            elif hasattr(embedder, "embed_torch"):
                self._torch = lambda a: embedder.embed_torch(a, self.sample_rate)

    @property
    def differentiable(self) -> bool:
        return self._torch is not None

    def _encoder_forward(self, audio: torch.Tensor) -> torch.Tensor:
        from fxlens.models.encoder import SAMPLE_RATE

        if self.sample_rate != SAMPLE_RATE:
            raise ParameterError(f"the encoder runs at {SAMPLE_RATE} Hz; the benchmark audio is at {self.sample_rate}")
        model = self.embedder.model.eval()
        if self.text_query and self.query_vector is None:
            raise FxlensError(f"'{self.name}': set_instrument first")
        # every window of the batch through the encoder at once (a CMA-ES generation is one call)
        return model.embed_prepared(audio.to(model.device, torch.float32), self.query_vector, batch_size=1 << 20)

    def set_instrument(self, name: str) -> None:
        """The instrument whose text query a `text_query` embedder uses from now on (others: nothing to do)."""
        if self.text_query:
            with torch.no_grad():
                self.query_vector = self.embedder.model.text_query([name])

    def _raw_features(self, audio: torch.Tensor) -> torch.Tensor:
        f = self._features(audio, self.sample_rate).double()
        return torch.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)

    def _standardize(self, f: torch.Tensor) -> torch.Tensor:
        f = torch.nan_to_num(f.double().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
        if self.mean is None:
            return f
        return (f - self.mean) / self.std

    def fit(self, clips: torch.Tensor, batch_size: int = 32) -> "ITOEmbedder":
        """Standardization statistics of hand-crafted features from unlabeled clips ``(M, 2, T)`` (others: no-op).
        A feature constant over the clips gets unit scale (it then only shifts every vector alike)."""
        if self.standardized:
            with torch.no_grad():
                f = torch.cat([self._raw_features(clips[i: i + batch_size]).cpu()
                               for i in range(0, clips.shape[0], batch_size)])
            std = f.std(0) if f.shape[0] > 1 else torch.ones_like(f[0])
            self.mean, self.std = f.mean(0), torch.where(std > 1e-8, std, torch.ones_like(std))
        return self

    def embed(self, audio: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """``(B, D)`` float64 embeddings, without gradients."""
        outs = []
        with torch.no_grad():
            for i in range(0, audio.shape[0], batch_size):
                a = audio[i: i + batch_size]
                if self._torch is not None:
                    e = self._torch(a)
                elif self.standardized:
                    e = self._standardize(self._raw_features(a))
                else:
                    e = self.embedder.embed(a, self.sample_rate)
                outs.append(e.detach().double().cpu())
        return torch.cat(outs)

    def embed_torch(self, audio: torch.Tensor) -> torch.Tensor:
        if self._torch is None:
            raise FxlensError(f"embedder '{self.name}' is not differentiable: use CMA-ES")
        return self._torch(audio)


# ------------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------------


class AudioDistance:
    """L_d: auraloss's multi-resolution STFT loss (spectral convergence + log magnitude, FFT 1024/2048/512) of one
    clip against another, per item."""

    def __init__(self) -> None:
        import auraloss

        self.loss = auraloss.freq.MultiResolutionSTFTLoss()

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.loss(output.float().cpu(), target.float().cpu()))


def _summary(values: Sequence[float], n_boot: int, seed: int) -> dict:
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    return {"mean": float(v.mean()) if v.size else float("nan"), "lo": lo, "hi": hi, "n": int(v.size)}


def match_triplet(triplet: Triplet, chain: ChainModel, embedder: ITOEmbedder, optimizer: str, sample_rate: int,
                  iterations: int, seed: int, popsize: int = POPSIZE, sigma0: float = SIGMA0,
                  lr: float = LEARNING_RATE, batch_size: int = 32) -> Estimate:
    """Estimate the triplet's chain settings from its reference with one embedder and one optimizer."""
    e_ref = embedder.embed(triplet.reference, batch_size)
    x = triplet.x
    if optimizer == "cmaes":
        def objective(pop: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = chain.render(x, sample_rate, torch.as_tensor(pop, dtype=torch.float32, device=x.device))
            ok = torch.isfinite(out).flatten(1).all(dim=1).cpu()
            d = torch.full((pop.shape[0],), 2.0, dtype=torch.float64)
            if bool(ok.any()):
                d[ok] = cosine_distance(embedder.embed(out[ok.to(out.device)], batch_size), e_ref)
            return d.numpy()

        return optimize_cmaes(objective, chain.n_params, iterations, popsize, sigma0, seed)
    if optimizer == "grad":
        def loss(s: torch.Tensor) -> torch.Tensor:
            e = embedder.embed_torch(chain.render(x, sample_rate, s))
            return cosine_distance(e.float(), e_ref.to(device=e.device, dtype=torch.float32)).mean().cpu()

        return optimize_grad(loss, chain.n_params, iterations, lr)
    raise ParameterError(f"optimizer must be 'cmaes' or 'grad', got '{optimizer}'")


# ------------------------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------------------------


def _row(kind: str, embedder: str | None = None, optimizer: str | None = None) -> dict:
    return {"kind": kind, "embedder": embedder, "optimizer": optimizer, "instruments": {}}


def _ito_plan(embedders: Sequence[ITOEmbedder], method: str,
              gradient_baselines: bool) -> list[tuple[str, ITOEmbedder, str]]:
    """(row name, embedder, optimizer) in table order: CMA-ES for every embedder, gradients for the encoders (and
    for the differentiable baselines with `gradient_baselines`)."""
    plan = []
    for e in embedders:
        if method in ("cmaes", "both"):
            plan.append((f"ITO CMA-ES · {e.name}", e, "cmaes"))
        if method in ("grad", "both") and e.differentiable and (e.is_encoder or gradient_baselines):
            plan.append((f"ITO grad · {e.name}", e, "grad"))
    return plan


def embedder_identity(embedder: ITOEmbedder) -> str:
    """What a journaled row was computed with: the embedder's class and, for a network, a hash of its weights (two
    checkpoints in folders of the same name are told apart); for hand-crafted features, the class and name."""
    import hashlib

    inner = embedder.embedder
    model = getattr(inner, "model", None)
    if isinstance(model, torch.nn.Module):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"{type(inner).__name__}:{h.hexdigest()[:16]}" + (":text-query" if embedder.text_query else "")
    return f"{type(inner).__name__}:{embedder.name}"


def journal_dir(out_json: str | os.PathLike) -> Path:
    """Where a run writing `out_json` journals its triplets: ``m.json`` -> ``m.journal/<instrument>.jsonl``."""
    out = Path(out_json)
    return out.with_name(out.stem + ".journal")


class TripletJournal:
    """Per-triplet results of one instrument, appended to a JSON-lines file as each triplet is done, so that a long
    run can stop and continue (`fxlens bench match` run again with the same settings; a larger ``--triplets`` adds
    triplets, another ``--model`` adds rows). The first line holds the settings that decide the numbers (`key`);
    each further line ``{"index", "meta", "rows": {row: {"L_d", "param_mae", "embedding_distance", "embedder"}}}``.
    A line cut short by a killed process is ignored (that triplet is done again). `path` None: memory only.
    """

    def __init__(self, path: Path | None, key: Mapping, restart: bool = False) -> None:
        self.path, self.key = path, json.loads(json.dumps(key))
        self.rows: dict[int, dict[str, dict]] = {}
        self.meta: dict[int, dict] = {}
        if path is None:
            return
        if restart and path.exists():
            path.unlink()
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        try:
            head = json.loads(lines[0])["config"] if lines else None
        except (ValueError, KeyError, TypeError):
            head = None
        if head != self.key:
            differ = sorted(k for k in set(self.key) | set(head or {}) if (head or {}).get(k) != self.key.get(k))
            raise FxlensError(f"'{path}' holds triplets of a run with other settings ({', '.join(differ) or 'unreadable'}"
                              "): give another --out, or --restart to discard them")
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                i, rows = int(rec["index"]), dict(rec["rows"])
            except (ValueError, KeyError, TypeError):
                continue  # cut short
            self.rows.setdefault(i, {}).update(rows)
            self.meta.setdefault(i, rec.get("meta") or {})

    def done(self, i: int, row: str, identity: str | None) -> bool:
        """Whether row `row` of triplet `i` is journaled; an entry computed by another embedder is an error."""
        rec = self.rows.get(i, {}).get(row)
        if rec is None:
            return False
        if rec.get("embedder") != identity:
            raise FxlensError(f"'{self.path}' holds row '{row}' computed with another model of that name: "
                              "give another --out, or --restart to discard the journal")
        return True

    def append(self, i: int, meta: Mapping, rows: Mapping[str, Mapping]) -> None:
        self.rows.setdefault(i, {}).update(rows)
        self.meta.setdefault(i, dict(meta))
        if self.path is None or not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        cut = False
        if not new and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
        with open(self.path, "a") as f:  # one write per line: a kill leaves at most the last line cut short
            text = json.dumps({"config": self.key}) + "\n" if new else ("\n" if cut else "")
            f.write(text + json.dumps({"index": int(i), "meta": meta, "rows": rows}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def run_matching_benchmark(
    data_root: str | os.PathLike,
    instruments: Sequence[str] | None = None,
    n_triplets: int = 100,
    seconds: float = 2.0,
    iterations: int = ITERATIONS,
    method: str = "both",
    embedders: Sequence[Any] | None = None,
    effects: Sequence[str] = DEFAULT_CHAIN,
    param_ranges: Mapping | None | str = "training",
    n_random: int = 4,
    popsize: int = POPSIZE,
    sigma0: float = SIGMA0,
    lr: float = LEARNING_RATE,
    gradient_baselines: bool = False,
    seed: int = 0,
    split: str = "test",
    sample_rate: int = fxaudio.WORKING_SAMPLE_RATE,
    n_boot: int = 1000,
    batch_size: int = 32,
    out_json: str | os.PathLike | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    device: str | torch.device | None = None,
    calibration_triplets: int = CALIBRATION_TRIPLETS,
    restart: bool = False,
    reference: str = "stem",
) -> dict:
    """Build the triplets of each instrument of `split` and score every method on them (see the module docstring).

    `instruments`: None for every instrument with at least two songs in the split. `embedders`: default
    `fxlens.bench.baselines.default_baselines` (add `encoder_embedders(...)` for Fx-Encoder++). `method`: "cmaes",
    "grad" or "both". `param_ranges`: "training" (`PAIR_RANGES`), None (full ranges) or a mapping. Everything is
    checked before any audio is rendered. `device`: where chains render and the optimizers run (the embedders
    stay where they were built; default CPU). Hand-crafted features are z-scored with statistics of
    `calibration_triplets` triplets drawn apart from the scored ones, so a triplet's numbers do not depend on how
    many others are scored. With `out_json`, each triplet's results are journaled as it is done
    (`journal_dir(out_json)/<instrument>.jsonl`, `TripletJournal`): the same call again continues where it stopped
    (`restart` discards the journal). `reference`: "stem" (the paper's protocol) or "mix" (the reference stem inside
    a mixture of its song, `build_triplets`; each encoder then also gets rows with the instrument's text query on
    both sides, the objective of ``fxlens match --query``). Returns ``{"config", "instruments": {name: {"triplets": [...]}},
    "methods": {row: {"kind", "embedder", "optimizer", "instruments": {name|"all": {"L_d", "param_mae",
    "embedding_distance", "values"}}}}, "table": markdown}`` and, with `out_json`, writes it atomically.
    """
    from fxlens.data.stems import open_dataset

    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    if n_triplets < 1 or iterations < 1 or n_random < 1 or popsize < 2 or calibration_triplets < 2:
        raise ParameterError("need n_triplets >= 1, iterations >= 1, n_random >= 1, popsize >= 2 and "
                             "calibration_triplets >= 2")
    if reference not in REFERENCES:
        raise ParameterError(f"reference must be one of {', '.join(REFERENCES)}, got '{reference}'")
    if not seconds >= 0.25:
        raise ParameterError(f"clips must be at least 0.25 s long, got {seconds:g} s")
    param_ranges = search_ranges(param_ranges)
    chain = ChainModel(list(effects), param_ranges)
    if method in ("cmaes", "both"):
        require_cma()
    if embedders is None:
        from fxlens.bench.baselines import default_baselines

        embedders = default_baselines(seed=seed)
    from fxlens.bench.baselines import RandomEmbedder

    from fxlens.bench.baselines import EncoderEmbedder

    ito = [ITOEmbedder(e, sample_rate) for e in embedders if not isinstance(e, RandomEmbedder)]
    if reference == "mix":
        ito += [ITOEmbedder(e, sample_rate, text_query=True) for e in embedders if isinstance(e, EncoderEmbedder)]
    names = [e.name for e in ito]
    if len(set(names)) != len(names):
        raise FxlensError(f"two embedders share a name: {', '.join(names)}")
    plan = _ito_plan(ito, method, gradient_baselines)
    if method == "grad" and not plan:
        raise FxlensError("--method grad needs a differentiable embedder: give an encoder checkpoint (--model)")

    ds = open_dataset(data_root, split=split)
    available = {name: len(ds.songs_with(name)) for name in ds.instruments()}
    if instruments is None:
        chosen = [n for n, k in available.items() if k >= 2]
        if not chosen:
            raise FxlensError(f"no instrument has two songs in the '{split}' split of '{data_root}'")
    else:
        chosen = list(dict.fromkeys(instruments))
        for n in chosen:
            if n not in available:
                raise FxlensError(f"no '{n}' stems in the '{split}' split of '{data_root}' "
                                  f"(it has: {', '.join(sorted(available)) or 'none'})")
            if available[n] < 2:
                raise FxlensError(f"instrument '{n}' has only {available[n]} song in the '{split}' split; "
                                  "a triplet needs two")

    measure = AudioDistance()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rows: dict[str, dict] = {ROW_INPUT: _row("input"), ROW_RANDOM: _row("random")}
    for row, e, opt in plan:
        rows[row] = _row("ito", e.name, opt)
    rows[ROW_ORACLE] = _row("oracle")
    identity = {row: embedder_identity(e) for row, e, _ in plan}
    key = {"journal": JOURNAL_VERSION, "data_root": str(Path(data_root).resolve()), "split": split,
           "seconds": seconds, "sample_rate": sample_rate, "chain": chain.names,
           "search_box": {"lo": chain.lo.tolist(), "hi": chain.hi.tolist()}, "iterations": iterations,
           "popsize": popsize, "sigma0": sigma0, "lr": lr, "n_random": n_random, "seed": seed,
           "calibration_triplets": calibration_triplets}
    if reference != "stem":  # so that journals of the paper's protocol, written before the option, stay valid
        key["reference"] = reference
    values: dict[str, dict[str, dict[str, list[float]]]] = {r: {} for r in rows}
    info: dict[str, dict] = {}

    for inst in chosen:
        for e in ito:
            e.set_instrument(inst)
        journal = TripletJournal(journal_dir(out_json) / f"{inst}.jsonl" if out_json is not None else None,
                                 {**key, "instrument": inst}, restart)
        steps = 1 + len(plan)

        def missing(i: int) -> list[str]:
            base = [] if journal.done(i, ROW_INPUT, None) else [ROW_INPUT]
            return base + [row for row, _, _ in plan if not journal.done(i, row, identity[row])]

        todo = {i: missing(i) for i in range(n_triplets)}
        todo = {i: m for i, m in todo.items() if m}
        done = n_triplets * steps - sum(len(m) for m in todo.values())  # input/random/oracle: one step
        if progress:
            progress(inst, done, n_triplets * steps)
        needed = {row for need in todo.values() for row in need}
        if any(e.standardized and row in needed for row, e, _ in plan):  # only rows still to do need the fit
            fit_clips = []  # the calibration triplets: inputs, references, one random rendering of each input
            for t in build_triplets(ds, inst, calibration_triplets, seconds, seed, chain, sample_rate,
                                    stream=CALIBRATION_STREAM, reference=reference):
                g = torch.Generator().manual_seed(int(np.random.default_rng(
                    _seed_seq(seed, inst, t.meta["index"], CALIBRATION_STREAM, 1)).integers(2**62)))
                with torch.no_grad():
                    wet = chain.render(t.x, sample_rate, torch.rand(1, chain.n_params, generator=g))
                fit_clips += [t.x, t.reference, wet]
            fit = torch.cat(fit_clips).to(dev)
            for e in ito:
                e.fit(fit, batch_size)
            del fit, fit_clips
        for i, need in todo.items():
            t = build_triplets(ds, inst, 1, seconds, seed, chain, sample_rate, indices=[i], reference=reference)[0]
            t.x, t.reference = t.x.to(dev), t.reference.to(dev)  # rendered on the CPU; optimized on `device`
            new: dict[str, dict] = {}
            if ROW_INPUT in need:  # the rows that need no embedder (one progress step)
                new[ROW_INPUT] = {"L_d": measure(t.x, t.target), "embedder": None}
                g = torch.Generator().manual_seed(int(np.random.default_rng(_seed_seq(seed, inst, i, 1)).integers(2**62)))
                draws = torch.rand(n_random, chain.n_params, generator=g, dtype=torch.float64)
                with torch.no_grad():
                    wet = chain.render(t.x, sample_rate, draws.float())
                    oracle = chain.render(t.x, sample_rate, torch.as_tensor(t.settings, dtype=torch.float32)[None])
                new[ROW_RANDOM] = {"L_d": float(np.mean([measure(w[None], t.target) for w in wet])),
                                   "param_mae": float((draws - torch.as_tensor(t.settings)).abs().mean()),
                                   "embedder": None}
                new[ROW_ORACLE] = {"L_d": measure(oracle, t.target), "param_mae": 0.0, "embedder": None}
                done += 1
                if progress:
                    progress(inst, done, n_triplets * steps)
            for row, e, opt in plan:
                if row not in need:
                    continue
                cma_seed = int(np.random.default_rng(_seed_seq(seed, inst, i, 2)).integers(1, 2**31 - 2))
                est = match_triplet(t, chain, e, opt, sample_rate, iterations, cma_seed, popsize, sigma0, lr,
                                    batch_size)
                with torch.no_grad():
                    out = chain.render(t.x, sample_rate, torch.as_tensor(est.settings, dtype=torch.float32)[None])
                new[row] = {"L_d": measure(out, t.target), "param_mae": float(np.abs(est.settings - t.settings).mean()),
                            "embedding_distance": est.distance, "embedder": identity[row]}
                done += 1
                if progress:
                    progress(inst, done, n_triplets * steps)
            journal.append(i, {**t.meta, "preset": t.preset}, new)
        for row in rows:
            v = values[row].setdefault(inst, {"L_d": [], "param_mae": [], "embedding_distance": []})
            for i in range(n_triplets):
                rec = journal.rows[i][row]
                for k in v:
                    if rec.get(k) is not None:
                        v[k].append(float(rec[k]))
        info[inst] = {"n_triplets": n_triplets, "n_songs": available[inst],
                      "triplets": [journal.meta[i] for i in range(n_triplets)]}

    methods: dict[str, dict] = {}
    for row, spec in rows.items():
        pooled: dict[str, list[float]] = {"L_d": [], "param_mae": [], "embedding_distance": []}
        for inst in chosen:
            v = values[row][inst]
            spec["instruments"][inst] = {**{k: _summary(v[k], n_boot, seed) for k in v if v[k]}, "values": v["L_d"]}
            for k in pooled:
                pooled[k] += v[k]
        spec["instruments"][ALL] = {k: _summary(pooled[k], n_boot, seed) for k in pooled if pooled[k]}
        if spec["kind"] in ("ito", "random"):  # paired with the unprocessed input: the same triplets
            diffs = {inst: np.subtract(values[row][inst]["L_d"], values[ROW_INPUT][inst]["L_d"]) for inst in chosen}
            diffs[ALL] = np.concatenate(list(diffs.values()))
            for inst, d in diffs.items():
                spec["instruments"][inst]["vs_input"] = {**_summary(d, n_boot, seed), "closer": int((d < 0).sum())}
        methods[row] = spec
    config = {"data_root": str(data_root), "split": split, "instruments": chosen, "n_triplets": n_triplets,
              "seconds": seconds, "sample_rate": sample_rate, "chain": chain.names,
              "param_names": chain.param_names,
              "search_box": {"lo": chain.lo.tolist(), "hi": chain.hi.tolist()},
              "param_ranges": {k: {p: list(r) for p, r in v.items()} for k, v in (param_ranges or {}).items()
                               if k in chain.names},
              "reference": reference, "method": method, "iterations": iterations, "popsize": popsize, "sigma0": sigma0, "lr": lr,
              "n_random": n_random, "seed": seed, "n_boot": n_boot, "calibration_triplets": calibration_triplets,
              "embedders": identity,
              "L_d": "auraloss MultiResolutionSTFTLoss (FFT 1024/2048/512)",
              "objective": "cosine distance of embeddings"}
    results = {"config": config, "instruments": info, "methods": methods}
    results["table"] = markdown_report(results)
    if out_json is not None:
        write_text_atomic(out_json, json.dumps(results, indent=1))
    return results


def _cell(s: Mapping | None, digits: int = 3) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    return f"{s['mean']:.{digits}f} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def markdown_table(results: Mapping, metric: str = "L_d") -> str:
    cols = list(results["config"]["instruments"]) + [ALL]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row, spec in results["methods"].items():
        cells = [_cell(spec["instruments"].get(c, {}).get(metric)) for c in cols]
        if all(c == "-" for c in cells):
            continue
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(results: Mapping) -> str:
    """Markdown: each row's L_d minus the unprocessed input's on the same triplets, mean [95% CI], and on how many
    triplets it is closer to the target than the input."""
    cols = list(results["config"]["instruments"]) + [ALL]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row, spec in results["methods"].items():
        if "vs_input" not in spec["instruments"].get(ALL, {}):
            continue
        cells = []
        for c in cols:
            v = spec["instruments"][c]["vs_input"]
            cells.append(f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] · {v['closer']}/{v['n']}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(results: Mapping) -> str:
    c = results["config"]
    head = (f"## Parameter matching (Fx-Encoder++ §4.2, ST-ITO): {c['n_triplets']} triplets per instrument, "
            f"{c['seconds']:g} s, split '{c['split']}'"
            + (", the reference stem inside a mixture of its song" if c.get("reference") == "mix" else "") + "\n\n"
            f"Chain: {' -> '.join(c['chain'])} ({len(c['param_names'])} controls). ITO: cosine distance of "
            f"embeddings; CMA-ES pop {c['popsize']}, sigma0 {c['sigma0']:g}; Adam lr {c['lr']:g} on logits; "
            f"{c['iterations']} iterations. Random parameters: mean of {c['n_random']} draws.\n\n")
    return (head + "### L_d = multi-resolution STFT distance(output, target), mean [95% CI] (lower is better)\n\n"
            + markdown_table(results, "L_d")
            + "\n### Paired with the unprocessed input: L_d(method) - L_d(input) on the same triplets, mean [95% "
            "CI] · triplets closer to the target than the input (negative: closer)\n\n"
            + paired_table(results)
            + "\n### Mean absolute error of the estimated controls (search-box units, 0..1; lower is better)\n\n"
            + markdown_table(results, "param_mae"))

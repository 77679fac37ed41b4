"""Retrieval metrics: cosine-similarity ranking, Recall@K, MRR@10 / mAP@10, bootstrap confidence intervals.

Conventions (so numbers compare with Fx-Encoder++ / CLAP-style retrieval tables):

- Scores are cosine similarities between each query and its own N candidates.
- Ties are broken *pessimistically*: a relevant candidate is ranked below every non-relevant candidate with the same
  score. A constant embedder therefore scores 0, not 1 (an optimistic tie rule would reward collapse).
- ``R@K`` is the fraction of queries with at least one relevant candidate in the top K (the "recall" of CLAP-style
  retrieval tables; with one relevant item it is the hit rate).
- ``MRR@10`` is the mean of ``1 / rank`` of the first relevant candidate, 0 when it is below rank 10.
  ``mAP@10`` is the mean over queries of ``AP@10 = sum_{k<=10} P@k rel_k / min(n_relevant, 10)``. With exactly one
  relevant candidate per query (the effects-retrieval protocol) AP@10 equals 1/rank, so mAP@10 == MRR@10; the
  benchmark reports it under the name MRR@10.
- Confidence intervals: percentile bootstrap over queries (resampled with replacement), seeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fxlens.errors import ParameterError

DEFAULT_KS = (1, 5, 10)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def cosine_scores(queries, candidates) -> np.ndarray:
    """Cosine similarity of each query ``(Q, D)`` with its candidates ``(Q, N, D)``: ``(Q, N)`` float64."""
    q, c = _np(queries), _np(candidates)
    if q.ndim != 2 or c.ndim != 3 or c.shape[0] != q.shape[0] or c.shape[2] != q.shape[1]:
        raise ParameterError(f"need queries (Q, D) and candidates (Q, N, D), got {q.shape} and {c.shape}")
    qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    cn = c / np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
    return np.einsum("qd,qnd->qn", qn, cn)


def relevance_mask(target, n_candidates: int) -> np.ndarray:
    """``(Q, N)`` boolean mask from the index of the one true target per query ``(Q,)``."""
    t = np.asarray(_np(target), dtype=np.int64).reshape(-1)
    if t.size and (t.min() < 0 or t.max() >= n_candidates):
        raise ParameterError(f"target indices must be in [0, {n_candidates}), got {t.min()}..{t.max()}")
    mask = np.zeros((t.size, n_candidates), dtype=bool)
    mask[np.arange(t.size), t] = True
    return mask


def ranks_of_relevant(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """``(Q, N)`` 0/1 relevance in ranked order (best first), pessimistic on ties."""
    # lexsort: last key is primary -> sort by descending score, then non-relevant (0) before relevant (1)
    order = np.stack([np.lexsort((relevant[i].astype(np.int8), -scores[i])) for i in range(scores.shape[0])])
    return np.take_along_axis(relevant, order, axis=1)


def per_query_metrics(scores, relevant, ks: Sequence[int] = DEFAULT_KS, cutoff: int = 10) -> dict[str, np.ndarray]:
    """Per-query values ``{"R@k": (Q,), "MRR@10": (Q,), "mAP@10": (Q,), "rank": (Q,)}`` from scores and relevance.

    ``rank`` is the 1-based rank of the first relevant candidate (N + 1 when a query has none).
    """
    scores = _np(scores)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ParameterError(f"scores and relevance must both be (Q, N), got {scores.shape} and {relevant.shape}")
    Q, N = scores.shape
    ranked = ranks_of_relevant(scores, relevant)
    has = ranked.any(axis=1)
    first = np.where(has, ranked.argmax(axis=1) + 1, N + 1)
    out: dict[str, np.ndarray] = {f"R@{k}": (first <= k).astype(np.float64) for k in ks}
    out[f"MRR@{cutoff}"] = np.where(first <= cutoff, 1.0 / first, 0.0)
    top = ranked[:, :cutoff].astype(np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    n_rel = np.minimum(relevant.sum(axis=1), cutoff)
    out[f"mAP@{cutoff}"] = np.where(n_rel > 0, (precision * top).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    out["rank"] = first.astype(np.float64)
    return out


def bootstrap_ci(values, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling items with replacement), seeded."""
    v = _np(values).reshape(-1)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(n_boot), v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - confidence) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def ratio_to_best_ci(values, baselines, n_boot: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """How many times the best of several baselines a method scores, with a paired percentile bootstrap interval.

    `values` ``(Q,)``: the method's per-query metric; `baselines` ``(K, Q)``: each baseline's on the same queries in
    the same order. Each resample draws one set of queries for all of them and divides the method's mean by the
    best baseline mean *of that resample* (so the choice of the best baseline is inside the interval). Returns
    ``{"ratio", "lo", "hi", "best": index of the best baseline on all queries}``; a zero denominator gives inf.
    """
    v = _np(values).reshape(-1).astype(np.float64)
    b = _np(baselines).reshape(-1, v.size).astype(np.float64)

    def ratio(num, den):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, np.nan))

    means = b.mean(axis=1)
    out = {"ratio": float(ratio(v.mean(), means.max())), "best": int(means.argmax())}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(n_boot), v.size))
    r = ratio(v[idx].mean(axis=1), b[:, idx].mean(axis=2).max(axis=0))
    a = (1.0 - confidence) / 2.0
    r = r[~np.isnan(r)]
    if r.size:  # "inverted_cdf": an actual resample's ratio, no interpolation (safe with inf)
        out["lo"], out["hi"] = (float(np.quantile(r, p, method="inverted_cdf")) for p in (a, 1.0 - a))
    else:
        out["lo"], out["hi"] = float("nan"), float("nan")
    return out


def summarize(per_query: Mapping[str, np.ndarray], metrics: Sequence[str] | None = None, n_boot: int = 1000,
              seed: int = 0, confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "lo", "hi"}}`` (fractions in [0, 1]) plus ``"n"``: the number of queries."""
    names = [m for m in per_query if m != "rank"] if metrics is None else list(metrics)
    out: dict = {}
    for m in names:
        v = _np(per_query[m])
        lo, hi = bootstrap_ci(v, n_boot, confidence, seed)
        out[m] = {"mean": float(v.mean()) if v.size else float("nan"), "lo": lo, "hi": hi}
    out["n"] = int(_np(per_query[names[0]]).size) if names else 0
    return out


def retrieval_metrics(queries, candidates, target=None, relevant=None, ks: Sequence[int] = DEFAULT_KS,
                      cutoff: int = 10, n_boot: int = 1000, seed: int = 0) -> dict:
    """Rank each query's candidates by cosine similarity and score the ranking.

    Args:
        queries: ``(Q, D)`` query embeddings; candidates: ``(Q, N, D)`` each query's candidate embeddings.
        target: ``(Q,)`` index of the one true candidate per query, or
        relevant: ``(Q, N)`` boolean relevance mask (give exactly one of the two).
        ks: the K of R@K; cutoff: the K of MRR@K / mAP@K.
    Returns ``{"per_query": {metric: (Q,) array}, "summary": {metric: {"mean", "lo", "hi"}, "n": Q}}``.
    """
    scores = cosine_scores(queries, candidates)
    if (target is None) == (relevant is None):
        raise ParameterError("give exactly one of target (indices) or relevant (mask)")
    mask = relevance_mask(target, scores.shape[1]) if relevant is None else np.asarray(_np(relevant) > 0)
    pq = per_query_metrics(scores, mask, ks, cutoff)
    return {"per_query": pq, "summary": summarize(pq, n_boot=n_boot, seed=seed)}

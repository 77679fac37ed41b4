"""Figures of the retrieval benchmark (matplotlib, Agg backend: no display needed).

- `plot_recall_vs_effects`: R@K against the number of effects in the chain, one line per method (Fx-Encoder++
  Figure 2): a row for the mixture-level groups (pooled), a row for the instrument-wise groups (pooled; one line
  per method and protocol), a column per K.
- `plot_tsne`: a t-SNE (scikit-learn) of embeddings of a few chains, each on many different contents, coloured by
  chain, one panel per method (FXencoder's figure): an effects embedding shows one tight cluster per chain.

Files are written atomically; the functions return the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fxlens.atomic import atomic_path

KS = (1, 5, 10)
_STYLES = {"oracle": "-", "mixture": ":", "audio query": "--", "text query": "-."}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    _pyplot().close(fig)
    return path


def _curve(by_n_effects: Mapping[str, Mapping], metric: str) -> tuple[list[int], list[float], list[float], list[float]]:
    ks = sorted(int(k) for k in by_n_effects)
    mean = [100 * by_n_effects[str(k)][metric]["mean"] for k in ks]
    lo = [100 * by_n_effects[str(k)][metric]["lo"] for k in ks]
    hi = [100 * by_n_effects[str(k)][metric]["hi"] for k in ks]
    return ks, mean, lo, hi


def plot_recall_vs_effects(results: Mapping, path: str | os.PathLike, ks: Sequence[int] = KS,
                           intervals: bool = False) -> Path:
    """R@K (%) against the number of effects per method; `results` as `run_retrieval_benchmark` returns it.
    `intervals`: shade the bootstrap 95 % intervals (wide: each count holds ~1/8 of the queries)."""
    plt = _pyplot()
    methods = results.get("methods", results)
    rows = []
    if any(r.get("by_n_effects") for r in methods.values()):
        rows.append(("mixture level", {n: r["by_n_effects"] for n, r in methods.items() if r.get("by_n_effects")}))
    inst = {}
    for n, r in methods.items():
        for view, summary in r.get("instrument_wise", {}).get("overall", {}).items():
            inst[f"{n} / {view}"] = summary["by_n_effects"]
    if inst:
        rows.append(("instrument-wise", inst))
    if not rows:
        rows.append(("no results", {}))
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(methods)}
    fig, axes = plt.subplots(len(rows), len(ks), figsize=(4.2 * len(ks), 3.4 * len(rows)), squeeze=False)
    for r, (title, curves) in enumerate(rows):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            for label, by in curves.items():
                method, _, view = label.partition(" / ")
                x, mean, lo, hi = _curve(by, f"R@{k}")
                # one colour per method, one line style per instrument-wise protocol
                ax.plot(x, mean, marker="o", markersize=3, color=colours[method], linestyle=_STYLES.get(view, "-"),
                        label=label)
                if intervals:
                    ax.fill_between(x, lo, hi, color=colours[method], alpha=0.12)
            ax.set_title(f"{title}: R@{k}")
            ax.set_xlabel("number of effects")
            ax.set_ylabel(f"R@{k} (%)")
            ax.grid(alpha=0.3)
        if curves:
            axes[r][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def tsne_2d(embeddings: np.ndarray, seed: int = 0, perplexity: float = 15.0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of (n, D) embeddings (cosine distance, PCA init, seeded)."""
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float64)
    perplexity = min(perplexity, max((x.shape[0] - 1) / 3.0, 1.0))
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(x)


def plot_tsne(embeddings: Mapping[str, np.ndarray], labels: Sequence[int], path: str | os.PathLike,
              seed: int = 0) -> Path:
    """One t-SNE panel per method of {method: (n, D) embeddings}, points coloured by chain (`labels`, (n,))."""
    plt = _pyplot()
    labels = np.asarray(labels)
    n = max(len(embeddings), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.8 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if labels.max(initial=0) < 10 else "tab20")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, emb) in zip(axes.flat, embeddings.items()):
        xy = tsne_2d(np.asarray(emb), seed)
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(v) % cmap.N) for v in labels], s=14)
        ax.set_title(name, fontsize=9)
    fig.suptitle("t-SNE of embeddings, coloured by effect chain (each chain on different songs)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)

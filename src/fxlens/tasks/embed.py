"""Embed audio files with the effects encoder (`fxlens embed`): mixture level or one instrument's effects."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fxlens import audio as fxaudio
from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.models.encoder import FxEncoder, load_encoder


def embed_files(
    files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    query: str | None = None,
    query_audio: str | os.PathLike | None = None,
    model: str | os.PathLike | FxEncoder | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Embed each file (whole length, chunked and pooled) and write ``out``: ``.npy`` (N x 128 float32, rows in
    the order of `files`) or ``.json`` ({"files": [...], "query": ..., "embeddings": [[...], ...]}). Every file is
    read before anything is written, so a bad file leaves no output."""
    enc = model if isinstance(model, FxEncoder) else load_encoder(model)
    q = query
    if query_audio is not None:
        q, q_sr = fxaudio.load_with_rate(query_audio)
    rows = []
    for i, f in enumerate(files):
        x, sr = fxaudio.load_with_rate(f)
        kwargs = {"query_sample_rate": q_sr} if query_audio is not None else {}
        rows.append(enc.embed(x, sr, query=q, **kwargs)[0].numpy())
        if progress is not None:
            progress(i + 1, len(files))
    emb = np.stack(rows).astype(np.float32)
    out = Path(out)
    if out.suffix.lower() == ".json":
        doc = {"files": [str(f) for f in files], "query": query if query_audio is None else str(query_audio),
               "embeddings": emb.round(6).tolist()}
        write_text_atomic(out, json.dumps(doc) + "\n")
    else:
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
    return {"n": emb.shape[0], "dim": emb.shape[1], "out": str(out)}

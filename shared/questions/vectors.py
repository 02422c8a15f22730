"""Question vectors, cached in the store: a training run embeds only questions it has not seen.

Training and evaluation embed the same thousands of synthetic questions night after night; on a
CPU that costs minutes. Vectors are kept in the store's ``question_vectors`` table, keyed by the
embedder's name and the text, so a new embedder never reads another's vectors.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from ..embedders import Embedder
from ..store import Store

__all__ = ["embed_questions"]

SLICE = 128  # questions embedded (and ``between`` called) at a time


def _key(embedder: Embedder, text: str) -> str:
    return hashlib.sha256(f"{embedder.name}\x1f{text}".encode()).hexdigest()


def embed_questions(store: Store, embedder: Embedder, texts: list[str],
                    between: Callable[[], None] | None = None) -> np.ndarray:
    """(len(texts), dim) unit vectors, from the cache where it has them. ``between`` is called
    before each slice that must be embedded (a time budget's check)."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    if not texts:
        return out
    keys = [_key(embedder, t) for t in texts]
    found: dict[str, bytes] = {}
    unique = list(dict.fromkeys(keys))
    found.update(store.question_vectors(unique))
    missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
    for start in range(0, len(missing), SLICE):
        if between is not None:
            between()
        part = missing[start:start + SLICE]
        vectors = embedder.embed(part).astype(np.float32)
        rows = [(_key(embedder, t), v.tobytes()) for t, v in zip(part, vectors)]
        store.put_question_vectors(rows)
        found.update(rows)
    for i, k in enumerate(keys):
        out[i] = np.frombuffer(found[k], dtype=np.float32)
    return out

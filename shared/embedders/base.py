"""The embedder interface: texts in, unit-length float32 rows out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Embedder"]


class Embedder(ABC):
    """An embedding model.

    ``name`` identifies the vector space: a store records it with ``dim``, and searching a
    store with a different embedder is refused (the scores would be meaningless).
    ``max_tokens`` is the window in the model's own tokens; ``count_tokens`` counts them.
    """

    name: str
    dim: int
    max_tokens: int

    @abstractmethod
    def embed(self, texts: list[str], *, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens included."""

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def fits(self, text: str) -> bool:
        return self.count_tokens(text) <= self.max_tokens


def normalize(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms

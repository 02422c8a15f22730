"""Embeddings from OpenAI or any OpenAI-compatible endpoint, through the `openai` client.

The client retries transient failures with exponential backoff (``max_retries``); inputs are
sent in batches bounded by count and by tokens, and each input is cut to the model's window.
"""

from __future__ import annotations

import numpy as np

from ..errors import EmbeddingError
from ..tokens import encoding_for_model
from .base import Embedder, normalize

__all__ = ["OpenAIEmbedder"]

KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_INPUT_TOKENS = 8191
MAX_BATCH_TOKENS = 250_000
MAX_BATCH_ITEMS = 512


class OpenAIEmbedder(Embedder):
    def __init__(self, model: str, *, api_key: str | None, base_url: str | None, dimensions: int | None = None,
                 timeout: float = 60.0, max_retries: int = 4):
        import openai

        if not api_key and not base_url:
            raise EmbeddingError("the openai embedder needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)")
        self._client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout,
                                     max_retries=max_retries)
        self._model = model
        self._dimensions = dimensions
        self._encoding = encoding_for_model(model)
        self.name = f"openai:{model}" + (f"@{dimensions}" if dimensions else "")
        self.max_tokens = MAX_INPUT_TOKENS
        self.dim = dimensions or KNOWN_DIMS.get(model) or 0  # 0: learnt from the first response

    def count_tokens(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def _batches(self, texts: list[str]):
        batch: list[str] = []
        tokens = 0
        for text in texts:
            ids = self._encoding.encode(text or " ", disallowed_special=())[: self.max_tokens]
            if batch and (len(batch) >= MAX_BATCH_ITEMS or tokens + len(ids) > MAX_BATCH_TOKENS):
                yield batch
                batch, tokens = [], 0
            batch.append(self._encoding.decode(ids))
            tokens += len(ids)
        if batch:
            yield batch

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        import openai

        out: list[np.ndarray] = []
        for batch in self._batches(list(texts)):
            kwargs = {"model": self._model, "input": batch}
            if self._dimensions:
                kwargs["dimensions"] = self._dimensions
            try:
                response = self._client.embeddings.create(**kwargs)
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"embedding request to {self._client.base_url} failed: {exc}") from exc
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise EmbeddingError(f"the endpoint returned {len(rows)} embeddings for {len(batch)} inputs")
            matrix = np.asarray([r.embedding for r in rows], dtype=np.float32)
            if matrix.ndim != 2 or (self.dim and matrix.shape[1] != self.dim):
                raise EmbeddingError(f"the endpoint returned vectors of shape {matrix.shape}, expected dim {self.dim}")
            self.dim = matrix.shape[1]
            out.append(matrix)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize(np.vstack(out))

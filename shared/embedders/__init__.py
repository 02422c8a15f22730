"""Embedders: the local default and OpenAI-compatible endpoints."""

from __future__ import annotations

import functools

from ..settings import Settings
from .base import Embedder

__all__ = ["Embedder", "make_embedder"]


def make_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for (cached per process: loading a model takes seconds)."""
    if settings.embedder == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return _openai(settings.embedding_model, key, settings.openai_base_url, settings.embedding_dimensions,
                       settings.llm_timeout)
    return _local(settings.local_model or "", settings.local_precision)


@functools.lru_cache(maxsize=4)
def _local(model_path: str, precision: str) -> Embedder:
    from .local import LocalEmbedder

    return LocalEmbedder(model_path or None, precision=precision)


@functools.lru_cache(maxsize=4)
def _openai(model, key, base_url, dimensions, timeout) -> Embedder:
    from .openai_embedder import OpenAIEmbedder

    return OpenAIEmbedder(model, api_key=key, base_url=base_url, dimensions=dimensions, timeout=timeout)

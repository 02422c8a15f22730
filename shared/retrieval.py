"""Opening a Searcher the way every caller should: with the active deep-memory adapter."""

from __future__ import annotations

import threading
from typing import Callable

from .deep_memory.adapter import LinearAdapter
from .deep_memory.versions import AdapterRegistry, unfit_for
from .embedders import Embedder
from .home import Home
from .search import Searcher
from .store import Store

__all__ = ["open_searcher", "ActiveAdapter"]


class ActiveAdapter:
    """The active adapter of a data directory, swapped in when the pointer file changes.

    Each call stats active.json (microseconds); when it changed, the new version is loaded
    completely and only then replaces the old one in a single assignment, so a question is
    answered by the old adapter or the new one, never by a half-loaded one. An adapter made
    for another embedder is ignored. A version (or pointer) that cannot be loaded leaves the
    last good one in place, or plain search when there is none; either way ``error`` says so,
    and ``on_error`` hears it once per change of the pointer (the bot logs it).
    """

    def __init__(self, home: Home, embedder: Embedder, on_error: Callable[[str], None] | None = None):
        self.registry = AdapterRegistry(home.adapters_dir)
        self.embedder = embedder
        self.on_error = on_error
        self._lock = threading.Lock()
        self._signature = None
        self._current: tuple[str | None, LinearAdapter | None] = (None, None)
        self.error: str | None = None

    def current(self) -> tuple[str | None, LinearAdapter | None]:
        signature = self.registry.signature()
        if signature != self._signature:
            with self._lock:
                if signature != self._signature:
                    self._reload(signature)
        return self._current

    def _reload(self, signature) -> None:
        try:
            loaded = self.registry.load_active()
        except Exception as exc:  # a broken version must not take search down
            kept = self._current[0]
            self._fail(f"{exc}; {'still using ' + kept if kept else 'searching without deep memory'}")
            self._signature = signature
            return
        if loaded is None:
            self._current = (None, None)
            self.error = None
        else:
            name, adapter, meta = loaded
            unfit = unfit_for(meta, adapter, self.embedder.name, self.embedder.dim)
            if unfit:
                self._current = (None, None)
                self._fail(f"adapter {name} was {unfit}; searching without deep memory")
            else:
                self._current = (name, adapter)
                self.error = None
        self._signature = signature

    def _fail(self, message: str) -> None:
        self.error = message
        if self.on_error is not None:
            self.on_error(message)


def open_searcher(store: Store, embedder: Embedder, home: Home, index=None, memory=None,
                  on_adapter_error: Callable[[str], None] | None = None) -> Searcher:
    return Searcher(store, embedder, adapters=ActiveAdapter(home, embedder, on_adapter_error), index=index,
                    memory=memory)

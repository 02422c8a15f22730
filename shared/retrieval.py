"""Opening a Searcher the way every caller should: with the active deep-memory adapter."""

from __future__ import annotations

import threading
import time
from typing import Callable

from .deep_memory.adapter import LinearAdapter
from .deep_memory.versions import open_registry, unfit_for
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

    With the registry in the database (several replicas), the signature is a query: it is asked
    at most every ``registry.poll_interval`` seconds, and a promotion anywhere is heard at once
    (LISTEN/NOTIFY): the new adapter is loaded then, before the next question comes.
    """

    def __init__(self, home: Home, embedder: Embedder, on_error: Callable[[str], None] | None = None,
                 registry=None):
        # open_searcher passes the deployment's registry (open_registry(home, settings)); alone, the data directory's
        self.registry = registry if registry is not None else open_registry(home)
        self.embedder = embedder
        self.on_error = on_error
        self._lock = threading.Lock()
        self._signature = None
        self._checked_at = float("-inf")
        self._current: tuple[str | None, LinearAdapter | None] = (None, None)
        self.error: str | None = None
        listen = getattr(self.registry, "listen", None)
        self.listener = listen(self._promoted) if listen is not None else None

    def _promoted(self) -> None:
        self._checked_at = float("-inf")
        self.current()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def current(self) -> tuple[str | None, LinearAdapter | None]:
        interval = self.registry.poll_interval
        if interval and time.monotonic() - self._checked_at < interval:
            return self._current
        self._checked_at = time.monotonic()
        try:
            signature = self.registry.signature()
        except Exception as exc:  # the database is unreachable: keep serving what was loaded
            kept = self._current[0]
            self._fail(f"{exc}; {'still using ' + kept if kept else 'searching without deep memory'}")
            return self._current
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
                  on_adapter_error: Callable[[str], None] | None = None, settings=None) -> Searcher:
    adapters = ActiveAdapter(home, embedder, on_adapter_error, registry=open_registry(home, settings))
    return Searcher(store, embedder, adapters=adapters, index=index, memory=memory)

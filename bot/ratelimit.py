"""A token bucket per client: ``rate`` requests a minute, in bursts of up to ``rate``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["RateLimit"]


class RateLimit:
    def __init__(self, per_minute: int, clients: int = 10_000, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0  # tokens a second
        self.clients = clients  # the least recently seen are forgotten beyond this many
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.refill)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.clients:
                self._buckets.popitem(last=False)
            return allowed

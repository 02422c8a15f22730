"""Work the Slack listeners started and shutdown must wait for.

Bolt acknowledges Slack first and runs the listener afterwards in a task nobody awaits (and lazy
listeners the same way). Without this, stopping the server would drop whatever was in flight: an
answer not yet posted, the record of where it was posted (reactions point at it), a vote. Each
listener is wrapped by ``track``; ``wait`` lets shutdown finish them before the last spool drain.
"""

from __future__ import annotations

import asyncio
import functools
import logging

__all__ = ["InFlight"]

log = logging.getLogger("deepmem.bot")


class InFlight:
    def __init__(self):
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    def track(self, listener):
        """Wrap a listener (Bolt injects arguments by the wrapped function's signature)."""

        @functools.wraps(listener)
        async def tracked(*args, **kwargs):
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return await listener(*args, **kwargs)

        return tracked

    async def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the listeners running now; returns how many did not finish."""
        pending = {t for t in self._tasks if not t.done() and t is not asyncio.current_task()}
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        if still:
            log.warning("%d Slack listener(s) still running after %.0f s at shutdown", len(still), timeout)
        return len(still)

"""Waiting, in async tests, for what another thread or process will do."""

from __future__ import annotations

import asyncio
import time


async def until(condition, timeout: float = 30.0, what: str = "the condition"):
    """Poll ``condition`` (run off the loop) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

"""deepmem's web app (the chat, /admin, /slack/events) listening on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib

from aiohttp import web

from bot.server import build_web_app

__all__ = ["listening"]


@contextlib.asynccontextmanager
async def listening(runtime):
    """Serve ``runtime``'s web app until the block ends; yields its base URL."""
    runner = web.AppRunner(build_web_app(runtime))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()

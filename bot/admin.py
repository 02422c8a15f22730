"""The dashboard for the people who run the bot, at /admin, behind the chat's access control.

The same ``Access`` as the local chat decides who may see it (loopback only by default; the shared
token or a trusted proxy's user header beyond it; known hosts only). The page is built in a worker
thread (the gaps are embedded, once each, and grouped) and kept for ``CACHE_SECONDS``, so reloading it costs
nothing and many requests at once build it once. ``?days=N`` (1 to 365) sets the window.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from shared.dashboard import CONTENT_SECURITY_POLICY, DEFAULT_DAYS, dashboard_page
from shared.dashboard.topics import VectorMemo
from shared.settings import Settings

from .web import Access, _bad

__all__ = ["add_admin_routes", "CACHE_SECONDS", "MAX_ADMIN_DAYS"]

CACHE_SECONDS = 60.0
MAX_ADMIN_DAYS = 365
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def add_admin_routes(app: web.Application, settings: Settings, feedback, embedder, store=None, home=None) -> None:
    access = Access(settings)
    pages: dict[int, tuple[float, str]] = {}  # days -> (built at, page)
    building = asyncio.Lock()
    embed = VectorMemo(embedder.embed)  # only the questions asked since the last build are embedded

    def days_of(request: web.Request) -> int:
        raw = request.query.get("days", str(DEFAULT_DAYS))
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ADMIN_DAYS):
            raise _bad(f"days must be a whole number from 1 to {MAX_ADMIN_DAYS}")
        return int(raw)

    async def admin(request: web.Request):
        access.visitor(request)
        days = days_of(request)
        async with building:
            built = pages.get(days)
            if built is None or time.monotonic() - built[0] > CACHE_SECONDS:
                page = await asyncio.to_thread(dashboard_page, feedback, embed=embed, store=store, home=home,
                                                 days=days, settings=settings)
                pages[days] = built = (time.monotonic(), page)
        return web.Response(text=built[1], content_type="text/html", headers=HEADERS)

    app.router.add_get("/admin", admin)

"""A documentation site served on 127.0.0.1 by aiohttp, with the faults a crawler meets."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from aiohttp import web


class Site:
    """Serves `root` at /docs/ plus fault routes; counts requests per path."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: dict[str, int] = {}
        self.slow_seconds = 5.0
        self.flaky_failures = 1  # /docs/flaky.html fails this many times with 503, then works
        self.robots: str | None = None  # the text of /robots.txt (None: 404)
        self.robots_status = 200
        self.file_times: list[tuple[float, str]] = []  # (monotonic time, path) of every file request
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/docs/"

    def _app(self) -> web.Application:
        app = web.Application()
        routes = {"/docs/loop-a.html": lambda: web.HTTPFound("/docs/loop-b.html"),
                  "/docs/loop-b.html": lambda: web.HTTPFound("/docs/loop-a.html"),
                  "/docs/moved.html": lambda: web.HTTPMovedPermanently("/docs/page1.html"),
                  "/docs/away.html": lambda: web.HTTPFound("/elsewhere/x.html"),
                  "/docs/broken.html": lambda: web.HTTPInternalServerError()}
        for path, make in routes.items():
            app.router.add_get(path, self._fault(make))
        app.router.add_get("/docs/slow.html", self._slow)
        app.router.add_get("/docs/flaky.html", self._flaky)
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/{path:.*}", self._file)
        return app

    def _fault(self, make):
        async def handler(request):
            self.requests[request.path] = self.requests.get(request.path, 0) + 1
            raise make()

        return handler

    async def _slow(self, request):
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        await asyncio.sleep(self.slow_seconds)
        return web.Response(text="<html><body><p>late</p></body></html>", content_type="text/html")

    async def _robots(self, request):
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        if self.robots is None:
            raise web.HTTPNotFound()
        return web.Response(text=self.robots, status=self.robots_status, content_type="text/plain")

    async def _flaky(self, request):
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        if self.requests[request.path] <= self.flaky_failures:
            raise web.HTTPServiceUnavailable()
        return web.Response(text="<html><head><title>Flaky</title></head><body><h1>Flaky page</h1>"
                                 "<p>This page works on the second try.</p></body></html>", content_type="text/html")

    async def _file(self, request):
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        self.file_times.append((time.monotonic(), request.path))
        rel = request.path.lstrip("/")
        if not rel.startswith("docs/"):
            raise web.HTTPNotFound()
        path = (self.root / rel[len("docs/"):]).resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file() or self.root.resolve() not in path.parents:
            raise web.HTTPNotFound()
        types = {".html": "text/html", ".png": "image/png", ".md": "text/markdown", ".bin": "application/octet-stream"}
        return web.Response(body=path.read_bytes(), content_type=types.get(path.suffix, "application/octet-stream"))

    def start(self) -> "Site":
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self._app())
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

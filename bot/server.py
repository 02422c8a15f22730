"""`deepmem serve`: one aiohttp server for the local chat and Slack, plus background services.

- the local chat is always served (127.0.0.1 by default);
- with SLACK_BOT_TOKEN (and SLACK_SIGNING_SECRET for HTTP), Slack is served: over Socket Mode
  when SLACK_APP_TOKEN is set, else over HTTP at /slack/events (events, interactivity and slash
  commands all post there);
- the feedback spool is drained every second;
- services registered under the ``deepmem.services`` entry point (the nightly trainer) start
  in the same process; the bot knows them only by that interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from aiohttp import web

from shared.answer import Answerer
from shared.embedders import Embedder, make_embedder
from shared.errors import ConfigError, EmptyStore
from shared.feedback.store import FeedbackStore
from shared.feedback_memory import FeedbackMemory, MemoryLoader
from shared.home import Home
from shared.qa import QAService
from shared.retrieval import open_searcher
from shared.settings import Settings
from shared.store import Store
from shared.vector_index import MemoryIndex

from .web import add_chat_routes

__all__ = ["Runtime", "build_runtime", "build_web_app", "serve"]

log = logging.getLogger("deepmem.serve")
REJECTED_APP_TOKEN = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                      "not_allowed_token_type", "missing_scope"}


@dataclass
class Runtime:
    """What the server and its services share."""

    settings: Settings
    home: Home
    store: Store
    embedder: Embedder
    index: MemoryIndex
    feedback: FeedbackStore
    qa: QAService
    memory: MemoryLoader | None = None
    slack_app: object | None = None
    services: list = field(default_factory=list)


def build_runtime(settings: Settings) -> Runtime:
    home = Home.open(settings.home)
    store = Store.open(home.store_path, create=False)
    if not store.stats()["chunks"]:
        raise EmptyStore("the store is empty: run `deepmem ingest` (or `deepmem ingest --demo`) first")
    embedder = make_embedder(settings)
    index = MemoryIndex(store)
    feedback = FeedbackStore(home)
    memory = FeedbackMemory()
    searcher = open_searcher(store, embedder, home, index=index, memory=memory, on_adapter_error=log.warning)
    searcher.adapters.current()  # a damaged active adapter is logged now (once), not at the first question
    qa = QAService(Answerer(searcher, settings), feedback)
    loader = MemoryLoader(memory, feedback, store, embedder, home.root / "memory.json")
    return Runtime(settings=settings, home=home, store=store, embedder=embedder, index=index, feedback=feedback, qa=qa,
                   memory=loader)


def build_web_app(runtime: Runtime) -> web.Application:
    settings = runtime.settings
    app = web.Application(client_max_size=1024 * 1024)
    add_chat_routes(app, runtime.qa, bind_host=settings.host)
    if settings.slack_bot_token is not None:
        from .slack_app import build_slack_app

        if settings.slack_app_token is None and settings.slack_signing_secret is None:
            raise ConfigError("Slack over HTTP needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN for Socket Mode)")
        runtime.slack_app = build_slack_app(settings, runtime.qa)
        if settings.slack_app_token is None:
            from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

            async def slack_events(request: web.Request):
                response = await runtime.slack_app.async_dispatch(await to_bolt_request(request))
                return await to_aiohttp_response(response)

            app.router.add_post("/slack/events", slack_events)

    async def drain_spool(app):
        async def loop():
            tick, problem = 0, None
            while True:
                try:
                    await asyncio.to_thread(runtime.feedback.drain, 0.5)
                    if runtime.memory is not None and tick % 3 == 0:  # labels act on the next questions
                        await asyncio.to_thread(runtime.memory.refresh)
                        problem = None
                except Exception as exc:  # never let bookkeeping take the bot down; say so once, not every second
                    if str(exc) != problem:
                        log.warning("feedback not read: %s", exc)
                    problem = str(exc)
                tick += 1
                await asyncio.sleep(1.0)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(runtime.feedback.drain, 5.0)

    async def socket_mode(app):
        handler = connecting = None
        if runtime.slack_app is not None and settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(runtime.slack_app, settings.slack_app_token.get_secret_value())

            async def connect():
                # a rejected app token is final: say so once instead of retrying forever
                from slack_sdk.errors import SlackApiError

                try:
                    await runtime.slack_app.client.apps_connections_open(app_token=handler.app_token)
                except SlackApiError as exc:
                    error = exc.response.get("error") if exc.response is not None else None
                    if error in REJECTED_APP_TOKEN:
                        log.error("Slack rejected SLACK_APP_TOKEN (%s): Socket Mode is off; use an app-level "
                                  "token (xapp-…) with the connections:write scope", error)
                        return
                except Exception:  # Slack unreachable for now: slack_sdk retries below
                    pass
                # slack_sdk retries until Slack answers; the rest of the server does not wait for it
                await handler.connect_async()
                log.info("connected to Slack over Socket Mode")

            connecting = asyncio.create_task(connect())
        yield
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
        if handler is not None:
            await handler.close_async()

    async def services(app):
        stops = []
        for ep in entry_points(group="deepmem.services"):
            try:
                start = ep.load()
                stops.append(await start(runtime))
                runtime.services.append(ep.name)
            except Exception as exc:  # a service that cannot start must not stop the bot
                log.error("service %s did not start: %s", ep.name, exc)
        yield
        for stop in reversed(stops):
            if stop is not None:
                with contextlib.suppress(Exception):
                    await stop()

    app.cleanup_ctx.extend([drain_spool, socket_mode, services])
    return app


async def serve(settings: Settings, *, on_ready=None) -> None:
    runtime = build_runtime(settings)
    app = build_web_app(runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else settings.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(runtime, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        runtime.store.close()

"""`deepmem serve`: one aiohttp server for the local chat and Slack, plus background services.

- the local chat (127.0.0.1 by default). Listening beyond loopback needs an access control
  (DEEPMEM_CHAT_TOKEN or DEEPMEM_CHAT_USER_HEADER): without one, serve refuses to start. In Slack
  HTTP mode the server is meant to be reached from outside (by Slack, often through a proxy), so the
  chat is mounted there only with an access control;
- the dashboard at /admin (``bot.admin``), wherever the chat is and behind the same access control;
- with SLACK_BOT_TOKEN (and SLACK_SIGNING_SECRET for HTTP), Slack is served: over Socket Mode
  when SLACK_APP_TOKEN is set, else over HTTP at /slack/events (events, interactivity and slash
  commands all post there; a request whose timestamp is not a number is refused with 401);
- shutdown waits (up to SHUTDOWN_WAIT seconds) for the Slack listeners in flight, then drains
  the spool one last time;
- the feedback spool is drained every second;
- which Slack deliveries were handled and which threads the bot answered live in the coordination
  (``shared.coordination``): this process's memory, or with DEEPMEM_DATABASE_URL the database every
  replica shares, so a retry reaching another replica is not answered twice;
- services registered under the ``deepmem.services`` entry point (the nightly trainer) start
  in the same process; the bot knows them only by that interface;
- with SLACK_BOT_TOKEN and DEEPMEM_HISTORY_CHANNELS, the channels' history is imported in the
  background (``bot.history``): once at start, without delaying readiness, then every
  DEEPMEM_HISTORY_INTERVAL, incrementally. A failed import is logged and tried again at the next
  interval; shutdown stops an import between two threads (the next one goes on from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from aiohttp import web

from shared.answer import Answerer
from shared.coordination import Coordination, MemoryCoordination, open_coordination
from shared.embedders import Embedder, make_embedder
from shared.errors import ConfigError, EmptyStore
from shared.feedback import open_feedback
from shared.feedback.store import FeedbackStore
from shared.feedback_memory import FeedbackMemory, MemoryLoader
from shared.home import Home
from shared.qa import QAService
from shared.retrieval import open_searcher
from shared.settings import Settings, is_loopback
from shared.store import DocumentStore, open_store
from shared.vector_index import MemoryIndex

from .admin import add_admin_routes
from .inflight import InFlight
from .web import add_chat_routes

__all__ = ["Runtime", "build_runtime", "build_web_app", "serve", "chat_mounted", "import_history_forever"]

log = logging.getLogger("deepmem.serve")
REJECTED_APP_TOKEN = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                      "not_allowed_token_type", "missing_scope"}
SLACK_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # seconds since the epoch, as Slack sends it
SHUTDOWN_WAIT = 30.0  # seconds shutdown waits for answers and votes in flight


@dataclass
class Runtime:
    """What the server and its services share."""

    settings: Settings
    home: Home
    store: DocumentStore  # SQLite in DEEPMEM_HOME, or the Postgres every replica shares (DEEPMEM_DATABASE_URL)
    embedder: Embedder
    index: MemoryIndex
    feedback: FeedbackStore
    qa: QAService
    memory: MemoryLoader | None = None
    # which Slack deliveries were handled and which threads were answered: shared by every replica in Postgres mode
    coordination: Coordination = field(default_factory=MemoryCoordination)
    slack_app: object | None = None
    services: list = field(default_factory=list)
    in_flight: InFlight = field(default_factory=InFlight)
    chat: bool = False  # whether the local chat is mounted


def build_runtime(settings: Settings) -> Runtime:
    home = Home.open(settings.home)
    store = open_store(home, settings, create=False)
    if not store.stats()["chunks"]:
        raise EmptyStore("the store is empty: run `deepmem ingest` (or `deepmem ingest --demo`) first")
    embedder = make_embedder(settings)
    index = MemoryIndex(store)
    feedback = open_feedback(home, settings)
    memory = FeedbackMemory()
    searcher = open_searcher(store, embedder, home, index=index, memory=memory, on_adapter_error=log.warning,
                             settings=settings)
    searcher.adapters.current()  # a damaged active adapter is logged now (once), not at the first question
    qa = QAService(Answerer(searcher, settings), feedback)
    loader = MemoryLoader(memory, feedback, store, embedder, home.root / "memory.json",
                          params_from_runs=settings.database_url is not None)  # the nightly job may run elsewhere
    return Runtime(settings=settings, home=home, store=store, embedder=embedder, index=index, feedback=feedback, qa=qa,
                   memory=loader, coordination=open_coordination(settings))


def chat_mounted(settings: Settings) -> bool:
    """Whether the local chat is served; raises ConfigError when it would be exposed without access control."""
    if settings.chat_access_control:
        return True
    if settings.slack_bot_token is not None and settings.slack_app_token is None:
        return False  # Slack over HTTP: reachable from outside, so no chat without an access control
    if not is_loopback(settings.host):
        raise ConfigError(f"refusing to serve the local chat on {settings.host} without access control: set "
                          "DEEPMEM_CHAT_TOKEN (a shared token) or DEEPMEM_CHAT_USER_HEADER (a header your "
                          "reverse proxy sets), or listen on 127.0.0.1")
    return True


async def import_history_forever(runtime: Runtime, stopping: threading.Event) -> None:
    """Import the history of DEEPMEM_HISTORY_CHANNELS now, then every DEEPMEM_HISTORY_INTERVAL, until ``stopping``."""
    from shared.queries import Resolver

    from .history import HistoryImport, history_client
    from shared.history_progress import open_progress

    settings = runtime.settings
    client = history_client(settings)
    channels = ", ".join(settings.history_channels)

    def run_once():
        progress = open_progress(runtime.home, settings)  # with several replicas: in the database they share
        try:
            importer = HistoryImport(client, runtime.home, Resolver(runtime.store), runtime.feedback,
                                     stop=stopping.is_set, progress=progress)
            return importer.run(settings.history_channels)
        finally:
            progress.close()

    while not stopping.is_set():
        try:
            report = await asyncio.to_thread(run_once)
            if not stopping.is_set():
                log.info("history of %s imported: %d threads read, %d questions labeled (%d resolved or thanked)%s",
                         channels, report.threads_read, report.labeled, report.strong,
                         f"; another replica was reading {', '.join(report.busy)}" if report.busy else "")
        except Exception as exc:  # Slack down, a channel the bot left: the bot goes on, the next run retries
            log.warning("history of %s not imported: %s", channels, exc)
        waited = 0.0
        while waited < settings.history_interval and not stopping.is_set():
            await asyncio.sleep(min(1.0, settings.history_interval - waited))
            waited += 1.0


def build_web_app(runtime: Runtime) -> web.Application:
    settings = runtime.settings
    app = web.Application(client_max_size=1024 * 1024)
    runtime.chat = chat_mounted(settings)
    if runtime.chat:
        add_chat_routes(app, runtime.qa, settings)
        add_admin_routes(app, settings, runtime.feedback, runtime.embedder, runtime.store,  # the same access
                         runtime.home)
    else:
        async def health(request: web.Request):
            return web.json_response({"ok": True})

        app.router.add_get("/healthz", health)
    if settings.slack_bot_token is not None:
        from .slack_app import build_slack_app

        runtime.slack_app = build_slack_app(settings, runtime.qa, runtime.in_flight, runtime.coordination)
        if settings.slack_app_token is None:
            from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

            async def slack_events(request: web.Request):
                # Bolt would fail with a 500 on a timestamp that is not a number: refuse it like a bad signature
                if not SLACK_TIMESTAMP.fullmatch(request.headers.get("X-Slack-Request-Timestamp", "")):
                    return web.Response(status=401, text="invalid request")
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

    async def channel_check(app):
        """Once at start, in the background: configured channels the bot cannot work in are logged."""
        task = None
        if runtime.slack_app is not None:
            from shared.channels import open_channel_config

            from .channel_check import check_configured_channels

            def load():
                with open_channel_config(runtime.home, settings) as where:
                    return where.load()

            async def check():
                await check_configured_channels(runtime.slack_app.client, await asyncio.to_thread(load))

            async def logged():
                try:
                    await check()
                except Exception as exc:  # an unreadable configuration is reported where it is read
                    log.warning("cannot check the configured channels: %s", exc)

            task = asyncio.create_task(logged())
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def in_flight(app):
        yield
        await runtime.in_flight.wait(SHUTDOWN_WAIT)  # before the last drain: their records go with it

    async def history(app):
        task, stopping = None, threading.Event()
        if settings.history_channels and settings.slack_bot_token is not None and settings.history_interval:
            task = asyncio.create_task(import_history_forever(runtime, stopping))
            every = settings.history_interval
            every = f"{every / 3600:g} h" if every >= 3600 else f"{every / 60:g} min"
            runtime.services.append(f"history import ({', '.join(settings.history_channels)}, every {every})")
        yield
        if task is not None:
            stopping.set()  # an import in progress stops after the thread it is reading
            try:
                await asyncio.wait_for(task, SHUTDOWN_WAIT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                log.warning("the history import did not stop in %.0f s; it goes on where it stopped next time",
                            SHUTDOWN_WAIT)

    # cleaned up in reverse: the history import and services stop, Socket Mode closes, listeners in flight
    # finish, the spool drains
    app.cleanup_ctx.extend([drain_spool, in_flight, socket_mode, services, history, channel_check])
    return app


async def serve(settings: Settings, *, on_ready=None) -> None:
    chat_mounted(settings)  # refuse an exposed chat, or Slack over HTTP without a secret, before loading anything
    if settings.slack_bot_token is not None:
        from .slack_app import signing_secret

        signing_secret(settings)
    runtime = build_runtime(settings)
    app = build_web_app(runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    bound = [s.getsockname()[:2] for s in (site._server.sockets if site._server else [])] or \
        [(settings.host, settings.port)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(runtime, bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        runtime.coordination.close()
        runtime.store.close()

"""The `deepmem serve` command (registered through the deepmem.commands entry point)."""

from __future__ import annotations

import asyncio
import logging

import click

from shared.cli import App, pass_app


@click.command()
@click.option("--host", help="Address to listen on [env: DEEPMEM_HOST; default 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [env: DEEPMEM_PORT; default 8765].")
@pass_app
def serve(app: App, host: str | None, port: int | None) -> None:
    """Serve the local chat, Slack (when tokens are set) and the nightly retraining.

    Without Slack credentials this is a chat page on http://127.0.0.1:8765/ with the same
    answers, sources and feedback buttons as the Slack bot.

    Example:

        deepmem serve --port 8765
    """
    from .server import serve as run

    settings = app.settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("sentence_transformers", "httpx", "slack_sdk", "slack_bolt"):  # chatter, or request bodies
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def ready(runtime, bound_port):
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        click.echo(f"deepmem: local chat on http://{shown}:{bound_port}/", err=True)
        if runtime.slack_app is not None:
            mode = "Socket Mode" if settings.slack_app_token else f"HTTP at http://{shown}:{bound_port}/slack/events"
            click.echo(f"deepmem: serving Slack over {mode}", err=True)
        if runtime.services:
            click.echo(f"deepmem: services: {', '.join(runtime.services)}", err=True)

    asyncio.run(run(settings, on_ready=ready))

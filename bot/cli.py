"""The `deepmem serve` command (registered through the deepmem.commands entry point)."""

from __future__ import annotations

import asyncio
import logging

import click

from shared.cli import App, pass_app
from shared.settings import is_loopback


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

    def ready(runtime, bound):
        urls = [f"http://{f'[{host}]' if ':' in host else host}:{port}/" for host, port in bound]
        if runtime.chat:
            for url in urls:
                click.echo(f"deepmem: local chat on {url}", err=True)
                click.echo(f"deepmem: dashboard on {url}admin", err=True)
            if not is_loopback(settings.host):
                how = " or ".join((["the shared token DEEPMEM_CHAT_TOKEN"] if settings.chat_token else []) +
                                   ([f"the user header {settings.chat_user_header} from "
                                     f"{settings.chat_trusted_proxies or 'no proxy'}"]
                                    if settings.chat_user_header else []))
                click.echo(f"deepmem: the chat listens beyond this machine; it answers requests with {how}", err=True)
        else:
            click.echo("deepmem: local chat off (Slack over HTTP: set DEEPMEM_CHAT_TOKEN or "
                       "DEEPMEM_CHAT_USER_HEADER to serve it too)", err=True)
        if runtime.slack_app is not None:
            mode = "Socket Mode" if settings.slack_app_token else \
                "HTTP at " + ", ".join(f"{url}slack/events" for url in urls)
            click.echo(f"deepmem: serving Slack over {mode}", err=True)
        if runtime.services:
            click.echo(f"deepmem: services: {', '.join(runtime.services)}", err=True)

    asyncio.run(run(settings, on_ready=ready))


@click.group()
def history() -> None:
    """Real questions from the workspace's Slack history, as training labels for deep memory.

    Example:

        deepmem history import --channel help-docs --channel C0123ABCD
    """


@history.command("import")
@click.option("--channel", "channels", multiple=True,
              help="A channel to read (#name, name or id); repeatable [env: DEEPMEM_HISTORY_CHANNELS].")
@click.option("--max-threads", type=click.IntRange(1, None), default=None,
              help="Read at most this many threads now; the next run goes on from there.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@pass_app
def import_(app: App, channels: tuple[str, ...], max_threads: int | None, as_json: bool) -> None:
    """Turn threads where a person answered a question with links into the docs into labels.

    Resumable (an interrupted import goes on where it stopped) and incremental (a later run reads
    only new threads and threads with new replies). Never reads direct messages.
    """
    import json

    from shared.errors import ConfigError

    from .history import history_client, import_history

    settings = app.settings
    names = list(channels) or settings.history_channels
    if not names:
        raise click.UsageError("name the channels to read: --channel NAME (or DEEPMEM_HISTORY_CHANNELS)")
    if settings.slack_bot_token is None:
        raise ConfigError("reading Slack history needs SLACK_BOT_TOKEN")
    report = import_history(history_client(settings), app.home, app.store(create=False), names,
                            max_threads=max_threads, log_fn=lambda msg: None, settings=settings)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"read {report.threads_read} threads in {', '.join('#' + c for c in report.channels)}"
               f"{' (resumed)' if report.resumed else ''}; {report.threads_skipped_unchanged} unchanged since "
               f"the last import")
    click.echo(f"labeled {report.labeled} questions ({report.strong} marked resolved or thanked), "
               f"{report.labels} linked sections")
    if report.busy:
        click.echo(f"skipped {', '.join('#' + c for c in report.busy)}: another process is reading it now "
                   f"(it keeps the progress; run again later to go on)")

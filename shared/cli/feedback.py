"""CLI commands for the feedback store: export, import, forget."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import App, cli, echo_json, pass_app


@cli.group()
def feedback() -> None:
    """Feedback events and the relevance labels derived from them.

    Example:

        deepmem feedback export --what labels
    """


@feedback.command("export")
@click.option("--what", type=click.Choice(["labels", "events", "questions"]), default="labels", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of JSON lines.")
@pass_app
def export(app: App, what: str, as_json: bool) -> None:
    """Print labels (derived), events or questions as JSON lines. Works while `deepmem serve` runs."""
    from ..feedback import has_feedback, open_feedback

    app.read_only = True
    rows = []
    if has_feedback(app.home, app.settings):
        store = open_feedback(app.home, app.settings)
        rows = {"labels": store.labels, "events": store.events, "questions": store.questions}[what]()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False, default=str))


@feedback.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@pass_app
def import_(app: App, path: str) -> None:
    """Import labels: JSON lines {"query", "relevant": [...], "not_relevant": [...], "user"}.

    Entries are chunk ids, page URLs or url#anchor, resolved against the store now.
    """
    from ..feedback.importer import import_labels

    report = import_labels(app.store(create=False), app.home, Path(path), app.settings)
    click.echo(f"imported {report['questions']} questions, {report['labels']} labels"
               + (f"; {len(report['unresolved'])} entries matched no chunk" if report["unresolved"] else ""))
    for entry in report["unresolved"][:10]:
        click.echo(f"  no chunk for {entry}")


@feedback.command()
@click.argument("user")
@pass_app
def forget(app: App, user: str) -> None:
    """Delete everything USER asked or did (their questions, votes, clicks and history labels), and the
    resolved-thread documents they took part in."""
    from ..feedback import open_feedback
    from ..thread_documents import remove_thread_documents

    counts = open_feedback(app.home, app.settings).forget(user)
    has_store = app.settings.database_url is not None or app.home.store_path.exists()
    threads = remove_thread_documents(app.store(create=False), user) if has_store else 0
    click.echo(f"forgot {user}: {counts['questions']} questions, {counts['events']} events"
               + (f", {counts['quarantined']} quarantined operations" if counts["quarantined"] else "")
               + (f", {threads} resolved-thread document{'s' if threads != 1 else ''}" if threads else ""))


@feedback.command()
@click.option("--requeue", is_flag=True,
              help="Move the quarantined files back into the spool (after fixing the cause).")
@pass_app
def quarantine(app: App, requeue: bool) -> None:
    """Spool files that could not be applied, and why (they block nothing; their good lines were applied).

    Example:

        deepmem feedback quarantine --requeue
    """
    from ..feedback.store import FeedbackStore, has_feedback

    app.read_only = True
    if app.settings.database_url is not None:
        click.echo("nothing quarantined: with DEEPMEM_DATABASE_URL, a record the database refuses is refused when "
                   "it is written")
        return
    if not has_feedback(app.home):
        click.echo("nothing quarantined")
        return
    store = FeedbackStore(app.home)
    if requeue:
        moved = store.requeue_quarantined()
        applied = store.drain()
        click.echo(f"requeued {moved} files; {applied} operations applied; {store.quarantined()} quarantined")
        return
    files = sorted(store.quarantine.glob("*.jsonl")) if store.quarantine.is_dir() else []
    if not files:
        click.echo("nothing quarantined")
        return
    for path in files:
        reason = store.quarantine / f"{path.name}.reason"
        first = reason.read_text(encoding="utf-8", errors="replace").splitlines()[:1] if reason.is_file() else []
        click.echo(f"{path}: {first[0] if first else 'no reason recorded'}")

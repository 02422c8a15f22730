"""CLI commands for the sources ingested: list, remove."""

from __future__ import annotations

import click

from . import App, cli, echo_json, json_option, pass_app


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def sources(ctx: click.Context, as_json: bool) -> None:
    """The sources ingested (sites, folders, archives); with no subcommand, list them.

    Example:

        deepmem sources remove ./old-docs
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_, as_json=as_json)


@sources.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Each source with its pages, chunks and last ingest."""
    rows = app.store(create=False).source_summaries()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no sources yet: `deepmem ingest URL|FOLDER|ARCHIVE`")
    from ..thread_documents import THREAD_KIND

    for r in rows:
        if r["kind"] == THREAD_KIND:
            click.echo(f"{r['uri']} (resolved Slack threads): {r['pages']} pages, {r['chunks']} chunks; added by the "
                       f"bot as threads are resolved, kept when the docs are re-ingested")
            continue
        last = r["last_ingest_at"] or "never"
        notes = (f", {r['last_failures']} pages failed" if r["last_failures"] else "") + \
            ("" if r["last_complete"] else ", read incompletely")
        click.echo(f"{r['uri']} ({r['kind']}{', ' + r['base_url'] if r['base_url'] else ''}) in {r['collection']}: "
                   f"{r['pages']} pages, {r['chunks']} chunks; last ingest {last}{notes}")


@sources.command()
@click.argument("uri")
@json_option
@pass_app
def remove(app: App, uri: str, as_json: bool) -> None:
    """Forget the source URI (a URL, or a folder or archive path, which need not exist any more)
    and remove its pages and chunks from the store, in one transaction."""
    from ..sources import source_key

    store = app.store(create=False)
    known = {s.uri for s in store.sources()}
    key = uri if uri in known else source_key(uri)
    if key not in known:
        raise click.ClickException(f"no source {uri!r}: `deepmem sources` lists them")
    removed = store.remove_source(key)
    if as_json:
        echo_json(removed)
        return
    click.echo(f"removed {removed['uri']}: {removed['pages']} pages, {removed['chunks']} chunks")

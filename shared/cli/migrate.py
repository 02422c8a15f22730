"""`deepmem migrate`: copy this data directory into the scale-out database."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from . import App, cli, echo_json, json_option, pass_app


@cli.command()
@click.option("--to", "url", metavar="postgresql://…", envvar="DEEPMEM_DATABASE_URL", show_envvar=True,
              help="The database to copy into (default: DEEPMEM_DATABASE_URL, which keeps the password out of ps).")
@json_option
@pass_app
def migrate(app: App, url: str | None, as_json: bool) -> None:
    """Copy this data directory (store, feedback, adapters, runs) into Postgres, then verify the counts.

    Idempotent: run it again to finish an interrupted copy; a second run changes nothing. Exits
    non-zero when a row of the data directory is missing from the database afterwards.

    Example:

        deepmem migrate --to postgresql://deepmem@db.internal/deepmem
    """
    from ..migrate import format_report, migrate_home

    if not url:
        raise click.UsageError("give the database: --to postgresql://… (or DEEPMEM_DATABASE_URL)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise click.UsageError("--to must be a postgresql:// URL")
    app.read_only = True
    report = migrate_home(app.home, url, log=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(format_report(report))
    if not report.ok:
        raise click.ClickException("some rows of the data directory are not in the database (see above)")

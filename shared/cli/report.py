"""`deepmem report`: the dashboard (what `deepmem serve` shows at /admin) as a static HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from ..files import write_atomically
from . import App, cli, pass_app


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="Where to write the page.")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="The window: the last DAYS days (UTC).")
@pass_app
def report(app: App, out: Path, days: int) -> None:
    """Write the dashboard as one self-contained HTML file: questions per day and channel, answered and
    voted shares, documentation gaps by topic, most and least cited pages, retraining runs.

    Example:

        deepmem report --out report.html --days 30
    """
    from ..dashboard import dashboard_page
    from ..errors import DeepmemError
    from ..feedback import has_feedback, open_feedback

    app.read_only = True
    feedback = open_feedback(app.home, app.settings) if has_feedback(app.home, app.settings) else None
    try:
        store = app.store(create=False)  # only to name pages by their titles
    except DeepmemError as exc:
        store = None
        if feedback is not None:
            click.echo(f"pages are shown by URL: {exc}", err=True)
    page = dashboard_page(feedback, embed=lambda texts: app.embedder.embed(texts), store=store, home=app.home,
                          days=days, settings=app.settings)
    try:
        write_atomically(out, page)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out} ({len(page.encode()) / 1e3:.0f} kB; the last {days} days)")

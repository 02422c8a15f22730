"""The `deepmem` command line.

Each command parses its options, opens what it needs, calls one function of `shared`, and
prints (JSON with --json). Library errors become one-line messages. The bot and the daemon
add their commands (serve, retrain, runs) through the ``deepmem.commands`` entry points, so
this package never imports them.
"""

from __future__ import annotations

import functools
import shutil
import json
import sys
from importlib.metadata import entry_points

import click

from ..errors import DeepmemError, StoreError
from ..home import Home
from ..settings import Settings, load_settings

__all__ = ["cli", "main", "pass_app", "App"]


class App:
    """What commands share: settings, the data directory, and lazily the store and embedder."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._store = None
        self.read_only = False  # set by commands that must not create anything (search, status)

    @functools.cached_property
    def home(self) -> Home:
        return Home.open(self.settings.home, create=not self.read_only)

    def store(self, create: bool = True):
        from ..store import open_store

        if not create and "home" not in self.__dict__:  # a store that must exist needs a home that does
            self.read_only = True
        if self._store is None:
            self._store = open_store(self.home, self.settings, create=create)
        return self._store

    @functools.cached_property
    def embedder(self):
        from ..embedders import make_embedder

        return make_embedder(self.settings)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_app = click.make_pass_decorator(App)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(fn)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


class DeepmemGroup(click.Group):
    """Adds the plugin commands, and turns library errors into one-line messages."""

    _plugins_loaded = False

    def _plugins(self) -> None:
        if DeepmemGroup._plugins_loaded:
            return
        DeepmemGroup._plugins_loaded = True
        for ep in entry_points(group="deepmem.commands"):
            try:
                command = ep.load()
            except Exception as exc:  # a broken plugin must not take the core commands down
                print(f"deepmem: cannot load command {ep.name!r}: {exc}", file=sys.stderr)
                continue
            self.add_command(command, ep.name)

    def list_commands(self, ctx):
        self._plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._plugins()
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        from ..store.connection import sqlite3

        try:
            return super().invoke(ctx)
        except DeepmemError as exc:
            raise click.ClickException(str(exc)) from exc
        except sqlite3.DatabaseError as exc:  # a damaged store.db found mid-command: one line, not a traceback
            store = getattr(ctx.obj, "_store", None)
            where = f" {store.path}" if store is not None else ""
            raise click.ClickException(f"the store{where} cannot be read ({exc}); it may be damaged: check it with "
                                       f"`sqlite3 store.db 'PRAGMA integrity_check'`, or ingest again into a fresh "
                                       f"DEEPMEM_HOME") from exc
        except Exception as exc:
            if not type(exc).__module__.startswith("psycopg"):
                raise
            # the database went away or refused mid-command (Postgres mode): one line, never the URL's password
            store = getattr(ctx.obj, "_store", None)
            where = f" {store.path}" if store is not None else ""
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"the database{where} failed: {first}") from exc


@click.group(cls=DeepmemGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(), envvar="DEEPMEM_HOME",
              help="Data directory shared by the CLI, the bot and the daemon [env: DEEPMEM_HOME].")
@click.version_option(package_name="deepmem")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """deepmem: answers questions about your docs, and learns from the answers people liked.

    Example:

        deepmem ingest --demo && deepmem search "how do I create an autoincrement column"
    """
    overrides = {"home": home} if home else {}
    app = App(load_settings(**overrides))
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.command()
@click.argument("target", required=False)
@click.option("--base-url", help="URL the folder is published at; chunks link to BASE_URL/path#anchor.")
@click.option("--demo", is_flag=True, help="Ingest the bundled SQLite documentation (offline).")
@click.option("--collection", metavar="NAME",
              help="The collection the source belongs to [default: default; a known source keeps its own].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@pass_app
def ingest(app: App, target: str | None, base_url: str | None, demo: bool, collection: str | None, quiet: bool,
           as_json: bool) -> None:
    """Ingest a docs site (crawl), a folder or an archive; with no TARGET, re-ingest every known source.

    Re-ingesting is incremental: unchanged pages are skipped, changed pages replaced, and
    pages gone from the source removed. Resolved Slack threads (source chat-threads) are not
    re-ingested: the bot adds them one at a time, and they are kept.

    Example:

        deepmem ingest ./runbooks --collection runbooks --base-url https://wiki.example.com/runbooks/
    """
    from ..collections import check_name
    from ..ingest import ingest as run_ingest
    from ..ingest import reingestable_sources
    from ..sources import DEMO_BASE_URL, demo_archive
    from ..thread_documents import THREAD_KIND

    store = app.store()
    if demo:
        if target:
            raise click.UsageError("give either TARGET or --demo, not both")
        target, base_url = str(demo_archive()), base_url or DEMO_BASE_URL
    if target is not None and getattr(store.source(target), "kind", None) == THREAD_KIND:
        raise click.UsageError(f"{target} holds the resolved threads the bot adds one at a time: there is nothing to "
                               f"ingest (`deepmem feedback forget USER` removes a person's threads)")
    if collection is not None:
        if not target:
            raise click.UsageError("--collection applies to one TARGET; a re-ingest of every source keeps their "
                                   "collections")
        check_name(collection)
    targets = [(target, base_url)] if target else [(s.uri, s.base_url) for s in reingestable_sources(store)]
    if not targets:
        raise click.UsageError("nothing to ingest: give a URL, a folder or an archive (or --demo)")
    results, failed = [], []  # one bad source is reported and skipped: the others are ingested
    for uri, base in targets:
        try:
            report = run_ingest(store, app.embedder, app.settings, uri, base_url=base,
                                progress=not quiet and not as_json, collection=collection)
        except StoreError:
            raise
        except DeepmemError as exc:
            hint = "" if target else f" (`deepmem sources remove {uri}` forgets it)"
            failed.append(f"{uri}: {exc}{hint}")
            results.append({"source": uri, "error": str(exc)})
            if not as_json and len(targets) > 1:
                click.echo(f"{uri}: not ingested: {exc}{hint}")
            continue
        results.append(report.to_dict())
        if report.pages_stored == 0 and report.failures:
            failed.append(f"{report.source}: nothing could be read")
        if not as_json:
            _print_report(report)
    if as_json:
        echo_json(results)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(targets)} sources not ingested: " + "; ".join(failed))


def _print_report(r) -> None:
    click.echo(f"{r.source}: {r.pages_seen} pages read in {r.seconds:.1f} s "
               f"({r.pages_new} new, {r.pages_changed} changed, {r.pages_unchanged} unchanged, "
               f"{r.pages_removed} removed, {r.pages_failed} failed)")
    click.echo(f"  chunks: {r.chunks_written} written, {r.chunks_kept} kept, {r.chunks_embedded} embedded "
               f"({r.embed_seconds:.1f} s), {r.chunks_reused} reused")
    if not r.complete:
        click.echo("  the source was not read completely: pages not seen this time were kept")
    for failure in r.failures[:20]:
        click.echo(f"  skipped {failure['url']}: {failure['reason']}")
    if len(r.failures) > 20:
        click.echo(f"  ... and {len(r.failures) - 20} more (see --json)")


@cli.command()
@click.argument("question")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many results.")
@click.option("--hybrid", is_flag=True, help="Fuse vector and full-text (BM25) ranks.")
@click.option("--no-deep-memory", is_flag=True, help="Search without the active deep-memory adapter.")
@click.option("--collection", "collections", metavar="NAME", multiple=True,
              help="Search only this collection (repeatable) [default: every collection].")
@json_option
@pass_app
def search(app: App, question: str, k: int, hybrid: bool, no_deep_memory: bool, collections: tuple[str, ...],
           as_json: bool) -> None:
    """Find the chunks that answer QUESTION, with links to their exact section.

    Example:

        deepmem search "how do I create an autoincrement column" -k 5 --json
    """
    from ..retrieval import open_searcher

    question = _checked_question(question)
    app.read_only = True
    searcher = open_searcher(app.store(create=False), app.embedder, app.home, settings=app.settings)
    try:
        result = searcher.search(question, k, mode="hybrid" if hybrid else "vector", deep_memory=not no_deep_memory,
                                 collections=collections or None)
    finally:
        searcher.adapters.close()  # in Postgres mode it listens for promotions on a connection of its own
    hits = result.hits
    problem = searcher.adapters.error if not no_deep_memory else None
    if as_json:
        echo_json({"question": question, "adapter": result.adapter, "adapter_problem": problem,
                   "timings": result.timings, "results": [h.to_dict() for h in hits]})
        return
    width = shutil.get_terminal_size((100, 20)).columns
    for hit in hits:
        c = hit.chunk
        click.secho(f"{hit.rank:>3}. {hit.score:.3f}  {c.url}", bold=True)
        click.echo(f"     {c.breadcrumb}")
        snippet = " ".join(c.text.split())
        click.echo(f"     {snippet[: max(60, min(width, 160) - 5)]}")
    click.echo(f"(deep memory: {result.adapter or 'off'}{': ' + problem if problem else ''})", err=True)
    if not hits:
        click.echo("no results")


MAX_QUESTION = 10_000


def _checked_question(question: str) -> str:
    """A question the embedder can take: text (bytes that are not UTF-8 are refused), bounded."""
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise click.ClickException("the question is not valid UTF-8 text (check the terminal's encoding, "
                                   "e.g. LANG=C.UTF-8)") from None
    if not question.strip():
        raise click.UsageError("the question is empty")
    if len(question) > MAX_QUESTION:
        raise click.ClickException(f"the question is {len(question):,} characters long; at most {MAX_QUESTION:,}")
    return question


@cli.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """What the store holds: sources, pages, chunks, embedder, size, the active adapter, the feedback spool.

    Example:

        deepmem status --json
    """
    from ..thread_documents import THREAD_KIND
    from ..status import collect_status

    app.read_only = True
    info = collect_status(app.home, app.store(create=False), app.settings)
    if as_json:
        echo_json(info)
        return
    click.echo(f"home:      {info['home']}")
    click.echo(f"embedder:  {info['embedder'] or '(none yet)'}" + (f"  dim {info['dim']}" if info['dim'] else ""))
    click.echo(f"store:     {info['pages']} pages, {info['chunks']} chunks, {info['tokens']:,} tokens, "
               f"{info['bytes'] / 1e6:.1f} MB")
    for s in info["sources"]:
        last = "resolved Slack threads, added by the bot" if s["kind"] == THREAD_KIND else \
            f"last ingest {s['last_ingest_at'] or 'never'}"
        click.echo(f"source:    {s['uri']} ({s['kind']}{', ' + s['base_url'] if s['base_url'] else ''}) "
                   f"in {s['collection']}: {s['pages']} pages, {last}")
    adapter = info["adapter"] or "none (plain search)"
    click.echo(f"adapter:   {adapter}" + (f": {info['adapter_problem']}" if info["adapter_problem"] else ""))
    if info["memory_problem"]:
        click.echo(f"memory:    {info['memory_problem']}")
    spool = info["feedback_spool"]
    if spool["pending"] or spool["quarantined"]:
        click.echo(f"feedback:  {spool['pending']} spool files waiting"
                   + (f", {spool['quarantined']} quarantined in {spool['quarantine_dir']} "
                      f"(see `deepmem feedback quarantine`)" if spool["quarantined"] else ""))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DeepmemError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: what was written is consistent; run the command again to finish", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


from . import deep_memory as _deep_memory  # noqa: E402,F401  (registers train, evaluate, adapters)
from . import feedback as _feedback  # noqa: E402,F401  (registers feedback export, import, forget)
from . import migrate as _migrate  # noqa: E402,F401  (registers migrate)
from . import report as _report  # noqa: E402,F401  (registers report)
from . import sources as _sources  # noqa: E402,F401  (registers sources list, remove)
from . import vector_index as _vector_index  # noqa: E402,F401  (registers vector-index)

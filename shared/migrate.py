"""`deepmem migrate --to postgresql://…`: a single-machine data directory copied into the scale-out database.

What is copied: the adapter versions with the active pointer and its history, the feedback log
(questions, retrievals, events, and the retraining runs), the channel configuration (channels.json:
the default and each channel's settings, merged into the database's), each channel's Slack history-import
progress the database does not have yet, and the store (sources, pages with their
chunks, vectors and links, read and written through the ``DocumentStore`` interface on both sides;
that interface does not return a page's original size in bytes, which nothing reads, so copied
pages record 0; the caches of generated questions and their vectors are not copied: the first
nightly run there fills them again). Every copy is idempotent: a row is inserted when missing and updated only when it differs, so
running the migration twice changes nothing the second time (and a migration interrupted half-way
is finished by running it again). The data directory is only read.

Afterwards every part is verified: each row and version of the data directory must be found in
the database (the database may hold more: what replicas wrote since). The report gives, per
table, the rows in the data directory, how many the copy inserted or changed, how many are in the
database, and how many are missing; any missing row is a failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .database import describe
from .errors import DeepmemError
from .home import Home

__all__ = ["migrate_home", "MigrationReport", "MigrationError", "format_report"]


class MigrationError(DeepmemError):
    """The data directory cannot be copied (a damaged part, a version that differs in the database)."""


@dataclass
class TableCount:
    name: str
    source: int
    copied: int
    target: int
    missing: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class MigrationReport:
    target: str
    tables: list[TableCount] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.missing == 0 for t in self.tables)

    def to_dict(self) -> dict:
        return {"target": self.target, "ok": self.ok, "tables": [t.to_dict() for t in self.tables],
                "notes": self.notes}


def migrate_home(home: Home, url: str, *, log=lambda message: None) -> MigrationReport:
    report = MigrationReport(describe(url))
    _migrate_adapters(home, url, report, log)  # first: a version trained elsewhere stops it before any copy
    _migrate_feedback(home, url, report, log)
    _migrate_store(home, url, report, log)
    _migrate_channels(home, url, report, log)
    _migrate_history_progress(home, url, report, log)
    return report


# -- where the Slack history import stands --------------------------------------------------------

def _migrate_history_progress(home: Home, url: str, report: MigrationReport, log) -> None:
    """Each channel's history-import progress the database does not have yet (a replica that has read
    a channel since holds a newer one: it is kept), so the replicas go on from where this machine was."""
    from .history_progress import FileProgress, PostgresProgress

    here = FileProgress(home)
    channels = here.channels()
    if not channels:
        report.notes.append("no history import progress in the data directory: nothing to copy")
        return
    target = PostgresProgress(url)
    try:
        there = set(target.channels())
        new = [c for c in channels if c not in there]
        for channel in new:
            target.save(channel, here.load(channel))
        after = set(target.channels())
    finally:
        target.close()
    missing = sum(1 for c in channels if c not in after)
    report.tables.append(TableCount("history_progress", len(channels), len(new), len(after), missing))
    log(f"history import progress: {len(channels)} channels, {len(new)} copied")


# -- the channel configuration ----------------------------------------------------------------------

def _migrate_channels(home: Home, url: str, report: MigrationReport, log) -> None:
    """channels.json's default and channels into the database's configuration, in one locked change:
    settings that differ are replaced, channels configured only in the database are kept."""
    from .channels import ChannelConfig
    from .channels_postgres import PostgresChannelConfigStore
    from .errors import ConfigError

    if not ChannelConfig.path(home).exists():
        report.notes.append("no channels.json in the data directory: nothing to copy")
        return
    try:
        here = ChannelConfig.load(home)
    except ConfigError as exc:
        raise MigrationError(f"the channel configuration was not copied: {exc}") from None
    wanted = {"default": here.default, **here.channels()}
    copied = 0

    def merge(there: ChannelConfig) -> ChannelConfig:
        nonlocal copied
        merged = there.with_default(here.default)
        for channel, settings in here.channels().items():
            merged = merged.with_channel(channel, settings)
        copied = sum(1 for name, s in wanted.items() if _settings_of(there, name) != s)
        return merged

    with PostgresChannelConfigStore(url) as target:
        if any(_settings_of(target.load(), name) != s for name, s in wanted.items()):
            target.update(merge)
        there = target.load()
    missing = sum(1 for name, s in wanted.items() if _settings_of(there, name) != s)
    report.tables.append(TableCount("channels.config", len(wanted), copied, 1 + len(there.channels()), missing))
    log(f"channels: {len(wanted)} settings (the default and {len(wanted) - 1} channels), {copied} copied")


def _settings_of(config, name: str):
    return config.default if name == "default" else config.channels().get(name)


# -- feedback and runs ----------------------------------------------------------------------------

def _migrate_feedback(home: Home, url: str, report: MigrationReport, log) -> None:
    from .feedback.postgres import SCHEMA, TABLES, PostgresFeedback
    from .feedback.store import FeedbackStore, has_feedback

    if not has_feedback(home):
        report.notes.append("no feedback database in the data directory: nothing to copy")
        return
    source = FeedbackStore(home)
    source.drain()
    if source.pending():
        raise MigrationError(f"the feedback spool of {home.root} could not be applied ({source.pending()} files "
                             f"wait): stop `deepmem serve` there and migrate again")
    target = PostgresFeedback(url)
    try:
        with target._connection() as conn:
            for table, key in TABLES.items():
                columns = [c for c, _, _ in target._columns[table]]
                rows = source.rows(f"SELECT {', '.join(columns)} FROM {table}")
                copied = _upsert_rows(conn, f"{SCHEMA}.{table}", columns, key, rows,
                                      touch="txid = pg_current_xact_id()")
                wanted = {tuple(r[k] for k in key) for r in rows}
                present = {tuple(r) for r in conn.execute(f"SELECT {', '.join(key)} FROM {SCHEMA}.{table}").fetchall()}
                report.tables.append(TableCount(f"feedback.{table}", len(rows), copied, len(present),
                                                len(wanted - present)))
                log(f"feedback.{table}: {len(rows)} rows, {copied} copied")
    finally:
        target.close()


def _upsert_rows(conn, table: str, columns: list[str], key: tuple[str, ...], rows: list[dict], *,
                 touch: str = "") -> int:
    """Insert missing rows and update those that differ, through a temporary table filled by COPY;
    returns how many were inserted or changed."""
    if not rows:
        return 0
    names = ", ".join(columns)
    rest = [c for c in columns if c not in key]
    with conn.transaction():
        conn.execute(f"CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT {names} FROM {table} WITH NO DATA")
        with conn.cursor() as cur:
            with cur.copy(f"COPY incoming ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
        updates = ", ".join([f"{c} = excluded.{c}" for c in rest] + ([touch] if touch else []))
        differs = " OR ".join(f"t.{c} IS DISTINCT FROM excluded.{c}" for c in rest) or "false"
        cursor = conn.execute(f"INSERT INTO {table} AS t ({names}) SELECT {names} FROM incoming "
                              f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} WHERE {differs}")
        return cursor.rowcount


# -- adapters ---------------------------------------------------------------------------------------

def _migrate_adapters(home: Home, url: str, report: MigrationReport, log) -> None:
    from .deep_memory.versions import AdapterError, AdapterRegistry
    from .deep_memory.versions_postgres import SCHEMA, PostgresRegistry

    source = AdapterRegistry(home.adapters_dir)
    for name, why in source.damaged():
        report.notes.append(f"adapter {name} not copied: {why}")
    target = PostgresRegistry(url)
    try:
        here = [(v.name, (v.path / "weights.npz").read_bytes(), (v.path / "meta.json").read_text(encoding="utf-8"))
                for v in source.versions()]
        there = dict(target._run(lambda conn: conn.execute(
            f"SELECT name, weights FROM {SCHEMA}.versions WHERE name = ANY(%s)", [[n for n, _, _ in here]]).fetchall()))
        for name, weights, _ in here:  # checked before anything is copied
            if name in there and hashlib.sha256(bytes(there[name])).digest() != hashlib.sha256(weights).digest():
                raise MigrationError(f"adapter {name} in the database differs from the one in {home.adapters_dir}: "
                                     f"it was trained elsewhere; migrate into an empty database, or remove one of them")
        copied = sum(target.put(name, weights, meta) for name, weights, meta in here)
        names = [name for name, _, _ in here]
        present = {v.name for v in target.versions()}
        report.tables.append(TableCount("adapters.versions", len(names), copied, len(present),
                                        len(set(names) - present)))
        try:
            state = source._read_state()
        except AdapterError as exc:
            report.notes.append(f"the active adapter was not copied: {exc}")
            state = None
        if state is not None:
            version, history = state.get("version"), [h for h in state.get("history", []) if h in present]
            moved = target.set_pointer(version if version in present else None, history)
            pointer_ok = target._run(target._pointer)[0] == (version if version in present else None)
            report.tables.append(TableCount("adapters.active", 1 if version else 0, int(moved),
                                            1 if target.active_name() else 0, 0 if pointer_ok else 1))
        log(f"adapters: {len(names)} versions, {copied} copied")
    finally:
        target.close()


# -- the store --------------------------------------------------------------------------------------

PAGES_PER_TRANSACTION = 50


def _migrate_store(home: Home, url: str, report: MigrationReport, log) -> None:
    """Sources, pages with their chunks, vectors and links, through the store interface on both sides.
    A page already in the database with the same content hash and the same chunks is skipped."""
    from .store import Store
    from .store.postgres import PostgresStore

    if not home.store_path.exists():
        report.notes.append("no store in the data directory: nothing to copy")
        return
    with Store.open(home.store_path, create=False) as source, PostgresStore.open(url, create=True) as target:
        if source.embedder_name:
            target.bind_embedder(source.embedder_name, source.dim)  # another embedder there: a one-line error
        embed_hashes = source.chunk_embed_hashes()
        summaries = {s["uri"]: s for s in source.source_summaries()}
        copied = {"sources": 0, "pages": 0, "chunks": 0, "links": 0}
        for src in source.sources():
            known = target.source(src.uri)
            if known is None or (known.kind, known.base_url, known.options, known.collection) != \
                    (src.kind, src.base_url, src.options, src.collection):
                target.upsert_source(src.uri, src.kind, src.base_url, src.options, collection=src.collection)
                copied["sources"] += 1
            tid = target.source(src.uri).id
            there = target.page_states(tid)
            paths = dict(source.source_pages(src.id))
            todo = [(page_url, state) for page_url, state in source.page_states(src.id).items()
                    if not _same_page(source, target, state, there.get(page_url))]
            for i in range(0, len(todo), PAGES_PER_TRANSACTION):
                with target.transaction():
                    for page_url, state in todo[i:i + PAGES_PER_TRANSACTION]:
                        chunks, links = _copy_page(source, target, tid, page_url, paths.get(state.id), state,
                                                   there.get(page_url), embed_hashes)
                        copied["chunks"] += chunks
                        copied["links"] += links
                copied["pages"] += len(todo[i:i + PAGES_PER_TRANSACTION])
            if known is None or known.last_ingest_at is None:
                summary = summaries.get(src.uri, {})
                target.finish_source(tid, {"pages_failed": summary.get("last_failures", 0),
                                           "complete": summary.get("last_complete", True),
                                           "migrated_from": str(home.root)})
            log(f"store: {src.uri}: {len(todo)} pages copied")
        _verify_store(source, target, report, copied)


def _same_page(source, target, state, there) -> bool:
    return there is not None and there.content_hash == state.content_hash and \
        set(target.chunk_ids(there.id)) == set(source.chunk_ids(state.id))


def _copy_page(source, target, source_id: int, page_url: str, path, state, there, embed_hashes: dict
               ) -> tuple[int, int]:
    """Write one page (inside the caller's transaction); returns the chunks new there and the links written."""
    from .chunking import Chunk
    from .tokens import count_tokens

    stored = sorted(source.chunks_by_rowid(list(source.chunk_ids(state.id).values())).values(), key=lambda c: c.ord)
    chunks = [Chunk(id=c.id, page_url=c.page_url, title=c.title, headings=c.headings, anchors=c.anchors, text=c.text,
                    ord=c.ord, n_tokens=count_tokens(c.text)) for c in stored]
    hashes = [embed_hashes[c.id] for c in chunks]
    vectors = source.vectors_for_embed_hashes(hashes)
    links = [(target_url, text, context) for _, target_url, text, context in source.links_from([state.id])]
    already = set(target.chunk_ids(there.id)) if there is not None else set()
    # the interface keeps a page's title on its chunks; the size of the document read is not kept by it
    target.write_page(source_id=source_id, url=page_url, path=path, title=chunks[0].title if chunks else "",
                      content_hash=state.content_hash, size=0, chunks=chunks, embed_hashes=hashes,
                      vectors=[vectors.get(h, b"") for h in hashes], links=links)
    return sum(1 for c in chunks if c.id not in already), len(links)


def _verify_store(source, target, report: MigrationReport, copied: dict) -> None:
    here_sources = {s.uri for s in source.sources()}
    there_sources = {s.uri for s in target.sources()}
    here_pages = {u for s in source.sources() for u in source.page_states(s.id)}
    there_pages = {u for s in target.sources() for u in target.page_states(s.id)}
    here_chunks, there_chunks = source.chunk_rowids(), target.chunk_rowids()
    there_vectors = set(target.all_vectors()[0].tolist())
    here_vectors = len(source.all_vectors()[0])
    with_vector = {cid for cid, rowid in there_chunks.items() if rowid in there_vectors}
    here_links, there_links = source.all_links(), target.all_links()
    counted = _multiset(there_links)
    missing_links = sum(max(0, n - counted.get(link, 0)) for link, n in _multiset(here_links).items())
    report.tables += [
        TableCount("store.sources", len(here_sources), copied["sources"], len(there_sources),
                   len(here_sources - there_sources)),
        TableCount("store.pages", len(here_pages), copied["pages"], len(there_pages), len(here_pages - there_pages)),
        TableCount("store.chunks", len(here_chunks), copied["chunks"], len(there_chunks),
                   len(set(here_chunks) - set(there_chunks))),
        TableCount("store.vectors", here_vectors, copied["chunks"], len(there_vectors),
                   len(set(here_chunks) - with_vector)),
        TableCount("store.links", len(here_links), copied["links"], len(there_links), missing_links),
    ]


def _multiset(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def format_report(report: MigrationReport) -> str:
    width = max([len(t.name) for t in report.tables] + [5])
    lines = [f"{'table':{width}}  {'here':>8}  {'copied':>8}  {'there':>8}  {'missing':>8}"]
    for t in report.tables:
        lines.append(f"{t.name:{width}}  {t.source:>8}  {t.copied:>8}  {t.target:>8}  {t.missing:>8}")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"{'verified' if report.ok else 'MISMATCH'}: {report.target}")
    return "\n".join(lines)


"""The document store in PostgreSQL with pgvector: one corpus shared by several processes and machines.

The same tables as the SQLite store (sources, pages, chunks, links, meta, and the question
caches), with the vector in a ``vector(dim)`` column of ``chunks`` and the full text in a
generated ``tsvector`` column (english configuration, title and headings weighted above the
body) with a GIN index.

- **Vector search.** A corpus under ``EXACT_LIMIT`` chunks is scanned exactly (index scans off).
  Beyond, an HNSW index (cosine; built concurrently at the end of the ingest that crosses the
  limit, since an index under a small corpus would only slow every insert) answers with
  ``hnsw.ef_search`` set to ``EF_SEARCH`` (or k, when larger). A search limited to some
  collections over-fetches from the index in proportion to their share of the corpus and filters
  (pgvector 0.6 has no iterative index scan); when that leaves fewer than k, or the collections
  are small, it scans exactly.
- **Writes.** A page is replaced inside the caller's transaction, so a killed ingest leaves every
  page wholly old or wholly new. ``vectors_version`` in ``meta`` moves once per transaction that
  changed chunks, at its end, so the row is locked only for the commit: ingesters working on
  different sources at once touch different rows and never deadlock.
- **Connection.** One connection per store, guarded by ``lock`` (a server shares the store between
  threads); several processes each open their own. Vectors travel in pgvector's binary format.
"""

from __future__ import annotations

import json
import struct
import threading
from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np

from ..chunking import Chunk
from ..collections import DEFAULT, check_name
from ..database import one_line
from ..errors import StoreError
from .base import (CHUNK_COLUMNS, CHUNK_FROM, SOURCE_COLUMNS, ChunkOrder, DocumentStore, PageState, Source,
                   StoredChunk, chunk_from_row, locked, preparing, source_from_row)

try:
    import psycopg
    from psycopg.adapt import Dumper, Loader
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import Format
    from psycopg.types import TypeInfo
except ImportError as exc:  # pragma: no cover - psycopg is a dependency
    raise StoreError("DEEPMEM_DATABASE_URL needs psycopg: pip install 'psycopg[binary]'") from exc

__all__ = ["PostgresStore", "EXACT_LIMIT", "EF_SEARCH", "SCHEMA_VERSION"]

EXACT_LIMIT = 10_000  # chunks searched (the corpus, or the collections asked) below which search is exact
EF_SEARCH = 400  # HNSW candidate list: recall@10 of exact 0.986 at 100k, 0.955 at 1M real-shaped chunks (SCALE.md)
MAX_EF_SEARCH = 1000  # pgvector's limit
# An HNSW build keeps its graph in maintenance_work_mem and falls back to a much slower on-disk build
# once it is full: pgvector 0.6 took 2,048 bytes per 384-d vector (bench/SCALE.md, 1M chunks: 2 GB).
INDEX_BYTES_PER_CHUNK = 2_200  # at m = 16
INDEX_BYTES_PER_LINK = 32  # each m more: 2 more layer-0 neighbours of 16 bytes (pgvector's HnswCandidate)
INDEX_BUILD_MEMORY_MB = (512, 16_384)  # the least and the most a build asks for
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64  # pgvector's defaults, and an index built without options


def index_build_memory_mb(chunks: int, m: int = HNSW_M) -> int:
    """maintenance_work_mem for building the index over ``chunks`` vectors: the whole graph, bounded."""
    low, high = INDEX_BUILD_MEMORY_MB
    per_chunk = INDEX_BYTES_PER_CHUNK + (m - HNSW_M) * INDEX_BYTES_PER_LINK
    return int(min(high, max(low, -(-chunks * per_chunk // 2**20))))


NOW = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
MIGRATE_LOCK = 0x646D7374  # advisory lock key: "dmst"

MIGRATIONS = [
    f"""
    CREATE TABLE sources (
        id bigserial PRIMARY KEY,
        uri text NOT NULL UNIQUE,
        kind text NOT NULL,
        base_url text,
        options text NOT NULL DEFAULT '{{}}',
        collection text NOT NULL DEFAULT 'default',
        created_at text NOT NULL DEFAULT {NOW},
        last_ingest_at text,
        last_report text
    );
    CREATE INDEX sources_collection ON sources(collection);
    CREATE TABLE pages (
        id bigserial PRIMARY KEY,
        source_id bigint NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
        url text NOT NULL UNIQUE,
        path text,
        title text NOT NULL DEFAULT '',
        content_hash text NOT NULL,
        size bigint NOT NULL DEFAULT 0,
        ingested_at text NOT NULL DEFAULT {NOW}
    );
    CREATE INDEX pages_source ON pages(source_id);
    CREATE INDEX pages_path ON pages(path);
    CREATE TABLE chunks (
        rowid bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        page_id bigint NOT NULL REFERENCES pages(id) ON DELETE CASCADE,
        ord integer NOT NULL,
        url text NOT NULL,
        title text NOT NULL DEFAULT '',
        headings text NOT NULL DEFAULT '[]',
        anchors text NOT NULL DEFAULT '[]',
        text text NOT NULL,
        n_tokens integer NOT NULL DEFAULT 0,
        embed_hash text NOT NULL,
        embedding vector,
        fts tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', title || ' ' || headings), 'A') ||
            setweight(to_tsvector('english', text), 'B')) STORED
    );
    CREATE INDEX chunks_page ON chunks(page_id);
    CREATE INDEX chunks_embed_hash ON chunks(embed_hash);
    CREATE INDEX chunks_fts ON chunks USING gin(fts);
    CREATE TABLE links (
        id bigserial PRIMARY KEY,
        page_id bigint NOT NULL REFERENCES pages(id) ON DELETE CASCADE,
        target text NOT NULL,
        text text NOT NULL,
        context text NOT NULL DEFAULT ''
    );
    CREATE INDEX links_page ON links(page_id);
    CREATE INDEX links_target ON links(target text_pattern_ops);
    CREATE TABLE questions (
        key text PRIMARY KEY,
        generator text NOT NULL,
        payload text NOT NULL,
        created_at text NOT NULL DEFAULT {NOW}
    );
    CREATE TABLE question_vectors (
        key text PRIMARY KEY,
        vector bytea NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
OUR_TABLES = ("sources", "pages", "chunks", "links", "questions", "question_vectors")


class _VectorDumper(Dumper):
    """numpy float32 vectors to pgvector's binary format: dim (int16), unused (int16), big-endian float32s."""
    format = Format.BINARY

    def dump(self, obj) -> bytes:
        values = np.asarray(obj, dtype=np.float32).ravel()
        return struct.pack(">HH", len(values), 0) + values.astype(">f4").tobytes()


class _VectorLoader(Loader):
    format = Format.BINARY

    def load(self, data) -> np.ndarray:
        return np.frombuffer(bytes(data), dtype=">f4", offset=4).astype(np.float32)


def describe(url: str) -> str:
    """The database URL without its password, for messages and ``stats``."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host if '/' not in host else '[' + host + ']'}{port}/{info.get('dbname', '')}"


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PostgresStore(DocumentStore):
    """The store in a PostgreSQL database (pgvector 0.6 or newer)."""

    def __init__(self, conn: "psycopg.Connection", url: str):
        self.conn = conn
        self.path = describe(url)
        self.lock = threading.RLock()
        self._depth = 0  # transaction nesting
        self._dirty = False  # chunks changed in the current transaction: bump vectors_version at its end
        self._counts: tuple[int, dict[str, int]] | None = None
        self.exact_limit = EXACT_LIMIT  # chunks searched below which search is exact
        self.ef_search = EF_SEARCH
        self.hnsw_m, self.hnsw_ef_construction = HNSW_M, HNSW_EF_CONSTRUCTION  # what a build uses
        self._register_vector()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, create: bool = True) -> "PostgresStore":
        where = describe(url)
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=30, application_name="deepmem")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database {where}: {one_line(exc)}") from None
        with preparing(conn, (psycopg.Error,), lambda exc: f"cannot prepare the store in {where}: {one_line(exc)}"):
            _migrate(conn, where, create)
        return cls(conn, url)

    def _register_vector(self) -> None:
        info = TypeInfo.fetch(self.conn, "vector")
        if info is None:  # pragma: no cover - the migration creates the extension
            raise StoreError(f"the database {self.path} has no pgvector extension")
        info.register(self.conn)
        dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})
        self.conn.adapters.register_dumper(np.ndarray, dumper)
        self.conn.adapters.register_loader(info.oid, _VectorLoader)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self):
        """One transaction (nested calls join the outer one). Holds ``lock`` throughout: other threads
        sharing this store wait, as they would for SQLite's writer."""
        with self.lock:
            outer = self._depth == 0
            self._depth += 1
            try:
                if outer:
                    with self.conn.transaction():
                        yield self
                        if self._dirty:
                            self._bump_version()
                else:
                    yield self
            finally:
                self._depth -= 1
                if outer:
                    self._dirty = False

    def _x(self, sql: str, params=(), *, binary: bool = False):
        """Run one statement under the lock; the cursor, its rows fetched by the caller at once."""
        with self.lock:
            return self.conn.cursor(binary=binary).execute(sql, params)

    def _rows(self, sql: str, params=(), *, binary: bool = False) -> list[tuple]:
        with self.lock:
            return self.conn.cursor(binary=binary).execute(sql, params).fetchall()

    def _one(self, sql: str, params=()):
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # -- meta and embedder -----------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._x("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value))

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder and give the vector column its dimension (first ingest). The HNSW index
        comes when the corpus outgrows exact search (``build_vector_index``): at the end of the ingest
        that takes it past ``exact_limit``, or here when rows were bulk-loaded before binding."""
        self.check_embedder(name, dim)
        if self.embedder_name is not None:
            return
        with self.transaction():
            self._x("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))  # two first ingesters: one binds
            stored = self.meta("embedder")
            if stored is not None:
                self.check_embedder(name, dim)
                return
            self.set_meta("embedder", name)
            self.set_meta("dim", str(int(dim)))
            self._x(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({int(dim)})")
        self.build_vector_index(if_needed=True)  # rows bulk-loaded before binding: index them now

    def _index_state(self) -> dict:
        """The HNSW index as the catalog has it: built, valid (a build that was interrupted is not), its
        options (pgvector's defaults when it was built without any) and size."""
        row = self._one("SELECT i.indisvalid, c.reloptions, pg_relation_size(c.oid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'chunks_embedding_hnsw'")
        if row is None:
            return {"built": False, "valid": False, "m": None, "ef_construction": None, "size_mb": 0.0}
        options = dict(o.split("=", 1) for o in (row[1] or []))
        return {"built": True, "valid": bool(row[0]), "m": int(options.get("m", HNSW_M)),
                "ef_construction": int(options.get("ef_construction", HNSW_EF_CONSTRUCTION)),
                "size_mb": round(row[2] / 2**20, 1)}

    def vector_index(self) -> dict:
        """The HNSW index (``_index_state``), the chunks it covers, and what search and a build would use now."""
        return self._index_state() | {
            "chunks": self._one("SELECT count(*) FROM chunks")[0], "exact_below": self.exact_limit,
            "ef_search": self.ef_search, "wanted": {"m": self.hnsw_m, "ef_construction": self.hnsw_ef_construction}}

    def build_vector_index(self, *, if_needed: bool = False, rebuild: bool = False) -> bool:
        """Build the HNSW index (cosine, ``hnsw_m`` and ``hnsw_ef_construction``) on the vectors, concurrently
        (writers go on meanwhile); with ``if_needed``, only once the corpus has ``exact_limit`` chunks (below,
        search is exact and an index would only slow every insert: 50x in bench/ingest_throughput).
        A valid index is kept, even one built with other options, unless ``rebuild``: then a new one is built
        beside it, and swapped in in one short transaction (searches use the old one until then).
        One process builds; the others skip. True if this call built it."""
        if self.dim is None or self._depth:
            return False
        state = self._index_state()
        if state["valid"] and not rebuild:
            return False
        chunks = self._one("SELECT count(*) FROM chunks")[0]
        if if_needed and chunks < self.exact_limit:
            return False
        swap = state["valid"]
        name = "chunks_embedding_hnsw_next" if swap else "chunks_embedding_hnsw"
        with self.lock:
            if not self._one("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK + 1,))[0]:
                return False  # another process is building it
            try:
                if state["built"] and not swap:  # a build that was interrupted leaves an invalid index behind
                    self._x("DROP INDEX CONCURRENTLY IF EXISTS chunks_embedding_hnsw")
                self._x("DROP INDEX CONCURRENTLY IF EXISTS chunks_embedding_hnsw_next")  # an interrupted rebuild's
                self._x(f"SET maintenance_work_mem = '{index_build_memory_mb(chunks, self.hnsw_m)}MB'")
                self._x(f"CREATE INDEX CONCURRENTLY {name} ON chunks USING hnsw (embedding vector_cosine_ops) "
                        f"WITH (m = {int(self.hnsw_m)}, ef_construction = {int(self.hnsw_ef_construction)})")
                self._x("RESET maintenance_work_mem")
                if swap:
                    with self.conn.transaction():
                        self._x("DROP INDEX chunks_embedding_hnsw")
                        self._x("ALTER INDEX chunks_embedding_hnsw_next RENAME TO chunks_embedding_hnsw")
            finally:
                self._x("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK + 1,))
        return True

    # -- sources ---------------------------------------------------------------------------
    def add_source(self, uri: str, kind: str, base_url: str | None = None, options: dict | None = None,
                   collection: str | None = None) -> int:
        name = check_name(collection) if collection is not None else None
        row = self._one(
            "INSERT INTO sources(uri, kind, base_url, options, collection) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (uri) DO UPDATE SET kind = excluded.kind, base_url = excluded.base_url, "
            "options = excluded.options, collection = coalesce(%s, sources.collection) RETURNING id",
            (uri, kind, base_url, json.dumps(options or {}, sort_keys=True), name or DEFAULT, name))
        if name is not None:
            self._changed()
        return row[0]

    def source(self, uri: str) -> Source | None:
        row = self._one(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE uri = %s", (uri,))
        return source_from_row(row) if row else None

    def sources(self) -> list[Source]:
        return [source_from_row(r) for r in self._rows(f"SELECT {SOURCE_COLUMNS} FROM sources ORDER BY id")]

    def collections(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT collection FROM sources ORDER BY collection")]

    def finish_source(self, source_id: int, report: dict) -> None:
        """Record the ingest, and build the vector index if the corpus has outgrown exact search."""
        self._x(f"UPDATE sources SET last_ingest_at = {NOW}, last_report = %s WHERE id = %s",
                (json.dumps(report), source_id))
        self.build_vector_index(if_needed=True)

    def source_summaries(self) -> list[dict]:
        rows = self._rows(
            "SELECT s.id, s.uri, s.kind, s.base_url, s.collection, s.created_at, s.last_ingest_at, s.last_report, "
            "(SELECT count(*) FROM pages p WHERE p.source_id = s.id), "
            "(SELECT count(*) FROM chunks c JOIN pages p ON p.id = c.page_id WHERE p.source_id = s.id) "
            "FROM sources s ORDER BY s.id")
        out = []
        for sid, uri, kind, base_url, collection, created, last, report, pages, chunks in rows:
            last_report = json.loads(report) if report else {}
            out.append({"id": sid, "uri": uri, "kind": kind, "base_url": base_url, "collection": collection,
                        "pages": pages, "chunks": chunks, "created_at": created, "last_ingest_at": last,
                        "last_failures": last_report.get("pages_failed", 0),
                        "last_complete": last_report.get("complete", True)})
        return out

    def remove_source(self, uri: str) -> dict:
        with self.transaction():
            row = self._one("SELECT id FROM sources WHERE uri = %s FOR UPDATE", (uri,))
            if row is None:
                raise StoreError(f"no source {uri!r} in the store")
            pages = self._one("SELECT count(*) FROM pages WHERE source_id = %s", row)[0]
            chunks = self._one("SELECT count(*) FROM chunks WHERE page_id IN "
                               "(SELECT id FROM pages WHERE source_id = %s)", row)[0]
            self._x("DELETE FROM sources WHERE id = %s", row)  # pages, chunks and links cascade
            self._changed()
        return {"uri": uri, "pages": pages, "chunks": chunks}

    # -- pages and writing -----------------------------------------------------------------
    def page_states(self, source_id: int) -> dict[str, PageState]:
        rows = self._rows("SELECT url, id, source_id, content_hash FROM pages WHERE source_id = %s", (source_id,))
        return {r[0]: PageState(r[1], r[2], r[3]) for r in rows}

    def page_owner(self, url: str) -> int | None:
        row = self._one("SELECT source_id FROM pages WHERE url = %s", (url,))
        return row[0] if row else None

    def page_id(self, url: str) -> int | None:
        row = self._one("SELECT id FROM pages WHERE url = %s", (url,))
        return row[0] if row else None

    def source_pages(self, source_id: int) -> list[tuple[int, str | None]]:
        return self._rows("SELECT id, path FROM pages WHERE source_id = %s ORDER BY id", (source_id,))

    def pages_at_path(self, path: str) -> list[int]:
        return [r[0] for r in self._rows("SELECT id FROM pages WHERE path = %s ORDER BY id", (path,))]

    def chunk_ids(self, page_id: int) -> dict[str, int]:
        return dict(self._rows("SELECT id, rowid FROM chunks WHERE page_id = %s", (page_id,)))

    def vectors_for_embed_hashes(self, hashes: Iterable[str]) -> dict[str, bytes]:
        hashes = sorted(set(hashes))
        if self.embedder_name is None or not hashes:
            return {}
        rows = self._rows("SELECT DISTINCT ON (embed_hash) embed_hash, embedding FROM chunks "
                          "WHERE embed_hash = ANY(%s) AND embedding IS NOT NULL", (hashes,), binary=True)
        return {h: v.tobytes() for h, v in rows}

    def write_page(self, *, source_id: int, url: str, path: str | None, title: str, content_hash: str, size: int,
                   chunks: Sequence[Chunk], embed_hashes: Sequence[str], vectors: Sequence[bytes],
                   links: Sequence[tuple[str, str, str]]) -> None:
        with self.transaction():  # joins the caller's transaction (a batch of pages commits together)
            page_id = self._one(
                f"INSERT INTO pages(source_id, url, path, title, content_hash, size) VALUES (%s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (url) DO UPDATE SET source_id = excluded.source_id, path = excluded.path, "
                f"title = excluded.title, content_hash = excluded.content_hash, size = excluded.size, "
                f"ingested_at = {NOW} RETURNING id", (source_id, url, path, title, content_hash, size))[0]
            existing = self.chunk_ids(page_id)
            keep = {c.id for c in chunks}
            stale = [rowid for cid, rowid in existing.items() if cid not in keep]
            cur = self.conn.cursor()
            if stale:
                cur.execute("DELETE FROM chunks WHERE rowid = ANY(%s)", (stale,))
            kept, new = [], []
            for chunk, embed_hash, vector in zip(chunks, embed_hashes, vectors, strict=True):
                if chunk.id in existing:  # same text in the same place: keep the row and its vector
                    kept.append((chunk.ord, chunk.url, existing[chunk.id]))
                else:
                    new.append((chunk.id, page_id, chunk.ord, chunk.url, chunk.title, json.dumps(list(chunk.headings)),
                                json.dumps(list(chunk.anchors)), chunk.text, chunk.n_tokens, embed_hash,
                                np.frombuffer(vector, dtype=np.float32) if vector else None))
            if kept:
                cur.executemany("UPDATE chunks SET ord = %s, url = %s WHERE rowid = %s", kept)
            if new:
                cur.executemany("INSERT INTO chunks(id, page_id, ord, url, title, headings, anchors, text, n_tokens, "
                                "embed_hash, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", new)
            cur.execute("DELETE FROM links WHERE page_id = %s", (page_id,))
            if links:
                cur.executemany("INSERT INTO links(page_id, target, text, context) VALUES (%s, %s, %s, %s)",
                                [(page_id, target, text, context) for target, text, context in links])
            self._changed()

    def delete_pages(self, page_ids: Sequence[int]) -> None:
        ids = [int(i) for i in page_ids]
        if not ids:
            return
        with self.transaction():
            self._x("DELETE FROM pages WHERE id = ANY(%s)", (ids,))  # chunks and links cascade
            self._changed()

    def _changed(self) -> None:
        if self._depth:
            self._dirty = True  # bumped once, at the end of the transaction
        else:
            self._bump_version()

    def _bump_version(self) -> None:
        self._x("INSERT INTO meta(key, value) VALUES ('vectors_version', '1') ON CONFLICT (key) "
                "DO UPDATE SET value = (meta.value::bigint + 1)::text")

    def vectors_version(self) -> int:
        return int(self.meta("vectors_version") or 0)

    # -- reading ---------------------------------------------------------------------------
    def chunks_by_rowid(self, rowids: Sequence[int]) -> dict[int, StoredChunk]:
        rowids = [int(r) for r in rowids]
        if not rowids:
            return {}
        rows = self._rows(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} WHERE c.rowid = ANY(%s)", (rowids,))
        return {row[0]: chunk_from_row(row) for row in rows}

    def chunks_by_id(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self._rows(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} WHERE c.id = ANY(%s)", (ids,))
        return {row[1]: chunk_from_row(row) for row in rows}

    def iter_chunks(self, order: ChunkOrder = "url") -> Iterable[StoredChunk]:
        by = {"url": "p.url, c.ord", "rowid": "c.rowid", "page": "c.page_id, c.ord"}[order]
        for row in self._rows(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} ORDER BY {by}"):
            yield chunk_from_row(row)

    def chunk_rowids(self) -> dict[str, int]:
        return dict(self._rows("SELECT id, rowid FROM chunks"))

    def chunk_texts(self) -> list[tuple[int, str]]:
        return self._rows("SELECT rowid, text FROM chunks ORDER BY rowid")

    def chunk_embed_hashes(self) -> dict[str, str]:
        return dict(self._rows("SELECT id, embed_hash FROM chunks"))

    def chunk_places(self) -> list[tuple[int, str, str]]:
        return self._rows(f"SELECT c.rowid, c.url, s.collection FROM {CHUNK_FROM}")

    @locked
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, matrix) of every stored vector, read in one snapshot, batch by batch into the matrix."""
        dim = self.dim
        if dim is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        with self.conn.transaction():
            if not self._depth:  # its own transaction: one snapshot for the count and the rows
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            n = self.conn.execute("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL").fetchone()[0]
            rowids = np.zeros(n, dtype=np.int64)
            matrix = np.zeros((n, dim), dtype=np.float32)
            i = 0
            with self.conn.cursor("deepmem_all_vectors", binary=True) as cur:
                cur.itersize = 10_000
                cur.execute("SELECT rowid, embedding FROM chunks WHERE embedding IS NOT NULL ORDER BY rowid")
                for rowid, vector in cur:
                    rowids[i] = rowid
                    matrix[i] = vector
                    i += 1
        return rowids[:i], matrix[:i]

    def _collection_counts(self) -> dict[str, int]:
        """Chunks per collection, cached until ``vectors_version`` moves."""
        version = self.vectors_version()
        if self._counts is None or self._counts[0] != version:
            counts = dict(self._rows(f"SELECT s.collection, count(*) FROM {CHUNK_FROM} GROUP BY s.collection"))
            self._counts = (version, counts)
        return self._counts[1]

    def vector_search(self, query: np.ndarray, k: int, collections: Iterable[str] | None = None
                      ) -> list[tuple[int, float]]:
        """The k nearest chunks, [(rowid, similarity)] best first: exact under EXACT_LIMIT chunks (of the
        collections asked), HNSW beyond (over-fetched and filtered when limited to some collections)."""
        if self.embedder_name is None:
            return []
        k = max(1, int(k))
        q = np.asarray(query, dtype=np.float32)
        counts = self._collection_counts()
        total = sum(counts.values())
        names = None if collections is None else sorted(set(collections))
        inside = total if names is None else sum(counts.get(c, 0) for c in names)
        if not inside:
            return []
        if inside < self.exact_limit or k > MAX_EF_SEARCH:
            return self._exact(q, k, names)
        if names is None:
            return self._hnsw(q, k, k)
        deep = k * -(-2 * total // inside)  # enough candidates that k of them are likely inside
        if deep <= MAX_EF_SEARCH:
            found = self._hnsw(q, k, deep, names)
            if len(found) == k:
                return found
        return self._exact(q, k, names)

    def _exact(self, q: np.ndarray, k: int, names: list[str] | None) -> list[tuple[int, float]]:
        where = "" if names is None else ("JOIN pages p ON p.id = c.page_id JOIN sources s ON s.id = p.source_id "
                                          "WHERE s.collection = ANY(%s) AND")
        with self.transaction():
            self._x("SELECT set_config('enable_indexscan', 'off', true)")  # the scan, not the index: exact
            rows = self._rows(f"SELECT c.rowid, c.embedding <=> %s AS d FROM chunks c {where or 'WHERE'} "
                              f"c.embedding IS NOT NULL ORDER BY d LIMIT %s",
                              (q, *([names] if names is not None else []), k))
            self._x("SELECT set_config('enable_indexscan', 'on', true)")  # for the rest of an outer transaction
        return [(rowid, 1.0 - float(d)) for rowid, d in rows]

    def _hnsw(self, q: np.ndarray, k: int, deep: int, names: list[str] | None = None) -> list[tuple[int, float]]:
        ef = min(MAX_EF_SEARCH, max(self.ef_search, deep))
        with self.transaction():
            self._x("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
            if names is None:
                rows = self._rows("SELECT rowid, embedding <=> %s AS d FROM chunks ORDER BY d LIMIT %s", (q, k))
            else:
                rows = self._rows(
                    "SELECT v.rowid, v.d FROM (SELECT rowid, page_id, embedding <=> %s AS d FROM chunks "
                    "ORDER BY d LIMIT %s) v JOIN pages p ON p.id = v.page_id JOIN sources s ON s.id = p.source_id "
                    "WHERE s.collection = ANY(%s) ORDER BY v.d LIMIT %s", (q, deep, names, k))
        return [(rowid, 1.0 - float(d)) for rowid, d in rows]

    def text_search(self, query: str, k: int, collections: Iterable[str] | None = None) -> list[tuple[int, float]]:
        """Chunks matching any of the question's terms, ranked by ts_rank_cd. Each term goes in as a
        parameter through plainto_tsquery, so nothing the user types is read as query syntax."""
        from ..search_text import terms

        words = terms(query)[:24]
        if not words:
            return []
        names = None if collections is None else sorted(set(collections))
        if names is not None and not names:
            return []
        where = "" if names is None else "AND c.page_id IN (SELECT p.id FROM pages p JOIN sources s " \
                                          "ON s.id = p.source_id WHERE s.collection = ANY(%s))"
        rows = self._rows(
            "WITH q AS (SELECT string_agg('(' || t::text || ')', ' | ')::tsquery AS query FROM "
            "(SELECT plainto_tsquery('english', w) AS t FROM unnest(%s::text[]) w) terms WHERE t::text <> '') "
            f"SELECT c.rowid, ts_rank_cd(c.fts, q.query) AS score FROM chunks c, q WHERE c.fts @@ q.query {where} "
            "ORDER BY score DESC, c.rowid LIMIT %s", (words, *([names] if names is not None else []), int(k)))
        return [(rowid, float(score)) for rowid, score in rows]

    def similarities(self, query: np.ndarray, rowids: Sequence[int]) -> list[float]:
        rowids = [int(r) for r in rowids]
        if not rowids:
            return []
        found = dict(self._rows("SELECT rowid, 1 - (embedding <=> %s) FROM chunks WHERE rowid = ANY(%s)",
                                (np.asarray(query, dtype=np.float32), rowids)))
        return [float(found[r]) if found.get(r) is not None else -1.0 for r in rowids]

    # -- links -----------------------------------------------------------------------------
    def links_to(self, url_prefix: str) -> list[tuple[str, str, str]]:
        return self._rows("SELECT target, text, context FROM links WHERE target LIKE %s ESCAPE '\\' ORDER BY id",
                          (_like_prefix(url_prefix),))

    def links_from(self, page_ids: Iterable[int]) -> list[tuple[int, str, str, str]]:
        ids = sorted(set(int(i) for i in page_ids))
        if not ids:
            return []
        return self._rows("SELECT page_id, target, text, context FROM links WHERE page_id = ANY(%s) ORDER BY id",
                          (ids,))

    def all_links(self) -> list[tuple[str, str, str, str]]:
        return self._rows("SELECT p.url, l.target, l.text, l.context FROM links l JOIN pages p ON p.id = l.page_id "
                          "ORDER BY l.id")

    # -- caches of generated questions and question vectors ----------------------------------
    def cached_questions(self, keys: Sequence[str]) -> dict[str, str]:
        keys = list(keys)
        return dict(self._rows("SELECT key, payload FROM questions WHERE key = ANY(%s)", (keys,))) if keys else {}

    def cache_questions(self, generator: str, items: dict[str, str]) -> None:
        if not items:
            return
        with self.transaction():
            self.conn.cursor().executemany(
                "INSERT INTO questions(key, generator, payload) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET payload = excluded.payload",
                [(k, generator, v) for k, v in items.items()])

    def replace_cached_questions(self, generator: str, key: str, payload: str) -> None:
        with self.transaction():
            family = _like_prefix(generator.rsplit("-", 1)[0] + "-")  # older versions of the same generator too
            self._x("DELETE FROM questions WHERE generator LIKE %s ESCAPE '\\' AND key <> %s", (family, key))
            self._x("INSERT INTO questions(key, generator, payload) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET payload = excluded.payload", (key, generator, payload))

    def question_vectors(self, keys: Sequence[str]) -> dict[str, bytes]:
        keys = list(keys)
        if not keys:
            return {}
        return {k: bytes(v) for k, v in self._rows("SELECT key, vector FROM question_vectors WHERE key = ANY(%s)",
                                                   (keys,))}

    def put_question_vectors(self, rows: Sequence[tuple[str, bytes]]) -> None:
        if not rows:
            return
        with self.transaction():
            self.conn.cursor().executemany(
                "INSERT INTO question_vectors(key, vector) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET vector = excluded.vector", list(rows))

    # -- summary ---------------------------------------------------------------------------
    def stats(self) -> dict:
        one = lambda sql: self._one(sql)[0]  # noqa: E731
        size = one("SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in OUR_TABLES))
        return {
            "path": self.path,
            "schema_version": SCHEMA_VERSION,
            "embedder": self.embedder_name,
            "dim": self.dim,
            "sources": one("SELECT count(*) FROM sources"),
            "pages": one("SELECT count(*) FROM pages"),
            "chunks": one("SELECT count(*) FROM chunks"),
            "tokens": int(one("SELECT coalesce(sum(n_tokens), 0) FROM chunks")),
            "bytes": int(size),
        }


def _migrate(conn: "psycopg.Connection", where: str, create: bool) -> None:
    """Bring the database's deepmem tables up to SCHEMA_VERSION, under an advisory lock (several
    processes may open it at once); refuse one written by a newer deepmem, or holding other tables."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        has_meta = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        version = 0
        if has_meta:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
        else:
            clash = [t for t in OUR_TABLES if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()[0]]
            if clash:
                raise StoreError(f"the database {where} holds tables ({', '.join(clash)}) that are not a deepmem store")
            if not create:
                raise StoreError(f"no store in the database {where}: run `deepmem ingest` first")
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store in {where} has schema version {version}, written by a newer deepmem; this "
                             f"version understands up to {SCHEMA_VERSION}. Upgrade deepmem.")
        if version == SCHEMA_VERSION:
            return
        if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                raise StoreError(f"the database {where} has no pgvector extension and it cannot be created here "
                                 f"({one_line(exc)}): run CREATE EXTENSION vector as its owner") from None
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            for statement in (s.strip() for s in script.split(";")):
                if statement:
                    conn.execute(statement)
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(number),))

"""The document store: one SQLite file holding pages, chunks, their vectors and full text.

Vectors live in a sqlite-vec ``vec0`` table keyed by the chunk's rowid; FTS5 indexes the
same rows (kept in step by triggers). Every page is replaced in one transaction, so a
killed ingest leaves each page either wholly old or wholly new.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..chunking import Chunk
from ..collections import DEFAULT, check_name
from ..errors import StoreError
from .base import (CHUNK_COLUMNS, CHUNK_FROM, SOURCE_COLUMNS, ChunkOrder, DocumentStore, PageState, Source,
                   StoredChunk, chunk_from_row, locked, preparing, source_from_row)
from .connection import connect, sqlite3, transaction
from .migrations import SCHEMA_VERSION, migrate

__all__ = ["Store", "StoredChunk", "Source", "PageState"]

_locked = locked


def _in_collections(collections: Iterable[str]) -> tuple[str, list[str]]:
    """``rowid IN (chunks of these collections)``, with its parameters."""
    names = sorted(set(collections))
    return (f"rowid IN (SELECT c.rowid FROM {CHUNK_FROM} WHERE s.collection IN ({','.join('?' * len(names))}))",
            names)


IN_BATCH = 500  # values bound in one IN (...) list: well below SQLite's limit on parameters


def _in_batches(values: Iterable) -> Iterator[tuple[list, str]]:
    """``values`` a slice at a time for ``IN (...)``: each slice, and its placeholders."""
    values = list(values)
    for i in range(0, len(values), IN_BATCH):
        part = values[i:i + IN_BATCH]
        yield part, ",".join("?" * len(part))


class Store(DocumentStore):
    """The SQLite store. One connection to the store file. Reads used by concurrent requests (search, fetch) take a
    lock, so a server may share one Store between its worker threads."""

    def __init__(self, conn, path: Path):
        self.conn = conn
        self.path = path
        self.lock = threading.RLock()

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> "Store":
        path = Path(path)
        if not path.exists() and not create:
            raise StoreError(f"no store at {path}: run `deepmem ingest` first")
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{path} is not a deepmem store (not an SQLite file)")
        conn = connect(path)
        with preparing(conn, (sqlite3.DatabaseError,), lambda exc: f"cannot read the store {path}: {exc}"):
            migrate(conn, str(path))
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        return transaction(self.conn)

    def checkpoint(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- meta and embedder -------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                          (key, value))

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder and create the vector table (first ingest only)."""
        self.check_embedder(name, dim)
        if self.embedder_name is not None:
            return
        with self.transaction():
            self.set_meta("embedder", name)
            self.set_meta("dim", str(dim))
            self.conn.execute(
                f"CREATE VIRTUAL TABLE chunk_vectors USING vec0(embedding float[{int(dim)}] distance_metric=cosine)")
            self.conn.execute("CREATE TRIGGER chunks_vec_delete AFTER DELETE ON chunks BEGIN "
                              "DELETE FROM chunk_vectors WHERE rowid = old.rowid; END")

    # -- sources and pages --------------------------------------------------------------
    def add_source(self, uri: str, kind: str, base_url: str | None = None, options: dict | None = None,
                   collection: str | None = None) -> int:
        """Register (or update) a source and return its id. Call inside ``transaction()``.

        A new source goes to ``collection`` (``default`` when None); a known one keeps its
        collection unless one is given."""
        name = check_name(collection) if collection is not None else None
        self.conn.execute(
            "INSERT INTO sources(uri, kind, base_url, options, collection) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(uri) DO UPDATE SET kind=excluded.kind, base_url=excluded.base_url, options=excluded.options, "
            "collection=coalesce(?, sources.collection)",
            (uri, kind, base_url, json.dumps(options or {}, sort_keys=True), name or DEFAULT, name))
        if name is not None:  # chunks may have changed collection: in-memory copies reload
            self._bump_version()
        return self.conn.execute("SELECT id FROM sources WHERE uri=?", (uri,)).fetchone()[0]

    def source(self, uri: str) -> Source | None:
        row = self.conn.execute(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE uri=?", (uri,)).fetchone()
        return source_from_row(row) if row else None

    def sources(self) -> list[Source]:
        return [source_from_row(r) for r in self.conn.execute(f"SELECT {SOURCE_COLUMNS} FROM sources ORDER BY id")]

    @_locked
    def collections(self) -> list[str]:
        """The collections that hold at least one source, sorted."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT collection FROM sources ORDER BY collection")]

    def finish_source(self, source_id: int, report: dict) -> None:
        with self.transaction():
            self.conn.execute("UPDATE sources SET last_ingest_at=strftime('%Y-%m-%dT%H:%M:%SZ','now'), last_report=? "
                              "WHERE id=?", (json.dumps(report), source_id))

    def source_summaries(self) -> list[dict]:
        """Every source with its page and chunk counts and the outcome of its last ingest."""
        rows = self.conn.execute(
            "SELECT s.id, s.uri, s.kind, s.base_url, s.collection, s.created_at, s.last_ingest_at, s.last_report, "
            "(SELECT count(*) FROM pages p WHERE p.source_id = s.id), "
            "(SELECT count(*) FROM chunks c JOIN pages p ON p.id = c.page_id WHERE p.source_id = s.id) "
            "FROM sources s ORDER BY s.id").fetchall()
        out = []
        for sid, uri, kind, base_url, collection, created, last, report, pages, chunks in rows:
            last_report = json.loads(report) if report else {}
            out.append({"id": sid, "uri": uri, "kind": kind, "base_url": base_url, "collection": collection,
                        "pages": pages, "chunks": chunks,
                        "created_at": created, "last_ingest_at": last,
                        "last_failures": last_report.get("pages_failed", 0),
                        "last_complete": last_report.get("complete", True)})
        return out

    def remove_source(self, uri: str) -> dict:
        """Remove a source with its pages, chunks, vectors, full text and links, in one transaction."""
        with self.transaction():
            row = self.conn.execute("SELECT id FROM sources WHERE uri=?", (uri,)).fetchone()
            if row is None:
                raise StoreError(f"no source {uri!r} in the store")
            pages = self.conn.execute("SELECT count(*) FROM pages WHERE source_id=?", row).fetchone()[0]
            chunks = self.conn.execute("SELECT count(*) FROM chunks WHERE page_id IN "
                                       "(SELECT id FROM pages WHERE source_id=?)", row).fetchone()[0]
            self.conn.execute("DELETE FROM chunks WHERE page_id IN (SELECT id FROM pages WHERE source_id=?)", row)
            self.conn.execute("DELETE FROM links WHERE page_id IN (SELECT id FROM pages WHERE source_id=?)", row)
            self.conn.execute("DELETE FROM pages WHERE source_id=?", row)
            self.conn.execute("DELETE FROM sources WHERE id=?", row)
            self._bump_version()
        return {"uri": uri, "pages": pages, "chunks": chunks}

    def page_states(self, source_id: int) -> dict[str, PageState]:
        rows = self.conn.execute("SELECT url, id, source_id, content_hash FROM pages WHERE source_id=?", (source_id,))
        return {r[0]: PageState(r[1], r[2], r[3]) for r in rows}

    def page_owner(self, url: str) -> int | None:
        row = self.conn.execute("SELECT source_id FROM pages WHERE url=?", (url,)).fetchone()
        return row[0] if row else None

    def page_id(self, url: str) -> int | None:
        row = self.conn.execute("SELECT id FROM pages WHERE url=?", (url,)).fetchone()
        return row[0] if row else None

    def source_pages(self, source_id: int) -> list[tuple[int, str | None]]:
        return self.conn.execute("SELECT id, path FROM pages WHERE source_id = ? ORDER BY id", (source_id,)).fetchall()

    def pages_at_path(self, path: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM pages WHERE path = ? ORDER BY id", (path,))]

    def chunk_ids(self, page_id: int) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT id, rowid FROM chunks WHERE page_id=?", (page_id,))}

    def vectors_for_embed_hashes(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Stored vectors of chunks whose embedded text hashes to one of ``hashes`` (no re-embedding)."""
        out: dict[str, bytes] = {}
        hashes = list(set(hashes))
        if self.embedder_name is None:
            return out
        for part, marks in _in_batches(hashes):
            rows = self.conn.execute(
                f"SELECT c.embed_hash, v.embedding FROM chunks c JOIN chunk_vectors v ON v.rowid = c.rowid "
                f"WHERE c.embed_hash IN ({marks})", part)
            for h, blob in rows:
                out.setdefault(h, blob)
        return out

    def write_page(self, *, source_id: int, url: str, path: str | None, title: str, content_hash: str, size: int,
                   chunks: Sequence[Chunk], embed_hashes: Sequence[str], vectors: Sequence[bytes],
                   links: Sequence[tuple[str, str, str]]) -> None:
        """Replace one page and its chunks. Call inside ``transaction()``.

        Chunks whose id is already stored keep their row and vector; the rest are inserted.
        """
        row = self.conn.execute("SELECT id FROM pages WHERE url=?", (url,)).fetchone()
        if row:
            page_id = row[0]
            self.conn.execute("UPDATE pages SET source_id=?, path=?, title=?, content_hash=?, size=?, "
                              "ingested_at=strftime('%Y-%m-%dT%H:%M:%SZ','now') WHERE id=?",
                              (source_id, path, title, content_hash, size, page_id))
        else:
            page_id = self.conn.execute("INSERT INTO pages(source_id, url, path, title, content_hash, size) "
                                        "VALUES (?, ?, ?, ?, ?, ?)",
                                        (source_id, url, path, title, content_hash, size)).lastrowid
        existing = self.chunk_ids(page_id)
        keep = {c.id for c in chunks}
        stale = [rowid for cid, rowid in existing.items() if cid not in keep]
        for part, marks in _in_batches(stale):
            self.conn.execute(f"DELETE FROM chunks WHERE rowid IN ({marks})", part)
        for chunk, embed_hash, vector in zip(chunks, embed_hashes, vectors, strict=True):
            if chunk.id in existing:  # same text in the same place: keep the row and its vector
                self.conn.execute("UPDATE chunks SET ord=?, url=? WHERE rowid=?", (chunk.ord, chunk.url,
                                                                                   existing[chunk.id]))
                continue
            rowid = self.conn.execute(
                "INSERT INTO chunks(id, page_id, ord, url, title, headings, anchors, text, n_tokens, embed_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (chunk.id, page_id, chunk.ord, chunk.url, chunk.title, json.dumps(list(chunk.headings)),
                 json.dumps(list(chunk.anchors)), chunk.text, chunk.n_tokens, embed_hash)).lastrowid
            self.conn.execute("INSERT INTO chunk_vectors(rowid, embedding) VALUES (?, ?)", (rowid, vector))
        self._bump_version()
        self.conn.execute("DELETE FROM links WHERE page_id=?", (page_id,))
        self.conn.executemany("INSERT INTO links(page_id, target, text, context) VALUES (?, ?, ?, ?)",
                              [(page_id, target, text, context) for target, text, context in links])

    def delete_pages(self, page_ids: Sequence[int]) -> None:
        with self.transaction():
            for i in range(0, len(page_ids), 200):
                part = list(page_ids[i:i + 200])
                marks = ",".join("?" * len(part))
                self.conn.execute(f"DELETE FROM chunks WHERE page_id IN ({marks})", part)
                self.conn.execute(f"DELETE FROM links WHERE page_id IN ({marks})", part)
                self.conn.execute(f"DELETE FROM pages WHERE id IN ({marks})", part)
            self._bump_version()

    def _bump_version(self) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES ('vectors_version', '1') ON CONFLICT(key) "
                          "DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    @_locked
    def vectors_version(self) -> int:
        """Changes whenever a chunk is added or removed: in-memory copies reload when it moves."""
        return int(self.meta("vectors_version") or 0)

    # -- reading -------------------------------------------------------------------------
    @_locked
    def chunks_by_rowid(self, rowids: Sequence[int]) -> dict[int, StoredChunk]:
        out: dict[int, StoredChunk] = {}
        for part, marks in _in_batches(rowids):
            rows = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} WHERE c.rowid IN ({marks})", part)
            for row in rows:
                out[row[0]] = chunk_from_row(row)
        return out

    def chunks_by_id(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        out: dict[str, StoredChunk] = {}
        for part, marks in _in_batches(ids):
            rows = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} WHERE c.id IN ({marks})", part)
            for row in rows:
                out[row[1]] = chunk_from_row(row)
        return out

    def iter_chunks(self, order: ChunkOrder = "url") -> Iterable[StoredChunk]:
        by = {"url": "p.url, c.ord", "rowid": "c.rowid", "page": "c.page_id, c.ord"}[order]
        rows = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM} ORDER BY {by}")
        for row in rows:
            yield chunk_from_row(row)

    @_locked
    def chunk_rowids(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT id, rowid FROM chunks"))

    @_locked
    def chunk_texts(self) -> list[tuple[int, str]]:
        return self.conn.execute("SELECT rowid, text FROM chunks").fetchall()

    @_locked
    def chunk_embed_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, embed_hash FROM chunks"))

    @_locked
    def vector_search(self, query: np.ndarray, k: int, collections: Iterable[str] | None = None
                      ) -> list[tuple[int, float]]:
        """Exact k nearest chunks by cosine similarity: [(rowid, similarity)], best first.
        ``collections``: only chunks of these (None: every collection; names are not checked here)."""
        if self.embedder_name is None:
            return []
        k = max(1, min(int(k), 4096))  # vec0's limit on k
        blob = np.asarray(query, dtype=np.float32).tobytes()
        if collections is None:
            rows = self.conn.execute("SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? "
                                     "ORDER BY distance", (blob, k))
            return [(rowid, 1.0 - distance) for rowid, distance in rows]
        names = sorted(set(collections))
        counts = self._collection_counts()
        inside, total = sum(counts.get(c, 0) for c in names), sum(counts.values())
        if not inside:
            return []
        # most of the store: the plain scan, over-fetched, then filtered (a rowid list that long would
        # cost more than the scan); a small part: vec0 scans only the rowids of those collections
        deep = min(4096, k * -(-2 * total // inside))
        if inside * 2 >= total and deep < inside:
            marks = ",".join("?" * len(names))
            rows = self.conn.execute(
                f"SELECT v.rowid, v.distance FROM (SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? "
                f"AND k = ?) v JOIN chunks c ON c.rowid = v.rowid JOIN pages p ON p.id = c.page_id "
                f"JOIN sources s ON s.id = p.source_id WHERE s.collection IN ({marks}) "
                f"ORDER BY v.distance LIMIT ?", (blob, deep, *names, k)).fetchall()
            if len(rows) == k:
                return [(rowid, 1.0 - distance) for rowid, distance in rows]
        where, params = _in_collections(names)
        rows = self.conn.execute(f"SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? "
                                 f"AND {where} ORDER BY distance", (blob, k, *params))
        return [(rowid, 1.0 - distance) for rowid, distance in rows]

    def _collection_counts(self) -> dict[str, int]:
        """Chunks per collection, cached until the vectors change (``vectors_version``)."""
        version = self.vectors_version()
        cached = getattr(self, "_counts", None)
        if cached is None or cached[0] != version:
            counts = dict(self.conn.execute(f"SELECT s.collection, count(*) FROM {CHUNK_FROM} GROUP BY s.collection"))
            cached = self._counts = (version, counts)
        return cached[1]

    @_locked
    def text_search(self, query: str, k: int, collections: Iterable[str] | None = None) -> list[tuple[int, float]]:
        """BM25 over title, headings and text: [(rowid, score)], best first (higher is better).
        Any text is safe: it is turned into quoted terms, never read as FTS syntax."""
        from ..search_text import fts_query

        match = fts_query(query)
        if not match:
            return []
        where, params = ("", []) if collections is None else _in_collections(collections)
        if collections is not None and not params:
            return []
        rows = self.conn.execute("SELECT rowid, bm25(chunk_fts, 2.0, 2.0, 1.0) FROM chunk_fts WHERE chunk_fts MATCH ? "
                                 + (f"AND {where} " if where else "")
                                 + "ORDER BY bm25(chunk_fts, 2.0, 2.0, 1.0) LIMIT ?", (match, *params, int(k)))
        return [(rowid, -score) for rowid, score in rows]

    @_locked
    def chunk_places(self) -> list[tuple[int, str, str]]:
        """(rowid, section URL, collection) of every chunk: what the in-memory index groups and filters by."""
        return self.conn.execute(f"SELECT c.rowid, c.url, s.collection FROM {CHUNK_FROM}").fetchall()

    @_locked
    def similarities(self, query: np.ndarray, rowids: Sequence[int]) -> list[float]:
        """Similarity of ``query`` to given chunks (-1.0 for chunks no longer stored)."""
        rowids = [int(r) for r in rowids]
        if not rowids:
            return []
        rows = dict(self.conn.execute(f"SELECT rowid, embedding FROM chunk_vectors WHERE rowid IN "
                                      f"({','.join('?' * len(rowids))})", rowids))
        q = np.asarray(query, dtype=np.float32)
        return [float(np.frombuffer(rows[r], dtype=np.float32) @ q) if r in rows else -1.0 for r in rowids]

    @_locked
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, matrix) of every stored vector, for in-memory search and training.

        Filled in place, batch by batch: peak memory is the matrix itself, not twice it."""
        dim = self.dim
        if dim is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        n = self.conn.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0]
        rowids = np.zeros(n, dtype=np.int64)
        matrix = np.zeros((n, dim), dtype=np.float32)
        cursor = self.conn.execute("SELECT rowid, embedding FROM chunk_vectors ORDER BY rowid")
        i = 0
        while i < n:
            rows = cursor.fetchmany(10_000)
            if not rows:
                break
            rows = rows[: n - i]
            rowids[i:i + len(rows)] = [r[0] for r in rows]
            matrix[i:i + len(rows)] = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
            i += len(rows)
        return rowids[:i], matrix[:i]

    def links_to(self, url_prefix: str) -> list[tuple[str, str, str]]:
        return self.conn.execute("SELECT target, text, context FROM links WHERE target LIKE ? ESCAPE '\\'",
                                 (url_prefix.replace("%", "\\%").replace("_", "\\_") + "%",)).fetchall()

    def links_from(self, page_ids: Iterable[int]) -> list[tuple[int, str, str, str]]:
        out = []
        for part, marks in _in_batches(sorted(set(int(i) for i in page_ids))):
            out += self.conn.execute(f"SELECT page_id, target, text, context FROM links WHERE page_id IN ({marks}) "
                                     f"ORDER BY rowid", part).fetchall()
        return out

    def all_links(self) -> list[tuple[str, str, str, str]]:
        return self.conn.execute("SELECT p.url, l.target, l.text, l.context FROM links l "
                                 "JOIN pages p ON p.id = l.page_id ORDER BY l.rowid").fetchall()

    # -- caches of generated questions and question vectors ----------------------------------
    def cached_questions(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part, marks in _in_batches(keys):
            out.update(self.conn.execute(f"SELECT key, payload FROM questions WHERE key IN ({marks})", part))
        return out

    def cache_questions(self, generator: str, items: dict[str, str]) -> None:
        if not items:
            return
        with self.transaction():
            self.conn.executemany("INSERT INTO questions(key, generator, payload) VALUES (?, ?, ?) "
                                  "ON CONFLICT(key) DO UPDATE SET payload=excluded.payload",
                                  [(k, generator, v) for k, v in items.items()])

    def replace_cached_questions(self, generator: str, key: str, payload: str) -> None:
        with self.transaction():
            family = generator.rsplit("-", 1)[0] + "-%"  # older versions of the same generator too
            self.conn.execute("DELETE FROM questions WHERE generator LIKE ? AND key<>?", (family, key))
            self.conn.execute("INSERT INTO questions(key, generator, payload) VALUES (?, ?, ?) "
                              "ON CONFLICT(key) DO UPDATE SET payload=excluded.payload", (key, generator, payload))

    @_locked
    def question_vectors(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for part, marks in _in_batches(keys):
            out.update(self.conn.execute(f"SELECT key, vector FROM question_vectors WHERE key IN ({marks})", part))
        return out

    def put_question_vectors(self, rows: Sequence[tuple[str, bytes]]) -> None:
        with self.lock, self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO question_vectors(key, vector) VALUES (?, ?)", list(rows))

    def stats(self) -> dict:
        one = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "embedder": self.embedder_name,
            "dim": self.dim,
            "sources": one("SELECT count(*) FROM sources"),
            "pages": one("SELECT count(*) FROM pages"),
            "chunks": one("SELECT count(*) FROM chunks"),
            "tokens": one("SELECT coalesce(sum(n_tokens), 0) FROM chunks"),
            "bytes": size,
        }

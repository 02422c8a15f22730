"""The storage interface every document store implements, and the records it returns.

Two implementations: ``Store`` (one SQLite file, sqlite-vec and FTS5: the single-machine default)
and ``PostgresStore`` (PostgreSQL with pgvector and tsvector: the scale-out mode). Code outside
``shared/store`` uses only the methods here, never SQL on a connection, so both stores serve the
whole program and one test suite runs against both (tests/test_store_backends.py).

Rows are identified by ``rowid`` (an integer per chunk, stable while the chunk is stored) and
chunk ``id`` (a hash of page, place and text: the same text in the same place keeps its id).
Writes go through ``transaction()``; a page is replaced whole inside one, so a killed ingest
leaves every page wholly old or wholly new. ``vectors_version`` moves with every change to the
chunks, so in-memory copies (``MemoryIndex``) know when to reload.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, Literal, Sequence

import numpy as np

from ..chunking import Chunk
from ..collections import DEFAULT
from ..errors import EmbedderMismatch, StoreError

__all__ = ["DocumentStore", "StoredChunk", "Source", "PageState", "ChunkOrder", "locked", "preparing"]

ChunkOrder = Literal["url", "rowid", "page"]  # page URL then place; insertion; page id then place



# the same SELECT lists and row shapes in both backends' SQL
CHUNK_COLUMNS = "c.rowid, c.id, c.url, p.url, c.title, c.headings, c.anchors, c.text, s.collection, c.page_id, c.ord"
CHUNK_FROM = "chunks c JOIN pages p ON p.id = c.page_id JOIN sources s ON s.id = p.source_id"
SOURCE_COLUMNS = "id, uri, kind, base_url, options, last_ingest_at, collection"


def chunk_from_row(row) -> "StoredChunk":
    """A row of ``SELECT {CHUNK_COLUMNS} FROM {CHUNK_FROM}``."""
    return StoredChunk(rowid=row[0], id=row[1], url=row[2], page_url=row[3], title=row[4],
                       headings=tuple(json.loads(row[5])), anchors=tuple(json.loads(row[6])), text=row[7],
                       collection=row[8], page_id=row[9], ord=row[10])


def source_from_row(row) -> "Source":
    """A row of ``SELECT {SOURCE_COLUMNS} FROM sources``."""
    return Source(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])


@contextmanager
def preparing(conn, errors: tuple[type[BaseException], ...], problem: Callable[[BaseException], str]):
    """While a store makes its connection ready (schema, migrations): on failure the connection is
    closed, and a database error (``errors``) becomes a StoreError saying ``problem(exc)``."""
    try:
        yield
    except errors as exc:
        conn.close()
        raise StoreError(problem(exc)) from None
    except BaseException:
        conn.close()
        raise

@dataclass(frozen=True)
class StoredChunk:
    rowid: int
    id: str
    url: str
    page_url: str
    title: str
    headings: tuple[str, ...]
    anchors: tuple[str, ...]
    text: str
    collection: str = DEFAULT
    page_id: int = 0
    ord: int = 0

    @property
    def heading_path(self) -> str:
        """The headings above the chunk, below the page title: "Syntax > Examples"."""
        return " > ".join(h for h in self.headings if h != self.title)

    @property
    def breadcrumb(self) -> str:
        """Page title, then the headings: "CREATE TABLE > Syntax > Examples"."""
        return " > ".join([self.title, *(h for h in self.headings if h != self.title)])


@dataclass(frozen=True)
class Source:
    id: int
    uri: str
    kind: str
    base_url: str | None
    options: dict
    last_ingest_at: str | None
    collection: str = DEFAULT


@dataclass(frozen=True)
class PageState:
    id: int
    source_id: int
    content_hash: str


def locked(method):
    """Run a method under the store's lock: a server shares one store between its threads."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


def embedder_mismatch(stored: str, stored_dim: int | None, name: str, dim: int) -> EmbedderMismatch:
    return EmbedderMismatch(
        f"this store was built with the embedder {stored} (dimension {stored_dim}), but the configured "
        f"embedder is {name} (dimension {dim or '?'}). Configure the store's embedder again "
        f"(DEEPMEM_EMBEDDER), or ingest into a fresh DEEPMEM_HOME.")


class DocumentStore(ABC):
    """Pages, chunks, their vectors and full text, sources in collections, links, and the caches of
    generated questions and question vectors. ``lock`` (an RLock) guards the connection: reads that
    concurrent requests make take it, and a writer sharing the store with searches holds it around
    its transaction."""

    lock: "object"
    path: object  # where the store lives, for messages (a file, or a database URL without its password)

    # -- lifetime --------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def transaction(self) -> ContextManager:
        """All writes inside commit together, or none does (any exception, Ctrl-C included, rolls back)."""

    def checkpoint(self) -> None:
        """Make the store's files self-contained (SQLite: fold the WAL in); nothing to do elsewhere."""

    # -- meta and embedder -----------------------------------------------------------------
    @abstractmethod
    def meta(self, key: str) -> str | None:
        """A value of the store's key-value metadata (``embedder``, ``dim``, ``schema_version`` ...)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value (inside or outside a transaction)."""

    @property
    def embedder_name(self) -> str | None:
        """The embedder the store's vectors come from; None before the first ingest."""
        return self.meta("embedder")

    @property
    def dim(self) -> int | None:
        value = self.meta("dim")
        return int(value) if value else None

    def check_embedder(self, name: str, dim: int) -> None:
        """Refuse to mix vector spaces: EmbedderMismatch unless the store's embedder is ``name``."""
        stored, stored_dim = self.embedder_name, self.dim
        if stored is None:
            return
        if stored != name or (dim and stored_dim != dim):
            raise embedder_mismatch(stored, stored_dim, name, dim)

    @abstractmethod
    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder and create the vector storage (first ingest); a store bound to another
        embedder raises EmbedderMismatch."""

    # -- sources ---------------------------------------------------------------------------
    def upsert_source(self, uri: str, kind: str, base_url: str | None = None, options: dict | None = None,
                      collection: str | None = None) -> Source:
        """Register or update a source in its own transaction, and return it."""
        with self.transaction():
            self.add_source(uri, kind, base_url, options, collection=collection)
        return self.source(uri)

    @abstractmethod
    def add_source(self, uri: str, kind: str, base_url: str | None = None, options: dict | None = None,
                   collection: str | None = None) -> int:
        """Register (or update) a source and return its id; call inside ``transaction()``. A new source
        goes to ``collection`` (``default`` when None); a known one keeps its collection unless given."""

    @abstractmethod
    def source(self, uri: str) -> Source | None:
        """The source registered under ``uri``, or None."""

    @abstractmethod
    def sources(self) -> list[Source]:
        """Every source, oldest first."""

    @abstractmethod
    def collections(self) -> list[str]:
        """The collections that hold at least one source, sorted."""

    @abstractmethod
    def finish_source(self, source_id: int, report: dict) -> None:
        """Record the time and report of a source's ingest."""

    @abstractmethod
    def source_summaries(self) -> list[dict]:
        """Every source with its collection, page and chunk counts and the outcome of its last ingest."""

    @abstractmethod
    def remove_source(self, uri: str) -> dict:
        """Remove a source with its pages, chunks, vectors and links in one transaction; returns the counts.
        StoreError when there is no such source."""

    # -- pages and writing -----------------------------------------------------------------
    @abstractmethod
    def page_states(self, source_id: int) -> dict[str, PageState]:
        """url -> (page id, source id, content hash) of a source's pages: what an incremental ingest skips."""

    @abstractmethod
    def page_owner(self, url: str) -> int | None:
        """The id of the source a page URL belongs to, or None."""

    @abstractmethod
    def page_id(self, url: str) -> int | None:
        """The id of the page stored under ``url``, or None."""

    @abstractmethod
    def source_pages(self, source_id: int) -> list[tuple[int, str | None]]:
        """(page id, path) of every page of a source."""

    @abstractmethod
    def pages_at_path(self, path: str) -> list[int]:
        """Ids of the pages whose source path is ``path`` (e.g. ``faq.html``)."""

    @abstractmethod
    def chunk_ids(self, page_id: int) -> dict[str, int]:
        """chunk id -> rowid of one page's chunks."""

    @abstractmethod
    def vectors_for_embed_hashes(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Stored vectors (float32 bytes) of chunks whose embedded text hashes to one of ``hashes``."""

    @abstractmethod
    def write_page(self, *, source_id: int, url: str, path: str | None, title: str, content_hash: str, size: int,
                   chunks: Sequence[Chunk], embed_hashes: Sequence[str], vectors: Sequence[bytes],
                   links: Sequence[tuple[str, str, str]]) -> None:
        """Replace one page, its chunks and links; call inside ``transaction()``. Chunks whose id is
        stored keep their row and vector; stale ones are deleted; the rest are inserted."""

    @abstractmethod
    def delete_pages(self, page_ids: Sequence[int]) -> None:
        """Delete pages with their chunks, vectors and links, in one transaction."""

    @abstractmethod
    def vectors_version(self) -> int:
        """Moves whenever chunks are added, removed or change collection."""

    # -- reading ---------------------------------------------------------------------------
    @abstractmethod
    def chunks_by_rowid(self, rowids: Sequence[int]) -> dict[int, StoredChunk]:
        """rowid -> chunk, for the rowids still stored."""

    @abstractmethod
    def chunks_by_id(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        """chunk id -> chunk, for the ids still stored."""

    @abstractmethod
    def iter_chunks(self, order: ChunkOrder = "url") -> Iterable[StoredChunk]:
        """Every chunk: by page URL then place (``url``), by rowid, or by page id then place (``page``)."""

    @abstractmethod
    def chunk_rowids(self) -> dict[str, int]:
        """chunk id -> rowid of every chunk."""

    @abstractmethod
    def chunk_texts(self) -> list[tuple[int, str]]:
        """(rowid, text) of every chunk."""

    @abstractmethod
    def chunk_embed_hashes(self) -> dict[str, str]:
        """chunk id -> hash of its embedded text, for every chunk."""

    @abstractmethod
    def chunk_places(self) -> list[tuple[int, str, str]]:
        """(rowid, section URL, collection) of every chunk."""

    @abstractmethod
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(rowids (n,), matrix (n, dim) float32) of every stored vector, ordered by rowid."""

    @abstractmethod
    def vector_search(self, query: np.ndarray, k: int, collections: Iterable[str] | None = None
                      ) -> list[tuple[int, float]]:
        """The k nearest chunks by cosine similarity, [(rowid, similarity)] best first; ``collections``
        limits them to chunks of those collections (None: all; names are not checked here)."""

    @abstractmethod
    def text_search(self, query: str, k: int, collections: Iterable[str] | None = None) -> list[tuple[int, float]]:
        """Full-text ranking of chunks for any user text (never read as query syntax), [(rowid, score)]
        best first, higher is better; ``collections`` as in ``vector_search``."""

    @abstractmethod
    def similarities(self, query: np.ndarray, rowids: Sequence[int]) -> list[float]:
        """Cosine similarity of ``query`` to given chunks (-1.0 for chunks no longer stored)."""

    # -- links -----------------------------------------------------------------------------
    @abstractmethod
    def links_to(self, url_prefix: str) -> list[tuple[str, str, str]]:
        """(target, text, context) of links whose target starts with ``url_prefix``."""

    @abstractmethod
    def links_from(self, page_ids: Iterable[int]) -> list[tuple[int, str, str, str]]:
        """(page id, target, text, context) of the links on given pages."""

    @abstractmethod
    def all_links(self) -> list[tuple[str, str, str, str]]:
        """(page URL, target, text, context) of every link, in the order they were stored."""

    # -- caches of generated questions and their vectors -------------------------------------
    @abstractmethod
    def cached_questions(self, keys: Sequence[str]) -> dict[str, str]:
        """key -> payload (JSON text) of the generated-question cache entries found."""

    @abstractmethod
    def cache_questions(self, generator: str, items: dict[str, str]) -> None:
        """Store payloads (JSON text) under their keys, in one transaction."""

    @abstractmethod
    def replace_cached_questions(self, generator: str, key: str, payload: str) -> None:
        """Keep one entry for ``generator``'s family (older versions of it removed), in one transaction."""

    @abstractmethod
    def question_vectors(self, keys: Sequence[str]) -> dict[str, bytes]:
        """key -> vector (float32 bytes) of the cached question vectors found."""

    @abstractmethod
    def put_question_vectors(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Store (key, vector bytes) rows, in one transaction."""

    # -- summary ---------------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict:
        """path, schema_version, embedder, dim, and counts of sources, pages, chunks, tokens, bytes."""

"""The document store: one interface (``DocumentStore``), two implementations.

``Store`` keeps everything in one SQLite file (sqlite-vec, FTS5): the single-machine default.
``PostgresStore`` keeps it in PostgreSQL (pgvector, tsvector) when ``DEEPMEM_DATABASE_URL`` is
set, so several processes and machines share one corpus. ``open_store`` picks by the settings.
"""

from __future__ import annotations

from .base import DocumentStore, PageState, Source, StoredChunk
from .connection import connect, sqlite3, transaction
from .store import Store

__all__ = ["DocumentStore", "Store", "StoredChunk", "Source", "PageState", "open_store", "connect", "sqlite3",
           "transaction"]


def open_store(home, settings, *, create: bool = True) -> DocumentStore:
    """The store of this deployment: PostgreSQL when ``settings.database_url`` is set, else the SQLite
    file in the data directory (``home``). ``create=False`` refuses to create one (StoreError)."""
    if settings.database_url is not None:
        from .postgres import PostgresStore  # psycopg is needed only in the scale-out mode

        store = PostgresStore.open(settings.database_url.get_secret_value(), create=create)
        store.hnsw_m, store.hnsw_ef_construction = settings.pg_hnsw_m, settings.pg_hnsw_ef_construction
        store.ef_search = settings.pg_ef_search
        return store
    return Store.open(home.store_path, create=create)

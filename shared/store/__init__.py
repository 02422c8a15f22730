"""The sqlite-vec document store."""

from .connection import connect, sqlite3, transaction
from .store import PageState, Source, Store, StoredChunk

__all__ = ["Store", "StoredChunk", "Source", "PageState", "connect", "sqlite3", "transaction"]

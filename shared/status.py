"""A summary of what the data directory holds."""

from __future__ import annotations

from .home import Home
from .store import Store

__all__ = ["collect_status"]


def collect_status(home: Home, store: Store) -> dict:
    info = {"home": str(home.root), **store.stats(), "sources": []}
    for source in store.sources():
        pages = store.conn.execute("SELECT count(*) FROM pages WHERE source_id=?", (source.id,)).fetchone()[0]
        info["sources"].append({"uri": source.uri, "kind": source.kind, "base_url": source.base_url,
                                "pages": pages, "last_ingest_at": source.last_ingest_at})
    return info

"""Real documentation for tests: pages of the bundled SQLite docs, extracted to a folder."""

from __future__ import annotations

import tarfile
from pathlib import Path

from shared.sources import demo_archive

# pages the SQLite FAQ's answers point to, plus their neighbours: a small but real corpus
SMALL = [
    "autoinc.html", "lang_createtable.html", "datatype3.html", "lang_altertable.html", "lang_vacuum.html",
    "limits.html", "threadsafe.html", "copyright.html", "foreignkeys.html", "lang_transaction.html",
    "howtocorrupt.html", "c3ref/busy_timeout.html", "c3ref/busy_handler.html", "c3ref/column_name.html",
    "c3ref/threadsafe.html", "lang_insert.html", "amalgamation.html", "lang_delete.html", "wal.html",
    "lang_upsert.html", "fts5.html", "json1.html",
]


def extract(dest: Path, names: list[str] | None = None) -> Path:
    """Extract `names` (all pages when None) from the bundled archive into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(demo_archive()) as tar:
        for member in tar.getmembers():
            if member.isfile() and (names is None or member.name in names):
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return dest

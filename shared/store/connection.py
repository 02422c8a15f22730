"""SQLite connections with sqlite-vec loaded.

The standard library's sqlite3 is often built without extension loading; pysqlite3-binary
ships its own SQLite (with FTS5) that can load sqlite-vec, so we take it when needed.
"""

from __future__ import annotations

import sqlite3 as _stdlib_sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import sqlite_vec

from ..errors import StoreError

__all__ = ["sqlite3", "connect", "transaction"]

if hasattr(_stdlib_sqlite3.Connection, "enable_load_extension"):
    sqlite3 = _stdlib_sqlite3
else:  # pragma: no cover - depends on how Python was built
    try:
        from pysqlite3 import dbapi2 as sqlite3  # type: ignore[no-redef]
    except ImportError as exc:
        raise StoreError("this Python's sqlite3 cannot load extensions; install pysqlite3-binary") from exc


def connect(path: Path | str, *, readonly: bool = False) -> "sqlite3.Connection":
    """Open the store file in WAL mode (readers never wait for the writer), sqlite-vec loaded."""
    path = Path(path)
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        if not readonly:
            _switch_to_wal(conn)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    return conn


def _switch_to_wal(conn: "sqlite3.Connection", seconds: float = 30) -> None:
    """PRAGMA journal_mode=WAL, waiting for other connections. SQLite can fail this pragma at once with
    "database is locked", without going through its busy handler, while another process holds the write
    lock (seen when one process writes a new store and another opens it: 4 of 55 ingests failed so).
    Retry until the other is done, as the busy timeout would."""
    deadline = time.monotonic() + seconds
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@contextmanager
def transaction(conn: "sqlite3.Connection"):
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (Ctrl-C included)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")

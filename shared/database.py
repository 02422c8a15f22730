"""The scale-out database (DEEPMEM_DATABASE_URL): connecting to it, with one-line errors.

An error never shows the URL's password: messages name the database by host and name only.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable
from urllib.parse import urlsplit

from .errors import DeepmemError

__all__ = ["DatabaseError", "database_url", "describe", "connect", "one_line", "advisory_lock",
           "HeldLock", "SharedConnection"]

CONNECT_TIMEOUT = 10  # seconds


class DatabaseError(DeepmemError):
    """The Postgres database cannot be reached or refused a statement."""


def database_url(settings) -> str | None:
    """The postgresql:// URL of the scale-out mode; None in the single-machine mode."""
    secret = getattr(settings, "database_url", None) if settings is not None else None
    if secret is None:
        return None
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)


def describe(url: str) -> str:
    """host/database, never the user's password."""
    parts = urlsplit(url)
    host = parts.hostname or "local socket"
    return f"{host}{':' + str(parts.port) if parts.port else ''}/{parts.path.lstrip('/') or '?'}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else exc.__class__.__name__


def connect(url: str, *, autocommit: bool = True, application: str = "deepmem"):
    """A psycopg connection; DatabaseError (one line, no password) when it cannot be made."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT,
                               application_name=application)
    except psycopg.Error as exc:
        message = one_line(exc)
        password = urlsplit(url).password
        if password:
            message = message.replace(password, "***")
        raise DatabaseError(f"cannot connect to the database {describe(url)}: {message}") from None


@contextmanager
def advisory_lock(url: str, key: int, *, busy: Callable[[], Exception], application: str = "deepmem lock"):
    """Hold a session-level ``pg_try_advisory_lock(key)`` on a connection of its own for the block;
    raise ``busy()`` when another session holds it. A process that dies releases the lock with its
    connection: at once on this machine, and after the server's TCP keepalive (set short here) across
    a network."""
    conn = connect(url, application=application)
    try:
        for setting, value in (("tcp_keepalives_idle", 15), ("tcp_keepalives_interval", 5),
                               ("tcp_keepalives_count", 3)):
            conn.execute(f"SET {setting} = {value}")  # no effect over a Unix socket, where death is seen at once
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
            raise busy()
        try:
            yield HeldLock(conn, key)
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            except Exception:  # the connection broke: the server released the lock with it
                pass
    finally:
        conn.close()


class HeldLock:
    """A session advisory lock this process took. It is gone if its connection broke (a network drop,
    the server restarted, an administrator ended the session): ``held()`` asks the server."""

    def __init__(self, conn, key: int):
        self._conn, self._key = conn, key

    def held(self) -> bool:
        import psycopg

        try:
            return bool(self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
                "AND ((classid::bigint << 32) | objid::bigint) = %s", [self._key]).fetchone()[0])
        except psycopg.Error:
            return False


class SharedConnection:
    """One connection for an object's short statements, taken in turns by its threads, and made again
    when the last one broke (the database restarted, a network blip)."""

    def __init__(self, url: str, application: str = "deepmem"):
        self.url, self.application = url, application
        self._conn = None
        self._lock = threading.RLock()

    @contextmanager
    def use(self):
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self.url, application=self.application)
            yield self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

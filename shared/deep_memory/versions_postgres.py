"""Adapter versions in PostgreSQL (the scale-out mode), and which one is active.

    adapters.versions  (number, name "v0001", meta JSON, weights bytea: weights.npz's bytes, ~0.6 MB)
    adapters.active    one row: version, history, changed_at, generation

Every replica serves the same adapter: activation is one transaction that moves the pointer,
bumps ``generation`` and sends ``NOTIFY deepmem_adapter``. ``signature()`` reads the pointer row
(one small query), and ``listen(callback)`` calls back at once when a promotion commits, so a
replica switches within a moment of the promotion (and within ``poll_interval`` at worst, if a
notification is lost with a connection).

Same methods and the same errors as the file registry (``versions.AdapterRegistry``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from ..database import DatabaseError, SharedConnection, connect, describe, one_line
from .adapter import LinearAdapter
from .versions import ActiveStatus, AdapterError, AdapterVersion, RegistryLookups, cannot_load

__all__ = ["PostgresRegistry", "CHANNEL"]

log = logging.getLogger("deepmem.adapters")

SCHEMA = "adapters"
CHANNEL = "deepmem_adapter"
MIGRATION_LOCK = 0x6465_6570_6164  # "deepad"
HISTORY = 50
MIGRATIONS = [
    f"""
    CREATE SCHEMA IF NOT EXISTS {SCHEMA};
    CREATE TABLE IF NOT EXISTS {SCHEMA}.versions (
        number integer PRIMARY KEY,
        name text NOT NULL UNIQUE,
        meta text NOT NULL,
        weights bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS {SCHEMA}.active (
        id integer PRIMARY KEY CHECK (id = 1),
        version text,
        history text NOT NULL DEFAULT '[]',
        changed_at timestamptz,
        generation bigint NOT NULL DEFAULT 0
    );
    INSERT INTO {SCHEMA}.active (id) VALUES (1) ON CONFLICT DO NOTHING;
    """,
]


class PostgresRegistry(RegistryLookups):
    poll_interval = 1.0  # seconds a searcher may go without asking for the signature (NOTIFY wakes it sooner)

    def __init__(self, url: str):
        self.url = url
        self.where = describe(url)
        self._shared = SharedConnection(url, "deepmem adapters")
        self._run(self._migrate)

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, work, *, what: str = "read the adapters in"):
        """``work(conn)``; a database error becomes a one-line AdapterError naming the database."""
        import psycopg

        try:
            with self._shared.use() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise AdapterError(f"cannot {what} {self.where}: {one_line(exc)}") from None
        except DatabaseError as exc:
            raise AdapterError(str(exc)) from None

    @staticmethod
    def _migrate(conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text)")
            row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise AdapterError(f"the adapter tables have schema version {version}, written by a newer deepmem")
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > version:
                    conn.execute(script)
            conn.execute(f"INSERT INTO {SCHEMA}.meta VALUES ('schema_version', %s) ON CONFLICT (key) "
                         f"DO UPDATE SET value = excluded.value", [str(len(MIGRATIONS))])

    def close(self) -> None:
        self._shared.close()

    def _pointer(self, conn, *, lock: bool = False) -> tuple[str | None, list[str]]:
        row = conn.execute(f"SELECT version, history FROM {SCHEMA}.active WHERE id = 1"
                           + (" FOR UPDATE" if lock else "")).fetchone()
        if row is None:
            return None, []
        try:
            history = json.loads(row[1])
        except ValueError:
            history = None
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise AdapterError(f"the active-adapter pointer in {self.where} is damaged (history: {row[1][:80]!r})")
        return row[0], history

    def _move(self, conn, version: str | None, history: list[str]) -> None:
        """Point at ``version`` and tell every listening replica (delivered when the transaction commits)."""
        conn.execute(f"UPDATE {SCHEMA}.active SET version = %s, history = %s, changed_at = now(), "
                     f"generation = generation + 1 WHERE id = 1", [version, json.dumps(history[-HISTORY:])])
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, version or ""])

    # -- reading ------------------------------------------------------------------------------
    def versions(self) -> list[AdapterVersion]:
        rows = self._run(lambda c: c.execute(f"SELECT name, meta FROM {SCHEMA}.versions ORDER BY number").fetchall())
        out = []
        for name, meta in rows:
            try:
                parsed = json.loads(meta)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                out.append(AdapterVersion(name, Path(f"{SCHEMA}.versions/{name}"), parsed))
        return out

    def damaged(self) -> list[tuple[str, str]]:
        """Versions ``versions`` cannot list (their meta is not a JSON object), and why."""
        rows = self._run(lambda c: c.execute(f"SELECT name, meta FROM {SCHEMA}.versions ORDER BY number").fetchall())
        out = []
        for name, meta in rows:
            try:
                ok = isinstance(json.loads(meta), dict)
            except ValueError:
                ok = False
            if not ok:
                out.append((name, "its meta is unreadable"))
        return out

    def load(self, name: str) -> tuple[LinearAdapter, dict]:
        row = self._run(lambda c: c.execute(f"SELECT weights, meta FROM {SCHEMA}.versions WHERE name = %s",
                                            [name]).fetchone())
        if row is None:
            raise self._unknown(name)
        try:
            return LinearAdapter.from_saved(bytes(row[0]), json.loads(row[1]), f"adapter {name}")
        except Exception as exc:  # damaged bytes: numpy, zipfile and json each fail their own way
            raise cannot_load(name, exc) from None

    def active_name(self) -> str | None:
        try:
            name, _ = self._run(self._pointer)
        except AdapterError:
            return None
        return name if name and self._loadable(name) else None

    def active_status(self) -> ActiveStatus:
        try:
            name, _ = self._run(self._pointer)
        except AdapterError as exc:
            return ActiveStatus(None, str(exc))
        if not name:
            return ActiveStatus(None)
        try:
            self.load(name)
        except AdapterError as exc:
            return ActiveStatus(name, str(exc))
        return ActiveStatus(name)

    def load_active(self) -> tuple[str, LinearAdapter, dict] | None:
        name, _ = self._run(self._pointer)
        if not name:
            return None
        adapter, meta = self.load(name)
        return name, adapter, meta

    def signature(self) -> tuple:
        """Cheap change detector for hot reload: the pointer's generation (one small query)."""
        return self._run(lambda c: c.execute(f"SELECT generation, version FROM {SCHEMA}.active WHERE id = 1"
                                             ).fetchone() or (0, None))

    # -- writing ------------------------------------------------------------------------------
    def save(self, adapter: LinearAdapter, meta: dict) -> AdapterVersion:
        """Store a new version (not activated); its number is the next one, taken under a lock."""
        from .adapter import FORMAT

        def work(conn):
            with conn.transaction():
                conn.execute(f"LOCK TABLE {SCHEMA}.versions IN SHARE ROW EXCLUSIVE MODE")
                number = conn.execute(f"SELECT coalesce(max(number), 0) + 1 FROM {SCHEMA}.versions").fetchone()[0]
                name = f"v{number:04d}"
                full = {"format": FORMAT, "version": name, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
                text = json.dumps(full, indent=2, default=str)
                conn.execute(f"INSERT INTO {SCHEMA}.versions (number, name, meta, weights) VALUES (%s, %s, %s, %s)",
                             [number, name, text, adapter.weights_bytes()])
                return AdapterVersion(name, Path(f"{SCHEMA}.versions/{name}"), json.loads(text))

        return self._run(work, what="save an adapter in")

    def put(self, name: str, weights: bytes, meta_text: str) -> bool:
        """Copy a version as it is (``deepmem migrate``); False when a version of that name is already there."""
        from .versions import VERSION

        match = VERSION.match(name)
        if not match:
            raise AdapterError(f"not a version name: {name!r}")

        def work(conn):
            with conn.transaction():
                done = conn.execute(f"INSERT INTO {SCHEMA}.versions (number, name, meta, weights) VALUES (%s, %s, %s, "
                                    f"%s) ON CONFLICT DO NOTHING RETURNING name",
                                    [int(match.group(1)), name, meta_text, weights]).fetchone()
                return done is not None

        return self._run(work, what="copy an adapter into")

    def set_pointer(self, version: str | None, history: list[str]) -> bool:
        """Set the pointer as it is (``deepmem migrate``); False when it already says exactly that."""
        def work(conn):
            with conn.transaction():
                current = self._pointer(conn, lock=True)
                if current == (version, history[-HISTORY:]):
                    return False
                self._move(conn, version, history)
                return True

        return self._run(work, what="set the active adapter in")

    def activate(self, name: str) -> None:
        self.load(name)  # refuse what cannot be loaded

        def work(conn):
            with conn.transaction():
                try:
                    current, history = self._pointer(conn, lock=True)
                except AdapterError:  # a damaged pointer: activating rewrites it
                    current, history = None, []
                history = [h for h in history if h != name]
                if current and current != name:
                    history.append(current)
                self._move(conn, name, history)

        self._run(work, what="activate an adapter in")

    def deactivate(self) -> None:
        """Search without deep memory (the previous adapter stays in the history)."""
        def work(conn):
            with conn.transaction():
                try:
                    current, history = self._pointer(conn, lock=True)
                except AdapterError:
                    current, history = None, []
                if current:
                    history.append(current)
                self._move(conn, None, history)

        self._run(work, what="switch the adapter off in")

    def rollback(self) -> str | None:
        """Back to the adapter that was active before this one; returns its name (None: no adapter)."""
        def work(conn):
            with conn.transaction():
                try:
                    current, history = self._pointer(conn, lock=True)
                except AdapterError as exc:
                    raise AdapterError(f"{exc}: pick a version with `deepmem adapters activate VERSION` "
                                       f"(see `deepmem adapters list`)") from None
                while history and not self._loadable_in(conn, history[-1]):
                    history.pop()
                if not history and not current:
                    raise AdapterError("nothing to roll back to: no adapter has been active")
                previous = history.pop() if history else None
                self._move(conn, previous, history)
                return previous

        return self._run(work, what="roll back the adapter in")

    @staticmethod
    def _loadable_in(conn, name: str) -> bool:
        row = conn.execute(f"SELECT weights, meta FROM {SCHEMA}.versions WHERE name = %s", [name]).fetchone()
        if row is None:
            return False
        try:
            LinearAdapter.from_saved(bytes(row[0]), json.loads(row[1]), name)
            return True
        except Exception:
            return False

    # -- hearing about promotions -------------------------------------------------------------
    def listen(self, callback) -> "Listener":
        """Call ``callback()`` (in a thread of its own) whenever the active adapter changes on any replica,
        and once after a lost connection comes back (a notification may have been missed meanwhile)."""
        return Listener(self.url, callback)

    def __repr__(self) -> str:
        return f"PostgresRegistry({self.where})"


class Listener:
    """LISTEN deepmem_adapter on a connection of its own, in a daemon thread; ``stop()`` ends it."""

    def __init__(self, url: str, callback):
        self.url, self.callback = url, callback
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deepmem-adapter-listener", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay = 0.5
        missed = False
        while not self._stop.is_set():
            try:
                conn = connect(self.url, application="deepmem adapter listener")
            except DatabaseError as exc:
                log.warning("not listening for adapter promotions: %s; polling only until it comes back", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                missed = True
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self.ready.set()
                delay = 0.5
                if missed:
                    self._call()
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=0.5, stop_after=1):
                        self._call()
            except Exception as exc:  # the connection broke: reconnect, then catch up
                if not self._stop.is_set():
                    log.warning("adapter listener lost its connection (%s); reconnecting", one_line(exc))
                    missed = True
                    self._stop.wait(delay)
            finally:
                conn.close()

    def _call(self) -> None:
        try:
            self.callback()
        except Exception as exc:  # the searcher logs its own problems; the listener goes on
            log.warning("adapter reload after a promotion failed: %s", one_line(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

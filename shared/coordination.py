"""What the bot's replicas must agree on: which deliveries were already handled, and which threads it answered.

Slack delivers an event again when it was not acknowledged in time (``X-Slack-Retry-Num``, same
``event_id``), and with several replicas behind a load balancer (or several Socket Mode
connections) the retry, or a duplicate, can reach another replica. ``claim_event(key)`` is true
for the first claimant of a key only, across every process sharing the coordination, so an event
is answered once. The thread state lets a replica recognise a follow-up in a thread another
replica answered, find the thread of a question, and the question of a posted answer.

Two implementations behind one interface, picked by ``open_coordination(settings)``:

- ``MemoryCoordination`` (no DEEPMEM_DATABASE_URL): one process, in memory, bounded and expiring;
- ``PostgresCoordination`` (DEEPMEM_DATABASE_URL): tables in the shared database. A claim is
  ``INSERT ... ON CONFLICT ... RETURNING`` on a unique key, which Postgres decides atomically
  across connections; an expired claim can be taken again. Rows carry ``expires_at`` (database
  time, so replicas with skewed clocks agree) and are pruned in small batches now and then.

Keys of any length are stored as their SHA-256 (32 bytes); thread and message timestamps and
question ids longer than ``MAX_ID`` are refused with a ValueError naming them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict

from .errors import DeepmemError
from .settings import Settings

__all__ = ["Coordination", "MemoryCoordination", "PostgresCoordination", "CoordinationError", "open_coordination",
           "EVENT_TTL", "THREAD_TTL", "MAX_ID"]

log = logging.getLogger("deepmem.coordination")
EVENT_TTL = 3 * 3600.0  # seconds a claimed delivery is remembered (Slack retries within minutes)
THREAD_TTL = 30 * 86400.0  # seconds a thread the bot answered stays one it follows
MAX_ID = 128  # characters of a channel id, timestamp or question id
MEMORY_LIMIT = 100_000  # claims one process remembers
MEMORY_THREADS = 10_000  # answered threads one process remembers
PRUNE_EVERY = 60.0  # seconds between two prunes of expired rows by one process
PRUNE_BATCH = 1000  # expired rows removed per statement


class CoordinationError(DeepmemError):
    """The shared coordination database cannot be reached or used."""


def event_key(key: str) -> bytes:
    """The stored form of a claim key: its SHA-256, whatever its length."""
    if not isinstance(key, str) or not key:
        raise ValueError("an event key must be a non-empty string")
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _an_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or not value.isprintable():
        shown = value[:40] + "…" if isinstance(value, str) and len(value) > 40 else value
        raise ValueError(f"{what} must be 1 to {MAX_ID} printable characters, not {shown!r}")
    return value


def _fits(value) -> bool:
    """Whether a lookup value could have been stored (a longer one is simply not there)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


class Coordination(ABC):
    """Claims of deliveries and the state of answered threads, shared by every replica that opens the same one."""

    event_ttl: float
    thread_ttl: float

    @abstractmethod
    def claim_event(self, key: str, ttl: float | None = None) -> bool:
        """True for the first claim of ``key`` within ``ttl`` seconds (default ``event_ttl``), False after."""

    @abstractmethod
    def release_event(self, key: str) -> None:
        """Give a claim back (the work it guarded failed): the next delivery of ``key`` may claim it."""

    @abstractmethod
    def remember_thread(self, channel: str, thread_ts: str, *, question_id: str | None = None,
                        message_ts: str | None = None) -> None:
        """The bot answered in this thread: ``question_id`` there, posted as ``message_ts``."""

    @abstractmethod
    def is_bot_thread(self, channel: str, thread_ts: str) -> bool:
        """Whether the bot answered in this thread (follow-ups there are answered too)."""

    @abstractmethod
    def thread_of(self, question_id: str) -> str | None:
        """The thread a recent question was answered in."""

    @abstractmethod
    def question_of(self, message_ts: str) -> str | None:
        """The question a recent answer (by its message ts) was for."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Expiring:
    """An insertion-ordered map whose entries expire; the oldest go first beyond ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: OrderedDict = OrderedDict()  # key -> (expires at, value)

    def prune(self, now: float) -> None:
        items = self.items
        while items and (len(items) > self.limit or next(iter(items.values()))[0] <= now):
            items.popitem(last=False)

    def get(self, key, now: float):
        entry = self.items.get(key)
        return entry[1] if entry is not None and entry[0] > now else None

    def put(self, key, value, expires: float) -> None:
        self.items.pop(key, None)  # re-inserted at the end: the order stays the order of expiry
        self.items[key] = (expires, value)


class MemoryCoordination(Coordination):
    """One process: thread-safe maps in memory, bounded, with the same expiry rules as the database."""

    def __init__(self, *, event_ttl: float = EVENT_TTL, thread_ttl: float = THREAD_TTL, limit: int = MEMORY_LIMIT,
                 threads: int = MEMORY_THREADS):
        self.event_ttl, self.thread_ttl = event_ttl, thread_ttl
        self._claims = _Expiring(limit)
        self._threads = _Expiring(threads)  # (channel, thread ts) -> True
        self._questions = _Expiring(threads)  # question id -> thread ts
        self._messages = _Expiring(threads)  # message ts -> question id
        self._lock = threading.Lock()

    def claim_event(self, key: str, ttl: float | None = None) -> bool:
        digest, now = event_key(key), time.monotonic()
        with self._lock:
            self._claims.prune(now)
            if self._claims.get(digest, now):
                return False
            self._claims.put(digest, True, now + (self.event_ttl if ttl is None else ttl))
            return True

    def release_event(self, key: str) -> None:
        with self._lock:
            self._claims.items.pop(event_key(key), None)

    def remember_thread(self, channel, thread_ts, *, question_id=None, message_ts=None) -> None:
        channel, thread_ts = _an_id("a channel id", channel), _an_id("a thread ts", thread_ts)
        question_id = _an_id("a question id", question_id) if question_id is not None else None
        message_ts = _an_id("a message ts", message_ts) if message_ts is not None else None
        now = time.monotonic()
        expires = now + self.thread_ttl
        with self._lock:
            for table in (self._threads, self._questions, self._messages):
                table.prune(now)
            self._threads.put((channel, thread_ts), True, expires)
            if question_id is not None:
                self._questions.put(question_id, thread_ts, expires)
                if message_ts is not None:
                    self._messages.put(message_ts, question_id, expires)

    def is_bot_thread(self, channel, thread_ts) -> bool:
        with self._lock:
            return bool(self._threads.get((channel, thread_ts), time.monotonic()))

    def thread_of(self, question_id) -> str | None:
        with self._lock:
            return self._questions.get(question_id, time.monotonic())

    def question_of(self, message_ts) -> str | None:
        with self._lock:
            return self._messages.get(message_ts, time.monotonic())


SCHEMA = """
CREATE TABLE IF NOT EXISTS coordination_claims (
    key bytea PRIMARY KEY CHECK (length(key) = 32),  -- SHA-256 of the delivery key
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS coordination_claims_expiry ON coordination_claims (expires_at);
CREATE TABLE IF NOT EXISTS coordination_threads (
    channel text NOT NULL CHECK (length(channel) <= 128),
    thread_ts text NOT NULL CHECK (length(thread_ts) <= 128),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (channel, thread_ts)
);
CREATE INDEX IF NOT EXISTS coordination_threads_expiry ON coordination_threads (expires_at);
CREATE TABLE IF NOT EXISTS coordination_answers (
    question_id text PRIMARY KEY CHECK (length(question_id) <= 128),
    thread_ts text NOT NULL CHECK (length(thread_ts) <= 128),
    message_ts text CHECK (length(message_ts) <= 128),
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS coordination_answers_message ON coordination_answers (message_ts);
CREATE INDEX IF NOT EXISTS coordination_answers_expiry ON coordination_answers (expires_at);
"""
SCHEMA_LOCK = 0x6465_6570_6D01  # advisory lock id: replicas starting together create the tables once

CLAIM = """
INSERT INTO coordination_claims AS c (key, expires_at) VALUES (%s, now() + %s * interval '1 second')
ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE c.expires_at <= now()
RETURNING true
"""
APPLICATION = "deepmem coordination"
TABLES = ("coordination_claims", "coordination_threads", "coordination_answers")


class PostgresCoordination(Coordination):
    """Every replica connected to the same database shares the claims and the thread state."""

    def __init__(self, url: str, *, event_ttl: float = EVENT_TTL, thread_ttl: float = THREAD_TTL,
                 connections: int = 4, timeout: float = 10.0):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.event_ttl, self.thread_ttl = event_ttl, thread_ttl
        self._errors = (psycopg.Error,)
        # a connection is checked when taken: one the server dropped (a restart, a failover) is replaced
        self._pool = ConnectionPool(url, min_size=1, max_size=connections, timeout=timeout, open=False,
                                    kwargs={"autocommit": True, "application_name": APPLICATION},
                                    check=ConnectionPool.check_connection, name="deepmem-coordination")
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()
        try:
            self._pool.open(wait=True, timeout=timeout)
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
                conn.execute(SCHEMA)
        except Exception as exc:
            self._pool.close()
            raise CoordinationError(f"cannot use the coordination tables in DEEPMEM_DATABASE_URL: "
                                    f"{_reason(exc)}") from None

    def _run(self, sql: str, params=(), *, fetch: bool = False):
        try:
            with self._pool.connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchone() if fetch else None
        except Exception as exc:
            raise CoordinationError(f"coordination database: {_reason(exc)}") from None

    def claim_event(self, key: str, ttl: float | None = None) -> bool:
        self._prune_now_and_then()
        return self._run(CLAIM, [event_key(key), self.event_ttl if ttl is None else ttl], fetch=True) is not None

    def release_event(self, key: str) -> None:
        self._run("DELETE FROM coordination_claims WHERE key = %s", [event_key(key)])

    def remember_thread(self, channel, thread_ts, *, question_id=None, message_ts=None) -> None:
        channel, thread_ts = _an_id("a channel id", channel), _an_id("a thread ts", thread_ts)
        question_id = _an_id("a question id", question_id) if question_id is not None else None
        message_ts = _an_id("a message ts", message_ts) if message_ts is not None else None
        ttl = self.thread_ttl
        if question_id is None:
            self._run("INSERT INTO coordination_threads VALUES (%s, %s, now() + %s * interval '1 second') "
                      "ON CONFLICT (channel, thread_ts) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                      [channel, thread_ts, ttl])
            return
        # one statement, so a reader never sees the answer without its thread
        self._run("WITH thread AS (INSERT INTO coordination_threads VALUES (%s, %s, now() + %s * interval '1 second') "
                  "ON CONFLICT (channel, thread_ts) DO UPDATE SET expires_at = EXCLUDED.expires_at) "
                  "INSERT INTO coordination_answers VALUES (%s, %s, %s, now() + %s * interval '1 second') "
                  "ON CONFLICT (question_id) DO UPDATE SET thread_ts = EXCLUDED.thread_ts, "
                  "message_ts = coalesce(EXCLUDED.message_ts, coordination_answers.message_ts), "
                  "expires_at = EXCLUDED.expires_at",
                  [channel, thread_ts, ttl, question_id, thread_ts, message_ts, ttl])

    def is_bot_thread(self, channel, thread_ts) -> bool:
        if not (_fits(channel) and _fits(thread_ts)):
            return False
        return self._run("SELECT 1 FROM coordination_threads WHERE channel = %s AND thread_ts = %s "
                         "AND expires_at > now()", [channel, thread_ts], fetch=True) is not None

    def thread_of(self, question_id) -> str | None:
        if not _fits(question_id):
            return None
        row = self._run("SELECT thread_ts FROM coordination_answers WHERE question_id = %s AND expires_at > now()",
                        [question_id], fetch=True)
        return row[0] if row else None

    def question_of(self, message_ts) -> str | None:
        if not _fits(message_ts):
            return None
        row = self._run("SELECT question_id FROM coordination_answers WHERE message_ts = %s AND expires_at > now() "
                        "LIMIT 1", [message_ts], fetch=True)
        return row[0] if row else None

    def prune(self) -> int:
        """Remove expired rows, a batch per table; returns how many went."""
        removed = 0
        for table in TABLES:
            try:
                with self._pool.connection() as conn:
                    cur = conn.execute(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
                                       f"WHERE expires_at <= now() LIMIT {PRUNE_BATCH}))")
                    removed += cur.rowcount
            except Exception as exc:
                raise CoordinationError(f"coordination database: {_reason(exc)}") from None
        return removed

    def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = now
            self.prune()
        except CoordinationError as exc:  # the claim itself says whether the database is usable
            log.warning("expired coordination rows not pruned: %s", exc)
        finally:
            self._prune_lock.release()

    def close(self) -> None:
        self._pool.close()


def _reason(exc: Exception) -> str:
    """One line about a database error, without the URL (it may hold a password)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text[:300]


def open_coordination(settings: Settings, **kw) -> Coordination:
    """Postgres when DEEPMEM_DATABASE_URL is set (every replica shares it), else this process's memory."""
    if settings.database_url is None:
        return MemoryCoordination(**kw)
    return PostgresCoordination(settings.database_url.get_secret_value(), **kw)

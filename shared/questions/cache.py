"""The question cache: generated questions stored in the store, keyed by what made them."""

from __future__ import annotations

import hashlib
import json

from ..store import Store

__all__ = ["QuestionCache", "cache_key"]


def cache_key(generator: str, content: str) -> str:
    return hashlib.sha256(f"{generator}\x1f{content}".encode()).hexdigest()


class QuestionCache:
    def __init__(self, store: Store):
        self.store = store

    def get_many(self, keys: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self.store.conn.execute(
                f"SELECT key, payload FROM questions WHERE key IN ({','.join('?' * len(part))})", part)
            for key, payload in rows:
                out[key] = json.loads(payload)
        return out

    def put_many(self, generator: str, items: dict[str, object]) -> None:
        if not items:
            return
        with self.store.transaction():
            self.store.conn.executemany(
                "INSERT INTO questions(key, generator, payload) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET payload=excluded.payload",
                [(k, generator, json.dumps(v)) for k, v in items.items()])

    def replace(self, generator: str, key: str, payload: object) -> None:
        """Keep one entry for ``generator`` (the offline generator's questions for the whole store)."""
        with self.store.transaction():
            family = generator.rsplit("-", 1)[0] + "-%"  # older versions of the same generator too
            self.store.conn.execute("DELETE FROM questions WHERE generator LIKE ? AND key<>?", (family, key))
            self.store.conn.execute("INSERT INTO questions(key, generator, payload) VALUES (?, ?, ?) "
                                    "ON CONFLICT(key) DO UPDATE SET payload=excluded.payload",
                                    (key, generator, json.dumps(payload)))

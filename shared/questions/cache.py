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
        return {key: json.loads(payload) for key, payload in self.store.cached_questions(keys).items()}

    def put_many(self, generator: str, items: dict[str, object]) -> None:
        if not items:
            return
        self.store.cache_questions(generator, {k: json.dumps(v) for k, v in items.items()})

    def replace(self, generator: str, key: str, payload: object) -> None:
        """Keep one entry for ``generator`` (the offline generator's questions for the whole store)."""
        self.store.replace_cached_questions(generator, key, json.dumps(payload))

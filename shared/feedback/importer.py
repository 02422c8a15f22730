"""`deepmem feedback import`: labels from a file, as if users had given them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..home import Home
from ..queries import QueryFileError, Resolver, jsonl_lines
from ..store import Store
from .store import FeedbackStore, now

__all__ = ["import_labels"]


def import_labels(store: Store, home: Home, path: Path) -> dict:
    resolver = Resolver(store)
    id_of = {rowid: cid for cid, rowid in resolver.by_id.items()}
    ops, questions, labels, unresolved = [], 0, 0, []
    for number, where, obj in jsonl_lines(path.read_text(encoding="utf-8"), path.name):
        query = obj.get("query") if isinstance(obj, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise QueryFileError(f"{where}: \"query\" must be a non-empty string")
        relevant, negative = obj.get("relevant") or [], obj.get("not_relevant") or []
        if not isinstance(relevant, list) or not isinstance(negative, list) or not (relevant or negative):
            raise QueryFileError(f"{where}: give \"relevant\" and/or \"not_relevant\" as lists")
        user = str(obj.get("user") or "import")
        qid = hashlib.sha256(f"import\x1f{path.name}\x1f{number}\x1f{query}".encode()).hexdigest()[:32]
        ops.append(FeedbackStore.question_op(id=qid, asked_at=obj.get("at") or now(), source="import",
                                             user_id=user, text=query.strip()))
        questions += 1
        for entries, value in ((relevant, 1), (negative, -1)):
            for entry in entries:
                if not isinstance(entry, str):
                    raise QueryFileError(f"{where}: entries must be strings, got {entry!r}")
                rowids = resolver.resolve_entry(entry)
                if not rowids:
                    unresolved.append(entry)
                for rowid in sorted(rowids):
                    ops.append(FeedbackStore.event_op(question_id=qid, kind="label", user_id=user, value=value,
                                                      chunk_id=id_of[rowid], detail=f"import:{path.name}",
                                                      id=f"{qid}:{id_of[rowid]}"))
                    labels += 1
    feedback = FeedbackStore(home)
    feedback.record(ops)
    feedback.drain()
    return {"questions": questions, "labels": labels, "unresolved": unresolved}

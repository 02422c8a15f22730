"""A summary of what the data directory holds. Reads only: nothing is created or changed."""

from __future__ import annotations

import json
import math

from .deep_memory.versions import open_registry, unfit_for
from .feedback.store import spool_counts
from .home import Home
from .store import Store

__all__ = ["collect_status"]


def collect_status(home: Home, store: Store, settings=None) -> dict:
    info = {"home": str(home.root), **store.stats(), "collections": store.collections(), "sources": []}
    for source in store.source_summaries():
        info["sources"].append({k: source[k] for k in ("uri", "kind", "base_url", "collection", "pages",
                                                       "last_ingest_at")})
    registry = open_registry(home, settings)
    active = registry.active_status()
    info["adapter"] = active.name
    info["adapter_problem"] = active.problem
    if active.name and not active.problem and store.embedder_name:
        adapter, meta = registry.load(active.name)
        unfit = unfit_for(meta, adapter, store.embedder_name, store.dim or adapter.dim)
        if unfit:
            info["adapter_problem"] = f"adapter {active.name} was {unfit}; search ignores it"
    info["memory_problem"] = memory_settings_problem(home)
    info["feedback_spool"] = spool_counts(home)
    return info


def memory_settings_problem(home: Home) -> str | None:
    """The feedback memory's tuned settings (memory.json) fall back to defaults when unreadable: say so."""
    path = home.root / "memory.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = [float(data[k]) for k in ("threshold", "boost", "penalty")]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return (f"{path} is damaged ({exc.__class__.__name__}); the feedback memory uses its default settings "
                f"until the next retraining rewrites it")
    if not all(math.isfinite(v) for v in values):
        return f"{path} holds values that are not finite; the next retraining rewrites it"
    return None

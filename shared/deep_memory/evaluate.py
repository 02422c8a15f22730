"""`deepmem evaluate`: plain search against an adapter, on question files or the test split."""

from __future__ import annotations

from pathlib import Path

from ..embedders import Embedder
from ..errors import DeepmemError
from ..evaluation import Comparison, evaluate, text_rankings
from ..home import Home
from ..queries import Resolver, load_queries
from ..questions import synthetic_questions
from ..settings import Settings
from ..store import Store
from ..vector_index import MemoryIndex
from .dataset import Dataset, SplitSpec, split_salt
from .versions import open_registry, unfit_for

__all__ = ["evaluate_files", "evaluate_test_split"]


def _adapter(home: Home, embedder: Embedder, version: str | None, settings: Settings | None = None):
    registry = open_registry(home, settings)
    if version:
        adapter, meta = registry.load(version)
        name = version
    else:
        loaded = registry.load_active()
        if loaded is None:
            return None, None, {}
        name, adapter, meta = loaded
    unfit = unfit_for(meta, adapter, embedder.name, embedder.dim)
    if unfit:
        raise DeepmemError(f"adapter {name} was {unfit}")
    return name, adapter, meta


def _comparisons(name, index, store, embedder, resolved, adapter, hybrid) -> list[Comparison]:
    usable = [q for q in resolved if q.targets]
    vectors = embedder.embed([q.text for q in usable]) if usable else None
    out = [Comparison(name, evaluate(index, store, embedder, usable, None, query_vectors=vectors),
                      evaluate(index, store, embedder, usable, adapter, query_vectors=vectors) if adapter else None)]
    if hybrid:
        sparse = text_rankings(store, [q.text for q in usable])  # the same with and without the adapter
        out.append(Comparison(f"{name}, hybrid (vectors + BM25)",
                              evaluate(index, store, embedder, usable, None, mode="hybrid", query_vectors=vectors,
                                       sparse=sparse),
                              evaluate(index, store, embedder, usable, adapter, mode="hybrid", query_vectors=vectors,
                                       sparse=sparse) if adapter else None))
    return out


def evaluate_files(store: Store, embedder: Embedder, home: Home, files: list[Path], version: str | None = None,
                   hybrid: bool = False, settings: Settings | None = None) -> tuple[list[Comparison], str | None]:
    name, adapter, _ = _adapter(home, embedder, version, settings)
    return _file_comparisons(MemoryIndex(store), store, embedder, files, adapter, hybrid), name


def _file_comparisons(index, store, embedder, files, adapter, hybrid) -> list[Comparison]:
    resolver = Resolver(store)
    out = []
    for path in files:
        resolved = resolver.resolve(load_queries(path))
        if not any(q.targets for q in resolved):
            raise DeepmemError(f"{path}: none of its relevant entries match a chunk of this store")
        out.extend(_comparisons(Path(path).name, index, store, embedder, resolved, adapter, hybrid))
    return out


def evaluate_test_split(store: Store, embedder: Embedder, home: Home, settings: Settings, version: str | None = None,
                        extra_files: list[Path] = (), hybrid: bool = False) -> tuple[list[Comparison], str | None]:
    """The held-out synthetic test split (from cached questions), then any extra question files."""
    name, adapter, meta = _adapter(home, embedder, version, settings)
    generator, spec = "offline", SplitSpec(salt=split_salt(0))
    if name:
        generator = "llm" if str(meta.get("generator", "")).startswith("llm") else "offline"
        recorded = meta.get("split") or {}
        if not recorded.get("salt"):
            raise DeepmemError(f"adapter {name} records no training split, so its held-out test split is unknown: "
                               f"score it on your own questions with --queries")
        spec = SplitSpec.from_meta(recorded)  # the split this adapter was trained against
        if recorded != spec.to_meta():
            raise DeepmemError(f"adapter {name} was trained with an older split rule (copies of a chunk could "
                               f"fall in different splits), so its test split cannot be rebuilt fairly: "
                               f"train again with `deepmem train`, or score it on your own questions with --queries")
    questions, _ = synthetic_questions(store, settings, generator, progress=False)
    row_of = store.chunk_rowids()
    items = [(q.text, tuple(row_of[c] for c in q.positives if c in row_of)) for q in questions]
    data = Dataset.build(store, [("synthetic", items)], spec)
    from .job import _as_resolved

    index = MemoryIndex(store)
    out = _comparisons("held-out synthetic test split", index, store, embedder, _as_resolved(data.test), adapter,
                       hybrid)
    out.extend(_file_comparisons(index, store, embedder, list(extra_files), adapter, hybrid))
    return out, name

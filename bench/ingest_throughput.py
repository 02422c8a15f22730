"""Ingest throughput on the bundled SQLite docs, and the cost of an unchanged re-ingest.

    python bench/ingest_throughput.py [--runs 3]
    python bench/ingest_throughput.py --backends [--database-url postgresql://...]

Each run ingests into a fresh store; the re-ingest runs on the last store. Prints and saves
bench/results/ingest.json (medians over runs).

``--backends`` compares the SQLite store (sqlite-vec) with the PostgreSQL one (pgvector) in one
run, on the same machine: each backend ingests the demo corpus into a fresh store twice, once
embedding everything (end to end), once with every vector already computed (a memo of the
first pass's embeddings), which isolates parsing, chunking and the store's writes. Postgres is
DEEPMEM_DATABASE_URL / --database-url (a fresh database is created there), or else a
throwaway server from the pgserver wheel. Saves bench/results/ingest_backends.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, peak_rss_mb, save  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.ingest import ingest  # noqa: E402
from shared.embedders.base import Embedder  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.sources import DEMO_BASE_URL, demo_archive  # noqa: E402
from shared.store import Store  # noqa: E402


class MemoEmbedder(Embedder):
    """The real embedder, each text embedded once: a second ingest of the same corpus costs no embedding."""

    def __init__(self, inner: Embedder):
        self.inner, self.name, self.dim, self.max_tokens = inner, inner.name, inner.dim, inner.max_tokens
        self.memo: dict[str, np.ndarray] = {}

    def embed(self, texts, *, batch_size: int = 16, progress: bool = False):
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.inner.embed(missing, batch_size=batch_size)))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def backends(database_url: str | None) -> None:
    from shared.store.postgres import PostgresStore

    settings = load_settings(home=tempfile.mkdtemp())
    embedder = MemoEmbedder(make_embedder(settings))
    server = None
    if database_url is None:
        from tests.helpers.postgres import start_server

        server = start_server()
        make_url = server.create_database
    else:
        import psycopg

        def make_url() -> str:
            name = f"deepmem_bench_{os.getpid()}_{time.time_ns()}"
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            base, _, query = database_url.partition("?")
            return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    openers = {"sqlite": lambda: Store.open(Path(tempfile.mkdtemp(prefix="deepmem-bench-")) / "store.db"),
               "postgres": lambda: PostgresStore.open(make_url())}
    rows = {}
    try:
        for phase in ("end_to_end", "store_only"):  # the first pass fills the memo: the second embeds nothing
            for name, opener in openers.items():
                if phase == "end_to_end":
                    embedder.memo.clear()  # each backend embeds everything itself
                with opener() as store:
                    started = time.perf_counter()
                    report = ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL,
                                    progress=False)
                    seconds = time.perf_counter() - started
                    started = time.perf_counter()
                    again = ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL,
                                   progress=False)
                    unchanged = time.perf_counter() - started
                    row = {"pages": report.pages_seen, "chunks": report.chunks_written, "seconds": round(seconds, 2),
                           "embed_seconds": round(report.embed_seconds, 2),
                           "pages_per_s": round(report.pages_seen / seconds, 2),
                           "chunks_per_s": round(report.chunks_written / seconds, 1),
                           "reingest_unchanged_s": round(unchanged, 3),
                           "store_mb": round(store.stats()["bytes"] / 1e6, 1)}
                    assert again.chunks_embedded == 0 and again.pages_unchanged == report.pages_seen
                rows.setdefault(phase, {})[name] = row
                print(phase, name, row)
    finally:
        if server is not None:
            server.stop()
    for phase, arms in rows.items():
        arms["postgres_vs_sqlite_seconds"] = round(arms["postgres"]["seconds"] / arms["sqlite"]["seconds"], 3)
    save("ingest_backends", {"machine": machine(), "embedder": embedder.name, "corpus": "bundled SQLite docs",
                             **rows})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--backends", action="store_true", help="SQLite vs PostgreSQL, same run.")
    parser.add_argument("--database-url", default=os.environ.get("DEEPMEM_DATABASE_URL"),
                        help="PostgreSQL server for --backends (default: a throwaway pgserver).")
    args = parser.parse_args()
    if args.backends:
        backends(args.database_url)
        return
    settings = load_settings(home=tempfile.mkdtemp())
    embedder = make_embedder(settings)
    runs = []
    for i in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix="deepmem-bench-"))
        with Store.open(home / "store.db") as store:
            report = ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL, progress=False)
            runs.append(report)
            print(f"run {i + 1}: {report.pages_seen} pages, {report.chunks_written} chunks in {report.seconds:.1f} s "
                  f"(embedding {report.embed_seconds:.1f} s)")
            if i == args.runs - 1:
                again = []
                for _ in range(5):
                    started = time.perf_counter()
                    second = ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL,
                                    progress=False)
                    again.append(time.perf_counter() - started)
                    assert second.chunks_embedded == 0
                size = store.stats()["bytes"]
    first = statistics.median(r.seconds for r in runs)
    embed = statistics.median(r.embed_seconds for r in runs)
    last = runs[-1]
    result = {
        "machine": machine(),
        "embedder": embedder.name, "bf16": getattr(embedder, "bf16", False),
        "pages": last.pages_seen, "chunks": last.chunks_written, "runs": args.runs,
        "first_ingest_s": round(first, 2),
        "pages_per_s": round(last.pages_seen / first, 2),
        "chunks_per_s": round(last.chunks_written / first, 2),
        "embedding_share": round(embed / first, 3),
        "reingest_unchanged_s_median": round(statistics.median(again), 3),
        "reingest_ratio": round(statistics.median(again) / first, 5),
        "store_mb": round(size / 1e6, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    for k, v in result.items():
        if k != "machine":
            print(f"{k:>30}: {v}")
    save("ingest", result)


if __name__ == "__main__":
    main()

"""Search latency at 10k, 100k and 1M chunks, against the physical floor of a full scan.

    python bench/search_latency.py [--sizes 10000,100000,1000000]

For each size a store is filled with random unit vectors (dim 384, as all-MiniLM-L6-v2),
and k=10 searches run through (a) sqlite-vec's vec0 scan, as the CLI does, and (b) the
in-memory index the bot keeps. Query embedding (real model, real questions) is timed apart,
so latency is reported with and without it. The floor is bytes scanned / memory bandwidth,
with bandwidth measured here by streaming a 2 GB array. Saves bench/results/search.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, percentile, save, summary_ms  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402

DIM = 384
QUESTIONS = Path(__file__).resolve().parent.parent / "shared" / "data" / "sqlite-faq.jsonl"


def memory_bandwidth_gbs() -> float:
    """Read bandwidth: best of several passes of a matrix-vector product over a 2 GB float32 array
    (the same access pattern as a full scan) and of a plain sum."""
    big = np.random.default_rng(0).standard_normal((2_000_000_000 // (4 * DIM), DIM), dtype=np.float32)
    q = np.ones(DIM, dtype=np.float32)
    best = 0.0
    for kernel in ("matvec", "sum"):
        for _ in range(3):
            t = time.perf_counter()
            _ = big @ q if kernel == "matvec" else big.sum(axis=0)
            best = max(best, big.nbytes / (time.perf_counter() - t))
    del big
    gc.collect()
    return best / 1e9


def fill(store: Store, n: int, rng) -> None:
    store.bind_embedder("synthetic-unit-vectors", DIM)
    batch = 50_000
    with store.transaction():
        for start in range(0, n, batch):
            m = rng.standard_normal((min(batch, n - start), DIM), dtype=np.float32)
            m /= np.linalg.norm(m, axis=1, keepdims=True)
            store.conn.executemany("INSERT INTO chunk_vectors(rowid, embedding) VALUES (?, ?)",
                                   ((start + i + 1, m[i].tobytes()) for i in range(len(m))))
        store._bump_version()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(42)
    proc = psutil.Process()

    from shared.embedders import make_embedder
    from shared.settings import load_settings

    embedder = make_embedder(load_settings(home=tempfile.mkdtemp()))
    questions = [json.loads(l)["query"] for l in QUESTIONS.read_text().splitlines()]
    embedder.embed_query("warm up")
    embed_times = []
    for _ in range(5):
        for q in questions:
            t = time.perf_counter()
            embedder.embed_query(q)
            embed_times.append(time.perf_counter() - t)
    bandwidth = memory_bandwidth_gbs()
    print(f"memory bandwidth: {bandwidth:.1f} GB/s; query embedding p50 {percentile(embed_times, 50) * 1e3:.1f} ms")
    rows = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="deepmem-search-"))
        with Store.open(tmp / "store.db") as store:
            t = time.perf_counter()
            fill(store, n, rng)
            fill_s = time.perf_counter() - t
            queries = rng.standard_normal((args.queries, DIM), dtype=np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)

            nq = max(10, args.queries // (n // 10_000 if n >= 100_000 else 1) // 2)
            store.vector_search(queries[0], 10)
            vec_times = []
            for q in queries[:nq]:
                t = time.perf_counter()
                store.vector_search(q, 10)
                vec_times.append(time.perf_counter() - t)

            rss_before = proc.memory_info().rss
            t = time.perf_counter()
            index = MemoryIndex(store)
            load_s = time.perf_counter() - t
            rss_index = (proc.memory_info().rss - rss_before) / 1e6
            mem_times = []
            for q in queries:
                t = time.perf_counter()
                index.search(q, 10)
                mem_times.append(time.perf_counter() - t)
            # both paths agree on the nearest neighbours
            agree = [r for r, _ in store.vector_search(queries[1], 10)] == [r for r, _ in index.search(queries[1], 10)]
        floor_ms = n * DIM * 4 / (bandwidth * 1e9) * 1e3
        embedded = [e + s for e, s in zip(embed_times * 10, mem_times)]
        row = {
            "chunks": n, "fill_s": round(fill_s, 1),
            "sqlite_vec": summary_ms(vec_times),
            "memory_index": summary_ms(mem_times),
            "memory_index_with_query_embedding": summary_ms(embedded),
            "memory_index_load_s": round(load_s, 2), "memory_index_rss_mb": round(rss_index, 1),
            "scan_bytes_mb": round(n * DIM * 4 / 1e6, 1),
            "floor_ms": round(floor_ms, 3),
            "memory_index_vs_floor": round(percentile([m * 1e3 for m in mem_times], 50) / floor_ms, 2),
            "sqlite_vec_vs_floor": round(percentile([v * 1e3 for v in vec_times], 50) / floor_ms, 2),
            "same_top10": agree,
            "process_rss_mb": round(proc.memory_info().rss / 1e6, 1),
        }
        rows.append(row)
        print(json.dumps(row))
        del index
        gc.collect()
        for f in tmp.glob("*"):
            f.unlink()
    save("search", {"machine": machine(), "dim": DIM, "k": 10, "memory_bandwidth_gbs": round(bandwidth, 2),
                    "query_embedding": summary_ms(embed_times), "sizes": rows})


if __name__ == "__main__":
    main()

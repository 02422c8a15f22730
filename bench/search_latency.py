"""Search latency at 10k, 100k and 1M chunks, against the physical floor of a full scan.

    python bench/search_latency.py [--sizes 10000,100000,1000000]
    python bench/search_latency.py --filtered [--sizes 100000] [--share 0.1] [--postgres]

For each size a store is filled with random unit vectors (dim 384, as all-MiniLM-L6-v2),
and k=10 searches run through (a) sqlite-vec's vec0 scan, as the CLI does, and (b) the
in-memory index the bot keeps. Query embedding (real model, real questions) is timed apart,
so latency is reported with and without it. The floor is bytes scanned / memory bandwidth,
with bandwidth measured here by streaming a 2 GB array. Saves bench/results/search.json.

``--filtered`` measures "search filters by collection without losing speed": the chunks are
split into two collections (``--share`` of the pages in ``small``, the rest in ``large``,
interleaved), and the same queries run unfiltered and limited to each collection, through
sqlite-vec and through the in-memory index (median ms, and the ratio filtered / unfiltered; the
three arms take turns on every query, so load from other processes falls on them alike).
Saves bench/results/search_collections.json.
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
from shared.chunking import Chunk  # noqa: E402
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


PAGE_CHUNKS = 1000  # chunks per synthetic page, each its own section


def fill(store: Store, n: int, rng, share: float = 0.1) -> dict[str, int]:
    """``n`` random unit vectors stored as chunks of synthetic pages, through the store's own write
    path; every 1/share-th page is in collection ``small``, the others in ``large``. Returns the
    chunk count of each collection."""
    store.bind_embedder("synthetic-unit-vectors", DIM)
    ids = {name: store.upsert_source(f"synthetic:{name}", "synthetic", collection=name).id
           for name in ("small", "large")}
    every = max(1, round(1 / share))
    counts = {"small": 0, "large": 0}
    for page, start in enumerate(range(0, n, PAGE_CHUNKS)):
        m = rng.standard_normal((min(PAGE_CHUNKS, n - start), DIM), dtype=np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        url = f"synthetic/{page}.html"
        chunks = [Chunk(id=f"{page}-{j}", page_url=url, title="", headings=(), anchors=(f"s{j}",),
                        text=f"synthetic chunk {start + j}", ord=j, n_tokens=3) for j in range(len(m))]
        collection = "small" if page % every == 0 else "large"
        counts[collection] += len(m)
        with store.transaction():
            store.write_page(source_id=ids[collection], url=url, path=None, title="", content_hash=str(page),
                             size=0, chunks=chunks, embed_hashes=[c.id for c in chunks],
                             vectors=[row.tobytes() for row in m], links=[])
    return counts


def timed_together(arms: dict, queries) -> dict[str, list[float]]:
    """Seconds per query of each arm, the arms taking turns on every query (in rotating order), so a
    busy machine slows them alike and their ratio stays fair."""
    names = list(arms)
    for name in names:
        arms[name](queries[0])  # warm
    out = {name: [] for name in names}
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            arms[name](q)
            out[name].append(time.perf_counter() - t)
    return out


def filtered(sizes: list[int], n_queries: int, share: float, postgres: bool) -> None:
    """Filtered vs unfiltered search, same store, same queries, each path (and pgvector with --postgres)."""
    server = None
    if postgres:
        from tests.helpers.postgres import start_server

        server = start_server()
    rows = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="deepmem-search-"))
        with Store.open(tmp / "store.db") as store:
            t = time.perf_counter()
            counts = fill(store, n, np.random.default_rng(n), share)
            fill_s = time.perf_counter() - t
            queries = np.random.default_rng(1).standard_normal((n_queries, DIM), dtype=np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            index = MemoryIndex(store)
            row = {"chunks": n, "collections": counts, "fill_s": round(fill_s, 1)}
            nq = max(20, n_queries // max(1, n // 100_000))
            paths = [("sqlite_vec", store.vector_search), ("memory_index", index.search)]
            pg = None
            if server is not None:
                from shared.store.postgres import PostgresStore

                pg = PostgresStore.open(server.create_database("bench"))
                t = time.perf_counter()
                fill(pg, n, np.random.default_rng(n), share)  # the same vectors, through the same write path
                row["pgvector_fill_s"] = round(time.perf_counter() - t, 1)
                t = time.perf_counter()
                row["pgvector_hnsw_built"] = pg.build_vector_index(if_needed=True)  # as an ingest's end does
                row["pgvector_index_s"] = round(time.perf_counter() - t, 1)
                paths.append(("pgvector", pg.vector_search))
            for name, search in paths:
                times = timed_together({label: (lambda q, c=collections: search(q, 10, collections=c))
                                        for label, collections in (("all", None), ("small", ["small"]),
                                                                   ("large", ["large"]))},
                                       queries[:nq] if name == "sqlite_vec" else queries)
                arm = {label: summary_ms(seconds) for label, seconds in times.items()}
                base = arm["all"]["p50_ms"]
                arm["ratio_p50_small"] = round(arm["small"]["p50_ms"] / base, 3)
                arm["ratio_p50_large"] = round(arm["large"]["p50_ms"] / base, 3)
                row[name] = arm
            # both paths return the same filtered neighbours
            row["same_top10_filtered"] = all(
                [r for r, _ in store.vector_search(q, 10, collections=["small"])]
                == [r for r, _ in index.search(q, 10, collections=["small"])] for q in queries[:5])
            if pg is not None:  # pgvector (HNSW beyond its exact limit) against the exact in-memory result
                recall = [len({r for r, _ in pg.vector_search(q, 10, collections=c)}
                              & {r for r, _ in index.search(q, 10, collapse=False, collections=c)}) / 10
                          for q in queries[:50] for c in (None, ["small"], ["large"])]
                row["pgvector_recall10_vs_exact"] = round(float(np.mean(recall)), 4)
                pg.close()
        rows.append(row)
        print(json.dumps(row))
        del index
        gc.collect()
        for f in tmp.glob("*"):
            f.unlink()
    if server is not None:
        server.stop()
    save("search_collections", {"machine": machine(), "dim": DIM, "k": 10, "share_small": share, "sizes": rows})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--filtered", action="store_true", help="Filtered vs unfiltered search by collection.")
    parser.add_argument("--share", type=float, default=0.1, help="Share of pages in the small collection.")
    parser.add_argument("--postgres", action="store_true", help="With --filtered: a pgvector arm too (pgserver).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.filtered:
        filtered(sizes, args.queries, args.share, args.postgres)
        return
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

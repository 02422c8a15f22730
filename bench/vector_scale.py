"""Vector search at 100k and 1M chunks: pgvector HNSW vs the in-memory index vs sqlite-vec, one run.

    OMP_NUM_THREADS=1 nice -n 10 python bench/vector_scale.py --source-home DIR --sizes 100000
    OMP_NUM_THREADS=1 nice -n 10 python bench/vector_scale.py --source-home DIR --sizes 1000000

``DIR`` is a store made by ``DEEPMEM_HOME=DIR deepmem ingest --demo`` (13.5k real chunk vectors,
all-MiniLM-L6-v2, dim 384). Each size updates its entry in bench/results/vector_scale.json.

**Vectors.** The real chunk vectors come first; the rest are synthetic but shaped like them: each
is a real chunk mixed with one of its 10 nearest real neighbours (weight 0.5..1 on the chunk), plus
Gaussian noise with the real vectors' own covariance (so it stays in the directions the model
uses), normalised. The noise scale is set so that a synthetic vector's similarity to its nearest
real chunk has the same median as a real chunk's to its nearest other chunk. Uniform random unit
vectors would be the wrong test: in 384 dimensions they are all nearly orthogonal, there is no
neighbourhood structure, and HNSW recall on them says little about recall on documents.

**Queries.** 200 real question texts embedded with the same model: the 19 questions of the SQLite
FAQ and 181 drawn (seeded) from the offline generator's questions over the demo docs. Questions sit
further from the chunks than chunks sit from each other, which is the hard case for a graph index.

**Arms.** (a) pgvector HNSW through ``shared.store.postgres.PostgresStore``: its schema, the rows
bulk-loaded into its ``chunks`` with binary COPY, then ``bind_embedder`` and ``build_vector_index`` (``hnsw
(embedding vector_cosine_ops)``: pgvector's defaults m=16, ef_construction=64, what the store ships and
what pgvector's docs start from) with one parallel worker (2 cores) and the maintenance_work_mem the
store sets (512MB; the first 1M run, on its own table, had 6GB);
queried one question at a time with ``vector_search`` for ``ef_search`` in a sweep, and the same SELECT
alone for comparison; PostgreSQL 16 + pgvector 0.6.2 from the pgserver wheel, started as
tests/helpers/postgres.py does, restarted with shared_buffers 4GB. ``--hnsw-variants`` adds other
(m, ef_construction) builds. (b) ``shared.vector_index.MemoryIndex`` (exact, one matrix-vector
product), as the bot keeps; (c) sqlite-vec's vec0 table through ``Store.vector_search`` (exact, a
scan), as the CLI does; at 1M only ``--sqlite-vec-queries`` (50) questions, since each is a full scan.
Recall@10 is against exact numpy search; a returned chunk counts when its similarity is at least
the exact 10th best (so ties between identical chunks do not count as misses).

Latency is per query, the client's wall time (parameter sending, search, rows back), p50/p95 of one
run, with the query embedding excluded (bench/results/search.json times it: ~5 ms).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import RESULTS, machine, save, summary_ms  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402

DIM = 384
K = 10
SEED = 14
BATCH = 100_000  # synthetic vectors are made in seeded batches: the 100k set is a prefix of the 1M set
QUESTIONS = Path(__file__).resolve().parent.parent / "shared" / "data" / "sqlite-faq.jsonl"
HNSW_DEFAULT = (16, 64)  # pgvector's defaults for m, ef_construction: PostgresStore.bind_embedder builds with them
PG_SETTINGS = {"shared_buffers": "4GB"}  # the index and table stay in Postgres's own cache, as a server would run
BUILD_SETTINGS = {"maintenance_work_mem": "6GB", "max_parallel_maintenance_workers": "1"}  # 1 worker + leader = 2 cores
HNSW_INDEX = "chunks_embedding_hnsw"  # PostgresStore's index on chunks(embedding)
COPY_COLUMNS = "rowid, id, page_id, ord, url, text, embed_hash, embedding"
QUERY = "SELECT rowid, embedding <=> %s AS d FROM chunks ORDER BY d LIMIT %s"  # PostgresStore._hnsw's, whole corpus


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- vectors -------------------------------------------------------------------------------------

def normalize(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def nearest_other(real: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every real vector, its k nearest other real vectors (indices, similarities)."""
    idx = np.zeros((len(real), k), dtype=np.int64)
    sims = np.zeros((len(real), k), dtype=np.float32)
    for i in range(0, len(real), 2048):
        s = real[i:i + 2048] @ real.T
        s[np.arange(len(s)), np.arange(i, i + len(s))] = -2  # not itself
        part = np.argpartition(-s, k, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1)
        idx[i:i + len(s)] = np.take_along_axis(part, order, axis=1)
        sims[i:i + len(s)] = np.take_along_axis(vals, order, axis=1)
    return idx, sims


class Synthesizer:
    """Vectors around the real ones: a real chunk mixed with a real neighbour, plus noise with the
    real vectors' covariance, normalised; ``scale`` calibrated to the real nearest-neighbour similarity."""

    def __init__(self, real: np.ndarray):
        self.real = real
        self.neighbours, sims = nearest_other(real, 10)
        distinct = sims[:, 0][sims[:, 0] < 0.9999]  # leave out chunks whose text is repeated word for word
        self.target = float(np.median(distinct))
        cov = np.cov(real, rowvar=False).astype(np.float64)
        self.chol = np.linalg.cholesky(cov + 1e-6 * np.eye(DIM)).astype(np.float32)
        self.scale = 1.0
        self.scale = self._calibrate()

    def batch(self, number: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([SEED, number])
        parent = rng.integers(len(self.real), size=n)
        partner = self.neighbours[parent, rng.integers(10, size=n)]
        a = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
        noise = rng.standard_normal((n, DIM), dtype=np.float32) @ self.chol.T
        return normalize(a * self.real[parent] + (1 - a) * self.real[partner] + self.scale * noise).astype(np.float32)

    def nearest_real_median(self, sample: np.ndarray) -> float:
        return float(np.median((sample @ self.real.T).max(axis=1)))

    def _calibrate(self) -> float:
        lo, hi = 0.0, 8.0
        for _ in range(20):
            self.scale = (lo + hi) / 2
            if self.nearest_real_median(self.batch(10**6, 2000)) > self.target:
                lo = self.scale
            else:
                hi = self.scale
        return (lo + hi) / 2


def base_vectors(real: np.ndarray, synth: Synthesizer, n: int) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    m = min(n, len(real))
    out[:m] = real[:m]
    for number, start in enumerate(range(m, n, BATCH)):
        count = min(BATCH, n - start)
        out[start:start + count] = synth.batch(number, BATCH)[:count]
    return out


def questions(source_home: Path, count: int) -> tuple[list[str], dict]:
    from shared.questions.offline import generate_offline

    faq = [json.loads(line)["query"] for line in QUESTIONS.read_text().splitlines()]
    with Store.open(source_home / "store.db", create=False) as store:
        generated = sorted({q.text for q in generate_offline(store, seed=0)})
    rng = np.random.default_rng(SEED)
    picked = [generated[i] for i in rng.choice(len(generated), size=count - len(faq), replace=False)]
    return faq + picked, {"sqlite_faq": len(faq), "offline_generator": len(picked)}


def exact(base: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-K (0-based indices, similarities), best first."""
    idx, sims = [], []
    for i in range(0, len(queries), 25):  # 25 x 1M scores at a time: 100 MB
        scores = queries[i:i + 25] @ base.T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-vals, axis=1)
        idx.append(np.take_along_axis(part, order, axis=1))
        sims.append(np.take_along_axis(vals, order, axis=1))
    return np.vstack(idx), np.vstack(sims)


def quality(found: list[list[int]], base: np.ndarray, queries: np.ndarray, truth_sims: np.ndarray) -> dict:
    """recall@10: mean share of the K results whose true similarity reaches the exact K-th best (rowids are
    1-based); similarity_ratio: summed similarity of the results over the exact top K's (1.0 = as good)."""
    hits, ratios = [], []
    for q, rows, sims in zip(queries, found, truth_sims):
        ids = np.asarray([r - 1 for r in rows][:K], dtype=np.int64)
        true = base[ids] @ q if len(ids) else np.zeros(0)
        hits.append(float(np.sum(true >= sims[K - 1] - 1e-5)) / K)
        ratios.append(float(true.sum() / sims.sum()))
    return {"recall@10": round(float(np.mean(hits)), 4), "similarity_ratio": round(float(np.mean(ratios)), 4)}


def timed(search, queries: np.ndarray, server_pid: int | None = None) -> tuple[list[list[int]], list[float]]:
    """(results, wall seconds per query); ``cpu_ms`` of the last call: CPU time per query of this process
    plus the Postgres backend ``server_pid``, a cost that the machine's other load does not inflate."""
    found, times = [], []
    backend = psutil.Process(server_pid) if server_pid else None
    cpu = time.process_time() + (sum(backend.cpu_times()[:2]) if backend else 0.0)
    for q in queries:
        t = time.perf_counter()
        rows = search(q)
        times.append(time.perf_counter() - t)
        found.append(rows)
    cpu = time.process_time() + (sum(backend.cpu_times()[:2]) if backend else 0.0) - cpu
    timed.cpu_ms = round(cpu / max(1, len(queries)) * 1e3, 3)
    return found, times


# -- (a) pgvector ----------------------------------------------------------------------------------

def copy_binary(conn, base: np.ndarray, page_id: int) -> None:
    """Binary COPY into PostgresStore's ``chunks``: per row 8 fields, big-endian: rowid (int8), id (text: the
    rowid in 8 digits), page_id (int8), ord (int4), url, text and embed_hash (empty text), embedding (pgvector:
    int16 dim, int16 0, float4[dim])."""
    row = np.dtype([("fields", ">i2"), ("rowid_len", ">i4"), ("rowid", ">i8"), ("id_len", ">i4"), ("id", "S8"),
                    ("page_len", ">i4"), ("page", ">i8"), ("ord_len", ">i4"), ("ord", ">i4"),
                    ("url_len", ">i4"), ("text_len", ">i4"), ("hash_len", ">i4"),
                    ("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (DIM,))])
    with conn.cursor() as cur, cur.copy(f"COPY chunks ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start in range(0, len(base), 50_000):
            part = base[start:start + 50_000]
            rowids = np.arange(start + 1, start + 1 + len(part))
            rows = np.zeros(len(part), dtype=row)
            rows["fields"], rows["rowid_len"], rows["id_len"], rows["page_len"], rows["ord_len"] = 8, 8, 8, 8, 4
            rows["vec_len"], rows["dim"] = 4 + 4 * DIM, DIM
            rows["rowid"], rows["id"], rows["page"], rows["ord"] = rowids, np.char.zfill(rowids.astype("S8"), 8), \
                page_id, rowids
            rows["v"] = part
            cp.write(rows.tobytes())
        cp.write(struct.pack(">h", -1))


def start_postgres(root: Path):
    """The tests' pgserver (PostgreSQL 16 + pgvector 0.6), restarted once with a server-sized cache."""
    import psycopg
    import pgserver._commands as pg_commands
    from tests.helpers.postgres import start_server

    server = start_server(root)
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        for name, value in PG_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    pg_commands.pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server._server.pgdata, user=server._server.system_user)
    return server


def sweep(store, base, queries, truth_sims, ef_values: list[int]) -> list[dict]:
    """PostgresStore.vector_search (the whole corpus, k=10) at each hnsw.ef_search; and, for comparison,
    the same SELECT alone on the store's connection (``query_only``: what the store adds is the rest)."""
    def search(q):
        return [r for r, _ in store.vector_search(q, K)]

    def query_only(q):
        return [r[0] for r in store.conn.execute(QUERY, (q, K), prepare=True)]

    pid = store.conn.info.backend_pid
    store.ef_search = max(ef_values)
    timed(search, queries)  # warm the cache with the widest search
    rows = []
    for ef in ef_values:
        store.ef_search = ef
        found, times = timed(search, queries, pid)
        row = {"ef_search": ef, **quality(found, base, queries, truth_sims), **summary_ms(times),
               "cpu_ms": timed.cpu_ms}
        store.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        _, alone = timed(query_only, queries, pid)
        row |= {"query_only": summary_ms(alone) | {"cpu_ms": timed.cpu_ms}, "load": load()}
        print(f"    ef_search={ef}: {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


def pgvector_arm(server, base: np.ndarray, queries: np.ndarray, truth_sims: np.ndarray, ef_values: list[int],
                 exact_queries: int, variants: list[tuple[int, int]]) -> dict:
    """Through PostgresStore: its schema, its index (built by bind_embedder after a bulk load) and its
    vector_search; ``variants``: other (m, ef_construction) builds of the same index, swept the same way."""
    from shared.store.postgres import PostgresStore

    url = server.create_database("vscale")
    store = PostgresStore.open(url)
    conn = store.conn
    out: dict = {"via": "shared.store.postgres.PostgresStore.vector_search", "m": HNSW_DEFAULT[0],
                 "ef_construction": HNSW_DEFAULT[1], "settings": PG_SETTINGS | BUILD_SETTINGS,
                 "pgvector": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0],
                 "postgres": conn.execute("SHOW server_version").fetchone()[0]}
    source = conn.execute("INSERT INTO sources(uri, kind) VALUES ('bench:vector-scale', 'bench') RETURNING id")
    page_id = conn.execute("INSERT INTO pages(source_id, url, content_hash) VALUES (%s, 'bench:page', '') "
                           "RETURNING id", (source.fetchone()[0],)).fetchone()[0]
    t = time.perf_counter()
    copy_binary(conn, base, page_id)
    conn.execute("SELECT setval(pg_get_serial_sequence('chunks', 'rowid'), %s)", (len(base),))
    out["copy_s"] = round(time.perf_counter() - t, 1)
    conn.execute("VACUUM ANALYZE chunks")
    for name, value in BUILD_SETTINGS.items():
        conn.execute(f"SET {name} = '{value}'")
    out["load_before_build"] = load()
    t = time.perf_counter()
    store.bind_embedder("vector-scale-bench", DIM)  # vector -> vector(384) (and, in older stores, the index)
    out["bind_embedder_s"] = round(time.perf_counter() - t, 1)
    if hasattr(store, "build_vector_index"):  # the store builds the index itself once the corpus is large
        t = time.perf_counter()
        store.build_vector_index()
        out["build_vector_index_s"] = round(time.perf_counter() - t, 1)
        out["settings"] = PG_SETTINGS | {"max_parallel_maintenance_workers": BUILD_SETTINGS[
            "max_parallel_maintenance_workers"], "maintenance_work_mem": "as build_vector_index sets it"}
    out["load_after_build"] = load()
    index_ddl = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (HNSW_INDEX,)).fetchone()[0]
    out["index_ddl"] = index_ddl
    out["index_mb"] = round(conn.execute("SELECT pg_relation_size(%s)", (HNSW_INDEX,)).fetchone()[0] / 1e6, 1)
    out["table_mb"] = round(conn.execute("SELECT pg_table_size('chunks')").fetchone()[0] / 1e6, 1)
    plan = conn.execute("EXPLAIN " + QUERY, (queries[0], K)).fetchall()
    out["uses_index"] = any(HNSW_INDEX in r[0] for r in plan)
    print(f"  pgvector m=16 ef_construction=64: bind_embedder {out['bind_embedder_s']} s, build_vector_index "
          f"{out.get('build_vector_index_s')} s, index {out['index_mb']} MB", flush=True)
    out["sweep"] = sweep(store, base, queries, truth_sims, ef_values)
    if exact_queries:  # the store's exact path (a scan with index scans off), as it runs for small corpora
        store.exact_limit, limit = len(base) + 1, store.exact_limit
        found, times = timed(lambda q: [r for r, _ in store.vector_search(q, K)], queries[:exact_queries],
                             conn.info.backend_pid)
        out["exact_scan"] = {**quality(found, base, queries[:exact_queries], truth_sims), **summary_ms(times),
                             "cpu_ms_without_parallel_workers": timed.cpu_ms}
        store.exact_limit = limit
    out["variants"] = []
    for m, ef_construction in variants:
        conn.execute(f"DROP INDEX {HNSW_INDEX}")
        t = time.perf_counter()
        conn.execute(index_ddl.replace("vector_cosine_ops)", f"vector_cosine_ops) WITH (m = {int(m)}, "
                                                                 f"ef_construction = {int(ef_construction)})"))
        variant = {"m": m, "ef_construction": ef_construction, "build_s": round(time.perf_counter() - t, 1),
                   "index_mb": round(conn.execute("SELECT pg_relation_size(%s)", (HNSW_INDEX,)).fetchone()[0] / 1e6, 1)}
        print(f"  pgvector m={m} ef_construction={ef_construction}: build {variant['build_s']} s", flush=True)
        variant["sweep"] = sweep(store, base, queries, truth_sims, ef_values)
        out["variants"].append(variant)
    store.close()
    server.drop_database(url)
    return out


# -- (b) in-memory index and (c) sqlite-vec -----------------------------------------------------------

def fill_store(path: Path, base: np.ndarray) -> Store:
    store = Store.open(path)
    store.bind_embedder("vector-scale-bench", DIM)
    with store.transaction():
        for start in range(0, len(base), 50_000):
            part = base[start:start + 50_000]
            store.conn.executemany("INSERT INTO chunk_vectors(rowid, embedding) VALUES (?, ?)",
                                   ((start + i + 1, part[i].tobytes()) for i in range(len(part))))
        store._bump_version()
    return store


def sqlite_vec_arm(store: Store, path: Path, base, queries, truth_sims, n_queries: int, fill_s: float) -> dict:
    store.vector_search(queries[0], K)  # warm
    found, times = timed(lambda q: [r for r, _ in store.vector_search(q, K)], queries[:n_queries])
    return {"fill_s": round(fill_s, 1), "file_mb": round(path.stat().st_size / 1e6, 1),
            **quality(found, base, queries[:n_queries], truth_sims), **summary_ms(times), "cpu_ms": timed.cpu_ms,
            "queries_measured": n_queries, "load": load()}


def memory_arm(store: Store, base, queries, truth_sims) -> dict:
    t = time.perf_counter()
    index = MemoryIndex(store)
    load_s = time.perf_counter() - t
    index.search(queries[0], K, collapse=False)  # warm
    found, times = timed(lambda q: [r for r, _ in index.search(q, K, collapse=False)], queries)
    out = {"load_s": round(load_s, 2), "matrix_mb": round(index.matrix.nbytes / 1e6, 1),
           **quality(found, base, queries, truth_sims), **summary_ms(times), "cpu_ms": timed.cpu_ms, "load": load()}
    return out  # the index's matrix is freed here


# -- run -------------------------------------------------------------------------------------------

def run_size(n: int, real, synth, queries, args, server, scratch: Path) -> dict:
    print(f"{n} chunks", flush=True)
    base = base_vectors(real, synth, n)
    t = time.perf_counter()
    truth, truth_sims = exact(base, queries)
    row: dict = {"chunks": n, "real": min(n, len(real)), "synthetic": max(0, n - len(real)),
                 "exact_numpy_batch_s": round(time.perf_counter() - t, 2),
                 "query_similarity_p50": {"top1": round(float(np.median(truth_sims[:, 0])), 4),
                                          "top10": round(float(np.median(truth_sims[:, K - 1])), 4)},
                 "load_start": load()}
    row["pgvector_hnsw"] = pgvector_arm(server, base, queries, truth_sims, args.ef, args.pg_exact_queries,
                                        args.hnsw_variants)
    gc.collect()
    path = scratch / f"store-{n}.db"
    t = time.perf_counter()
    store = fill_store(path, base)
    fill_s = time.perf_counter() - t
    nq = len(queries) if n < 1_000_000 else min(len(queries), args.sqlite_vec_queries)
    row["sqlite_vec"] = sqlite_vec_arm(store, path, base, queries, truth_sims, nq, fill_s)
    print(f"  sqlite-vec: {json.dumps(row['sqlite_vec'])}", flush=True)
    row["memory_index"] = memory_arm(store, base, queries, truth_sims)
    print(f"  memory index: {json.dumps(row['memory_index'])}", flush=True)
    store.close()
    for f in scratch.glob(f"store-{n}.db*"):
        f.unlink()
    del base
    gc.collect()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-home", required=True, type=Path, help="a home with the demo store (real vectors)")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--name", default="vector_scale", help="results file: bench/results/NAME.json")
    parser.add_argument("--ef", default="40,100,200,400,800", help="hnsw.ef_search values to sweep")
    parser.add_argument("--sqlite-vec-queries", type=int, default=50,
                        help="queries timed on sqlite-vec at >= 1M (a scan)")
    parser.add_argument("--hnsw-variants", default="", help="more (m:ef_construction) builds to sweep, e.g. 32:128")
    parser.add_argument("--pg-exact-queries", type=int, default=20, help="queries timed with the HNSW index off")
    args = parser.parse_args()
    args.ef = [int(x) for x in args.ef.split(",")]
    args.hnsw_variants = [tuple(int(x) for x in v.split(":")) for v in args.hnsw_variants.split(",") if v]
    sizes = [int(s) for s in args.sizes.split(",")]

    from shared.embedders import make_embedder
    from shared.settings import load_settings

    with Store.open(args.source_home / "store.db", create=False) as store:
        _, real = store.all_vectors()
        embedder_name = store.embedder_name
    texts, origin = questions(args.source_home, args.queries)
    embedder = make_embedder(load_settings(home=tempfile.mkdtemp(prefix="deepmem-vscale-home-")))
    assert embedder.name == embedder_name, (embedder.name, embedder_name)
    queries = embedder.embed(texts).astype(np.float32)
    del embedder
    gc.collect()
    synth = Synthesizer(real)
    check = synth.batch(0, 5000)
    print(f"real vectors {len(real)}; nearest-neighbour similarity median {synth.target:.3f}; "
          f"synthetic {synth.nearest_real_median(check):.3f} (noise scale {synth.scale:.3f})", flush=True)

    path = RESULTS / f"{args.name}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update({
        "machine": machine() | {"ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                                "nice": os.nice(0),
                                "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}},
        "dim": DIM, "k": K, "embedder": embedder_name,
        "command": "OMP_NUM_THREADS=1 nice -n 10 python bench/vector_scale.py --source-home DIR --sizes " + args.sizes,
        "vectors": {"real": len(real), "real_nn_similarity_median": round(synth.target, 4),
                    "synthetic_nearest_real_similarity_median": round(synth.nearest_real_median(check), 4),
                    "noise_scale": round(synth.scale, 4),
                    "how": "real chunk mixed with one of its 10 nearest real chunks (weight U(0.5,1)) + Gaussian "
                           "noise with the real vectors' covariance, normalised; noise scale calibrated so the "
                           "median similarity to the nearest real chunk matches the real chunks' own"},
        "queries": {"count": len(texts), **origin},
        "latency": "client wall time per query, one query at a time, query embedding excluded; p50/p95 of one run",
        "cpu_ms": "CPU time per query (mean): this process, plus the Postgres backend for pgvector; the machine's "
                  "other load inflates wall time far more than this",
        "recall": "share of the 10 results whose true cosine similarity reaches the exact 10th best (numpy, float32)",
    })
    scratch = Path(tempfile.mkdtemp(prefix="deepmem-vscale-"))
    server = start_postgres(scratch / "pgdata")
    try:
        for n in sizes:
            row = run_size(n, real, synth, queries, args, server, scratch)
            # re-read: a run for another size may have saved meanwhile
            saved = json.loads(path.read_text()).get("sizes", []) if path.exists() else []
            sizes_done = {r["chunks"]: r for r in saved} | {n: row}
            result["sizes"] = [sizes_done[k] for k in sorted(sizes_done)]
            save(args.name, result)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

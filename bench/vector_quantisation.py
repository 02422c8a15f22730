"""What quantising the vectors costs in recall, on the vectors of bench/vector_scale.py (numpy, exact search).

    OMP_NUM_THREADS=1 nice -n 10 python bench/vector_quantisation.py --source-home DIR --sizes 100000,1000000

The path to 100M chunks (bench/SCALE.md) leans on smaller vectors; pgvector 0.6.2 (the wheel here)
has neither ``halfvec`` nor HNSW over ``bit``, so this measures the quantisation alone, with exact
search, on the same real + synthetic vectors and the same 200 questions:

- ``halfvec``: vectors rounded to float16 (what pgvector >= 0.7's halfvec stores), exact cosine;
- ``binary``: one bit per dimension, ``x > 0`` (pgvector's ``binary_quantize``), exact Hamming
  search for the best ``10 * oversample`` chunks, then reranked by the float32 cosine (what
  ``ORDER BY embedding <=> q`` over that candidate list does); also with the bits taken after
  subtracting the real vectors' mean (``x - mean > 0``), since these embeddings are not centred.

A graph index over the quantised vectors loses some more recall on top (measured for float32 in
vector_scale.json). Saves bench/results/vector_quantisation.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save  # noqa: E402
from bench.vector_scale import DIM, K, Synthesizer, base_vectors, exact, quality, questions  # noqa: E402
from shared.store import Store  # noqa: E402

OVERSAMPLE = (1, 4, 10, 40, 100)


def hamming_candidates(bits: np.ndarray, qbits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` rows of ``bits`` (uint64 words) nearest ``qbits`` in Hamming distance."""
    dist = np.bitwise_count(bits ^ qbits).sum(axis=1, dtype=np.int32)
    return np.argpartition(dist, n)[:n]


def binary_arm(base: np.ndarray, queries: np.ndarray, truth_sims: np.ndarray, center: np.ndarray) -> dict:
    def pack(m: np.ndarray) -> np.ndarray:
        return np.packbits(m - center > 0, axis=1).view(np.uint64)  # 384 bits = 6 words

    bits = np.vstack([pack(base[i:i + 100_000]) for i in range(0, len(base), 100_000)])
    qbits = pack(queries)
    out = {}
    for over in OVERSAMPLE:
        found = []
        for q, qb in zip(queries, qbits):
            cand = hamming_candidates(bits, qb, K * over)
            best = cand[np.argsort(-(base[cand] @ q))[:K]]
            found.append([int(i) + 1 for i in best])
        out[f"oversample_{over}"] = {"candidates": K * over, **quality(found, base, queries, truth_sims)}
        print(f"    oversample {over}: {out[f'oversample_{over}']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-home", required=True, type=Path)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from shared.embedders import make_embedder
    from shared.settings import load_settings

    with Store.open(args.source_home / "store.db", create=False) as store:
        _, real = store.all_vectors()
    texts, origin = questions(args.source_home, args.queries)
    queries = make_embedder(load_settings(home=tempfile.mkdtemp(prefix="deepmem-vq-home-"))).embed(texts)
    queries = queries.astype(np.float32)
    synth = Synthesizer(real)
    mean = real.mean(axis=0)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        print(f"{n} chunks", flush=True)
        base = base_vectors(real, synth, n)
        _, truth_sims = exact(base, queries)
        t = time.perf_counter()
        half = base.astype(np.float16).astype(np.float32)
        found = [[int(i) + 1 for i in row] for row in exact(half, queries.astype(np.float16).astype(np.float32))[0]]
        row = {"chunks": n,
               "bytes_per_vector": {"vector": 4 * DIM, "halfvec": 2 * DIM, "bit": DIM // 8},
               "halfvec": quality(found, base, queries, truth_sims)}
        del half
        print(f"  halfvec: {row['halfvec']}", flush=True)
        print("  binary (x > 0)", flush=True)
        row["binary"] = binary_arm(base, queries, truth_sims, np.zeros(DIM, dtype=np.float32))
        print("  binary (x - mean > 0)", flush=True)
        row["binary_centred"] = binary_arm(base, queries, truth_sims, mean)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        del base
    save("vector_quantisation", {"machine": machine(), "dim": DIM, "k": K, "queries": {"count": len(texts), **origin},
                                 "search": "exact (numpy): the quantisation's own loss, before any graph index",
                                 "sizes": rows})


if __name__ == "__main__":
    main()

"""Helpers for benchmarks: machine facts, percentiles, saving results, a scratch copy of a store.

The benchmarks of quality and learning (deep_memory, learning_week, real_questions, feedback_now,
rephrase, vector_quantisation, ...) run on a single-machine data directory (store.db, feedback.duckdb,
adapters/) opened directly, whatever DEEPMEM_DATABASE_URL says: they measure the method, which is the
same on both backends. The Postgres arms are in ingest_throughput (--backends), search_latency,
vector_scale and replicas.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}


def percentile(values, p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 3), "p95_ms": round(percentile(ms, 95), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


TABLE_KEYS = ["recall@1", "recall@3", "recall@5", "recall@10", "recall@50", "recall@100", "hit_rate@10", "mrr@10"]


def pick(m: dict) -> dict:
    """The reference table's metrics of one evaluation, rounded, with its question count."""
    return {k: round(m[k], 4) for k in TABLE_KEYS if k in m} | {"queries": m.get("queries")}


def gain(comparison) -> dict:
    """Deep memory minus plain search, per metric of the reference table."""
    return {k: round(comparison.deep[k] - comparison.base[k], 4) for k in TABLE_KEYS}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {path}")
    return path


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scratch_copy(source_home: str | Path, prefix: str):
    """(home, settings, embedder, store) on a private copy of ``source_home``'s store: what a
    benchmark records or trains there never touches the user's data directory."""
    from shared.embedders import make_embedder
    from shared.home import Home
    from shared.settings import load_settings
    from shared.store import Store

    home = Home.open(tempfile.mkdtemp(prefix=prefix))
    shutil.copy(Path(source_home) / "store.db", home.store_path)
    settings = load_settings(home=str(home.root))
    return home, settings, make_embedder(settings), Store.open(home.store_path)

"""Ingest throughput on the bundled SQLite docs, and the cost of an unchanged re-ingest.

    python bench/ingest_throughput.py [--runs 3]

Each run ingests into a fresh store; the re-ingest runs on the last store. Prints and saves
bench/results/ingest.json (medians over runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, peak_rss_mb, save  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.ingest import ingest  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.sources import DEMO_BASE_URL, demo_archive  # noqa: E402
from shared.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
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

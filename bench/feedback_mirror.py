"""How much memory and time a replica's feedback mirror takes as the shared feedback log grows.

In the scale-out mode every replica reads the feedback log through a DuckDB mirror of the Postgres
tables (shared/feedback/postgres.py). This script fills a real PostgreSQL (the tests' pgserver
wheel) with N answered questions shaped like the bot's: ten retrievals each with their URL and
score, a 600-character answer, a vote on one in ten. Then, for each N, a fresh process opens the
log and reads the labels (the first refresh copies everything), 200 more questions arrive, and it
reads again (an incremental refresh), then looks up one question's retrievals and one event 20
times (what a click on a button reads; the median), through the mirror and, where the code has
them, with the log's reads by key. It reports the process's peak resident memory above what it
used before the first read, and the wall time of each read.

    python bench/feedback_mirror.py --questions 10000,50000,200000 --name feedback_mirror
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, save  # noqa: E402

READER = r"""
import json, resource, sys, time
import psycopg
sys.path.insert(0, sys.argv[2])
from shared.feedback.postgres import PostgresFeedback
sys.path.insert(0, sys.argv[3])
from bench.feedback_mirror import fill

def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20

url, n = sys.argv[1], int(sys.argv[4])
log = PostgresFeedback(url)
before = rss_mb()
t = time.perf_counter()
labels = log.labels()
first = time.perf_counter() - t
after_first = rss_mb()
peak_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with psycopg.connect(url, autocommit=True) as conn:
    fill(conn, 200, start=10**9)
t = time.perf_counter()
again = log.labels()
incremental = time.perf_counter() - t
def lookup(keyed):
    times = []
    for i in range(0, 300_000, 15_000):  # what a click on a button reads: one question's retrievals and events
        t = time.perf_counter()
        if keyed:  # reads by key, from the Postgres tables
            assert len(log.answer_retrievals(f"q{i:012d}")) == (10 if i < n else 0)
            assert log.has_event(f"e{i:012d}") == (i < n)
        else:  # the same reads, through the mirror
            log.rows("SELECT rank, chunk_id, score, cited FROM retrievals WHERE question_id = ? AND "
                     "variant = 'answer' ORDER BY rank", [f"q{i:012d}"])
            log.rows("SELECT 1 FROM events WHERE id = ?", [f"e{i:012d}"])
        times.append(time.perf_counter() - t)
    return round(sorted(times)[10] * 1000, 1)

print(json.dumps({"labels": len(labels), "labels_after": len(again), "first_read_s": round(first, 2),
                  "incremental_read_s": round(incremental, 3), "mirror_lookup_ms_median": lookup(False),
                  "keyed_lookup_ms_median": lookup(True) if hasattr(log, "answer_retrievals") else None,
                  "rss_before_mb": round(before), "peak_above_start_mb": round(peak_first - before),
                  "held_after_read_mb": round(after_first - before)}))
log.close()
"""


def fill(conn, n: int, start: int = 0) -> None:
    """n answered questions, shaped like the bot's, written with COPY (one transaction)."""
    answer = ("The documentation says this is configured in the section cited below; " * 9)[:600]
    with conn.transaction():
        with conn.cursor().copy("COPY feedback.questions (id, asked_at, source, user_id, channel_id, text, answer, "
                                "answer_mode, answered_at, latency_ms) FROM STDIN") as copy:
            for i in range(start, start + n):
                at = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z"
                copy.write_row((f"q{i:012d}", at, "slack", f"U{i % 500:05d}", f"C{i % 20:03d}",
                                f"How do I configure option number {i} of the thing in production?", answer,
                                "extractive", at, 840))
        with conn.cursor().copy("COPY feedback.retrievals (question_id, variant, rank, chunk_id, url, score, cited) "
                                "FROM STDIN") as copy:
            for i in range(start, start + n):
                for rank in range(1, 11):
                    chunk = (i * 7 + rank * 131) % 40_000
                    copy.write_row((f"q{i:012d}", "answer", rank, f"{chunk:016x}",
                                    f"https://docs.example.com/section/page-{chunk // 8}.html#part-{chunk % 8}",
                                    1.0 - rank / 20, rank <= 3))
        with conn.cursor().copy("COPY feedback.events (id, question_id, occurred_at, user_id, kind, value) "
                                "FROM STDIN") as copy:
            for i in range(start, start + n, 10):
                copy.write_row((f"e{i:012d}", f"q{i:012d}", "2026-06-01T10:01:00Z", f"U{i % 500:05d}", "vote",
                                1 if i % 20 else -1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", default="10000,50000,200000", help="comma-separated sizes of the log")
    ap.add_argument("--name", default="feedback_mirror", help="the results file: bench/results/NAME.json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.questions.split(",")]

    import psycopg

    from shared.feedback.postgres import PostgresFeedback
    from tests.helpers.postgres import start_server

    server = start_server(Path(tempfile.mkdtemp(prefix="deepmem-pg-bench-")))
    results = []
    try:
        for n in sizes:
            url = server.create_database("mirror")
            PostgresFeedback(url).close()  # the schema
            t = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                fill(conn, n)
            filled = time.perf_counter() - t
            run = subprocess.run([sys.executable, "-c", READER, url, str(ROOT), str(ROOT), str(n)], capture_output=True,
                                 text=True, timeout=3600)
            if run.returncode:
                raise SystemExit(f"the reader failed at {n} questions: {run.stderr.strip().splitlines()[-1:]}")
            row = {"questions": n, "retrievals": n * 10, "votes": (n + 9) // 10, "fill_s": round(filled, 1)}
            row |= json.loads(run.stdout.strip().splitlines()[-1])
            print(row, flush=True)
            results.append(row)
            server.drop_database(url)
    finally:
        server.stop()
    save(args.name, {"benchmark": "feedback_mirror", "machine": machine(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

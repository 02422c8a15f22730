"""Answer throughput with 1, 2 and 3 `deepmem serve` replicas against one PostgreSQL.

    python bench/replicas.py [--replicas 1,2,3] [--step-seconds 8]

A real PostgreSQL with pgvector (the pgserver wheel the tests use) holds the store, the feedback
log, the adapter registry and the coordination; the SQLite pages the tests use (22 pages of the
bundled docs) are ingested into it once. Each replica is a real subprocess on 127.0.0.1; a loopback
Slack Web API here records the answers they post. Signed app_mention events are sent round-robin
over the replicas at a rising rate (an open loop: a request is sent on time whether or not the
earlier ones are answered) for a few seconds per step.

A step *holds* when the p99 of Slack's acknowledgements stays under 1 s (Slack's deadline is 3 s)
and the answers keep up: at least 95 % of the step's questions answered, and the p99 time from
question to posted answer under 5 s (no growing backlog). The sustained throughput is the answer
rate of the highest step that holds; the peak is the answer rate under the heaviest load tried.
Ratios are against one replica. One run; the medians are over each step's questions. Before
the replicas start, the coordination's own costs are timed on the same database (a claim won, a
claim lost, an answered thread recorded, a follow-up looked up), and the machine's load average is
recorded before and after (the replicas share its cores with whatever else runs).

With the most replicas, adapters are then promoted a few times (two versions saved in the
database registry, activated in turn, as the nightly job's promotion does), and every replica is
asked until it answers with the promoted one: the promotion delay is the time until the last
replica posted such an answer (an upper bound: the adapter was in use before that question was
retrieved). Saves bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, percentile, save  # noqa: E402
from tests.helpers.replicas import answered_by, ask, replica_env, start_replicas, stop_replicas  # noqa: E402
from tests.helpers.slack_api import BOT_USER, SlackAPI, event_body, signed_headers  # noqa: E402

SECRET = "bench-secret"
RATES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128)  # questions per second offered, in steps (the top ones find two or three replicas' limit on a quiet machine)
ACK_P99_LIMIT_S = 1.0
ANSWER_P99_LIMIT_S = 5.0
THREADS = itertools.count(1)


def questions() -> list[str]:
    lines = (ROOT / "shared" / "data" / "sqlite-faq.jsonl").read_text().splitlines()
    return [json.loads(line)["query"] for line in lines]


def prepare(database_url: str, work: Path) -> list[str]:
    """The small corpus ingested into the database, and two adapter versions saved in its registry."""
    import numpy as np

    from shared.deep_memory.adapter import LinearAdapter
    from shared.deep_memory.versions import open_registry
    from shared.embedders import make_embedder
    from shared.home import Home
    from shared.ingest import ingest
    from shared.settings import load_settings
    from shared.store import open_store
    from tests.helpers.corpus import SMALL, extract

    home = Home.open(work / "ingest-home")
    settings = load_settings(home=str(home.root), database_url=database_url)
    docs = extract(work / "docs", SMALL)
    embedder = make_embedder(settings)
    with open_store(home, settings) as store:
        ingest(store, embedder, settings, str(docs), base_url="https://sqlite.org/", progress=False)
    registry = open_registry(home, settings)
    rng = np.random.default_rng(0)
    versions = []
    for _ in range(2):
        weight = np.eye(embedder.dim) + 0.01 * rng.standard_normal((embedder.dim, embedder.dim))
        versions.append(registry.save(LinearAdapter(weight, np.zeros(embedder.dim)),
                                      {"embedder": embedder.name, "config": {"dim": embedder.dim}}).name)
    return versions


async def step(session, replicas, api, rate: float, seconds: float, texts: list[str], tag: str) -> dict:
    """Offer ``rate`` questions/s for ``seconds``, round-robin over the replicas; wait for the answers."""
    n = max(1, int(rate * seconds))
    before = len(api.posts())
    sent: dict[str, float] = {}
    acks: list[float] = []
    statuses: list[int] = []

    async def one(i: int):
        ts = f"{1_800_000_000 + next(THREADS)}.000001"  # a thread of its own: its answer is told apart
        text = f"<@{BOT_USER}> {texts[i % len(texts)]}"
        body = event_body({"type": "app_mention", "user": f"U{i % 50}", "text": text, "ts": ts, "channel": "C1",
                           "event_ts": ts}, f"Ev{tag}{i}")
        url = replicas[i % len(replicas)].url
        started = time.perf_counter()
        sent[ts] = started
        try:
            async with session.post(f"{url}/slack/events", data=body.encode(),
                                    headers=signed_headers(SECRET, body)) as r:
                statuses.append(r.status)
        except aiohttp.ClientError:
            statuses.append(0)
        acks.append(time.perf_counter() - started)

    first = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = first + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    deadline = time.perf_counter() + ANSWER_P99_LIMIT_S + 25
    answered: dict[str, float] = {}
    while time.perf_counter() < deadline:
        for call in api.calls[before:]:
            thread = call["args"].get("thread_ts") if call["method"] == "chat.postMessage" else None
            if thread in sent and thread not in answered:
                answered[thread] = call["at"]
        if len(answered) >= n:
            break
        await asyncio.sleep(0.05)
    latencies = [answered[t] - sent[t] for t in answered]
    last = max(answered.values()) if answered else time.perf_counter()
    result = {"offered_per_s": rate, "questions": n, "answered": len(answered),
              "acks_ok": sum(1 for s in statuses if s == 200),
              "answers_per_s": round(len(answered) / max(last - first, 1e-9), 2),
              "ack_p50_ms": round(percentile(acks, 50) * 1e3, 1), "ack_p99_ms": round(percentile(acks, 99) * 1e3, 1),
              "answer_median_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
              "answer_p99_ms": round(percentile(latencies, 99) * 1e3, 1) if latencies else None}
    result["holds"] = bool(result["acks_ok"] == n and percentile(acks, 99) < ACK_P99_LIMIT_S
                           and len(answered) >= 0.95 * n and latencies
                           and percentile(latencies, 99) < ANSWER_P99_LIMIT_S)
    return result


async def promotions(replicas, api, registry, versions: list[str], rounds: int) -> dict:
    """Activate the versions in turn; seconds until every replica has answered with the promoted one."""
    asked = itertools.count()
    delays = []
    for i in range(rounds):
        target = versions[i % len(versions)]
        await asyncio.to_thread(registry.activate, target)
        promoted = time.perf_counter()
        switched: dict[str, float] = {}
        while len(switched) < len(replicas) and time.perf_counter() - promoted < 60:
            pending = [r for r in replicas if r.name not in switched]
            answers = await asyncio.gather(*(ask(r, api, "How do I create an AUTOINCREMENT column?",
                                                 f"1900000000.{next(asked):06d}") for r in pending))
            for replica, (_, posted, post) in zip(pending, answers):
                if answered_by(post) == target:
                    switched[replica.name] = posted - promoted
            await asyncio.sleep(0.1)
        delays.append(round(max(switched.values()), 3) if len(switched) == len(replicas) else None)
        await asyncio.sleep(1.0)
    done = [d for d in delays if d is not None]
    return {"replicas": len(replicas), "rounds": rounds, "each_s": delays,
            "median_s": round(statistics.median(done), 3) if done else None, "max_s": max(done) if done else None}


def coordination_costs(database_url: str, n: int = 1000) -> dict:
    """What exactly-once costs a delivery: one claim (won, then lost), one thread lookup, one answer recorded."""
    from shared.coordination import PostgresCoordination

    with PostgresCoordination(database_url) as coordination:
        won, lost, lookup, remember = [], [], [], []
        for i in range(n):
            for times, call in ((won, lambda: coordination.claim_event(f"EvCost{i}")),
                                (lost, lambda: coordination.claim_event(f"EvCost{i}")),
                                (remember, lambda: coordination.remember_thread("C9", f"{i}.1", question_id=f"q{i}",
                                                                                message_ts=f"{i}.2")),
                                (lookup, lambda: coordination.is_bot_thread("C9", f"{i}.1"))):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
    return {name: {"p50_ms": round(percentile(v, 50) * 1e3, 3), "p99_ms": round(percentile(v, 99) * 1e3, 3)}
            for name, v in (("claim_won", won), ("claim_lost", lost), ("remember_thread", remember),
                            ("is_bot_thread", lookup))} | {"n": n}


async def measure(count: int, database_url: str, home_for, api, seconds: float, work: Path,
                  promote=None) -> dict:
    texts = questions()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500)) as session:
        envs = [replica_env(home_for(count, i), database_url=database_url, slack_api_url=api.base_url,
                            secret=SECRET) for i in range(count)]
        started = time.perf_counter()
        logs = work / f"logs-{count}"
        logs.mkdir()
        replicas = await start_replicas(envs, logs, session, api, SECRET)
        ready_s = time.perf_counter() - started
        try:
            await step(session, replicas, api, 2 * count, 2, texts, f"warm{count}x")  # caches, first queries
            steps = []
            for rate in RATES:
                result = await step(session, replicas, api, rate, seconds, texts, f"r{count}x{rate}x")
                print(f"  {count} replica(s), {rate}/s offered: {result}", flush=True)
                steps.append(result)
                if not result["holds"]:
                    break  # saturated: heavier steps only queue more
            promotion = await promote(replicas) if promote is not None else None
        finally:
            stop_replicas(replicas)
    held = [s for s in steps if s["holds"]]
    return {"replicas": count, "ready_s": round(ready_s, 1),
            "sustained_answers_per_s": held[-1]["answers_per_s"] if held else 0.0,
            "sustained_at_offered_per_s": held[-1]["offered_per_s"] if held else None,
            "peak_answers_per_s": max(s["answers_per_s"] for s in steps), "steps": steps} | \
        ({"promotion": promotion} if promotion else {})


async def main_async(counts: list[int], seconds: float) -> dict:
    from tests.helpers.postgres import start_server

    load_before = list(os.getloadavg())  # other work on the machine: these replicas share its cores
    work = Path(tempfile.mkdtemp(prefix="deepmem-bench-replicas-"))
    server = start_server(work / "postgres")
    api = await SlackAPI().start()
    _record_post_times(api)
    try:
        url = server.create_database("bench")
        t0 = time.perf_counter()
        versions = await asyncio.to_thread(prepare, url, work)
        ingest_s = time.perf_counter() - t0
        costs = await asyncio.to_thread(coordination_costs, url)
        print("coordination:", costs, flush=True)
        from shared.deep_memory.versions import open_registry
        from shared.home import Home
        from shared.settings import load_settings

        registry = open_registry(Home.open(work / "ingest-home"), load_settings(database_url=url))

        async def promote(replicas):
            return await promotions(replicas, api, registry, versions, rounds=3)

        def home_for(count: int, i: int) -> Path:
            home = work / f"home-{count}-{i}"
            home.mkdir()
            return home

        runs = []
        for count in counts:
            runs.append(await measure(count, url, home_for, api, seconds, work,
                                      promote if count == max(counts) else None))
        base = runs[0]["sustained_answers_per_s"] or None
        peak = runs[0]["peak_answers_per_s"] or None
        for run in runs:
            run["sustained_ratio"] = round(run["sustained_answers_per_s"] / base, 2) if base else None
            run["peak_ratio"] = round(run["peak_answers_per_s"] / peak, 2) if peak else None
        return {"ingest_small_corpus_s": round(ingest_s, 1), "coordination": costs, "step_seconds": seconds,
                "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
                "ack_p99_limit_ms": ACK_P99_LIMIT_S * 1e3, "answer_p99_limit_ms": ANSWER_P99_LIMIT_S * 1e3,
                "runs": runs}
    finally:
        await api.stop()
        server.stop()


def _record_post_times(api: SlackAPI) -> None:
    """Stamp each recorded Slack call with the time it arrived (the loopback API keeps only the calls)."""
    class Stamped(list):
        def append(self, call):
            call["at"] = time.perf_counter()
            super().append(call)

    api.calls = Stamped(api.calls)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="seconds each offered rate lasts")
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    results = asyncio.run(main_async(counts, args.step_seconds))
    save("replicas", {"machine": machine(), **results})
    for run in results["runs"]:
        print(f"{run['replicas']} replica(s): {run['sustained_answers_per_s']} answers/s sustained "
              f"(x{run['sustained_ratio']}), peak {run['peak_answers_per_s']} (x{run['peak_ratio']})"
              + (f"; promotion used by all within {run['promotion']['median_s']} s (median)"
                 if run.get("promotion") else ""))


if __name__ == "__main__":
    main()

"""Slack ack latency under load, with and without a training job in the same process, and the time
from question to posted answer (extractive and with an LLM), on the bundled SQLite docs.

    python bench/bot_latency.py --home DIR     # DIR holds the ingested demo (see bench/deep_memory.py)

Everything runs over real HTTP on 127.0.0.1: deepmem's server with the real slack-bolt app, a
loopback Slack Web API that records chat.postMessage, and for the LLM path a loopback
OpenAI-compatible server (it answers at once: a real model adds its own generation time).
Saves bench/results/bot_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, percentile, save  # noqa: E402
from bot.server import build_runtime, build_web_app  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from tests.helpers.openai_server import OpenAIServer  # noqa: E402
from tests.helpers.slack_api import BOT_USER, SlackAPI, event_body, signed_headers  # noqa: E402

SECRET = "bench-secret"
QUESTIONS = [l for l in (ROOT / "shared" / "data" / "sqlite-faq.jsonl").read_text().splitlines()]


def questions(n: int) -> list[str]:
    import json

    texts = [json.loads(l)["query"] for l in QUESTIONS]
    return [texts[i % len(texts)] for i in range(n)]


async def burst(session, url, api, n: int, tag: str) -> dict:
    """n mentions at once; ack times, then the time until each answer is posted."""
    before = len(api.posts())
    sent = {}

    async def one(i, text):
        ts = f"{int(time.time())}.{i:06d}"
        body = event_body({"type": "app_mention", "user": f"U{i}", "text": f"<@{BOT_USER}> {text}", "ts": ts,
                           "channel": "C1", "event_ts": ts}, f"Ev{tag}{i}")
        started = time.perf_counter()
        async with session.post(f"{url}/slack/events", data=body.encode(), headers=signed_headers(SECRET, body)) as r:
            assert r.status == 200, r.status
        sent[ts] = started
        return time.perf_counter() - started

    acks = await asyncio.gather(*(one(i, q) for i, q in enumerate(questions(n))))
    deadline = time.monotonic() + 300
    while len(api.posts()) - before < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    done = time.perf_counter()
    answered = len(api.posts()) - before
    return {"questions": n, "answered": answered,
            "ack_p50_ms": round(percentile([a * 1e3 for a in acks], 50), 1),
            "ack_p99_ms": round(percentile([a * 1e3 for a in acks], 99), 1),
            "ack_max_ms": round(max(acks) * 1e3, 1),
            "all_answered_after_s": round(done - min(sent.values()), 2)}


async def serve(settings):
    runtime = build_runtime(settings)
    runner = web.AppRunner(build_web_app(runtime))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runtime, runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def sequential(session, url, api, runtime, n: int) -> dict:
    """One question at a time: question -> posted answer, and retrieval's share of it."""
    totals, retrieval, answer_ms = [], [], []
    for i, text in enumerate(questions(n)):
        before = len(api.posts())
        ts = f"{int(time.time())}.9{i:05d}"
        body = event_body({"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> {text}", "ts": ts,
                           "channel": "C2", "event_ts": ts}, f"EvSeq{time.time_ns()}")
        started = time.perf_counter()
        async with session.post(f"{url}/slack/events", data=body.encode(), headers=signed_headers(SECRET, body)):
            pass
        while len(api.posts()) == before:
            await asyncio.sleep(0.002)
        totals.append(time.perf_counter() - started)
    # the answer path's own breakdown, measured inside it
    for text in questions(n):
        asked = await asyncio.to_thread(runtime.qa.ask, text, source="bench", user_id="bench")
        retrieval.append(asked.answer.timings["retrieval_ms"])
        answer_ms.append(asked.answer.timings["total_ms"])
    return {"questions": n, "question_to_posted_p50_ms": round(percentile([t * 1e3 for t in totals], 50), 1),
            "question_to_posted_p95_ms": round(percentile([t * 1e3 for t in totals], 95), 1),
            "answer_path_p50_ms": round(percentile(answer_ms, 50), 1),
            "retrieval_p50_ms": round(percentile(retrieval, 50), 1),
            "retrieval_share": round(percentile(retrieval, 50) / percentile(answer_ms, 50), 3)}


async def main_async(home: Path) -> dict:
    api = await SlackAPI().start()
    results = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        base = dict(home=str(home), slack_bot_token="xoxb-bench", slack_signing_secret=SECRET,
                    slack_api_url=api.base_url, retrain_cron="off")  # no nightly run (or catch-up) mid-measurement
        runtime, runner, url = await serve(load_settings(**base))
        await burst(session, url, api, 5, "warm")
        results["ack_50_concurrent"] = await burst(session, url, api, 50, "a")
        print("50 concurrent:", results["ack_50_concurrent"])

        # the same burst while the nightly job runs in this process, as `deepmem serve` runs it:
        # in a worker thread, with one torch thread
        from shared.deep_memory.nightly import NightlyConfig, run_nightly
        from shared.home import Home

        train_home = Home.open(tempfile.mkdtemp(prefix="deepmem-bench-train-"))
        shutil.copy(home / "store.db", train_home.store_path)
        settings = load_settings(home=str(train_home.root))
        job = asyncio.create_task(asyncio.to_thread(
            run_nightly, train_home, settings, NightlyConfig(trigger="bench"), embedder=runtime.embedder,
            log=lambda *a: None))
        await asyncio.sleep(8)  # into the epochs
        results["ack_50_concurrent_during_training"] = await burst(session, url, api, 50, "b")
        results["ack_50_concurrent_during_training"]["training_was_running"] = not job.done()
        print("during training:", results["ack_50_concurrent_during_training"])
        await job
        results["extractive"] = await sequential(session, url, api, runtime, 20)
        print("extractive:", results["extractive"])
        await runner.cleanup()

        llm = OpenAIServer().start()
        llm.responder = lambda messages: "Use INTEGER PRIMARY KEY AUTOINCREMENT [1]."
        runtime, runner, url = await serve(load_settings(**base, openai_base_url=llm.base_url, openai_api_key="sk-b"))
        results["llm_loopback"] = await sequential(session, url, api, runtime, 20)
        print("llm (loopback):", results["llm_loopback"])
        await runner.cleanup()
        llm.stop()
    await api.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="data directory with the demo ingested")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deepmem-bench-bot-"))
    shutil.copy(Path(args.home) / "store.db", work / "store.db")  # questions and votes stay out of DIR
    if (Path(args.home) / "adapters").is_dir():
        shutil.copytree(Path(args.home) / "adapters", work / "adapters")
    results = asyncio.run(main_async(work))
    save("bot_latency", {"machine": machine(), **results})


if __name__ == "__main__":
    main()

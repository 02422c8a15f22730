"""The `nightly` service, started by `deepmem serve` in its own process (deepmem.services entry point)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from shared.deep_memory.nightly import NightlyConfig, run_nightly

from .schedule import make_scheduler, missed_run, parse_cron

__all__ = ["start"]

log = logging.getLogger("deepmem.daemon")


async def start(runtime):
    """Schedule retraining; returns the coroutine function that stops it (None when it is off)."""
    settings = runtime.settings
    local = datetime.now().astimezone().tzinfo
    trigger = parse_cron(settings.retrain_cron, timezone=local)
    if trigger is None:
        log.info("nightly retraining is off")
        return None

    def run(trigger_name: str) -> dict:
        record = run_nightly(runtime.home, settings, NightlyConfig(trigger=trigger_name), embedder=runtime.embedder,
                             log=log.info)
        log.info("retraining run %s: %s (%s)", record["id"], record["status"], record.get("decision"))
        return record

    scheduler = make_scheduler(trigger, run, timezone=local)
    scheduler.start()
    runs = await asyncio.to_thread(runtime.feedback.rows,
                                   "SELECT max(started_at) AS last FROM runs WHERE status <> 'skipped'")
    last = runs[0]["last"] if runs else None
    if missed_run(trigger, last, datetime.now(local)):
        log.info("the last scheduled retraining was missed: running it now")
        async def catch_up() -> None:  # a coroutine function: APScheduler runs a plain lambda in a thread
            await asyncio.to_thread(run, "catch-up")  # and would drop the coroutine it returns, never awaited

        scheduler.add_job(catch_up, id="catch-up", max_instances=1)
    job = scheduler.get_job("nightly-retrain")
    log.info("next retraining: %s", job.next_run_time if job else "?")

    async def stop():
        scheduler.shutdown(wait=False)

    return stop

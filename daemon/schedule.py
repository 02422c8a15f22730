"""The nightly schedule: an APScheduler job inside the bot's process.

- a crontab expression in local time (DEEPMEM_RETRAIN_CRON, default "0 3 * * *"), or "off";
- ``max_instances=1``: a run never overlaps another run of the schedule; a manual
  `deepmem retrain --now` is kept out by the run's file lock;
- ``coalesce=True`` with a grace window: a laptop that slept through 03:00 runs once when it
  wakes, not once per missed night;
- a process that was not running at all at 03:00 catches up once at start-up, when the last run
  is older than the last scheduled time and that time is within the grace window;
- the run happens in a worker thread, so the event loop keeps answering; any failure is
  recorded by the run itself and the schedule goes on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from shared.errors import ConfigError

__all__ = ["make_scheduler", "in_thread", "parse_cron", "missed_run", "GRACE"]

log = logging.getLogger("deepmem.daemon")
GRACE = timedelta(hours=12)
JOB_ID = "nightly-retrain"


def parse_cron(expression: str, timezone=None) -> CronTrigger | None:
    if expression.strip().lower() in ("off", "none", "disabled", ""):
        return None
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"DEEPMEM_RETRAIN_CRON={expression!r} is not a crontab expression "
                          f"(e.g. '0 3 * * *'): {exc}") from None


def in_thread(run, trigger_name: str):
    """The job for the scheduler: a coroutine function (APScheduler awaits those on its event loop; a plain
    function returning a coroutine would be called in a thread and its coroutine never awaited)."""

    async def job() -> None:
        try:
            await asyncio.to_thread(run, trigger_name)
        except Exception as exc:  # the run records its own failures; this is the last resort
            log.error("nightly retraining failed: %s", exc)

    return job


def make_scheduler(trigger: CronTrigger, run, *, timezone=None, grace: timedelta = GRACE) -> AsyncIOScheduler:
    """``run``: a blocking callable taking the trigger name; it is run in a worker thread."""
    job = in_thread(run, "schedule")
    scheduler = AsyncIOScheduler(timezone=timezone) if timezone else AsyncIOScheduler()
    scheduler.add_job(job, trigger, id=JOB_ID, max_instances=1, coalesce=True,
                      misfire_grace_time=int(grace.total_seconds()), replace_existing=True)
    return scheduler


def missed_run(trigger: CronTrigger, last_run: datetime | None, now: datetime, grace: timedelta = GRACE) -> bool:
    """True when the most recent scheduled time before ``now`` was missed (and is within grace)."""
    previous = None
    probe = trigger.get_next_fire_time(None, now - timedelta(days=8))
    while probe is not None and probe <= now:
        previous = probe
        probe = trigger.get_next_fire_time(probe, probe + timedelta(seconds=1))
    if previous is None or now - previous > grace:
        return False
    return last_run is None or last_run < previous

"""Several `deepmem serve` replicas against one PostgreSQL, driven like Slack drives them.

Two or three real subprocesses on 127.0.0.1 share DEEPMEM_DATABASE_URL; the loopback Slack Web
API of the test counts what they post; signed Events API and interactivity requests are sent to
whichever replica a load balancer would pick."""

from __future__ import annotations

import asyncio
import shutil
import time

import aiohttp
import pytest

from .helpers.replicas import replica_env, start_replicas, stop_replicas
from .helpers.slack_api import BOT_USER, SlackAPI, event_body, signed_headers

pytestmark = pytest.mark.timeout(600)

SECRET = "test-signing-secret"


def mention(text, ts, user="U_ALICE", channel="C1", thread_ts=None):
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
             "event_ts": ts}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def thread_message(text, ts, thread_ts, user="U_BOB", channel="C1"):
    return {"type": "message", "channel": channel, "channel_type": "channel", "user": user, "text": text, "ts": ts,
            "thread_ts": thread_ts, "event_ts": ts}


@pytest.fixture
async def slack_api():
    api = await SlackAPI().start()
    yield api
    await api.stop()


@pytest.fixture
def replica_home(small_store_path, tmp_path):
    """A DEEPMEM_HOME for each replica."""
    made = iter(range(1, 100))

    def make():
        home = tmp_path / f"replica-home-{next(made)}"
        home.mkdir()
        shutil.copy(small_store_path, home / "store.db")
        return home

    return make


@pytest.fixture
async def cluster(pg_url, slack_api, replica_home, tmp_path):
    """A factory: ``await cluster(n, **env)`` starts n replicas sharing one database; all stop afterwards."""
    started = []
    async with aiohttp.ClientSession() as session:
        async def start(n: int, **env):
            envs = [replica_env(replica_home(), database_url=pg_url, slack_api_url=slack_api.base_url,
                                secret=SECRET, **env) for _ in range(n)]
            replicas = await start_replicas(envs, tmp_path, session, slack_api, SECRET)
            started.extend(replicas)
            return replicas

        try:
            yield start
        finally:
            stop_replicas(started)


async def test_a_retry_sent_to_another_replica_is_answered_once_in_total(cluster, slack_api):
    one, two, three = await cluster(3)
    event = mention("What is the maximum size of a database?", ts="1700000000.000100")
    now = int(time.time())
    # Slack retries after a timeout, signed anew; the load balancer sends each try elsewhere
    assert (await one.harness.event(event, event_id="EvRETRY", timestamp=now - 60))[0] == 200
    assert (await two.harness.event(event, event_id="EvRETRY", retry=1, timestamp=now - 30))[0] == 200
    assert (await three.harness.event(event, event_id="EvRETRY", retry=2, timestamp=now))[0] == 200
    # the same delivery reaching all three at once (a retry racing the first try, a duplicating proxy)
    duplicate = mention("How do I create an AUTOINCREMENT column?", ts="1700000000.000200")
    statuses = await asyncio.gather(*(r.harness.event(duplicate, event_id="EvTWICE", timestamp=now - i)
                                      for i, r in enumerate((one, two, three))))
    assert [s[0] for s in statuses] == [200, 200, 200]
    # the very same signed request again, at another replica: a replay, refused as on one replica
    body = event_body(mention("Is SQLite thread safe?", ts="1700000000.000300"), "EvREPLAY")
    headers = signed_headers(SECRET, body)
    for replica, status in ((one, 200), (two, 401), (three, 401)):
        async with replica.harness.session.post(f"{replica.url}/slack/events", data=body.encode(),
                                                headers=headers) as r:
            assert r.status == status
    await one.harness.wait_posts(3, timeout=60)
    await asyncio.sleep(2.0)
    posts = slack_api.posts()
    assert sorted(p["thread_ts"] for p in posts) == ["1700000000.000100", "1700000000.000200", "1700000000.000300"]


async def test_a_follow_up_in_a_thread_another_replica_answered_is_answered(cluster, slack_api):
    one, two = await cluster(2)
    await one.harness.event(mention("How do I make the database file smaller?", ts="1700000100.000001"),
                            event_id="EvQ1")
    await one.harness.wait_posts(1, timeout=60)
    # a follow-up without a mention in that thread, delivered to the other replica
    await two.harness.event(thread_message("and does it need free disk space?", "1700000100.000009",
                                           "1700000100.000001"), event_id="EvQ2")
    # a reply in a thread the bot never answered in: not for the bot
    await two.harness.event(thread_message("does anyone know?", "1700000200.000002", "1700000200.000001"),
                            event_id="EvQ3")
    posts = await two.harness.wait_posts(2, timeout=60)
    await asyncio.sleep(2.0)
    assert [p["thread_ts"] for p in slack_api.posts()] == ["1700000100.000001", "1700000100.000001"]
    assert posts[1]["thread_ts"] == "1700000100.000001"

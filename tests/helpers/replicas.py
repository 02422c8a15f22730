"""Several `deepmem serve` processes on 127.0.0.1, as replicas behind a load balancer would be.

Each replica is a real subprocess (``python -c "from shared.cli import main; main()" serve``) on a
port of its own (port 0: the kernel picks, the replica prints it), with the environment a
deployment gives it: DEEPMEM_DATABASE_URL (the database every replica shares), the Slack tokens,
SLACK_API_URL pointing at the loopback Slack Web API of the test. Its log goes to a file, so a
failing test can show it. ``Replica.harness`` posts signed Slack requests to it (the same
``Harness`` the in-process tests use).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .slack_api import BOT_USER, Harness

__all__ = ["Replica", "replica_env", "start_replicas", "stop_replicas", "mention", "answered_by", "question_of",
           "ask"]

ROOT = Path(__file__).resolve().parents[2]
# the port a replica listens on: Slack's HTTP endpoint, or (Socket Mode) the local chat's
SERVING = re.compile(r"(?:serving Slack over HTTP at|local chat on) http://127\.0\.0\.1:(\d+)/")


def replica_env(home: Path, *, database_url: str | None, slack_api_url: str, secret: str, **more: str) -> dict:
    """The environment of one replica: nothing inherited from DEEPMEM_/SLACK_/OPENAI_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPMEM_", "SLACK_", "OPENAI_"))}
    env |= {"DEEPMEM_HOME": str(home), "DEEPMEM_HOST": "127.0.0.1", "DEEPMEM_PORT": "0",
            "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_SIGNING_SECRET": secret, "SLACK_API_URL": slack_api_url,
            "DEEPMEM_RETRAIN_CRON": "off", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    if database_url is not None:
        env["DEEPMEM_DATABASE_URL"] = database_url
    return env | more


class Replica:
    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name, self.env = name, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.harness: Harness | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Replica":
        with open(self.log_path, "wb") as log:  # a fresh log: the port read from it is this process's
            self.proc = subprocess.Popen([sys.executable, "-c", "from shared.cli import main; main()", "serve"],
                                         env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def ready(self, session, timeout: float = 180.0) -> "Replica":
        """Wait for the replica to print its port and answer /healthz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            match = SERVING.search(self.log())
            if match:
                self.port = int(match.group(1))
                try:
                    async with session.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"replica {self.name} not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (the server finishes what is in flight), SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


async def start_replicas(envs: list[dict], log_dir: Path, session, api, secret: str) -> list[Replica]:
    """Start one replica per environment, at once, and wait until all are ready."""
    replicas = [Replica(f"replica{i + 1}", env, log_dir).start() for i, env in enumerate(envs)]
    try:
        await asyncio.gather(*(r.ready(session) for r in replicas))
    except BaseException:
        stop_replicas(replicas)
        raise
    for r in replicas:
        r.harness = Harness(None, api, r.url, session, secret)
    return replicas


def stop_replicas(replicas: list[Replica]) -> None:
    for r in replicas:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    for r in replicas:
        r.stop()


def mention(text: str, ts: str, user="U_ALICE", channel="C1", thread_ts=None) -> dict:
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
             "event_ts": ts}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def question_of(post: dict) -> str:
    """The question id an answer's vote buttons carry."""
    feedback = next(b for b in post["blocks"] if b.get("block_id") == "feedback")
    return feedback["elements"][0]["value"]


def answered_by(post: dict) -> str | None:
    """The adapter version an answer was made with, as its context line tells the reader (None: plain search)."""
    note = post["blocks"][-1]["elements"][0]["text"]
    return note.split(" · ")[0].removeprefix("deep memory ") if note.startswith("deep memory ") else None


async def ask(replica: Replica, api, text: str, ts: str, timeout: float = 60.0) -> tuple[float, float, dict]:
    """Mention the bot at one replica; (sent, posted, the posted answer), times from ``time.perf_counter``."""
    sent = time.perf_counter()
    status, _, _ = await replica.harness.event(mention(text, ts=ts), event_id=f"Ev{ts}")
    assert status == 200, status
    deadline = sent + timeout
    while time.perf_counter() < deadline:
        post = next((p for p in api.posts() if p.get("thread_ts") == ts), None)
        if post is not None:
            return sent, time.perf_counter(), post
        await asyncio.sleep(0.02)
    raise AssertionError(f"no answer from {replica.name} in {timeout:.0f} s")

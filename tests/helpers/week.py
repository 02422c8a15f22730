"""A simulated week of users, through the real flows, for the dashboard's tests and its screenshot.

Each day, people in several Slack channels and the local chat ask questions through
``QAService.ask`` (the bot's answer path: retrieval with the active adapter and the feedback
memory, an extractive answer with citations) at that day's time: the clock is moved with
time-machine, so questions, votes, clicks and runs carry the simulated dates. Questions about the
docs are the offline generator's questions (each knows its answer); gap questions are about topics
the docs do not cover (a VPN, expense reports, Kubernetes), asked in other words by several people.
The channels are configured as a team would (``shared.channels``: modes, collections, experts).
People click the right cited source (sometimes 👍), or press 👎 and pick the right section among
those offered after it; gap questions get 👎 or, in Slack, "Ask an expert" (``record_escalation``).
After each day the nightly job runs (``run_nightly``).

``simulate_week`` returns a ``WeekLog``: what was asked and done, the ground truth the dashboard
must show.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urldefrag

import time_machine

from shared.answer import Answerer
from shared.channels import ChannelConfig, ChannelSettings
from shared.deep_memory.nightly import NightlyConfig, run_nightly
from shared.deep_memory.trainer import TrainConfig
from shared.feedback.store import FeedbackStore
from shared.feedback_memory import FeedbackMemory, MemoryLoader
from shared.home import Home
from shared.qa import QAService
from shared.questions import synthetic_questions
from shared.retrieval import open_searcher
from shared.store import Store
from shared.vector_index import MemoryIndex

UTC = timezone.utc
CHANNELS = ("C0HELPDOCS", "C0PLATFORM", "C0ONBOARD")
WEB = "web"  # the local chat: no channel, shown under its front end
FAST = TrainConfig(max_epochs=3, patience=1)
NOT_COVERED = "The documentation does not seem to cover this"  # how the extractive answer says so

# topics the SQLite docs do not cover, each asked in several ways, and where people ask them
GAP_TOPICS = {
    "vpn": ("C0ONBOARD", ["How do I reset my VPN password?", "I forgot my VPN password, how can I change it?",
                          "Where do I change the password for the office VPN?",
                          "VPN password expired, how do I set a new one?"]),
    "expenses": ("C0ONBOARD", ["How do I submit an expense report?", "Where do I file my travel expenses?",
                               "What is the deadline for expense reports?",
                               "Who approves expense reports for travel?"]),
    "kubernetes": ("C0PLATFORM", ["How do I deploy the service to the Kubernetes cluster?",
                                  "Which kubectl context do we use for staging deployments?",
                                  "How do I roll back a Kubernetes deployment?",
                                  "How do I get access to the production Kubernetes cluster?"]),
}


@dataclass
class Asked:
    question_id: str
    day: date
    channel: str  # the channel id, or "web"
    text: str
    topic: str | None  # a GAP_TOPICS key, or None for a question about the docs
    cited_pages: list[str]
    covered: bool  # the answer did not say the docs do not seem to cover it
    up: bool = False
    down: bool = False
    escalated: bool = False
    clicked_pages: list[str] = field(default_factory=list)


@dataclass
class WeekLog:
    start: date
    days: int
    asked: list[Asked] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)

    def per_day(self) -> Counter:
        return Counter(a.day for a in self.asked)

    def per_channel(self) -> Counter:
        return Counter(a.channel for a in self.asked)

    def cited(self) -> Counter:
        return Counter(p for a in self.asked for p in a.cited_pages)

    def clicked(self) -> Counter:
        return Counter(p for a in self.asked for p in a.clicked_pages)


def _page(url: str) -> str:
    return urldefrag(url)[0]


def simulate_week(home: Home, settings, embedder, *, start: date, days: int = 7, per_day: int = 24,
                  gaps_per_day: int = 4, seed: int = 0, nightly: bool = True,
                  train: TrainConfig | None = FAST) -> WeekLog:
    """``days`` days from ``start`` (in the past): ``per_day`` questions about the docs and ``gaps_per_day``
    gap questions a day, then the nightly job (night 0, before the first day, trains on synthetic only)."""
    rng = random.Random(seed)
    log = WeekLog(start=start, days=days)
    feedback = FeedbackStore(home)
    channels = ChannelConfig.update(home, configure)
    store = Store.open(home.store_path, create=False)
    try:
        pool, _ = synthetic_questions(store, settings, "offline", progress=False)
        pool = [q for q in pool if q.positives]
        rng.shuffle(pool)
        memory = FeedbackMemory()
        searcher = open_searcher(store, embedder, home, index=MemoryIndex(store), memory=memory)
        qa = QAService(Answerer(searcher, settings), feedback)
        loader = MemoryLoader(memory, feedback, store, embedder, home.root / "memory.json")
        users = [f"U{i:03d}" for i in range(12)]

        def night(day: date, name: str) -> None:
            with time_machine.travel(datetime(day.year, day.month, day.day, 3, 0, tzinfo=UTC), tick=True):
                record = run_nightly(home, settings, NightlyConfig(trigger=name, train=train), embedder=embedder,
                                     log=lambda *a: None)
            log.runs.append(record)
            loader.refresh()

        if nightly:
            night(start, "night-0")
        cursor = 0
        for d in range(days):
            day = start + timedelta(days=d)
            todays = [(None, q) for q in pool[cursor:cursor + per_day]]
            cursor += per_day
            for _ in range(gaps_per_day):
                topic = rng.choice(sorted(GAP_TOPICS))
                todays.append((topic, rng.choice(GAP_TOPICS[topic][1])))
            rng.shuffle(todays)
            for n, (topic, item) in enumerate(todays):
                moment = datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC) + timedelta(minutes=17 * n)
                with time_machine.travel(moment, tick=False):
                    log.asked.append(_ask(qa, channels, rng, users, topic, item, day))
            feedback.drain()
            if nightly:
                night(day + timedelta(days=1), f"night-{d + 1}")
    finally:
        store.close()
    return log


def configure(config: ChannelConfig) -> ChannelConfig:
    """The channels as a team would set them up (``deepmem channels set``)."""
    config = config.with_channel("C0HELPDOCS", ChannelSettings(collections=("default",), mode="all"))
    config = config.with_channel("C0PLATFORM", ChannelSettings(mode="mention", experts=("U0PLATFORM1",)))
    return config.with_channel("C0ONBOARD", ChannelSettings(mode="mention", ephemeral=True,
                                                            experts=("U0PEOPLE01", "S0HRTEAM01")))


def _ask(qa: QAService, channels: ChannelConfig, rng: random.Random, users: list[str], topic: str | None, item,
         day: date) -> Asked:
    user = rng.choice(users)
    if topic is None:
        text, positives = item.text, set(item.positives)
        channel = rng.choices([*CHANNELS, WEB], weights=[5, 3, 1, 2])[0]
    else:
        text, positives = item, set()
        channel = GAP_TOPICS[topic][0] if rng.random() < 0.8 else WEB
    kwargs = {"source": "web"} if channel == WEB else {"source": "slack", "channel_id": channel, "team_id": "T0SIM"}
    collections = channels.for_channel(None if channel == WEB else channel).collections or None
    asked = qa.ask(text, user_id=user, collections=collections, **kwargs)
    answer = asked.answer
    row = Asked(question_id=asked.question_id, day=day, channel=channel, text=text, topic=topic,
                cited_pages=[_page(s.url) for s in answer.cited_sources],
                covered=bool(answer.sources) and not answer.text.startswith(NOT_COVERED))
    shown = answer.shown_sources
    right = [s for s in shown if s.chunk_id in positives]
    if topic is not None:
        roll = rng.random()
        if roll < 0.5:
            qa.vote(asked.question_id, user, -1)
            row.down = True
        elif roll < 0.8 and channel != WEB:  # "Ask an expert" (Slack only): the channel's experts are tagged
            thread_ts = f"{int(datetime.now(UTC).timestamp())}.{rng.randrange(10**6):06d}"
            qa.record_escalation(asked.question_id, user, channel, thread_ts, tagged=True, via="expert button")
            row.escalated = True
        return row
    if rng.random() < 0.25:
        return row  # people who do nothing
    if right:
        qa.source_click(asked.question_id, user, right[0].chunk_id, right[0].rank)
        row.clicked_pages.append(_page(right[0].url))
        if rng.random() < 0.5:
            qa.vote(asked.question_id, user, +1)
            row.up = True
        return row
    qa.vote(asked.question_id, user, -1)
    row.down = True
    found = [s for s in qa.other_sources(asked.question_id) if s.chunk_id in positives]
    if found and rng.random() < 0.7:
        qa.source_click(asked.question_id, user, found[0].chunk_id, found[0].rank)
        row.clicked_pages.append(_page(found[0].url))
    return row

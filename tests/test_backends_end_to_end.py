"""The whole product on both backends: one walk through the real CLI and the real `deepmem serve`.

Each walk runs on a few real SQLite documentation pages, once with the single-machine default
(sqlite-vec + DuckDB in DEEPMEM_HOME) and once with DEEPMEM_DATABASE_URL (PostgreSQL + pgvector,
the data directory then holds no store, feedback log or adapters). It ingests, lists, searches,
re-ingests, removes a source, imports Slack history, trains, switches adapters, asks and votes in
the local chat, exports and forgets; the last test checks that both backends gave the same results.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.server import build_runtime
from shared.cli import cli
from shared.home import Home
from shared.migrate import migrate_home
from shared.settings import load_settings

from .helpers import corpus
from .helpers.slack_history import HELP, SlackHistory

# training needs 100 training and 20 validation questions: the offline generator gets them from ~20 pages
PAGES = [name for name in corpus.SMALL if name != "fts5.html"]  # fts5.html alone is a third of the chunks
EXTRA = "lang_droptable.html"  # a second source, in its own collection, removed again
QUESTION = "How do I create an AUTOINCREMENT column?"
SEARCHES = {QUESTION: "https://sqlite.org/autoinc.html",
            "How do I add a column to an existing table?": "https://sqlite.org/lang_altertable.html",
            "what is the maximum length of a string or BLOB": "https://sqlite.org/limits.html"}
RESULTS: dict[str, dict] = {}  # backend -> what its walk saw, compared by the last test


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def deployment(backend, request, tmp_path, small_docs, monkeypatch):
    """A data directory (and, for postgres, a fresh database), the docs folders, and the environment."""
    home = tmp_path / "home"
    docs, extra = tmp_path / "docs", tmp_path / "reference"
    docs.mkdir()
    for name in PAGES:
        (docs / name).parent.mkdir(exist_ok=True)
        shutil.copy(small_docs / name, docs / name)
    corpus.extract(extra, [EXTRA])
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    if url:
        monkeypatch.setenv("DEEPMEM_DATABASE_URL", url)
    monkeypatch.setenv("DEEPMEM_HOME", str(home))
    monkeypatch.setenv("DEEPMEM_RETRAIN_CRON", "off")
    return {"home": home, "docs": docs, "extra": extra, "url": url}


def deepmem(*args: str, ok: bool = True):
    t = time.monotonic()
    result = CliRunner().invoke(cli, list(args))
    print(f"{time.monotonic() - t:6.1f} s  deepmem {' '.join(args)}")
    if ok:
        assert result.exit_code == 0, f"deepmem {' '.join(args)}: {result.output}{result.exception!r}"
    return result


def as_json(*args: str):
    return json.loads(deepmem(*args, "--json").output)


def test_the_whole_product(deployment, backend, embedder):
    seen = RESULTS.setdefault(backend, {})
    docs, extra = deployment["docs"], deployment["extra"]

    # -- ingest two sources, list them, search ------------------------------------------------------
    first = as_json("ingest", str(docs), "--base-url", "https://sqlite.org/")
    assert first[0]["pages_new"] == len(PAGES) and not first[0]["failures"]
    as_json("ingest", str(extra), "--base-url", "https://sqlite.org/", "--collection", "reference")
    sources = {Path(s["uri"]).name: s for s in as_json("sources")}
    assert {k: (v["pages"], v["collection"]) for k, v in sources.items()} == {"docs": (len(PAGES), "default"),
                                                                              "reference": (1, "reference")}
    status = as_json("status")
    seen["chunks"] = status["chunks"]
    assert status["pages"] == len(PAGES) + 1 and status["chunks"] == sum(s["chunks"] for s in sources.values())
    assert (deployment["home"] / "store.db").exists() == (backend == "sqlite")  # Postgres mode: no local store
    seen["top"] = {}
    for question, page in SEARCHES.items():
        hits = as_json("search", question, "-k", "5")["results"]
        assert hits[0]["url"].split("#")[0] == page, (question, hits[0]["url"])
        seen["top"][question] = [h["id"] for h in hits]
        hybrid = as_json("search", question, "-k", "5", "--hybrid")["results"]  # vectors + full text (FTS5 / tsvector)
        assert hybrid[0]["url"].split("#")[0] == page, (question, hybrid[0]["url"])
    only = as_json("search", "How do I create a table?", "--collection", "reference", "-k", "3")["results"]
    assert only and all(h["url"].startswith("https://sqlite.org/lang_droptable.html") for h in only)

    # -- a second ingest skips every unchanged page; removing a source removes its chunks -----------
    again = as_json("ingest")
    assert sorted((r["pages_unchanged"], r["pages_new"] + r["pages_changed"]) for r in again) == \
        [(1, 0), (len(PAGES), 0)]
    assert sum(r["chunks_embedded"] for r in again) == 0
    deepmem("channels", "set", "C0REFERENCE", "--collections", "reference")  # checked against the store's collections
    removed = as_json("sources", "remove", str(extra))
    assert removed["pages"] == 1 and removed["chunks"] == sources["reference"]["chunks"]
    assert as_json("status")["chunks"] == sources["docs"]["chunks"]
    assert [Path(s["uri"]).name for s in as_json("sources")] == ["docs"]
    assert "from reference (missing)" in deepmem("channels", "list").output

    # -- Slack history becomes labels in the deployment's feedback log --------------------------------
    with loopback_slack() as slack:
        os.environ["SLACK_BOT_TOKEN"], os.environ["SLACK_API_URL"] = "xoxb-test", slack.base_url
        try:
            assert "labeled 4 questions" in deepmem("history", "import", "--channel", "#help-docs").output
        finally:
            del os.environ["SLACK_BOT_TOKEN"], os.environ["SLACK_API_URL"]
    history = [label for label in as_json("feedback", "export") if label["source"] == "history"]
    seen["history"] = sorted((label["question"], label["target"]) for label in history)
    assert len(seen["history"]) == 4 and all(h["channel_id"] == HELP for h in as_json("feedback", "export",
                                                                                       "--what", "questions"))

    # -- train, then switch adapters by hand; a retraining run is recorded ----------------------------
    trained = as_json("train", "--generator", "offline", "--epochs", "3", "--no-activate")
    assert trained["version"] == "v0001"
    deepmem("adapters", "activate", "v0001")
    retrained = as_json("retrain", "--now", "--time-budget", "60")
    assert retrained["status"] in ("promoted", "kept"), retrained
    listing = as_json("adapters", "list")
    names = [v["version"] for v in listing["versions"]]
    assert names[:1] == ["v0001"] and listing["problem"] is None
    active = listing["active"]
    if len(names) == 2 and active == "v0002":  # the nightly run promoted its adapter: roll back to v0001
        assert "active: v0001" in deepmem("adapters", "rollback").output
    deepmem("adapters", "off")
    assert as_json("adapters", "list")["active"] is None
    assert "active: v0001" in deepmem("adapters", "activate", "v0001").output
    assert as_json("search", QUESTION, "-k", "1")["adapter"] == "v0001"
    assert as_json("status")["adapter"] == "v0001"
    evaluation = as_json("evaluate")
    assert evaluation["adapter"] == "v0001" and evaluation["evaluations"]
    seen["evaluation"] = sorted(e["name"] for e in evaluation["evaluations"])
    runs = as_json("runs")
    assert [(r["status"], r["trigger"]) for r in runs] == [(retrained["status"], "manual")]

    # -- serve: ask in the local chat, vote; the label is exported; forget removes it -------------------
    with serving() as chat:
        answer = chat.post("api/ask", {"question": QUESTION})
        assert answer["sources"] and answer["sources"][0]["url"].startswith("https://sqlite.org/autoinc.html")
        assert answer["adapter"] == "v0001"
        seen["chat_top"] = answer["sources"][0]["url"]
        assert chat.post("api/vote", {"question_id": answer["question_id"], "value": 1}) == {"ok": True}
        votes = wait_for(lambda: [lb for lb in as_json("feedback", "export") if lb["kind"] == "vote"], "the vote label")
        assert {(v["question"], v["label"], v["user_id"]) for v in votes} == {(QUESTION, 1, votes[0]["user_id"])}
        user = votes[0]["user_id"]
        assert user.startswith("local:")
        forgot = deepmem("feedback", "forget", user).output
        assert forgot.startswith(f"forgot {user}: 1 questions")
        labels = as_json("feedback", "export")
        assert not [lb for lb in labels if lb["user_id"] == user] and len(labels) == len(history)
    seen["labels_after_forget"] = len(labels)

    # -- labels imported from a file land in the same log -------------------------------------------------
    mine = deployment["home"].parent / "labels.jsonl"
    mine.write_text(json.dumps({"query": "how do I vacuum a database", "user": "U0IMPORT",
                                "relevant": ["https://sqlite.org/lang_vacuum.html"]}) + "\n")
    assert deepmem("feedback", "import", str(mine)).output.startswith("imported 1 questions")
    assert [lb["user_id"] for lb in as_json("feedback", "export") if lb["source"] == "import"] == ["U0IMPORT"]
    if backend == "postgres":  # the data directory holds no store, feedback log or adapters of its own
        home = deployment["home"]
        assert not [p for p in (home / "store.db", home / "feedback.duckdb", home / "adapters") if p.exists()]


def test_a_replica_uses_the_feedback_memory_settings_the_nightly_run_tuned(backend, deployment, tmp_path, store_copy):
    """The nightly job saves the settings it tuned in its data directory (memory.json) and in its run
    record. With Postgres the trainer is another machine: a replica, with a data directory of its own,
    takes them from the run record in the shared feedback log."""
    from shared.feedback import open_feedback
    from shared.feedback.store import FeedbackStore, now
    from shared.feedback_memory import MemoryParams

    tuned = MemoryParams(threshold=0.72, boost=0.45, penalty=0.15)
    home = Home.open(store_copy.path.parent)
    trainer = load_settings(home=str(home.root))  # DEEPMEM_DATABASE_URL in Postgres mode
    if backend == "postgres":
        assert migrate_home(home, deployment["url"]).ok  # the small store, in the database every replica shares
    tuned.save(home.root / "memory.json", {"tuned_at": now()})  # what the nightly job writes, in this order
    open_feedback(home, trainer).record([FeedbackStore.run_op(
        id="r1", started_at=now(), finished_at=now(), trigger="schedule", status="kept",
        metrics=json.dumps({"memory": asdict(tuned)}))])
    replica = trainer if backend == "sqlite" else trainer.model_copy(update={"home": tmp_path / "replica"})
    runtime = build_runtime(replica)
    try:
        runtime.memory.refresh()
        assert runtime.memory.memory.params == tuned
    finally:
        runtime.qa.answerer.searcher.adapters.close()
        runtime.store.close()


def test_both_backends_give_the_same_results():
    if set(RESULTS) != {"sqlite", "postgres"}:
        pytest.skip("needs both walks of this run")
    sqlite, postgres = RESULTS["sqlite"], RESULTS["postgres"]
    assert sqlite["chunks"] == postgres["chunks"]
    for question in SEARCHES:
        assert sqlite["top"][question][0] == postgres["top"][question][0], question
        assert set(sqlite["top"][question]) == set(postgres["top"][question]) or \
            len(set(sqlite["top"][question]) & set(postgres["top"][question])) >= 4, question
    assert sqlite["history"] == postgres["history"]
    assert sqlite["chat_top"] == postgres["chat_top"]
    assert sqlite["evaluation"] == postgres["evaluation"]
    assert sqlite["labels_after_forget"] == postgres["labels_after_forget"]


def wait_for(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class loopback_slack:
    """The loopback Slack with a realistic #help-docs (tests/helpers/slack_history.py), on its own thread."""

    def __enter__(self) -> SlackHistory:
        self.server = SlackHistory()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)
        return self.server

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Chat:
    """The local chat's HTTP API as the page uses it: the page's token, the visitor cookie."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.opener.open(url, timeout=30).read().decode()
        self.token = re.search(r'<meta name="deepmem-token" content="([^"]+)"', page).group(1)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "X-Deepmem-Token": self.token})
        with self.opener.open(request, timeout=120) as response:
            return json.loads(response.read())


class serving:
    """`deepmem serve` in its own process, as a user runs it, with this test's environment."""

    def __enter__(self) -> Chat:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_"))}
        env |= {"DEEPMEM_PORT": "0", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", "from shared.cli import main; main()", "serve"], env=env,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        url, lines = None, []
        deadline = time.time() + 90
        while time.time() < deadline and url is None:
            line = self.proc.stderr.readline()
            lines.append(line)
            if "local chat on" in line:
                url = line.strip().rsplit(" ", 1)[-1]
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {''.join(lines)}{self.proc.stderr.read()}")
        assert url, f"serve did not start: {''.join(lines)}"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # never let its log block it
        return Chat(url)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)

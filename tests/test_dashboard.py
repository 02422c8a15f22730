"""The dashboard: numbers equal to what a simulated week recorded through the real flows, topics that
group questions about the same thing, the page in a real headless Chromium (every section and plot
visible, a screenshot that is not blank), /admin behind the chat's access control, `deepmem report`
writing the same page, an empty log, and hostile text shown as text."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from click.testing import CliRunner

from bot.server import build_runtime
from shared.answer import Answerer
from shared.channels import ChannelConfig, ChannelSettings
from shared.cli import cli
from shared.dashboard import build_dashboard, dashboard_page, render_page
from shared.dashboard.topics import VectorMemo, group_topics
from shared.feedback import open_feedback
from shared.feedback.store import FeedbackStore
from shared.home import Home
from shared.qa import QAService
from shared.retrieval import open_searcher
from shared.settings import load_settings
from shared.store import Store

from .helpers.serving import listening
from .helpers.week import GAP_TOPICS, simulate_week

UTC = timezone.utc
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian's chromium is not installed (make test installs it)")
SECTIONS = ("summary", "per-day", "per-channel", "gaps", "pages", "runs")
PLOTS = ("per-day", "per-channel", "gaps", "most-cited", "runs")
TOKEN = "s3cret-admin-token"
DAYS = 4


@pytest.fixture(scope="module")
def week(tmp_path_factory, small_store_path, embedder):
    """Four simulated days (ending two days ago) and their nights, in a data directory of their own."""
    root = tmp_path_factory.mktemp("week")
    shutil.copy(small_store_path, root / "store.db")
    home = Home.open(root)
    settings = load_settings(home=str(root), retrain_cron="off")
    start = datetime.now(UTC).date() - timedelta(days=DAYS + 2)
    log = simulate_week(home, settings, embedder, start=start, days=DAYS, per_day=20, gaps_per_day=6, seed=3)
    return home, log


def board_of(home, embedder, **kw):
    return build_dashboard(FeedbackStore(home), embed=embedder.embed, **kw)


# -- the numbers ------------------------------------------------------------------------------------

def test_counts_per_day_and_channel_and_shares_are_what_was_recorded(week, embedder):
    home, log = week
    board = board_of(home, embedder)
    assert board.totals.questions == len(log.asked) == DAYS * 26
    assert {d: c.questions for d, c in board.per_day if c.questions} == dict(log.per_day())
    assert len(board.per_day) == 90 and board.per_day[-1][0] == datetime.now(UTC).date()
    assert {name: c.questions for name, c in board.per_channel} == dict(log.per_channel())
    assert [name for name, _ in board.per_channel][:1] == [log.per_channel().most_common(1)[0][0]]
    t = board.totals
    assert t.up == sum(a.up for a in log.asked) > 0
    assert t.down == sum(a.down for a in log.asked) > 0
    assert t.escalated == sum(a.escalated for a in log.asked) > 0  # "Ask an expert", recorded by the Slack side
    assert t.answered == sum(a.covered for a in log.asked) < t.questions  # the gap questions are not covered
    assert t.share("down") == pytest.approx(t.down / t.questions)
    for name, c in board.per_channel:
        mine = [a for a in log.asked if a.channel == name]
        assert (c.up, c.down, c.answered) == (sum(a.up for a in mine), sum(a.down for a in mine),
                                              sum(a.covered for a in mine))
    for day, c in board.per_day:
        assert sum(c.outcomes.values()) == c.questions  # each question counted once per day
    # the gaps: every question not answered or voted not helpful, and nothing else
    assert board.gap_questions == sum((not a.covered) or a.down for a in log.asked)
    assert sum(topic.questions for topic in board.topics) <= board.gap_questions


def test_channels_are_shown_with_their_configuration(week, embedder):
    home, log = week
    board = build_dashboard(FeedbackStore(home), channels=ChannelConfig.load(home))
    assert board.channel_setup == {"C0HELPDOCS": "all; default", "C0PLATFORM": "mention; every collection; 1 expert(s)",
                                   "C0ONBOARD": "mention, ephemeral; every collection; 2 expert(s)",
                                   "default": "mention; every collection"}
    page = dashboard_page(FeedbackStore(home), home=home)
    assert "<tr><td>C0HELPDOCS</td><td>all; default</td>" in page
    assert "<tr><td>web</td><td>mention; every collection</td>" in page  # the chat answers with the default


def test_a_shorter_window_counts_only_its_days(week, embedder):
    home, log = week
    last_day = max(log.per_day())
    days = (datetime.now(UTC).date() - last_day).days + 1
    board = board_of(home, embedder, days=days)
    assert board.totals.questions == log.per_day()[last_day]
    assert [r.started_at.date() for r in board.runs] == [r.started_at.date() for r in board.runs
                                                         if r.started_at.date() >= last_day]


def test_gap_topics_group_questions_about_the_same_thing(week, embedder):
    home, log = week
    board = board_of(home, embedder)
    texts_of = {topic: set(phrasings) for topic, (_, phrasings) in GAP_TOPICS.items()}
    seen_topics = 0
    for name, texts in texts_of.items():
        gaps = [a for a in log.asked if a.topic == name and (not a.covered or a.down)]
        if len(gaps) < 2:
            continue
        seen_topics += 1
        holding = [t for t in board.topics if any(e.text in texts for e in t.examples)]
        assert len(holding) == 1, f"the {name} questions are split over {[t.label for t in holding]}"
        topic = holding[0]
        assert topic.questions == len(gaps)  # all of them, and nothing about something else
        assert {e.text for e in topic.examples} <= texts
        assert topic.label in texts
        assert topic.unanswered == sum(not a.covered for a in gaps) and topic.down == sum(a.down for a in gaps)
    assert seen_topics >= 2
    assert board.topics == sorted(board.topics, key=lambda t: -t.questions)


def test_group_topics_on_questions_people_ask(embedder):
    texts = ["How do I reset my VPN password?", "I forgot my VPN password, how can I change it?",
             "How do I submit an expense report?", "Where do I file my travel expenses?",
             "How do I create an AUTOINCREMENT column?", "How does AUTOINCREMENT work in SQLite?",
             "VPN password expired, how do I set a new one?"]
    topics = group_topics(texts, embedder.embed)
    groups = sorted(sorted(texts[i] for i in t.members) for t in topics)
    assert groups == sorted([sorted([texts[0], texts[1], texts[6]]), sorted(texts[2:4]), sorted(texts[4:6])])
    vpn = next(t for t in topics if len(t.members) == 3)
    assert vpn.label in texts and {"vpn", "password"} <= set(vpn.terms)
    assert group_topics([], embedder.embed) == []
    assert len(group_topics(["only one"], embedder.embed)) == 1


def test_vectors_are_remembered_and_bounded(embedder):
    calls = []
    memo = VectorMemo(lambda texts: calls.append(list(texts)) or embedder.embed(texts), size=3)
    first = memo(["a question", "another", "a question"])
    assert calls == [["a question", "another"]] and np.allclose(first[0], first[2])
    assert np.allclose(memo(["another"]), embedder.embed(["another"]), atol=1e-5) and len(calls) == 1
    memo(["third", "fourth"])
    assert len(memo.vectors) == 3 and "a question" not in memo.vectors


def test_most_and_least_cited_pages_are_what_answers_cited_and_people_clicked(week, embedder):
    home, log = week
    board = board_of(home, embedder)
    cited, clicked = log.cited(), log.clicked()
    assert board.most_cited[0].page == cited.most_common(1)[0][0]
    for p in board.most_cited:
        assert (p.cited, p.clicks) == (cited[p.page], clicked[p.page])
    assert [p.cited for p in board.most_cited] == sorted((p.cited for p in board.most_cited), reverse=True)
    assert board.least_cited and not {p.page for p in board.least_cited} & {p.page for p in board.most_cited}
    least = [p.cited + p.clicks for p in board.least_cited]
    assert least == sorted(least) and least[0] <= min(p.cited + p.clicks for p in board.most_cited)
    for p in board.least_cited:
        assert (p.cited, p.clicks) == (cited[p.page], clicked[p.page])
    with Store.open(home.store_path, create=False) as store:
        titled = build_dashboard(FeedbackStore(home), titles=lambda ids: {k: c.title for k, c in
                                                                          store.chunks_by_id(ids).items()})
    assert all(p.title for p in titled.most_cited)


def test_every_run_is_on_the_dashboard_with_its_held_out_metrics(week, embedder):
    home, log = week
    board = board_of(home, embedder)
    assert len(board.runs) == len(log.runs) == DAYS + 1
    assert [(r.id, r.status, r.challenger) for r in board.runs] == [(r["id"], r["status"], r.get("version"))
                                                                    for r in log.runs]
    for point, record in zip(board.runs, log.runs):
        real = record["metrics"]["real"]
        if real["queries"]:
            assert point.real["queries"] == real["queries"]
            assert point.real["challenger"]["hit@10"] == pytest.approx(real["challenger"]["hit_rate@10"])
            assert point.real["champion"]["mrr@10"] == pytest.approx(real["champion"]["mrr@10"])
        assert point.synthetic["challenger"]["hit@10"] == pytest.approx(
            record["metrics"]["synthetic"]["challenger"]["hit_rate@10"])
        assert point.feedback_questions == record["counts"]["real_by_origin"].get("feedback", 0)
    assert any(r.real for r in board.runs)  # the week's feedback became held-out real questions
    assert board.runs[-1].feedback_questions > 0


def _held(hit: float, mrr: float, queries: int = 20) -> dict:
    return {"queries": queries, "hit_rate@10": hit, "mrr@10": mrr}


def test_runs_with_metrics_per_collection_show_them(tmp_path):
    """A run record as the nightly job writes it when the held-out questions span collections."""
    feedback = FeedbackStore(Home.open(tmp_path / "h"))
    for day, (status, api, runbooks) in enumerate([("kept", 0.80, 0.70), ("promoted", 0.85, 0.66)], start=1):
        by = {"api": {"queries": 12, "champion": _held(0.8, 0.6, 12), "challenger": _held(api, 0.6, 12)},
              "runbooks": {"queries": 9, "champion": _held(0.7, 0.5, 9), "challenger": _held(runbooks, 0.5, 9)}}
        metrics = {"real": {"queries": 21, "champion": _held(0.75, 0.55), "challenger": _held(0.8, 0.56),
                            "by_collection": by},
                   "synthetic": {"queries": 50, "champion": _held(0.6, 0.4), "challenger": _held(0.61, 0.41)}}
        at = (datetime.now(UTC) - timedelta(days=3 - day)).isoformat()
        feedback.record([FeedbackStore.run_op(id=f"r{day}", started_at=at, finished_at=at, status=status,
                                              version=f"v000{day}", metrics=metrics,
                                              counts={"real_by_origin": {"feedback": 21}, "real_questions": 21})])
    board = build_dashboard(feedback)
    assert [r.status for r in board.runs] == ["kept", "promoted"]
    assert board.runs[1].collections["runbooks"]["challenger"]["hit@10"] == pytest.approx(0.66)
    page = render_page(board)
    assert 'data-plot="collections"' in page and "<td>runbooks</td><td>0.700 / 0.500</td><td>0.660 / 0.500</td>" in page


# -- the page in a real browser ---------------------------------------------------------------------

def _png_stats(png: bytes) -> tuple[int, float]:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    colors = len(np.unique(image.reshape(-1, 3)[::7], axis=0))
    return colors, float(image.std())


@needs_chromium
def test_the_page_renders_in_chromium_with_every_section_and_plot(week, embedder, tmp_path):
    from playwright.sync_api import sync_playwright

    home, _ = week
    with Store.open(home.store_path, create=False) as store:
        page_html = dashboard_page(FeedbackStore(home), embed=embedder.embed, store=store)
    path = tmp_path / "dashboard.html"
    path.write_text(page_html, encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        for section in SECTIONS:
            assert page.locator(f"section#{section}").is_visible(), section
            assert page.locator(f"section#{section} .empty").count() == 0, section
        sizes = page.eval_on_selector_all(
            "img.plot", "els => els.map(e => [e.dataset.plot, e.complete, e.naturalWidth, e.naturalHeight, "
                        "e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
        assert [s[0] for s in sizes] == list(PLOTS)
        for name, complete, nw, nh, w, h in sizes:
            assert complete and nw >= 800 and nh >= 150, (name, nw, nh)  # decoded, full size
            assert w >= 700 and h >= 100, (name, w, h)  # laid out at a readable size
        for name in PLOTS:
            plot = page.locator(f'img.plot[data-plot="{name}"]')
            plot.scroll_into_view_if_needed()
            assert plot.is_visible()
            colors, spread = _png_stats(plot.screenshot())
            assert colors >= 8 and spread > 10, (name, colors, spread)  # bars and lines drawn, not a blank area
        topics = board_of(home, embedder).topics
        assert page.locator("ol.topics li.topic").count() == sum(t.questions > 1 for t in topics)
        assert page.locator("ul.singles li").count() == sum(t.questions == 1 for t in topics)
        assert page.locator("table.runs tbody tr").count() == DAYS + 1
        shot = page.screenshot(full_page=True)
        browser.close()
    assert requests == [path.as_uri()]  # self-contained: nothing else fetched
    from PIL import Image

    image = Image.open(io.BytesIO(shot))
    assert image.width == 1100 and image.height > 3000
    colors, spread = _png_stats(shot)
    assert colors >= 50 and spread > 20  # not blank


# -- /admin and `deepmem report` --------------------------------------------------------------------

@contextlib.asynccontextmanager
async def served(home, **overrides):
    runtime = build_runtime(load_settings(home=str(home.root), retrain_cron="off", **overrides))
    async with listening(runtime) as base, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def get(path="/admin", headers=None):
            async with session.get(f"{base}{path}", headers=headers or {}) as r:
                return r.status, await r.text(), r.headers
        yield get


def _without_time(page: str) -> str:
    return re.sub(r"<time class=generated>[^<]*</time>", "<time class=generated></time>", page)


async def test_admin_needs_the_chats_access_and_serves_what_report_writes(week, tmp_path):
    home, _ = week
    async with served(home) as get:  # loopback, no token: this machine only
        status, page, headers = await get()
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "script-src" not in headers["Content-Security-Policy"] and "img-src data:" in \
            headers["Content-Security-Policy"]
        assert (await get(headers={"Host": "attacker.example"}))[0] == 403  # DNS rebinding
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):  # through a proxy: exposed
            assert (await get(headers={header: "203.0.113.7"}))[0] == 403
        assert (await get("/admin?days=0"))[0] == 400 and (await get("/admin?days=x"))[0] == 400
        assert (await get("/admin?days=7"))[0] == 200
    result = CliRunner().invoke(cli, ["--home", str(home.root), "report", "--out", str(tmp_path / "r.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "wrote" in result.output
    written = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert _without_time(written) == _without_time(page)
    for section in SECTIONS:
        assert f'<section id="{section}">' in written

    async with served(home, host="0.0.0.0", chat_token=TOKEN) as get:
        status, text, headers = await get()
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic") and "Summary" not in text
        assert (await get(headers={"Authorization": "Bearer wrong"}))[0] == 401
        assert (await get(headers={"Authorization": f"Bearer {TOKEN}", "Host": "attacker.example"}))[0] == 403
        assert (await get(headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 200
    async with served(home, host="0.0.0.0", chat_user_header="X-Remote-User", chat_trusted_proxies="10.9.9.9") as get:
        assert (await get(headers={"X-Remote-User": "alice@example.com"}))[0] == 401  # not from the proxy
    async with served(home, host="0.0.0.0", chat_user_header="X-Remote-User") as get:
        assert (await get(headers={"X-Remote-User": "alice@example.com"}))[0] == 200


@pytest.fixture(params=["sqlite", "postgres"])
def feedback_backend(request, store_copy, monkeypatch):
    """The feedback log of a deployment in the data directory (DuckDB) or in PostgreSQL."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    if url:
        monkeypatch.setenv("DEEPMEM_DATABASE_URL", url)
    home = Home.open(store_copy.path.parent)
    feedback = open_feedback(home, load_settings(home=str(home.root), database_url=url))
    yield home, feedback
    getattr(feedback, "close", lambda: None)()


def test_the_same_numbers_from_either_feedback_backend(feedback_backend, store_copy, embedder, tmp_path):
    home, feedback = feedback_backend
    qa = QAService(Answerer(open_searcher(store_copy, embedder, home), load_settings(home=str(home.root))),
                   feedback)
    asked = []
    for n, (text, channel) in enumerate([("How do I create an AUTOINCREMENT column?", "C0HELPDOCS"),
                                         ("What is WAL mode?", "C0HELPDOCS"), ("How do I reset my VPN password?", None),
                                         ("How do I vacuum a database?", "C0PLATFORM")]):
        a = qa.ask(text, source="slack" if channel else "web", user_id=f"U{n}", channel_id=channel)
        asked.append(a)
    qa.vote(asked[0].question_id, "U0", 1)
    qa.vote(asked[1].question_id, "U1", 1)
    qa.vote(asked[1].question_id, "U1", -1)  # changed their mind: the latest vote stands
    qa.vote(asked[2].question_id, "U2", -1)
    shown = asked[3].answer.shown_sources[0]
    qa.source_click(asked[3].question_id, "U3", shown.chunk_id, shown.rank)
    board = build_dashboard(feedback, embed=embedder.embed)
    assert board.totals.questions == 4 and (board.totals.up, board.totals.down) == (1, 2)
    assert {name: c.questions for name, c in board.per_channel} == {"C0HELPDOCS": 2, "web": 1, "C0PLATFORM": 1}
    assert board.per_day[-1][1].questions == 4
    clicked = {p.page: p.clicks for p in board.most_cited if p.clicks}
    assert clicked == {shown.url.split("#")[0]: 1}
    cited = sum(len(a.answer.cited_sources) for a in asked)
    assert sum(p.cited for p in board.most_cited + board.least_cited) == cited
    gaps = {e.text for t in board.topics for e in t.examples}
    assert gaps == {"What is WAL mode?", "How do I reset my VPN password?"}
    result = CliRunner().invoke(cli, ["--home", str(home.root), "report", "--out", str(tmp_path / "r.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "How do I reset my VPN password?" in (tmp_path / "r.html").read_text(encoding="utf-8")


# -- an empty log, hostile text -----------------------------------------------------------------------

def test_an_empty_feedback_log_is_a_clear_empty_dashboard(tmp_path, embedder):
    home = tmp_path / "fresh"
    home.mkdir()
    result = CliRunner().invoke(cli, ["--home", str(home), "report", "--out", str(tmp_path / "empty.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0
    page = (tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "the feedback log is empty" in page and "<img" not in page
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert not any(home.iterdir())  # reading created nothing
    # a channel configured where nobody asked yet is listed; a configuration that cannot be read is a note
    ChannelConfig().with_channel("C0NEWTEAM1", ChannelSettings(mode="all")).save(home)
    CliRunner().invoke(cli, ["--home", str(home), "report", "--out", str(tmp_path / "e.html")], catch_exceptions=False)
    page = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert "<tr><td>C0NEWTEAM1</td><td>all; every collection</td><td class=\"n\">0</td>" in page
    (home / "channels.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["--home", str(home), "report", "--out", str(tmp_path / "e.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "The channel configuration is not shown: " in (tmp_path / "e.html").read_text(encoding="utf-8")
    # a feedback database with nothing in it yet says the same
    board = build_dashboard(FeedbackStore(Home.open(home)), embed=embedder.embed)
    assert board.empty and board.totals.questions == 0 and not board.topics and not board.runs
    assert "the feedback log is empty" in render_page(board)
    with pytest.raises(ValueError, match="days must be between"):
        build_dashboard(None, days=0)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_hostile_question_text_and_channel_names_are_shown_as_text(store_copy, embedder, tmp_path):
    home = Home.open(store_copy.path.parent)
    settings = load_settings(home=str(home.root))
    feedback = FeedbackStore(home)
    qa = QAService(Answerer(open_searcher(store_copy, embedder, home), settings), feedback)
    hostile = '<script>alert(1)</script><img src=x onerror=alert(2)> "quoted" & how do I reset my VPN?'
    for channel in ('C"><script>alert(3)</script>', "C0HELPDOCS", "$x_{$"):
        # a $ in a plot label is a dollar sign, not the start of matplotlib's math mode
        asked = qa.ask("How do I pay $x_{$ for the VPN?", source="slack", user_id="U2", channel_id=channel)
        qa.vote(asked.question_id, "U2", -1)
        asked = qa.ask(hostile, source="slack", user_id="U1", channel_id=channel)
        qa.vote(asked.question_id, "U1", -1)
    page = dashboard_page(feedback, embed=embedder.embed, store=store_copy)
    parser = _Tags()
    parser.feed(page)
    assert not [t for t, _ in parser.tags if t in ("script", "iframe", "object", "embed")]
    assert all(a.get("src", "").startswith("data:image/png;base64,") for t, a in parser.tags if t == "img")
    assert not any(k.startswith("on") for _, a in parser.tags for k in a)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &quot;quoted&quot; &amp;" in page
    assert "C&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "How do I pay $x_{$ for the VPN?" in page

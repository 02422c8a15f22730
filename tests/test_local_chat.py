"""The local chat in a real headless Chromium: ask, read the cited answer, vote, find the label."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.cli import cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make test installs it)")


@pytest.fixture
def server(store_copy, tmp_path):
    """`deepmem serve` in its own process, as a user runs it, with no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_"))}
    env |= {"DEEPMEM_HOME": str(store_copy.path.parent), "DEEPMEM_PORT": "0", "HF_HUB_OFFLINE": "1",
            "DEEPMEM_RETRAIN_CRON": "off"}  # no catch-up retraining competing with the browser for the CPU
    proc = subprocess.Popen([sys.executable, "-c", "from shared.cli import main; main()", "serve"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    url = None
    deadline = time.time() + 90
    while time.time() < deadline and url is None:
        line = proc.stderr.readline()
        if "local chat on" in line:
            url = line.strip().rsplit(" ", 1)[-1]
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read()}")
    assert url, "serve did not start"
    yield url
    proc.terminate()
    proc.wait(30)


def test_ask_see_cited_answer_vote_and_find_the_label(server, store_copy):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(server)
        page.fill("#question", "How do I create an AUTOINCREMENT column?")
        page.click("#send")
        page.wait_for_selector(".msg.bot .sources a", timeout=60_000)
        answer = page.inner_text(".msg.bot .text")
        assert "[1]" in answer or "[2]" in answer
        links = page.eval_on_selector_all(".msg.bot .sources a", "els => els.map(e => [e.href, e.title])")
        assert any(title.startswith("https://sqlite.org/autoinc.html#") for _, title in links)
        # a source link goes through /go/, which records the click and redirects to the exact section
        href, title = next((h, t) for h, t in links if "autoinc.html#" in t)
        request = urllib.request.Request(href)
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(request)
        assert redirect.value.code == 302 and redirect.value.headers["Location"] == title
        page.click(".msg.bot .votes button[aria-label=helpful]")
        page.wait_for_selector(".msg.bot .votes button.chosen")
        # untrusted text is shown as text: a question with markup does not become markup
        page.fill("#question", "<img src=x onerror=alert(1)> what is WAL?")
        page.click("#send")
        page.locator(".msg.bot").nth(1).wait_for(timeout=60_000)
        assert page.locator(".msg.user img").count() == 0
        # 👎 on it: the sections the answer did not show are offered; the user opens one of them
        second = page.locator(".msg.bot").nth(1)
        shown = second.locator(".sources:not(.others) a").evaluate_all("els => els.map(e => e.href)")
        second.locator(".votes button[aria-label='not helpful']").click()
        second.locator(".others a").first.wait_for(timeout=10_000)
        assert "one of these sections" in second.locator(".others").inner_text()
        offered = second.locator(".others a").evaluate_all("els => els.map(e => [e.href, e.title])")
        # every retrieved section not shown under the answer: together they are the 13 retrieved, once each
        numbers = [int(h.rsplit("/", 1)[-1]) for h in shown] + [int(h.rsplit("/", 1)[-1]) for h, _ in offered]
        assert sorted(numbers) == list(range(1, 14))
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(urllib.request.Request(offered[-1][0]))
        assert redirect.value.headers["Location"] == offered[-1][1]
        browser.close()
    time.sleep(1.5)  # the server drains its spool every second
    result = CliRunner().invoke(cli, ["feedback", "export", "--json"], catch_exceptions=False)
    labels = json.loads(result.output)
    votes = [l for l in labels if l["kind"] == "vote"]
    assert votes and all(l["user_id"].startswith("local:") for l in votes)
    by_question = {(l["question"], l["label"]) for l in votes}
    assert by_question == {("How do I create an AUTOINCREMENT column?", 1), ("<img src=x onerror=alert(1)> what is WAL?", -1)}
    events = json.loads(CliRunner().invoke(cli, ["feedback", "export", "--what", "events", "--json"]).output)
    clicks = [e for e in events if e["kind"] == "source_click"]
    assert len(clicks) == 2 and clicks[-1]["rank"] > 3  # the second was found among the sections offered after 👎


def test_the_chat_refuses_foreign_origins_and_missing_tokens(server):
    req = urllib.request.Request(server, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 403
    post = urllib.request.Request(server + "api/ask", data=b'{"question": "x"}', method="POST",
                                  headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post)
    assert err.value.code == 403


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


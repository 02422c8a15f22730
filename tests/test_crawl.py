"""Crawling a documentation site served on 127.0.0.1."""

from __future__ import annotations

import shutil
import time

import pytest

from shared.ingest import ingest
from shared.settings import load_settings
from shared.sources.crawl import Crawler, normalize_url
from shared.store import Store

from .helpers.site import Site


@pytest.fixture
def site(tmp_path, small_docs):
    root = tmp_path / "site"
    shutil.copytree(small_docs, root)
    index_links = "".join(f'<li><a href="{p.relative_to(root).as_posix()}">{p.stem}</a></li>'
                          for p in sorted(root.rglob("*.html")))
    faults = ['loop-a.html', 'moved.html', 'away.html', 'broken.html', 'slow.html', 'flaky.html', 'missing.html',
              'logo.png', 'data.bin', 'autoinc.html#summary', 'autoinc.html/', './autoinc.html?utm_source=x',
              '../outside.html', 'http://127.0.0.2:9/docs/other-host.html', 'mailto:someone@example.com']
    fault_links = "".join(f'<a href="{f}">{f}</a> ' for f in faults)
    (root / "index.html").write_text(f"<html><head><title>Docs home</title></head><body><h1>Docs</h1>"
                                     f"<ul>{index_links}</ul><p>{fault_links}</p></body></html>")
    (root / "page1.html").write_text("<html><head><title>Page one</title></head><body><h1>One</h1>"
                                     "<p>Reached through a permanent redirect.</p></body></html>")
    (root / "logo.png").write_bytes(b"\x89PNG")
    (root / "data.bin").write_bytes(b"\x00\x01")
    server = Site(root).start()
    server.slow_seconds = 3.0
    yield server
    server.stop()


def test_normalize_url_deduplicates():
    assert normalize_url("HTTP://Docs.Example.com:80/a/b/#frag") == "http://docs.example.com/a/b"
    assert normalize_url("https://d.example/a?utm_source=x&b=2&a=1") == "https://d.example/a?a=1&b=2"
    assert normalize_url("https://d.example") == "https://d.example/"


def test_crawl_ingests_the_site_and_reports_failures(site, tmp_path, embedder):
    settings = load_settings(crawl_timeout=1.0, crawl_concurrency=4)
    with Store.open(tmp_path / "store.db") as store:
        report = ingest(store, embedder, settings, site.url, progress=False)
        urls = {r[0] for r in store.conn.execute("SELECT url FROM pages")}
        chunk_url = store.conn.execute("SELECT url FROM chunks WHERE text LIKE "
                                       "'Except for WITHOUT ROWID tables, all rows within SQLite tables%'").fetchone()[0]
    base = site.url
    assert f"{base}autoinc.html" in urls and f"{base}c3ref/busy_timeout.html" in urls
    assert f"{base}page1.html" in urls  # through the redirect, stored under its final URL
    assert f"{base}flaky.html" in urls  # a 503 retried with backoff, then fetched
    assert len(urls) == 22 + 3  # the docs, index, page1, flaky: nothing twice, nothing out of scope
    assert chunk_url == f"{base}lang_createtable.html#rowids_and_the_integer_primary_key"
    reasons = {f["url"].rsplit("/", 1)[-1]: f["reason"] for f in report.failures}
    assert "redirect loop" in reasons["loop-a.html"]
    assert "outside the crawl scope" in reasons["away.html"]
    assert "HTTP 500" in reasons["broken.html"]
    assert "timed out" in reasons["slow.html"]
    assert "HTTP 404" in reasons["missing.html"]
    # skipped without a request: images, fragments and duplicates; never out of scope
    assert "/docs/logo.png" not in site.requests
    assert site.requests["/docs/autoinc.html"] == 1
    assert "/outside.html" not in site.requests
    assert site.requests["/docs/broken.html"] == 3  # retried, then reported
    assert not report.complete  # timeouts and 5xx: pages not seen are kept, not deleted


def test_robots_txt_is_obeyed(site):
    from shared.sources.base import Failure

    site.slow_seconds = 0.0
    # RFC 9309: our group, not *; the longest matching rule wins; wildcards and $
    site.robots = ("User-agent: *\nDisallow: /\n\n"
                   "User-agent: deepmem-crawler\nDisallow: /docs/c3ref/\nAllow: /docs/c3ref/busy_timeout.html\n"
                   "Disallow: /docs/auto*.html$\nDisallow: /docs/page1.html\n")
    crawler = Crawler(site.url, timeout=2.0, retries=1)
    results = list(crawler)
    fetched = {r.url for r in results if not isinstance(r, Failure)}
    refused = {r.url: r.reason for r in results if isinstance(r, Failure)}
    assert site.requests["/robots.txt"] == 1
    assert refused[f"{site.url}autoinc.html"] == "disallowed by robots.txt"
    assert f"{site.url}c3ref/busy_timeout.html" in fetched  # the longer Allow beats the shorter Disallow
    assert not [u for u in fetched if "/c3ref/" in u and not u.endswith("busy_timeout.html")]
    assert "/docs/autoinc.html" not in site.requests and "/docs/page1.html" not in site.requests
    # a redirect to a disallowed page is not followed
    assert "robots.txt disallows" in refused[f"{site.url}moved.html"]
    assert f"{site.url}lang_createtable.html" in fetched  # the rest is allowed
    # ignoring robots.txt, on request
    ignoring = {r.url for r in Crawler(site.url, timeout=2.0, retries=1, robots=False)
                if not isinstance(r, Failure)}
    assert f"{site.url}autoinc.html" in ignoring


def test_robots_crawl_delay_and_unavailable_robots(site):
    from shared.sources.base import Failure

    site.robots = ("User-agent: deepmem-crawler\nAllow: /docs/index.html\nAllow: /docs/autoinc.html\n"
                   "Allow: /docs/lang_createtable.html\nDisallow: /docs/\nCrawl-delay: 0.3\n")
    crawler = Crawler(f"{site.url}index.html", timeout=2.0, retries=1, concurrency=4)
    pages = sorted(r.url for r in crawler if not isinstance(r, Failure))
    assert crawler.crawl_delay == 0.3
    assert pages == [f"{site.url}{p}" for p in ("autoinc.html", "index.html", "lang_createtable.html")]
    times = [t for t, path in site.file_times if path.startswith("/docs/")]
    assert len(times) == 3 and all(b - a >= 0.29 for a, b in zip(times, times[1:]))  # one at a time, spaced
    # a robots.txt that fails (server error, rate limit): nothing is crawled now, and it is said why
    for status in (503, 429):
        site.robots_status = status
        crawler = Crawler(site.url, timeout=2.0, retries=1)
        results = list(crawler)
        assert len(results) == 1 and f"robots.txt answered HTTP {status}" in results[0].reason
        assert results[0].keep and not crawler.complete


def test_recrawl_is_incremental_and_removes_pages_that_are_gone(site, tmp_path, embedder):
    settings = load_settings(crawl_timeout=5.0)
    site.slow_seconds = 0.0
    root = site.root
    index = root / "index.html"
    html = index.read_text()
    # a clean site: no faults that make the crawl incomplete
    index.write_text(html.replace('<a href="broken.html">broken.html</a>', ""))
    with Store.open(tmp_path / "store.db") as store:
        first = ingest(store, embedder, settings, site.url, progress=False)
        assert first.complete and first.pages_new >= 24
        second = ingest(store, embedder, settings, site.url, progress=False)
        assert second.chunks_embedded == 0 and second.pages_unchanged == first.pages_new
        (root / "wal.html").unlink()
        third = ingest(store, embedder, settings, site.url, progress=False)
        assert third.pages_removed == 1
        assert not store.conn.execute("SELECT 1 FROM pages WHERE url LIKE '%/wal.html'").fetchone()


def test_unreachable_host_is_reported_not_raised(tmp_path, embedder):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    crawler = Crawler(f"http://127.0.0.1:{port}/docs/", timeout=1.0, retries=2, backoff=0.01)
    results = list(crawler)
    assert len(results) == 1 and "cannot connect" in results[0].reason
    assert not crawler.complete


def test_page_limit_stops_the_crawl_and_keeps_old_pages(site):
    crawler = Crawler(site.url, max_pages=5, timeout=1.0)
    pages = [r for r in crawler if hasattr(r, "content")]
    assert len(pages) <= 5 and crawler.stats.hit_page_limit and not crawler.complete


def test_cli_refuses_bad_urls():
    from click.testing import CliRunner

    from shared.cli import cli

    result = CliRunner().invoke(cli, ["ingest", "ftp://example.com/docs/"])
    assert result.exit_code == 1 and "only http:// and https://" in result.output
    for url in ("https://example.com/my docs/", "https://example.com/docs/\n<!channel>"):  # stored, then sent to Slack
        result = CliRunner().invoke(cli, ["ingest", url])
        assert result.exit_code == 1 and "spaces or control characters" in result.output


# -- one bad page or link does not spoil the crawl ------------------------------------------------

@pytest.fixture
def odd_site(tmp_path, small_docs):
    """Real pages, plus a page nested 100,000 deep, a page with an unparsable link, and odd links."""
    root = tmp_path / "odd-site"
    root.mkdir()
    for name in ("autoinc.html", "lang_vacuum.html", "wal.html"):
        shutil.copy(small_docs / name, root / name)
    (root / "deep.html").write_text("<html><body>" + "<div>" * 100_000 + '<a href="only-from-deep.html">x</a>'
                                    + "</div>" * 100_000 + "</body></html>")
    shutil.copy(small_docs / "wal.html", root / "only-from-deep.html")
    bad_link = ((small_docs / "autoinc.html").read_text()
                + '<p><a href="http://[oops/x.html">broken</a> <a href="lang_vacuum.html">vacuum</a></p>')
    (root / "badlink.html").write_text(bad_link)
    odd = ['with space.html', 'bad&#1;name.html', 'tab&#9;in.html', "long-" + "x" * 5000 + ".html"]
    links = "".join(f'<a href="{h}">{i}</a> ' for i, h in enumerate(["deep.html", "badlink.html"] + odd))
    (root / "index.html").write_text(f"<html><body><h1>Index</h1><p>{links}</p></body></html>")
    server = Site(root).start()
    yield server
    server.stop()


def test_a_bad_link_does_not_fail_the_page_that_holds_it(odd_site):
    """urljoin raised on "http://[oops" and the whole page was reported as a bad response."""
    from shared.sources.base import Failure

    results = list(Crawler(odd_site.url, timeout=5.0, retries=1))
    fetched = {r.url for r in results if not isinstance(r, Failure)}
    assert f"{odd_site.url}badlink.html" in fetched
    assert f"{odd_site.url}lang_vacuum.html" in fetched  # its good link was followed


def test_a_deeply_nested_page_does_not_stall_the_crawl(odd_site):
    """Reading links parsed a 100,000-deep page on the crawl's event loop (minutes, quadratic)."""
    from shared.sources.base import Failure

    started = time.perf_counter()
    results = list(Crawler(odd_site.url, timeout=5.0, retries=1))
    assert time.perf_counter() - started < 15
    fetched = {r.url for r in results if not isinstance(r, Failure)}
    assert f"{odd_site.url}deep.html" in fetched  # fetched (the parser will refuse it, and say so)
    assert f"{odd_site.url}only-from-deep.html" not in fetched  # its links were not read


def test_links_are_percent_encoded_and_long_ones_skipped(odd_site):
    from shared.sources.base import Failure

    crawler = Crawler(odd_site.url, timeout=5.0, retries=1)
    results = list(crawler)
    failed = {r.url for r in results if isinstance(r, Failure)}
    assert {f"{odd_site.url}with%20space.html", f"{odd_site.url}bad%01name.html"} <= failed  # 404, reported
    for result in results:
        assert all(32 < ord(c) < 127 for c in result.url), result.url
    assert not [path for path in odd_site.requests if len(path) > 2048]  # never requested
    assert crawler.stats.queued == len(odd_site.requests) - 1  # every URL remembered was fetched (robots.txt aside)


def test_urls_beyond_the_page_limit_are_not_remembered(site):
    crawler = Crawler(site.url, max_pages=5, timeout=2.0)
    list(crawler)
    assert crawler.stats.hit_page_limit and crawler.stats.queued == 5

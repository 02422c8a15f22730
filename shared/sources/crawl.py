"""Crawling a documentation site with aiohttp.

Scope: the start URL's scheme and host, under its path prefix (the start URL's directory).
Bounded concurrency, a timeout per request, a page limit and a size limit. URLs are
de-duplicated after normalisation (fragment dropped, trailing slash, default port, tracking
parameters). Non-HTML links are skipped by extension before any request, and by content type
after. Transient failures (timeouts, connection errors, 5xx, 429) are retried with
exponential backoff (tenacity) and then reported; the crawl goes on. robots.txt is obeyed
(RFC 9309, parsed by protego): disallowed pages and redirects are skipped and reported, a
Crawl-delay makes requests go one at a time that far apart (capped at 30 s);
DEEPMEM_CRAWL_ROBOTS=false ignores it.

Links are read with the same bound as parsing (a page nested too deeply is not parsed for
links: a tree that deep takes minutes, and this runs on the crawl's event loop); a link that
does not parse as a URL is dropped, not the page holding it; links are percent-encoded
(no spaces or control characters reach a request, a report or a stored URL) and over
MAX_URL_CHARS skipped; only URLs that will be fetched are remembered (at most max_pages).

The crawl runs on its own event loop in a background thread and hands pages over through a
bounded queue, so parsing and embedding overlap with fetching.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import re
import threading
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
import yarl
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import SourceError
from ..parsers import ParseError, kind_for_content_type, kind_for_path
from ..parsers.html import check_nesting
from .base import Failure, RawPage, SourceResult

__all__ = ["Crawler", "normalize_url", "in_scope"]

SKIP_EXTENSIONS = re.compile(
    r"\.(png|jpe?g|gif|svg|webp|ico|bmp|tiff?|pdf|zip|gz|tgz|xz|bz2|7z|rar|tar|exe|dmg|msi|deb|rpm|whl|jar|"
    r"mp[34]|m4a|wav|ogg|webm|avi|mov|woff2?|ttf|otf|eot|css|js|mjs|map|json|xml|rss|atom|csv|xlsx?|docx?|pptx?|"
    r"odg|odt|wasm|bin|db|sqlite|pikchr)$", re.I)
TRACKING = re.compile(r"^(utm_.*|highlight|ref|fbclid|gclid|_ga)$", re.I)
USER_AGENT = "deepmem-crawler/0.1 (+https://github.com/deepmem)"
ROBOTS_AGENT = "deepmem-crawler"  # the product token robots.txt groups are matched against
MAX_CRAWL_DELAY = 30.0  # seconds: a larger Crawl-delay is honoured at this
NOT_PAGES = ("#", "javascript:", "mailto:", "tel:", "data:")  # links that are not pages to crawl
MAX_URL_CHARS = 2048  # longer links are skipped (browsers and servers draw the line about here)


def normalize_url(url: str) -> str:
    """A canonical key for de-duplication: no fragment, lower-case host, no default port,
    no tracking parameters, no trailing slash (except the root)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", parts.path or "/")
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                             if not TRACKING.match(k)))
    return urlunsplit((scheme, netloc, path, query, ""))


def scope_of(start_url: str) -> tuple[str, str, str]:
    parts = urlsplit(start_url)
    path = parts.path or "/"
    prefix = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
    return parts.scheme.lower(), (parts.netloc or "").lower(), prefix


def in_scope(url: str, scope: tuple[str, str, str]) -> bool:
    parts = urlsplit(url)
    scheme, netloc, prefix = scope
    path = parts.path or "/"
    return (parts.scheme.lower() == scheme and (parts.netloc or "").lower() == netloc
            and (path.startswith(prefix) or path + "/" == prefix))


def _absolute(base: str, href: str) -> str | None:
    """``href`` resolved against ``base``, without its fragment, percent-encoded as a request
    sends it; None when it is not a URL ("http://[oops", a port out of range)."""
    try:
        url = yarl.URL(urljoin(base, href).split("#", 1)[0])
        url.port  # noqa: B018  (raises on a port out of range)
        return str(url)
    except (ValueError, TypeError, UnicodeError):
        return None


class _Transient(Exception):
    """A failure worth retrying (timeout, connection error, 5xx, 429)."""


class _Gone(Exception):
    """The server says the page does not exist (404, 410)."""


@dataclass
class CrawlStats:
    fetched: int = 0
    skipped: int = 0
    failed: int = 0
    queued: int = 0  # URLs remembered to fetch (bounded by max_pages)
    transient_failures: int = 0
    hit_page_limit: bool = False


class Crawler:
    def __init__(self, start_url: str, *, concurrency: int = 8, timeout: float = 20.0, max_pages: int = 5000,
                 max_bytes: int = 5_000_000, retries: int = 3, backoff: float = 0.5, robots: bool = True):
        parts = urlsplit(start_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SourceError(f"not a crawlable URL: {start_url!r} (expected http:// or https://)")
        self.start_url = start_url
        self.scope = scope_of(start_url)
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.retries = retries
        self.backoff = backoff
        self.robots = robots
        self._rules = None  # the site's robots.txt (a protego parser), once read
        self.crawl_delay = 0.0
        self.stats = CrawlStats()
        self._stop = threading.Event()
        self._emitted: set[str] = set()
        self._bodies: set[bytes] = set()  # digests: /docs/ and /docs/index.html are one page

    @property
    def complete(self) -> bool:
        """True when every page in scope was reached: only then may pages not seen be deleted."""
        return self.stats.transient_failures == 0 and not self.stats.hit_page_limit and self.stats.fetched > 0

    def __iter__(self) -> Iterator[SourceResult]:
        out: queue.Queue = queue.Queue(maxsize=64)
        done = object()

        def run() -> None:
            try:
                asyncio.run(self._crawl(out))
            except BaseException as exc:  # surface unexpected crawler errors to the consumer
                out.put(Failure(self.start_url, f"crawler stopped: {exc!r}", keep=True))
            finally:
                out.put(done)

        thread = threading.Thread(target=run, name="deepmem-crawl", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is done:
                    break
                yield item
        finally:
            self._stop.set()
            # drain so a crawler blocked on a full queue can see the stop flag and exit
            while thread.is_alive():
                try:
                    out.get(timeout=0.1)
                except queue.Empty:
                    pass

    async def _crawl(self, out: queue.Queue) -> None:
        seen: set[str] = set()
        todo: asyncio.Queue = asyncio.Queue()
        seen.add(normalize_url(self.start_url))
        todo.put_nowait(self.start_url)
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(self.timeout, 10))
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        headers = {"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,text/markdown,text/plain;q=0.8"}
        scheduled = 1

        async def emit(item) -> None:
            while not self._stop.is_set():
                try:
                    out.put_nowait(item)
                    return
                except queue.Full:
                    await asyncio.sleep(0.05)

        async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers) as session:
            if self.robots:
                refusal = await self._read_robots(session)
                if refusal is not None:
                    await emit(refusal)
                    return
            pause = asyncio.Lock()  # with a Crawl-delay, requests go one at a time, that far apart

            async def worker() -> None:
                nonlocal scheduled
                while not self._stop.is_set():
                    url = await todo.get()
                    try:
                        if not self._allowed(url):
                            self.stats.skipped += 1
                            await emit(Failure(url, "disallowed by robots.txt", keep=False))
                            continue
                        if self.crawl_delay:
                            async with pause:
                                result, links = await self._fetch(session, url)
                                await asyncio.sleep(self.crawl_delay)
                        else:
                            result, links = await self._fetch(session, url)
                        if result is not None:
                            await emit(result)
                        for link in links:
                            key = normalize_url(link)
                            if key in seen:
                                continue
                            if scheduled >= self.max_pages:  # not remembered: memory stays bounded
                                self.stats.hit_page_limit = True
                                continue
                            seen.add(key)
                            scheduled += 1
                            self.stats.queued = scheduled
                            todo.put_nowait(link)
                    finally:
                        todo.task_done()

            self.stats.queued = 1
            workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
            joiner = asyncio.create_task(todo.join())
            while not joiner.done():
                if self._stop.is_set():
                    break
                await asyncio.wait({joiner}, timeout=0.1)
            for w in workers:
                w.cancel()
            joiner.cancel()
            await asyncio.gather(*workers, joiner, return_exceptions=True)

    async def _read_robots(self, session: aiohttp.ClientSession) -> Failure | None:
        """Read the site's robots.txt (RFC 9309, parsed by protego: longest match, wildcards).
        Missing (4xx) allows everything. A server error, a 429 or an unreachable robots.txt
        disallows everything for now: a Failure to report, keeping the pages already stored."""
        from protego import Protego

        parts = urlsplit(self.start_url)
        url = f"{parts.scheme}://{parts.netloc}/robots.txt"
        hint = "the site is not crawled now (DEEPMEM_CRAWL_ROBOTS=false ignores robots.txt)"
        try:
            async with session.get(url, allow_redirects=True) as response:
                if response.status == 429 or response.status >= 500:
                    self.stats.transient_failures += 1
                    return Failure(url, f"robots.txt answered HTTP {response.status}: {hint}", keep=True)
                if response.status >= 400:
                    return None
                text = (await response.content.read(500_000)).decode("utf-8", errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.stats.transient_failures += 1
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"cannot connect ({exc.__class__.__name__})"
            return Failure(url, f"robots.txt {reason}: {hint}", keep=True)
        self._rules = Protego.parse(text)
        delay = self._rules.crawl_delay(ROBOTS_AGENT)
        self.crawl_delay = min(float(delay), MAX_CRAWL_DELAY) if delay else 0.0
        return None

    def _allowed(self, url: str) -> bool:
        return self._rules is None or self._rules.can_fetch(url, ROBOTS_AGENT)

    def _links(self, base: str, html: str) -> list[str]:
        from selectolax.lexbor import LexborHTMLParser

        try:
            check_nesting(html)
        except ParseError:
            return []  # the parser refuses the page too, and says so
        tree = LexborHTMLParser(html)
        base_tag = tree.css_first("base[href]")
        if base_tag is not None:
            base = _absolute(base, base_tag.attributes.get("href") or "") or base
        out = []
        for a in tree.css("a[href]"):
            href = (a.attributes.get("href") or "").strip()
            if not href or len(href) > MAX_URL_CHARS or href.startswith(NOT_PAGES):
                continue
            absolute = _absolute(base, href)
            if absolute is None or len(absolute) > MAX_URL_CHARS:
                continue
            if SKIP_EXTENSIONS.search(urlsplit(absolute).path):
                continue
            if in_scope(absolute, self.scope):
                out.append(absolute)
        return out

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> tuple[SourceResult | None, list[str]]:
        def transient(exc: BaseException) -> bool:
            return isinstance(exc, _Transient)

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.retries),
                                               wait=wait_exponential(multiplier=self.backoff, max=8),
                                               retry=retry_if_exception(transient), reraise=True):
                with attempt:
                    return await self._fetch_once(session, url)
        except _Transient as exc:
            self.stats.failed += 1
            self.stats.transient_failures += 1
            return Failure(url, f"{exc} (after {self.retries} attempts)", keep=True), []
        except _Gone as exc:
            self.stats.failed += 1
            return Failure(url, str(exc), keep=False), []
        except aiohttp.TooManyRedirects:
            self.stats.failed += 1
            return Failure(url, "redirect loop (too many redirects)", keep=False), []
        except aiohttp.InvalidURL as exc:
            self.stats.failed += 1
            return Failure(url, f"invalid URL: {exc}", keep=False), []
        except (aiohttp.ClientResponseError, ValueError) as exc:
            self.stats.failed += 1
            return Failure(url, f"bad response: {exc}", keep=True), []
        return None, []

    async def _fetch_once(self, session: aiohttp.ClientSession, url: str):
        try:
            target, hops, visited = url, 0, {normalize_url(url)}
            while True:  # follow redirects by hand: every hop must stay in scope
                response = await session.get(target, allow_redirects=False)
                if response.status not in (301, 302, 303, 307, 308) or "Location" not in response.headers:
                    break
                response.release()
                target = urljoin(target, response.headers["Location"])
                hops += 1
                if not in_scope(target, self.scope):
                    self.stats.skipped += 1
                    return Failure(url, f"redirected outside the crawl scope to {target}", keep=False), []
                if not self._allowed(target):
                    self.stats.skipped += 1
                    return Failure(url, f"redirected to {target}, which robots.txt disallows", keep=False), []
                if normalize_url(target) in visited or hops > 10:
                    raise aiohttp.TooManyRedirects(response.request_info, response.history)
                visited.add(normalize_url(target))
            async with response:
                final = str(response.url)
                if response.status in (404, 410):
                    raise _Gone(f"HTTP {response.status}")
                if response.status == 429 or response.status >= 500:
                    raise _Transient(f"HTTP {response.status}")
                if response.status >= 400:
                    return Failure(url, f"HTTP {response.status}", keep=False), []
                kind = kind_for_content_type(response.headers.get("Content-Type", "text/html"))
                if kind == "text":  # a .md or .rst served as text/plain
                    kind = kind_for_path(urlsplit(final).path) or "text"
                if kind is None:
                    self.stats.skipped += 1
                    return None, []
                length = response.content_length
                if length is not None and length > self.max_bytes:
                    return Failure(final, f"too large: {length:,} bytes (limit {self.max_bytes:,})"), []
                parts, size = [], 0
                async for piece in response.content.iter_chunked(65536):
                    parts.append(piece)
                    size += len(piece)
                    if size > self.max_bytes:
                        break
                body = b"".join(parts)
                if len(body) > self.max_bytes:
                    return Failure(final, f"too large: over {self.max_bytes:,} bytes"), []
                charset = response.charset
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _Transient(f"timed out after {self.timeout:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Transient(f"cannot connect: {exc.os_error.strerror if exc.os_error else exc}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raise _Transient(f"connection failed: {exc.__class__.__name__}") from exc
        page_url = final.split("#", 1)[0]
        key = normalize_url(page_url)
        if key in self._emitted:  # two links that redirect to one page
            return None, []
        self._emitted.add(key)
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest in self._bodies:
            self.stats.skipped += 1
            return None, []
        self._bodies.add(digest)
        self.stats.fetched += 1
        links: list[str] = []
        if kind == "html":
            try:
                links = self._links(page_url, body.decode(charset or "utf-8", errors="replace"))
            except LookupError:
                links = self._links(page_url, body.decode("utf-8", errors="replace"))
        return RawPage(url=page_url, content=body, content_type=kind, charset=charset,
                       path=urlsplit(page_url).path), links

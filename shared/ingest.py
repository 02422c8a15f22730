"""Ingest: source -> parse -> chunk -> embed -> store, incrementally.

- A page whose bytes (and chunking settings) are unchanged is skipped without parsing.
- A changed page keeps the chunks whose id is unchanged (same text, same place) and their
  vectors; other chunks reuse any stored vector of identical embedded text; only the rest
  are embedded.
- Pages are written in batches, each batch in one transaction: an interrupted ingest leaves
  every page wholly old or wholly new, and running it again finishes the job.
- Pages gone from the source are removed at the end, and only when the source was read
  completely (a crawl with timeouts or a page limit, a truncated archive, a folder that
  cannot be listed remove nothing they did not see fail).
- A page that cannot be read or parsed is reported and skipped, the rest is ingested. Pages
  are parsed in a child process, each within ``parse_seconds`` (parsers.worker).
- A new source is registered in the transaction that writes its first pages: a source that
  cannot be read at all (missing, unreadable, over the archive limits) leaves no trace.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from tqdm import tqdm

from .chunking import Chunk, chunk_page
from .collections import check_name
from .embedders import Embedder
from .errors import SourceError
from .parsers import ParseError
from .parsers.worker import PARSE_SECONDS, ParserProcess
from .settings import Settings
from .sources import Failure, one_line, open_source, source_uri
from .store import Store
from .thread_documents import THREAD_KIND

__all__ = ["IngestReport", "ingest", "reingestable_sources", "PARSER_VERSION"]

PARSER_VERSION = "5"  # bump when parsing or chunking changes what a page becomes
EMBED_BATCH = 256  # chunks per embedding call and per write transaction
LINK_SAFE = "/!$&'()*+,;=:@-._~?#%"  # a link target keeps its URL syntax and escapes; spaces, controls are encoded


@dataclass
class IngestReport:
    source: str
    kind: str
    pages_seen: int = 0
    pages_new: int = 0
    pages_changed: int = 0
    pages_unchanged: int = 0
    pages_removed: int = 0
    pages_failed: int = 0
    chunks_written: int = 0
    chunks_kept: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    complete: bool = True
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pages_stored(self) -> int:
        """Pages of this source that are now in the store as read this time."""
        return self.pages_new + self.pages_changed + self.pages_unchanged

    def fail(self, url: str, reason: str) -> None:
        self.pages_failed += 1
        self.failures.append({"url": one_line(url, 500), "reason": one_line(reason)})


@dataclass
class _Pending:
    url: str
    path: str | None
    title: str
    content_hash: str
    size: int
    chunks: list[Chunk]
    links: list[tuple[str, str, str]]
    is_new: bool


def _embed_hash(embedder: Embedder, chunk: Chunk) -> str:
    return hashlib.sha256(f"{embedder.name}\x1f{chunk.embed_text}".encode()).hexdigest()


def _resolve_links(page_url: str, links) -> list[tuple[str, str, str]]:
    """(absolute target, link text, sentence around it) for links in the page's content."""
    out = []
    for link in links:
        if not link.text:
            continue
        try:
            target = urljoin(page_url, link.href) if "://" in page_url else _join_relative(page_url, link.href)
            scheme = urlsplit(target).scheme
        except ValueError:  # "http://[broken": a link nobody can follow
            continue
        if scheme in ("", "http", "https"):
            out.append((quote(target, safe=LINK_SAFE), link.text, link.context))
    return out


def _join_relative(page_path: str, href: str) -> str:
    """Resolve a link in a folder source whose page URLs are relative paths."""
    if "://" in href:
        return href
    joined = urljoin("http://x/" + page_path, href)
    return joined[len("http://x/"):]


class _Writer:
    """Embeds and writes pages in batches; registers a new source with its first batch."""

    def __init__(self, store: Store, embedder: Embedder, source_id: int | None, register, report: IngestReport, bar):
        self.store, self.embedder, self.source_id, self.report, self.bar = store, embedder, source_id, report, bar
        self.register = register  # () -> source id, called inside the first write transaction
        self.pending: list[_Pending] = []
        self.pending_chunks = 0

    def add(self, page: _Pending) -> None:
        self.pending.append(page)
        self.pending_chunks += len(page.chunks)
        if self.pending_chunks >= EMBED_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        store, embedder = self.store, self.embedder
        plans = []
        need: dict[str, str] = {}  # embed hash -> text, for chunks with no stored vector
        hashes_all = []
        for page in self.pending:
            page_id = store.page_id(page.url)
            existing = store.chunk_ids(page_id) if page_id is not None else {}
            hashes = [_embed_hash(embedder, c) for c in page.chunks]
            hashes_all.extend(h for c, h in zip(page.chunks, hashes) if c.id not in existing)
            plans.append((page, existing, hashes))
        stored = store.vectors_for_embed_hashes(hashes_all)
        for page, existing, hashes in plans:
            for chunk, h in zip(page.chunks, hashes):
                if chunk.id not in existing and h not in stored:
                    need[h] = chunk.embed_text
        vectors = dict(stored)
        if need:
            started = time.perf_counter()
            matrix = embedder.embed(list(need.values()))
            self.report.embed_seconds += time.perf_counter() - started
            for h, row in zip(need, matrix):
                vectors[h] = row.astype("float32").tobytes()
            self.report.chunks_embedded += len(need)
            self.bar.update(len(need))
        with store.transaction():
            if self.source_id is None:
                self.source_id = self.register()
            for page, existing, hashes in plans:
                blobs = [vectors.get(h, b"") for h in hashes]
                store.write_page(source_id=self.source_id, url=page.url, path=page.path, title=page.title,
                                 content_hash=page.content_hash, size=page.size, chunks=page.chunks,
                                 embed_hashes=hashes, vectors=blobs, links=page.links)
                kept = sum(1 for c in page.chunks if c.id in existing)
                self.report.chunks_kept += kept
                self.report.chunks_written += len(page.chunks) - kept
                self.report.chunks_reused += sum(1 for c, h in zip(page.chunks, hashes)
                                                 if c.id not in existing and h in stored)
                if page.is_new:
                    self.report.pages_new += 1
                else:
                    self.report.pages_changed += 1
        self.pending, self.pending_chunks = [], 0


def ingest(store: Store, embedder: Embedder, settings: Settings, target: str, *, base_url: str | None = None,
           progress: bool = True, parse_seconds: float = PARSE_SECONDS, collection: str | None = None) -> IngestReport:
    """Ingest one source (a URL to crawl, or a folder / archive) into the store. Raises
    SourceError, and changes nothing, when the source cannot be read at all.

    ``collection``: the collection the source belongs to; None keeps a known source's collection
    and puts a new one in ``default``."""
    if collection is not None:
        check_name(collection)
    uri, kind = source_uri(target)
    if kind == "site" and base_url:
        raise SourceError("--base-url applies to folders and archives; a crawled site links to its own URLs")
    source_impl = open_source(uri, kind, settings, base_url)
    try:
        return _ingest(store, embedder, settings, source_impl, uri, kind, base_url, progress, parse_seconds,
                       collection)
    finally:
        close = getattr(source_impl, "close", None)
        if close is not None:
            close()


def _ingest(store: Store, embedder: Embedder, settings: Settings, source_impl, uri: str, kind: str,
            base_url: str | None, progress: bool, parse_seconds: float, collection: str | None) -> IngestReport:
    store.bind_embedder(embedder.name, embedder.dim or _probe_dim(embedder))
    source = store.source(uri)
    if source is not None:
        source = store.upsert_source(uri, kind, base_url, collection=collection)
    report = IngestReport(source=uri, kind=kind)
    started = time.perf_counter()
    states = store.page_states(source.id) if source is not None else {}
    seen: set[str] = set()
    settings_key = f"{PARSER_VERSION}\x1f{settings.chunk_tokens}\x1f{embedder.name}\x1f".encode()

    pages_bar = tqdm(desc="pages", unit="page", disable=not progress, leave=False)
    chunks_bar = tqdm(desc="embedding", unit="chunk", disable=not progress, leave=False)
    writer = _Writer(store, embedder, source.id if source is not None else None,
                     lambda: store.add_source(uri, kind, base_url, collection=collection), report, chunks_bar)
    parser = ParserProcess(time_limit=parse_seconds)
    try:
        for item in source_impl:
            pages_bar.update(1)
            if isinstance(item, Failure):
                report.fail(item.url, item.reason)
                if item.keep:
                    seen.add(item.url)
                continue
            report.pages_seen += 1
            if item.url in seen:
                continue
            seen.add(item.url)
            owner = store.page_owner(item.url)
            if owner is not None and owner != writer.source_id:
                report.fail(item.url, "already ingested from another source")
                continue
            content_hash = hashlib.sha256(settings_key + item.content).hexdigest()
            state = states.get(item.url)
            if state is not None and state.content_hash == content_hash:
                report.pages_unchanged += 1
                continue
            try:
                parsed = parser.parse(item)
            except ParseError as exc:
                report.fail(item.url, str(exc))
                seen.discard(item.url)  # what is stored for it is stale: removed below
                continue
            chunks = chunk_page(parsed, item.url, settings.chunk_tokens, fits=embedder.fits)
            writer.add(_Pending(url=item.url, path=item.path, title=parsed.title, content_hash=content_hash,
                                size=len(item.content), chunks=chunks, links=_resolve_links(item.url, parsed.links),
                                is_new=state is None))
        writer.flush()
    finally:
        parser.close()
        pages_bar.close()
        chunks_bar.close()

    report.complete = bool(getattr(source_impl, "complete", True))
    if report.complete:
        gone = [state.id for url, state in states.items() if url not in seen]
        if gone:
            store.delete_pages(gone)
        report.pages_removed = len(gone)
    report.seconds = time.perf_counter() - started
    if writer.source_id is not None:
        store.finish_source(writer.source_id, {k: v for k, v in report.to_dict().items() if k != "failures"}
                            | {"failures": report.failures[:100]})
    return report


def _probe_dim(embedder: Embedder) -> int:
    return int(embedder.embed(["dimension probe"]).shape[1])


def reingestable_sources(store: Store) -> list:
    """The sources a plain re-ingest reads: all but the resolved threads, which the bot adds one at a
    time and which have nothing to read again."""
    return [s for s in store.sources() if s.kind != THREAD_KIND]

"""Resolved threads as documents: an answer people gave in chat, citable like a page of the docs.

When a person answers a question in a thread the bot took part in, and the asker marks the
answer resolved, the question and that answer become one page of the store, in the source
``THREADS_SOURCE`` (kind ``thread``), at the thread's address: the next person who asks
something close is shown that answer, with a link back to the thread. A thread document is
added and removed one at a time (never by re-ingesting the source) and is deleted with
everything else of a user by ``deepmem feedback forget``.
"""

from __future__ import annotations

import hashlib

from .chunking import chunk_page
from .documents import Block, ParsedPage
from .embedders import Embedder
from .settings import Settings
from .store import Store

__all__ = ["THREADS_SOURCE", "THREAD_KIND", "add_thread_document", "remove_thread_documents", "thread_path",
           "MAX_ANSWER_CHARS"]

THREADS_SOURCE = "chat-threads"
THREAD_KIND = "thread"
MAX_ANSWER_CHARS = 4000  # a longer answer is kept to its start


def thread_path(channel: str, thread_ts: str, users: list[str]) -> str:
    """The page's path: which thread, and who took part (so forgetting a user finds it)."""
    return f"{channel}/{thread_ts}/" + ",".join(sorted(set(u for u in users if u)))


def add_thread_document(store: Store, embedder: Embedder, settings: Settings, *, url: str, channel: str,
                        thread_ts: str, question: str, answer: str, users: list[str], where: str) -> int:
    """Write (or replace) the page of a resolved thread; returns how many chunks it has.
    ``where``: a readable name of the place ("#help-docs"), for the page's title."""
    question = " ".join(question.split())
    answer = " ".join(answer.split())[:MAX_ANSWER_CHARS]
    title = f"Resolved in {where}: {question[:120]}"
    parsed = ParsedPage(title=title, blocks=[Block(text=question, headings=(title, "Question")),
                                             Block(text=answer, headings=(title, "Answer"))])
    chunks = chunk_page(parsed, url, settings.chunk_tokens, fits=embedder.fits)
    vectors = embedder.embed([c.embed_text for c in chunks])
    hashes = [hashlib.sha256(f"{embedder.name}\x1f{c.embed_text}".encode()).hexdigest() for c in chunks]
    store.bind_embedder(embedder.name, embedder.dim)
    source = store.source(THREADS_SOURCE) or store.upsert_source(THREADS_SOURCE, THREAD_KIND)
    content = f"{question}\x1f{answer}".encode()
    with store.lock, store.transaction():  # the server's connection is shared with its searches
        store.write_page(source_id=source.id, url=url, path=thread_path(channel, thread_ts, users), title=title,
                         content_hash=hashlib.sha256(content).hexdigest(), size=len(content), chunks=chunks,
                         embed_hashes=hashes, vectors=[v.astype("float32").tobytes() for v in vectors], links=[])
    return len(chunks)


def remove_thread_documents(store: Store, user: str) -> int:
    """Delete the thread pages a user took part in; returns how many."""
    source = store.source(THREADS_SOURCE)
    if source is None:
        return 0
    pages = [page_id for page_id, path in store.source_pages(source.id)
             if user in (path or "").rsplit("/", 1)[-1].split(",")]
    if pages:
        store.delete_pages(pages)
    return len(pages)

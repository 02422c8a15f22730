"""Fences around untrusted text in LLM prompts, which the text itself cannot forge.

A prompt puts documents and the user's words between tags (``<source>…</source>``,
``<question>…</question>``, ``<passage>…</passage>``, ``<example>…</example>``: a real question shown
as an example of how people ask) and tells the model they are data. A document
that contains ``</source>`` followed by ``<question>…</question>`` would otherwise close its fence
and forge a question that looks exactly like the real one. ``neutralise`` turns every such tag in
untrusted text (any case, with spaces or attributes) into a look-alike with other brackets, so the
only real tags in a prompt are the ones ``fence`` writes.
"""

from __future__ import annotations

import re

__all__ = ["FENCE_TAGS", "neutralise", "fence", "one_line"]

FENCE_TAGS = ("source", "sources", "question", "passage", "history", "example")
_TAG = re.compile(r"<\s*/?\s*(?:" + "|".join(FENCE_TAGS) + r")\b[^<>]*>?", re.IGNORECASE)


def neutralise(text: str) -> str:
    """``</source>`` → ``‹/source›``: the text reads the same, and no fence tag is left in it."""
    return _TAG.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)


def fence(tag: str, text: str) -> str:
    assert tag in FENCE_TAGS
    return f"<{tag}>\n{neutralise(text)}\n</{tag}>"


def one_line(text: str) -> str:
    """A header line (a title, a URL) beside a fence: neutralised, on one line."""
    return neutralise(" ".join(text.split()))

"""Block Kit for an answer: the text, the sources as link buttons, and 👍 / 👎 buttons."""

from __future__ import annotations

import json

from shared.answer import Answer

__all__ = ["answer_blocks", "escape", "parse_value"]

MAX_TEXT = 2900  # a section block holds 3000 characters


def escape(text: str) -> str:
    """Slack mrkdwn control characters: document or model text can never ping or link by itself."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _label(source) -> str:
    where = source.title + (f" › {source.heading_path}" if source.heading_path else "")
    label = f"[{source.n}] {where}"
    return label if len(label) <= 75 else label[:74] + "…"


def parse_value(value: str) -> dict:
    try:
        data = json.loads(value)
        return data if isinstance(data, dict) else {}
    except (TypeError, json.JSONDecodeError):
        return {}


def answer_blocks(question_id: str, answer: Answer) -> list[dict]:
    text = escape(answer.text)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "…"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    shown = answer.cited_sources or answer.sources[:3]
    buttons = []
    for s in shown:
        if not s.url.startswith(("http://", "https://")):
            continue  # a folder ingested without --base-url has no address to open
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": _label(s), "emoji": False},
                        "url": s.url, "action_id": f"source_{s.n}",
                        "value": json.dumps({"q": question_id, "c": s.chunk_id, "r": s.rank})})
    if buttons:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "*Sources*"}]})
        blocks.append({"type": "actions", "block_id": "sources", "elements": buttons[:5]})
    blocks.append({"type": "actions", "block_id": "feedback", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "👍", "emoji": True}, "action_id": "vote_up",
         "value": question_id},
        {"type": "button", "text": {"type": "plain_text", "text": "👎", "emoji": True}, "action_id": "vote_down",
         "value": question_id},
    ]})
    note = f"deep memory {answer.adapter}" if answer.adapter else "plain search"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{note} · {answer.mode} answer"}]})
    return blocks

"""Block Kit for an answer (the text, the sources as link buttons, "Did this answer your question?"
Yes / No buttons), for an answer the docs do not cover (the closest sections and an "Ask an
expert" button instead of a confident answer) and for the sections offered after a No or 👎.

The texts here are raw (document and model text as they are): ``bot.outgoing`` escapes every text
object and fits it to Slack's limits when the message is sent."""

from __future__ import annotations

import json

from shared.answer import Answer

__all__ = ["answer_blocks", "answer_text", "other_sources_blocks", "parse_value", "NOT_COVERED", "VOTE_ACTIONS",
           "ESCALATE"]

NOT_COVERED = "The docs do not seem to cover this."
ESCALATE = "escalate"  # the "Ask an expert" button's action id
# a button's action id -> the vote it records: Yes / No, and the 👍 / 👎 of answers posted before them
VOTE_ACTIONS = {"answered_yes": +1, "answered_no": -1, "vote_up": +1, "vote_down": -1}

MAX_OFFERED = 15  # an actions block holds 25 elements; an answer retrieves 13 sections in all


def _label(source) -> str:
    where = source.title + (f" › {source.heading_path}" if source.heading_path else "")
    return " ".join(f"[{source.n}] {where}".split())


def parse_value(value: str) -> dict:
    try:
        data = json.loads(value)
        return data if isinstance(data, dict) else {}
    except (TypeError, json.JSONDecodeError):
        return {}


def _source_buttons(question_id: str, sources) -> list[dict]:
    """Link buttons: a click opens the section and reaches the app as a block action."""
    buttons = []
    for s in sources:
        if not s.url.startswith(("http://", "https://")):
            continue  # a folder ingested without --base-url has no address to open
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": _label(s), "emoji": False},
                        "url": s.url, "action_id": f"source_{s.n}",
                        "value": json.dumps({"q": question_id, "c": s.chunk_id, "r": s.rank})})
    return buttons


def _escalate_block(question_id: str, label: str = "Ask an expert") -> dict:
    return {"type": "actions", "block_id": "escalate", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": label, "emoji": False}, "style": "primary",
         "action_id": ESCALATE, "value": question_id}]}


def answer_text(answer: Answer) -> str:
    """What the message says: the answer, or that the docs do not cover the question."""
    if answer.covered:
        return answer.text
    closest = " The closest sections are below; an expert can help." if answer.shown_sources else ""
    return f"*{NOT_COVERED}*{closest}"


def answer_blocks(question_id: str, answer: Answer) -> list[dict]:
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": answer_text(answer)}}]
    buttons = _source_buttons(question_id, answer.shown_sources)
    if buttons:
        title = "*Sources*" if answer.covered else "*Closest sections*"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": title}]})
        blocks.append({"type": "actions", "block_id": "sources", "elements": buttons[:5]})
    if not answer.covered:
        blocks.append(_escalate_block(question_id))
    else:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Did this answer your question?"}]})
        blocks.append({"type": "actions", "block_id": "feedback", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Yes", "emoji": False},
             "action_id": "answered_yes", "value": question_id},
            {"type": "button", "text": {"type": "plain_text", "text": "No", "emoji": False},
             "action_id": "answered_no", "value": question_id},
        ]})
    note = f"deep memory {answer.adapter}" if answer.adapter else "plain search"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{note} · {answer.mode} answer"}]})
    return blocks


def other_sources_blocks(question_id: str, sources) -> list[dict] | None:
    """After a 👎: the retrieved sections the answer did not show. A click on the right one is the
    most useful feedback there is (it says what the answer should have been)."""
    buttons = _source_buttons(question_id, sources)
    if not buttons:
        return None
    return [{"type": "section", "text": {"type": "mrkdwn",
                                         "text": "Sorry that missed. Is the answer in one of these sections?"}},
            {"type": "actions", "block_id": "more_sources", "elements": buttons[:MAX_OFFERED]},
            _escalate_block(question_id, "None of these: ask an expert")]

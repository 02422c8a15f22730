"""A Slack workspace with a history, on 127.0.0.1: the loopback Web API plus channels full of threads.

Serves conversations.history (thread parents, newest first), conversations.replies (a thread,
oldest first), conversations.info and conversations.list the way Slack does: paginated by
``response_metadata.next_cursor`` with pages smaller than asked for (``page_size``), a 429 with
Retry-After when a method is rate-limited (``rate_limit``), and a one-off failure on a given
call (``fail``), so resuming can be tested. Every call is recorded.
"""

from __future__ import annotations

import base64

from aiohttp import web

from .slack_api import SlackAPI

HELP = "C0HELPDOCS"
DM = "D0DIRECT01"
DOCS = "https://sqlite.org/"


def msg(ts: str, user: str | None, text: str, **extra) -> dict:
    out = {"type": "message", "ts": ts, "text": text}
    if user:
        out["user"] = user
    return out | extra


def check(*users: str, name: str = "white_check_mark") -> list[dict]:
    return [{"name": name, "users": list(users), "count": len(users)}]


def realistic_channel() -> tuple[list[dict], dict[str, list[dict]]]:
    """A #help-docs channel as people use it: answered questions (marked resolved, thanked, or
    neither), bots, people answering themselves, links outside the docs, joins, edits, files,
    a deleted question, a broadcast reply."""
    threads = {
        # answered with a docs link; the asker marked the answer resolved
        "1700000100.000100": [
            msg("1700000100.000100", "U01ASKER1", "How do I make a column autoincrement in SQLite?"),
            msg("1700000160.000100", "U02HELPER", "You probably don't need it: <https://sqlite.org/autoinc.html"
                                                  "|the AUTOINCREMENT page> explains why", reactions=check("U01ASKER1")),
        ],
        # answered with a section link; the asker thanked in the thread
        "1700000200.000100": [
            msg("1700000200.000100", "U03ASKER2", "hey all, is there a way to add a column to an existing table"),
            msg("1700000260.000100", "U04HELPER", "<https://sqlite.org/lang_altertable.html#altertabaddcol>"),
            msg("1700000300.000100", "U03ASKER2", "thanks, that worked!"),
        ],
        # a bot answered first (never a label), then a person: an answer, not marked resolved
        "1700000400.000100": [
            msg("1700000400.000100", "U05ASKER3", "why is my database locked when two processes write at once?"),
            msg("1700000410.000100", None, "Maybe <https://sqlite.org/lang_transaction.html|transactions>?",
                bot_id="B0OTHERBOT", subtype="bot_message"),
            msg("1700000460.000100", "U06HELPER", "See <https://sqlite.org/wal.html|WAL mode>, readers and the "
                                                  "writer stop blocking each other"),
        ],
        # the asker answered themselves: not a label
        "1700000500.000100": [
            msg("1700000500.000100", "U07ASKER4", "How do foreign keys work in SQLite?"),
            msg("1700000560.000100", "U07ASKER4", "found it <https://sqlite.org/foreignkeys.html>"),
        ],
        # not a question
        "1700000600.000100": [
            msg("1700000600.000100", "U08PERSON", "FYI: the new release is out, changelog in the wiki"),
            msg("1700000660.000100", "U02HELPER", "nice, <https://sqlite.org/json1.html|JSON> got faster"),
        ],
        # answered only with a link outside the docs
        "1700000700.000100": [
            msg("1700000700.000100", "U09ASKER5", "Which ORM do people use with sqlite here?"),
            msg("1700000760.000100", "U02HELPER", "<https://stackoverflow.com/q/123|this thread> has opinions"),
        ],
        # an edited question, answered with a link that carries a tracking query string
        "1700000800.000100": [
            msg("1700000800.000100", "U10ASKER6", "What is the maximum length of a string or BLOB?",
                edited={"user": "U10ASKER6", "ts": "1700000820.000000"}),
            msg("1700000860.000100", "U02HELPER", "<https://sqlite.org/limits.html?utm_source=slack#max_length>"
                                                  " (you can lower it too)", subtype="thread_broadcast"),
        ],
        # a deleted question with replies left behind
        "1700000900.000100": [
            msg("1700000900.000100", None, "This message was deleted.", subtype="tombstone"),
            msg("1700000960.000100", "U02HELPER", "<https://sqlite.org/fts5.html>"),
        ],
    }
    parents = []
    for ts, messages in threads.items():
        replies = messages[1:]
        parent = dict(messages[0], thread_ts=ts, reply_count=len(replies),
                      latest_reply=replies[-1]["ts"], reply_users=sorted({m.get("user", "") for m in replies}))
        messages[0] = parent
        for m in replies:
            m["thread_ts"] = ts
        parents.append(parent)
    parents += [
        msg("1700000050.000100", "U11NEWBIE", "<@U11NEWBIE> has joined the channel", subtype="channel_join"),
        msg("1700000950.000100", "U12PERSON", "screenshot of the error, any idea?", files=[{"id": "F01"}],
            upload=True),
        msg("1700000990.000100", "U13PERSON", "how do I vacuum a database?"),  # asked, never answered
    ]
    return parents, threads


class SlackHistory(SlackAPI):
    def __init__(self, page_size: int = 2):
        super().__init__()
        self.page_size = page_size
        self.channels: dict[str, dict] = {}
        self.rate_limit: dict[str, int] = {}  # method -> how many 429s to answer before serving
        self.fail: dict[tuple[str, int], str] = {}  # (method, call number) -> error, answered once
        self._calls: dict[str, int] = {}
        self.add_channel(HELP, "help-docs", *realistic_channel())
        self.channels[DM] = {"name": None, "is_im": True, "parents": [], "threads": {}}

    def add_channel(self, channel: str, name: str, parents: list[dict], threads: dict[str, list[dict]]) -> None:
        self.channels[channel] = {"name": name, "is_im": False, "parents": parents, "threads": threads}

    def add_reply(self, channel: str, thread_ts: str, reply: dict) -> None:
        """A new reply in an existing thread: the parent's reply count and latest reply move."""
        data = self.channels[channel]
        data["threads"][thread_ts].append(dict(reply, thread_ts=thread_ts))
        parent = next(p for p in data["parents"] if p["ts"] == thread_ts)
        parent["reply_count"] += 1
        parent["latest_reply"] = reply["ts"]

    def add_thread(self, channel: str, messages: list[dict]) -> None:
        ts = messages[0]["ts"]
        parent = dict(messages[0], thread_ts=ts, reply_count=len(messages) - 1, latest_reply=messages[-1]["ts"])
        self.channels[channel]["threads"][ts] = [parent] + [dict(m, thread_ts=ts) for m in messages[1:]]
        self.channels[channel]["parents"].append(parent)

    def calls_of(self, method: str) -> list[dict]:
        return [c["args"] for c in self.calls if c["method"] == method]

    def _page(self, items: list[dict], args: dict, key: str = "messages") -> web.Response:
        cursor = args.get("cursor")
        start = int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0
        size = min(self.page_size, int(args.get("limit") or 100))
        page = items[start:start + size]
        more = start + size < len(items)
        body = {"ok": True, key: page, "has_more": more,
                "response_metadata": {"next_cursor": base64.b64encode(f"next:{start + size}".encode()).decode()
                                      if more else ""}}
        return web.json_response(body)

    async def _handle(self, request: web.Request):
        method = request.match_info["method"]
        if method not in ("conversations.history", "conversations.replies", "conversations.info",
                          "conversations.list"):
            return await super()._handle(request)
        args = dict(request.query) if request.method == "GET" else dict(await request.post())
        channel = args.get("channel")
        if method == "conversations.replies" and channel not in self.channels:
            return await super()._handle(request)  # the bot's own threads
        self.calls.append({"method": method, "args": args, "auth": request.headers.get("Authorization")})
        number = self._calls[method] = self._calls.get(method, 0) + 1
        if self.rate_limit.get(method):
            self.rate_limit[method] -= 1
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        error = self.fail.pop((method, number), None)
        if error:
            return web.json_response({"ok": False, "error": error})
        if method == "conversations.list":
            items = [{"id": cid, "name": c["name"], "is_channel": True, "is_im": False, "is_mpim": False}
                     for cid, c in self.channels.items() if not c["is_im"]]
            return self._page(items, args, key="channels")
        data = self.channels.get(channel)
        if data is None:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if method == "conversations.info":
            return web.json_response({"ok": True, "channel": {"id": channel, "name": data["name"],
                                                              "is_im": data["is_im"], "is_mpim": False,
                                                              "is_channel": not data["is_im"]}})
        if method == "conversations.history":
            oldest = float(args.get("oldest") or 0)
            items = sorted((p for p in data["parents"] if float(p["ts"]) >= oldest), key=lambda p: -float(p["ts"]))
            return self._page(items, args)
        thread = data["threads"].get(args.get("ts"))
        if thread is None:
            return web.json_response({"ok": False, "error": "thread_not_found"})
        return self._page(thread, args)

"""Bootstrap deep memory from the workspace's Slack history (`deepmem history import`).

Reads the channels the operator names (never direct messages) with slack_sdk:
``conversations.history`` for thread parents, ``conversations.replies`` for each thread, both
paginated. Slack's rate limits are honoured (a 429's Retry-After, by slack_sdk's retry handler).
A run is resumable: after every page of parents, where it stands (the page cursor and every
thread already read, with its latest reply) is saved (``history_progress``: files in
``$DEEPMEM_HOME/history/``, or the scale-out database, where every replica goes on from it), so
an interrupted import goes on where it stopped. One process reads a channel at a time; another
skips it meanwhile. Later runs are incremental: they read parents from ``LOOKBACK_DAYS`` before
the last complete run on, and fetch only threads with new replies.

Each thread becomes a ``shared.history.Message`` list and goes through ``label_thread``: a
question asked by a person and answered by another person with links into the ingested docs
becomes a label, stronger when the asker marked it resolved or thanked. Recorded in the
feedback store: the question (asker's id, channel, thread, text) and one label per linked
section (answerer's id, strength). Answers' text is not kept, only their links.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from shared.errors import DeepmemError
from shared.feedback.store import FeedbackStore
from shared.history import Message, docs_entry, label_thread, record_label
from shared.home import Home
from shared.queries import Resolver

from shared.history_progress import ChannelBusy, FileProgress, HistoryProgress, open_progress

__all__ = ["HistoryImport", "ImportReport", "slack_message", "import_history", "history_client", "LOOKBACK_DAYS"]

log = logging.getLogger("deepmem.history")
LOOKBACK_DAYS = 30  # later runs re-read this far back, for new replies to older threads
PAGE = 200  # messages per API page (Slack allows up to 1000; 200 is its recommendation)
SKIPPED = {"channel_join", "channel_leave", "channel_topic", "channel_purpose", "channel_name", "channel_archive",
           "channel_unarchive", "group_join", "group_leave", "group_topic", "group_purpose", "group_name",
           "pinned_item", "unpinned_item", "tombstone", "message_deleted", "bot_add", "bot_remove",
           "reminder_add", "channel_convert_to_private", "channel_posting_permissions", "ekm_access_denied"}
SLACK_LINK = re.compile(r"<([^<>]+)>")


class HistoryError(DeepmemError):
    """A channel that cannot be read (a DM, unknown, or the bot is not in it)."""


def slack_message(raw: dict) -> Message | None:
    """A Slack message as the neutral ``Message``: readable text, its links, who reacted how.
    None for what is not a message from someone (joins, topic changes, deleted messages)."""
    subtype = raw.get("subtype")
    if subtype in SKIPPED or not raw.get("ts"):
        return None
    links: list[str] = []

    def render(m: re.Match) -> str:
        target, _, label = m.group(1).partition("|")
        if target.startswith(("@", "!")):  # a mention or a broadcast: not part of the question
            return ""
        if target.startswith("#"):  # a channel: its name
            return "#" + label if label else ""
        if target.startswith(("http://", "https://")):
            links.append(html.unescape(target))
        return label or target

    text = html.unescape(SLACK_LINK.sub(render, raw.get("text") or ""))
    reactions = {r["name"].split("::", 1)[0]: tuple(r.get("users") or ()) for r in raw.get("reactions") or []
                 if isinstance(r, dict) and r.get("name")}
    return Message(ts=str(raw["ts"]), user=raw.get("user"), text=" ".join(text.split()), links=tuple(links),
                   is_bot=bool(raw.get("bot_id")) or subtype == "bot_message", reactions=reactions)


@dataclass
class ImportReport:
    channels: list[str] = field(default_factory=list)
    parents_read: int = 0
    threads_read: int = 0
    threads_skipped_unchanged: int = 0
    labeled: int = 0
    strong: int = 0
    labels: int = 0
    resumed: bool = False
    busy: list[str] = field(default_factory=list)  # channels another process was reading: skipped

    def to_dict(self) -> dict:
        return asdict(self)


def history_client(settings) -> WebClient:
    """The Web API client the import reads with (the bot token, SLACK_API_URL); HistoryImport adds
    the rate-limit and connection retries."""
    return WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url)


class HistoryImport:
    """Reads channels through ``client`` and records labels for threads answered with docs links."""

    def __init__(self, client: WebClient, home: Home, resolver: Resolver, feedback: FeedbackStore,
                 *, log_fn: Callable[[str], None] = log.info, stop: Callable[[], bool] | None = None,
                 progress: HistoryProgress | None = None):
        self.client = client
        self.progress = progress or FileProgress(home)  # open_progress(home, settings): shared by replicas
        self.stop = stop or (lambda: False)  # asked between threads and pages: the import then saves and returns
        self.home = home
        self.resolver = resolver
        self.feedback = feedback  # open_feedback(home, settings): DuckDB here, or the Postgres every replica shares
        self.log = log_fn
        self._docs: dict[str, str | None] = {}
        if not any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers):
            client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=8))
        if not any(isinstance(h, ConnectionErrorRetryHandler) for h in client.retry_handlers):
            client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=3))

    # -- channels ---------------------------------------------------------------------------
    def channel_id(self, name: str) -> tuple[str, str]:
        """(id, name) of a channel given as an id, #name or name. DMs and group DMs are refused."""
        wanted = name.strip().lstrip("#")
        if not wanted:
            raise HistoryError("an empty channel name")
        if re.fullmatch(r"[CGD][A-Z0-9]{6,}", wanted):
            info = self._call("conversations_info", wanted, channel=wanted)["channel"]
        else:
            info = None
            for page in self._pages("conversations_list", wanted, types="public_channel,private_channel",
                                    exclude_archived=True, limit=PAGE):
                info = next((c for c in page.get("channels", []) if c.get("name") == wanted), None)
                if info:
                    break
            if info is None:
                raise HistoryError(f"no channel named #{wanted} that the bot can see")
        if info.get("is_im") or info.get("is_mpim"):
            raise HistoryError(f"{name} is a direct message: only channels are read, never DMs")
        return info["id"], info.get("name") or info["id"]

    # -- the import ---------------------------------------------------------------------------
    def run(self, channels: list[str], *, team: str | None = None, max_threads: int | None = None) -> ImportReport:
        report = ImportReport()
        resolved = [self.channel_id(c) for c in channels]  # every name is checked before anything is read
        for channel, name in resolved:
            if self.stop():
                break
            try:
                with self.progress.reading(channel):
                    report.channels.append(name)
                    self._channel(channel, team, report, max_threads)
            except ChannelBusy:  # another process (a replica) is reading it now, and keeps the progress
                report.busy.append(name)
                self.log(f"#{name} is being read by another process now; skipped")
        self.feedback.drain()
        return report

    def _channel(self, channel: str, team: str | None, report: ImportReport, max_threads: int | None) -> None:
        data = self.progress.load(channel)
        save = lambda: self.progress.save(channel, data)  # noqa: E731
        if data["pass"] is None:  # a new pass: from the start, or from shortly before the last complete one
            through = data["complete_through"]
            oldest = f"{float(through) - LOOKBACK_DAYS * 86400:.6f}" if through else "0"
            data["pass"] = {"oldest": oldest, "cursor": None, "newest": through}
        else:
            report.resumed = True
        run = data["pass"]
        while True:
            kwargs = {"channel": channel, "oldest": run["oldest"], "limit": PAGE, "inclusive": True}
            if run["cursor"]:
                kwargs["cursor"] = run["cursor"]
            page = self._call("conversations_history", channel, **kwargs)
            for raw in page.get("messages", []):
                report.parents_read += 1
                ts = str(raw.get("ts") or "")
                if ts and (run["newest"] is None or float(ts) > float(run["newest"])):
                    run["newest"] = ts
                if not raw.get("reply_count") or raw.get("thread_ts", ts) != ts:
                    continue  # not a thread parent
                latest = str(raw.get("latest_reply") or ts)
                if data["threads"].get(ts) == latest:
                    report.threads_skipped_unchanged += 1
                    continue
                if self.stop() or max_threads is not None and report.threads_read >= max_threads:
                    save()  # the next run goes on from this page; threads read are not read again
                    return
                self._thread(channel, ts, team, report)
                data["threads"][ts] = latest
            run["cursor"] = (page.get("response_metadata") or {}).get("next_cursor") or None
            save()
            if not run["cursor"]:
                break
            if self.stop():
                return
        data["complete_through"], data["pass"] = run["newest"], None
        save()

    def _thread(self, channel: str, ts: str, team: str | None, report: ImportReport) -> None:
        messages: list[Message] = []
        for page in self._pages("conversations_replies", channel, channel=channel, ts=ts, limit=PAGE):
            messages.extend(m for m in map(slack_message, page.get("messages", [])) if m is not None)
        report.threads_read += 1
        label = label_thread(messages, lambda url: self.docs_entry(url) is not None)
        if label is None:
            return
        record_label(self.feedback, label, self.docs_entry, channel=channel, team=team, origin="history")
        report.labeled += 1
        report.strong += label.strength > 1
        report.labels += len(label.links)

    def docs_entry(self, url: str) -> str | None:
        """The relevance entry (page URL or url#anchor) a link denotes in the docs, or None."""
        if url not in self._docs:
            self._docs[url] = docs_entry(self.resolver, url)
        return self._docs[url]

    # -- Slack calls --------------------------------------------------------------------------
    def _call(self, method: str, where: str, **kwargs) -> dict:
        try:
            return getattr(self.client, method)(**kwargs).data
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else "unknown"
            hint = {"not_in_channel": "invite the bot to it first (/invite @deepmem)",
                    "channel_not_found": "no such channel, or the bot cannot see it",
                    "missing_scope": "the app needs the channels:history, groups:history, channels:read and "
                                     "groups:read scopes (see bot/manifest.yml)",
                    "ratelimited": "Slack kept rate-limiting; run the import again to go on where it stopped"}
            raise HistoryError(f"cannot read {where}: {error}" + (f": {hint[error]}" if error in hint else "")) \
                from None

    def _pages(self, method: str, where: str, **kwargs):
        cursor = None
        while True:
            page = self._call(method, where, **kwargs, **({"cursor": cursor} if cursor else {}))
            yield page
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return


def import_history(client: WebClient, home: Home, store, channels: list[str], *, team: str | None = None,
                   max_threads: int | None = None, log_fn: Callable[[str], None] = log.info,
                   settings=None) -> ImportReport:
    from shared.feedback import open_feedback

    progress = open_progress(home, settings)
    try:
        return HistoryImport(client, home, Resolver(store), open_feedback(home, settings), log_fn=log_fn,
                             progress=progress).run(channels, team=team, max_threads=max_threads)
    finally:
        progress.close()

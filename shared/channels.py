"""Channel configuration: which collections a Slack channel answers from, and how.

Each configured channel has a ``ChannelSettings``:

- ``collections``: the collections its answers come from (empty: every collection);
- ``mode``: ``mention`` (answer when mentioned, and follow-ups in the bot's threads), ``all``
  (also every question-like message posted in the channel) or ``off`` (never answer there);
- ``ephemeral``: answers are shown only to the person who asked;
- ``experts``: the people (``U…``) and user groups (``S…``) tagged when the docs do not cover a
  question and someone asks for an expert.

``default`` holds the settings of direct messages, ``/ask`` and every channel not configured.
Where it lives is a ``ChannelConfigStore``, picked by ``open_channel_config(home, settings)``:

- ``FileChannelConfigStore`` (no DEEPMEM_DATABASE_URL): ``$DEEPMEM_HOME/channels.json``, written
  atomically (a temporary file renamed into place) under a file lock, so the CLI and the bot can
  both change it;
- ``PostgresChannelConfigStore`` (``shared.channels_postgres``, DEEPMEM_DATABASE_URL): one row of the
  shared database holding the same JSON document and a version, changed in a transaction that locks
  the row, so every replica sees one configuration and concurrent changes are never lost.

Both check the document the same way: one that cannot be read is a one-line ``ConfigError`` naming
where it lives and the problem, and it is never overwritten. ``LiveChannelConfig`` is the
configuration as a running bot sees it (read again when it changes). Collection names are checked
against the store by callers (``check_collections``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .collections import check_name
from .errors import ConfigError, DeepmemError
from .files import file_lock, write_atomically
from .home import Home

__all__ = ["ChannelSettings", "ChannelConfig", "ChannelConfigStore", "FileChannelConfigStore", "LiveChannelConfig",
           "ChannelConfigFile", "open_channel_config", "parse_document", "MODES", "check_channel_id", "check_expert",
           "check_collections", "FILE_NAME"]

FILE_NAME = "channels.json"
VERSION = 1
MODES = ("mention", "all", "off")
CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,20}$")  # a public (C…) or private (G…, or C… today) channel
USER_ID = re.compile(r"^[UW][A-Z0-9]{6,20}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{6,20}$")
MAX_CHANNELS = 10_000
MAX_COLLECTIONS = 64
MAX_EXPERTS = 25
MAX_FILE = 4 * 1024 * 1024  # bytes of the JSON document, in a file or in the database
SETTINGS_KEYS = ("collections", "mode", "ephemeral", "experts")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_channel_id(channel: str) -> str:
    """A Slack channel id (``C0123ABCD``, ``G0123ABCD``), or ConfigError naming what was given."""
    if isinstance(channel, str) and channel.startswith("D") and CHANNEL_ID.match("C" + channel[1:]):
        raise ConfigError(f"{channel} is a direct message: DMs use the default settings (`--default`)")
    if not isinstance(channel, str) or not CHANNEL_ID.match(channel):
        raise ConfigError(f"unknown Slack channel {_show(channel)}: give a channel id such as C0123ABCD "
                          f"(in Slack: the channel's details, at the bottom)")
    return channel


def check_expert(expert: str) -> str:
    """A user (``U…``) or user group (``S…``) id; Slack's ``<@U…>`` and ``<!subteam^S…>`` forms are unwrapped."""
    raw = expert.strip() if isinstance(expert, str) else expert
    if isinstance(raw, str):
        m = re.fullmatch(r"<@([A-Z0-9]+)(?:\|[^>]*)?>|<!subteam\^([A-Z0-9]+)(?:\|[^>]*)?>", raw)
        if m:
            raw = m.group(1) or m.group(2)
    if not isinstance(raw, str) or not (USER_ID.match(raw) or GROUP_ID.match(raw)):
        raise ConfigError(f"{_show(expert)} is not a Slack user (U0123ABCD) or user group (S0123ABCD) id")
    return raw


def check_collections(names: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    """``names`` (sorted, without repeats) when each is a collection of the store; ConfigError naming the others."""
    wanted = sorted({check_name(n) for n in names})
    known = set(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        have = ", ".join(sorted(known)) or "none yet"
        raise ConfigError(f"unknown collection{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (the store has: "
                          f"{have}); `deepmem ingest PATH --collection NAME` adds one")
    return tuple(wanted)


@dataclass(frozen=True)
class ChannelSettings:
    collections: tuple[str, ...] = ()  # empty: every collection
    mode: str = "mention"  # mention | all | off
    ephemeral: bool = False
    experts: tuple[str, ...] = ()  # user (U…) and user group (S…) ids

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {_show(self.mode)}")
        if not isinstance(self.ephemeral, bool):
            raise ConfigError(f"ephemeral must be true or false, not {_show(self.ephemeral)}")
        for name, values, limit in (("collections", self.collections, MAX_COLLECTIONS),
                                    ("experts", self.experts, MAX_EXPERTS)):
            if not isinstance(values, (tuple, list)) or len(values) > limit:
                raise ConfigError(f"{name} must be a list of at most {limit}, not {_show(values)}")
        object.__setattr__(self, "collections", tuple(sorted({check_name(c) for c in self.collections})))
        object.__setattr__(self, "experts", tuple(dict.fromkeys(check_expert(e) for e in self.experts)))

    def to_dict(self) -> dict:
        return {"collections": list(self.collections), "mode": self.mode, "ephemeral": self.ephemeral,
                "experts": list(self.experts)}

    @classmethod
    def from_dict(cls, data, where: str = "settings") -> "ChannelSettings":
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be an object, not {_show(data)}")
        unknown = sorted(set(data) - set(SETTINGS_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown fields {', '.join(unknown)} (known: {', '.join(SETTINGS_KEYS)})")
        try:
            return cls(collections=tuple(data.get("collections", ())), mode=data.get("mode", "mention"),
                       ephemeral=data.get("ephemeral", False), experts=tuple(data.get("experts", ())))
        except TypeError:
            raise ConfigError(f"{where}: collections and experts must be lists") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def changed(self, **changes) -> "ChannelSettings":
        """These settings with some fields replaced (None: unchanged), checked again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ChannelConfig:
    default: ChannelSettings = field(default_factory=ChannelSettings)
    _channels: tuple[tuple[str, ChannelSettings], ...] = ()

    def channels(self) -> dict[str, ChannelSettings]:
        """The configured channels (id -> settings)."""
        return dict(self._channels)

    def for_channel(self, channel_id: str | None) -> ChannelSettings:
        """The settings of a channel: its own when configured, else the default."""
        return dict(self._channels).get(channel_id, self.default) if channel_id else self.default

    def is_configured(self, channel_id: str) -> bool:
        return channel_id in dict(self._channels)

    def with_channel(self, channel_id: str, settings: ChannelSettings) -> "ChannelConfig":
        channels = self.channels()
        channels[check_channel_id(channel_id)] = settings
        if len(channels) > MAX_CHANNELS:
            raise ConfigError(f"at most {MAX_CHANNELS:,} channels can be configured")
        return ChannelConfig(self.default, tuple(sorted(channels.items())))

    def without_channel(self, channel_id: str) -> "ChannelConfig":
        channels = self.channels()
        if channel_id not in channels:
            raise ConfigError(f"channel {_show(channel_id)} is not configured (it uses the default settings)")
        del channels[channel_id]
        return ChannelConfig(self.default, tuple(sorted(channels.items())))

    def with_default(self, settings: ChannelSettings) -> "ChannelConfig":
        return ChannelConfig(settings, self._channels)

    def to_dict(self) -> dict:
        return {"version": VERSION, "default": self.default.to_dict(),
                "channels": {c: s.to_dict() for c, s in self._channels}}

    @classmethod
    def from_dict(cls, data, where: str) -> "ChannelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        if data.get("version", VERSION) != VERSION:
            raise ConfigError(f"{where} has version {_show(data.get('version'))}, written by another deepmem "
                              f"(this one reads version {VERSION})")
        unknown = sorted(set(data) - {"version", "default", "channels"})
        if unknown:
            raise ConfigError(f"{where}: unknown fields {', '.join(unknown)}")
        channels = data.get("channels", {})
        if not isinstance(channels, dict) or len(channels) > MAX_CHANNELS:
            raise ConfigError(f"{where}: channels must be an object of at most {MAX_CHANNELS:,} channels")
        config = cls(ChannelSettings.from_dict(data.get("default", {}), f"{where}: default"))
        parsed = {}
        for channel, settings in channels.items():
            try:
                check_channel_id(channel)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            parsed[channel] = ChannelSettings.from_dict(settings, f"{where}: channel {channel}")
        return ChannelConfig(config.default, tuple(sorted(parsed.items())))

    def to_json(self) -> str:
        """The document both stores keep; ConfigError when it would be larger than either reads back."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if len(text.encode("utf-8")) > MAX_FILE:
            raise ConfigError(f"the channel configuration would be larger than {MAX_FILE // (1024 * 1024)} MB")
        return text

    # -- the file ----------------------------------------------------------------------------
    @staticmethod
    def path(home) -> Path:
        return (home.root if isinstance(home, Home) else Path(home)) / FILE_NAME

    @classmethod
    def load(cls, home) -> "ChannelConfig":
        """The configuration in ``home`` (a Home or a directory); the defaults when there is no file yet."""
        path = cls.path(home)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE + 1)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        return parse_document(raw, str(path), "fix it or move it aside")

    def save(self, home) -> None:
        """Write atomically: readers see the old file or the new one, never half of one."""
        write_atomically(self.path(home), self.to_json())

    @classmethod
    def _locked(cls, home):
        return file_lock(cls.path(home).with_name(f".{FILE_NAME}.lock"))

    @classmethod
    def update(cls, home, change: Callable[["ChannelConfig"], "ChannelConfig"]) -> "ChannelConfig":
        """Load, apply ``change``, save, under a lock (the CLI and the bot may change it at once).
        When ``change`` raises, nothing is written."""
        with cls._locked(home):
            config = change(cls.load(home))
            config.save(home)
            return config


def parse_document(raw: bytes | str | None, where: str, fix: str = "fix it") -> ChannelConfig:
    """The configuration in a stored JSON document (None: nothing stored yet, the defaults), checked the
    same way whichever store holds it; a one-line ConfigError naming ``where`` otherwise."""
    if raw is None:
        return ChannelConfig()
    raw = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(raw) > MAX_FILE:
        raise ConfigError(f"{where} is larger than {MAX_FILE // (1024 * 1024)} MB: not a channel configuration")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc}); {fix}") from None
    return ChannelConfig.from_dict(data, where)


# -- where the configuration lives ------------------------------------------------------------------

class ChannelConfigStore(ABC):
    """The channel configuration of a deployment: read, changed under a lock, and a cheap stamp that
    differs whenever it changed."""

    where: str  # named in errors
    poll_interval: float = 0.0  # seconds a running bot may go without asking for the stamp

    @abstractmethod
    def load(self) -> ChannelConfig:
        """The configuration (the defaults when none is stored); ConfigError when it cannot be read."""

    @abstractmethod
    def update(self, change: Callable[[ChannelConfig], ChannelConfig]) -> ChannelConfig:
        """Load, apply ``change`` and store, as one step no other change interleaves with (the CLI and
        every replica may change it at once). When ``change`` raises, or the stored configuration cannot
        be read, nothing is written."""

    @abstractmethod
    def stamp(self):
        """A value that differs after every change (None: nothing stored)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileChannelConfigStore(ChannelConfigStore):
    """``$DEEPMEM_HOME/channels.json`` (one machine; the single-process mode)."""

    def __init__(self, home):
        self.home = home
        self.where = str(ChannelConfig.path(home))

    def load(self) -> ChannelConfig:
        return ChannelConfig.load(self.home)

    def update(self, change):
        return ChannelConfig.update(self.home, change)

    def stamp(self):
        try:
            st = ChannelConfig.path(self.home).stat()
            return st.st_mtime_ns, st.st_size, st.st_ino
        except FileNotFoundError:
            return None


def open_channel_config(home, settings=None) -> ChannelConfigStore:
    """The channel configuration of this deployment: in the shared database when ``settings.database_url``
    is set (every replica sees the same), else in ``home``'s channels.json."""
    from .database import database_url

    url = database_url(settings)
    if url:
        from .channels_postgres import PostgresChannelConfigStore

        return PostgresChannelConfigStore(url)
    return FileChannelConfigStore(home)


class LiveChannelConfig:
    """The configuration as a long-running process sees it: read again when it changes (`deepmem
    channels set`, or `/deepmem` on another replica), asking for the stamp at most every
    ``poll_interval`` seconds. A configuration made unreadable meanwhile (or a database that cannot be
    reached) keeps the last good one in force and is reported once through ``on_error``."""

    RETRY_AFTER = 15.0  # seconds before asking again after the store could not be reached

    def __init__(self, source: ChannelConfigStore, on_error: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.on_error = on_error or (lambda message: None)
        self._clock = clock
        self._seen = source.stamp()
        self._config = source.load()  # a bad configuration at start is an error for the caller
        self._problem: str | None = None
        self._next_poll = clock() + source.poll_interval
        self._polling = threading.Lock()  # one thread asks; the others meanwhile use what is in force

    def _report(self, exc: Exception) -> None:
        if str(exc) != self._problem:
            self._problem = str(exc)
            self.on_error(f"{exc}; the previous channel configuration stays in force")

    def current(self) -> ChannelConfig:
        if self._clock() < self._next_poll or not self._polling.acquire(blocking=False):
            return self._config
        try:
            return self._poll()
        finally:
            self._polling.release()

    def _poll(self) -> ChannelConfig:
        now = self._clock()
        self._next_poll = now + self.source.poll_interval
        try:
            stamp = self.source.stamp()
        except DeepmemError as exc:  # the database is unreachable: ask again a little later
            self._next_poll = now + max(self.source.poll_interval, self.RETRY_AFTER)
            self._report(exc)
            return self._config
        if stamp != self._seen:
            try:
                self._config = self.source.load()
                self._seen, self._problem = stamp, None
            except DeepmemError as exc:
                self._report(exc)
        return self._config

    def update(self, change: Callable[[ChannelConfig], ChannelConfig]) -> ChannelConfig:
        self._config = self.source.update(change)
        self._seen, self._problem = object(), None  # read again next time: another change may have followed
        self._next_poll = 0.0
        return self._config

    def close(self) -> None:
        self.source.close()


class ChannelConfigFile(LiveChannelConfig):
    """``LiveChannelConfig`` over ``home``'s channels.json."""

    def __init__(self, home, on_error: Callable[[str], None] | None = None):
        super().__init__(FileChannelConfigStore(home), on_error)

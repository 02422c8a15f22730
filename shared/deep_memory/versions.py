"""Adapter versions on disk, and which one is active.

    adapters/v0001/{weights.npz, meta.json}
    adapters/active.json   {"version": "v0002", "history": ["v0001"], "changed_at": ...}

A version directory is written under a temporary name and renamed into place, so a
half-written adapter never has a version name. Activation replaces active.json with
os.replace, which is atomic: a reader sees the old pointer or the new one, never a mix.
A lock file serialises writers (the CLI, the daemon) across processes.

A damaged pointer or an active version that cannot be loaded is never taken silently for
"no adapter": ``active_status`` says what is wrong, and the CLI, `deepmem status`, search
and the bot's log say it too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeepmemError
from ..files import file_lock
from .adapter import LinearAdapter
from .dataset import SplitSpec

__all__ = ["AdapterRegistry", "RegistryLookups", "cannot_load", "AdapterVersion", "AdapterError", "ActiveStatus",
           "unfit_for", "same_split", "open_registry"]

VERSION = re.compile(r"^v(\d{4,})$")


class AdapterError(DeepmemError):
    """No such adapter version, or nothing to roll back to."""


def unfit_for(meta: dict, adapter: LinearAdapter, embedder_name: str, dim: int) -> str | None:
    """Why this adapter cannot adapt queries from that embedder; None when it can."""
    if meta.get("embedder") != embedder_name or adapter.dim != dim:
        return f"trained for {meta.get('embedder')} ({adapter.dim} dimensions), not {embedder_name} ({dim})"
    return None


def same_split(meta: dict, spec: SplitSpec) -> bool:
    """Was this adapter trained on the same train/validation/test split? If not, it may have
    trained on chunks of this test split, and its numbers there would be inflated."""
    return meta.get("split", {}) == spec.to_meta()


@dataclass(frozen=True)
class ActiveStatus:
    """Which version the pointer names, and why it cannot serve (None when it can, or when none is active)."""

    name: str | None
    problem: str | None = None


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    path: Path
    meta: dict


def open_registry(home, settings=None):
    """The adapter registry of this deployment: in the database when ``settings.database_url`` is set
    (``versions_postgres.PostgresRegistry``), else in the data directory. Same methods, same errors."""
    from ..database import database_url

    url = database_url(settings)
    if url:
        from .versions_postgres import PostgresRegistry

        return PostgresRegistry(url)
    return AdapterRegistry(home.adapters_dir)


def cannot_load(name: str, exc: BaseException) -> AdapterError:
    """The one-line error for a version whose stored weights or meta cannot be read."""
    detail = " ".join(str(exc).split())[:160] or exc.__class__.__name__
    return AdapterError(f"adapter {name} cannot be loaded ({exc.__class__.__name__}: {detail})")


class RegistryLookups:
    """What every adapter registry (files, Postgres) derives from its ``versions`` and ``load``."""

    def _unknown(self, name: str) -> AdapterError:
        known = ", ".join(v.name for v in self.versions()) or "none"
        return AdapterError(f"no adapter version {name!r} (known: {known})")

    def _loadable(self, name: str) -> bool:
        try:
            self.load(name)
            return True
        except AdapterError:
            return False


class AdapterRegistry(RegistryLookups):
    poll_interval = 0.0  # signature() is a stat: a searcher asks at every question

    def __init__(self, root: Path):
        self.root = Path(root)

    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        return file_lock(self.root / ".lock")

    @property
    def pointer(self) -> Path:
        return self.root / "active.json"

    def versions(self) -> list[AdapterVersion]:
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and VERSION.match(path.name) and (path / "meta.json").is_file():
                try:
                    meta = json.loads((path / "meta.json").read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                out.append(AdapterVersion(path.name, path, meta))
        return out

    def _read_state(self) -> dict:
        """The pointer's content; AdapterError when it exists but is not a pointer."""
        try:
            state = json.loads(self.pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{self.pointer} is damaged ({exc.__class__.__name__}: {str(exc)[:120]})") from None
        version = state.get("version") if isinstance(state, dict) else None
        history = state.get("history", []) if isinstance(state, dict) else None
        if not isinstance(state, dict) or not (version is None or isinstance(version, str)) \
                or not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise AdapterError(f"{self.pointer} is damaged (not a pointer: {str(state)[:80]!r})")
        return state

    def _state(self) -> dict:
        """The pointer for writers: a damaged one counts as empty (activating rewrites it)."""
        try:
            return self._read_state()
        except AdapterError:
            return {}

    def active_name(self) -> str | None:
        name = self._state().get("version")
        return name if name and (self.root / name / "weights.npz").is_file() else None

    def active_status(self) -> ActiveStatus:
        """The active version, loaded to be sure it can serve."""
        try:
            name = self._read_state().get("version")
        except AdapterError as exc:
            return ActiveStatus(None, str(exc))
        if not name:
            return ActiveStatus(None)
        try:
            self.load(name)
        except AdapterError as exc:
            return ActiveStatus(name, str(exc))
        return ActiveStatus(name)

    def load(self, name: str) -> tuple[LinearAdapter, dict]:
        path = self.root / name
        if not VERSION.match(name) or not path.is_dir():
            raise self._unknown(name)
        try:
            return LinearAdapter.load(path)
        except Exception as exc:  # a damaged file: numpy, zipfile and json each fail their own way
            raise cannot_load(name, exc) from None

    def damaged(self) -> list[tuple[str, str]]:
        """Version directories ``versions`` cannot list (their meta.json is missing or unreadable), and why."""
        out = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if path.is_dir() and VERSION.match(path.name):
                try:
                    json.loads((path / "meta.json").read_text())
                except FileNotFoundError:
                    out.append((path.name, "meta.json is missing"))
                except (OSError, ValueError) as exc:
                    out.append((path.name, f"meta.json is unreadable ({exc.__class__.__name__})"))
        return out

    def load_active(self) -> tuple[str, LinearAdapter, dict] | None:
        """The active adapter; None when none is active; AdapterError when the pointer or the version is damaged."""
        name = self._read_state().get("version")
        if not name:
            return None
        adapter, meta = self.load(name)
        return name, adapter, meta

    def save(self, adapter: LinearAdapter, meta: dict) -> AdapterVersion:
        """Write a new version (not activated)."""
        with self._lock():
            # every version directory counts, readable or not: a new version never lands on a damaged one
            numbers = [int(m.group(1)) for p in self.root.iterdir() if p.is_dir() and (m := VERSION.match(p.name))]
            for p in self.root.glob("v*.partial-*"):
                shutil.rmtree(p, ignore_errors=True)  # left behind by a killed writer
            name = f"v{(max(numbers) + 1) if numbers else 1:04d}"
            tmp = self.root / f"{name}.partial-{os.getpid()}"
            adapter.save(tmp, {"version": name, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta})
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(tmp, self.root / name)
        return AdapterVersion(name, self.root / name, json.loads((self.root / name / "meta.json").read_text()))

    def _write_state(self, state: dict) -> None:
        tmp = self.root / f".active.json.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.pointer)

    def activate(self, name: str) -> None:
        self.load(name)  # refuse what cannot be loaded
        with self._lock():
            state = self._state()
            current = state.get("version")
            history = [h for h in state.get("history", []) if h != name]
            if current and current != name:
                history.append(current)
            self._write_state({"version": name, "history": history[-50:],
                               "changed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def deactivate(self) -> None:
        """Search without deep memory (the previous adapter stays in the history)."""
        with self._lock():
            state = self._state()
            history = state.get("history", [])
            if state.get("version"):
                history.append(state["version"])
            self._write_state({"version": None, "history": history[-50:],
                               "changed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def rollback(self) -> str | None:
        """Back to the adapter that was active before this one; returns its name (None: no adapter)."""
        with self._lock():
            try:
                state = self._read_state()
            except AdapterError as exc:
                raise AdapterError(f"{exc}: pick a version with `deepmem adapters activate VERSION` "
                                   f"(see `deepmem adapters list`)") from None
            history = list(state.get("history", []))
            while history and not self._loadable(history[-1]):  # skip versions deleted or damaged since
                history.pop()
            if not history and not state.get("version"):
                raise AdapterError("nothing to roll back to: no adapter has been active")
            previous = history.pop() if history else None
            self._write_state({"version": previous, "history": history,
                               "changed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            return previous

    def signature(self) -> tuple:
        """Cheap change detector for hot reload: (mtime_ns, size) of the pointer file."""
        try:
            st = self.pointer.stat()
            return st.st_mtime_ns, st.st_size, st.st_ino
        except FileNotFoundError:
            return (0, 0, 0)

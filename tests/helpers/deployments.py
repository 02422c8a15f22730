"""One deepmem deployment on one backend, for the suites run against both (file/SQLite and Postgres).

A subclass names what it opens (``open``: the factory, e.g. ``open_feedback``); ``replica()`` opens it
again on the same home and database, as another bot process would, and ``close()`` closes them all.
"""

from __future__ import annotations

from shared.home import Home
from shared.settings import load_settings

__all__ = ["Deployment", "deployment"]


class Deployment:
    open = None  # (home, settings) -> the component; set by each suite

    def __init__(self, name: str, home: Home, url: str | None):
        self.name, self.home, self.url = name, home, url
        self.opened = []

    def replica(self):
        component = type(self).open(self.home, load_settings(home=str(self.home.root), database_url=self.url))
        self.opened.append(component)
        return component

    def close(self):
        for component in self.opened:
            getattr(component, "close", lambda: None)()


def deployment(cls: type[Deployment], request, tmp_path, monkeypatch=None, *, postgres: str = "postgres"):
    """A ``cls`` on the backend named by ``request.param`` (``postgres``: a fresh database from ``pg_url``;
    with ``monkeypatch``, DEEPMEM_DATABASE_URL is set for the commands the test runs). Close it after."""
    url = request.getfixturevalue("pg_url") if request.param == postgres else None
    if url and monkeypatch is not None:
        monkeypatch.setenv("DEEPMEM_DATABASE_URL", url)
    return cls(request.param, Home.open(tmp_path / "home"), url)

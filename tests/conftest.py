from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shared.embedders import make_embedder  # noqa: E402
from shared.settings import load_settings  # noqa: E402

from .helpers import corpus  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Every test gets its own DEEPMEM_HOME and no credentials from the outside world."""
    for name in list(os.environ):
        if name.startswith(("DEEPMEM_", "SLACK_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEEPMEM_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def embedder():
    """The real local all-MiniLM-L6-v2, loaded once."""
    return make_embedder(load_settings(home="/tmp"))


@pytest.fixture(scope="session")
def small_docs(tmp_path_factory) -> Path:
    """22 real SQLite documentation pages in a folder (read-only: copy before changing)."""
    return corpus.extract(tmp_path_factory.mktemp("small-docs"), corpus.SMALL)


@pytest.fixture(scope="session")
def small_store_path(tmp_path_factory, small_docs, embedder) -> Path:
    """A store built once from `small_docs`; tests copy it with `store_copy`."""
    from shared.ingest import ingest
    from shared.store import Store

    home = tmp_path_factory.mktemp("small-home")
    settings = load_settings(home=str(home))
    with Store.open(home / "store.db") as store:
        ingest(store, embedder, settings, str(small_docs), base_url="https://sqlite.org/", progress=False)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return home / "store.db"


@pytest.fixture
def store_copy(small_store_path, tmp_path):
    """A private copy of the small store, in this test's DEEPMEM_HOME."""
    from shared.store import Store

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(small_store_path, home / "store.db")
    store = Store.open(home / "store.db")
    yield store
    store.close()


@pytest.fixture
def openai_server():
    """An OpenAI-compatible server on 127.0.0.1 (real wire format, deterministic answers)."""
    from .helpers.openai_server import OpenAIServer

    server = OpenAIServer().start()
    yield server
    server.stop()

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# where built test stores are kept (read before tests clear DEEPMEM_* variables)
TEST_CACHE = os.environ.get("DEEPMEM_TEST_CACHE") or "~/.cache/deepmem/tests"

from shared.embedders import make_embedder  # noqa: E402
from shared.settings import load_settings  # noqa: E402

from .helpers import corpus  # noqa: E402


def pytest_configure(config):
    """A temporary folder of this run's own: pytest's shared /tmp/pytest-of-<user> keeps only the
    three newest runs and deletes older ones, so two runs side by side (a developer's and a
    benchmark's) would delete each other's files, a Postgres data folder among them."""
    if not config.option.basetemp and not hasattr(config, "workerinput"):
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="deepmem-pytest-")
        config._deepmem_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    basetemp = getattr(config, "_deepmem_basetemp", None)
    if basetemp:
        shutil.rmtree(basetemp, ignore_errors=True)


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


def _store_key(embedder) -> str:
    """What a built test store depends on: the pages, the code that reads, chunks and stores them,
    and the embedder. A cached store is reused only while all of it is unchanged."""
    root = Path(__file__).resolve().parent.parent / "shared"
    code = sorted([*root.glob("parsers/*.py"), *root.glob("sources/*.py"), *root.glob("store/*.py"),
                   root / "chunking.py", root / "ingest.py", root / "documents.py"])
    h = hashlib.sha256(embedder.name.encode())
    for path in code:
        h.update(path.read_bytes())
    h.update("\x1f".join(corpus.SMALL).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def small_store_path(tmp_path_factory, small_docs, embedder) -> Path:
    """A store built once from `small_docs`; tests copy it with `store_copy`.

    Embedding is most of a local test run, so the built store is kept in DEEPMEM_TEST_CACHE
    (default ~/.cache/deepmem/tests; "off" to never cache) and reused while the pages, the code
    that ingests them and the embedder are unchanged."""
    from shared.ingest import ingest
    from shared.store import Store

    cached = None
    if TEST_CACHE.lower() != "off":
        cached = Path(TEST_CACHE).expanduser() / f"small-store-{_store_key(embedder)}.db"
    home = tmp_path_factory.mktemp("small-home")
    if cached is not None and cached.is_file():
        shutil.copy(cached, home / "store.db")
        return home / "store.db"
    settings = load_settings(home=str(home))
    with Store.open(home / "store.db") as store:
        ingest(store, embedder, settings, str(small_docs), base_url="https://sqlite.org/", progress=False)
        store.checkpoint()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy(home / "store.db", tmp)
        os.replace(tmp, cached)  # several test runs at once never see half a file
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


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL 16 + pgvector for this test session (tests/helpers/postgres.py)."""
    from .helpers.postgres import start_server

    # its own folder under /tmp, not pytest's: pgserver (as root) runs postgres as another user, which must
    # traverse the folders above the data; pytest resets its own base folder to 0700 whenever a run starts
    root = Path(tempfile.mkdtemp(prefix="deepmem-pg-"))
    server = start_server(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh database of its own for one test, dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def pg_small_template(postgres_server, small_docs, embedder):
    """A database holding `small_docs` ingested through the real pipeline into the Postgres store,
    built once per session; tests get copies (`pg_small_store`)."""
    from shared.ingest import ingest
    from shared.store.postgres import PostgresStore

    url = postgres_server.create_database("small")
    with PostgresStore.open(url) as store:
        ingest(store, embedder, load_settings(home="/tmp"), str(small_docs), base_url="https://sqlite.org/",
               progress=False)
    return url


@pytest.fixture
def pg_small_store(postgres_server, pg_small_template):
    """A private copy (CREATE DATABASE ... TEMPLATE) of the small store in Postgres, opened."""
    from shared.store.postgres import PostgresStore

    url = postgres_server.copy_database(pg_small_template)
    store = PostgresStore.open(url)
    yield store
    store.close()
    postgres_server.drop_database(url)

"""Fault suite, ingest: bad archives and sources (the rest is ingested), archive limits, unsafe
member names, and kill -9 at every stage of an ingest (a consistent store; the next run finishes).

Archives are built from real SQLite documentation pages and damaged byte by byte. Embeddings come
from the loopback OpenAI-compatible server (real HTTP), so subprocesses start fast and the
embedding stage can be held open to kill a process inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.embedders import make_embedder
from shared.errors import SourceError
from shared.ingest import ingest
from shared.settings import load_settings
from shared.store import Store

from .helpers import archives
from .helpers.consistency import check_store

pytestmark = pytest.mark.fault

NAMES = ["autoinc.html", "lang_vacuum.html", "c3ref/busy_timeout.html", "limits.html", "wal.html"]


@pytest.fixture
def hashed(openai_server, monkeypatch):
    """Settings and embedder that embed through the loopback server (also for CLI runs in this process)."""
    monkeypatch.setenv("DEEPMEM_EMBEDDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("DEEPMEM_EMBEDDING_DIMENSIONS", "64")
    settings = load_settings()
    return settings, make_embedder(settings)


def _ingest(tmp_path, hashed, target, **kw):
    settings, embedder = hashed
    settings = settings.model_copy(update=kw.pop("settings", {}))
    with Store.open(tmp_path / "store.db") as store:
        report = ingest(store, embedder, settings, str(target), progress=False, **kw)
        return report, check_store(store), [s.uri for s in store.sources()]


def _reasons(report) -> dict[str, str]:
    return {f["url"]: f["reason"] for f in report.failures}


# -- damaged archives: the damaged member is reported, the others are ingested -------------------

def test_a_corrupt_zip_member_is_reported_and_the_rest_ingested(tmp_path, small_docs, hashed):
    path = archives.make_zip(tmp_path / "docs.zip", archives.pages(small_docs, NAMES))
    archives.corrupt_zip_member(path, "limits.html")
    report, pages, _ = _ingest(tmp_path, hashed, path)
    assert set(pages) == set(NAMES) - {"limits.html"}
    assert "cannot read this member: corrupt" in _reasons(report)["limits.html"]


@pytest.mark.parametrize("method,claim,harmless", [
    (zipfile.ZIP_DEFLATED, "smaller", False),  # read stops short: the CRC does not match
    (zipfile.ZIP_STORED, "larger", False),  # read runs into the next member: the CRC does not match
    (zipfile.ZIP_DEFLATED, "larger", True),  # the deflate stream ends where it should: the data is whole
])
def test_a_zip_member_lying_about_its_size_is_reported_and_the_rest_ingested(tmp_path, small_docs, hashed, method,
                                                                             claim, harmless):
    files = archives.pages(small_docs, NAMES)
    path = archives.make_zip(tmp_path / "docs.zip", files, compression=method)
    real = len(files["wal.html"])
    archives.lie_about_zip_size(path, "wal.html", real // 2 if claim == "smaller" else real * 2,
                                compressed=method == zipfile.ZIP_STORED)
    report, pages, _ = _ingest(tmp_path, hashed, path)
    if harmless:
        assert set(pages) == set(NAMES) and not report.failures
        return
    assert set(pages) == set(NAMES) - {"wal.html"}
    assert "cannot read this member: " in _reasons(report)["wal.html"]


def test_a_truncated_tar_gz_keeps_what_it_listed_and_deletes_nothing(tmp_path, small_docs, hashed):
    files = archives.pages(small_docs, NAMES)
    whole = archives.make_tar(tmp_path / "docs.tar.gz", files)
    first, pages, _ = _ingest(tmp_path, hashed, whole)
    assert set(pages) == set(NAMES) and first.complete
    archives.cut(whole, int(whole.stat().st_size * 0.6))  # an interrupted download: the same file, cut short
    report, after, _ = _ingest(tmp_path, hashed, whole)
    assert not report.complete and report.pages_removed == 0 and set(after) == set(NAMES)
    assert report.pages_unchanged >= 1  # what was listed before the cut was read
    assert any("truncated" in reason for reason in _reasons(report).values())


def test_a_tar_member_lying_about_its_size_is_reported_and_the_rest_ingested(tmp_path, small_docs, hashed):
    files = archives.pages(small_docs, NAMES)
    path = archives.make_tar(tmp_path / "docs.tar", files, mode="w")
    archives.lie_about_tar_size(path, "c3ref/busy_timeout.html", len(files["c3ref/busy_timeout.html"]) + 700)
    report, pages, _ = _ingest(tmp_path, hashed, path)
    assert {"autoinc.html", "lang_vacuum.html"} <= set(pages)  # the members before the lie
    assert "c3ref/busy_timeout.html" not in pages
    assert not report.complete and report.failures


def test_a_compressed_stream_that_is_corrupt_is_refused_whole(tmp_path, small_docs, hashed):
    """Damage inside a gzip stream may decode silently into wrong text; only the stream's checksum
    at its end shows it, and it cannot say which member is wrong: nothing from it is trusted."""
    files = archives.pages(small_docs, NAMES)
    plain = archives.make_tar(tmp_path / "docs.tar", files, mode="w")
    path = archives.gzip_file(plain, tmp_path / "docs.tar.gz")
    first, pages, _ = _ingest(tmp_path, hashed, path)
    data = bytearray(path.read_bytes())
    middle = int(len(data) * 0.7)
    data[middle: middle + 200] = bytes(200)
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as refused:
        _ingest(tmp_path, hashed, path)
    assert "is corrupt" in str(refused.value) and "nothing was ingested" in str(refused.value)
    assert "\n" not in str(refused.value)
    with Store.open(tmp_path / "store.db") as store:
        assert check_store(store) == pages  # what the intact archive gave is kept, untouched


def test_an_archive_that_cannot_be_opened_is_refused_and_not_registered(tmp_path, small_docs, hashed):
    path = archives.make_zip(tmp_path / "docs.zip", archives.pages(small_docs, NAMES))
    archives.cut(path, path.stat().st_size // 2)  # no central directory
    settings, embedder = hashed
    with Store.open(tmp_path / "store.db") as store:
        with pytest.raises(SourceError, match="cannot open the archive"):
            ingest(store, embedder, settings, str(path), progress=False)
        assert store.sources() == []
        check_store(store)


def test_the_cli_reports_a_truncated_archive_in_one_line_not_as_interrupted(tmp_path, small_docs, openai_server):
    """EOFError from a truncated gzip stream used to surface as click's Abort: "interrupted", exit 130."""
    path = archives.make_tar(tmp_path / "docs.tar.gz", archives.pages(small_docs, NAMES))
    archives.cut(path, int(path.stat().st_size * 0.6))
    env = dict(os.environ, DEEPMEM_HOME=str(tmp_path / "home"), DEEPMEM_EMBEDDER="openai",
               OPENAI_BASE_URL=openai_server.base_url, DEEPMEM_EMBEDDING_DIMENSIONS="64")
    run = subprocess.run([sys.executable, "-c", "from shared.cli import main; main()", "ingest", str(path), "-q"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "interrupted" not in run.stderr
    assert "the source was not read completely" in run.stdout
    assert "skipped docs.tar.gz: the archive is truncated" in run.stdout


# -- sources that cannot be read: the others are still ingested; list and remove ---------------

def _two_sources(tmp_path, small_docs, b_names=NAMES[2:]):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, names in ((a, NAMES[:2]), (b, b_names)):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(small_docs / name, folder / name)
    return a, b


def test_a_deleted_source_does_not_stop_the_others_from_being_refreshed(tmp_path, small_docs, hashed):
    a, b = _two_sources(tmp_path, small_docs)
    runner = CliRunner()
    for folder in (a, b):
        assert runner.invoke(cli, ["ingest", str(folder), "-q"], catch_exceptions=False).exit_code == 0
    shutil.rmtree(a)  # the first source is gone
    page = b / "wal.html"
    page.write_text(page.read_text().replace("write-ahead log", "write-ahead journal", 1))
    result = runner.invoke(cli, ["ingest", "-q"], catch_exceptions=False)
    assert result.exit_code == 1
    assert f"{a}: not ingested: {a} does not exist" in result.output
    assert f"`deepmem sources remove {a}` forgets it" in result.output
    assert f"{b}: 3 pages read" in result.output and "1 changed" in result.output  # b was refreshed
    with Store.open(tmp_path / "home" / "store.db") as store:
        assert len(check_store(store)) == 5  # a's pages are kept until it is removed
        assert store.conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%write-ahead journal%'").fetchone()[0]


def test_sources_are_listed_and_one_is_removed_with_its_pages_and_chunks(tmp_path, small_docs, hashed):
    a, b = _two_sources(tmp_path, small_docs)
    runner = CliRunner()
    for folder in (a, b):
        runner.invoke(cli, ["ingest", str(folder), "-q"], catch_exceptions=False)
    listed = json.loads(runner.invoke(cli, ["sources", "--json"], catch_exceptions=False).output)
    assert [(s["uri"], s["pages"]) for s in listed] == [(str(a), 2), (str(b), 3)]
    assert all(s["chunks"] > 0 for s in listed)
    shutil.rmtree(a)
    result = runner.invoke(cli, ["sources", "remove", str(a)], catch_exceptions=False)  # gone, still removable
    assert result.exit_code == 0 and f"removed {a}: 2 pages, {listed[0]['chunks']} chunks" in result.output
    with Store.open(tmp_path / "home" / "store.db") as store:
        pages = check_store(store)
        assert set(pages) == {"c3ref/busy_timeout.html", "limits.html", "wal.html"}
        assert [s.uri for s in store.sources()] == [str(b)]
    assert "no source" in runner.invoke(cli, ["sources", "remove", str(a)]).output
    assert runner.invoke(cli, ["ingest", "-q"], catch_exceptions=False).exit_code == 0  # nothing missing now
    search = json.loads(runner.invoke(cli, ["search", "busy timeout", "--json"], catch_exceptions=False).output)
    assert search["results"] and all(not r["url"].startswith(("autoinc", "lang_vacuum")) for r in search["results"])


def test_the_nightly_reingest_skips_a_missing_source_and_refreshes_the_others(tmp_path, small_docs, hashed):
    from shared.deep_memory.nightly import NightlyConfig, run_nightly
    from shared.deep_memory.trainer import TrainConfig
    from shared.home import Home

    from .helpers.corpus import SMALL

    a, b = _two_sources(tmp_path, small_docs, [n for n in SMALL if n not in NAMES[:2]])  # enough to train on
    settings, embedder = hashed
    (tmp_path / "home").mkdir()
    with Store.open(tmp_path / "home" / "store.db") as store:
        for folder in (a, b):
            ingest(store, embedder, settings, str(folder), progress=False)
    shutil.rmtree(a)
    page = b / "limits.html"
    page.write_text(page.read_text().replace("Limits In SQLite", "Limits Of SQLite", 1))
    lines = []
    record = run_nightly(Home.open(tmp_path / "home"), settings,
                         NightlyConfig(reingest=True, generator="offline", train=TrainConfig(max_epochs=2, patience=1)),
                         embedder=embedder, log=lines.append)
    assert record["status"] != "failed", record.get("error")
    assert any(line.startswith(f"not re-ingested {a}: ") and "does not exist" in line for line in lines)
    assert any(line.startswith(f"re-ingested {b}: 0 new, 1 changed") for line in lines)


# -- how much an archive may expand to ----------------------------------------------------------

def _repetitive(small_docs, size: int, unit: int = 8000) -> bytes:
    """The start of a real page repeated to ``size`` bytes (deflate compresses it 120 to 170 times)."""
    unit = (small_docs / "lang_vacuum.html").read_bytes()[:unit]
    return (unit * (size // len(unit) + 1))[:size]


def test_an_archive_expanding_past_the_byte_limit_is_refused_whole(tmp_path, small_docs, hashed):
    files = {f"part{i}.html": _repetitive(small_docs, 900_000) for i in range(6)}
    path = archives.make_zip(tmp_path / "docs.zip", files)
    with pytest.raises(SourceError) as refused:
        _ingest(tmp_path, hashed, path, settings={"archive_max_bytes": 4_000_000})
    message = str(refused.value)
    assert "\n" not in message and "DEEPMEM_ARCHIVE_MAX_BYTES" in message and "nothing was ingested" in message
    with Store.open(tmp_path / "store.db") as store:
        assert store.sources() == [] and check_store(store) == {}


def test_a_tar_listing_stops_at_the_limit_without_expanding_the_rest(tmp_path, hashed):
    zeros = bytes(40_000_000)
    path = archives.make_tar(tmp_path / "bomb.tar.gz", {f"z{i}.html": zeros for i in range(5)})  # 200 MB
    assert path.stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(SourceError, match="expands to more than 50,000,000 bytes"):
        _ingest(tmp_path, hashed, path, settings={"archive_max_bytes": 50_000_000})
    assert time.perf_counter() - started < 30


def test_an_archive_with_too_many_members_is_refused(tmp_path, small_docs, hashed):
    page = (small_docs / "autoinc.html").read_bytes()
    path = archives.make_tar(tmp_path / "docs.tar.gz", {f"p{i:03}.html": page for i in range(30)})
    with pytest.raises(SourceError, match=r"more than 20 members \(DEEPMEM_ARCHIVE_MAX_MEMBERS\)"):
        _ingest(tmp_path, hashed, path, settings={"archive_max_members": 20})


def test_a_zip_bomb_is_refused_by_default(tmp_path, small_docs, hashed):
    """The review's case: a 72 KB zip that expanded to 26,000 chunks. Default settings refuse it."""
    files = {f"p{i}.html": _repetitive(small_docs, 1_800_000, unit=2000) for i in range(6)}  # 10.8 MB
    path = archives.make_zip(tmp_path / "bomb.zip", files)
    assert path.stat().st_size < 72_000
    with pytest.raises(SourceError, match="times its size .* a zip bomb"):
        _ingest(tmp_path, hashed, path)
    # the same pages, unrepeated, are not refused
    fine = archives.make_zip(tmp_path / "fine.zip", archives.pages(small_docs, NAMES))
    _, pages, _ = _ingest(tmp_path, hashed, fine)
    assert set(pages) == set(NAMES)


def test_a_huge_tar_header_is_refused_without_being_read_into_memory(tmp_path, small_docs, hashed):
    """tarfile reads a GNU long-name header whole: 60 MB of name would be held in memory."""
    import gzip
    import tarfile

    good = tarfile.TarInfo("autoinc.html")
    data = (small_docs / "autoinc.html").read_bytes()
    good.size = len(data)
    longname = tarfile.TarInfo("././@LongLink")
    longname.type = tarfile.GNUTYPE_LONGNAME
    longname.size = 60_000_000
    blob = (good.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)
            + longname.tobuf(tarfile.GNU_FORMAT) + b"a" * longname.size + bytes(1024))
    path = tmp_path / "docs.tar.gz"
    path.write_bytes(gzip.compress(blob, compresslevel=1))
    tracemalloc.start()
    try:
        report, pages, _ = _ingest(tmp_path, hashed, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(pages) == {"autoinc.html"}
    assert any("extended header" in f["reason"] for f in report.failures)
    assert peak < 20_000_000


# -- member names -------------------------------------------------------------------------------

UNSAFE = ["../../etc/escape.html", "docs/../../up.html", "/etc/absolute.html", "C:/Windows/drive.html",
          "C:\\docs\\backslash.html", "..\\..\\win-escape.html"]
HIDDEN = [".git/config.html", "docs/.env.md", ".hidden/page.html", "__MACOSX/._autoinc.html"]


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_unsafe_member_names_are_refused_and_hidden_ones_skipped(tmp_path, small_docs, hashed, kind):
    page = (small_docs / "autoinc.html").read_bytes()
    files = {name: page.replace(b"AUTOINCREMENT", name.encode()[-12:], 1) for name in UNSAFE + HIDDEN}
    files["./ok/fine.html"] = page
    path = (archives.make_tar(tmp_path / "docs.tar", files, mode="w") if kind == "tar"
            else archives.make_zip(tmp_path / "docs.zip", files))
    report, pages, _ = _ingest(tmp_path, hashed, path, base_url="https://docs.example.com/v1/")
    assert set(pages) == {"https://docs.example.com/v1/ok/fine.html"}  # "./" is harmless and dropped
    reasons = _reasons(report)
    unsafe = {unquote(url).replace("\\", "/"): r for url, r in reasons.items()}
    for name in UNSAFE:
        assert "unsafe member name" in unsafe[name.replace("\\", "/")], name
    assert not any(h.split("/")[-1] in url for h in HIDDEN for url in reasons)  # skipped, not errors


def test_page_and_chunk_urls_are_percent_encoded(tmp_path, small_docs, hashed):
    page = (small_docs / "lang_createtable.html").read_text()
    odd = page.replace('id="rowids_and_the_integer_primary_key"', 'id="row ids<!channel>"', 1)
    assert odd != page
    names = ["with space.html", "new\nline.html", "hash#and?query.html", "100%.html", "café.html", "odd anchors.html"]
    files = {name: (odd if name == "odd anchors.html" else page).encode() for name in names}
    path = archives.make_tar(tmp_path / "docs.tar.gz", files)
    _, pages, _ = _ingest(tmp_path, hashed, path, base_url="https://docs.example.com/")
    assert sorted(unquote(urlsplit(u).path).lstrip("/") for u in pages) == sorted(names)
    with Store.open(tmp_path / "store.db") as store:
        urls = [r[0] for r in store.conn.execute("SELECT url FROM chunks UNION SELECT url FROM pages")]
    for url in urls:  # what Slack accepts in a button's url: printable ASCII, no spaces
        assert all(32 < ord(c) < 127 for c in url) and "<" not in url and ">" not in url, url
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.netloc == "docs.example.com" and "#" not in parts.path
    assert "https://docs.example.com/odd%20anchors.html#row%20ids%3C!channel%3E" in urls


def test_a_base_url_that_is_not_a_web_address_is_refused(tmp_path, small_docs, hashed):
    for bad in ("javascript:alert(1)//", "https://docs.example.com/a b/", "docs.example.com/", "https://x/?q=1"):
        with pytest.raises(SourceError, match="--base-url"):
            _ingest(tmp_path, hashed, small_docs, base_url=bad)


# -- pages the parser cannot or should not read: skipped, the rest ingested --------------------

def test_a_deeply_nested_page_and_a_malformed_link_do_not_stop_a_folder(tmp_path, small_docs, hashed):
    """A 100,000-deep page took minutes to parse; "http://[oops" in a link raised out of the ingest."""
    docs = tmp_path / "docs"
    for name in NAMES:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_docs / name, docs / name)
    (docs / "deep.html").write_text("<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000)
    (docs / "badlink.html").write_text((small_docs / "autoinc.html").read_text()
                                       + '<p>See <a href="http://[oops/x.html">this</a>.</p>')
    started = time.perf_counter()
    report, pages, _ = _ingest(tmp_path, hashed, docs)
    assert time.perf_counter() - started < 60
    assert set(pages) == set(NAMES) | {"badlink.html"}
    assert "nested more than 1,000 elements deep" in _reasons(report)["deep.html"]


def test_a_page_that_takes_too_long_to_parse_is_skipped(tmp_path, small_docs, hashed):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(small_docs / "autoinc.html", docs / "autoinc.html")
    (docs / "brackets.md").write_bytes(b"[" * 1_000_000)  # markdown-it-py 4.3: about 9 s
    report, pages, _ = _ingest(tmp_path, hashed, docs, parse_seconds=1.0)
    assert set(pages) == {"autoinc.html"}
    assert _reasons(report)["brackets.md"] == "parsing took longer than 1 s: skipped"


def test_a_folder_that_cannot_be_listed_keeps_its_stored_pages(tmp_path, small_docs, hashed):
    """os.walk skipped a folder it could not list, silently: its pages were then deleted as gone.
    (The folder is made unlistable by a path longer than PATH_MAX, which stops root as well.)"""
    docs = tmp_path / "docs"
    for name in NAMES:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_docs / name, docs / name)
    limit = os.pathconf(docs, "PC_PATH_MAX")
    room = limit - 20 - len(str(docs)) - len("/deep.html")  # the deepest page's path: 20 short of the limit
    names = []
    while room > 3:
        names.append((f"{len(names):02}" + "d" * 200)[: room - 1])
        room -= len(names[-1]) + 1
    deep = docs.joinpath(*names)
    deep.mkdir(parents=True)
    shutil.copy(small_docs / "autoinc.html", deep / "deep.html")
    first, pages, _ = _ingest(tmp_path, hashed, docs)
    assert first.complete and len(pages) == len(NAMES) + 1
    longer = docs / (names[0] + "x" * 50)  # now the deepest folder's path is longer than the system allows
    assert len(str(deep / "deep.html")) + 50 > limit
    (docs / names[0]).rename(longer)
    report, after, _ = _ingest(tmp_path, hashed, docs)
    assert not report.complete and report.pages_removed == 0
    assert set(after) == set(pages)  # kept, although not seen
    assert any("cannot list this folder" in f["reason"] and "File name too long" in f["reason"]
               for f in report.failures)


@pytest.fixture
def gated_server():
    """A loopback OpenAI server whose embeddings route can hold a request open."""
    from .helpers.openai_server import OpenAIServer

    class Gated(OpenAIServer):
        gate = None

        async def _embeddings(self, request):
            if self.gate is not None:
                return await self.gate(request)
            return await super()._embeddings(request)

    server = Gated()
    server.start()
    yield server
    server.stop()


def _hold(server, hold_at: int):
    import asyncio
    import threading

    state = {"count": 0, "arrived": threading.Event(), "release": threading.Event()}
    original = type(server).__mro__[1]._embeddings

    async def gate(request):
        state["count"] += 1
        if state["count"] == hold_at:
            state["arrived"].set()
            while not state["release"].is_set():
                await asyncio.sleep(0.01)
        return await original(server, request)

    server.gate = gate
    return state


def _env(home: Path, server) -> dict:
    return dict(os.environ, DEEPMEM_HOME=str(home), DEEPMEM_EMBEDDER="openai", OPENAI_BASE_URL=server.base_url,
                DEEPMEM_EMBEDDING_DIMENSIONS="64")


def _cli(*args) -> list[str]:
    return [sys.executable, "-c", "from shared.cli import main; main()", *args]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writing(db: Path) -> bool:
    """True while another connection holds the store's write lock (is inside a write transaction)."""
    import sqlite3

    if not db.exists():
        return False
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


def _kill_inside_a_long_write(proc: subprocess.Popen, db: Path, min_seconds: float = 0.02,
                              deadline: float = 300, stderr: Path | None = None) -> None:
    """SIGKILL the process while it holds the write lock of a transaction that has lasted at least
    ``min_seconds`` (page batches and deletions; not the millisecond bookkeeping ones). SIGSTOP first,
    and check the lock is still held, so the kill lands inside the transaction, not after it."""
    end = time.monotonic() + deadline
    since = None
    while time.monotonic() < end and proc.poll() is None:
        if not _writing(db):
            since = None
            time.sleep(0.002)
            continue
        since = since or time.monotonic()
        if time.monotonic() - since < min_seconds:
            time.sleep(0.002)
            continue
        proc.send_signal(signal.SIGSTOP)
        if _writing(db):
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return
        proc.send_signal(signal.SIGCONT)
        since = None
    said = stderr.read_text(errors="replace")[-2000:] if stderr is not None and stderr.exists() else ""
    raise AssertionError("the process never held the write lock long enough to be killed inside it "
                         f"(exit code {proc.poll()}): {said}")


def _clean(tmp_path, docs: Path, server, *args) -> dict:
    home = tmp_path / "clean-home"
    run = subprocess.run(_cli("ingest", str(docs), "-q", *args), env=_env(home, server), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with Store.open(home / "store.db") as store:
        return check_store(store)


def _rerun_matches_clean(tmp_path, docs: Path, home: Path, server) -> None:
    rerun = subprocess.run(_cli("ingest", str(docs), "-q"), env=_env(home, server), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    with Store.open(home / "store.db") as store:
        assert check_store(store) == _clean(tmp_path, docs, server)
        assert [s.uri for s in store.sources()] == [str(docs.resolve())]


def _docs(tmp_path, small_docs, extra: dict[str, bytes] | None = None) -> Path:
    from .helpers.corpus import SMALL

    docs = tmp_path / "docs"
    for name in SMALL:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_docs / name, docs / name)
    for name, data in (extra or {}).items():
        (docs / name).write_bytes(data)
    return docs


def test_kill_9_while_parsing_leaves_no_trace_and_a_rerun_finishes(tmp_path, small_docs, gated_server):
    docs = _docs(tmp_path, small_docs, {"0-slow.md": b"[" * 1_500_000 + b"\n\nSlow page."})  # read first, ~13 s
    # (markdown-it-py 4.3 reads brackets in linear time, 9 µs each here; older releases were slower)
    state = _hold(gated_server, hold_at=10**9)  # counts requests, holds none
    home = tmp_path / "home"
    proc = subprocess.Popen(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker, end = None, time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        workers = [c for c in _children(proc.pid)
                   if b"shared.parsers.worker" in Path(f"/proc/{c}/cmdline").read_bytes()]
        if workers and _cpu_seconds(workers[0]) > 2.0:  # past its imports: inside the slow page
            worker = workers[0]
            break
        time.sleep(0.05)
    assert worker is not None and proc.poll() is None, "never caught the ingest parsing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert state["count"] == 0  # killed before anything was embedded
    with Store.open(home / "store.db") as store:
        assert check_store(store) == {} and store.sources() == []  # nothing written, the source not registered
    end = time.monotonic() + 90
    while Path(f"/proc/{worker}").exists() and time.monotonic() < end:  # the orphaned parser ends on its own
        time.sleep(0.2)
    assert not Path(f"/proc/{worker}").exists()
    _rerun_matches_clean(tmp_path, docs, home, gated_server)


def test_kill_9_while_embedding_keeps_whole_pages_only_and_a_rerun_finishes(tmp_path, small_docs, gated_server):
    docs = _docs(tmp_path, small_docs)
    state = _hold(gated_server, hold_at=2)  # the first batch is written, the second is being embedded
    home = tmp_path / "home"
    proc = subprocess.Popen(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert state["arrived"].wait(180), "the second embedding request never came"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        state["release"].set()
    clean = _clean(tmp_path, docs, gated_server)
    with Store.open(home / "store.db") as store:
        partial = check_store(store)
        assert 0 < len(partial) < len(clean)
        assert all(partial[url] == clean[url] for url in partial)  # every stored page is whole
    _rerun_matches_clean(tmp_path, docs, home, gated_server)


def test_kill_9_inside_the_write_transaction_rolls_it_back_and_a_rerun_finishes(tmp_path, small_docs, gated_server):
    docs = _docs(tmp_path, small_docs)
    home = tmp_path / "home"
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server),
                                stdout=subprocess.DEVNULL, stderr=err)
    _kill_inside_a_long_write(proc, home / "store.db", min_seconds=0.005,  # a page batch: a few ms on a quiet core
                              stderr=tmp_path / "stderr")
    clean = _clean(tmp_path, docs, gated_server)
    with Store.open(home / "store.db") as store:
        partial = check_store(store)
        assert len(partial) < len(clean)
        assert all(partial[url] == clean[url] for url in partial)
    _rerun_matches_clean(tmp_path, docs, home, gated_server)


def test_kill_9_while_removing_gone_pages_and_a_rerun_finishes(tmp_path, small_docs, gated_server):
    docs = _docs(tmp_path, small_docs)
    home = tmp_path / "home"
    first = subprocess.run(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server), capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    with Store.open(home / "store.db") as store:
        before = check_store(store)
    for page in sorted(docs.rglob("*.html"))[2:]:  # 20 of the 22 pages are gone
        page.unlink()
    proc = subprocess.Popen(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_inside_a_long_write(proc, home / "store.db", min_seconds=0.005)  # 20 pages go in a few ms
    with Store.open(home / "store.db") as store:
        assert check_store(store) == before  # the deletion is one transaction: all of it or none
    _rerun_matches_clean(tmp_path, docs, home, gated_server)


def test_kill_9_while_removing_a_source_and_then_removing_it(tmp_path, small_docs, gated_server):
    docs = _docs(tmp_path, small_docs)
    home = tmp_path / "home"
    assert subprocess.run(_cli("ingest", str(docs), "-q"), env=_env(home, gated_server),
                          capture_output=True, timeout=600).returncode == 0
    with Store.open(home / "store.db") as store:
        before = check_store(store)
    proc = subprocess.Popen(_cli("sources", "remove", str(docs)), env=_env(home, gated_server),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_inside_a_long_write(proc, home / "store.db", min_seconds=0.005)
    with Store.open(home / "store.db") as store:
        assert check_store(store) == before and len(store.sources()) == 1
    again = subprocess.run(_cli("sources", "remove", str(docs)), env=_env(home, gated_server),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "removed" in again.stdout
    with Store.open(home / "store.db") as store:
        assert check_store(store) == {} and store.sources() == []

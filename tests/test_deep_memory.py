"""Deep memory: the adapter, its loss, versions, question files, training, gating and search."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.deep_memory import AdapterRegistry, LinearAdapter
from shared.deep_memory.adapter import AdapterConfig, QueryAdapter
from shared.deep_memory.job import TrainOptions, run_training
from shared.deep_memory.trainer import NotEnoughData, TrainConfig
from shared.deep_memory.versions import ActiveStatus, AdapterError
from shared.errors import EmptyStore
from shared.home import Home
from shared.queries import QueryFileError, Resolver, load_queries
from shared.settings import load_settings


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- the adapter and its loss ---------------------------------------------------------------

def test_untrained_adapter_is_the_exact_identity_and_round_trips(tmp_path):
    import torch

    model = QueryAdapter(AdapterConfig(dim=8))
    q = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    assert torch.equal(model.weight, torch.eye(8)) and torch.equal(model.bias, torch.zeros(8))
    assert torch.allclose(model(q), q, atol=1e-6)
    assert float(model.drift().detach()) == 0.0
    with torch.no_grad():
        model.weight.add_(0.1 * torch.randn(8, 8))
        model.bias.add_(0.05)
    adapter = model.to_numpy()
    adapter.save(tmp_path / "v", {"config": {"dim": 8}})
    loaded, meta = LinearAdapter.load(tmp_path / "v")
    assert np.allclose(loaded.weight, model.weight.detach().numpy()) and np.allclose(loaded.bias, 0.05 + 0 * loaded.bias)
    assert np.allclose(loaded(q.numpy()), model(q).detach().numpy(), atol=1e-6)
    assert np.allclose(np.linalg.norm(loaded(q.numpy()), axis=1), 1.0, atol=1e-6)


def test_adapter_refuses_corrupt_weights(tmp_path):
    with pytest.raises(ValueError, match="not finite"):
        LinearAdapter(np.full((4, 4), np.nan), np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        LinearAdapter(np.eye(4), np.zeros(3))


def test_loss_matches_a_hand_computation():
    import torch

    from shared.deep_memory.losses import multi_positive_contrastive_loss

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    positive = torch.tensor([[True, False, True], [False, True, False]])
    t = 0.5
    # question 0: positives 0 and 2 -> -log((e^2 + e^1.2) / (e^2 + e^0 + e^1.2))
    l0 = -math.log((math.exp(2) + math.exp(1.2)) / (math.exp(2) + 1 + math.exp(1.2)))
    # question 1: positive 1 -> -log(e^2 / (1 + e^2 + e^1.6))
    l1 = -math.log(math.exp(2) / (1 + math.exp(2) + math.exp(1.6)))
    loss = multi_positive_contrastive_loss(q, c, positive, temperature=t)
    assert abs(float(loss) - (l0 + l1) / 2) < 1e-5


# -- versions --------------------------------------------------------------------------------

def test_registry_saves_activates_rolls_back_atomically(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    assert reg.active_name() is None
    with pytest.raises(AdapterError, match="nothing to roll back"):
        reg.rollback()
    a = reg.save(LinearAdapter.identity(4), {"embedder": "e", "config": {"dim": 4}})
    b = reg.save(LinearAdapter(np.eye(4) * 2, np.zeros(4)), {"embedder": "e", "config": {"dim": 4}})
    assert (a.name, b.name) == ("v0001", "v0002")
    reg.activate("v0001")
    reg.activate("v0002")
    assert reg.active_name() == "v0002"
    assert reg.rollback() == "v0001" and reg.active_name() == "v0001"
    with pytest.raises(AdapterError, match="known: v0001, v0002"):
        reg.activate("v0009")
    # a writer killed mid-save leaves a partial directory: never listed, cleaned at the next save
    (tmp_path / "adapters" / "v0003.partial-999").mkdir()
    assert [v.name for v in reg.versions()] == ["v0001", "v0002"]
    c = reg.save(LinearAdapter.identity(4), {"embedder": "e", "config": {"dim": 4}})
    assert c.name == "v0003" and not (tmp_path / "adapters" / "v0003.partial-999").exists()
    # a garbled pointer is no crash, but it is not silently "no adapter" either: it is reported
    reg.pointer.write_text("{not json")
    assert reg.active_name() is None
    assert reg.active_status().name is None and "active.json is damaged" in reg.active_status().problem
    with pytest.raises(AdapterError, match="damaged"):
        reg.load_active()
    with pytest.raises(AdapterError, match="adapters activate VERSION"):
        reg.rollback()
    reg.deactivate()  # rewriting the pointer repairs it
    assert reg.active_name() is None and reg.active_status() == ActiveStatus(None, None)


def test_a_damaged_active_version_is_reported_not_taken_for_none(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    reg.save(LinearAdapter.identity(4), {"embedder": "e", "config": {"dim": 4}})
    reg.activate("v0001")
    assert reg.active_status() == ActiveStatus("v0001", None)
    damaged = {"weights.npz": b"PK\x03\x04 not really a zip", "meta.json": b'{"format": "deepmem-adapter v1", "con'}
    for name, data in damaged.items():
        original = (reg.root / "v0001" / name).read_bytes()
        (reg.root / "v0001" / name).write_bytes(data)
        status = reg.active_status()
        assert status.name == "v0001" and status.problem.startswith("adapter v0001 cannot be loaded"), name
        assert "\n" not in status.problem
        with pytest.raises(AdapterError, match="cannot be loaded"):  # not a BadZipFile traceback
            reg.activate("v0001")
        (reg.root / "v0001" / name).write_bytes(original)
    (reg.root / "v0001" / "weights.npz").unlink()
    assert "cannot be loaded" in reg.active_status().problem
    reg.pointer.write_text('{"version": "../../etc", "history": []}')
    assert "no adapter version '../../etc'" in reg.active_status().problem
    reg.pointer.write_text('["v0001"]')
    assert "not a pointer" in reg.active_status().problem


# -- question files ----------------------------------------------------------------------------

def test_query_file_errors_name_the_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"query": "ok", "relevant": ["a.html"]}\n\n{"query": "", "relevant": ["x"]}\n')
    with pytest.raises(QueryFileError, match=r"q.jsonl:3: \"query\" must be a non-empty string"):
        load_queries(f)
    f.write_text('{"query": "ok", "relevant": ["a.html"]}\n{"query": "broken", \n')
    with pytest.raises(QueryFileError, match=r"q.jsonl:2: not valid JSON"):
        load_queries(f)
    f.write_text('{"query": "q", "relevant": [42]}\n')
    with pytest.raises(QueryFileError, match=r"q.jsonl:1: a relevant entry must be"):
        load_queries(f)
    f.write_text("")
    with pytest.raises(QueryFileError, match="empty"):
        load_queries(f)
    with pytest.raises(QueryFileError, match="no such file"):
        load_queries(tmp_path / "missing.jsonl")


def test_relevance_entries_resolve_to_chunks(store_copy, tmp_path):
    rowid, cid = store_copy.conn.execute(
        "SELECT rowid, id FROM chunks WHERE text LIKE 'Except for WITHOUT ROWID tables%'").fetchone()
    page_chunks = store_copy.conn.execute(
        "SELECT count(*) FROM chunks WHERE url LIKE 'https://sqlite.org/lang_createtable.html%'").fetchone()[0]
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in [
        {"query": "by id", "relevant": [cid]},
        {"query": "by page", "relevant": ["https://sqlite.org/lang_createtable.html"]},
        {"query": "by relative page", "relevant": ["lang_createtable.html"]},
        {"query": "by section", "relevant": ["lang_createtable.html#rowid"]},
        {"query": "graded", "relevant": [[cid, 1.0], ["nowhere.html", 1.0], ["autoinc.html", 0]]},
    ]))
    resolved = Resolver(store_copy).resolve(load_queries(f))
    assert resolved[0].targets == [frozenset([rowid])]
    assert len(resolved[1].targets[0]) == page_chunks == len(resolved[2].targets[0])
    assert rowid in resolved[3].targets[0] and len(resolved[3].targets[0]) < page_chunks
    assert resolved[4].targets == [frozenset([rowid])] and resolved[4].unresolved == ["nowhere.html"]


def test_reference_and_llamaindex_formats(store_copy, tmp_path):
    rowid, cid, text = store_copy.conn.execute(
        "SELECT rowid, id, text FROM chunks WHERE text LIKE 'Except for WITHOUT ROWID tables%'").fetchone()
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"questions": ["what is a rowid?"], "relevance": [[[cid, 1.0]]]}))
    assert Resolver(store_copy).resolve(load_queries(ref))[0].targets == [frozenset([rowid])]
    llama = tmp_path / "llama.json"
    llama.write_text(json.dumps({"queries": {"q1": "what is a rowid?"},
                                 "corpus": {"node-1": "Preamble text. " + text + " Trailing text."},
                                 "relevant_docs": {"q1": ["node-1"]}, "mode": "text"}))
    resolved = Resolver(store_copy).resolve(load_queries(llama))
    assert rowid in resolved[0].targets[0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": {"q1": "x"}, "corpus": {}, "relevant_docs": {"q1": ["nope"]}}))
    with pytest.raises(QueryFileError, match="not in the corpus"):
        load_queries(bad)


# -- training ------------------------------------------------------------------------------------

@pytest.fixture
def home(store_copy):
    return Home.open(store_copy.path.parent)


def _options(**kw):
    return TrainOptions(generator="offline", progress=False, **kw)


def test_training_improves_held_out_questions_and_activates(store_copy, embedder, home):
    settings = load_settings()
    report = run_training(store_copy, embedder, home, settings, _options(), log=lambda *a: None)
    test = report.comparisons[0]
    assert report.counts["train"] >= 100 and report.counts["test"] >= 20
    # a version is kept only when an epoch beat the identity on validation
    assert report.version == "v0001" and report.train["best_epoch"] >= 0
    assert max(report.train["val_mrr_history"]) > report.train["base_val_mrr"]
    assert test.deep["hit_rate@10"] >= test.base["hit_rate@10"]  # it finds at least as many held-out answers
    # activation follows the judge: with too few held-out real questions (this small corpus has almost
    # none), a gain on the held-out synthetic split beyond its noise, and no loss on the real ones
    meta = json.loads((home.adapters_dir / "v0001" / "meta.json").read_text())
    real, synthetic = meta["judge"].get("real", {"queries": 0}), meta["judge"]["synthetic"]
    assert real["queries"] < 8
    assert report.activated == (synthetic["gain"] > max(synthetic["noise"], 0.002)
                                and not (real["queries"] and real["gain_over_plain"] < 0))
    AdapterRegistry(home.adapters_dir).activate("v0001")
    meta = json.loads((home.adapters_dir / "v0001" / "meta.json").read_text())
    assert meta["embedder"] == embedder.name and meta["split"]["by"] == "chunk" and meta["split"]["salt"]
    assert meta["counts"]["train"] == report.counts["train"] and meta["train_config"]["seed"] == 0

    # the test split holds no chunk that was trained on
    from shared.deep_memory.dataset import Dataset, SplitSpec, split_salt
    from shared.questions import synthetic_questions

    qs, _ = synthetic_questions(store_copy, settings, "offline", progress=False)
    row_of = dict(store_copy.conn.execute("SELECT id, rowid FROM chunks"))
    data = Dataset.build(store_copy, [("s", [(q.text, tuple(row_of[c] for c in q.positives)) for q in qs])],
                         SplitSpec(salt=split_salt(0)))
    trained = {p for e in data.train for p in e.positives}
    assert trained and not trained & {p for e in data.test + data.val for p in e.positives}

    # search now uses it; --no-deep-memory does not
    with_dm = json.loads(run("search", "how do I make an id column that counts up", "--json").output)
    without = json.loads(run("search", "how do I make an id column that counts up", "--json",
                             "--no-deep-memory").output)
    assert with_dm["adapter"] == "v0001" and without["adapter"] is None
    assert [r["score"] for r in with_dm["results"]] != [r["score"] for r in without["results"]]

    # same data, same seed: the same adapter, bit for bit
    again = run_training(store_copy, embedder, home, settings, _options(activate="never"), log=lambda *a: None)
    w1 = np.load(home.adapters_dir / "v0001" / "weights.npz")["weight"]
    w2 = np.load(home.adapters_dir / again.version / "weights.npz")["weight"]
    assert np.array_equal(w1, w2)
    assert not again.activated and AdapterRegistry(home.adapters_dir).active_name() == "v0001"


def test_a_worse_challenger_keeps_the_champion(store_copy, embedder, home):
    settings = load_settings()
    first = run_training(store_copy, embedder, home, settings, _options(activate="always"), log=lambda *a: None)
    assert first.activated
    # a challenger that barely moves from the identity cannot beat the trained champion
    weak = TrainConfig(lr=1e-6, max_epochs=1, patience=1)
    second = run_training(store_copy, embedder, home, settings, _options(config=weak), log=lambda *a: None)
    assert not second.activated
    assert second.decision.startswith(f"not better than {first.version}") or "nothing to save" in second.decision
    assert AdapterRegistry(home.adapters_dir).active_name() == first.version


def test_an_adapter_for_another_embedder_is_never_used(store_copy, embedder, home):
    # same dimension, another model: its weights would turn queries into nonsense without an error
    reg = AdapterRegistry(home.adapters_dir)
    rng = np.random.default_rng(0)
    reg.save(LinearAdapter(rng.normal(size=(embedder.dim, embedder.dim)), np.zeros(embedder.dim)),
             {"embedder": "some/other-model", "config": {"dim": embedder.dim}})
    reg.activate("v0001")
    out = json.loads(run("search", "how do I make an id column that counts up", "--json").output)
    plain = json.loads(run("search", "how do I make an id column that counts up", "--json",
                           "--no-deep-memory").output)
    assert out["adapter"] is None and out["results"] == plain["results"] and out["results"]
    result = CliRunner().invoke(cli, ["evaluate", "--adapter", "v0001"])
    assert result.exit_code != 0 and "trained for some/other-model" in result.output
    result = CliRunner().invoke(cli, ["adapters", "activate", "v0001"])  # refused, not switched on in vain
    assert result.exit_code == 1 and "search would ignore it" in result.output
    # training compares its challenger with plain search, not with the unfit champion
    report = run_training(store_copy, embedder, home, load_settings(), _options(activate="never"),
                          log=lambda *a: None)
    assert "v0001 was trained for some/other-model" in report.decision


def test_ctrl_c_during_training_leaves_the_active_adapter(store_copy, embedder, home):
    settings = load_settings()
    run_training(store_copy, embedder, home, settings, _options(activate="always"), log=lambda *a: None)
    before = sorted(p.name for p in home.adapters_dir.iterdir())

    def interrupt(message):
        if "epoch 2" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(store_copy, embedder, home, settings, TrainOptions(generator="offline", progress=True),
                     log=interrupt)
    assert sorted(p.name for p in home.adapters_dir.iterdir()) == before
    assert AdapterRegistry(home.adapters_dir).active_name() == "v0001"


def test_too_little_data_is_a_clear_error(tmp_path, small_docs, embedder):
    import shutil

    from shared.ingest import ingest
    from shared.store import Store

    settings = load_settings()
    home = Home.open(tmp_path / "h")
    with Store.open(home.store_path) as empty:
        with pytest.raises(EmptyStore, match="run `deepmem ingest` first"):
            run_training(empty, embedder, home, settings, _options(), log=lambda *a: None)
        docs = tmp_path / "docs"
        docs.mkdir()
        shutil.copy(small_docs / "c3ref/busy_timeout.html", docs / "busy_timeout.html")
        ingest(empty, embedder, settings, str(docs), progress=False)
        with pytest.raises(EmptyStore, match="at least 50"):
            run_training(empty, embedder, home, settings, _options(), log=lambda *a: None)
    with Store.open(tmp_path / "mid.db") as mid:
        for name in ("lang_createtable.html", "lang_altertable.html"):
            shutil.copy(small_docs / name, docs / name)
        ingest(mid, embedder, settings, str(docs), progress=False)
        with pytest.raises(NotEnoughData, match=r"at least 100 are needed"):
            run_training(mid, embedder, home, settings, _options(), log=lambda *a: None)


def test_train_and_evaluate_commands(store_copy, tmp_path):
    result = run("train", "--generator", "offline", "-q")
    assert result.exit_code == 0, result.output
    assert "held-out synthetic test split" in result.output and "with deep memory" in result.output
    assert "adapter v0001" in result.output
    assert run("adapters", "activate", "v0001").output.strip() == "active: v0001"
    listing = json.loads(run("adapters", "list", "--json").output)
    assert listing["active"] == "v0001" and listing["versions"][0]["test_hit@10"] is not None
    q = tmp_path / "q.jsonl"
    q.write_text('{"query": "How do I make a column that counts up by itself?", "relevant": ["autoinc.html"]}\n'
                 '{"query": "Is the database safe to use from many threads?", "relevant": ["threadsafe.html"]}\n')
    out = run("evaluate", "--queries", str(q), "--json", "--hybrid")
    data = json.loads(out.output)
    assert data["adapter"] == "v0001" and len(data["evaluations"]) == 2
    assert set(data["evaluations"][0]["base"]) >= {"recall@10", "hit_rate@10", "mrr@10"}
    assert run("adapters", "rollback").output.strip() == "active: none (plain search)"
    assert json.loads(run("search", "rowid", "--json").output)["adapter"] is None
    assert run("adapters", "activate", "v0001").exit_code == 0
    bad = CliRunner().invoke(cli, ["adapters", "activate", "v0042"])
    assert bad.exit_code == 1 and "no adapter version 'v0042'" in bad.output


def _ingest_pages(tmp_path, embedder, pages: dict[str, str]):
    """A store holding these HTML pages (name -> html), published at https://example.org/."""
    from shared.ingest import ingest
    from shared.store import Store

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, html in pages.items():
        (docs / name).write_text(html)
    store = Store.open(tmp_path / "store.db")
    ingest(store, embedder, load_settings(home=str(tmp_path)), str(docs), base_url="https://example.org/",
           progress=False)
    return store


def test_copies_of_a_chunk_share_a_split(tmp_path, embedder):
    # the same section published on two pages (an all-in-one page and a page of its own): a test
    # chunk's copy must never be trained on, whatever the seed
    from shared.deep_memory.dataset import Dataset, SplitSpec, split_salt, split_units

    sections = [f"<h2 id='s{i}'>Cache pool option {i}</h2><p>Option number {i} sets the size of cache pool {i} in pages, "
                f"and pool {i} is flushed when full.</p>" for i in range(40)]
    pages = {"all.html": "<html><title>All options</title><body>" + "".join(sections) + "</body></html>"}
    pages |= {f"option{i}.html": f"<html><title>Option {i}</title><body>{section}</body></html>"
              for i, section in enumerate(sections)}
    store = _ingest_pages(tmp_path, embedder, pages)
    rows = list(store.conn.execute("SELECT rowid, text FROM chunks"))
    by_text = {}
    for rowid, text in rows:
        by_text.setdefault(" ".join(text.split()).lower(), []).append(rowid)
    pairs = [m for m in by_text.values() if len(m) == 2]
    assert len(pairs) >= 30  # each option's text is stored twice
    # a question made from either copy is answered by both: kept once, with both as positives
    from shared.questions.offline import generate_offline

    row_of = dict(store.conn.execute("SELECT id, rowid FROM chunks"))
    merged = {q.text: {row_of[c] for c in q.positives} for q in generate_offline(store)}
    both = [q for q, p in merged.items() if p in [set(x) for x in pairs]]
    assert len(both) >= 2, merged  # (before: dropped as ambiguous, since two targets share the text)
    for seed in range(3):
        for by in ("chunk", "section"):
            spec = SplitSpec(salt=split_salt(seed), by=by)
            units = split_units(store, spec)
            assert all(units[a] == units[b] for a, b in pairs)
            data = Dataset.build(store, [("s", [(f"question {r}", (r,)) for r, _ in rows])], spec)
            texts = {s: {dict(rows)[p] for e in getattr(data, s) for p in e.positives} for s in ("train", "test")}
            assert texts["test"] and not texts["train"] & texts["test"]
    store.close()


def test_near_copies_share_a_split(tmp_path, embedder):
    # a section republished with an extra line (not an exact copy): still never split from its copy
    from shared.chunking import near_copies
    from shared.deep_memory.dataset import Dataset, SplitSpec, split_salt, split_units

    body = [f"Option number {i} sets the size of cache pool {i} in pages, and pool {i} is flushed to disk "
            f"when it is full or when the transaction that filled it commits." for i in range(40)]
    pages = {"all.html": "<html><title>All options</title><body>" + "".join(
        f"<h2 id='s{i}'>Cache pool option {i}</h2><p>{b}</p>" for i, b in enumerate(body)) + "</body></html>"}
    pages |= {f"option{i}.html": f"<html><title>Option {i}</title><body><h2 id='s{i}'>Option {i}</h2>"
                                 f"<p>{b} Added in version 3.{i}.</p></body></html>" for i, b in enumerate(body)}
    store = _ingest_pages(tmp_path, embedder, pages)
    rows = dict(store.conn.execute("SELECT rowid, text FROM chunks"))
    pairs = near_copies(rows.items())
    assert len(pairs) == 40 and all(rows[a] != rows[b] for a, b in pairs)  # no exact copy among them
    # unrelated chunks that share a phrase are not copies
    assert near_copies([(1, "The pool is flushed when it is full, said the first page about journals."),
                        (2, "A cache is flushed when it is full; the second page is about something else entirely.")]) == []
    for seed in range(3):
        spec = SplitSpec(salt=split_salt(seed))
        units = split_units(store, spec)
        assert all(units[a] == units[b] for a, b in pairs)
        data = Dataset.build(store, [("s", [(f"question {r}", (r,)) for r in rows])], spec)
        test = {p for e in data.test for p in e.positives}
        assert test and not any((a in test) != (b in test) for a, b in pairs)
    store.close()


def test_by_section_copies_pull_their_whole_sections_together(tmp_path, embedder):
    # section A (two chunks) shares one chunk's text with section B, whose URL sorts first: A's other chunk must follow
    from shared.deep_memory.dataset import SplitSpec, split_salt, split_units

    shared_text = "<p>" + " ".join(f"The shared paragraph explains cache pool sizing rule {i}." for i in range(3)) + "</p>"
    long_text = "<p>" + " ".join(f"Sentence {i} of the long private part talks about journal modes." for i in range(120)) + "</p>"
    pages = {}
    for n in range(30):
        pages[f"a{n}.html"] = (f"<html><title>A{n}</title><body><h2 id='s'>Sizing {n}</h2>{long_text}"
                               f"{shared_text.replace('rule', f'rule {n}')}</body></html>")
        pages[f"0copy{n}.html"] = (f"<html><title>B{n}</title><body><h2 id='s'>Copy {n}</h2>"
                                   f"{shared_text.replace('rule', f'rule {n}')}</body></html>")
    store = _ingest_pages(tmp_path, embedder, pages)
    rows = list(store.conn.execute("SELECT rowid, url, text FROM chunks"))
    by_url = {}
    for rowid, url, _ in rows:
        by_url.setdefault(url, []).append(rowid)
    assert any(len(m) >= 2 for u, m in by_url.items() if "/a" in u)  # the A sections have several chunks
    units = split_units(store, SplitSpec(salt=split_salt(0), by="section"))
    for n in range(30):
        a = by_url[f"https://example.org/a{n}.html#s"]
        b = by_url[f"https://example.org/0copy{n}.html#s"]
        assert len({units[r] for r in a + b}) == 1  # one unit: all of A, and its copy in B
    store.close()



def test_a_damaged_version_never_blocks_new_ones_or_a_rollback(tmp_path, monkeypatch):
    reg = AdapterRegistry(tmp_path / "adapters")
    for scale in (1.0, 1.5, 2.0):
        reg.save(LinearAdapter(np.eye(4) * scale, np.zeros(4)), {"embedder": "e", "config": {"dim": 4}})
    for name in ("v0001", "v0002", "v0003"):
        reg.activate(name)
    (reg.root / "v0003" / "meta.json").write_text("{half")  # the newest version, damaged
    (reg.root / "v0002" / "weights.npz").write_bytes(b"junk")
    # its number stays taken: the next version used to be "v0003" again, and the rename failed for ever
    assert reg.save(LinearAdapter.identity(4), {"embedder": "e", "config": {"dim": 4}}).name == "v0004"
    assert reg.damaged() == [("v0003", "meta.json is unreadable (JSONDecodeError)")]
    assert reg.rollback() == "v0001"  # v0002 cannot be loaded: skipped, not activated
    monkeypatch.setenv("DEEPMEM_HOME", str(tmp_path))
    listing = run("adapters")
    assert "! v0003  damaged: meta.json is unreadable" in listing.output and "active: v0001" in listing.output

"""Does the bot know when the docs do not cover a question? Real SQLite pages, real embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.answer import Answerer
from shared.coverage import DEFAULT, META_KEY, CoverageModel, Signals, calibrate, fit
from shared.deep_memory.nightly import NightlyConfig, run_nightly
from shared.deep_memory.trainer import TrainConfig
from shared.feedback.store import FeedbackStore
from shared.home import Home
from shared.qa import QAService
from shared.retrieval import open_searcher
from shared.settings import load_settings
from shared.vector_index import MemoryIndex

from .helpers import corpus

FAQ = Path(__file__).resolve().parent.parent / "shared" / "data" / "sqlite-faq.jsonl"
OFF_TOPIC = [
    "How long should I knead bread dough?", "What temperature do I roast a chicken at?",
    "How do I repot an orchid?", "What are the rules of the offside in football?",
    "How do I get a visa for Japan?", "How do I train my puppy to sit?",
]
DJANGO = [  # the Django FAQ's own questions
    "How do I get started with Django templates and template inheritance?",
    "Why does the Django admin site redirect me to the login page again after I log in?",
    "How can I see the raw SQL queries Django is running?",
    "How do I add extra fields to the Django User model?",
]


def small_store_questions() -> list[str]:
    """SQLite FAQ questions whose answer pages are all among the small store's pages."""
    out = []
    for line in FAQ.read_text().splitlines():
        q = json.loads(line)
        if all(page in corpus.SMALL for page in q["relevant"]):
            out.append(q["query"])
    return out


@pytest.fixture
def qa(store_copy, embedder):
    home = Home.open(store_copy.path.parent)
    searcher = open_searcher(store_copy, embedder, home, index=MemoryIndex(store_copy))
    service = QAService(Answerer(searcher, load_settings(), k=5), FeedbackStore(home))
    yield service
    service.feedback.drain()


def test_sqlite_questions_are_covered_and_off_topic_ones_are_not(qa):
    covered = [qa.ask(q, source="test", user_id="U1").answer for q in small_store_questions()]
    assert len(covered) >= 8
    assert sum(a.covered for a in covered) >= len(covered) - 1, [(a.question, a.coverage) for a in covered]
    off = [qa.ask(q, source="test", user_id="U1").answer for q in OFF_TOPIC + DJANGO]
    assert not any(a.covered for a in off), [(a.question, a.coverage) for a in off if a.covered]
    # the probability orders them: every covered question above every off-topic one
    assert min(a.coverage for a in covered if a.covered) > max(a.coverage for a in off)
    cooking = off[0]
    assert cooking.text.startswith("The documentation does not seem to cover this")
    assert cooking.to_dict()["covered"] is False and 0.0 <= cooking.to_dict()["coverage"] < DEFAULT.threshold
    assert set(cooking.coverage_signals) == {"top", "margin", "agreement", "term_share"}
    assert cooking.coverage_signals["term_share"] < 0.5  # "knead", "bread", "dough": not in the SQLite docs
    qa.feedback.drain()
    recorded = {q["text"]: q for q in qa.feedback.questions()}  # what the dashboard counts as unanswered
    assert recorded[cooking.question]["covered"] is False
    assert recorded[cooking.question]["coverage"] == pytest.approx(cooking.coverage)
    assert recorded[covered[0].question]["covered"] is covered[0].covered


def test_a_recorded_coverage_is_validated():
    from shared.feedback.ops import InvalidFeedback, question_op

    ok = question_op(id="q1", asked_at="2026-01-01T00:00:00+00:00", source="web", text="q", covered=False,
                     coverage=0.2)
    assert ok["row"]["covered"] is False and ok["row"]["coverage"] == 0.2
    for bad in ({"covered": "no"}, {"coverage": 1.5}, {"coverage": -0.1}):
        with pytest.raises(InvalidFeedback):
            question_op(id="q1", asked_at="2026-01-01T00:00:00+00:00", source="web", text="q", **bad)


def test_a_calibration_in_the_store_is_what_ask_uses(qa, store_copy):
    question = "How do I create an AUTOINCREMENT field?"
    before = qa.ask(question, source="test", user_id="U1").answer
    assert before.covered and before.text.startswith("From the documentation")
    strict = CoverageModel(weights=DEFAULT.weights, bias=DEFAULT.bias, mean=DEFAULT.mean, scale=DEFAULT.scale,
                           threshold=min(0.999, before.coverage + 0.001), calibration={"what": "a test"})
    strict.save(store_copy)
    assert CoverageModel.load(store_copy) == strict  # persisted, round trip
    after = qa.ask(question, source="test", user_id="U1").answer
    assert not after.covered and after.coverage == pytest.approx(before.coverage)
    assert after.text.startswith("The documentation does not seem to cover this")
    # a damaged calibration is not used: the default decides
    store_copy.set_meta(META_KEY, '{"version": 1, "weights": "oops"}')
    assert CoverageModel.load(store_copy) is DEFAULT
    assert qa.ask(question, source="test", user_id="U1").answer.covered


def test_calibration_moves_the_threshold_to_the_target_within_bounds():
    rng = np.random.default_rng(0)
    own = [Signals(top=float(t), margin=0.1, agreement=0.3, term_share=0.9) for t in rng.uniform(0.4, 0.8, 200)]
    model = calibrate(DEFAULT, own, target_recall=0.9, what="synthetic")
    assert model.weights == DEFAULT.weights and model.calibration["questions"] == 200
    assert np.mean([model.decide(s)[0] for s in own]) == pytest.approx(0.9, abs=0.01)
    # questions the default finds hopeless cannot switch the decision off: the move is bounded
    hopeless = [Signals(top=0.05, margin=0.0, agreement=0.0, term_share=0.0)] * 50
    bounded = calibrate(DEFAULT, hopeless)
    assert bounded.calibration["bounded"] and 0.05 < bounded.threshold < DEFAULT.threshold
    assert calibrate(DEFAULT, own[:5]) is DEFAULT  # too few to calibrate on


def test_fit_separates_what_it_is_given_and_weighs_the_classes_equally():
    rng = np.random.default_rng(1)
    pos = [Signals(float(t), 0.1, 0.3, 0.95) for t in rng.normal(0.65, 0.08, 30)]
    neg = [Signals(float(t), 0.08, 0.1, 0.6) for t in rng.normal(0.35, 0.08, 300)]
    model = fit(pos, neg)
    assert model.weights[0] > 0 and model.weights[3] > 0
    assert np.mean([model.decide(s)[0] for s in pos]) > 0.9 and np.mean([model.decide(s)[0] for s in neg]) < 0.1
    with pytest.raises(ValueError):
        fit(pos, [])
    with pytest.raises(ValueError, match="JSON"):
        CoverageModel.from_json("not json")


def test_the_nightly_job_calibrates_the_store_and_reports_it(store_copy, embedder):
    home = Home.open(store_copy.path.parent)
    assert store_copy.meta(META_KEY) is None
    record = run_nightly(home, load_settings(), NightlyConfig(train=TrainConfig(max_epochs=2, patience=1)),
                         embedder=embedder, log=lambda *a: None)
    assert record["status"] in ("promoted", "kept"), record
    reported = record["metrics"]["coverage"]
    stored = CoverageModel.load(store_copy)
    assert stored is not DEFAULT and stored.threshold == pytest.approx(reported["threshold"], abs=1e-4)
    assert reported["questions"] >= 20 and reported["what"].startswith("held-out")
    assert reported["recall_on_them"] >= 0.85 or reported["bounded"]
    assert json.loads(FeedbackStore(home).runs()[-1]["metrics"])["coverage"]["threshold"] == reported["threshold"]


# -- evaluation per collection ---------------------------------------------------------------------

def _held_out_by_area(store, embedder):
    """The small store's offline questions, held out, each in a collection by where its answer is:
    the C API pages (c3ref/) and the rest. (Collections by page area: the judge reads only the labels.)"""
    from shared.deep_memory.judge import HeldOut
    from shared.questions import synthetic_questions

    questions, _ = synthetic_questions(store, load_settings(), "offline", progress=False)
    chunks = {c.id: c for c in store.iter_chunks()}
    items = []
    for q in questions:
        places = [chunks[c] for c in q.positives if c in chunks]
        if places:
            area = "c-api" if "/c3ref/" in places[0].url else "sql"
            items.append((q.text, frozenset(c.rowid for c in places), area))
    rng = np.random.default_rng(0)
    chosen = [items[i] for i in rng.permutation(len(items))]
    chosen = [x for x in chosen if x[2] == "sql"][:40] + [x for x in chosen if x[2] == "c-api"][:12]
    vectors = embedder.embed([t for t, _, _ in chosen])
    nothing = [frozenset()] * len(chosen)
    held = HeldOut("real", vectors, [[rowids] for _, rowids, _ in chosen], nothing, nothing,
                   [frozenset([area]) for _, _, area in chosen])
    return held, [area for _, _, area in chosen]


def test_evaluation_is_reported_per_collection_and_a_clear_loss_on_one_refuses(store_copy, embedder):
    from shared.deep_memory.judge import judge

    index = MemoryIndex(store_copy)
    held, areas = _held_out_by_area(store_copy, embedder)
    api = np.array([a == "c-api" for a in areas])
    answer = np.stack([index.matrix[index.column_of[min(t[0])]] for t in held.targets])  # a chunk that answers
    away = -answer  # as far from the answer as a query can be

    def better_on_sql_worse_on_api(vectors):  # a challenger: perfect on one collection, lost on the other
        return np.where(api[:, None], away, answer)

    verdict = judge(index, [held], better_on_sql_worse_on_api, None, None)
    per = verdict.sets["real"]["by_collection"]
    assert set(per) == {"sql", "c-api"} and per["sql"]["queries"] == 40 and per["c-api"]["queries"] == 12
    assert per["sql"]["challenger"]["hit_rate@10"] == 1.0 and per["c-api"]["challenger"]["hit_rate@10"] == 0.0
    assert per["c-api"]["plain"]["hit_rate@10"] > 0.5 and "mrr@10" in per["c-api"]["champion"]
    assert verdict.sets["real"]["gain"] > 0  # better overall...
    assert -per["c-api"]["gain"] > 2 * per["c-api"]["noise"]  # ...and clearly worse on one collection
    assert not verdict.promote and "loses clearly on collection c-api" in verdict.reason

    def better_on_sql_only(vectors):  # the other collection unchanged: promoted
        return np.where(api[:, None], vectors, answer)

    verdict = judge(index, [held], better_on_sql_only, None, None)
    assert verdict.promote, verdict.reason
    assert verdict.sets["real"]["by_collection"]["c-api"]["gain"] == 0.0
    # too few questions on a collection to act on: reported, not a veto
    few = [i for i, a in enumerate(areas) if a == "sql"] + [i for i, a in enumerate(areas) if a == "c-api"][:5]
    from shared.deep_memory.judge import HeldOut
    small = HeldOut("real", held.vectors[few], [held.targets[i] for i in few], [frozenset()] * len(few),
                    [frozenset()] * len(few), [held.collections[i] for i in few])
    api_few = api[few]
    verdict = judge(index, [small], lambda v: np.where(api_few[:, None], away[few], answer[few]), None, None)
    assert verdict.sets["real"]["by_collection"]["c-api"]["queries"] == 5 and verdict.promote, verdict.reason


def test_the_nightly_run_records_its_evaluation_per_collection(store_copy, embedder, tmp_path):
    from shared.ingest import ingest

    extra = corpus.extract(tmp_path / "extra", ["lang_update.html", "lang_select.html", "lang_with.html"])
    ingest(store_copy, embedder, load_settings(), str(extra), base_url="https://sqlite.org/", progress=False,
           collection="queries")
    assert store_copy.collections() == ["default", "queries"]
    home = Home.open(store_copy.path.parent)
    record = run_nightly(home, load_settings(), NightlyConfig(train=TrainConfig(max_epochs=2, patience=1)),
                         embedder=embedder, log=lambda *a: None)
    assert record["status"] in ("promoted", "kept"), record
    per = record["metrics"]["synthetic"]["by_collection"]
    assert set(per) == {"default", "queries"}
    assert sum(p["queries"] for p in per.values()) >= record["metrics"]["synthetic"]["queries"]
    for name, p in per.items():
        assert p["queries"] > 0 and 0.0 <= p["challenger"]["hit_rate@10"] <= 1.0 and "mrr@10" in p["plain"], name
        assert p["noise"] >= 0.0
    stored = json.loads(FeedbackStore(home).runs()[-1]["metrics"])  # in the run record: the dashboard reads it
    assert stored["synthetic"]["by_collection"]["queries"]["queries"] == per["queries"]["queries"]


def test_deepmem_train_reports_its_evaluation_per_collection(store_copy, embedder, tmp_path):
    """`deepmem train` judges per collection as the nightly run does, and says so in its output and JSON."""
    from click.testing import CliRunner

    from shared.cli import cli
    from shared.ingest import ingest

    extra = corpus.extract(tmp_path / "extra", ["lang_update.html", "lang_select.html", "lang_with.html"])
    ingest(store_copy, embedder, load_settings(), str(extra), base_url="https://sqlite.org/", progress=False,
           collection="queries")
    home = str(store_copy.path.parent)
    run = CliRunner().invoke(cli, ["--home", home, "train", "--epochs", "2", "--no-activate", "--json"],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    per = json.loads(run.output)["by_collection"]["synthetic"]
    assert set(per) == {"default", "queries"}
    for name, p in per.items():
        assert p["queries"] > 0 and 0.0 <= p["challenger"]["hit_rate@10"] <= 1.0 and p["noise"] >= 0.0, name
    text = CliRunner().invoke(cli, ["--home", home, "train", "--epochs", "2", "--no-activate", "--quiet"],
                              catch_exceptions=False).output
    lines = [line for line in text.splitlines() if line.startswith("synthetic held-out questions in ")]
    assert [line.split(" (")[0] for line in lines] == ["synthetic held-out questions in default",
                                                       "synthetic held-out questions in queries"]
    assert all("hit@10" in line and "gain" in line and "noise" in line for line in lines)

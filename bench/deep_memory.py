"""Deep memory on the bundled SQLite docs: the reference's table, real questions, cost, learning curve.

    python bench/deep_memory.py [--home DIR]     # DIR: a data directory holding the ingested demo

1. the reference table (R@1..R@100, hit_rate@10, MRR@10) on the held-out test split, plain
   search vs deep memory, offline generator, split by chunk as the reference did; and the same
   with the stricter split by section (whole sections unseen);
2. the SQLite FAQ's real questions (faq.html is not in the corpus) scored against the pages
   their answers link to, vector and hybrid, with and without deep memory;
3. training time and peak memory on this machine, and the adapter's cost per query;
4. gain against the number of training pairs (100, 300, 1000, 3000, all);
5. the same recipe on other random splits (seeds 1-3): how much the table above owes to its draw.
Saves bench/results/deep_memory.json. Nothing is activated in DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import TABLE_KEYS, gain, machine, peak_rss_mb, percentile, pick, save  # noqa: E402
from shared.deep_memory.evaluate import evaluate_files  # noqa: E402
from shared.deep_memory.job import TrainOptions, run_training  # noqa: E402
from shared.deep_memory.trainer import TrainConfig  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.evaluation import format_table  # noqa: E402
from shared.home import Home  # noqa: E402
from shared.ingest import ingest  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.sources import DEMO_BASE_URL, demo_archive  # noqa: E402
from shared.store import open_store  # noqa: E402

FAQ = demo_archive().parent / "sqlite-faq.jsonl"



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="data directory with the demo ingested (default: ingest into a temp dir)")
    parser.add_argument("--curve", default="100,300,1000,3000")
    args = parser.parse_args()
    home = Home.open(args.home or tempfile.mkdtemp(prefix="deepmem-dm-"))
    settings = load_settings(home=str(home.root))
    embedder = make_embedder(settings)
    store = open_store(home, settings)
    if not store.stats()["chunks"]:
        print("ingesting the bundled SQLite docs ...")
        ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL, progress=False)
    bench_home = Home.open(tempfile.mkdtemp(prefix="deepmem-dm-adapters-"))  # keep DIR's adapters untouched
    log = lambda *a: None  # noqa: E731

    def train(**kw):
        options = TrainOptions(generator="offline", eval_queries=[FAQ], activate="always", progress=False, **kw)
        started = time.perf_counter()
        report = run_training(store, embedder, bench_home, settings, options, log=log)
        return report, time.perf_counter() - started

    rss_before = peak_rss_mb()
    main_report, main_seconds = train()
    rss_after = peak_rss_mb()
    print(format_table(main_report.comparisons))
    synthetic = main_report.comparisons[0]

    section_report, _ = train(split_by="section")
    print(format_table(section_report.comparisons[:1]))

    faq_all, _ = evaluate_files(store, embedder, bench_home, [FAQ], main_report.version, hybrid=True)
    print(format_table(faq_all))

    # the adapter's cost per query: one matrix-vector product and a normalisation, numpy only
    from shared.deep_memory import AdapterRegistry

    adapter, _ = AdapterRegistry(bench_home.adapters_dir).load(main_report.version)
    q = embedder.embed_query("how do I create an autoincrement column")
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        adapter(q)
        times.append(time.perf_counter() - t)
    overhead_us = percentile([t * 1e6 for t in times], 50)

    curve = []
    for n in [int(x) for x in args.curve.split(",")] + [None]:
        report, seconds = train(max_train=n) if n else (main_report, main_seconds)
        test = report.comparisons[0]
        curve.append({"train_pairs": n or main_report.counts["train"], "seconds": round(seconds, 1),
                      "base_hit@10": round(test.base["hit_rate@10"], 4),
                      "deep_hit@10": round(test.deep["hit_rate@10"], 4),
                      "gain_hit@10": round(test.deep["hit_rate@10"] - test.base["hit_rate@10"], 4),
                      "gain_mrr@10": round(test.deep["mrr@10"] - test.base["mrr@10"], 4),
                      "faq_gain_hit@10": round(report.comparisons[1].deep["hit_rate@10"]
                                               - report.comparisons[1].base["hit_rate@10"], 4)})
        print(curve[-1])

    splits = []
    for seed in (0, 1, 2, 3):
        report = main_report if seed == 0 else train(config=TrainConfig(seed=seed))[0]
        test = report.comparisons[0]
        splits.append({"seed": seed, "test_questions": test.base["queries"],
                       "base_hit@10": round(test.base["hit_rate@10"], 4),
                       "deep_hit@10": round(test.deep["hit_rate@10"], 4),
                       "gain_hit@10": round(test.deep["hit_rate@10"] - test.base["hit_rate@10"], 4),
                       "gain_mrr@10": round(test.deep["mrr@10"] - test.base["mrr@10"], 4)})
        print(splits[-1])
    split_gains = [x["gain_hit@10"] for x in splits]


    worst_k = min(synthetic.deep[k] - synthetic.base[k] for k in TABLE_KEYS if k.startswith("recall"))
    result = {
        "machine": machine(), "embedder": embedder.name, "chunks": store.stats()["chunks"],
        "generator": main_report.questions.get("generator"), "counts": main_report.counts,
        "split": "by chunk, seed 0, 70/15/15",
        "held_out_synthetic": {"base": pick(synthetic.base), "deep_memory": pick(synthetic.deep),
                               "gain": gain(synthetic), "worst_recall_gain": round(worst_k, 4)},
        "held_out_synthetic_by_section": {
            "base": pick(section_report.comparisons[0].base), "deep_memory": pick(section_report.comparisons[0].deep),
            "gain": gain(section_report.comparisons[0])},
        "sqlite_faq_real_questions": {
            "vector": {"base": pick(faq_all[0].base), "deep_memory": pick(faq_all[0].deep), "gain": gain(faq_all[0])},
            "hybrid": {"base": pick(faq_all[1].base), "deep_memory": pick(faq_all[1].deep), "gain": gain(faq_all[1])}},
        "training": {"seconds_total_job": round(main_seconds, 1), "seconds_training": main_report.train["seconds"],
                     "train_pairs": main_report.counts["train"], "best_epoch": main_report.train["best_epoch"],
                     "epochs_run": main_report.train["epochs_run"],
                     "peak_rss_mb": round(max(rss_after, rss_before), 1)},
        "adapter_overhead_us_p50": round(overhead_us, 2),
        "learning_curve": curve,
        "other_splits": {"per_seed": splits, "gain_hit@10_mean": round(sum(split_gains) / len(split_gains), 4),
                         "gain_hit@10_min": min(split_gains), "gain_hit@10_max": max(split_gains)},
    }
    save("deep_memory", result)


if __name__ == "__main__":
    main()

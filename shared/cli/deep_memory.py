"""CLI commands for deep memory: train, evaluate, adapters."""

from __future__ import annotations

from pathlib import Path

import click

from . import App, cli, echo_json, json_option, pass_app


def _demo_questions(store) -> list[Path]:
    """The bundled SQLite FAQ, when the bundled SQLite docs are in the store."""
    from ..sources import demo_archive

    if any(s.uri == str(demo_archive()) for s in store.sources()):
        return [demo_archive().parent / "sqlite-faq.jsonl"]
    return []


@cli.command()
@click.option("--generator", type=click.Choice(["auto", "offline", "llm", "none"]), default="auto", show_default=True,
              help="Where synthetic questions come from (auto: llm when an LLM is configured).")
@click.option("--queries", "queries", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Your own questions with relevance (JSONL, reference JSON or LlamaIndex JSON); repeatable.")
@click.option("--eval-queries", "eval_queries", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Real questions to report beside the synthetic split (never trained on); repeatable.")
@click.option("--no-activate", is_flag=True, help="Save the new adapter but leave the active one in place.")
@click.option("--epochs", type=click.IntRange(1, 500), default=None, help="At most this many epochs.")
@click.option("--time-budget", type=click.FloatRange(1, None), default=None,
              help="Stop training after SECONDS (training only: questions and evaluation come on top).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--estimate", is_flag=True, help="With --generator llm: print the token and cost estimate and stop.")
@click.option("--quiet", "-q", is_flag=True)
@json_option
@pass_app
def train(app: App, generator, queries, eval_queries, no_activate, epochs, time_budget, seed, estimate, quiet,
          as_json) -> None:
    """Generate questions where missing, train a deep-memory adapter, evaluate it, activate it if better.

    Example:

        deepmem train --eval-queries real-questions.jsonl
    """
    from ..deep_memory.job import TrainOptions, run_training, training_style
    from ..deep_memory.trainer import TrainConfig
    from ..questions.llm import estimate as llm_estimate

    store = app.store(create=False)
    config = TrainConfig(seed=seed, time_budget_s=time_budget)
    if epochs:
        config.max_epochs = epochs
    options = TrainOptions(generator=generator, queries=[Path(q) for q in queries],
                           eval_queries=[Path(q) for q in eval_queries] + _demo_questions(store),
                           activate="never" if no_activate else "if-better", config=config,
                           progress=not quiet and not as_json)
    if generator == "llm" or (generator == "auto" and app.settings.llm_configured):
        plan = llm_estimate(store, app.settings, training_style(store, app.home, options, app.settings))
        cost = f", about ${plan['estimated_cost_usd']:.2f}" if plan["estimated_cost_usd"] is not None else ""
        again = f"; {plan['restyle']} again in people's style" if plan["restyle"] else ""
        click.echo(f"llm questions: {plan['to_generate']} to generate ({plan['cached']} cached{again}), "
                   f"{plan['prompt_tokens']:,} prompt tokens with {plan['model']}{cost}", err=True)
        if estimate:
            return
    log = (lambda *a: None) if (quiet or as_json) else (lambda msg: click.echo(msg, err=True))
    report = run_training(store, app.embedder, app.home, app.settings, options, log=log)
    if as_json:
        echo_json(report.to_dict())
        return
    from ..evaluation import format_table

    click.echo(format_table(report.comparisons))
    for held, per in report.by_collection.items():
        if len(per) < 2:  # one collection: the table above says it all
            continue
        for name, r in per.items():
            metric = lambda variant: r[variant].get("hit_rate@10", r[variant]["score"])  # noqa: E731
            click.echo(f"{held} held-out questions in {name} ({r['queries']}): hit@10 {metric('plain'):.3f} plain, "
                       f"{metric('champion'):.3f} champion, {metric('challenger'):.3f} challenger; gain "
                       f"{r['gain']:+.4f} (noise {r['noise']:.4f})")
    click.echo(f"adapter {report.version or '(none)'}: {report.decision}")
    click.echo(f"active: {report.version if report.activated else (report.champion or 'none (plain search)')}")


@cli.command()
@click.option("--queries", "queries", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Questions with relevance to score (default: the held-out synthetic test split).")
@click.option("--adapter", "version", help="Adapter version to compare with plain search (default: the active one).")
@click.option("--hybrid", is_flag=True, help="Also score hybrid search (vectors + BM25).")
@json_option
@pass_app
def evaluate(app: App, queries, version, hybrid, as_json) -> None:
    """Recall@k, hit rate and MRR without and with deep memory, side by side.

    Example:

        deepmem evaluate --queries questions.jsonl --json
    """
    from ..deep_memory.evaluate import evaluate_files, evaluate_test_split
    from ..evaluation import format_table

    store = app.store(create=False)
    files = [Path(q) for q in queries]
    if files:
        comparisons, used = evaluate_files(store, app.embedder, app.home, files, version, hybrid=hybrid,
                                           settings=app.settings)
    else:
        comparisons, used = evaluate_test_split(store, app.embedder, app.home, app.settings, version,
                                                extra_files=_demo_questions(store), hybrid=hybrid)
    if as_json:
        echo_json({"adapter": used, "evaluations": [c.to_dict() for c in comparisons]})
        return
    click.echo(f"adapter: {used or 'none (plain search only)'}\n")
    click.echo(format_table(comparisons))


@cli.group(invoke_without_command=True)
@click.pass_context
def adapters(ctx) -> None:
    """List deep-memory adapter versions, activate one, or roll back.

    Example:

        deepmem adapters rollback
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_adapters)


@adapters.command("list")
@json_option
@pass_app
def list_adapters(app: App, as_json: bool = False) -> None:
    """Every saved version, its test-split numbers and which one is active."""
    from ..deep_memory.versions import open_registry

    app.read_only = True
    registry = open_registry(app.home, app.settings)
    status = registry.active_status()
    active = status.name
    rows = []
    for v in registry.versions():
        test = next((m for m in v.meta.get("metrics", []) if "synthetic" in m.get("name", "")), {})
        rows.append({"version": v.name, "active": v.name == active, "created_at": v.meta.get("created_at"),
                     "embedder": v.meta.get("embedder"), "generator": v.meta.get("generator"),
                     "train_questions": v.meta.get("counts", {}).get("train"),
                     "test_hit@10": (test.get("deep_memory") or {}).get("hit_rate@10"),
                     "base_hit@10": (test.get("base") or {}).get("hit_rate@10"),
                     "decision": v.meta.get("decision")})
    damaged = [{"version": name, "problem": why} for name, why in registry.damaged()]
    if as_json:
        echo_json({"active": active, "problem": status.problem, "versions": rows, "damaged": damaged})
        return
    if not rows and not status.problem and not damaged:
        click.echo("no adapters yet: run `deepmem train`")
        return
    for r in rows:
        mark = "*" if r["active"] else " "
        hit = f"hit@10 {r['base_hit@10']:.3f} -> {r['test_hit@10']:.3f}" if r["test_hit@10"] is not None else ""
        click.echo(f"{mark} {r['version']}  {r['created_at']}  {r['train_questions']} questions  {hit}")
    for d in damaged:
        click.echo(f"! {d['version']}  damaged: {d['problem']}")
    if status.problem:
        click.echo(f"active: {active or 'unknown'}, but it cannot serve: {status.problem}. Search runs without deep "
                   f"memory; `deepmem adapters rollback` or `deepmem adapters activate VERSION` fixes it")
    else:
        click.echo(f"active: {active or 'none (plain search)'}")


@adapters.command()
@click.argument("version")
@pass_app
def activate(app: App, version: str) -> None:
    """Make VERSION the active adapter (the bot picks it up at its next question)."""
    from ..deep_memory.versions import open_registry, unfit_for

    registry = open_registry(app.home, app.settings)
    if app.settings.database_url is not None or app.home.store_path.exists():  # refuse what search would ignore
        store = app.store(create=False)
        adapter, meta = registry.load(version)
        unfit = unfit_for(meta, adapter, store.embedder_name, store.dim or adapter.dim) if store.embedder_name else None
        if unfit:
            raise click.ClickException(f"adapter {version} was {unfit}: search would ignore it")
    registry.activate(version)
    click.echo(f"active: {version}")


@adapters.command()
@pass_app
def rollback(app: App) -> None:
    """Return to the adapter that was active before the current one."""
    from ..deep_memory.versions import open_registry

    previous = open_registry(app.home, app.settings).rollback()
    click.echo(f"active: {previous or 'none (plain search)'}")


@adapters.command()
@pass_app
def off(app: App) -> None:
    """Search without deep memory (`deepmem adapters rollback` turns it back on)."""
    from ..deep_memory.versions import open_registry

    open_registry(app.home, app.settings).deactivate()
    click.echo("active: none (plain search)")

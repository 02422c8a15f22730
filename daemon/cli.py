"""`deepmem retrain --now` and `deepmem runs` (registered through the deepmem.commands entry point)."""

from __future__ import annotations

import json

import click

from shared.cli import App, echo_json, json_option, pass_app


@click.command()
@click.option("--now", "now_", is_flag=True, help="Run the retraining job now (also while `deepmem serve` runs).")
@click.option("--reingest", is_flag=True, help="Re-ingest every known source first (incremental).")
@click.option("--time-budget", type=click.FloatRange(1, None), default=1800.0, show_default=True,
              help="Seconds for the whole run (questions, their vectors, training, evaluation); training gets "
                   "what the stages before it leave.")
@json_option
@pass_app
def retrain(app: App, now_: bool, reingest: bool, time_budget: float, as_json: bool) -> None:
    """Retrain deep memory on synthetic questions plus feedback; promote only if better.

    Without --now, print when the schedule runs next.

    Example:

        deepmem retrain --now
    """
    from shared.deep_memory.nightly import NightlyConfig, run_nightly

    if not now_:
        from datetime import datetime

        from .schedule import parse_cron

        trigger = parse_cron(app.settings.retrain_cron, timezone=datetime.now().astimezone().tzinfo)
        when = trigger.get_next_fire_time(None, datetime.now().astimezone()) if trigger else None
        click.echo(f"schedule: {app.settings.retrain_cron!r}; next run: {when or 'never (off)'} "
                   f"(while `deepmem serve` runs). Use --now to run it now.")
        return
    config = NightlyConfig(reingest=reingest, time_budget_s=time_budget, trigger="manual", threads=None)
    log = (lambda *a: None) if as_json else (lambda msg: click.echo(msg, err=True))
    record = run_nightly(app.home, app.settings, config, embedder=app.embedder, log=log)
    if as_json:
        echo_json(record)
    else:
        click.echo(f"run {record['id']}: {record['status']}"
                   + (f", adapter {record['version']}" if record.get("version") else "")
                   + f" ({record.get('seconds', 0):.0f} s)")
        click.echo(f"  {record.get('decision') or record.get('error')}")
    if record["status"] == "failed":
        raise click.ClickException(record.get("error") or "the run failed")


@click.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@pass_app
def runs(app: App, limit: int, as_json: bool) -> None:
    """Past retraining runs: when, data counts, metrics, decision.

    Example:

        deepmem runs --limit 5
    """
    from shared.deep_memory.nightly import mark_interrupted
    from shared.feedback import has_feedback, open_feedback

    app.read_only = True
    rows = []
    if has_feedback(app.home, app.settings):
        feedback = open_feedback(app.home, app.settings)
        # a run killed mid-way shows as interrupted, not as running for ever
        mark_interrupted(app.home, feedback, app.settings)
        rows = feedback.runs()[-limit:]
    for r in rows:
        for k in ("counts", "metrics"):
            r[k] = _json_or_none(r.get(k))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no retraining runs yet")
        return
    for r in rows:
        counts = r["counts"] if isinstance(r.get("counts"), dict) else {}
        click.echo(f"{str(r['started_at'])[:19]}  {r['trigger'] or '':9}  {r['status']:11}  "
                   f"{r.get('version') or '-':6}  {counts.get('train', '-')} train / "
                   f"{counts.get('feedback_questions', 0)} feedback questions  {(r.get('seconds') or 0):.0f} s")
        click.echo(f"    {r.get('decision') or r.get('error') or ''}")


def _json_or_none(value):
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:  # written by hand or by another version: shown as it is
        return value

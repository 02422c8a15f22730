"""The dashboard's plots, drawn by matplotlib (object API, Agg: no global state, safe in threads),
returned as PNG data URIs for a self-contained page. Plot text avoids emoji (matplotlib's default
font has none): helpful / not helpful."""

from __future__ import annotations

import base64
import io
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, DayLocator
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import Dashboard, PageUse

__all__ = ["per_day_plot", "per_channel_plot", "topics_plot", "pages_plot", "runs_plot", "collections_plot"]

DPI = 110
COLORS = {"up": "#2e9e44", "down": "#d1453b", "unanswered": "#9aa0a6", "escalated": "#8e44ad",
          "answered": "#4c8bf5", "champion": "#1f5fbf", "challenger": "#e8710a", "promoted": "#2e9e44"}


def _uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _short(text: str, n: int = 42) -> str:
    """A label: one line, at most ``n`` characters, and a ``$`` is a dollar (not matplotlib's math mode)."""
    text = " ".join(text.split())
    text = text if len(text) <= n else text[: n - 1] + "…"
    return text.replace("$", r"\$")


def per_day_plot(board: Dashboard) -> str:
    """Questions per day, stacked by outcome (each question once: ``Counts.outcomes``)."""
    fig = Figure(figsize=(9, 2.9), layout="constrained")
    ax = fig.subplots()
    first = next((i for i, (_, c) in enumerate(board.per_day) if c.questions), 0)
    shown = board.per_day[max(0, min(first, len(board.per_day) - 7)):]  # from the first day with questions
    days = [d for d, _ in shown]
    bottom = [0] * len(days)
    names = [("answered", "answered, no vote"), ("up", "helpful"), ("unanswered", "not answered"),
             ("down", "not helpful"), ("escalated", "escalated")]
    for key, label in names:
        values = [c.outcomes[key] for _, c in shown]
        ax.bar(days, values, bottom=bottom, color=COLORS[key], label=label, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("questions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(DayLocator(interval=max(1, len(days) // 12)))
    ax.xaxis.set_major_formatter(ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.legend(loc="upper left", fontsize=8, ncols=5, frameon=False)
    ax.set_ylim(0, max(bottom + [1]) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def per_channel_plot(board: Dashboard, limit: int = 12) -> str:
    rows = board.per_channel[:limit][::-1]
    fig = Figure(figsize=(9, 0.45 * len(rows) + 0.9), layout="constrained")
    ax = fig.subplots()
    names = [_short(name, 28) for name, _ in rows]
    answered = [c.answered for _, c in rows]
    unanswered = [c.questions - c.answered for _, c in rows]
    ax.barh(names, answered, color=COLORS["answered"], label="answered")
    ax.barh(names, unanswered, left=answered, color=COLORS["unanswered"], label="not answered")
    for y, (_, c) in enumerate(rows):
        ax.text(c.questions, y, f"  {c.questions}", va="center", fontsize=8)
    ax.set_xlabel("questions")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def topics_plot(board: Dashboard, limit: int = 10) -> str:
    topics = board.topics[:limit][::-1]
    fig = Figure(figsize=(9, 0.42 * len(topics) + 0.9), layout="constrained")
    ax = fig.subplots()
    names = [_short(t.label, 60) for t in topics]
    unanswered = [t.unanswered for t in topics]
    only_down = [t.questions - t.unanswered for t in topics]
    ax.barh(names, unanswered, color=COLORS["unanswered"], label="not answered")
    ax.barh(names, only_down, left=unanswered, color=COLORS["down"], label="answered, not helpful")
    ax.set_xlabel("questions")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def pages_plot(pages: list[PageUse], limit: int = 10) -> str:
    pages = pages[:limit][::-1]
    fig = Figure(figsize=(9, 0.42 * len(pages) + 0.9), layout="constrained")
    ax = fig.subplots()
    names = [_short(p.title or p.page.rsplit("/", 1)[-1] or p.page, 48) for p in pages]
    ys = range(len(pages))
    ax.barh([y + 0.2 for y in ys], [p.cited for p in pages], height=0.4, color=COLORS["answered"], label="cited")
    ax.barh([y - 0.2 for y in ys], [p.clicks for p in pages], height=0.4, color=COLORS["up"], label="clicked")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.set_xlabel("times")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def runs_plot(board: Dashboard) -> str:
    """hit@10 and MRR@10 of champion and challenger on held-out real questions (solid) and the synthetic
    split (dotted) at every run; promotions as green lines; the feedback each run learned from."""
    fig = Figure(figsize=(9, 6.2), layout="constrained")
    hit_ax, mrr_ax, count_ax = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 2])
    runs = board.runs
    for ax, metric, title in ((hit_ax, "hit@10", "held-out hit@10"), (mrr_ax, "mrr@10", "held-out MRR@10")):
        for held, style in (("real", "-"), ("synthetic", ":")):
            for who in ("champion", "challenger"):
                points = [(r.started_at, getattr(r, held)[who][metric]) for r in runs
                          if getattr(r, held) and metric in getattr(r, held)[who]]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, marker="o", markersize=4, color=COLORS[who],
                            label=f"{who} ({'real questions' if held == 'real' else 'synthetic split'})",
                            linewidth=2 if held == "real" else 1)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    for r in runs:
        if r.status == "promoted":
            for ax in (hit_ax, mrr_ax, count_ax):
                ax.axvline(r.started_at, color=COLORS["promoted"], alpha=0.5, linewidth=1.5)
            hit_ax.annotate(_short(f"{r.challenger} promoted"), (r.started_at, 1), xycoords=("data", "axes fraction"),
                            fontsize=7, color=COLORS["promoted"], rotation=90, va="top", ha="right")
        elif r.status in ("failed", "interrupted"):
            count_ax.plot([r.started_at], [0], "x", color=COLORS["down"], markersize=8)
    if hit_ax.lines:
        hit_ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, ncols=4, frameon=False)
    with_counts = [r for r in runs if r.feedback_questions is not None]
    if with_counts:
        count_ax.bar([r.started_at for r in with_counts], [r.real_questions or 0 for r in with_counts], width=0.3,
                     color=COLORS["unanswered"], label="real questions (all origins)")
        count_ax.bar([r.started_at for r in with_counts], [r.feedback_questions for r in with_counts], width=0.3,
                     color=COLORS["answered"], label="from feedback")
        count_ax.legend(loc="upper left", fontsize=7, frameon=False)
    count_ax.set_ylabel("questions\nlearned from")
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    count_ax.spines[["top", "right"]].set_visible(False)
    count_ax.xaxis.set_major_locator(AutoDateLocator())
    count_ax.xaxis.set_major_formatter(ConciseDateFormatter(count_ax.xaxis.get_major_locator()))
    return _uri(fig)


def collections_plot(board: Dashboard, limit: int = 8) -> str:
    """hit@10 of the challenger (solid) and the champion (dashed) per collection at every run that reports
    them, so that one team's docs cannot silently get worse."""
    names = sorted({name for r in board.runs for name in r.collections})[:limit]
    fig = Figure(figsize=(9, 2.8), layout="constrained")
    ax = fig.subplots()
    palette = [f"C{i}" for i in range(10)]
    for i, name in enumerate(names):
        for who, style in (("challenger", "-"), ("champion", "--")):
            points = [(r.started_at, r.collections[name][who]["hit@10"]) for r in board.runs
                      if name in r.collections and "hit@10" in r.collections[name].get(who, {})]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, marker="o", markersize=3, color=palette[i % 10],
                        label=_short(f"{name} ({who})", 40))
    ax.set_ylabel("held-out hit@10")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, ncols=4, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.xaxis.set_major_locator(AutoDateLocator())
    ax.xaxis.set_major_formatter(ConciseDateFormatter(ax.xaxis.get_major_locator()))
    return _uri(fig)

"""The dashboard as one self-contained HTML page: inline CSS, plots as PNG data URIs, no script,
nothing fetched. Every piece of text that comes from data (questions, channel names, URLs, titles,
decisions) is HTML-escaped; links are made only of http(s) URLs."""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

from . import plots
from .data import Counts, Dashboard, PageUse, RunPoint

__all__ = ["render_page", "CONTENT_SECURITY_POLICY"]

# what the page needs: its own inline style and data: images; no script, no requests
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}
header p{margin:2px 0 0;color:#c5cad3;font-size:13px}main{max-width:1040px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;margin:18px 0;padding:14px 20px}
h2{font-size:17px;margin:2px 0 8px}p.note{color:#5f6673;margin:4px 0 10px;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{flex:1 1 120px;border:1px solid #e1e4e8;border-radius:8px;
padding:10px 12px}.card b{display:block;font-size:22px}.card span{color:#5f6673;font-size:12px}
img.plot{display:block;width:100%;height:auto;margin:6px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef0f3;vertical-align:top}th{color:#5f6673;font-weight:600}td.n{text-align:right}
ol.topics{padding-left:22px}ol.topics li{margin:8px 0}.terms{color:#5f6673;font-size:12px}
ul.examples{margin:3px 0;padding-left:18px;color:#333}.empty{color:#5f6673;font-style:italic}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _link(url: str, text: str | None = None) -> str:
    label = _e(text or url)
    if urlsplit(url).scheme in ("http", "https"):
        return f'<a href="{_e(url)}" rel="noreferrer noopener">{label}</a>'
    return label


def _img(uri: str, name: str, alt: str) -> str:
    return f'<img class="plot" data-plot="{_e(name)}" alt="{_e(alt)}" src="{uri}">'


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _counts_cells(c: Counts) -> str:
    return (f'<td class="n">{c.questions}</td><td class="n">{_pct(c.share("answered"))}</td>'
            f'<td class="n">{_pct(c.share("up"))}</td><td class="n">{_pct(c.share("down"))}</td>'
            f'<td class="n">{_pct(c.share("escalated"))}</td>')


COUNT_HEADS = "<th>questions</th><th>answered</th><th>helpful</th><th>not helpful</th><th>escalated</th>"


def _summary(board: Dashboard) -> str:
    t = board.totals
    active = next((r.challenger for r in reversed(board.runs) if r.status == "promoted"), None)
    cards = [(t.questions, "questions"), (_pct(t.share("answered")), "answered"),
             (_pct(t.share("up")), "voted helpful"),
             (_pct(t.share("down")), "voted not helpful"), (_pct(t.share("escalated")), "escalated to a person"),
             (board.gap_questions, "documentation gaps (questions)"), (len(board.runs), "retraining runs"),
             (active or "–", "last promoted adapter")]
    body = '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                           for v, k in cards) + "</div>"
    if board.empty:
        body += _empty(f"No questions and no retraining runs in the last {board.days} days: the feedback log is "
                       f"empty. Questions asked in Slack or the local chat, and nightly runs, appear here.")
    for note in board.notes:
        body += _empty(note)
    if board.truncated:
        body += _empty("Only the newest questions of the window were read (the rest is beyond the cap).")
    return _section("summary", "Summary", body)


def _per_day(board: Dashboard) -> str:
    if not board.totals.questions:
        return _section("per-day", "Questions per day", _empty("No questions in this window."))
    note = ('<p class="note">Each question counted once, in the first of: escalated, voted not helpful, not '
            'answered, voted helpful, answered without a vote. Days in UTC; from the first day with questions.</p>')
    return _section("per-day", "Questions per day", note + _img(plots.per_day_plot(board), "per-day",
                                                                "questions per day by outcome"))


def _per_channel(board: Dashboard) -> str:
    if not board.per_channel:
        return _section("per-channel", "Questions per channel", _empty("No questions in this window, and no "
                                                                       "channel configured."))
    setup = board.channel_setup
    default = setup.get("default", "")
    cells = (lambda name: f"<td>{_e(setup.get(name, default))}</td>") if setup else (lambda name: "")
    rows = "".join(f"<tr><td>{_e(name)}</td>{cells(name)}{_counts_cells(c)}</tr>" for name, c in board.per_channel[:50])
    head = "<th>channel</th>" + ("<th>answers (mode; collections)</th>" if setup else "") + COUNT_HEADS
    body = f'<table class="channels"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    if board.totals.questions:
        body = _img(plots.per_channel_plot(board), "per-channel", "questions per channel") + body
    if setup:
        body += (f'<p class="note">Direct messages, /ask, the local chat and channels not configured answer with '
                 f'the default: {_e(default)}.</p>')
    return _section("per-channel", "Questions per channel", body)


def _gaps(board: Dashboard) -> str:
    title = "Documentation gaps: questions not answered or voted not helpful, by topic"
    if not board.topics:
        return _section("gaps", title, _empty("No question went unanswered or was voted not helpful in this window."))
    grouped = "" if board.gaps_grouped == board.gap_questions else f" (the newest {board.gaps_grouped} grouped)"
    note = (f'<p class="note">{board.gap_questions} questions{_e(grouped)} in {len(board.topics)} topics shown, '
            f'largest first. A topic is named by its most central question.</p>')
    items = []
    groups = [t for t in board.topics if t.questions > 1]
    singles = [t for t in board.topics if t.questions == 1]
    for t in groups:
        examples = "".join(f"<li>{_e(g.text)}" + (f" <span class=terms>×{g.times}</span>" if g.times > 1 else "")
                           + "</li>" for g in t.examples)
        channels = ", ".join(f"{_e(name)} ({n})" for name, n in t.channels)
        words = f' <span class="terms">{_e(", ".join(t.terms))}</span>' if t.terms else ""
        items.append(f'<li class="topic"><b>{_e(t.label)}</b>{words}<br><span class="terms">'
                     f'{_n(t.questions, "question")}: {t.unanswered} not answered, {t.down} voted not helpful, '
                     f'{t.escalated} escalated; in {channels}; last asked '
                     f'{_e(t.last_asked.strftime("%Y-%m-%d %H:%M"))} UTC</span>'
                     f'<ul class="examples">{examples}</ul></li>')
    body = note + _img(plots.topics_plot(board), "gaps", "the largest gap topics")
    if items:
        body += f'<ol class="topics">{"".join(items)}</ol>'
    if singles:
        once = "".join(f'<li>{_e(t.label)} <span class="terms">'
                       f'{"not answered" if t.unanswered else "voted not helpful"}; {_e(t.channels[0][0])}; '
                       f'{_e(t.last_asked.strftime("%Y-%m-%d"))}</span></li>' for t in singles)
        body += f'<h3>Asked once</h3><ul class="singles">{once}</ul>'
    return _section("gaps", title, body)


def _page_rows(pages: list[PageUse]) -> str:
    return "".join(f'<tr><td>{_link(p.page, p.title or p.page)}</td><td class="n">{p.cited}</td>'
                   f'<td class="n">{p.clicks}</td><td class="n">{p.retrieved}</td></tr>' for p in pages)


def _pages(board: Dashboard) -> str:
    title = "Most and least cited pages"
    if not board.pages_retrieved:
        return _section("pages", title, _empty("No answers with sources in this window."))
    head = "<thead><tr><th>page</th><th>cited</th><th>clicked</th><th>retrieved</th></tr></thead>"
    body = ""
    if board.most_cited:
        body += "<h3>Most cited</h3>" + _img(plots.pages_plot(board.most_cited), "most-cited", "most cited pages") + \
            f'<table class="most">{head}<tbody>{_page_rows(board.most_cited)}</tbody></table>'
    else:
        body += _empty("No page was cited or clicked in this window.")
    body += (f'<h3>Least cited</h3><p class="note">Pages the search returned that answers cite least and people '
             f'open least ({board.pages_never_cited} of {board.pages_retrieved} retrieved pages were never cited '
             f'or clicked).</p>')
    if board.least_cited:
        body += f'<table class="least">{head}<tbody>{_page_rows(board.least_cited)}</tbody></table>'
    return _section("pages", title, body)


def _metric(held: dict, who: str) -> str:
    m = held.get(who) if held else None
    if not m:
        return "–"
    return " / ".join(f"{m[k]:.3f}" if k in m else "–" for k in ("hit@10", "mrr@10"))


def _run_row(r: RunPoint) -> str:
    held = r.real or r.synthetic
    which = "real" if r.real else "synthetic" if r.synthetic else ""
    return (f"<tr><td>{_e(r.started_at.strftime('%Y-%m-%d %H:%M'))}</td><td>{_e(r.status)}</td>"
            f"<td>{_e(r.champion or 'plain search')} → {_e(r.challenger or '–')}</td>"
            f"<td>{_e(which)} {held.get('queries', '') if held else ''}</td><td>{_metric(held, 'champion')}</td>"
            f"<td>{_metric(held, 'challenger')}</td>"
            f"<td class=n>{_e('–' if r.feedback_questions is None else r.feedback_questions)}</td>"
            f"<td>{_e(r.decision or '')}</td></tr>")


def _collections(board: Dashboard) -> str:
    last = next((r for r in reversed(board.runs) if len(r.collections) > 1), None)
    if last is None:  # one collection: the same numbers as above
        return ""
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{_metric(m, 'champion')}</td><td>{_metric(m, 'challenger')}</td></tr>"
                   for name, m in sorted(last.collections.items()))
    return ("<h3>Per collection</h3>" + _img(plots.collections_plot(board), "collections", "hit@10 per collection")
            + f"<p class=note>The last run ({_e(last.started_at.strftime('%Y-%m-%d'))}):</p><table class=collections>"
            f"<thead><tr><th>collection</th><th>champion hit@10 / MRR@10</th><th>challenger</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _runs(board: Dashboard) -> str:
    title = "Nightly retraining runs"
    if not board.runs:
        return _section("runs", title, _empty("No retraining run in this window."))
    note = ('<p class="note">Held-out real questions (solid; the synthetic split, dotted, is a diagnostic). Green '
            'lines: a challenger promoted. Red ×: a failed or interrupted run.</p>')
    rows = "".join(_run_row(r) for r in reversed(board.runs[-60:]))
    table = ("<table class=runs><thead><tr><th>started (UTC)</th><th>status</th><th>champion → challenger</th>"
             "<th>held out</th><th>champion hit@10 / MRR@10</th><th>challenger</th><th>feedback questions</th>"
             f"<th>decision</th></tr></thead><tbody>{rows}</tbody></table>")
    return _section("runs", title, note + _img(plots.runs_plot(board), "runs", "retraining runs over time")
                    + _collections(board) + table)


def render_page(board: Dashboard) -> str:
    """The whole page (UTF-8 HTML)."""
    window = f"{board.since:%Y-%m-%d} to {board.until:%Y-%m-%d}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">'
            f"<title>deepmem dashboard</title><style>{STYLE}</style></head><body>"
            f"<header><h1>deepmem: what people ask, and where it fails</h1><p>The last {board.days} days "
            f"({_e(window)}, UTC). Generated <time class=generated>"
            f"{_e(board.generated_at.strftime('%Y-%m-%d %H:%M:%S'))}</time> UTC.</p></header><main>"
            + "\n".join([_summary(board), _per_day(board), _per_channel(board), _gaps(board), _pages(board),
                         _runs(board)])
            + "</main></body></html>\n")

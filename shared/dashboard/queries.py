"""Every query the dashboard runs on the feedback database, in one place.

Plain SQL that DuckDB and PostgreSQL both accept, with ``?`` parameters as ``FeedbackStore.rows``
takes them. Each query is bounded by the window (``since`` <= asked_at < ``until``) and, where it
returns rows per question, by a row cap; grouping by day, channel, page and topic is done in Python.
"""

from __future__ import annotations

__all__ = ["QUESTIONS", "BEST_SCORES", "VOTES", "ESCALATIONS", "RETRIEVED", "CLICKS", "RUNS", "window"]

IN_WINDOW = "SELECT id FROM questions WHERE asked_at >= ? AND asked_at < ?"

# the newest questions of the window, at most ``limit``
QUESTIONS = ("SELECT id, asked_at, source, channel_id, user_id, text, answer_mode, covered, "
             "CASE WHEN answer IS NULL OR answer = '' THEN 0 ELSE 1 END AS has_answer "
             "FROM questions WHERE asked_at >= ? AND asked_at < ? ORDER BY asked_at DESC, id LIMIT ?")

# the best score among what each answer was built from (the answerer's own "not covered" signal)
BEST_SCORES = ("SELECT question_id, max(score) AS best FROM retrievals "
               f"WHERE variant = 'answer' AND question_id IN ({IN_WINDOW}) GROUP BY question_id")

# standing votes (one per user per answer, the latest; withdrawn reactions gone): the labels view decides
VOTES = ("SELECT DISTINCT question_id, user_id, label FROM labels "
         f"WHERE kind = 'vote' AND question_id IN ({IN_WINDOW})")

# questions handed to a person (an ``escalated`` event, recorded by the Slack side)
ESCALATIONS = f"SELECT DISTINCT question_id FROM events WHERE kind = 'escalated' AND question_id IN ({IN_WINDOW})"

# per retrieved section: how often it was among an answer's sources, and how often the answer cited it
RETRIEVED = ("SELECT url, min(chunk_id) AS chunk_id, count(*) AS retrieved, "
             "sum(CASE WHEN cited THEN 1 ELSE 0 END) AS cited FROM retrievals "
             f"WHERE variant = 'answer' AND url IS NOT NULL AND question_id IN ({IN_WINDOW}) GROUP BY url")

# clicks on sources, per section
CLICKS = ("SELECT r.url, count(*) AS clicks FROM events e JOIN retrievals r "
          "ON r.question_id = e.question_id AND r.chunk_id = e.chunk_id AND r.variant = 'answer' "
          f"WHERE e.kind = 'source_click' AND r.url IS NOT NULL AND e.question_id IN ({IN_WINDOW}) GROUP BY r.url")

# retraining runs of the window, oldest first, at most ``limit``
RUNS = ("SELECT id, started_at, finished_at, trigger, status, version, champion, decision, counts, metrics, error "
        "FROM runs WHERE started_at >= ? AND started_at < ? ORDER BY started_at, id LIMIT ?")


def window(since, until) -> list:
    """The parameters of a query bounded by the window."""
    return [since, until]

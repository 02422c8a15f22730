"""The feedback database (DuckDB): numbered migrations, and the one place labels are derived.

Tables hold what happened; the ``labels`` view says what it means for training:
- a vote (👍/👎 button or reaction) by a user on an answer: the chunks the answer cited are
  relevant (+1) or not relevant (-1) to the question. One vote per user per answer: the latest
  wins; removing a reaction (an event with value 0) withdraws that reaction's vote;
- a click on a cited source: that chunk is relevant (+1). The rank it was shown at is kept,
  because clicks favour top positions: training weights them by inverse propensity;
- a label (imported, or from the workspace's history): as given, either a chunk id or a
  ``target``: a page URL or url#anchor, resolved to chunks when it is used (one target, found
  when any of its chunks is).

Events of kind ``escalated`` (someone asked for an expert in a thread; value 1 when experts were
tagged, 0 when none were configured) are not labels: the dashboard counts them. Their id names the
channel and thread, so a thread is escalated once.
"""

from __future__ import annotations

__all__ = ["migrate", "SCHEMA_VERSION"]

MIGRATIONS = [
    # 1: questions, what was retrieved, and events
    """
    CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    CREATE TABLE questions (
        id VARCHAR PRIMARY KEY,
        asked_at TIMESTAMPTZ NOT NULL,
        source VARCHAR NOT NULL,          -- slack | web | cli | import
        user_id VARCHAR,
        team_id VARCHAR,
        channel_id VARCHAR,
        thread_ts VARCHAR,
        message_ts VARCHAR,               -- the answer's message (reactions point at it)
        dedupe_key VARCHAR,               -- Slack event id: a retried delivery is the same question
        text VARCHAR NOT NULL,
        answer VARCHAR,
        answer_mode VARCHAR,              -- llm | extractive | error
        adapter_version VARCHAR,
        answered_at TIMESTAMPTZ,
        latency_ms DOUBLE,
        error VARCHAR
    );
    CREATE TABLE retrievals (
        question_id VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,         -- answer: what the answer used; base: without deep memory
        rank INTEGER NOT NULL,
        chunk_id VARCHAR NOT NULL,
        url VARCHAR,
        score DOUBLE,
        cited BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (question_id, variant, rank)
    );
    CREATE TABLE events (
        id VARCHAR PRIMARY KEY,           -- a delivery's id: the same event twice is stored once
        question_id VARCHAR NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        user_id VARCHAR,
        kind VARCHAR NOT NULL,            -- vote | reaction | source_click | label
        value INTEGER NOT NULL DEFAULT 0, -- +1, -1, or 0 for a withdrawn reaction
        chunk_id VARCHAR,
        rank INTEGER,
        detail VARCHAR                    -- reaction name, button, import file
    );
    CREATE INDEX events_question ON events(question_id);
    CREATE INDEX questions_message ON questions(message_ts);
    CREATE INDEX questions_dedupe ON questions(dedupe_key);
    """,
    # 2: retraining runs
    """
    CREATE TABLE runs (
        id VARCHAR PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        trigger VARCHAR,                  -- schedule | manual | catch-up
        status VARCHAR NOT NULL,          -- running | promoted | kept | skipped | failed | interrupted
        pid INTEGER,
        version VARCHAR,                  -- the challenger, when one was trained
        champion VARCHAR,
        decision VARCHAR,
        counts VARCHAR,                   -- JSON
        metrics VARCHAR,                  -- JSON: before/after on each held-out set, with noise
        error VARCHAR,
        seconds DOUBLE
    );
    """,
    # 3: labels that point at a page or a section (history, imports): kept as written, resolved to
    # chunks when used, so a page stays one target instead of becoming every chunk it holds;
    # the question's source (slack, web, history, import) goes with each label
    """
    DROP VIEW IF EXISTS labels;  -- migration 1 made the first version of it
    ALTER TABLE events ADD COLUMN target VARCHAR;
    CREATE VIEW labels AS
    WITH reaction_state AS (
        -- a removed reaction withdraws that reaction, not the user's other votes
        SELECT question_id, user_id, detail, value, occurred_at, id,
               row_number() OVER (PARTITION BY question_id, user_id, detail ORDER BY occurred_at DESC, id DESC) AS n
        FROM events WHERE kind = 'reaction'
    ),
    standing AS (
        SELECT question_id, user_id, value, occurred_at, id FROM reaction_state WHERE n = 1 AND value <> 0
        UNION ALL
        SELECT question_id, user_id, value, occurred_at, id FROM events WHERE kind = 'vote'
    ),
    latest AS (
        SELECT *, row_number() OVER (PARTITION BY question_id, user_id ORDER BY occurred_at DESC, id DESC) AS n
        FROM standing
    ),
    votes AS (SELECT * FROM latest WHERE n = 1 AND value <> 0),
    clicks AS (
        SELECT question_id, user_id, chunk_id, min(rank) AS rank, max(occurred_at) AS occurred_at
        FROM events WHERE kind = 'source_click' AND chunk_id IS NOT NULL
        GROUP BY question_id, user_id, chunk_id
    )
    SELECT v.question_id, q.text AS question, r.chunk_id, r.url, r.rank, v.value AS label,
           'vote' AS kind, v.user_id, v.occurred_at, NULL AS target, q.source
    FROM votes v
    JOIN questions q ON q.id = v.question_id
    JOIN retrievals r ON r.question_id = v.question_id AND r.variant = 'answer' AND r.cited
    UNION ALL
    SELECT c.question_id, q.text, c.chunk_id, r.url, c.rank, 1, 'click', c.user_id, c.occurred_at, NULL, q.source
    FROM clicks c
    JOIN questions q ON q.id = c.question_id
    LEFT JOIN retrievals r ON r.question_id = c.question_id AND r.variant = 'answer' AND r.chunk_id = c.chunk_id
    UNION ALL
    SELECT e.question_id, q.text, e.chunk_id, NULL, e.rank, e.value, 'label', e.user_id, e.occurred_at, e.target,
           q.source
    FROM events e JOIN questions q ON q.id = e.question_id
    WHERE e.kind = 'label' AND e.value <> 0;
    """,
    # 4: whether the docs seemed to cover each question (shared.coverage): the answer's own decision,
    # so the dashboard counts unanswered questions as the bot judged them
    """
    ALTER TABLE questions ADD COLUMN covered BOOLEAN;
    ALTER TABLE questions ADD COLUMN coverage DOUBLE;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn) -> None:
    from ..errors import StoreError

    conn.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the feedback database has schema version {version}, written by a newer deepmem "
                         f"(this one understands up to {SCHEMA_VERSION})")
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(script)
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         [str(number)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

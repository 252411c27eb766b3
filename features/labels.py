"""Labels from the governed events, written once: the SQL of each training set's rows.

ranker_v1/v2 rows: one per clean (non-bot) impression with event_timestamp in [start, end):
`event_id, event_timestamp, user_id, item_id, category, list_id, position, query, session_id,
request_ts_s, label` with label = 1 when the same user clicked the same item from the same
list_id in the same session at or after the impression (clean events only).

intent_v1 rows: one per clean search event: `event_id, event_timestamp, user_id, query
(lower-cased, trimmed), session_id, request_ts_s, label` where label is the query's labelled
intent (null when unlabelled).

Both point-in-time paths (features.frames, features.training_set) and the training jobs take
their label rows from here.
"""

from __future__ import annotations

import pandas as pd

from governance.cleaning import normalise_text

# label: the user's last clean click on the same (session, item, list) is at or after the
# impression -- one hash join with the clicks grouped per key. (Asked per impression as
# EXISTS, it scanned the user's every later event: 93 s at 1M events, quadratic per user.)
RANKER_LABELS_SQL = """
SELECT i.event_id, i.event_ts AS event_timestamp, i.user_id, i.item_id, it.category,
       i.list_id, i.position, nullif(lower(btrim(i.query)), '') AS query, i.session_id,
       extract(epoch FROM i.event_ts)::bigint AS request_ts_s,
       coalesce(c.last_click >= i.event_ts, false)::int AS label
FROM events i
JOIN items it ON it.item_id = i.item_id
LEFT JOIN (
    SELECT user_id, session_id, item_id, list_id, max(event_ts) AS last_click
    FROM events
    WHERE event_type = 'click' AND NOT is_bot AND event_ts >= '{start}'::timestamptz
    GROUP BY user_id, session_id, item_id, list_id
) c ON c.user_id = i.user_id AND c.session_id = i.session_id AND c.item_id = i.item_id
   AND c.list_id = i.list_id
WHERE i.event_type = 'impression' AND NOT i.is_bot
  AND i.event_ts >= '{start}'::timestamptz AND i.event_ts < '{end}'::timestamptz
"""

INTENT_LABELS_SQL = """
SELECT s.event_id, s.event_ts AS event_timestamp, s.user_id,
       lower(btrim(s.query)) AS query, s.session_id,
       extract(epoch FROM s.event_ts)::bigint AS request_ts_s, l.intent AS label
FROM events s
LEFT JOIN (SELECT DISTINCT ON (lower(btrim(query))) lower(btrim(query)) AS q, intent
           FROM labelled_queries ORDER BY lower(btrim(query)), intent) l
       ON l.q = lower(btrim(s.query))
WHERE s.event_type = 'search' AND NOT s.is_bot AND s.query IS NOT NULL
  AND s.event_ts >= '{start}'::timestamptz AND s.event_ts < '{end}'::timestamptz
"""

# Frame order: both paths return rows sorted by these (where present).
SORT_COLUMNS = ("event_timestamp", "event_id", "item_id")

LABEL_SQL = {"ranker": RANKER_LABELS_SQL, "intent": INTENT_LABELS_SQL}

# Ingest batches a set of label rows (a table with the columns above) was made of: their own
# events, and for the ranker the clicks that made its positive labels (a click may land in a
# later daily batch than its impression).
LINEAGE_SQL = {
    # The clicks are found per positive row (LATERAL, kept from being flattened into a join by
    # OFFSET 0: index scans on events' (user_id, event_ts)); planned as a join on the events
    # table's statistics, it went quadratic (30 s for 5k rows).
    "ranker": """
SELECT DISTINCT e.batch_id FROM {table} t JOIN events e USING (event_id)
UNION
SELECT DISTINCT c.batch_id FROM {table} t JOIN events i USING (event_id)
CROSS JOIN LATERAL (
    SELECT c.batch_id FROM events c
    WHERE c.user_id = i.user_id AND c.event_ts >= i.event_ts
      AND c.event_type = 'click' AND NOT c.is_bot AND c.session_id = i.session_id
      AND c.item_id = i.item_id AND c.list_id = i.list_id OFFSET 0) c
WHERE t.label = 1
""",
    "intent": "SELECT DISTINCT e.batch_id FROM {table} t JOIN events e USING (event_id)",
}


def _iso(ts) -> str:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.isoformat()


def labels_kind(feature_service_name: str) -> str:
    return "intent" if feature_service_name.startswith("intent") else "ranker"


def labels_sql(feature_service_name: str, start, end) -> str:
    return LABEL_SQL[labels_kind(feature_service_name)].format(start=_iso(start), end=_iso(end))


def lineage_sql(feature_service_name: str, table: str) -> str:
    """Batch ids of the label rows in `table` (quoted identifier)."""
    return LINEAGE_SQL[labels_kind(feature_service_name)].format(table=table)


def query_key(text: str | None) -> str | None:
    """A query as the label rows and `query_stats` key it: the governed text (ingest's
    `cleaning.normalise_text`) lower-cased, which is what `nullif(lower(btrim(query)), '')`
    above makes of a stored query. Serving keys a live query with this, so a search list reads
    the same query rows its training rows did; None for no query (recommendation lists)."""
    if text is None:
        return None
    clean = normalise_text(pd.Series([text], dtype=object)).iloc[0]
    return None if clean is None else clean.lower()

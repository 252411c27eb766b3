"""Point-in-time training sets: labels from the governed events, features from Feast.

    df = build_training_set(store, "ranker_v1", start=..., end=...)   # labels from impressions
    df = build_training_set(store, "ranker_v1", entity_df=my_rows)     # caller's rows

ranker_v1 rows: one per clean (non-bot) impression with event_timestamp in [start, end):
`event_id, event_timestamp, user_id, item_id, category, list_id, position, query, session_id,
request_ts_s, label` + the service's features. label = 1 when the same user clicked the same
item from the same list_id in the same session at or after the impression (clean events only).

intent_v1 rows: one per clean search event: `event_id, event_timestamp, user_id, query
(lower-cased, trimmed), session_id, request_ts_s, label` where label is the query's labelled
intent (null when unlabelled).

Features are point in time: for each row, per feature view, the latest row with
event_timestamp <= the label's event_timestamp (within the view's TTL). Feature snapshots only
hold events strictly before their own timestamp (features/pipeline.py), so no row sees its
label's click or anything later.

`method="lateral"` (the default, what training uses) is the set-based path of
features/frames.py: per feature view one `LEFT JOIN LATERAL (... ORDER BY event_timestamp DESC
LIMIT 1)` that PostgreSQL answers from the (entity, event_timestamp) primary keys of the feature
tables, streamed in chunks, with the on-demand views run on whole chunks (vectors as matrices).
Its frame holds the entity columns and the service's features; on-demand inputs the service
does not list (the raw embeddings) are left out. `method="stock"` is Feast's
`get_historical_features`, the reference the tests compare against (same rows and values,
tests/test_features_pit.py); it joins every entity row to every earlier feature row within the
TTL before ranking them, which grows with rows x snapshots, and its on-demand views turn every
embedding into a Python list per row.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

RANKER_LABELS_SQL = """
SELECT i.event_id, i.event_ts AS event_timestamp, i.user_id, i.item_id, it.category,
       i.list_id, i.position, nullif(lower(btrim(i.query)), '') AS query, i.session_id,
       extract(epoch FROM i.event_ts)::bigint AS request_ts_s,
       (EXISTS (SELECT 1 FROM events c
                WHERE c.user_id = i.user_id AND c.event_ts >= i.event_ts
                  AND c.event_type = 'click' AND NOT c.is_bot
                  AND c.session_id = i.session_id AND c.item_id = i.item_id
                  AND c.list_id = i.list_id))::int AS label
FROM events i
JOIN items it ON it.item_id = i.item_id
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


def build_training_set(
    store,
    feature_service_name: str = "ranker_v1",
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    entity_df: pd.DataFrame | str | None = None,
    full_feature_names: bool = False,
    method: str = "lateral",
) -> pd.DataFrame:
    """Labels joined point-in-time with the feature service's features, in memory.

    Either `start`/`end` (labels built in PostgreSQL from impressions or searches) or
    `entity_df` (a DataFrame or SQL with the service's join keys and `event_timestamp`;
    `request_ts_s` is added from event_timestamp when missing).
    `method`: "lateral" (set-based, bounded memory: features.frames) or "stock" (Feast's
    get_historical_features, the reference). For a frame too big for memory, write it to
    Parquet with `features.frames.build_frame`.
    """
    if method not in ("stock", "lateral"):
        raise ValueError(f"method must be 'stock' or 'lateral', not {method!r}")
    if entity_df is None:
        if start is None or end is None:
            raise ValueError("give start and end, or entity_df")
        entity_df = labels_sql(feature_service_name, start, end)
    elif isinstance(entity_df, pd.DataFrame):
        entity_df = entity_df.copy()
        entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        if "request_ts_s" not in entity_df:
            entity_df["request_ts_s"] = (
                entity_df["event_timestamp"].astype("int64") // 10**9
            ).astype("int64")
    if method == "lateral":
        # Imported here: features.frames builds on this module's label SQL.
        from features.frames import frame_table

        return frame_table(
            store, feature_service_name, entity=entity_df, full_feature_names=full_feature_names
        ).to_pandas()
    service = store.get_feature_service(feature_service_name)
    job = store.get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=full_feature_names
    )
    df = job.to_df()
    sort = [c for c in SORT_COLUMNS if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)

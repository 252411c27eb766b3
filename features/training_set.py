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

Features come from `store.get_historical_features` on the feature service: for each row Feast
takes, per feature view, the latest row with event_timestamp <= the label's event_timestamp
(within the view's TTL). Feature snapshots only hold events strictly before their own
timestamp (features/pipeline.py), so no row sees its label's click or anything later.
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

LABEL_SQL = {"ranker": RANKER_LABELS_SQL, "intent": INTENT_LABELS_SQL}


def _iso(ts) -> str:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.isoformat()


def labels_sql(feature_service_name: str, start, end) -> str:
    kind = "intent" if feature_service_name.startswith("intent") else "ranker"
    return LABEL_SQL[kind].format(start=_iso(start), end=_iso(end))


def build_training_set(store, feature_service_name: str = "ranker_v1", *,
                       start: datetime | str | None = None, end: datetime | str | None = None,
                       entity_df: pd.DataFrame | str | None = None,
                       full_feature_names: bool = False) -> pd.DataFrame:
    """Labels joined point-in-time with the feature service's features.

    Either `start`/`end` (labels built in PostgreSQL from impressions or searches) or
    `entity_df` (a DataFrame or SQL with the service's join keys and `event_timestamp`;
    `request_ts_s` is added from event_timestamp when missing).
    """
    if entity_df is None:
        if start is None or end is None:
            raise ValueError("give start and end, or entity_df")
        entity_df = labels_sql(feature_service_name, start, end)
    elif isinstance(entity_df, pd.DataFrame):
        entity_df = entity_df.copy()
        entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        if "request_ts_s" not in entity_df:
            entity_df["request_ts_s"] = (
                entity_df["event_timestamp"].astype("int64") // 10**9).astype("int64")
    service = store.get_feature_service(feature_service_name)
    job = store.get_historical_features(entity_df=entity_df, features=service,
                                        full_feature_names=full_feature_names)
    df = job.to_df()
    sort = [c for c in ("event_timestamp", "event_id", "item_id") if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)

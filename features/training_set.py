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

from features.frames import frame_table, stock_training_set
from features.labels import labels_sql
from governance.db import transaction


def is_spark(store) -> bool:
    """Whether the store's offline side is Feast's Spark offline store."""
    return getattr(store.config.offline_store, "type", None) == "spark"


def _pg_frame(sql: str, settings=None) -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(sql)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def build_training_set(
    store,
    feature_service_name: str = "ranker_v1",
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    entity_df: pd.DataFrame | str | None = None,
    full_feature_names: bool = False,
    method: str | None = None,
    settings=None,
) -> pd.DataFrame:
    """Labels joined point-in-time with the feature service's features, in memory.

    Either `start`/`end` (labels built in PostgreSQL from impressions or searches) or
    `entity_df` (a DataFrame or SQL with the service's join keys and `event_timestamp`;
    `request_ts_s` is added from event_timestamp when missing).
    `method`: "lateral" (set-based, bounded memory: features.frames) or "stock" (Feast's
    get_historical_features, the reference). For a frame too big for memory, write it to
    Parquet with `features.frames.build_frame`. Default: "lateral" on PostgreSQL, "stock" when
    the store's offline store is Spark (CARTWISE_OFFLINE_ENGINE=spark): the point-in-time join
    then runs in Feast's Spark offline store (the labels SQL still runs in PostgreSQL, the
    one `settings` names).
    """
    if method is None:
        method = "stock" if is_spark(store) else "lateral"
    if method not in ("stock", "lateral"):
        raise ValueError(f"method must be 'stock' or 'lateral', not {method!r}")
    if entity_df is None:
        if start is None or end is None:
            raise ValueError("give start and end, or entity_df")
        entity_df = labels_sql(feature_service_name, start, end)
    if isinstance(entity_df, str) and method == "stock" and is_spark(store):
        entity_df = _pg_frame(entity_df, settings)  # label SQL is PostgreSQL's; Spark gets rows
    if isinstance(entity_df, pd.DataFrame):
        entity_df = entity_df.copy()
        entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        if "request_ts_s" not in entity_df:
            entity_df["request_ts_s"] = (
                entity_df["event_timestamp"].astype("int64") // 10**9
            ).astype("int64")
    if method == "lateral":
        return frame_table(
            store, feature_service_name, entity=entity_df, full_feature_names=full_feature_names
        ).to_pandas()
    return stock_training_set(store, feature_service_name, entity_df, full_feature_names)

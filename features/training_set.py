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

`method="lateral"` runs the same point-in-time join as one set-based query instead (see
`lateral_historical_features`): per feature view one `LEFT JOIN LATERAL (... ORDER BY
event_timestamp DESC LIMIT 1)` that PostgreSQL answers from the (entity, event_timestamp)
primary keys of the feature tables. Same rows and values as the stock path
(tests/test_features_pit.py); the stock path joins every entity row to every earlier
feature row within the TTL before ranking them, which grows with rows x snapshots.
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


def build_training_set(
    store,
    feature_service_name: str = "ranker_v1",
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    entity_df: pd.DataFrame | str | None = None,
    full_feature_names: bool = False,
    method: str = "stock",
) -> pd.DataFrame:
    """Labels joined point-in-time with the feature service's features.

    Either `start`/`end` (labels built in PostgreSQL from impressions or searches) or
    `entity_df` (a DataFrame or SQL with the service's join keys and `event_timestamp`;
    `request_ts_s` is added from event_timestamp when missing).
    `method`: "stock" (Feast's get_historical_features) or "lateral" (same rows, set-based SQL).
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
                entity_df["event_timestamp"].astype("int64") // 10**9
            ).astype("int64")
    service = store.get_feature_service(feature_service_name)
    if method == "stock":
        job = store.get_historical_features(
            entity_df=entity_df, features=service, full_feature_names=full_feature_names
        )
    elif method == "lateral":
        job = lateral_historical_features(
            store, entity_df, service, full_feature_names=full_feature_names
        )
    else:
        raise ValueError(f"method must be 'stock' or 'lateral', not {method!r}")
    df = job.to_df()
    sort = [c for c in ("event_timestamp", "event_id", "item_id") if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lateral_historical_features(
    store, entity_df: pd.DataFrame | str, features, full_feature_names: bool = False
):
    """`store.get_historical_features` for the PostgreSQL offline store, one LATERAL per view.

    Returns a Feast PostgreSQLRetrievalJob (so `to_df()` applies the on-demand views and
    dtypes exactly as the stock job does) whose query is, per entity row and feature view,
    the latest feature row with event_timestamp in [ts - ttl, ts] (no lower bound for ttl 0),
    ties broken by the created timestamp like Feast. Feature views, their sources, field
    mappings and TTLs come from Feast's own query context.
    """
    import contextlib
    import copy

    from feast import utils
    from feast.infra.offline_stores import offline_utils
    from feast.infra.offline_stores.contrib.postgres_offline_store import postgres as pgo
    from feast.infra.offline_stores.offline_store import RetrievalMetadata

    registry, project, config = store.registry, store.project, store.config
    refs = utils._get_features(registry, project, features, allow_cache=True)
    all_fvs, all_odfvs = utils._get_feature_views_to_use(registry, project, features)
    all_odfvs = copy.deepcopy(all_odfvs)
    for odfv in all_odfvs:
        odfv.write_to_online_store = False
    fvs, odfvs = utils._group_feature_refs(refs, all_fvs, all_odfvs)
    feature_views = [view for view, _ in fvs]
    provider_refs, seen = list(refs), set(refs)
    for view, feats in fvs:
        for feat in feats:
            ref = f"{view.projection.name_to_use()}:{feat}"
            if ref not in seen:
                provider_refs.append(ref)
                seen.add(ref)
    utils._validate_feature_refs(refs, full_feature_names)
    if isinstance(entity_df, pd.DataFrame) and config.coerce_tz_aware:
        entity_df = utils.make_df_tzaware(entity_df)
    entity_schema = pgo._get_entity_schema(entity_df, config)
    ts_col = offline_utils.infer_event_timestamp_from_entity_df(entity_schema)
    ts_range = pgo._get_entity_df_event_timestamp_range(entity_df, ts_col, config)
    contexts = offline_utils.get_feature_view_query_context(
        provider_refs, feature_views, registry, project, ts_range
    )

    @contextlib.contextmanager
    def query_generator():
        table = offline_utils.get_temp_entity_table_name()
        pgo._upload_entity_df(config, entity_df, table)
        try:
            yield _lateral_sql(
                contexts, table, list(entity_schema.keys()), ts_col, full_feature_names
            )
        finally:
            with pgo._get_conn(config.offline_store) as conn, conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {_q(table)}")

    return pgo.PostgreSQLRetrievalJob(
        query=query_generator,
        config=config,
        full_feature_names=full_feature_names,
        on_demand_feature_views=[view for view, _ in odfvs],
        metadata=RetrievalMetadata(
            features=refs,
            keys=list(set(entity_schema.keys()) - {ts_col}),
            min_event_timestamp=ts_range[0],
            max_event_timestamp=ts_range[1],
        ),
    )


def _lateral_sql(
    contexts, entity_table: str, entity_columns: list[str], ts_col: str, full_feature_names: bool
) -> str:
    select = [f"e.{_q(c)}" for c in entity_columns]
    joins = []
    for k, ctx in enumerate(contexts):
        alias = f"fv_{k}"
        cols = []
        for feature in ctx.features:
            out = ctx.field_mapping.get(feature, feature)
            if full_feature_names:
                out = f"{ctx.name}__{out}"
            cols.append(f"sub.{_q(feature)} AS {_q(out)}")
            select.append(f"{alias}.{_q(out)}")
        # entity_selections are 'column AS join_key' (join key mapping) or plain names
        conds = []
        for sel in ctx.entity_selections:
            src, _, key = sel.partition(" AS ")
            conds.append(f"sub.{_q(src.strip())} = e.{_q((key or src).strip())}")
        tsf = _q(ctx.timestamp_field)
        conds.append(f"sub.{tsf} <= e.{_q(ts_col)}")
        if ctx.ttl:
            conds.append(f"sub.{tsf} >= e.{_q(ts_col)} - {int(ctx.ttl)} * interval '1' second")
        order = f"sub.{tsf} DESC"
        if ctx.created_timestamp_column:
            order += f", sub.{_q(ctx.created_timestamp_column)} DESC"
        joins.append(
            f"LEFT JOIN LATERAL (SELECT {', '.join(cols) or '1 AS _none'} "
            f"FROM {ctx.table_subquery} AS sub WHERE {' AND '.join(conds)} "
            f"ORDER BY {order} LIMIT 1) AS {alias} ON true"
        )
    return f"SELECT {', '.join(select)}\nFROM {_q(entity_table)} AS e\n" + "\n".join(joins)

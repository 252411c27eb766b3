"""Train/serve consistency: online features vs offline point-in-time features.

    python -m features.consistency [--at ISO_TS] [--sample 50] [--service ranker_v2 ...]

For every feature service (or those given), a sample of entity rows from the latest snapshots
((user, item, category) for rankers, with a query for those keyed by the query too; queries
for intent; from the lake's feature tables with
CARTWISE_OFFLINE_ENGINE=spark) is read online (`get_online_features`
on the service, request time `at`) and offline by the path training uses (the set-based frame,
features.frames, at `at`, default now), and every feature whose values differ is reported
(floats compared with a 1e-6 relative tolerance). On-demand features are compared too: the
similarities run the same function (features.similarity) on both sides. After a
`materialize(-incremental)` up to `at` the two must agree; a difference means stale
materialisation, a TTL expiry seen by only one side, or a bug. Push-fed views (`user_session`)
and on-demand views that read them are left out (listed as skipped): online they are fresher
by design. `check` compares the batch views alone through Feast's stock offline path.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features.feast_store import get_store
from features.labels import labels_kind
from features.lake import _filesystem
from features.training_set import build_training_set
from governance.db import transaction
from governance.settings import get_settings

BATCH_VIEWS = ("user_stats", "item_stats", "category_stats", "user_category_affinity")


def _lake_recent(settings, table: str, columns: list[str]) -> pd.DataFrame:
    """Distinct `columns` of a lake feature table's rows in its last 7 days (Spark path)."""
    fs, root = _filesystem(f"{settings.lake_features()}/{table}")
    data = ds.dataset(root, filesystem=fs, format="parquet")
    ts = data.to_table(columns=["event_timestamp"])["event_timestamp"]
    if len(ts) == 0:
        return pd.DataFrame(columns=columns)
    since = pc.subtract(pc.max(ts), pd.Timedelta(days=7).to_pytimedelta())
    recent = data.to_table(columns=columns, filter=ds.field("event_timestamp") >= since)
    return recent.to_pandas().drop_duplicates().sort_values(columns).reset_index(drop=True)


def _spark_path(settings) -> bool:
    return (settings or get_settings()).offline_engine == "spark"


def sample_entities(settings=None, n: int = 50) -> pd.DataFrame:
    if _spark_path(settings):
        # The feature tables are the lake's; items stay in PostgreSQL (the system of record).
        pairs = _lake_recent(settings or get_settings(), "user_category_features",
                             ["user_id", "category"]).head(n)  # fmt: skip
        with transaction(settings) as cur:
            cur.execute(
                """SELECT DISTINCT ON (p.user_id, p.category) p.user_id, i.item_id, p.category
                   FROM unnest(%s::text[], %s::text[]) AS p(user_id, category)
                   JOIN items i ON i.category = p.category
                   ORDER BY p.user_id, p.category, md5(i.item_id || p.user_id)""",
                (list(pairs["user_id"]), list(pairs["category"])),
            )
            return pd.DataFrame(cur.fetchall(), columns=["user_id", "item_id", "category"])
    with transaction(settings) as cur:
        cur.execute(
            """SELECT DISTINCT ON (f.user_id, f.category) f.user_id, i.item_id, f.category
               FROM user_category_features f
               JOIN items i ON i.category = f.category
               -- recent snapshots only: older ones are past the views' TTL on both sides
               WHERE f.event_timestamp >=
                     (SELECT max(event_timestamp) FROM user_category_features)
                                          - interval '7 days'
               ORDER BY f.user_id, f.category, md5(i.item_id || f.user_id)
               LIMIT %s""",
            (n,),
        )
        return pd.DataFrame(cur.fetchall(), columns=["user_id", "item_id", "category"])


def sample_queries(settings=None, n: int = 50) -> pd.DataFrame:
    if _spark_path(settings):
        return _lake_recent(settings or get_settings(), "query_features", ["query"]).head(n)
    with transaction(settings) as cur:
        cur.execute(
            """SELECT DISTINCT query FROM query_features
               WHERE event_timestamp >= (SELECT max(event_timestamp) FROM query_features)
                                        - interval '7 days'
               ORDER BY query LIMIT %s""",
            (n,),
        )
        return pd.DataFrame(cur.fetchall(), columns=["query"])


def with_queries(settings, entities: pd.DataFrame) -> pd.DataFrame:
    """Ranker rows for a service keyed by the query too: every other row gets a recent
    frequent query whose most clicked category is the row's, the others another recent query.
    Never none: Feast's online read takes no null join key (serving leaves the query's views
    out for a list without a query; the frame's nulls there are checked against Feast's stock
    path in tests/test_features_pit.py)."""
    if _spark_path(settings):
        recent = _lake_recent(
            settings or get_settings(), "query_features", ["query", "q_top_category_1"]
        )
    else:
        with transaction(settings) as cur:
            cur.execute(
                """SELECT DISTINCT query, q_top_category_1 FROM query_features
                   WHERE event_timestamp >= (SELECT max(event_timestamp) FROM query_features)
                                            - interval '7 days'
                   ORDER BY query"""
            )
            recent = pd.DataFrame(cur.fetchall(), columns=["query", "q_top_category_1"])
    by_category = recent.dropna().drop_duplicates("q_top_category_1")
    by_category = dict(zip(by_category["q_top_category_1"], by_category["query"]))
    queries = recent["query"].tolist()
    out = []
    if not queries:
        raise ValueError("no recent query_features rows to pair with the ranker's rows")
    for k, category in enumerate(entities["category"]):
        if k % 2 == 0 and category in by_category:
            out.append(by_category[category])
        else:
            out.append(queries[k % len(queries)])
    return entities.assign(query=out)


def service_join_keys(store, service_name: str) -> set[str]:
    """Join keys of every feature view a service reads, the inputs of its on-demand views
    included."""
    service = store.get_feature_service(service_name)
    views = {v.name: v for v in store.list_feature_views()}
    views.update({v.name: v for v in store.list_stream_feature_views()})
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    names = set()
    for proj in service.feature_view_projections:
        if proj.name in odfvs:
            names |= set(odfvs[proj.name].source_feature_view_projections)
        else:
            names.add(proj.name)
    return {key for name in names if name in views for key in views[name].join_keys}


def _same(a, b) -> bool:
    na = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA
    nb = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if na or nb:
        return na and nb
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def check(
    store, entities: pd.DataFrame, at: datetime | None = None, views: tuple[str, ...] = BATCH_VIEWS
) -> dict:
    at = at or datetime.now(UTC)
    refs = [f"{v}:{f.name}" for v in views for f in store.get_feature_view(v).features]
    online = store.get_online_features(
        features=refs, entity_rows=entities.to_dict("records")
    ).to_df()
    edf = entities.copy()
    edf["event_timestamp"] = (
        pd.Timestamp(at).tz_convert("UTC")
        if pd.Timestamp(at).tzinfo
        else pd.Timestamp(at, tz="UTC")
    )
    offline = store.get_historical_features(entity_df=edf, features=refs).to_df()
    keys = list(entities.columns)
    merged = online.merge(offline, on=keys, suffixes=("_online", "_offline"))
    mismatches = []
    for name in (r.split(":", 1)[1] for r in refs):
        for row in merged.itertuples(index=False):
            a = getattr(row, f"{name}_online")
            b = getattr(row, f"{name}_offline")
            a = a.item() if hasattr(a, "item") else a
            b = b.item() if hasattr(b, "item") else b
            if not _same(a, b):
                mismatches.append(
                    {
                        **{k: getattr(row, k) for k in keys},
                        "feature": name,
                        "online": a,
                        "offline": b,
                    }
                )
    return {
        "at": str(at),
        "rows": len(merged),
        "features": len(refs),
        "compared": len(merged) * len(refs),
        "mismatches": mismatches,
    }


def _skipped(store, service) -> dict[str, str]:
    """Views of the service left out, with why: push-fed ones and on-demand ones reading them."""
    pushed = {v.name for v in store.list_stream_feature_views()}
    out = {}
    for proj in service.feature_view_projections:
        if proj.name in pushed:
            out[proj.name_to_use()] = "push-fed: fresher online by design"
    for odfv in store.list_on_demand_feature_views():
        reads = set(odfv.source_feature_view_projections) & pushed
        if reads:
            out[odfv.name] = f"on-demand over push-fed {sorted(reads)}"
    return out


def check_service(store, service_name: str, entities: pd.DataFrame, at=None) -> dict:
    """Every feature of a service, online vs the training frame (see the module doc)."""
    at = pd.Timestamp(at or datetime.now(UTC))
    at = at.tz_convert("UTC") if at.tzinfo else at.tz_localize("UTC")
    service = store.get_feature_service(service_name)
    skipped = {
        k: v
        for k, v in _skipped(store, service).items()
        if k in {p.name_to_use() for p in service.feature_view_projections}
    }
    refs = [
        f"{proj.name_to_use()}:{f.name}"
        for proj in service.feature_view_projections
        if proj.name_to_use() not in skipped
        for f in proj.features
    ]
    rows = entities.reset_index(drop=True).copy()
    rows["request_ts_s"] = int(at.timestamp())
    online = store.get_online_features(features=refs, entity_rows=rows.to_dict("records"))
    online = online.to_df()
    edf = rows.assign(event_timestamp=at, event_id=[f"c{k:08d}" for k in range(len(rows))])
    offline = build_training_set(store, service_name, entity_df=edf)  # sorted by event_id
    keys = list(entities.columns)
    mismatches = []
    for name in (r.split(":", 1)[1] for r in refs):
        for k in range(len(rows)):
            a, b = online[name].iloc[k], offline[name].iloc[k]
            a = a.item() if hasattr(a, "item") else a
            b = b.item() if hasattr(b, "item") else b
            if not _same(a, b):
                key = {c: rows[c].iloc[k] for c in keys}
                mismatches.append({**key, "feature": name, "online": a, "offline": b})
    return {
        "at": str(at),
        "rows": len(rows),
        "features": len(refs),
        "feature_names": [r.split(":", 1)[1] for r in refs],
        "compared": len(rows) * len(refs),
        "skipped": skipped,
        "mismatches": mismatches,
    }


def check_all(store, settings=None, services=None, n: int = 50, at=None) -> dict:
    """check_service for each service (default: all in the registry), sampled entities."""
    names = services or sorted(s.name for s in store.list_feature_services())
    out = {}
    for name in names:
        if labels_kind(name) == "intent":
            entities = sample_queries(settings, n)
        else:
            entities = sample_entities(settings, n)
            if "query" in service_join_keys(store, name):
                entities = with_queries(settings, entities)
        out[name] = check_service(store, name, entities, at=at)
    return out


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.consistency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--at", help="ISO timestamp (default: now)")
    parser.add_argument(
        "--sample", type=int, default=50, help="entity rows per service (default: %(default)s)"
    )
    parser.add_argument(
        "--service", action="append", help="feature service to check (repeatable; default: all)"
    )
    args = parser.parse_args(argv)

    store = get_store()
    at = datetime.fromisoformat(args.at) if args.at else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    report = check_all(store, services=args.service, n=args.sample, at=at)
    print(json.dumps(report, indent=2, default=str))
    return 1 if any(r["mismatches"] for r in report.values()) else 0


if __name__ == "__main__":
    raise SystemExit(_main())

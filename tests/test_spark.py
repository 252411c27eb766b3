"""The Spark path: the lake export is incremental and idempotent, the feature SQL transpiled
to Spark produces the PostgreSQL pipeline's feature tables row for row, training sets from
Feast's Spark offline store equal the PostgreSQL ones, and materialisation through Feast's Spark
compute engine into a Redis Cluster is consistent with the offline side.

One SparkSession (local[2], few shuffle partitions) and one small shop for the module: starting
Spark and running the pipeline twice are the slow parts.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import lake, pipeline
from features.labels import labels_sql
from features.spark_pipeline import feature_tables
from features.training_set import build_training_set
from governance.db import feast_env, transaction
from governance.settings import Settings
from tests import feature_events as synthetic

KEYS = {
    "feature_user_hourly": ["user_id", "hour_ts"],
    "feature_user_category_hourly": ["user_id", "category", "hour_ts"],
    "feature_item_hourly": ["item_id", "hour_ts"],
    "feature_query_hourly": ["query", "category", "hour_ts"],
    "user_features": ["user_id", "event_timestamp"],
    "item_features": ["item_id", "event_timestamp"],
    "category_features": ["category", "event_timestamp"],
    "user_category_features": ["user_id", "category", "event_timestamp"],
    "query_features": ["query", "event_timestamp"],
    "user_session_features": ["user_id", "event_timestamp"],
}


@pytest.fixture(scope="session")
def spark():
    from features.spark_pipeline import spark_session

    session = spark_session("local[2]", shuffle_partitions=2, app="cartwise-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def shop(template_database, tmp_path_factory):
    """A small shop in two event batches (the second with late events), both pipelines run."""
    from conftest import _drop, _url_for, make_database

    name = make_database(template_database)
    folder = tmp_path_factory.mktemp("spark")
    settings = Settings(
        database_url=_url_for(name),
        redis_url=None,
        data_dir=folder / "data",
        lake_uri=str(folder / "lake"),
    )
    catalog = synthetic.load(settings, n_sessions=80, days=5)
    with transaction(settings) as cur:
        # Labels in their own loaded batch, as ingest leaves them (the lake exports by batch).
        labels_batch = synthetic.new_batch(cur, "labelled_queries", 3)
        cur.execute(
            """INSERT INTO labelled_queries (query, intent, category, batch_id)
               VALUES ('Laptop', 'product', 'Laptops', %(b)s), ('laptop', 'browse', NULL, %(b)s),
                      ('phone', 'product', 'Smartphones', %(b)s)""",
            {"b": labels_batch},
        )
    first = lake.export(settings)
    again = lake.export(settings)
    pipeline.run(settings, embeddings=False)
    with transaction(settings) as cur:
        # A second batch over the same days: late events for the incremental PostgreSQL run.
        synthetic.insert_events(cur, synthetic.make_events(catalog, 30, days=5, seed=7, prefix="L"))
    second = lake.export(settings)
    pipeline.run(settings, embeddings=False)
    yield {"settings": settings, "exports": (first, again, second), "catalog": catalog}
    _drop(name)


def test_export_is_incremental_and_idempotent(shop):
    first, again, second = shop["exports"]
    settings = shop["settings"]
    with transaction(settings) as cur:
        cur.execute("SELECT table_name, count(*) FROM ingest_batches GROUP BY 1")
        batches = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM events")
        n_events = cur.fetchone()[0]
    # The first export took every batch but the second events batch, loaded after it.
    assert len(first.exported) == sum(batches.values()) - 1
    assert batches["labelled_queries"] == 1 and batches["events"] == 2
    assert again.exported == [] and again.skipped == len(first.exported)
    assert [e.table for e in second.exported] == ["events"]
    assert second.skipped == len(first.exported)
    # Every clean event is in the lake exactly once.
    lake_events = pq.read_table(f"{settings.lake_uri}/events").to_pandas()
    assert len(lake_events) == n_events == lake_events["event_id"].nunique()
    assert lake.status(settings)["rows"]["events"] == n_events


def test_export_resumes_after_a_crash(shop, tmp_path):
    """A batch whose record is missing (killed mid-write) is exported again, whole."""
    settings = shop["settings"].model_copy(update={"lake_uri": str(tmp_path / "lake")})
    full = lake.export(settings)
    last = full.exported[-1]
    (tmp_path / "lake" / "_exports" / f"batch_id={last.batch_id}.json").unlink()
    (tmp_path / "lake" / last.path).write_bytes(b"half a file")
    resumed = lake.export(settings)
    assert [e.batch_id for e in resumed.exported] == [last.batch_id]
    assert pq.read_table(tmp_path / "lake" / last.path).num_rows == last.rows


def _pg_table(settings, table: str) -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(f"SELECT * FROM {table}")
        cols = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def _normalise(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.drop(columns=[c for c in ("created_at",) if c in df.columns])
    for c in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[c]) or c in ("hour_ts", "event_timestamp"):
            df[c] = pd.to_datetime(df[c], utc=True)
    return df.sort_values(keys).reset_index(drop=True)


def _differences(pg: pd.DataFrame, sp: pd.DataFrame, table: str) -> list[str]:
    if list(pg.columns) != list(sp.columns):
        return [f"{table}: columns {list(pg.columns)} != {list(sp.columns)}"]
    if len(pg) != len(sp):
        merged = pg[KEYS[table]].merge(sp[KEYS[table]], how="outer", indicator=True)
        odd = merged[merged["_merge"] != "both"].head(3).to_dict("records")
        return [f"{table}: {len(pg)} PostgreSQL rows, {len(sp)} Spark rows, e.g. {odd}"]
    out = []
    for col in pg.columns:
        for i, (a, b) in enumerate(zip(pg[col], sp[col])):
            a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
            b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                ok = math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
            else:
                ok = a == b
            if not ok:
                key = dict(pg.iloc[i][KEYS[table]])
                out.append(f"{table}.{col} row {i} ({key}): {a!r} != {b!r}")
                break
    return out


@pytest.fixture(scope="module")
def spark_run(shop, spark):
    """The Spark pipeline over the shop's lake, once: to <lake>/features (Feast's sources)."""
    from features import spark_pipeline

    return spark_pipeline.run(shop["settings"], spark, explain=True)


def test_spark_plans_have_no_cartesian_product(spark_run):
    """No step pairs every row with every row: a CartesianProduct or a nested-loop join grows
    with the square of the events (the session step's LATERAL did, until the transpiler
    rewrote it), and every time-range join also has an equality key to hash on."""
    assert len(spark_run.plans) == len(spark_run.steps) > 20
    slow = [
        step
        for step, plan in spark_run.plans.items()
        if "CartesianProduct" in plan or "NestedLoopJoin" in plan
    ]
    assert slow == []
    hourly = spark_run.plans["10_hourly.sql insert feature_item_hourly"]
    assert "date_trunc(HOUR, event_ts" in hourly and "HashJoin" in hourly


def test_spark_pipeline_equals_postgres(shop, spark_run):
    settings = shop["settings"]
    report = spark_run
    assert report.out == settings.lake_features()
    problems = []
    for table in feature_tables():
        pg = _normalise(_pg_table(settings, table), KEYS[table])
        sp = _normalise(pq.read_table(f"{report.out}/{table}").to_pandas(), KEYS[table])
        assert len(pg) > 0, table
        assert report.rows[table] == len(sp)
        problems += _differences(pg, sp, table)
    assert problems == []


def test_sliding_sums_equal_spark_frames(spark):
    """The running-sum form of a sliding RANGE sum equals Spark's own frame, row for row: rows
    exactly w before the current one counted, a microsecond earlier not, peers, NULLs, gaps."""
    import sqlglot

    from features.sql_transpile import to_spark

    h = timedelta(hours=1)
    t0 = synthetic.T0
    rows = [
        ("a", t0, 1), ("a", t0 + h, 2), ("a", t0 + 3 * h, 4), ("a", t0 + 3 * h, None),
        ("a", t0 + 3 * h + timedelta(microseconds=1), 8), ("a", t0 + 6 * h, 16),
        ("a", t0 + 6 * h + timedelta(microseconds=1), None), ("a", t0 + 30 * h, 32),
        ("a", t0 + 31 * h, None), ("b", t0 + 2 * h, None), ("b", t0 + 9 * h, 64),
    ]  # fmt: skip
    spark.createDataFrame(rows, "k STRING, t TIMESTAMP, x BIGINT").createOrReplaceTempView("_s")
    sql = """SELECT k, t, x, sum(x) OVER w AS s3h, sum(x * 2) OVER (PARTITION BY k ORDER BY t
                 RANGE BETWEEN interval '1 day' PRECEDING AND CURRENT ROW) AS s1d
             FROM _s WINDOW w AS (PARTITION BY k ORDER BY t
                 RANGE BETWEEN interval '3 hours' PRECEDING AND CURRENT ROW)"""
    rewritten = to_spark(sqlglot.parse_one(sql, read="postgres"))
    assert "UNBOUNDED PRECEDING AND INTERVAL '10800000001' MICROSECOND PRECEDING" in rewritten
    assert "INTERVAL '3' HOURS PRECEDING" not in rewritten
    native = sqlglot.transpile(sql, read="postgres", write="spark")[0]
    order = " ORDER BY k, t, x NULLS FIRST"
    got = [tuple(r) for r in spark.sql(f"SELECT * FROM ({rewritten})" + order).collect()]
    want = [tuple(r) for r in spark.sql(f"SELECT * FROM ({native})" + order).collect()]
    assert got == want
    assert [r[3] for r in want if r[0] == "b"] == [None, 64]


def test_late_batch_reaches_back(shop):
    """The second batch really has events before the first batch's last hour (else the
    equality above would not cover the incremental path's late-event rewrites)."""
    settings = shop["settings"]
    with transaction(settings) as cur:
        cur.execute(
            "SELECT batch_id, min(event_ts), max(event_ts) FROM events GROUP BY 1 ORDER BY 1"
        )
        (b1, lo1, hi1), (b2, lo2, hi2) = cur.fetchall()
    assert lo2 < hi1 - timedelta(hours=1)


# ---------------------------------------------------------------- Feast on Spark
END = synthetic.T0 + timedelta(days=6)


@pytest.fixture(scope="module")
def stores(shop, spark_run, redis_cluster):
    """The same feature_repo applied twice: on PostgreSQL (SQLite online) and on Spark (the
    Spark pipeline's Parquet feature tables; online store: the Redis Cluster)."""
    from features import feast_store

    settings = shop["settings"]
    saved = {k: os.environ.get(k) for k in feast_env(settings)}
    tag = settings.database_url.rsplit("/", 1)[-1][-8:]
    pg_settings = settings.model_copy(update={"feast_project": f"cw_pg_{tag}"})
    spark_settings = settings.model_copy(
        update={
            "feast_project": f"cw_spark_{tag}",
            "offline_engine": "spark",
            "spark_master": "local[2]",
            "redis_url": redis_cluster.url,
            "redis_cluster": True,
            "spark_driver_memory": "1g",  # Spark's own default: the session is already up
        }
    )
    pg_store = feast_store.apply(pg_settings)
    spark_store = feast_store.apply(spark_settings)
    yield {"pg": pg_store, "spark": spark_store, "settings": spark_settings}
    for key, value in saved.items():  # later modules get the environment they had
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _label_rows(settings, service: str) -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(labels_sql(service, synthetic.T0, END))
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def _value(v):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return tuple(_value(x) for x in v)
    if isinstance(v, pd.Timestamp):
        return v.tz_localize("UTC") if v.tzinfo is None else v.tz_convert("UTC")
    return v


def _same(a, b) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def test_spark_sources_and_engine_are_configured(stores):
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    fs = stores["spark"]
    assert fs.config.offline_store.type == "spark"
    from features.spark_engine import ENGINE_TYPE, SparkEngine

    assert fs.config.batch_engine_config["type"] == ENGINE_TYPE
    assert isinstance(fs._get_provider().batch_engine, SparkEngine)
    assert fs.config.online_store.redis_type == "redis_cluster"
    # CARTWISE_SPARK_DRIVER_MEMORY reaches both of Feast's Spark sessions' configuration.
    assert fs.config.offline_store.spark_conf["spark.driver.memory"] == "1g"
    assert fs.config.batch_engine_config["spark_conf"]["spark.driver.memory"] == "1g"
    views = fs.list_batch_feature_views() + fs.list_stream_feature_views()
    sources = {v.name: v.batch_source for v in views}
    assert sources and all(isinstance(s, SparkSource) for s in sources.values()), sources
    assert sources["user_stats"].path == f"{stores['settings'].lake_features()}/user_features"
    # Same services and feature names on both engines.
    for name in ("ranker_v1", "ranker_v2", "intent_v1"):
        pg = stores["pg"].get_feature_service(name).feature_view_projections
        sp = fs.get_feature_service(name).feature_view_projections
        assert [(p.name, [f.name for f in p.features]) for p in pg] == [
            (p.name, [f.name for f in p.features]) for p in sp
        ]


@pytest.mark.parametrize("service", ["ranker_v2", "intent_v1"])
def test_spark_training_set_equals_postgres(stores, service):
    rows = _label_rows(stores["settings"], service)
    assert len(rows) > 50
    pg = build_training_set(stores["pg"], service, entity_df=rows, method="stock")
    sp = build_training_set(stores["spark"], service, entity_df=rows)  # Spark: stock default
    assert sorted(pg.columns) == sorted(sp.columns)
    assert len(pg) == len(sp) == len(rows)
    keys = ["event_id"]
    pg = pg.sort_values(keys).reset_index(drop=True)
    sp = sp.sort_values(keys).reset_index(drop=True)
    problems = []
    for col in pg.columns:
        for i, (a, b) in enumerate(zip(pg[col], sp[col])):
            a, b = _value(a), _value(b)
            if not _same(a, b):
                problems.append(f"{col} {pg['event_id'][i]}: PostgreSQL {a!r} != Spark {b!r}")
                break
    assert problems == []
    feats = [c for c in ("ctr_7d", "item_ctr_smoothed_30d", "searches_30d") if c in sp]
    assert feats and sp[feats].notna().any().all()  # the join found rows, not only nulls


def test_spark_materialize_into_redis_cluster_is_consistent(stores):
    from features.consistency import check, check_all, sample_entities

    fs, settings = stores["spark"], stores["settings"]
    fs.materialize(start_date=synthetic.T0 - timedelta(days=1), end_date=END)
    report = check(fs, sample_entities(settings, n=20), at=END)  # stock PIT on Spark
    assert report["compared"] > 0
    assert report["mismatches"] == []
    services = check_all(fs, settings, n=10, at=END)  # every service, as the CLI runs it
    for name, r in services.items():
        assert r["compared"] > 0, name
        assert r["mismatches"] == [], name

"""The feature pipeline on Spark: the same `features/sql/*.sql`, transpiled, over the lake.

    python -m features.spark_pipeline                      # rebuild the feature tables
    python -m features.spark_pipeline --master spark://h:7077 --out s3a://bucket/features

Reads the lake that `python -m features.lake export` writes (`CARTWISE_LAKE_URI`), runs the
steps `features.sql_transpile` makes from the PostgreSQL feature SQL, and writes each feature
table as Parquet to `<out>/<table>/` (default `<lake>/features`). It is a rebuild over every
exported batch, the way a distributed engine is normally used (the PostgreSQL pipeline is
incremental by batch); tests/test_spark.py compares its tables with the PostgreSQL
pipeline's, row for row.

The MiniLM embeddings (`item_embeddings`, `user_embeddings`) are Python over PostgreSQL
(features.embeddings), not feature SQL: the run copies them as they are to `<out>/<table>/`,
so Feast's Spark sources find every table its views read (`--no-embeddings` skips the copy).

`CARTWISE_SPARK_MASTER` (default `local[*]`) picks the cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from features.lake import SCHEMAS, _filesystem, lake_uri
from features.pipeline import PipelineParams, sql_files
from features.sql_transpile import feature_table_schemas, spark_steps, written_tables
from governance.db import transaction
from governance.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The embedding tables (Python, not SQL), copied from PostgreSQL with their Arrow types.
EMBEDDING_TABLES = {
    "item_embeddings": pa.schema(
        [
            ("item_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("title_hash", pa.string()),
            ("title_embedding", pa.list_(pa.float32())),
        ]
    ),
    "user_embeddings": pa.schema(
        [
            ("user_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("recent_items_embedding", pa.list_(pa.float32())),
        ]
    ),
}


@lru_cache(maxsize=1)
def feature_tables() -> tuple[str, ...]:
    """The tables the feature SQL writes, read from the SQL itself (its INSERT targets)."""
    return written_tables(sql_files(), PipelineParams().sql_params())


# Keys that ingest upserts: the lake may hold a key in several batches; the last batch wins.
LAKE_KEYS = {"items": ("item_id",), "users": ("user_id",), "labelled_queries": ("query_id",)}


@dataclass
class SparkRunReport:
    out: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per SQL file, plus write
    steps: list[dict] = field(default_factory=list)  # per step: source, kind, name, seconds
    plans: dict[str, str] = field(default_factory=dict)  # "file kind name": physical plan


def physical_plan(df, mode: str = "formatted") -> str:
    """The plan Spark runs for `df` (as EXPLAIN FORMATTED prints it), as a string."""
    jvm = df.sparkSession._jvm
    explain_mode = jvm.org.apache.spark.sql.execution.ExplainMode.fromString(mode)
    return df._jdf.queryExecution().explainString(explain_mode)


def spark_session(
    master: str = "local[*]",
    shuffle_partitions: int = 8,
    app: str = "cartwise",
    driver_memory: str | None = None,
):
    """A SparkSession in UTC with cartwise's settings (reused if one is already running).

    `driver_memory` (e.g. "4g") sizes the JVM that Python starts, which in local mode runs the
    executors too; it has no effect once a JVM is running (Spark's default is 1g)."""
    from pyspark.sql import SparkSession  # heavy: only the Spark path loads it

    # Python workers run this interpreter (with cartwise's packages), not whatever python3 is
    # first on PATH; a cluster sets PYSPARK_PYTHON for its executors.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    return (
        builder.master(master)
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )


def read_lake(spark, uri: str, cache: bool = True) -> dict[str, int | None]:
    """Register the lake's tables as views (latest batch per key) and `_new_batches`; with
    `cache`, each table is read once into Spark's block store, and its rows are counted."""
    # PySpark is the optional `spark` extra and starts a JVM: imported where Spark runs.
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    counts = {}
    for table, schema in SCHEMAS.items():
        path = f"{uri}/{table}"
        try:
            df = spark.read.parquet(path)
        except Exception as exc:  # AnalysisException: no batch of this table exported yet
            if "PATH_NOT_FOUND" not in str(exc) and "does not exist" not in str(exc):
                raise
            ddl = ", ".join(f"{f.name} {_spark_type(f.type)}" for f in schema) + ", batch_id BIGINT"
            df = spark.createDataFrame([], ddl)
        if table in LAKE_KEYS:
            w = Window.partitionBy(*LAKE_KEYS[table]).orderBy(F.col("batch_id").desc())
            df = df.withColumn("_rk", F.row_number().over(w)).where("_rk = 1").drop("_rk")
        if cache:
            # Read once: the steps read `events` six times and `items` nine (each time its
            # latest-batch window), and every read lists and opens a file per batch.
            df = df.localCheckpoint()
        df.createOrReplaceTempView(table)
        counts[table] = df.count() if cache else None
    spark.sql("SELECT DISTINCT batch_id FROM events").createOrReplaceTempView("_new_batches")
    return counts


def _spark_type(t) -> str:

    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    return {
        pa.string(): "STRING",
        pa.int32(): "INT",
        pa.int64(): "BIGINT",
        pa.bool_(): "BOOLEAN",
    }[t]


def _empty_tables(spark) -> dict:
    schemas = feature_table_schemas()
    tables = {}
    for name in feature_tables():
        ddl = ", ".join(f"`{c}` {t}" for c, t in schemas[name])
        tables[name] = spark.createDataFrame([], ddl)
        tables[name].createOrReplaceTempView(name)
    return tables


def _append(spark, tables: dict, name: str, rows, columns: list[str] | None):
    """INSERT semantics: name the SELECT's columns, cast to the table's types, default the rest."""
    # PySpark is the optional `spark` extra and starts a JVM: imported where Spark runs.
    from pyspark.sql import functions as F

    target = tables[name]
    columns = columns or target.columns[: len(rows.columns)]
    rows = rows.toDF(*columns)
    exprs = []
    for f in target.schema.fields:
        if f.name in columns:
            exprs.append(F.col(f.name).cast(f.dataType).alias(f.name))
        elif f.name == "created_at":
            exprs.append(F.current_timestamp().alias(f.name))
        else:
            exprs.append(F.lit(None).cast(f.dataType).alias(f.name))
    # Materialised now: later steps read it several times, and the lineage stays short.
    table = target.unionByName(rows.select(*exprs)).localCheckpoint()
    tables[name] = table
    table.createOrReplaceTempView(name)


def run(
    settings: Settings | None = None,
    spark=None,
    params: PipelineParams | None = None,
    *,
    out: str | None = None,
    progress: bool = False,
    embeddings: bool = True,
    explain: bool = False,
) -> SparkRunReport:
    """Rebuild every feature table on Spark from the lake and write them as Parquet.

    `explain`: keep each step's physical plan in the report (`plans`)."""
    settings = settings or get_settings()
    params = params or PipelineParams()
    spark = spark or spark_session(settings.spark_master)
    # Feast's Spark offline store turns this on in the session it shares; the transpiled SQL
    # quotes plain column names with backticks, which it would read as regular expressions.
    spark.conf.set("spark.sql.parser.quotedRegexColumnNames", "false")
    uri = lake_uri(settings)
    out = out or settings.lake_features()
    report = SparkRunReport(out=out)
    t0 = time.perf_counter()
    read_lake(spark, uri)
    report.seconds["read_lake"] = round(time.perf_counter() - t0, 3)
    tables = _empty_tables(spark)
    files = sql_files()
    if progress:
        files = tqdm(files, desc="feature SQL on Spark", unit="file")
    for path in files:
        t0 = time.perf_counter()
        for step in spark_steps(path, params.sql_params()):
            t1 = time.perf_counter()
            df = spark.sql(step.sql)
            if explain:
                report.plans[f"{step.source} {step.kind} {step.name}"] = physical_plan(df)
            if step.kind == "view":
                df.localCheckpoint().createOrReplaceTempView(step.name)
            else:
                _append(spark, tables, step.name, df, step.columns)
            report.steps.append(
                {
                    "source": step.source,
                    "kind": step.kind,
                    "name": step.name,
                    "seconds": round(time.perf_counter() - t1, 3),
                }
            )
        report.seconds[path.stem] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    for name in feature_tables():
        tables[name].write.mode("overwrite").parquet(f"{out}/{name}")
        report.rows[name] = spark.read.parquet(f"{out}/{name}").count()  # Parquet metadata
    report.seconds["write"] = round(time.perf_counter() - t0, 3)
    if embeddings:
        t0 = time.perf_counter()
        report.rows.update(copy_embeddings(settings, out))
        report.seconds["embeddings_copy"] = round(time.perf_counter() - t0, 3)
    return report


def copy_embeddings(settings: Settings, out: str) -> dict[str, int]:
    """Write PostgreSQL's embedding tables to `<out>/<table>/part-0.parquet` (replacing them)."""
    fs, root = _filesystem(out)
    rows = {}
    with transaction(settings) as cur:
        for table, schema in EMBEDDING_TABLES.items():
            cur.execute(f"SELECT {', '.join(schema.names)} FROM {table}")
            data = pa.Table.from_pylist(
                [dict(zip(schema.names, r)) for r in cur.fetchall()], schema=schema
            )
            folder = f"{root}/{table}"
            fs.delete_dir_contents(folder, missing_dir_ok=True)
            fs.create_dir(folder, recursive=True)
            pq.write_table(data, f"{folder}/part-0.parquet", filesystem=fs)
            rows[table] = data.num_rows
    return rows


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m features.spark_pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--master", help="Spark master URL (default: CARTWISE_SPARK_MASTER)")
    parser.add_argument("--out", help="where the feature tables go (default: <lake>/features)")
    parser.add_argument(
        "--shuffle-partitions",
        type=int,
        default=8,
        help="spark.sql.shuffle.partitions (default: %(default)s)",
    )
    parser.add_argument(
        "--driver-memory",
        help="spark.driver.memory, the local-mode executors' heap too (default: "
        "CARTWISE_SPARK_DRIVER_MEMORY, else Spark's 1g)",
    )
    parser.add_argument(
        "--min-query-searches",
        type=int,
        default=3,
        help="searches a query needs to get query features (default: %(default)s)",
    )
    parser.add_argument(
        "--no-embeddings", action="store_true", help="do not copy the embedding tables"
    )
    parser.add_argument(
        "--explain",
        metavar="FILE",
        help="write each step's physical plan (EXPLAIN FORMATTED) to FILE (default: none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    spark = spark_session(
        args.master or settings.spark_master,
        args.shuffle_partitions,
        driver_memory=args.driver_memory or settings.spark_driver_memory,
    )
    report = run(
        settings,
        spark,
        PipelineParams(min_query_searches=args.min_query_searches),
        out=args.out,
        progress=True,
        embeddings=not args.no_embeddings,
        explain=bool(args.explain),
    )
    if args.explain:
        with open(args.explain, "w") as f:
            for step, plan in report.plans.items():
                f.write(f"==== {step}\n{plan}\n")
    print(json.dumps({k: v for k, v in report.__dict__.items() if k != "plans"}, indent=2))


if __name__ == "__main__":
    _main()

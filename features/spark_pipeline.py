"""The feature pipeline on Spark: the same `features/sql/*.sql`, transpiled, over the lake.

    python -m features.spark_pipeline                      # rebuild the feature tables
    python -m features.spark_pipeline --master spark://h:7077 --out s3a://bucket/features

Reads the lake that `python -m features.lake export` writes (`CARTWISE_LAKE_URI`), runs the
steps `features.sql_transpile` makes from the PostgreSQL feature SQL, and writes each feature
table as Parquet to `<out>/<table>/` (default `<lake>/features`). It is a rebuild over every
exported batch, the way a distributed engine is normally used (the PostgreSQL pipeline is
incremental by batch); tests/test_spark.py compares its tables with the PostgreSQL
pipeline's, row for row.

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

import pyarrow as pa
from tqdm import tqdm

from features.lake import SCHEMAS, lake_uri
from features.pipeline import PipelineParams, sql_files
from features.sql_transpile import feature_table_schemas, spark_steps
from governance.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The tables the SQL files write (embeddings are Python, not SQL, and stay out).
FEATURE_TABLES = (
    "feature_user_hourly",
    "feature_user_category_hourly",
    "feature_item_hourly",
    "feature_query_hourly",
    "user_features",
    "item_features",
    "category_features",
    "user_category_features",
    "query_features",
    "user_session_features",
)
# Keys that ingest upserts: the lake may hold a key in several batches; the last batch wins.
LAKE_KEYS = {"items": ("item_id",), "users": ("user_id",), "labelled_queries": ("query_id",)}


@dataclass
class SparkRunReport:
    out: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def spark_session(master: str = "local[*]", shuffle_partitions: int = 8, app: str = "cartwise"):
    """A SparkSession in UTC with cartwise's settings (reused if one is already running)."""
    from pyspark.sql import SparkSession  # heavy: only the Spark path loads it

    # Python workers run this interpreter (with cartwise's packages), not whatever python3 is
    # first on PATH; a cluster sets PYSPARK_PYTHON for its executors.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )


def read_lake(spark, uri: str) -> dict[str, int]:
    """Register the lake's tables as views (latest batch per key) and `_new_batches`."""
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
        df.createOrReplaceTempView(table)
        counts[table] = None
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
    for name in FEATURE_TABLES:
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
) -> SparkRunReport:
    """Rebuild every feature table on Spark from the lake and write them as Parquet."""
    settings = settings or get_settings()
    params = params or PipelineParams()
    spark = spark or spark_session(settings.spark_master)
    uri = lake_uri(settings)
    out = out or f"{uri}/features"
    report = SparkRunReport(out=out)
    read_lake(spark, uri)
    tables = _empty_tables(spark)
    files = sql_files()
    if progress:
        files = tqdm(files, desc="feature SQL on Spark", unit="file")
    for path in files:
        t0 = time.perf_counter()
        for step in spark_steps(path, params.sql_params()):
            df = spark.sql(step.sql)
            if step.kind == "view":
                df.localCheckpoint().createOrReplaceTempView(step.name)
            else:
                _append(spark, tables, step.name, df, step.columns)
        report.seconds[path.stem] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    for name in FEATURE_TABLES:
        tables[name].write.mode("overwrite").parquet(f"{out}/{name}")
        report.rows[name] = spark.read.parquet(f"{out}/{name}").count()  # Parquet metadata
    report.seconds["write"] = round(time.perf_counter() - t0, 3)
    return report


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
        "--min-query-searches",
        type=int,
        default=3,
        help="searches a query needs to get query features (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    spark = spark_session(args.master or settings.spark_master, args.shuffle_partitions)
    report = run(
        settings,
        spark,
        PipelineParams(min_query_searches=args.min_query_searches),
        out=args.out,
        progress=True,
    )
    print(json.dumps(report.__dict__, indent=2))


if __name__ == "__main__":
    _main()

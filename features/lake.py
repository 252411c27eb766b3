"""The lake: clean governed rows exported to partitioned Parquet for a distributed engine.

    python -m features.lake export            # export every loaded batch not exported yet
    python -m features.lake status            # what the lake holds

PostgreSQL stays the system of record (ingest, quarantine and reconciliation do not change);
the lake is a copy Spark reads. The export is incremental by ingest batch id: each loaded
batch's rows of `events`, `items`, `users` and `labelled_queries` go to
`<lake>/<table>/batch_id=<id>/part-0.parquet`, and only then is
`<lake>/_exports/batch_id=<id>.json` written, recording the table, the row count and the file.
A batch with that record is never exported again, so a re-run with nothing new writes nothing,
and a run killed half-way redoes only the batch it was writing (its partition is rewritten
whole, never appended to).

Keyed tables that ingest upserts (`items`, `users`) can carry the same key in several batch
partitions; a row belongs to the batch that last wrote it, so readers take the row of the
highest batch id per key (`features.spark_pipeline.read_lake` does).

`CARTWISE_LAKE_URI` picks the lake (default `<data_dir>/lake`): a local folder, or a URI both
pyarrow and Spark reach (s3a://bucket/path is written through pyarrow's S3, hdfs://).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from governance.db import transaction
from governance.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Exported columns per table, with their Arrow types (numeric stays decimal: sums are exact).
SCHEMAS: dict[str, pa.Schema] = {
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("event_type", pa.string()),
            ("item_id", pa.string()),
            ("query", pa.string()),
            ("position", pa.int32()),
            ("list_id", pa.string()),
            ("quantity", pa.int32()),
            ("price", pa.decimal128(12, 2)),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("is_bot", pa.bool_()),
        ]
    ),
    "items": pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("category_path", pa.string()),
            ("category", pa.string()),
            ("brand", pa.string()),
            ("price", pa.decimal128(12, 2)),
            ("listed_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    "users": pa.schema(
        [
            ("user_id", pa.string()),
            ("country", pa.string()),
            ("signup_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    "labelled_queries": pa.schema(
        [
            ("query_id", pa.int64()),
            ("query", pa.string()),
            ("intent", pa.string()),
            ("category", pa.string()),
            ("source", pa.string()),
        ]
    ),
}


@dataclass
class BatchExport:
    """What one batch's export wrote (also the JSON record under `_exports/`)."""

    batch_id: int
    table: str
    rows: int
    path: str
    exported_at: str


@dataclass
class ExportReport:
    lake: str
    exported: list[BatchExport] = field(default_factory=list)
    skipped: int = 0  # loaded batches the lake already holds

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.exported)


def lake_uri(settings: Settings | None = None) -> str:
    return (settings or get_settings()).lake()


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    # Spark names S3 s3a://, pyarrow s3://: one CARTWISE_LAKE_URI serves both.
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    return pafs.FileSystem.from_uri(uri)


def exported_batches(uri: str) -> set[int]:
    """Batch ids whose export record exists in the lake."""
    fs, root = _filesystem(uri)
    selector = pafs.FileSelector(f"{root}/_exports", allow_not_found=True)
    done = set()
    for info in fs.get_file_info(selector):
        name = info.base_name
        if name.startswith("batch_id=") and name.endswith(".json"):
            done.add(int(name[len("batch_id=") : -len(".json")]))
    return done


def _read_batch(cur, table: str, batch_id: int) -> pa.Table:
    """One batch's rows via COPY (CSV), parsed straight into Arrow with the lake's types."""
    schema = SCHEMAS[table]
    # Timestamps travel as exact epoch microseconds: no text parsing of time zones.
    cols = ", ".join(
        f"(extract(epoch FROM {f.name}) * 1000000)::bigint AS {f.name}"
        if pa.types.is_timestamp(f.type)
        else f.name
        for f in schema
    )
    buf = io.BytesIO()
    cur.copy_expert(
        f"COPY (SELECT {cols} FROM {table} WHERE batch_id = {int(batch_id)}) "
        "TO STDOUT WITH (FORMAT csv, HEADER true)",
        buf,
    )
    buf.seek(0)
    csv_types = {f.name: pa.int64() if pa.types.is_timestamp(f.type) else f.type for f in schema}
    read = pacsv.read_csv(
        buf,
        convert_options=pacsv.ConvertOptions(
            column_types=csv_types, strings_can_be_null=True, true_values=["t"],
            false_values=["f"],
        ),
    )  # fmt: skip
    arrays = [
        read[f.name].cast(f.type) if pa.types.is_timestamp(f.type) else read[f.name] for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_batch(fs, root: str, table: str, batch_id: int, data: pa.Table) -> BatchExport:
    folder = f"{root}/{table}/batch_id={batch_id}"
    fs.create_dir(folder, recursive=True)
    path = f"{folder}/part-0.parquet"
    pq.write_table(data, path, filesystem=fs)  # a rerun overwrites a half-written file
    record = BatchExport(
        batch_id=batch_id,
        table=table,
        rows=data.num_rows,
        path=f"{table}/batch_id={batch_id}/part-0.parquet",
        exported_at=datetime.now(UTC).isoformat(),
    )
    fs.create_dir(f"{root}/_exports", recursive=True)
    # The record last: a batch counts as exported only once its data is complete.
    with fs.open_output_stream(f"{root}/_exports/batch_id={batch_id}.json") as out:
        out.write(json.dumps(asdict(record)).encode())
    return record


def export(settings: Settings | None = None, progress: bool = False) -> ExportReport:
    """Export every loaded batch of an exported table that the lake does not hold yet."""
    settings = settings or get_settings()
    uri = lake_uri(settings)
    fs, root = _filesystem(uri)
    done = exported_batches(uri)
    report = ExportReport(lake=uri)
    with transaction(settings) as cur:
        cur.execute(
            "SELECT batch_id, table_name FROM ingest_batches "
            "WHERE status = 'loaded' AND table_name = ANY(%s) ORDER BY batch_id",
            (list(SCHEMAS),),
        )
        batches = cur.fetchall()
        todo = [(b, t) for b, t in batches if b not in done]
        report.skipped = len(batches) - len(todo)
        for batch_id, table in tqdm(todo, desc="lake export", unit="batch", disable=not progress):
            data = _read_batch(cur, table, batch_id)
            report.exported.append(_write_batch(fs, root, table, batch_id, data))
            log.info("batch %s: %s rows of %s", batch_id, data.num_rows, table)
    return report


def status(settings: Settings | None = None) -> dict:
    uri = lake_uri(settings)
    fs, root = _filesystem(uri)
    records = []
    for batch_id in sorted(exported_batches(uri)):
        with fs.open_input_stream(f"{root}/_exports/batch_id={batch_id}.json") as f:
            records.append(json.loads(f.read()))
    rows: dict[str, int] = {}
    for r in records:
        rows[r["table"]] = rows.get(r["table"], 0) + r["rows"]
    return {"lake": uri, "batches": len(records), "rows": rows}


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m features.lake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=["export", "status"], help="export new batches, or show the lake"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "status":
        print(json.dumps(status(), indent=2))
        return
    report = export(progress=True)
    print(
        json.dumps(
            {
                "lake": report.lake,
                "batches": len(report.exported),
                "rows": report.rows,
                "skipped": report.skipped,
            },
            indent=2,
        )  # fmt: skip
    )


if __name__ == "__main__":
    _main()

"""Point-in-time training frames in bounded memory, written once as Parquet.

    python -m features.frames build --service ranker_v2 --out runs/frame.parquet
    python -m features.frames build --service ranker_v2 --start 2026-09-01 --end 2026-09-15 \\
        --out frame.parquet --chunk-rows 50000
    python -m features.frames build --service ranker_v2 --entity-sql "SELECT * FROM my_rows" \\
        --out frame.parquet
    python -m features.frames info frame.parquet

How a frame is built, all in the Feast offline store's PostgreSQL:

1. The entity rows (the service's labels over [start, end), a caller's SQL or DataFrame) go
   into a temporary table, numbered in frame order (event_timestamp, event_id, item_id).
2. Per chunk of rows, one set-based point-in-time query (features/frame_sql.py: the latest
   feature row within the TTL, Feast's semantics) fills a temporary table that is streamed out
   as CSV into Arrow, never as Python objects per value.
3. Vector features (embeddings) are not sent per row: each distinct vector of the chunk is read
   once into a matrix (`features.similarity.VectorBatch`).
4. The service's on-demand views run on the chunk: their own functions from the registry, with
   vectors as matrices, so the similarities are the same code serving runs.
5. The chunk is appended to the Parquet file. Memory holds one chunk.

Frame columns: the entity rows' columns, then the service's features. On-demand inputs the
service does not list (the raw embeddings behind the similarities) are left out; every listed
feature has the value Feast's stock `get_historical_features` gives (tests/test_frames.py).
The Parquet metadata (`cartwise.frame`) holds the feature service, the label window, the ingest
batch ids of the labels and the build's counts; `read_frame_info(path)` returns them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from features import frame_io, frame_plan
from features.feast_store import get_store
from features.frame_sql import chunk_sql, q
from features.labels import SORT_COLUMNS, labels_sql, lineage_sql

log = logging.getLogger(__name__)

META_KEY = b"cartwise.frame"
ENTITY_TABLE = "cw_frame_entities"
CHUNK_TABLE = "cw_frame_chunk"
# 50k rows: ~80 MB per embedding column of 384 floats while a chunk is in flight.
DEFAULT_CHUNK_ROWS = 50_000


@dataclass
class FrameInfo:
    """What a frame file holds and how it was made (stored in its Parquet metadata)."""

    path: str
    feature_service: str
    features: list[str]
    rows: int
    chunks: int = 0
    seconds: float = 0.0
    method: str = "set-based"
    label_window: list[str] | None = None
    batch_ids: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- building


class FrameBuilder:
    """A frame's entity rows in a temporary table of the offline store, read out chunk by chunk.

    with FrameBuilder(store, "ranker_v2", entity=labels_sql(...)) as b:
        for table in b.chunks():   # pyarrow Tables of <= chunk_rows rows, in frame order
            ...
    """

    def __init__(
        self,
        store,
        feature_service: str,
        entity: pd.DataFrame | str,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        full_feature_names: bool = False,
        progress: bool = False,
        lineage: bool = False,
    ):
        self.store, self.service_name, self.entity = store, feature_service, entity
        self.chunk_rows = max(1, int(chunk_rows))
        self.full_names, self.progress, self.lineage = full_feature_names, progress, lineage
        self.rows, self.batch_ids, self.n_chunks = 0, [], 0

    def __enter__(self) -> FrameBuilder:
        # Feast is heavy to import (seconds): only code that opens a store pays for it.
        from feast.infra.offline_stores.contrib.postgres_offline_store import postgres as pgo

        config = self.store.config
        self.conn = pgo._get_conn(config.offline_store)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        # The offline store's sessions turn nested loops off for Feast's stock join
        # (feature_store.yaml); a LATERAL ... LIMIT 1 is a nested loop by nature.
        self.cur.execute("SET enable_nestloop = on")
        upload = None
        if isinstance(self.entity, pd.DataFrame):
            # Feast is heavy to import (seconds): only code that opens a store pays for it.
            from feast.infra.offline_stores import offline_utils

            upload = offline_utils.get_temp_entity_table_name()
            pgo._upload_entity_df(config, self.entity, upload)
            source = f"SELECT * FROM {q(upload)}"
        else:
            source = self.entity
        try:
            self._make_entity_table(source)
        finally:
            if upload:
                self.cur.execute(f"DROP TABLE IF EXISTS {q(upload)}")
        service = self.store.get_feature_service(self.service_name)
        self.cur.execute(f"SELECT min(event_timestamp), max(event_timestamp) FROM {ENTITY_TABLE}")
        lo, hi = self.cur.fetchone()
        now = datetime.now().astimezone()
        self.plan = frame_plan.plan(self.store, service, self.full_names, (lo or now, hi or now))
        self.entity_columns = [n for n, _ in frame_io.columns(self.cur, ENTITY_TABLE)]
        if self.lineage and {"event_id", "label"} <= set(self.entity_columns):
            self.cur.execute(lineage_sql(self.service_name, ENTITY_TABLE))
            self.batch_ids = sorted(int(r[0]) for r in self.cur.fetchall() if r[0] is not None)
        return self

    def _make_entity_table(self, source: str) -> None:
        self.cur.execute(f"SELECT * FROM ({source}) AS s LIMIT 0")
        have = [c.name for c in self.cur.description]
        if "event_timestamp" not in have:
            raise ValueError(f"entity rows need an event_timestamp column; they have {have}")
        order = ", ".join(f"s.{q(c)}" for c in SORT_COLUMNS if c in have)
        self.cur.execute(f"DROP TABLE IF EXISTS {ENTITY_TABLE}")
        self.cur.execute(
            f"CREATE TEMP TABLE {ENTITY_TABLE} AS SELECT row_number() OVER (ORDER BY {order}) "
            f"AS __row, s.* FROM ({source}) AS s"
        )
        self.cur.execute(f"CREATE INDEX ON {ENTITY_TABLE} (__row)")
        self.cur.execute(f"ANALYZE {ENTITY_TABLE}")
        self.cur.execute(f"SELECT count(*) FROM {ENTITY_TABLE}")
        self.rows = int(self.cur.fetchone()[0])

    def __exit__(self, *exc) -> None:
        try:
            self.cur.execute(f"DROP TABLE IF EXISTS {CHUNK_TABLE}, {ENTITY_TABLE}")
        finally:
            self.conn.close()

    @property
    def features(self) -> list[str]:
        return list(self.plan.features)

    def chunks(self) -> Iterator[pa.Table]:
        """The frame in chunks of `chunk_rows` (one, possibly empty, for no rows)."""
        bar = tqdm(
            total=self.rows,
            unit="rows",
            desc=f"frame {self.service_name}",
            disable=not self.progress or bool(os.environ.get("TQDM_DISABLE")),
        )
        with bar:
            for lo in range(0, max(self.rows, 1), self.chunk_rows):
                table = self._chunk(lo, lo + self.chunk_rows)
                self.n_chunks += 1
                bar.update(table.num_rows)
                yield table

    def _chunk(self, lo: int, hi: int) -> pa.Table:
        ts_col = "event_timestamp"
        self.cur.execute(f"DROP TABLE IF EXISTS {CHUNK_TABLE}")
        self.cur.execute(
            f"CREATE TEMP TABLE {CHUNK_TABLE} AS "
            + chunk_sql(ENTITY_TABLE, self.plan.joins, ts_col, lo, hi)
        )
        cols = frame_io.columns(self.cur, CHUNK_TABLE)
        table = frame_io.read_table(self.cur, CHUNK_TABLE, cols)
        vectors = {}
        for join in self.plan.joins:
            if join.vectors:
                for name, (vid, distinct) in frame_io.read_vectors(
                    self.cur, join, CHUNK_TABLE
                ).items():
                    vectors[name] = frame_io.gather(table[vid], distinct)
        table = frame_plan.apply_odfvs(self.plan, table, vectors, self.full_names)
        for name in self.plan.features:  # vectors the service lists itself
            if name in vectors and name not in table.column_names:
                table = table.append_column(name, frame_io.vector_arrow(vectors[name]))
        keep = [c for c in self.entity_columns if c != "__row"] + self.plan.features
        return table.select(keep)


def frame_table(
    store,
    feature_service: str,
    entity: pd.DataFrame | str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    full_feature_names: bool = False,
) -> pa.Table:
    """The whole frame in memory as one Arrow table (small frames; else `build_frame`)."""
    with FrameBuilder(
        store, feature_service, entity, chunk_rows=chunk_rows, full_feature_names=full_feature_names
    ) as b:
        return pa.concat_tables(list(b.chunks()))


def entity_key(feature_service: str, entity_sql: str) -> str:
    """Identifies what a frame file was built from (service and entity SQL)."""
    return hashlib.sha256(f"{feature_service}\n{entity_sql}".encode()).hexdigest()[:16]


def build_frame(
    store,
    feature_service: str,
    path: str | Path,
    *,
    start=None,
    end=None,
    entity: pd.DataFrame | str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = True,
    extra: dict | None = None,
) -> FrameInfo:
    """Write the frame of `feature_service` over labels in [start, end) (or `entity` rows)
    to `path` as Parquet, one chunk at a time; returns what the file's metadata holds.

    The file appears complete or not at all (written beside it, then renamed)."""
    t0 = time.perf_counter()
    if entity is None:
        if start is None or end is None:
            raise ValueError("give start and end, or entity")
        entity = labels_sql(feature_service, start, end)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = None
    with FrameBuilder(
        store, feature_service, entity, chunk_rows=chunk_rows, progress=progress, lineage=True
    ) as b:
        info = FrameInfo(
            path=str(path),
            feature_service=feature_service,
            features=b.features,
            rows=b.rows,
            label_window=None if start is None else [str(start), str(end)],
            batch_ids=b.batch_ids,
            extra={
                **(extra or {}),
                "entity_key": entity_key(feature_service, entity)
                if isinstance(entity, str)
                else None,
            },
        )
        try:
            for table in b.chunks():
                if writer is None:
                    writer = pq.ParquetWriter(partial, table.schema)
                writer.write_table(table)
            info.chunks = b.n_chunks
            info.seconds = round(time.perf_counter() - t0, 3)
            writer.add_key_value_metadata({META_KEY: json.dumps(asdict(info), default=str)})
            writer.close()
            writer = None
            os.replace(partial, path)
        finally:
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
    log.info("frame %s: %d rows in %.1fs -> %s", feature_service, info.rows, info.seconds, path)
    return info


def read_frame_info(path: str | Path) -> FrameInfo | None:
    """The cartwise metadata of a frame file (None for a Parquet file without it)."""
    meta = pq.read_metadata(path).metadata or {}  # the file's key-value metadata
    if META_KEY not in meta:
        return None
    return FrameInfo(**json.loads(meta[META_KEY]))


def read_frame(
    path: str | Path, columns: list[str] | None = None, categories: list[str] | None = None
) -> pd.DataFrame:
    """A frame file as a DataFrame (memory-mapped read of the Parquet). Arrow's buffers are
    released column by column as pandas takes them (self_destruct) and the columns are not
    consolidated into one block, so the read peaks near the DataFrame's own size rather than
    at twice it. `categories`: string columns read as pandas categoricals (one Python string
    per distinct value instead of one per row)."""
    table = pq.read_table(path, columns=columns, memory_map=True, read_dictionary=categories)
    return table.to_pandas(split_blocks=True, self_destruct=True)


def stock_training_set(
    store, feature_service: str, entity_df, full_feature_names: bool = False
) -> pd.DataFrame:
    """Feast's own get_historical_features, sorted as the set-based path sorts: the reference
    the tests compare the bounded path against."""
    service = store.get_feature_service(feature_service)
    job = store.get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=full_feature_names
    )
    df = job.to_df()
    sort = [c for c in SORT_COLUMNS if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)


def build_stock_frame(store, feature_service: str, path: str | Path, entity: str) -> FrameInfo:
    """The reference: Feast's stock get_historical_features, whole frame in memory, to Parquet
    (for benchmarks and comparisons; on-demand inputs such as raw embeddings included)."""
    t0 = time.perf_counter()
    df = stock_training_set(store, feature_service, entity)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    service = store.get_feature_service(feature_service)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    info = FrameInfo(str(path), feature_service, names, len(df), 1, 0.0, "stock")
    table = pa.Table.from_pandas(df, preserve_index=False)
    info.seconds = round(time.perf_counter() - t0, 3)
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(asdict(info), default=str)}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return info


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m features.frames",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write a feature service's frame to Parquet")
    b.add_argument("--service", default="ranker_v2", help="feature service (default ranker_v2)")
    b.add_argument("--out", required=True, help="Parquet file to write")
    b.add_argument("--start", help="label window start (ISO; default: all labels)")
    b.add_argument("--end", help="label window end, exclusive (ISO; default: all labels)")
    b.add_argument("--entity-sql", help="SQL of the entity rows instead of the service's labels")
    b.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows per chunk (memory holds one; default {DEFAULT_CHUNK_ROWS})",
    )
    b.add_argument(
        "--method",
        choices=("set", "stock"),
        default="set",
        help="set: bounded set-based path; stock: Feast's get_historical_features, the "
        "reference (default: %(default)s)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument(
        "--dry-run",
        action="store_true",
        help="load the registry and the service, build nothing (benchmarks: start-up memory)",
    )
    i = sub.add_parser("info", help="print a frame file's metadata")
    i.add_argument("path", help="frame Parquet file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "info":
        info = read_frame_info(args.path)
        print(json.dumps(None if info is None else asdict(info), indent=2, default=str))
        return 0 if info else 1

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    store = get_store()
    if args.dry_run:
        store.get_feature_service(args.service)
        return 0
    start, end = args.start, args.end
    if args.entity_sql is None and (start is None or end is None):
        start, end = start or "1970-01-01", end or "2100-01-01"
    if args.method == "stock":
        entity = args.entity_sql or labels_sql(args.service, start, end)
        info = build_stock_frame(store, args.service, args.out, entity)
    else:
        info = build_frame(
            store,
            args.service,
            args.out,
            start=None if args.entity_sql else start,
            end=None if args.entity_sql else end,
            entity=args.entity_sql,
            chunk_rows=args.chunk_rows,
            progress=not args.no_progress,
        )
    print(json.dumps(asdict(info), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

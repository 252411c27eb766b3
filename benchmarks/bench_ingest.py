"""Validated ingest against a raw COPY of the same rows into the same table, in the same run.

    python -m benchmarks.bench_ingest [--events 1000000]

Both sides read the same gzip CSV written by the simulator (no dirt, so the raw COPY can take
every row) into a fresh, migrated `events` table with the same indexes. The baseline does no
parsing, validation, cleaning or pseudonymisation: it is the floor of what loading costs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import record, scratch_database
from governance.db import transaction
from governance.ingest import ingest_file
from governance.simulate import SimConfig, simulate


def _simulate(folder: Path, events: int) -> Path:
    simulate(SimConfig(seed=5, events=events, days=1, dirty_share=0.0), folder, progress=False)
    return next((folder / "events").glob("*.csv.gz"))


def _raw_copy(settings, path: Path) -> float:
    with transaction(settings) as cur:
        cur.execute(
            "INSERT INTO ingest_batches (source, table_name, checksum) "
            "VALUES ('bench', 'events', 'raw-copy') RETURNING batch_id"
        )
        batch = cur.fetchone()[0]
        cur.execute(f"ALTER TABLE events ALTER COLUMN batch_id SET DEFAULT {batch}")
    start = time.perf_counter()
    with transaction(settings) as cur, gzip.open(path, "rb") as fh:
        header = fh.readline().decode().strip().replace('"', "")
        cur.copy_expert(f"COPY events ({header}) FROM STDIN WITH (FORMAT csv)", fh)
    return time.perf_counter() - start


def run_all(events: int = 1_000_000) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _simulate(folder, events)
        with gzip.open(path, "rt") as fh:
            rows = sum(1 for _ in fh) - 1
        timings = {}
        for side in ("raw_copy", "validated"):
            with scratch_database() as settings:
                ingest_file("items", folder / "items.csv.gz", settings=settings, write_files=False)
                if side == "raw_copy":
                    timings[side] = _raw_copy(settings, path)
                else:
                    start = time.perf_counter()
                    result = ingest_file("events", path, settings=settings, write_files=False)
                    timings[side] = time.perf_counter() - start
                    assert result.reconciles
                with transaction(settings) as cur:
                    cur.execute("SELECT count(*) FROM events")
                    loaded = cur.fetchone()[0]
            timings[f"{side}_rows"] = loaded
    validated, raw = rows / timings["validated"], rows / timings["raw_copy"]
    return [
        record(
            "ingest.validated_events",
            validated,
            "rows/s",
            raw,
            {
                "rows_in_file": rows,
                "validated_loaded": timings["validated_rows"],
                "raw_copy_loaded": timings["raw_copy_rows"],
                "validated_s": round(timings["validated"], 2),
                "raw_copy_s": round(timings["raw_copy"], 2),
                "target_ratio": 0.5,
            },
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="simulated events (default: %(default)s)"
    )
    print(json.dumps(run_all(parser.parse_args().events), indent=2))

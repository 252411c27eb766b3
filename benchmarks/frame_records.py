"""Records of a training frame's build: rows per second and peak memory, set-based vs stock.

`frame_records` (called by bench_features.run_sim on its simulated shop) builds the ranker_v2
frame (embeddings, similarities) of `rows` impressions spread over the period twice, each in
its own process, so each peak RSS is its own (wait4):

* `python -m features.frames build --method set` (the bounded path training uses),
* `python -m features.frames build --method stock` (Feast's get_historical_features), stopped
  at the time limit or the RSS cap; then it is recorded as not finished and the speed-up as a
  lower bound.

frame_peak_rss_ratio = (peak RSS - the same program's start-up peak, from `--dry-run`) / the
frame's in-memory size (as the training job holds it: the pandas DataFrame of the service's
columns, deep size; params.frame_arrow_gb is the Arrow size); baseline_value: the stock path's
ratio on the same rows when it finished under the cap. frame_rows_per_s: rows / seconds
of the build process; baseline_value: the stock path's rate (an upper bound when stopped).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import record, run_stage
from features.labels import labels_sql
from governance.db import transaction

SERVICE = "ranker_v2"


def _entity_table(settings, rows: int) -> int:
    sql = labels_sql(SERVICE, "1970-01-01", "2100-01-01")
    with transaction(settings) as cur:
        cur.execute(
            "DROP TABLE IF EXISTS bench_frame_rows; "
            f"CREATE TABLE bench_frame_rows AS {sql} ORDER BY md5(i.event_id) LIMIT {int(rows)}; "
            "ANALYZE bench_frame_rows"
        )
        cur.execute("SELECT count(*) FROM bench_frame_rows")
        return int(cur.fetchone()[0])


def frame_records(settings, folder: Path, rows: int, timeout_s: float) -> list[dict]:
    max_rss = float(os.environ.get("CARTWISE_BENCH_STOCK_MAX_RSS_GB") or 6)
    n = _entity_table(settings, rows)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CARTWISE_DATA_DIR": str(settings.data_dir),
        "CARTWISE_FEAST_PROJECT": settings.feast_project,
        "TQDM_DISABLE": "1",
    }
    env.pop("REDIS_URL", None)
    log = folder / "frames.log"
    build = ["-m", "features.frames", "build", "--service", SERVICE, "--no-progress"]
    build += ["--entity-sql", "SELECT * FROM bench_frame_rows"]
    startup = run_stage([*build, "--out", str(folder / "unused.parquet"), "--dry-run"], env, log)
    fast = run_stage([*build, "--out", str(folder / "frame_set.parquet")], env, log)
    stock = run_stage(
        [*build, "--method", "stock", "--out", str(folder / "frame_stock.parquet")],
        env,
        log,
        timeout_s=timeout_s,
        max_rss_gb=max_rss,
    )
    if not stock.finished:  # its backend may still be joining: stop it
        with transaction(settings) as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    table = pq.read_table(folder / "frame_set.parquet", memory_map=True)
    arrow_gb = table.nbytes / 2**30
    # In memory as the training job holds it: a pandas DataFrame, strings as objects.
    frame_gb = table.to_pandas().memory_usage(deep=True).sum() / 2**30
    assert table.num_rows == n, (table.num_rows, n)
    del table

    def growth(run) -> float:
        return max(run.peak_rss_gb - startup.peak_rss_gb, 0.0)

    params = {
        "rows": n,
        "service": SERVICE,
        "frame_gb": round(frame_gb, 4),
        "frame_arrow_gb": round(arrow_gb, 4),
        "startup_rss_gb": round(startup.peak_rss_gb, 3),
        "peak_rss_gb": round(fast.peak_rss_gb, 3),
        "seconds": round(fast.seconds, 1),
        "stock_peak_rss_gb": round(stock.peak_rss_gb, 3),
        "stock_seconds": round(stock.seconds, 1),
        "stock_finished": stock.finished,
    }
    if not stock.finished:
        params["stock_stopped_by"] = stock.reason
    rss = record(
        "frame_peak_rss_ratio",
        growth(fast) / frame_gb,
        "x",
        growth(stock) / frame_gb if stock.finished else None,
        dict(params),
        higher_is_better=False,
    )
    speed = record("frame_rows_per_s", n / fast.seconds, "rows/s", n / stock.seconds, dict(params))
    if not stock.finished:
        speed["params"]["ratio_is_lower_bound"] = True
    print(f"  frame rows={n}: {rss['value']}x RSS growth, {speed['value']} rows/s", flush=True)
    return [rss, speed]

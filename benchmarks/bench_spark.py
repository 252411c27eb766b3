"""The Spark path next to PostgreSQL in one run: feature pipeline seconds, point-in-time rows/s,
and the speed-up from local[1] to local[2].

    make bench-spark                                       # CARTWISE_BENCH_EVENTS (1M)
    CARTWISE_BENCH_EVENTS=100000 python -m benchmarks.bench_spark

In a scratch database and folder, each stage in its own process (benchmarks.common.run_stage):

    simulate, ingest      the shop (not recorded as figures, only as params)
    pg_pipeline           python -m features.pipeline --no-embeddings (the baseline)
    lake_export           python -m features.lake export
    spark_pipeline[1|2]   features.spark_pipeline.run at local[1] and local[2] (no embeddings on
                          either side: MiniLM is the same Python on both paths)
    labels                CARTWISE_BENCH_PIT_ROWS ranker labels, spread over the period
    pg_pit                build_training_set(ranker_v2) on PostgreSQL: the set-based path
                          training uses (features.frames), the baseline
    spark_pit[2]          build_training_set(ranker_v2) on Feast's Spark offline store

Pipeline and PIT seconds are measured inside each process (Python and JVM start-up, the Feast
apply and the reading of the entity rows left out); the stage's wall seconds and peak RSS go
into params. Records (benchmarks/results/spark.json, merged by event count):

    spark_pipeline_s       Spark local[2] pipeline seconds; baseline_value: PostgreSQL's
    spark_pit_rows_per_s   Spark local[2] point-in-time rows/s; baseline_value: PostgreSQL's
    spark_core_speedup     pipeline seconds at local[1] / at local[2] (2.0: linear)

Each Spark pipeline stage's physical plans (EXPLAIN FORMATTED per step) go to
benchmarks/results/spark-plans-<events>-<stage>.json. The database is analysed after the
ingest (not timed in any figure). Every stage also records the load average (1 min) before
and after it: the machine may be shared, and a 2-core machine at load 6 gives each process a
fraction of a core. A Spark stage
stopped at its time limit is recorded with finished: false (spark_pipeline_s then holds the
seconds it ran, a lower bound) and the stages that need its tables are skipped.

Environment: CARTWISE_BENCH_EVENTS [1000000], CARTWISE_BENCH_DAYS [30],
CARTWISE_BENCH_PIT_ROWS [50000] (capped at the impressions there are),
CARTWISE_BENCH_SKIP_LOCAL1 [0] (no local[1] pipeline, no speed-up),
CARTWISE_BENCH_PIT_LOCAL1 [0] (1: the Spark PIT at local[1] too, its speed-up in params),
CARTWISE_BENCH_SPARK_TIMEOUT_S [0: none] (time limit of each Spark stage),
CARTWISE_BENCH_SPARK_PIT_TIMEOUT_S [the Spark stages' limit] (time limit of the Spark PIT stages),
CARTWISE_BENCH_SPARK_MEMORY [6g] (spark.driver.memory: in local mode the executors' heap).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import psycopg2

from benchmarks.common import record, run_stage, scratch_database
from governance.db import transaction
from governance.settings import Settings

RESULTS = Path(__file__).parent / "results"
SERVICE = "ranker_v2"


def _env_int(name: str, default: int) -> int:
    return int(float(os.environ.get(name) or default))


def _write(path: str, body: dict) -> None:
    Path(path).write_text(json.dumps(body))


def _analyze(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()


# ---------------------------------------------------------------- stage bodies (own process)


def _spark_memory() -> str:
    return os.environ.get("CARTWISE_BENCH_SPARK_MEMORY") or "6g"


def _spark_pipeline_stage(master: str, out: str) -> None:
    # Stage bodies run in their own process: only it loads PySpark (a JVM) and Feast.
    from features import spark_pipeline

    settings = Settings(spark_master=master)
    spark = spark_pipeline.spark_session(master, driver_memory=_spark_memory())
    spark.range(1).count()  # JVM and executors up before the clock starts
    t0 = time.perf_counter()
    report = spark_pipeline.run(settings, spark, explain=True)
    seconds = time.perf_counter() - t0
    Path(out).with_suffix(".plans.json").write_text(json.dumps(report.plans, indent=1))
    _write(
        out,
        {"seconds": seconds, "rows": report.rows, "files": report.seconds, "steps": report.steps},
    )


def _pit_stage(engine: str, master: str, out: str) -> None:
    # Stage bodies run in their own process: only it loads PySpark (a JVM) and Feast.
    from features import feast_store
    from features.training_set import build_training_set

    settings = Settings(
        offline_engine=engine,
        spark_master=master,
        feast_project=f"{os.environ['CARTWISE_FEAST_PROJECT']}_{engine}",
    )
    store = feast_store.apply(settings)
    with transaction(settings) as cur:
        cur.execute("SELECT * FROM bench_labels")
        rows = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    if engine == "spark":
        from features.spark_pipeline import spark_session  # PySpark: the Spark stage only

        # The session Feast then finds active.
        spark_session(master, driver_memory=_spark_memory()).range(1).count()
    t0 = time.perf_counter()
    frame = build_training_set(store, SERVICE, entity_df=rows)
    seconds = time.perf_counter() - t0
    _write(out, {"seconds": seconds, "rows": len(frame), "columns": len(frame.columns)})


# ---------------------------------------------------------------- the run


def run(events: int | None = None) -> list[dict]:
    events = events or _env_int("CARTWISE_BENCH_EVENTS", 1_000_000)
    days = _env_int("CARTWISE_BENCH_DAYS", 30)
    pit_rows = _env_int("CARTWISE_BENCH_PIT_ROWS", 50_000)
    skip_local1 = os.environ.get("CARTWISE_BENCH_SKIP_LOCAL1") == "1"
    cores = ["local[2]"] if skip_local1 else ["local[1]", "local[2]"]
    pit_cores = cores if os.environ.get("CARTWISE_BENCH_PIT_LOCAL1") == "1" else ["local[2]"]
    spark_timeout = _env_int("CARTWISE_BENCH_SPARK_TIMEOUT_S", 0) or None
    pit_timeout = _env_int("CARTWISE_BENCH_SPARK_PIT_TIMEOUT_S", 0) or spark_timeout
    folder = Path(tempfile.mkdtemp(prefix="cw_bench_spark_"))
    log = folder / "stages.log"
    stages: dict[str, dict] = {}
    try:
        with scratch_database("cw_spark_bench") as settings:
            env = {
                **os.environ,
                "DATABASE_URL": settings.database_url,
                "CARTWISE_DATA_DIR": str(folder / "data"),
                "CARTWISE_LAKE_URI": str(folder / "lake"),
                "CARTWISE_FEAST_PROJECT": f"cwspark{uuid.uuid4().hex[:8]}",
                "TQDM_MININTERVAL": "30",
                "TOKENIZERS_PARALLELISM": "false",
            }
            env.pop("REDIS_URL", None)
            env.pop("CARTWISE_REDIS_URL", None)
            print(f"  scratch: {folder}, log {log}", flush=True)
            me = ["-m", "benchmarks.bench_spark", "--stage"]
            plan = [
                ("simulate", ["-m", "governance.simulate", "--out", str(folder / "sim"),
                              "--events", str(events), "--days", str(days)]),
                ("ingest", ["-m", "governance.ingest", "sim", str(folder / "sim")]),
                ("pg_pipeline", ["-m", "features.pipeline", "--no-embeddings"]),
                ("lake_export", ["-m", "features.lake", "export"]),
                ("spark_pipeline_local[2]", [*me, "spark-pipeline", "local[2]"]),
                ("labels", ["-m", "benchmarks.bench_scale", "--labels-stage", str(pit_rows)]),
                ("pg_pit", [*me, "pit", "postgres", "local[2]"]),
                *[(f"spark_pit_{m}", [*me, "pit", "spark", m]) for m in pit_cores],
                # Last: the speed-up is the figure a short run can do without.
                *[(f"spark_pipeline_{m}", [*me, "spark-pipeline", m]) for m in cores[:-1]],
            ]  # fmt: skip
            for name, args in plan:
                spark_stage = name.startswith("spark_")
                first = stages.get("spark_pipeline_local[2]", {"finished": True})
                if spark_stage and not first["finished"]:
                    continue  # no Spark feature tables to join; local[1] is slower still
                result = folder / f"{name}.json"
                if "--stage" in args:
                    args = [*args, str(result)]
                load_before = os.getloadavg()[0]
                limit = pit_timeout if name.startswith("spark_pit") else spark_timeout
                res = run_stage(args, env, log, timeout_s=limit if spark_stage else None)
                body = json.loads(result.read_text()) if result.exists() else {}
                body |= {
                    "wall_s": round(res.seconds, 2),
                    "peak_rss_gb": round(res.peak_rss_gb, 3),
                    "finished": res.finished,
                    "load_before": round(load_before, 2),
                    "load_after": round(os.getloadavg()[0], 2),
                }
                if res.reason:
                    body["stopped_by"] = res.reason
                if name == "ingest":
                    # Fresh statistics, as autovacuum would leave them given time: on a busy
                    # machine it had not analysed events when the labels query was planned,
                    # which then joined 760k impressions to the clicks in a nested loop.
                    t0 = time.perf_counter()
                    _analyze(settings.database_url)
                    body["analyze_s"] = round(time.perf_counter() - t0, 2)
                if spark_stage and (folder / f"{name}.plans.json").exists():
                    # {step: physical plan}; kept beside spark.json (results are not committed)
                    keep = RESULTS / f"spark-plans-{events}-{name}.json"
                    keep.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(folder / f"{name}.plans.json", keep)
                stages[name] = body
                print(f"  {name}: {json.dumps(body)[:400]}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return records(events, days, stages)


def _load(stage: dict) -> list[float]:
    return [stage.get("load_before"), stage.get("load_after")]


def records(events: int, days: int, stages: dict[str, dict]) -> list[dict]:
    base = {
        "events": events,
        "days": days,
        "cpus": multiprocessing.cpu_count(),
        "spark_driver_memory": _spark_memory(),
    }
    pg, sp2 = stages["pg_pipeline"], stages["spark_pipeline_local[2]"]
    out = [
        record(
            "spark_pipeline_s",
            sp2["seconds"] if sp2["finished"] else sp2["wall_s"],
            "s",
            pg["wall_s"],
            {
                **base,
                "master": "local[2]",
                "finished": sp2["finished"],
                **({"stopped_by": sp2["stopped_by"]} if "stopped_by" in sp2 else {}),
                "spark_wall_s": sp2["wall_s"],
                "spark_peak_rss_gb": sp2["peak_rss_gb"],
                "spark_files_s": sp2.get("files"),
                "pg_peak_rss_gb": pg["peak_rss_gb"],
                "lake_export_s": stages["lake_export"]["wall_s"],
                "load_1min_spark": _load(sp2),
                "load_1min_pg": _load(pg),
                "baseline": "python -m features.pipeline --no-embeddings (wall, whole process)",
            },
            higher_is_better=False,
        ),
    ]
    if "spark_pit_local[2]" not in stages:
        return out
    pg_pit, sp_pit = stages["pg_pit"], stages["spark_pit_local[2]"]
    if not sp_pit["finished"]:  # stopped: the rows it was given over the time it ran
        sp_pit |= {"rows": pg_pit["rows"], "seconds": sp_pit["wall_s"]}
    out += [
        record(
            "spark_pit_rows_per_s",
            sp_pit["rows"] / sp_pit["seconds"],
            "rows/s",
            pg_pit["rows"] / pg_pit["seconds"],
            {
                **base,
                "master": "local[2]",
                "service": SERVICE,
                "finished": sp_pit["finished"],
                "rows": sp_pit["rows"],
                "spark_s": round(sp_pit["seconds"], 2),
                "pg_s": round(pg_pit["seconds"], 2),
                "load_1min_spark": _load(sp_pit),
                "load_1min_pg": _load(pg_pit),
                "baseline": "build_training_set on PostgreSQL (set-based, features.frames)",
            },
        ),
    ]
    if "spark_pipeline_local[1]" in stages:
        sp1 = stages["spark_pipeline_local[1]"]
        if not sp1["finished"]:  # stopped: a lower bound of its seconds
            sp1 = sp1 | {"seconds": sp1["wall_s"]}
        pit1 = stages.get("spark_pit_local[1]")
        pit_speedup = pit1 and round(pit1["seconds"] / sp_pit["seconds"], 3)
        out.append(
            record(
                "spark_core_speedup",
                sp1["seconds"] / sp2["seconds"],
                "x",
                None,
                {
                    **base,
                    "local1_finished": sp1["finished"],
                    "local1_s": round(sp1["seconds"], 2),
                    "local2_s": round(sp2["seconds"], 2),
                    "pit_speedup": pit_speedup,
                    "local1_files_s": sp1.get("files"),
                    "load_1min_local1": _load(sp1),
                    "load_1min_local2": _load(sp2),
                    "ideal": 2.0,
                },
            )
        )
    return out


def save(new: list[dict], path: Path = RESULTS / "spark.json") -> dict:
    """Merge into spark.json: this run's event count replaces its earlier records."""
    old = json.loads(path.read_text()).get("records", []) if path.exists() else []
    counts = {r["params"]["events"] for r in new}
    merged = [r for r in old if r["params"].get("events") not in counts] + new
    merged.sort(key=lambda r: (r["params"]["events"], r["name"]))
    body = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "records": merged}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2))
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_spark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=None, help="overrides CARTWISE_BENCH_EVENTS")
    p.add_argument(
        "--stage",
        nargs="+",
        metavar="ARG",
        help="internal: run one stage body in this process (spark-pipeline MASTER OUT, or "
        "pit ENGINE MASTER OUT)",
    )
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.stage:
        kind, *rest = args.stage
        if kind == "spark-pipeline":
            _spark_pipeline_stage(*rest)
        else:
            _pit_stage(*rest)
        return 0
    body = save(run(args.events))
    for r in body["records"]:
        print(json.dumps(r))
    print(f"wrote {RESULTS / 'spark.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole path at shop scale, stage by stage: seconds and peak RSS of every stage.

    make bench-scale                                     # CARTWISE_BENCH_EVENTS events (10M)
    CARTWISE_BENCH_EVENTS=1000000 python -m benchmarks.bench_scale

In a scratch database and folder, each stage runs as its own subprocess, so its peak RSS is
its own (the process and its children, from wait4; the PostgreSQL server's memory is not
counted):

    simulate     python -m governance.simulate --events N --days D
    ingest       python -m governance.ingest sim DIR
    pipeline     python -m features.pipeline (MiniLM embeddings included)
    apply        python -m features.feast_cli apply
    labels       ranker labels of FRAME_ROWS impressions spread over the period, as a table
    frame        python -m features.frames build --service ranker_v2 (set-based, Parquet)
    frame_stock  the same rows through Feast's stock get_historical_features, stopped at a time
                 limit or an RSS cap and then recorded with finished: false
    train        python -m training.ranker --frame FRAME --epochs 1
    materialize  python -m features.feast_cli materialize (SQLite online store, a day at a time)

Environment (defaults in brackets): CARTWISE_BENCH_EVENTS [10000000], CARTWISE_BENCH_DAYS [30],
CARTWISE_BENCH_FRAME_ROWS [1000000] (capped at the impressions there are),
CARTWISE_BENCH_STOCK_TIMEOUT_S [600], CARTWISE_BENCH_STOCK_MAX_RSS_GB [8],
CARTWISE_BENCH_SKIP_STOCK [0], CARTWISE_BENCH_TRAIN_TIMEOUT_S [0: none; the epoch is then
recorded as stopped, finished: false].

Writes benchmarks/results/scale.json, `{"records": [{name, value (seconds), unit, params:
{events, peak_rss_gb, ...}}]}`: this run's records replace those of the same event count, so
runs at 1M, 3M and 10M add up, and benchmarks/results/scale.png (seconds and peak RSS per
stage against events); each size's records also go to scale-<size>.json (scale-1M.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq

from benchmarks.common import run_stage, scratch_database
from features.labels import labels_sql
from governance.settings import Settings

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "simulate",
    "ingest",
    "pipeline",
    "apply",
    "labels",
    "frame",
    "frame_stock",
    "train",
    "materialize",
)


def _env_int(name: str, default: int) -> int:
    return int(float(os.environ.get(name) or default))


def _sql(url: str, query: str):
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def _labels_stage(rows: int) -> None:
    """Stage body (own process): FRAME_ROWS ranker labels spread over the period, a table."""
    url = Settings().database_url
    sql = labels_sql("ranker_v2", "1970-01-01", "2100-01-01")
    _sql(
        url,
        "DROP TABLE IF EXISTS bench_labels; "
        f"CREATE TABLE bench_labels AS {sql} ORDER BY md5(i.event_id) LIMIT {int(rows)}; "
        "ANALYZE bench_labels",
    )


def _stage_args(stage: str, folder: Path, events: int, days: int, rows: int, span) -> list[str]:
    frame = str(folder / "frame.parquet")
    entity = "SELECT * FROM bench_labels"
    return {
        "simulate": [
            "-m",
            "governance.simulate",
            "--out",
            str(folder / "sim"),
            "--events",
            str(events),
            "--days",
            str(days),
        ],
        "ingest": ["-m", "governance.ingest", "sim", str(folder / "sim")],
        "pipeline": ["-m", "features.pipeline"],
        "apply": ["-m", "features.feast_cli", "apply"],
        "labels": ["-m", "benchmarks.bench_scale", "--labels-stage", str(rows)],
        "frame": ["-m", "features.frames", "build", "--out", frame, "--entity-sql", entity],
        "frame_stock": [
            "-m",
            "features.frames",
            "build",
            "--method",
            "stock",
            "--out",
            str(folder / "frame_stock.parquet"),
            "--entity-sql",
            entity,
        ],
        "train": [
            "-m",
            "training.ranker",
            "--frame",
            frame,
            "--epochs",
            "1",
            "--out-dir",
            str(folder / "runs"),
            "--no-tensorboard",
        ],
        "materialize": ["-m", "features.feast_cli", "materialize", *span],
    }[stage]


def _span(url: str) -> list[str]:
    """Materialisation window: every feature row, a day of margin each side."""
    lo, hi = _sql(
        url,
        "SELECT min(t) - interval '1 day', max(t) + interval '1 day' FROM ("
        "SELECT event_timestamp t FROM user_features UNION ALL "
        "SELECT event_timestamp FROM item_features) s",
    )[0]
    return [lo.isoformat(), hi.isoformat()]


def _frame_params(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.exists():
        return {}
    meta = pq.read_metadata(path)
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return {"rows": meta.num_rows, "columns": meta.num_columns, "parquet_gb": size / 2**30}


def run(events: int | None = None) -> list[dict]:
    """All stages at `events` (default CARTWISE_BENCH_EVENTS) in a scratch database."""
    events = events or _env_int("CARTWISE_BENCH_EVENTS", 10_000_000)
    days = _env_int("CARTWISE_BENCH_DAYS", 30)
    rows = _env_int("CARTWISE_BENCH_FRAME_ROWS", 1_000_000)
    stock_timeout = _env_int("CARTWISE_BENCH_STOCK_TIMEOUT_S", 600)
    stock_rss = float(os.environ.get("CARTWISE_BENCH_STOCK_MAX_RSS_GB") or 8)
    skip_stock = os.environ.get("CARTWISE_BENCH_SKIP_STOCK", "0") == "1"
    train_timeout = _env_int("CARTWISE_BENCH_TRAIN_TIMEOUT_S", 0)  # 0: no limit
    folder = Path(tempfile.mkdtemp(prefix="cw_bench_scale_"))
    log = folder / "stages.log"
    records: list[dict] = []
    try:
        with scratch_database() as settings:
            url = settings.database_url
            env = {
                **os.environ,
                # the stages import this checkout's code (a worktree sharing an editable venv)
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                ),
                "DATABASE_URL": url,
                "CARTWISE_DATA_DIR": str(folder / "data"),
                "CARTWISE_FEAST_PROJECT": f"cwscale{uuid.uuid4().hex[:8]}",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "TQDM_MININTERVAL": "30",
            }
            env.pop("REDIS_URL", None)
            print(f"  scratch: {folder}, log {log}", flush=True)
            span: list[str] = []
            for stage in STAGES:
                if stage == "frame_stock" and skip_stock:
                    continue
                if stage == "materialize":
                    span = _span(url)
                args = _stage_args(stage, folder, events, days, rows, span)
                limits = {}
                if stage == "frame_stock":
                    limits = {"timeout_s": stock_timeout, "max_rss_gb": stock_rss}
                if stage == "train" and train_timeout:
                    limits = {"timeout_s": train_timeout}
                res = run_stage(args, env, log, **limits)
                if not res.finished:  # its backend may still be joining: stop it
                    _sql(
                        url,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                params = {
                    "events": events,
                    "peak_rss_gb": round(res.peak_rss_gb, 3),
                    "finished": res.finished,
                }
                if res.reason:
                    params["stopped_by"] = res.reason
                if stage == "ingest":
                    params["events_stored"] = _sql(url, "SELECT count(*) FROM events")[0][0]
                if stage == "labels":
                    params["rows"] = _sql(url, "SELECT count(*) FROM bench_labels")[0][0]
                if stage in ("frame", "frame_stock"):
                    params |= _frame_params(folder, f"{stage}.parquet")
                    params["service"] = "ranker_v2"
                rec = {"name": stage, "value": round(res.seconds, 2), "unit": "s", "params": params}
                records.append(rec)
                print(json.dumps(rec), flush=True)
                save(records)  # a run stopped later still leaves the stages it measured
                save(records, RESULTS / f"scale-{_label(events)}.json")  # this size alone
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return records


def _label(events: int) -> str:
    """1000000 -> 1M, 300000 -> 300k."""
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if events >= size and events % size == 0:
            return f"{events // size}{unit}"
    return str(events)


def save(records: list[dict], path: Path | None = None) -> dict:
    """Merge into scale.json: this run's event count replaces its earlier records."""
    path = path or RESULTS / "scale.json"
    old = json.loads(path.read_text()).get("records", []) if path.exists() else []
    counts = {r["params"]["events"] for r in records}
    merged = [r for r in old if r["params"].get("events") not in counts] + records
    merged.sort(key=lambda r: (r["params"]["events"], STAGES.index(r["name"])))
    body = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "records": merged}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2))
    return body


def plot(records: list[dict], path: Path | None = None) -> Path:
    """Seconds and peak RSS per stage against events (hollow marker: stopped, not finished)."""
    path = path or RESULTS / "scale.png"
    # matplotlib is heavy to import: only the reports that draw a plot pay for it.
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    # matplotlib is heavy to import: only the reports that draw a plot pay for it.
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for stage in STAGES:
        recs = sorted(
            (r for r in records if r["name"] == stage), key=lambda r: r["params"]["events"]
        )
        if not recs:
            continue
        x = [r["params"]["events"] for r in recs]
        line = ax_s.plot(x, [r["value"] for r in recs], marker="o", label=stage)[0]
        rss = [(r["params"]["events"], r["params"]["peak_rss_gb"]) for r in recs]
        rss = [(e, gb) for e, gb in rss if gb is not None]  # a restored stopped stage has none
        if rss:
            ax_m.plot(*zip(*rss), marker="o", color=line.get_color())
        for r in recs:
            if not r["params"].get("finished", True):
                for ax, y in ((ax_s, r["value"]), (ax_m, r["params"]["peak_rss_gb"])):
                    if y is None:
                        continue
                    ax.scatter(
                        [r["params"]["events"]],
                        [y],
                        s=120,
                        facecolors="none",
                        edgecolors="red",
                        zorder=3,
                    )
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")  # 4, not 4x10^0
    for ax, label in ((ax_s, "seconds"), (ax_m, "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("simulated events")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.axhline(4, color="grey", linestyle="--", linewidth=1)
    ax_s.set_title("seconds per stage (red ring: stopped, not finished)")
    ax_m.set_title("peak RSS per stage (dashed: 4 GB target)")
    fig.legend(loc="lower center", ncol=len(STAGES), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=None, help="overrides CARTWISE_BENCH_EVENTS")
    p.add_argument(
        "--labels-stage",
        type=int,
        metavar="ROWS",
        help="internal: run only the labels stage of ROWS rows (bench-scale runs each stage "
        "in its own process)",
    )
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw scale.png from the per-size files, results/scale-<size>.json",
    )
    args = p.parse_args(argv)
    # A kill (nohup'd runs get stopped) still drops the scratch database and folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.labels_stage is not None:
        _labels_stage(args.labels_stage)
        return 0
    if args.plot_only:
        records = []
        for path in sorted(RESULTS.glob("scale-*.json")):
            records += json.loads(path.read_text())["records"]
        body = save(records)
    else:
        body = save(run(args.events))
    print(f"wrote {RESULTS / 'scale.json'} and {plot(body['records'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

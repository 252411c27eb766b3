"""Feature-store benchmarks. Each function returns a list of records
`{name, value, unit, baseline_value, ratio, params}` (the runner is benchmarks/__main__.py).

    python -m benchmarks --only features         # governance.simulate data, default sizes
    CARTWISE_BENCH_EVENTS=10000000 CARTWISE_BENCH_PIT_ROWS=1000000 \
        python -m benchmarks --only features
    from benchmarks.bench_features import run_all
    run_all()                                     # scratch database, simulated shop

`run_all` makes a scratch database and a scratch folder, and runs the real programs as
subprocesses, timing each stage (records `stage_*_s`): `python -m governance.simulate --out DIR
--events N --days D`, `python -m governance.ingest sim DIR`, `python -m features.pipeline
[--no-embeddings]`, `feast apply` (in process), the label query (impressions -> a table of N
entity rows), point-in-time retrieval, training frames, materialisation.
Environment (defaults in brackets):

* CARTWISE_BENCH_EVENTS [300000]: simulated clean events (enough for 200k impressions).
* CARTWISE_BENCH_DAYS [30].
* CARTWISE_BENCH_PIT_ROWS [100000]: comma-separated entity-row counts for the PIT records; the
  rows are impressions spread over the whole period (ordered by md5(event_id)). Capped at the
  impressions there are.
* CARTWISE_BENCH_FRAME_ROWS [200000]: rows of the ranker_v2 frame records (same rule).
* CARTWISE_BENCH_PIT_TIMEOUT_S [300]: a stock query still running then is cancelled and
  recorded as a lower bound (`finished: false`).
* CARTWISE_BENCH_STOCK_MAX_RSS_GB [6]: the stock frame build is stopped above this RSS.
* CARTWISE_BENCH_EMBEDDINGS [1]: 0 runs the pipeline without MiniLM embeddings (the frame
  records then have no vectors to read).
* CARTWISE_BENCH_REDIS_URL [redis://127.0.0.1:6379/9]: "" skips Redis. Keys are written under
  a per-run Feast project and deleted afterwards (SCAN + DEL of that project's keys only).

* pit_rows_per_s: stock Feast point-in-time retrieval (ranker_v1), the baseline of the next.
* pit_lateral_rows_per_s: features.training_set's set-based path on the same rows; baseline:
  the stock rate in the same run (ratio = speed-up); params.identical compares the frames.
* frame_rows_per_s / frame_peak_rss_ratio: a ranker_v2 frame (embeddings, similarities) built
  by `python -m features.frames build` against the stock path on the same rows, each in its
  own process (benchmarks/frame_records.py).
* online_<store>_p50_ms / p99_ms: 1 user + 100 items of ranker_v1's batch views, >= 1000
  calls, SQLite and Redis. Baseline (p99): the offline store answering the same request
  (`get_historical_features` for the same 100 rows at now), measured in the same run.
* push_visible_p50_ms / p99: push one event, read it back online until visible (a push not
  visible within 5 s fails the benchmark).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from benchmarks.common import record, scratch_database
from benchmarks.frame_records import frame_records
from features.feast_store import apply
from features.labels import labels_sql
from features.realtime import push_events
from features.training_set import build_training_set
from governance.db import transaction

ONLINE_REFS = [
    "user_stats:ctr_7d",
    "user_stats:clicks_30d",
    "user_stats:avg_price_paid_30d",
    "item_stats:item_ctr_smoothed_30d",
    "item_stats:item_price",
    "item_stats:item_popularity_trend",
    "user_category_affinity:uc_affinity_30d",
]


PUSH_TIMEOUT_S = 5.0


def _rec(name, value, unit, baseline=None, params=None):
    """benchmarks.common.record; ms metrics are lower-is-better (ratio = baseline / value)."""
    return record(name, float(value), unit, baseline, params or {}, higher_is_better=unit != "ms")


def _online_request(rng, catalog) -> list[dict]:
    users, items = catalog["users"], catalog["items"]
    u = users[rng.integers(len(users))]
    cands = rng.choice(items, size=min(100, len(items)), replace=False)
    return [{"user_id": u, "item_id": i, "category": catalog["category"][i]} for i in cands]


def offline_p99_ms(store, catalog, calls: int = 20) -> float:
    """The baseline of the online records: the offline store answering the same request shape
    (get_historical_features for 1 user + 100 items at now), p99 over `calls`."""
    rng = np.random.default_rng(1)
    lat = []
    for _ in range(calls):
        rows = pd.DataFrame(_online_request(rng, catalog))
        rows["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        t0 = time.perf_counter()
        store.get_historical_features(entity_df=rows, features=ONLINE_REFS).to_df()
        lat.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(lat, 99))


def bench_online(
    store, catalog, calls: int = 1000, label: str = "sqlite", baseline_ms: float | None = None
) -> list[dict]:
    rng = np.random.default_rng(0)
    lat = []
    for _ in range(calls):
        rows = _online_request(rng, catalog)
        t0 = time.perf_counter()
        store.get_online_features(features=ONLINE_REFS, entity_rows=rows).to_dict()
        lat.append((time.perf_counter() - t0) * 1000)
    p = {"calls": calls, "entities": 100, "features": len(ONLINE_REFS), "store": label}
    if baseline_ms is not None:
        p["baseline"] = "offline store, same request shape, same run (p99 of 20)"
    return [
        _rec(f"online_{label}_p50_ms", np.percentile(lat, 50), "ms", None, p),
        _rec(f"online_{label}_p99_ms", np.percentile(lat, 99), "ms", baseline_ms, p),
    ]


def bench_push(store, catalog, settings, pushes: int = 200) -> list[dict]:
    lat = []
    user = catalog["users"][0]
    for k in range(pushes):
        ev = pd.DataFrame(
            [
                {
                    "event_id": f"bench-{k}",
                    "user_id": user,
                    "session_id": "bench",
                    "event_type": "view",
                    "item_id": catalog["items"][k % 50],
                    "event_ts": datetime.now(UTC),
                    "is_bot": False,
                }
            ]
        )
        t0 = time.perf_counter()
        pushed = push_events(store, ev, settings)
        want = pushed["session_events"].iloc[0]
        while (
            store.get_online_features(
                features=["user_session:session_events"], entity_rows=[{"user_id": user}]
            ).to_dict()["session_events"][0]
            != want
        ):
            if time.perf_counter() - t0 > PUSH_TIMEOUT_S:
                raise TimeoutError(f"pushed event not visible online after {PUSH_TIMEOUT_S}s")
            time.sleep(0.0005)
        lat.append((time.perf_counter() - t0) * 1000)
    p = {"pushes": pushes}
    return [
        _rec("push_visible_p50_ms", np.percentile(lat, 50), "ms", None, p),
        _rec("push_visible_p99_ms", np.percentile(lat, 99), "ms", None, p),
    ]


def run_all(calls: int = 1000) -> list[dict]:
    """The simulated-shop benchmark (`run_sim`, sizes from the environment)."""
    return run_sim(calls=calls)


# ---------------------------------------------------------------- simulated shop, real programs


def _env_int(name: str, default: int) -> int:
    return int(float(os.environ.get(name) or default))


def _stage(out: list, name: str, seconds: float, **params) -> None:
    out.append(_rec(f"stage_{name}_s", seconds, "s", None, params))
    print(f"  stage {name}: {seconds:.1f}s {params}", flush=True)


def _run(args: list[str], settings, folder) -> float:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CARTWISE_DATA_DIR": str(settings.data_dir),
        "CARTWISE_FEAST_PROJECT": settings.feast_project,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("REDIS_URL", None)
    t0 = time.perf_counter()
    with open(folder / "stages.log", "ab") as log:
        subprocess.run(
            [sys.executable, *args], env=env, check=True, stdout=log, stderr=subprocess.STDOUT
        )
    return time.perf_counter() - t0


def _sql(settings, query: str, params=None):
    with transaction(settings) as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else None


def prepare_sim(settings, folder, events: int, days: int = 30, embeddings: bool = False):
    """simulate -> ingest -> pipeline (subprocesses) -> feast apply; returns (store, records)."""
    out: list[dict] = []
    sim = folder / "sim"
    s = _run(
        [
            "-m",
            "governance.simulate",
            "--out",
            str(sim),
            "--events",
            str(events),
            "--days",
            str(days),
        ],
        settings,
        folder,
    )
    _stage(out, "simulate", s, events=events, days=days)
    s = _run(["-m", "governance.ingest", "sim", str(sim)], settings, folder)
    ((n_events,),) = _sql(settings, "SELECT count(*) FROM events")
    _stage(out, "ingest", s, events_stored=n_events)
    out.append(
        _rec(
            "ingest_events_per_s",
            n_events / s,
            "events/s",
            None,
            {"events": n_events, "seconds": round(s, 1)},
        )
    )
    s = _run(
        ["-m", "features.pipeline", *([] if embeddings else ["--no-embeddings"])], settings, folder
    )
    rows = {
        t: _sql(settings, f"SELECT count(*) FROM {t}")[0][0]
        for t in (
            "user_features",
            "item_features",
            "category_features",
            "user_category_features",
            "user_session_features",
            "item_embeddings",
            "user_embeddings",
        )
    }
    _stage(out, "pipeline", s, embeddings=embeddings, **rows)
    out.append(
        _rec(
            "pipeline_events_per_s",
            n_events / s,
            "events/s",
            None,
            {"events": n_events, "seconds": round(s, 1), "embeddings": embeddings},
        )
    )
    t0 = time.perf_counter()
    store = apply(settings)
    _stage(out, "apply", time.perf_counter() - t0)
    return store, out


def _entity_table(settings, n_rows: int) -> tuple[str, int]:
    """ranker_v1 labels for n_rows clean impressions spread over the period, as a table."""
    table = f"bench_entities_{n_rows}"
    sql = (
        labels_sql("ranker_v1", "1970-01-01", "2100-01-01")
        + f" ORDER BY md5(i.event_id) LIMIT {int(n_rows)}"
    )
    _sql(settings, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS {sql}; ANALYZE {table}")
    ((n,),) = _sql(settings, f"SELECT count(*) FROM {table}")
    return table, n


def _timed_pit(store, settings, entity_sql: str, method: str, timeout_s: float):
    """build_training_set on entity_sql; a query still running after timeout_s is cancelled."""
    done = threading.Event()
    cancelled = []

    def watchdog():
        if done.wait(timeout_s):
            return
        cancelled.append(True)
        _sql(
            settings,
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'active' AND query LIKE '%entity_row_unique_id%'",
        )

    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.perf_counter()
    try:
        df = build_training_set(store, "ranker_v1", entity_df=entity_sql, method=method)
    except Exception:
        if not cancelled:
            raise
        df = None
    finally:
        done.set()
    return df, time.perf_counter() - t0


def _same(stock, fast) -> bool:
    """The set-based frame's columns hold the stock frame's rows and values (the stock frame
    also carries on-demand inputs no service lists, the raw embeddings)."""
    if stock is None or fast is None or len(stock) != len(fast):
        return False
    if not set(fast.columns) <= set(stock.columns):
        return False
    for col in fast.columns:
        x, y = stock[col].reset_index(drop=True), fast[col].reset_index(drop=True)
        if col == "event_timestamp":
            x = pd.to_datetime(x, utc=True)
        if x.dtype == object or y.dtype == object:

            def norm(v):
                if isinstance(v, (list, tuple, np.ndarray)):
                    return tuple(float(t) for t in v)
                return None if v is None or (isinstance(v, float) and np.isnan(v)) else v

            if [norm(v) for v in x] != [norm(v) for v in y]:
                return False
        else:
            try:
                pd.testing.assert_series_equal(x, y, check_dtype=False, check_names=False)
            except AssertionError:
                return False
    return True


def bench_pit_sim(store, settings, sizes: list[int], timeout_s: float) -> list[dict]:
    ((n_fv_rows,),) = _sql(
        settings,
        "SELECT (SELECT count(*) FROM user_features) + "
        "(SELECT count(*) FROM item_features) + "
        "(SELECT count(*) FROM category_features) + "
        "(SELECT count(*) FROM user_category_features) + "
        "(SELECT count(*) FROM user_session_features)",
    )
    out = []
    for size in sizes:
        t0 = time.perf_counter()
        table, n = _entity_table(settings, size)
        _stage(out, f"labels_{n}", time.perf_counter() - t0, rows=n)
        entity_sql = f"SELECT * FROM {table}"
        p = {"rows": n, "service": "ranker_v1", "feature_rows": int(n_fv_rows)}
        fast, fs = _timed_pit(store, settings, entity_sql, "lateral", timeout_s)
        stock, ss = _timed_pit(store, settings, entity_sql, "stock", timeout_s)
        print(
            f"  pit rows={n}: stock {ss:.1f}s{'' if stock is not None else ' (cancelled)'}, "
            f"lateral {fs:.1f}s",
            flush=True,
        )
        finished = stock is not None
        out.append(
            _rec(
                "pit_rows_per_s",
                n / ss,
                "rows/s",
                None,  # the baseline of pit_lateral_rows_per_s below
                {
                    **p,
                    "seconds": round(ss, 1),
                    "finished": finished,
                    "method": "stock get_historical_features",
                },
            )
        )
        rec = _rec(
            "pit_lateral_rows_per_s",
            n / fs,
            "rows/s",
            n / ss,
            {
                **p,
                "seconds": round(fs, 1),
                "stock_seconds": round(ss, 1),
                "stock_finished": finished,
                "identical": _same(stock, fast),
            },
        )
        if not finished:
            rec["params"]["ratio_is_lower_bound"] = True
        out.append(rec)
        del stock, fast
        _sql(settings, f"DROP TABLE {table}")
    return out


def _sim_catalog(settings, n_users: int = 2000) -> dict:
    users = [
        r[0]
        for r in _sql(
            settings,
            "SELECT user_id FROM (SELECT DISTINCT user_id FROM "
            "user_features) u ORDER BY md5(user_id) LIMIT %s",
            (n_users,),
        )
    ]
    rows = _sql(
        settings,
        "SELECT item_id, category FROM items WHERE item_id IN "
        "(SELECT DISTINCT item_id FROM item_features)",
    )
    return {"users": users, "items": [r[0] for r in rows], "category": dict(rows)}


def _materialize(store, settings, out: list, label: str) -> None:
    lo, hi = _sql(settings, "SELECT min(event_timestamp), max(event_timestamp) FROM user_features")[
        0
    ]
    t0 = time.perf_counter()
    store.materialize(start_date=lo - timedelta(days=1), end_date=hi + timedelta(days=1))
    _stage(out, f"materialize_{label}", time.perf_counter() - t0)


def _delete_redis_project(redis_url: str, project: str) -> int:
    client = redis.Redis.from_url(redis_url)
    n = 0
    batch = []
    for key in client.scan_iter(match=f"*{project}", count=10000):
        batch.append(key)
        if len(batch) >= 10000:
            n += client.delete(*batch)
            batch = []
    if batch:
        n += client.delete(*batch)
    return n


def run_sim(
    events: int | None = None,
    pit_rows: list[int] | None = None,
    calls: int = 1000,
    days: int | None = None,
    embeddings: bool | None = None,
    redis_url: str | None = None,
) -> list[dict]:
    """The whole simulated-shop benchmark in a scratch database and folder (see module doc)."""
    events = events or _env_int("CARTWISE_BENCH_EVENTS", 300_000)
    days = days or _env_int("CARTWISE_BENCH_DAYS", 30)
    if pit_rows is None:
        pit_rows = [
            int(float(x))
            for x in os.environ.get("CARTWISE_BENCH_PIT_ROWS", "100000").split(",")
            if x
        ]
    if embeddings is None:
        embeddings = os.environ.get("CARTWISE_BENCH_EMBEDDINGS", "1") == "1"
    if redis_url is None:
        redis_url = os.environ.get("CARTWISE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    timeout_s = _env_int("CARTWISE_BENCH_PIT_TIMEOUT_S", 300)
    folder = Path(tempfile.mkdtemp(prefix="cw_bench_features_"))
    project = f"cwbench{uuid.uuid4().hex[:8]}"
    out: list[dict] = []
    try:
        with scratch_database() as base:
            settings = base.model_copy(
                update={"data_dir": folder / "data", "feast_project": project, "redis_url": None}
            )
            print(
                f"  scratch: {folder}, database {settings.database_url.rsplit('/', 1)[-1]}",
                flush=True,
            )
            store, recs = prepare_sim(settings, folder, events, days, embeddings)
            out += recs
            ((impressions,),) = _sql(
                settings,
                "SELECT count(*) FROM events WHERE event_type = 'impression' AND NOT is_bot",
            )
            sizes = sorted({min(n, impressions) for n in pit_rows})
            out += bench_pit_sim(store, settings, sizes, timeout_s)
            frame_rows = min(_env_int("CARTWISE_BENCH_FRAME_ROWS", 200_000), impressions)
            out += frame_records(settings, folder, frame_rows, timeout_s)
            catalog = _sim_catalog(settings)
            _materialize(store, settings, out, "sqlite")
            offline_ms = offline_p99_ms(store, catalog)
            out += bench_online(store, catalog, calls, "sqlite", offline_ms)
            out += bench_push(store, catalog, settings)
            if redis_url:
                rsettings = settings.model_copy(update={"redis_url": redis_url})
                try:
                    rstore = apply(rsettings)
                    _materialize(rstore, rsettings, out, "redis")
                    out += bench_online(rstore, catalog, calls, "redis", offline_ms)
                finally:
                    _delete_redis_project(redis_url, project)
            for rec in out:
                rec["params"].setdefault("events", events)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out

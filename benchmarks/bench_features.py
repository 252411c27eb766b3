"""Feature-store benchmarks. Each function returns a list of records
`{name, value, unit, baseline_value, ratio, params}` (the runner is benchmarks/__main__.py).

    from benchmarks.bench_features import run_all
    run_all(settings, n_sessions=2000)            # needs a migrated, empty database

* pit_rows_per_s: stock Feast point-in-time retrieval (ranker_v1 over all impressions).
  Baseline: the field notes' stock rate on this machine (8,000 rows/s, 1M x 2M rows).
* online_p50_ms / online_p99_ms: 1 user + 100 items of ranker_v1's batch views, >= 1000
  calls, SQLite and Redis. Baseline: feast-benchmarks' Python server p99 for 100 entities
  (125 ms, Redis).
* push_visible_p50_ms / p99: push one event, read it back online until visible.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pandas as pd

ONLINE_REFS = ["user_stats:ctr_7d", "user_stats:clicks_30d", "user_stats:avg_price_paid_30d",
               "item_stats:item_ctr_smoothed_30d", "item_stats:item_price",
               "item_stats:item_popularity_trend", "user_category_affinity:uc_affinity_30d"]


def _rec(name, value, unit, baseline=None, params=None):
    """benchmarks.common.record; ms metrics are lower-is-better (ratio = baseline / value)."""
    from benchmarks.common import record

    return record(name, float(value), unit, baseline, params or {},
                  higher_is_better=unit != "ms")


def prepare(settings, n_sessions: int = 2000, days: float = 10, n_items: int = 500,
            n_users: int = 300, embeddings: bool = False):
    from features import pipeline, synthetic
    from features.store import apply

    catalog = synthetic.load(settings, n_sessions=n_sessions, days=days, n_items=n_items,
                             n_users=n_users)
    t0 = time.perf_counter()
    report = pipeline.run(settings, embeddings=embeddings)
    pipeline_s = time.perf_counter() - t0
    store = apply(settings)
    store.materialize(start_date=synthetic.T0 - timedelta(days=400),
                      end_date=synthetic.T0 + timedelta(days=days + 1))
    return store, catalog, report, pipeline_s


def bench_pit(store, catalog, days: float = 10) -> list[dict]:
    from features import synthetic
    from features.training_set import build_training_set

    t0 = time.perf_counter()
    df = build_training_set(store, "ranker_v1", start=synthetic.T0,
                            end=synthetic.T0 + timedelta(days=days + 1))
    s = time.perf_counter() - t0
    return [_rec("pit_rows_per_s", len(df) / s, "rows/s", 8000.0,
                 {"rows": len(df), "seconds": round(s, 2), "service": "ranker_v1"})]


def bench_online(store, catalog, calls: int = 1000, label: str = "sqlite") -> list[dict]:
    rng = np.random.default_rng(0)
    users, items = catalog["users"], catalog["items"]
    lat = []
    for _ in range(calls):
        u = users[rng.integers(len(users))]
        cands = rng.choice(items, size=min(100, len(items)), replace=False)
        rows = [{"user_id": u, "item_id": i, "category": catalog["category"][i]} for i in cands]
        t0 = time.perf_counter()
        store.get_online_features(features=ONLINE_REFS, entity_rows=rows).to_dict()
        lat.append((time.perf_counter() - t0) * 1000)
    p = {"calls": calls, "entities": 100, "features": len(ONLINE_REFS), "store": label}
    return [_rec(f"online_{label}_p50_ms", np.percentile(lat, 50), "ms", None, p),
            _rec(f"online_{label}_p99_ms", np.percentile(lat, 99), "ms", 125.0, p)]


def bench_push(store, catalog, settings, pushes: int = 200) -> list[dict]:
    from datetime import datetime, timezone

    from features.realtime import push_events

    lat = []
    user = catalog["users"][0]
    for k in range(pushes):
        ev = pd.DataFrame([{"event_id": f"bench-{k}", "user_id": user, "session_id": "bench",
                            "event_type": "view", "item_id": catalog["items"][k % 50],
                            "event_ts": datetime.now(timezone.utc), "is_bot": False}])
        t0 = time.perf_counter()
        pushed = push_events(store, ev, settings)
        want = pushed["session_events"].iloc[0]
        while store.get_online_features(features=["user_session:session_events"],
                                        entity_rows=[{"user_id": user}]
                                        ).to_dict()["session_events"][0] != want:
            pass
        lat.append((time.perf_counter() - t0) * 1000)
    p = {"pushes": pushes}
    return [_rec("push_visible_p50_ms", np.percentile(lat, 50), "ms", None, p),
            _rec("push_visible_p99_ms", np.percentile(lat, 99), "ms", None, p)]


def run_all(settings, n_sessions: int = 2000, calls: int = 1000, redis_url: str | None = None,
            days: float = 10) -> list[dict]:
    store, catalog, report, pipeline_s = prepare(settings, n_sessions=n_sessions, days=days)
    out = [_rec("pipeline_events_per_s", report.events / pipeline_s, "events/s", None,
                {"events": report.events, "seconds": round(pipeline_s, 2)})]
    out += bench_pit(store, catalog, days)
    out += bench_online(store, catalog, calls, "sqlite")
    out += bench_push(store, catalog, settings)
    if redis_url:
        from features.store import apply
        from features import synthetic

        rstore = apply(settings.model_copy(update={"redis_url": redis_url}))
        rstore.materialize(start_date=synthetic.T0 - timedelta(days=400),
                           end_date=synthetic.T0 + timedelta(days=days + 1))
        out += bench_online(rstore, catalog, calls, "redis")
    return out

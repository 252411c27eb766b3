"""Train/serve consistency: online features vs offline point-in-time features.

    python -m features.consistency [--at ISO_TS] [--sample 50] [--service ranker_v1]

For a sample of (user, item, category) rows taken from the latest snapshots, reads the batch
feature views of the service online (`get_online_features`) and offline
(`get_historical_features` at `at`, default now) and reports every feature whose values differ
(floats compared with a 1e-6 relative tolerance). After a `materialize(-incremental)` up to
`at` the two must agree; a difference means stale materialisation, a TTL expiry seen by only
one side, or a bug. Push-fed (`user_session`) and on-demand features are left out: the former
is fresher online by design.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime

import pandas as pd

from governance.db import transaction

BATCH_VIEWS = ("user_stats", "item_stats", "category_stats", "user_category_affinity")


def sample_entities(settings=None, n: int = 50) -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(
            """SELECT DISTINCT ON (f.user_id, f.category) f.user_id, i.item_id, f.category
               FROM user_category_features f
               JOIN items i ON i.category = f.category
               -- recent snapshots only: older ones are past the views' TTL on both sides
               WHERE f.event_timestamp >=
                     (SELECT max(event_timestamp) FROM user_category_features)
                                          - interval '7 days'
               ORDER BY f.user_id, f.category, md5(i.item_id || f.user_id)
               LIMIT %s""",
            (n,),
        )
        return pd.DataFrame(cur.fetchall(), columns=["user_id", "item_id", "category"])


def _same(a, b) -> bool:
    na = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA
    nb = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if na or nb:
        return na and nb
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def check(
    store, entities: pd.DataFrame, at: datetime | None = None, views: tuple[str, ...] = BATCH_VIEWS
) -> dict:
    at = at or datetime.now(UTC)
    refs = [f"{v}:{f.name}" for v in views for f in store.get_feature_view(v).features]
    online = store.get_online_features(
        features=refs, entity_rows=entities.to_dict("records")
    ).to_df()
    edf = entities.copy()
    edf["event_timestamp"] = (
        pd.Timestamp(at).tz_convert("UTC")
        if pd.Timestamp(at).tzinfo
        else pd.Timestamp(at, tz="UTC")
    )
    offline = store.get_historical_features(entity_df=edf, features=refs).to_df()
    keys = list(entities.columns)
    merged = online.merge(offline, on=keys, suffixes=("_online", "_offline"))
    mismatches = []
    for name in (r.split(":", 1)[1] for r in refs):
        for row in merged.itertuples(index=False):
            a = getattr(row, f"{name}_online")
            b = getattr(row, f"{name}_offline")
            a = a.item() if hasattr(a, "item") else a
            b = b.item() if hasattr(b, "item") else b
            if not _same(a, b):
                mismatches.append(
                    {
                        **{k: getattr(row, k) for k in keys},
                        "feature": name,
                        "online": a,
                        "offline": b,
                    }
                )
    return {
        "at": str(at),
        "rows": len(merged),
        "features": len(refs),
        "compared": len(merged) * len(refs),
        "mismatches": mismatches,
    }


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.consistency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--at", help="ISO timestamp (default: now)")
    parser.add_argument("--sample", type=int, default=50)
    args = parser.parse_args(argv)
    from features.store import get_store

    store = get_store()
    at = datetime.fromisoformat(args.at) if args.at else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    report = check(store, sample_entities(n=args.sample), at=at)
    print(json.dumps(report, indent=2, default=str))
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(_main())

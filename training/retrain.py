"""Retrain and redeploy: features -> training set (served lists included) -> train -> gate ->
register the winner -> tell the running service to swap it in.

    python -m training.retrain --service-url http://127.0.0.1:3000     # make retrain

1. The feature pipeline folds new events into the feature tables; Feast applies and
   materialises them (the service reads the fresh values at once).
2. The training set is the ranker's labels as today (clicked by the same user, same item, same
   list, at or after the impression) over two sources: impressions the shop logged as events,
   and the lists the service logged itself (served_lists, for lists without shop-logged
   impressions), with the serving model's feature service point-in-time.
3. A candidate trains on the earlier lists; the most recent `test_frac` of lists is held out.
4. Gate: the candidate's AUC on the held-out lists against the serving model's AUC on the same
   rows. Only a candidate that is at least `min_gain` better is registered in the BentoML model
   store (with its feature profile, for drift), and the service at `service_url` reloads.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np
import pandas as pd

from features import pipeline
from features.feast_store import apply, materialize_incremental
from features.labels import labels_sql
from features.training_set import build_training_set
from governance.settings import get_settings
from training.bundles import info, load_ranker, save_ranker
from training.cli import parse_dataclass
from training.metrics import roc_auc
from training.ranker import RankerTrainArgs
from training.ranker import train as train_ranker
from training.ranker_data import numeric_objects, time_split

log = logging.getLogger(__name__)

# Lists the service logged, as ranker label rows (same columns as RANKER_LABELS_SQL). A list the
# shop also logged impressions for is left to the events source, so no row counts twice.
SERVED_LABELS_SQL = """
SELECT sl.list_id || ':' || si.position AS event_id, sl.served_at AS event_timestamp,
       coalesce(sl.user_id, 'anonymous') AS user_id, si.item_id, it.category, sl.list_id,
       si.position, nullif(lower(btrim(sl.query)), '') AS query, NULL::text AS session_id,
       extract(epoch FROM sl.served_at)::bigint AS request_ts_s,
       (EXISTS (SELECT 1 FROM events c
                WHERE c.list_id = sl.list_id AND c.item_id = si.item_id
                  AND c.event_type = 'click' AND NOT c.is_bot
                  AND c.user_id = sl.user_id
                  AND c.event_ts >= sl.served_at - interval '5 seconds'))::int AS label
FROM served_lists sl
JOIN served_items si USING (list_id)
JOIN items it ON it.item_id = si.item_id
WHERE NOT sl.fallback
  AND sl.served_at >= '{start}'::timestamptz AND sl.served_at < '{end}'::timestamptz
  AND NOT EXISTS (SELECT 1 FROM events i
                  WHERE i.list_id = sl.list_id AND i.event_type = 'impression')
"""


@dataclass
class RetrainArgs:
    serving_model: str = field(
        default="cartwise-ranker:latest", metadata={"help": "the model now serving (the gate)"}
    )
    service_url: str | None = field(
        default=None, metadata={"help": "running service to reload when a candidate wins"}
    )
    token: str | None = field(
        default=None, metadata={"help": "service token (default: CARTWISE_EVENTS_TOKEN)"}
    )
    pipeline: bool = field(default=True, metadata={"help": "run the feature pipeline first"})
    embeddings: bool = field(default=True, metadata={"help": "pipeline computes embeddings"})
    days: float = field(default=0.0, metadata={"help": "label window in days back (0: all)"})
    test_frac: float = field(default=0.2, metadata={"help": "most recent lists held out"})
    val_frac: float = field(default=0.15, metadata={"help": "lists for early stopping"})
    min_gain: float = field(
        default=0.0, metadata={"help": "AUC the candidate must add to be registered"}
    )
    epochs: int = field(default=6, metadata={"help": "candidate's training epochs"})
    buckets: int = field(default=2**15, metadata={"help": "hashed id buckets"})
    emb_dim: int = field(default=16, metadata={"help": "id embedding width"})
    deep: str = field(default="256,128", metadata={"help": "deep tower widths"})
    batch_size: int = field(default=512, metadata={"help": "training batch size"})
    out_dir: str = field(default="runs", metadata={"help": "run folders"})
    seed: int = field(default=0, metadata={"help": "training seed"})


@dataclass
class GateResult:
    candidate_auc: float
    serving_auc: float
    rows: int
    lists: int
    min_gain: float

    @property
    def wins(self) -> bool:
        return bool(self.candidate_auc >= self.serving_auc + self.min_gain)


@dataclass
class RetrainResult:
    serving_model: str
    feature_service: str
    rows: dict
    gate: GateResult
    registered: str | None
    reload: dict | None


def training_frame(settings, store, feature_service: str, start, end):
    """Point-in-time frame over shop impressions and served lists, with its sources counted."""
    events_sql = labels_sql(feature_service, start, end)
    served_sql = SERVED_LABELS_SQL.format(start=pd.Timestamp(start), end=pd.Timestamp(end))
    sql = f"({events_sql}) UNION ALL ({served_sql})"
    frame = build_training_set(store, feature_service, entity_df=sql)
    service = store.get_feature_service(feature_service)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    served = frame["event_id"].astype(str).str.contains(":", regex=False)
    return frame, names, {"events": int((~served).sum()), "served_lists": int(served.sum())}


def gate(candidate, serving, test: pd.DataFrame, min_gain: float) -> GateResult:
    # The frame holds every column of the feature service, as the candidate trained on it.
    y = test["label"].to_numpy()
    c = candidate.predict(test)
    s = serving.predict(test)
    return GateResult(
        float(roc_auc(y, c)),
        float(roc_auc(y, s)),
        len(test),
        int(test["list_id"].nunique()),
        min_gain,
    )


def reload_service(url: str, token: str, timeout_s: float = 120.0) -> dict:
    r = httpx.post(
        f"{url.rstrip('/')}/reload",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout_s,
    )
    r.raise_for_status()
    return r.json()


def run(args: RetrainArgs, settings=None) -> RetrainResult:
    settings = settings or get_settings()
    serving_info = info(args.serving_model)
    feature_service = serving_info["metadata"]["feature_service"]
    serving = load_ranker(serving_info["tag"])
    if args.pipeline:
        pipeline.run(settings, embeddings=args.embeddings)
    store = apply(settings)
    if args.pipeline:
        materialize_incremental(store, pd.Timestamp.now(tz="UTC").to_pydatetime())
    end = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=1)
    start = end - pd.Timedelta(days=args.days) if args.days else pd.Timestamp(0, tz="UTC")
    frame, names, sources = training_frame(settings, store, feature_service, start, end)
    frame = numeric_objects(frame)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    splits, _ = time_split(frame, args.val_frac, args.test_frac)
    targs = RankerTrainArgs(
        feature_service=feature_service,
        out_dir=args.out_dir,
        buckets=args.buckets,
        emb_dim=args.emb_dim,
        deep=args.deep,
        batch_size=args.batch_size,
        epochs=args.epochs,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        seed=args.seed,
        tensorboard=False,
        save_model=False,
    )
    res = train_ranker(targs, frame=frame, feature_names=names, lineage={"sources": sources})
    result = gate(res.bundle, serving, splits["test"], args.min_gain)
    registered = reloaded = None
    if result.wins:
        metrics = {
            **res.test,
            "ship_gate": res.gate.asdict(),
            "gate": asdict(result) | {"serving_model": serving_info["tag"]},
        }
        # The candidate's training split is this time split's: its profile is the drift
        # reference the service reads.
        registered = save_ranker(res.bundle, metrics, res.lineage, profiles=res.profiles)
        if args.service_url:
            token = args.token or os.environ.get("CARTWISE_EVENTS_TOKEN", "cartwise-dev-token")
            try:
                reloaded = reload_service(args.service_url, token)
            except httpx.HTTPError as exc:
                # Registered all the same: a service started later loads it (':latest').
                log.warning(
                    "%s registered; the service at %s did not reload: %s",
                    registered,
                    args.service_url,
                    exc,
                )
                reloaded = {"error": f"{type(exc).__name__}: {exc}"}
    return RetrainResult(
        serving_info["tag"],
        feature_service,
        {k: len(v) for k, v in splits.items()} | sources,
        result,
        registered,
        reloaded,
    )


def main(argv: list[str] | None = None) -> RetrainResult:
    args = parse_dataclass(
        RetrainArgs,
        argv,
        "python -m training.retrain",
        "Retrain the ranker on events and served lists, gate it against the serving model on "
        "the most recent lists, register a winner and reload the service.",
    )
    logging.basicConfig(level=logging.INFO)
    result = run(args)
    out = asdict(result)
    out["gate"]["wins"] = result.gate.wins
    print(json.dumps(out, indent=2, default=str))
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

"""Online Retail next-purchase ranking: what will each customer buy after a cut-off date?

    python -m training.retail --from-db --cutoff 2011-11-09      # events of source online_retail
    python -m training.retail --purchases purchases.parquet --cutoff 2011-10-01 --out-dir runs

`--from-db` reads the governed events table (DATABASE_URL / CARTWISE_* settings): clean
`purchase` events of the batches whose source is `online_retail`. Returns (cancelled invoice
lines, event_type `return`) are left out: the original purchase line stays in the history
(the customer did choose the item), and a cancellation is not a purchase to predict.

Train on purchases before the cut-off, rank all items for every customer who buys after it
(within --horizon-days), and score Recall@20 and NDCG@10 against the set of items they
actually bought. Two baselines, same candidates, same customers:
    recent_popularity   items with the most distinct buyers in the last --recent-days
    own_top_popularity  the customer's own most-bought items, topped up with recent popularity
The model, `copurchase_repeat`, adds three normalised signals per (customer, item):
    repeat   time-decayed count of the customer's own purchases of the item
    co       item-item cosine of customer-level co-purchase, summed over their history
    pop      recent popularity
Its weights are chosen on a validation cut one horizon earlier (train before it, judge on the
window up to the real cut-off), then refitted on everything before the cut-off: the test
window is never seen while choosing.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from governance.db import transaction
from training.cli import arg, parse_dataclass
from training.common import run_dir, write_json


@dataclass
class RetailArgs:
    purchases: str | None = arg(None, "parquet/csv with user_id, item_id, event_ts, quantity")
    cutoff: str | None = arg(None, "YYYY-MM-DD (default: 80% of the way through the data)")
    horizon_days: float = arg(30.0, "days after the cutoff whose purchases are the targets")
    recent_days: float = arg(30.0, "window of the recent-popularity baseline, days")
    half_life_days: float = arg(60.0, "half-life of the recency weight of past purchases, days")
    k_recall: int = arg(20, "cut-off of Recall@k")
    k_ndcg: int = arg(10, "cut-off of NDCG@k")
    out_dir: str = arg("runs", "folder for the run's report")
    from_db: bool = arg(False, "read purchases from the governed events table")
    source: str = arg("online_retail", "with --from-db: the ingest_batches.source to read")


PURCHASES_SQL = """
SELECT e.user_id, e.item_id, e.event_ts, e.quantity, e.batch_id, i.category
FROM events e JOIN ingest_batches b USING (batch_id)
LEFT JOIN items i ON i.item_id = e.item_id
WHERE b.source = %(source)s AND e.event_type = 'purchase' AND NOT e.is_bot
  AND e.user_id IS NOT NULL AND e.item_id IS NOT NULL
"""


def purchases_from_db(settings=None, source: str = "online_retail") -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(PURCHASES_SQL, {"source": source})
        rows = cur.fetchall()
    return pd.DataFrame(
        rows, columns=["user_id", "item_id", "event_ts", "quantity", "batch_id", "category"]
    )


def _decay(age_days: np.ndarray, half_life: float) -> np.ndarray:
    return np.power(0.5, age_days / half_life)


class CoPurchaseRepeat:
    def __init__(
        self,
        half_life_days: float = 60.0,
        recent_days: float = 30.0,
        weights: tuple[float, float, float] = (1.0, 0.5, 0.2),
    ):
        self.half_life = half_life_days
        self.recent_days = recent_days
        self.weights = weights

    def fit(self, history: pd.DataFrame, cutoff: pd.Timestamp) -> CoPurchaseRepeat:
        self.items = pd.Index(sorted(history["item_id"].unique()))
        self.users = pd.Index(sorted(history["user_id"].unique()))
        u = self.users.get_indexer(history["user_id"])
        i = self.items.get_indexer(history["item_id"])
        age = (cutoff - history["event_ts"]).dt.total_seconds().to_numpy() / 86400
        shape = (len(self.users), len(self.items))
        self.repeat = sparse.csr_matrix((_decay(age, self.half_life), (u, i)), shape=shape)
        bought = (self.repeat > 0).astype(np.float32)
        co = (bought.T @ bought).tocsr().astype(np.float32)
        co.setdiag(0)
        co.eliminate_zeros()
        norm = np.sqrt(np.asarray(bought.sum(0)).ravel()) + 1e-9
        self.sim = sparse.diags(1 / norm) @ co @ sparse.diags(1 / norm)
        recent = history[history["event_ts"] >= cutoff - pd.Timedelta(days=self.recent_days)]
        pop = recent.groupby("item_id")["user_id"].nunique()
        if pop.empty:
            pop = history.groupby("item_id")["user_id"].nunique()
        self.pop = pop.reindex(self.items).fillna(0).to_numpy(np.float32)
        self.pop_norm = self.pop / max(self.pop.max(), 1e-9)
        return self

    @staticmethod
    def _rownorm(m: np.ndarray) -> np.ndarray:
        top = m.max(axis=1, keepdims=True)
        return np.divide(m, top, out=np.zeros_like(m), where=top > 0)

    def signals(self, users) -> dict[str, np.ndarray]:
        idx = self.users.get_indexer(pd.Index(users))
        known = idx >= 0
        rep = np.zeros((len(idx), len(self.items)), np.float32)
        rep[known] = self.repeat[idx[known]].toarray()
        co = np.zeros_like(rep)
        co[known] = np.asarray((self.repeat[idx[known]] @ self.sim).todense())
        pop = np.broadcast_to(self.pop_norm, rep.shape)
        return {
            "repeat": self._rownorm(rep),
            "co": self._rownorm(co),
            "pop": pop,
            "raw_repeat": rep,
        }

    def score(self, users, weights=None, signals=None) -> np.ndarray:
        s = signals or self.signals(users)
        a, b, c = weights or self.weights
        return a * s["repeat"] + b * s["co"] + c * s["pop"]


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="mergesort")
    return np.take_along_axis(part, order, 1)


def rank_metrics(top: np.ndarray, relevant: list[set[int]], k_recall: int, k_ndcg: int):
    """Binary-relevance Recall@k and NDCG@k, averaged over customers."""
    disc = 1 / np.log2(np.arange(2, max(k_recall, k_ndcg) + 2))
    rec, ndcg = [], []
    for row, rel in zip(top, relevant):
        hits = np.array([it in rel for it in row])
        rec.append(hits[:k_recall].sum() / len(rel))
        ideal = disc[: min(len(rel), k_ndcg)].sum()
        ndcg.append((hits[:k_ndcg] * disc[: len(hits[:k_ndcg])]).sum() / ideal)
    return {
        f"recall@{k_recall}": float(np.mean(rec)),
        f"ndcg@{k_ndcg}": float(np.mean(ndcg)),
        "customers": len(relevant),
    }


def evaluate(purchases: pd.DataFrame, cutoff: pd.Timestamp, args: RetailArgs, weights=None) -> dict:
    """Fit before `cutoff`, score the horizon after it; every method, same customers."""
    end = cutoff + pd.Timedelta(days=args.horizon_days)
    hist = purchases[purchases["event_ts"] < cutoff]
    future = purchases[(purchases["event_ts"] >= cutoff) & (purchases["event_ts"] < end)]
    model = CoPurchaseRepeat(args.half_life_days, args.recent_days).fit(hist, cutoff)
    future = future[future["item_id"].isin(model.items)]  # unseen items: nobody can rank them
    truth = future.groupby("user_id")["item_id"].agg(lambda s: set(model.items.get_indexer(s)))
    users = truth.index.tolist()
    relevant = truth.tolist()
    sig = model.signals(users)
    k = max(args.k_recall, args.k_ndcg)
    known = model.users.get_indexer(users) >= 0
    # Own items ranked by how many times the customer bought them; popularity (< 1) breaks
    # ties and fills the rest of the list.
    counts = hist.groupby(["user_id", "item_id"]).size().rename("n").reset_index()
    counts = counts[counts["user_id"].isin(set(users))]
    own = np.zeros_like(sig["raw_repeat"])
    own[
        pd.Index(users).get_indexer(counts["user_id"]), model.items.get_indexer(counts["item_id"])
    ] = counts["n"].to_numpy()
    own += sig["pop"]
    methods = {
        "recent_popularity": np.array(sig["pop"]),
        "own_top_popularity": own,
        "copurchase_repeat": model.score(users, weights or model.weights, sig),
    }
    returning = np.array(known)
    out = {"cutoff": cutoff, "horizon_end": end, "weights": weights or model.weights, "methods": {}}
    for name, scores in methods.items():
        top = _topk(scores, k)
        out["methods"][name] = {
            "all": rank_metrics(top, relevant, args.k_recall, args.k_ndcg),
            "returning": rank_metrics(
                top[returning],
                [r for r, ok in zip(relevant, returning) if ok],
                args.k_recall,
                args.k_ndcg,
            )
            if returning.any()
            else None,
        }
    out["_grid_inputs"] = (sig, relevant, model, users)
    return out


def tune_weights(purchases: pd.DataFrame, cutoff: pd.Timestamp, args: RetailArgs):
    """Grid over the blend weights, judged by NDCG@k on the window just before `cutoff`."""
    val_cut = cutoff - pd.Timedelta(days=args.horizon_days)
    res = evaluate(purchases[purchases["event_ts"] < cutoff], val_cut, args)
    sig, relevant, model, users = res["_grid_inputs"]
    best, table = None, []
    for a, b, c in itertools.product((1.0,), (0.0, 0.1, 0.3, 1.0, 3.0), (0.0, 0.05, 0.2, 1.0)):
        top = _topk(model.score(users, (a, b, c), sig), max(args.k_recall, args.k_ndcg))
        m = rank_metrics(top, relevant, args.k_recall, args.k_ndcg)
        table.append({"weights": (a, b, c), **m})
        if best is None or m[f"ndcg@{args.k_ndcg}"] > best[1]:
            best = ((a, b, c), m[f"ndcg@{args.k_ndcg}"])
    return best[0], table


def run(purchases: pd.DataFrame, args: RetailArgs) -> dict:
    t0 = time.time()
    p = purchases.copy()
    p["event_ts"] = pd.to_datetime(p["event_ts"], utc=True)
    if "quantity" in p:
        p = p[p["quantity"].fillna(1) > 0]  # returns/cancellations are not purchases
    cutoff = (
        pd.Timestamp(args.cutoff, tz="UTC")
        if args.cutoff
        else p["event_ts"].quantile(0.8).floor("D")
    )
    weights, grid = tune_weights(p, cutoff, args)
    res = evaluate(p, cutoff, args, weights)
    res.pop("_grid_inputs")
    folder = run_dir(args.out_dir, "retail")
    ranks = {n: m["all"][f"ndcg@{args.k_ndcg}"] for n, m in res["methods"].items()}
    lineage = {
        "source": args.source if args.from_db else args.purchases,
        "rows": len(p),
        "customers": int(p["user_id"].nunique()),
        "items": int(p["item_id"].nunique()),
        "batch_ids": sorted(int(b) for b in p["batch_id"].dropna().unique())
        if "batch_id" in p
        else [],
    }
    body = {
        "kind": "retail",
        "args": args,
        **res,
        "validation_grid": grid,
        "lineage": lineage,
        "winner_by_ndcg": max(ranks, key=ranks.get),
        "train_range": [p["event_ts"].min(), cutoff],
        "wall_seconds": time.time() - t0,
    }
    write_json(folder / "report.json", body)
    return {**body, "folder": folder}


def main(argv: list[str] | None = None) -> dict:
    args = parse_dataclass(RetailArgs, argv, "python -m training.retail", __doc__)
    if args.from_db:
        df = purchases_from_db(None, args.source)
        if df.empty:
            raise SystemExit(f"no purchase events from source {args.source!r} in the database")
    elif args.purchases:
        df = (pd.read_csv if args.purchases.endswith(".csv") else pd.read_parquet)(args.purchases)
    else:
        raise SystemExit("give --from-db or --purchases FILE (parquet or csv)")
    res = run(df, args)
    print(f"cutoff {res['cutoff']}  weights {res['weights']}  report {res['folder']}")
    for name, m in res["methods"].items():
        print(f"  {name:20s} {m['all']}")
    return res


if __name__ == "__main__":
    main()

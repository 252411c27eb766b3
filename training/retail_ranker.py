"""Next-purchase ranking beyond repeat buying: LightGBM LambdaRank over generated candidates.

    python -m training.retail_ranker --from-db --cutoff 2011-11-09
    python -m training.retail_ranker --purchases purchases.parquet --cutoff 2011-11-01

Input: the governed purchase events (`--from-db`, the same query `training.retail` reads:
clean purchases of source online_retail, returns excluded) or a file of them.

Candidates per customer, generated from the history before a cut-off:
    own         every item the customer bought before
    co          the top --n-co items by item-item co-purchase with their history
    basket      the top --n-co items by co-purchase with their last invoice
    ease        the top --n-ease items by EASE (a ridge regression of each item on the rest)
    neighbours  the top --n-knn items bought in the last --neighbour-days by the --neighbours
                customers whose purchases are most like theirs
    popular     the top --n-pop items by recent distinct buyers
Features per (customer, item), all computed from purchases before the cut (`features()`):
own counts, quantities, recency and decayed repeat; co-purchase scores; item popularity,
trend and repeat-buyer share; customer activity and tenure; each candidate's rank under the
simple methods.

The ranker is --seeds LightGBM models that differ only in their seed, averaged: one model's
test ratio moves by a few percent with its seed (or the order the database returns rows in)
alone. Customers with no purchase before a cut get the popularity list (--cold-popularity).

Training data are earlier windows: labels are the purchases in [cut, cut + horizon) for cuts
one, two, ... horizons before the validation cut. The validation window (the horizon just
before --cutoff) early-stops LightGBM and decides what ships: the ranker only if its
validation Recall@k beats own-most-bought + popularity, else the baseline. With --refit (the
default) the ranker is then refitted on the training and validation windows together for the
early-stopped number of rounds, scaled up by the added window: the month just before the
cut-off is the one most like the test month, and validation has already done its job. The
test window after --cutoff is read once, for the report, with bootstrap intervals over
customers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from training.cli import parse_dataclass
from training.common import run_dir, write_json
from training.metrics import Interval, bootstrap_ci, paired_bootstrap_ci
from training.retail import purchases_from_db
from training.retail_features import FEATURES, CandidateSpec, Window, build_window

BASELINE = "own_top_popularity"
MODEL = "lgbm_lambdarank"


@dataclass
class RetailRankerArgs:
    purchases: str | None = field(
        default=None, metadata={"help": "parquet/csv with user_id, item_id, event_ts, quantity"}
    )
    from_db: bool = field(
        default=False, metadata={"help": "read purchase events of --source from the database"}
    )
    source: str = field(default="online_retail", metadata={"help": "ingest_batches.source"})
    cutoff: str | None = field(
        default=None, metadata={"help": "test cut-off date; default: 80% through the data"}
    )
    horizon_days: float = field(default=30.0, metadata={"help": "label window after a cut"})
    train_windows: int = field(
        default=6, metadata={"help": "earlier windows that make the training set"}
    )
    stride_days: float | None = field(
        default=None,
        metadata={
            "help": "days between training cuts (default: --horizon-days); shorter strides "
            "give overlapping windows and more training lists"
        },
    )
    refit: bool = field(
        default=True,
        metadata={
            "help": "after early stopping, refit on the training and validation windows "
            "(the rounds scaled by their share) so the shipped model has seen the latest month"
        },
    )
    recent_days: float = field(default=30.0, metadata={"help": "popularity window"})
    half_life_days: float = field(default=60.0, metadata={"help": "repeat-score half life"})
    n_co: int = field(default=50, metadata={"help": "co-purchase candidates per customer"})
    n_pop: int = field(default=50, metadata={"help": "popular candidates per customer"})
    n_ease: int = field(default=50, metadata={"help": "EASE candidates per customer"})
    ease_lambda: float = field(default=200.0, metadata={"help": "EASE's L2 penalty"})
    ease_max_items: int = field(
        default=5000,
        metadata={"help": "EASE covers the most-bought items up to this many (memory: its square)"},
    )
    n_knn: int = field(
        default=50, metadata={"help": "candidates bought lately by the most similar customers"}
    )
    neighbours: int = field(default=50, metadata={"help": "similar customers per customer"})
    neighbour_days: float = field(
        default=30.0, metadata={"help": "how far back the neighbours' purchases count"}
    )
    cold_popularity: bool = field(
        default=True,
        metadata={
            "help": "customers with no purchase before the cut get the popularity list: the "
            "ranker has no customer features for them and did not beat it there"
        },
    )
    k: int = field(default=20, metadata={"help": "Recall@k cut"})
    num_leaves: int = field(default=31, metadata={"help": "LightGBM leaves per tree"})
    learning_rate: float = field(default=0.05, metadata={"help": "LightGBM learning rate"})
    rounds: int = field(default=400, metadata={"help": "maximum boosting rounds"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for intervals"})
    seeds: int = field(
        default=5,
        metadata={
            "help": "LightGBM models averaged, one per seed from --seed on: one model's "
            "test ratio moves by a few percent with its seed alone"
        },
    )
    seed: int = field(default=0, metadata={"help": "first LightGBM seed, and the bootstrap's"})
    out_dir: str = field(default="runs", metadata={"help": "where the run folder goes"})

    def spec(self) -> CandidateSpec:
        """The candidate and feature settings, read by name from these arguments."""
        return CandidateSpec(**{f.name: getattr(self, f.name) for f in fields(CandidateSpec)})


# ---------------------------------------------------------------- evaluation


def per_customer_recall(window: Window, score_col: str, k: int) -> pd.Series:
    """Recall@k per customer: hits in the top k candidates over items they bought.
    Customers whose items are all outside the candidates still count (recall 0)."""
    f = window.frame
    order = f.sort_values(["user_id", score_col], ascending=[True, False], kind="mergesort")
    top = order.groupby("user_id", sort=False).head(k)
    hits = top.groupby("user_id")["label"].sum()
    users = pd.Index(sorted(window.truth))
    size = pd.Series({u: len(window.truth[u]) for u in users})
    return (hits.reindex(users).fillna(0.0) / size).rename(score_col)


@dataclass
class MethodScore:
    recall: Interval
    ratio_to_baseline: Interval


def compare(window: Window, k: int, n_boot: int, seed: int, methods: dict[str, str]) -> dict:
    per = {name: per_customer_recall(window, col, k) for name, col in methods.items()}
    base = per[BASELINE].to_numpy()
    return {
        name: MethodScore(
            bootstrap_ci(v.to_numpy(), n_boot, seed=seed),
            paired_bootstrap_ci(v.to_numpy(), base, n_boot, seed=seed),
        )
        for name, v in per.items()
    }


# ---------------------------------------------------------------- training


def _groups(frame: pd.DataFrame) -> np.ndarray:
    return frame.groupby("user_id", sort=False).size().to_numpy()


def _useful(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers with no bought item among their candidates teach a ranker nothing."""
    pos = frame.groupby("user_id")["label"].transform("sum")
    return frame[pos > 0]


def _params(args: RetailRankerArgs, seed: int) -> dict:
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [args.k],
        "num_leaves": args.num_leaves,
        "learning_rate": args.learning_rate,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": args.k * 2,
        "seed": seed,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }


@dataclass
class RankerEnsemble:
    """LightGBM rankers that differ only in their seed; the score is their mean. Bagging and
    feature sampling make one model's test ratio move by a few percent with its seed, and
    averaging them takes most of that out."""

    boosters: list
    rounds: list[int]

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return np.mean(
            [b.predict(x, num_iteration=r) for b, r in zip(self.boosters, self.rounds)], 0
        )

    def gain(self) -> dict[str, float]:
        total = np.sum([b.feature_importance(importance_type="gain") for b in self.boosters], 0)
        return dict(zip(FEATURES, (total / len(self.boosters)).round(1).tolist()))


def fit_ranker(train: pd.DataFrame, val: pd.DataFrame, args: RetailRankerArgs) -> RankerEnsemble:
    """One early-stopped model per seed, each stopped on the validation window."""
    import lightgbm as lgb  # heavy import, only the training path needs it

    tr, va = _useful(train), _useful(val)
    dtrain = lgb.Dataset(tr[FEATURES], tr["label"], group=_groups(tr), free_raw_data=False)
    dval = lgb.Dataset(va[FEATURES], va["label"], group=_groups(va), reference=dtrain)
    boosters = [
        lgb.train(
            _params(args, args.seed + n),
            dtrain,
            num_boost_round=args.rounds,
            valid_sets=[dval],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        for n in range(max(args.seeds, 1))
    ]
    return RankerEnsemble(boosters, [max(b.best_iteration, 1) for b in boosters])


def refit_ranker(
    train: pd.DataFrame, val: pd.DataFrame, rounds: list[int], args: RetailRankerArgs
) -> RankerEnsemble:
    """The same models on training + validation windows, each for its own number of rounds."""
    import lightgbm as lgb  # heavy import, only the training path needs it

    both = _useful(pd.concat([train, val.assign(user_id=val["user_id"].astype(str) + "@val")]))
    data = lgb.Dataset(both[FEATURES], both["label"], group=_groups(both), free_raw_data=False)
    rounds = [max(r, 1) for r in rounds]
    boosters = [
        lgb.train(_params(args, args.seed + n), data, num_boost_round=r)
        for n, r in enumerate(rounds)
    ]
    return RankerEnsemble(boosters, rounds)


def _score(model: RankerEnsemble, window: Window, cold_popularity: bool) -> None:
    f = window.frame
    f["model_score"] = model.predict(f[FEATURES])
    if cold_popularity:
        # Scores only order items within a customer, so the two scales never meet.
        cold = cold_rows(f)
        f["model_score"] = np.where(cold, f["baseline_score"], f["model_score"])


def prepare(purchases: pd.DataFrame) -> pd.DataFrame:
    p = purchases.copy()
    p["event_ts"] = pd.to_datetime(p["event_ts"], utc=True)
    if "quantity" not in p:
        p["quantity"] = 1.0
    p["quantity"] = pd.to_numeric(p["quantity"], errors="coerce").fillna(1.0)
    # The database returns rows in no fixed order, and float sums over them (and so LightGBM's
    # bins) depend on it: one order makes the same command give the same model.
    p = p.sort_values(
        ["event_ts", "user_id", "item_id", "quantity"], kind="mergesort", ignore_index=True
    )
    return p[p["quantity"] > 0]  # returns/cancellations are not purchases


def run(purchases: pd.DataFrame, args: RetailRankerArgs, progress: bool = True) -> dict:
    t0 = time.time()
    p = prepare(purchases)
    cutoff = (
        pd.Timestamp(args.cutoff, tz="UTC")
        if args.cutoff
        else p["event_ts"].quantile(0.8).floor("D")
    )
    horizon = pd.Timedelta(days=args.horizon_days)
    val_cut = cutoff - horizon
    stride = pd.Timedelta(days=args.stride_days or args.horizon_days)
    cuts = [val_cut - horizon - stride * n for n in range(args.train_windows)]
    cuts = [c for c in cuts if (p["event_ts"] < c).any()]
    bar = tqdm(total=len(cuts) + 2, desc="retail windows", disable=not progress)
    windows = []
    for c in cuts:
        # Labels of a training window must end before the validation window starts.
        windows.append(build_window(p[p["event_ts"] < val_cut], c, args.spec()))
        bar.update(1)
    val = build_window(p[p["event_ts"] < cutoff], val_cut, args.spec())
    bar.update(1)
    test = build_window(p, cutoff, args.spec())
    bar.update(1)
    bar.close()
    # One query group per (window, customer): the same customer in two windows is two lists.
    train = pd.concat(
        [
            w.frame.assign(user_id=w.frame["user_id"].astype(str) + f"@{j}")
            for j, w in enumerate(windows)
        ],
        ignore_index=True,
    )
    model = fit_ranker(train, val.frame, args)
    _score(model, val, args.cold_popularity)
    best_iteration, refit_rounds = model.rounds, None
    if args.refit:
        # Rounds grow with the data: one more window on top of len(windows).
        grow = (len(windows) + 1) / max(len(windows), 1)
        refit_rounds = [round(r * grow) for r in best_iteration]
        model = refit_ranker(train, val.frame, refit_rounds, args)
    _score(model, test, args.cold_popularity)
    methods = {
        "recent_popularity": "popularity_score",
        BASELINE: "baseline_score",
        MODEL: "model_score",
    }
    val_cmp = compare(val, args.k, args.n_boot, args.seed, methods)
    test_cmp = compare(test, args.k, args.n_boot, args.seed, methods)
    ships = choose_shipped(val_cmp)
    coverage = {
        "val": _candidate_recall(val),
        "test": _candidate_recall(test),
    }
    importance = model.gain()
    folder = run_dir(args.out_dir, "retail_ranker")
    body = {
        "kind": "retail_ranker",
        "args": args,
        "cutoff": cutoff,
        "validation_cut": val_cut,
        "training_cuts": cuts,
        "ships": ships,
        "validation": val_cmp,
        "test": test_cmp,
        "candidate_recall": coverage,
        "best_iteration": best_iteration,
        "refit_rounds": refit_rounds,
        "feature_gain": importance,
        "rows": {"train": len(train), "val": len(val.frame), "test": len(test.frame)},
        "customers": {"val": len(val.truth), "test": len(test.truth)},
        "cold_customers": {"val": _cold(val), "test": _cold(test)},
        "wall_seconds": time.time() - t0,
    }
    write_json(folder / "report.json", body)
    return {**body, "folder": folder, "model": model}


def choose_shipped(validation: dict[str, MethodScore]) -> str:
    """The learned ranker ships only when it beats the baseline on validation Recall@k."""
    if validation[MODEL].recall.mean > validation[BASELINE].recall.mean:
        return MODEL
    return BASELINE


def cold_rows(frame: pd.DataFrame) -> pd.Series:
    """Candidate rows of customers with no purchase before the cut (none of theirs is own)."""
    return frame.groupby("user_id")["is_own"].transform("max") == 0


def _cold(window: Window) -> int:
    """Customers with no purchase before the cut."""
    f = window.frame
    return int(f.loc[cold_rows(f), "user_id"].nunique())


def _candidate_recall(window: Window) -> float:
    """Share of bought items that are among the candidates at all: the ceiling of any
    re-ranking of them."""
    found = window.frame.groupby("user_id")["label"].sum()
    size = pd.Series({u: len(s) for u, s in window.truth.items()})
    return float((found.reindex(size.index).fillna(0) / size).mean())


def main(argv: list[str] | None = None) -> dict:
    args = parse_dataclass(RetailRankerArgs, argv, "python -m training.retail_ranker", __doc__)
    if args.from_db:
        df = purchases_from_db(None, args.source)
        if df.empty:
            raise SystemExit(f"no purchase events from source {args.source!r} in the database")
    elif args.purchases:
        df = (pd.read_csv if args.purchases.endswith(".csv") else pd.read_parquet)(args.purchases)
    else:
        raise SystemExit("give --from-db or --purchases FILE (parquet or csv)")
    res = run(df, args)
    print(f"cutoff {res['cutoff']}  ships {res['ships']}  report {res['folder']}")
    for part in ("validation", "test"):
        for name, m in res[part].items():
            print(
                f"  {part:10s} {name:20s} recall@{args.k} {m.recall}"
                f"  x baseline {m.ratio_to_baseline}"
            )
    return res


if __name__ == "__main__":
    main()

"""Next-purchase ranking beyond repeat buying: LightGBM LambdaRank over generated candidates.

    python -m training.retail_ranker --from-db --cutoff 2011-11-09
    python -m training.retail_ranker --purchases purchases.parquet --cutoff 2011-11-01

Input: the governed purchase events (`--from-db`, the same query `training.retail` reads:
clean purchases of source online_retail, returns excluded) or a file of them.

Candidates per customer, generated from the history before a cut-off:
    own         every item the customer bought before
    co          the top --n-co items by item-item co-purchase with their history
    basket      the top --n-co items by co-purchase with their last invoice
    popular     the top --n-pop items by recent distinct buyers
Features per (customer, item), all computed from purchases before the cut (`features()`):
own counts, quantities, recency and decayed repeat; co-purchase scores; item popularity,
trend and repeat-buyer share; customer activity and tenure; each candidate's rank under the
simple methods.

Training data are earlier windows: labels are the purchases in [cut, cut + horizon) for cuts
one, two, ... horizons before the validation cut. The validation window (the horizon just
before --cutoff) early-stops LightGBM and decides what ships: the ranker only if its
validation Recall@k beats own-most-bought + popularity, else the baseline. The test window
after --cutoff is read once, for the report, with bootstrap intervals over customers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from training.cli import parse_dataclass
from training.common import run_dir, write_json
from training.metrics import Interval, bootstrap_ci, paired_bootstrap_ci
from training.retail import purchases_from_db

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
        default=3, metadata={"help": "earlier windows that make the training set"}
    )
    recent_days: float = field(default=30.0, metadata={"help": "popularity window"})
    half_life_days: float = field(default=60.0, metadata={"help": "repeat-score half life"})
    n_co: int = field(default=50, metadata={"help": "co-purchase candidates per customer"})
    n_pop: int = field(default=50, metadata={"help": "popular candidates per customer"})
    k: int = field(default=20, metadata={"help": "Recall@k cut"})
    num_leaves: int = field(default=31, metadata={"help": "LightGBM leaves per tree"})
    learning_rate: float = field(default=0.05, metadata={"help": "LightGBM learning rate"})
    rounds: int = field(default=400, metadata={"help": "maximum boosting rounds"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for intervals"})
    seed: int = field(default=0, metadata={"help": "LightGBM and bootstrap seed"})
    out_dir: str = field(default="runs", metadata={"help": "where the run folder goes"})


# ---------------------------------------------------------------- candidates and features


def _days(delta: pd.Series) -> np.ndarray:
    return delta.dt.total_seconds().to_numpy() / 86400.0


def _rank_in_group(frame: pd.DataFrame, col: str) -> np.ndarray:
    return frame.groupby("user_id")[col].rank(ascending=False, method="first").to_numpy()


@dataclass
class Window:
    """Candidates with features for one cut; `label` is 1 where bought in the horizon."""

    cut: pd.Timestamp
    frame: pd.DataFrame
    truth: dict  # user_id -> set of item_id bought in the horizon (known items only)


FEATURES = [
    "own_lines",
    "own_days",
    "own_qty",
    "own_days_since_last",
    "own_days_since_first",
    "own_decayed",
    "own_lines_90d",
    "own_share",
    "co_score",
    "co_norm",
    "basket_score",
    "basket_norm",
    "pop_recent",
    "pop_all",
    "pop_7d",
    "pop_trend",
    "item_repeat_share",
    "item_age_days",
    "item_days_since_last_sale",
    "user_days",
    "user_items",
    "user_days_since_last",
    "user_tenure",
    "user_mean_gap",
    "rank_own",
    "rank_co",
    "rank_pop",
    "is_own",
]


def _co_matrices(hist: pd.DataFrame, items: pd.Index, users: pd.Index, cut, half_life):
    """Item-item cosine of customer-level co-purchase, and per-user scores against the whole
    decayed history and against the last invoice day."""
    u = users.get_indexer(hist["user_id"])
    i = items.get_indexer(hist["item_id"])
    age = _days(cut - hist["event_ts"])
    shape = (len(users), len(items))
    decayed = sparse.csr_matrix((np.power(0.5, age / half_life), (u, i)), shape=shape)
    bought = (decayed > 0).astype(np.float32)
    co = (bought.T @ bought).tocsr().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    norm = 1 / (np.sqrt(np.asarray(bought.sum(0)).ravel()) + 1e-9)
    sim = sparse.diags(norm) @ co @ sparse.diags(norm)
    last_day = hist.groupby("user_id")["event_ts"].transform("max")
    recent = hist[hist["event_ts"] >= last_day - pd.Timedelta(days=1)]
    basket = sparse.csr_matrix(
        (
            np.ones(len(recent), np.float32),
            (users.get_indexer(recent["user_id"]), items.get_indexer(recent["item_id"])),
        ),
        shape=shape,
    )
    basket.data[:] = 1.0
    return decayed, sim, basket


def _top_columns(dense: np.ndarray, n: int) -> np.ndarray:
    n = min(n, dense.shape[1])
    return np.argpartition(-dense, n - 1, axis=1)[:, :n]


def build_window(
    purchases: pd.DataFrame,
    cut: pd.Timestamp,
    args: RetailRankerArgs,
    users_to_score=None,
    with_labels: bool = True,
) -> Window:
    """Candidates and features from purchases before `cut`; labels from the horizon after."""
    hist = purchases[purchases["event_ts"] < cut]
    end = cut + pd.Timedelta(days=args.horizon_days)
    future = purchases[(purchases["event_ts"] >= cut) & (purchases["event_ts"] < end)]
    items = pd.Index(sorted(hist["item_id"].unique()))
    future = future[future["item_id"].isin(items)]
    truth = future.groupby("user_id")["item_id"].agg(set).to_dict() if with_labels else {}
    if users_to_score is None:
        users_to_score = sorted(truth)
    target = pd.Index(users_to_score)
    all_users = pd.Index(sorted(set(hist["user_id"]) | set(target)))
    decayed, sim, basket = _co_matrices(hist, items, all_users, cut, args.half_life_days)
    rows = all_users.get_indexer(target)
    co = np.asarray((decayed[rows] @ sim).todense(), dtype=np.float32)
    bk = np.asarray((basket[rows] @ sim).todense(), dtype=np.float32)

    # Item features.
    item = pd.DataFrame(index=items)
    recent = hist[hist["event_ts"] >= cut - pd.Timedelta(days=args.recent_days)]
    week = hist[hist["event_ts"] >= cut - pd.Timedelta(days=7)]
    item["pop_recent"] = recent.groupby("item_id")["user_id"].nunique()
    item["pop_all"] = hist.groupby("item_id")["user_id"].nunique()
    item["pop_7d"] = week.groupby("item_id")["user_id"].nunique()
    item = item.fillna(0.0)
    item["pop_trend"] = (item["pop_7d"] * args.recent_days / 7 + 1) / (item["pop_recent"] + 1)
    days = hist.assign(day=hist["event_ts"].dt.floor("D"))
    per_ui_days = (
        days.drop_duplicates(["item_id", "user_id", "day"]).groupby(["item_id", "user_id"]).size()
    )
    item["item_repeat_share"] = (per_ui_days > 1).groupby(level=0).mean()
    item["item_age_days"] = _days(cut - hist.groupby("item_id")["event_ts"].min()).astype(float)
    item["item_days_since_last_sale"] = _days(cut - hist.groupby("item_id")["event_ts"].max())
    item = item.fillna(0.0)

    # Candidates: own items, top co-purchase, top basket co-purchase, top popular.
    pop = item["pop_recent"].to_numpy()
    pop_top = np.argsort(-pop, kind="mergesort")[: args.n_pop]
    cand = [
        pd.DataFrame(
            {
                "user_id": np.repeat(target.to_numpy(), args.n_pop),
                "item_id": np.tile(items[pop_top].to_numpy(), len(target)),
            }
        )
    ]
    for dense in (co, bk):
        top = _top_columns(dense, args.n_co)
        keep = np.take_along_axis(dense, top, 1) > 0
        r, c = np.nonzero(keep)
        cand.append(
            pd.DataFrame({"user_id": target.to_numpy()[r], "item_id": items[top[r, c]].to_numpy()})
        )
    own_hist = hist[hist["user_id"].isin(set(target))]
    cand.append(own_hist[["user_id", "item_id"]])
    frame = pd.concat(cand, ignore_index=True).drop_duplicates(["user_id", "item_id"])

    # Own (customer, item) features.
    age = _days(cut - own_hist["event_ts"])
    own = (
        own_hist.assign(
            day=own_hist["event_ts"].dt.floor("D"),
            decayed=np.power(0.5, age / args.half_life_days),
            recent=(age <= 90).astype(float),
        )
        .groupby(["user_id", "item_id"])
        .agg(
            own_lines=("item_id", "size"),
            own_days=("day", "nunique"),
            own_qty=("quantity", "sum"),
            own_last=("event_ts", "max"),
            own_first=("event_ts", "min"),
            own_decayed=("decayed", "sum"),
            own_lines_90d=("recent", "sum"),
        )
        .reset_index()
    )
    frame = frame.merge(own, on=["user_id", "item_id"], how="left")
    frame["is_own"] = frame["own_lines"].notna().astype(float)
    frame["own_days_since_last"] = _days(cut - frame["own_last"])
    frame["own_days_since_first"] = _days(cut - frame["own_first"])
    frame = frame.drop(columns=["own_last", "own_first"])

    # Customer features.
    user = (
        own_hist.assign(day=own_hist["event_ts"].dt.floor("D"))
        .groupby("user_id")
        .agg(
            user_days=("day", "nunique"),
            user_items=("item_id", "nunique"),
            user_last=("event_ts", "max"),
            user_first=("event_ts", "min"),
            user_lines=("item_id", "size"),
        )
    )
    user["user_days_since_last"] = _days(cut - user["user_last"])
    user["user_tenure"] = _days(cut - user["user_first"])
    user["user_mean_gap"] = user["user_tenure"] / user["user_days"].clip(lower=1)
    frame = frame.merge(
        user.drop(columns=["user_last", "user_first"]),
        left_on="user_id",
        right_index=True,
        how="left",
    )
    frame["own_share"] = frame["own_lines"] / frame["user_lines"]
    frame = frame.drop(columns=["user_lines"])
    frame = frame.merge(item, left_on="item_id", right_index=True, how="left")

    # Co-purchase scores of each candidate.
    r = target.get_indexer(frame["user_id"])
    c = items.get_indexer(frame["item_id"])
    frame["co_score"] = co[r, c]
    frame["basket_score"] = bk[r, c]
    co_max = co.max(axis=1)
    bk_max = bk.max(axis=1)
    frame["co_norm"] = np.divide(
        frame["co_score"], co_max[r], where=co_max[r] > 0, out=np.zeros(len(frame))
    )
    frame["basket_norm"] = np.divide(
        frame["basket_score"], bk_max[r], where=bk_max[r] > 0, out=np.zeros(len(frame))
    )
    frame = frame.fillna(
        {
            "own_lines": 0,
            "own_days": 0,
            "own_qty": 0,
            "own_decayed": 0,
            "own_lines_90d": 0,
            "own_share": 0,
        }
    )
    frame["baseline_score"] = frame["own_lines"] + frame["pop_recent"] / (pop.max() + 1.0)
    frame["popularity_score"] = frame["pop_recent"]
    frame["rank_own"] = _rank_in_group(frame, "baseline_score")
    frame["rank_co"] = _rank_in_group(frame, "co_score")
    frame["rank_pop"] = _rank_in_group(frame, "pop_recent")
    frame["label"] = [
        float(i in truth.get(u, ())) for u, i in zip(frame["user_id"], frame["item_id"])
    ]
    frame = frame.sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    return Window(cut, frame, truth)


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


def fit_ranker(train: pd.DataFrame, val: pd.DataFrame, args: RetailRankerArgs):
    import lightgbm as lgb  # heavy import, only the training path needs it

    tr, va = _useful(train), _useful(val)
    params = {
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
        "seed": args.seed,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }
    dtrain = lgb.Dataset(tr[FEATURES], tr["label"], group=_groups(tr))
    dval = lgb.Dataset(va[FEATURES], va["label"], group=_groups(va), reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=args.rounds,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )
    return booster


def _score(booster, window: Window) -> None:
    window.frame["model_score"] = booster.predict(
        window.frame[FEATURES], num_iteration=booster.best_iteration
    )


def prepare(purchases: pd.DataFrame) -> pd.DataFrame:
    p = purchases.copy()
    p["event_ts"] = pd.to_datetime(p["event_ts"], utc=True)
    if "quantity" not in p:
        p["quantity"] = 1.0
    p["quantity"] = pd.to_numeric(p["quantity"], errors="coerce").fillna(1.0)
    return p[p["quantity"] > 0]  # returns/cancellations are not purchases


def run(purchases: pd.DataFrame, args: RetailRankerArgs, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    t0 = time.time()
    p = prepare(purchases)
    cutoff = (
        pd.Timestamp(args.cutoff, tz="UTC")
        if args.cutoff
        else p["event_ts"].quantile(0.8).floor("D")
    )
    horizon = pd.Timedelta(days=args.horizon_days)
    val_cut = cutoff - horizon
    cuts = [val_cut - horizon * (n + 1) for n in range(args.train_windows)]
    cuts = [c for c in cuts if (p["event_ts"] < c).any()]
    bar = tqdm(total=len(cuts) + 2, desc="retail windows", disable=not progress)
    windows = []
    for c in cuts:
        # Labels of a training window must end before the validation window starts.
        windows.append(build_window(p[p["event_ts"] < val_cut], c, args))
        bar.update(1)
    val = build_window(p[p["event_ts"] < cutoff], val_cut, args)
    bar.update(1)
    test = build_window(p, cutoff, args)
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
    booster = fit_ranker(train, val.frame, args)
    _score(booster, val)
    _score(booster, test)
    methods = {
        "recent_popularity": "popularity_score",
        BASELINE: "baseline_score",
        MODEL: "model_score",
    }
    val_cmp = compare(val, args.k, args.n_boot, args.seed, methods)
    test_cmp = compare(test, args.k, args.n_boot, args.seed, methods)
    ships = MODEL if val_cmp[MODEL].recall.mean > val_cmp[BASELINE].recall.mean else BASELINE
    coverage = {
        "val": _candidate_recall(val),
        "test": _candidate_recall(test),
    }
    importance = dict(
        zip(FEATURES, booster.feature_importance(importance_type="gain").round(1).tolist())
    )
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
        "best_iteration": booster.best_iteration,
        "feature_gain": importance,
        "rows": {"train": len(train), "val": len(val.frame), "test": len(test.frame)},
        "customers": {"val": len(val.truth), "test": len(test.truth)},
        "wall_seconds": time.time() - t0,
    }
    write_json(folder / "report.json", body)
    return {**body, "folder": folder, "booster": booster}


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

"""Candidates and features for next-purchase ranking, from purchases before a cut-off.

Candidates per customer: every item they bought before, the top `n_co` items by item-item
co-purchase with their decayed history and with their last purchase day, the top `n_ease` by
EASE, the top `n_knn` bought lately by the customers most like them, and the top `n_pop` items
by recent distinct buyers. Features per (customer, item) are
listed in FEATURES; every one is computed from purchases strictly before the cut, so a
window's labels (the purchases in the horizon after it) never leak into its features. The
category features read an optional `category` column of the purchases; without it every item
is in one category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass(frozen=True)
class CandidateSpec:
    horizon_days: float = 30.0
    recent_days: float = 30.0
    half_life_days: float = 60.0
    n_co: int = 50
    n_pop: int = 50
    n_ease: int = 50
    ease_lambda: float = 200.0
    ease_max_items: int = 5000
    n_knn: int = 50
    neighbours: int = 50
    neighbour_days: float = 30.0


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
    "own_gap",
    "own_due",
    "own_qty_per_line",
    "in_last_basket",
    "item_trend_14d",
    "user_category_share",
    "category_trend",
    "rank_pop_in_category",
    "ease_score",
    "rank_ease",
    "neighbour_recent",
    "rank_neighbour",
]


def _co_matrices(hist: pd.DataFrame, items: pd.Index, users: pd.Index, cut, half_life):
    """Who bought what (decayed, and 0/1), the item-item cosine of customer-level
    co-purchase, and the customers' last invoice day."""
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
    return decayed, bought, sim, basket


def ease_scores(
    bought: sparse.csr_matrix, rows: np.ndarray, lam: float, max_items: int
) -> np.ndarray:
    """EASE (Steck, WWW 2019): each item regressed on all others over who bought what, with an
    L2 penalty `lam` and a zero diagonal; closed form B = -P / diag(P), P = (X'X + lam I)^-1.
    Unlike the cosine above it discounts items that co-occur only because both are popular.
    The inverse is dense, so it covers the `max_items` most-bought items (memory grows with
    its square: two float64 matrices of 5,000 items take 400 MB); the rest score 0."""
    x = bought
    buyers = np.asarray(x.sum(0)).ravel()
    keep = np.sort(np.argsort(-buyers, kind="mergesort")[:max_items])
    xk = x[:, keep]
    gram = (xk.T @ xk).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    weights = np.linalg.inv(gram)
    del gram
    weights /= -np.diag(weights)
    weights[np.diag_indices_from(weights)] = 0.0
    out = np.zeros((len(rows), x.shape[1]), dtype=np.float32)
    out[:, keep] = xk[rows] @ weights
    return out


def neighbour_recent_scores(
    hist: pd.DataFrame,
    bought: sparse.csr_matrix,
    rows: np.ndarray,
    users: pd.Index,
    items: pd.Index,
    cut,
    spec: CandidateSpec,
    chunk: int = 2048,
) -> np.ndarray:
    """What the customers most like each target customer bought lately: the cosine of their
    item sets over the whole history, kept for the `neighbours` nearest, weighs who bought
    each item in the last `neighbour_days`. Shops like one another restock the same new
    (seasonal) lines, which neither their own history nor item-item similarity has yet."""
    norms = np.sqrt(np.asarray(bought.sum(1)).ravel()) + 1e-9
    xn = (sparse.diags(1 / norms) @ bought).tocsr()
    recent = hist[hist["event_ts"] >= cut - pd.Timedelta(days=spec.neighbour_days)]
    lately = sparse.csr_matrix(
        (
            np.ones(len(recent), np.float32),
            (users.get_indexer(recent["user_id"]), items.get_indexer(recent["item_id"])),
        ),
        shape=(len(users), len(items)),
    )
    lately.data[:] = 1.0
    out = np.zeros((len(rows), len(items)), dtype=np.float32)
    k = min(spec.neighbours, len(users) - 1)
    for start in range(0, len(rows), chunk):  # similarities of a chunk of customers at a time
        part = rows[start : start + chunk]
        sim = np.asarray((xn[part] @ xn.T).todense(), dtype=np.float32)
        sim[np.arange(len(part)), part] = 0.0
        if k > 0:
            kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1 : k]
            sim[sim < kth] = 0.0
        out[start : start + len(part)] = (lately.T @ sim.T).T
    return out


def _top_columns(dense: np.ndarray, n: int) -> np.ndarray:
    n = min(n, dense.shape[1])
    return np.argpartition(-dense, n - 1, axis=1)[:, :n]


def build_window(
    purchases: pd.DataFrame,
    cut: pd.Timestamp,
    args: CandidateSpec,
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
    decayed, bought, sim, basket = _co_matrices(hist, items, all_users, cut, args.half_life_days)
    rows = all_users.get_indexer(target)
    co = np.asarray((decayed[rows] @ sim).todense(), dtype=np.float32)
    bk = np.asarray((basket[rows] @ sim).todense(), dtype=np.float32)
    ease = ease_scores(bought, rows, args.ease_lambda, args.ease_max_items)
    near = neighbour_recent_scores(hist, bought, rows, all_users, items, cut, args)

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
    sources = ((co, args.n_co), (bk, args.n_co), (ease, args.n_ease), (near, args.n_knn))
    for dense, n in sources:
        if n <= 0:
            continue
        top = _top_columns(dense, n)
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
    frame["ease_score"] = ease[r, c]
    frame["neighbour_recent"] = near[r, c]
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
    frame["rank_ease"] = _rank_in_group(frame, "ease_score")
    frame["rank_neighbour"] = _rank_in_group(frame, "neighbour_recent")
    frame["label"] = [
        float(i in truth.get(u, ())) for u, i in zip(frame["user_id"], frame["item_id"])
    ]
    frame = _timing_and_category(frame, hist, cut)
    frame = frame.sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    return Window(cut, frame, truth)


def _recent_buyers(hist: pd.DataFrame, key: str, cut, days: float) -> pd.Series:
    return hist[hist["event_ts"] >= cut - pd.Timedelta(days=days)].groupby(key)["user_id"].nunique()


def _trend(hist: pd.DataFrame, key: str, cut, short_days: float = 14, long_days: float = 60):
    """Distinct buyers of the last `short_days`, scaled to `long_days`, over those of the last
    `long_days` (add-one smoothed): above 1 when something is selling faster than before,
    as seasonal stock does before Christmas."""
    short = _recent_buyers(hist, key, cut, short_days)
    long = _recent_buyers(hist, key, cut, long_days)
    return (short.reindex(long.index).fillna(0) * long_days / short_days + 1) / (long + 1)


def _timing_and_category(frame: pd.DataFrame, hist: pd.DataFrame, cut) -> pd.DataFrame:
    """When a customer is due to rebuy an item, what they bought last, and which categories
    they buy and which are rising."""
    repeat_days = (frame["own_days"] - 1).clip(lower=1)
    span = frame["own_days_since_first"] - frame["own_days_since_last"]
    frame["own_gap"] = np.where(frame["own_days"] > 1, span / repeat_days, np.nan)
    frame["own_due"] = frame["own_days_since_last"] / frame["own_gap"]
    frame["own_qty_per_line"] = frame["own_qty"] / frame["own_lines"].replace(0, np.nan)
    last = hist.groupby("user_id")["event_ts"].transform("max")
    last_basket = hist.loc[hist["event_ts"] >= last - pd.Timedelta(days=1), ["user_id", "item_id"]]
    frame = frame.merge(
        last_basket.drop_duplicates().assign(in_last_basket=1.0),
        on=["user_id", "item_id"],
        how="left",
    )
    frame["in_last_basket"] = frame["in_last_basket"].fillna(0.0)
    frame["item_trend_14d"] = frame["item_id"].map(_trend(hist, "item_id", cut)).fillna(1.0)

    category = (
        hist.drop_duplicates("item_id").set_index("item_id")["category"].fillna("")
        if "category" in hist
        else pd.Series("", index=pd.Index(hist["item_id"].unique()))
    )
    hist = hist.assign(category=hist["item_id"].map(category))
    frame["category"] = frame["item_id"].map(category).fillna("")
    per_category = hist.groupby(["user_id", "category"]).size()
    share = per_category / per_category.groupby(level=0).transform("sum")
    frame = frame.merge(
        share.rename("user_category_share").reset_index(), on=["user_id", "category"], how="left"
    )
    frame["user_category_share"] = frame["user_category_share"].fillna(0.0)
    frame["category_trend"] = frame["category"].map(_trend(hist, "category", cut)).fillna(1.0)
    frame["rank_pop_in_category"] = frame.groupby(["user_id", "category"])["pop_recent"].rank(
        ascending=False, method="first"
    )
    return frame.drop(columns=["category"])

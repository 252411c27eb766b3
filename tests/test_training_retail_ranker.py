"""The next-purchase LambdaRank job on a small synthetic purchase log, and its ship gate."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from training import retail_ranker as rr
from training.metrics import Interval
from training.retail_features import FEATURES, CandidateSpec, build_window, ease_scores


def _purchases(seed=0, n_users=80, n_items=60, days=240):
    """Customers rebuy a few favourite items every few weeks and try others at random."""
    rng = np.random.default_rng(seed)
    rows, start = [], pd.Timestamp("2011-01-01", tz="UTC")
    for u in range(n_users):
        favourites = rng.choice(n_items, 3, replace=False)
        period = rng.integers(10, 40)
        for day in range(int(rng.integers(0, 20)), days, int(period)):
            basket = list(favourites[rng.random(3) < 0.7]) + list(rng.choice(n_items, 2))
            for item in basket:
                ts = start + pd.Timedelta(days=day, hours=int(rng.integers(8, 18)))
                rows.append((f"C{u}", f"I{item}", ts, int(rng.integers(1, 6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts", "quantity"])


def test_window_features_use_only_the_past():
    p = _purchases()
    cut = pd.Timestamp("2011-06-01", tz="UTC")
    w = build_window(p, cut, CandidateSpec(horizon_days=20, n_co=10, n_pop=10))
    f = w.frame
    assert set(FEATURES) <= set(f.columns)
    assert not f.duplicated(["user_id", "item_id"]).any()
    # Own counts equal a direct count over purchases before the cut.
    before = p[p["event_ts"] < cut].groupby(["user_id", "item_id"]).size()
    own = f[f["is_own"] == 1].set_index(["user_id", "item_id"])["own_lines"]
    assert (own == before.reindex(own.index)).all()
    # Labels are exactly the items bought in the horizon (among known items).
    after = p[(p["event_ts"] >= cut) & (p["event_ts"] < cut + pd.Timedelta(days=20))]
    assert set(w.truth) == set(after["user_id"])
    assert f["label"].sum() <= sum(len(s) for s in w.truth.values())
    assert (f["own_days_since_last"].dropna() > 0).all()


def test_timing_and_category_features_follow_the_history():
    p = _purchases()
    p["category"] = "c" + (p["item_id"].str[1:].astype(int) % 3).astype(str)
    cut = pd.Timestamp("2011-06-01", tz="UTC")
    f = build_window(p, cut, CandidateSpec(horizon_days=20, n_co=10, n_pop=10)).frame
    hist = p[p["event_ts"] < cut]
    one = f[(f["own_days"] > 2)].iloc[0]
    mine = hist[(hist["user_id"] == one["user_id"]) & (hist["item_id"] == one["item_id"])]
    days = mine["event_ts"].dt.floor("D")
    gap = (days.max() - days.min()).days / (days.nunique() - 1)
    assert one["own_gap"] == pytest.approx(gap, abs=1.0)  # days are floored, times are not
    assert one["own_due"] == pytest.approx(one["own_days_since_last"] / one["own_gap"])
    # The last basket is what the customer bought within a day of their last purchase.
    user = hist[hist["user_id"] == one["user_id"]]
    last = user[user["event_ts"] >= user["event_ts"].max() - pd.Timedelta(days=1)]
    flagged = f[(f["user_id"] == one["user_id"]) & (f["in_last_basket"] == 1)]
    assert set(flagged["item_id"]) == set(last["item_id"])
    # A customer's category shares over their own purchases sum to one.
    shares = (
        f[f["user_category_share"] > 0]
        .assign(category=lambda x: "c" + (x["item_id"].str[1:].astype(int) % 3).astype(str))
        .drop_duplicates(["user_id", "category"])
        .groupby("user_id")["user_category_share"]
        .sum()
    )
    assert np.allclose(shares, 1.0)
    # Without a category column every item is in one category: the share is 1 for buyers.
    g = build_window(p.drop(columns="category"), cut, CandidateSpec(20, n_co=10, n_pop=10)).frame
    assert set(g["user_category_share"].unique()) <= {0.0, 1.0}


def test_tiny_run_reports_both_methods_with_intervals(tmp_path):
    args = rr.RetailRankerArgs(
        cutoff="2011-08-01", horizon_days=20, train_windows=2, n_co=10, n_pop=10, rounds=20,
        n_boot=50, out_dir=str(tmp_path),
    )  # fmt: skip
    res = rr.run(_purchases(), args, progress=False)
    assert res["ships"] in (rr.MODEL, rr.BASELINE)
    for part in ("validation", "test"):
        for name in ("recent_popularity", rr.BASELINE, rr.MODEL):
            ci = res[part][name].recall
            assert 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0
        assert res[part][rr.BASELINE].ratio_to_baseline.mean == pytest.approx(1.0)
    assert res["ships"] == rr.choose_shipped(res["validation"])
    assert 0 < res["candidate_recall"]["test"] <= 1
    # One model per seed; each refit has one more window, so as many rounds or more.
    assert len(res["best_iteration"]) == len(res["refit_rounds"]) == args.seeds
    assert all(r >= b for r, b in zip(res["refit_rounds"], res["best_iteration"]))
    assert (res["folder"] / "report.json").exists()


def test_input_order_and_cold_customers(tmp_path):
    """The same purchases in another order are the same input (the database gives no order,
    and LightGBM's bins follow float sums over rows); customers without history are ranked
    by the baseline's popularity list."""
    args = rr.RetailRankerArgs(
        cutoff="2011-08-01", horizon_days=20, train_windows=2, n_co=10, n_pop=10, rounds=20,
        seeds=2, n_boot=20, out_dir=str(tmp_path),
    )  # fmt: skip
    p = _purchases()
    shuffled = rr.prepare(p.sample(frac=1.0, random_state=1))
    pd.testing.assert_frame_equal(rr.prepare(p), shuffled)
    a = rr.run(p, args, progress=False)
    # Two customers who first buy after the cut-off get the baseline's list exactly.
    late = p[p["user_id"].isin(["C0", "C1"])].assign(
        user_id=lambda x: "new" + x["user_id"], event_ts=pd.Timestamp("2011-08-05", tz="UTC")
    )
    window = build_window(pd.concat([p, late]), pd.Timestamp(args.cutoff, tz="UTC"), args.spec())
    rr._score(a["model"], window, cold_popularity=True)
    cold = window.frame[window.frame["user_id"].str.startswith("new")]
    assert len(cold) and (cold["is_own"] == 0).all()
    assert (cold["model_score"] == cold["baseline_score"]).all()
    assert rr._cold(window) == 2


def test_ease_matches_its_closed_form():
    """EASE scores are X B with B = I - P diag(1/diag(P)), P = (X'X + lam I)^-1 (Steck's
    closed form of the zero-diagonal ridge regression); items beyond the cap score 0."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 8)) < 0.3).astype(float)
    x[:, 7] = 0
    x[0, 7] = 1  # item 7 has one buyer: the least bought
    lam = 2.0
    got = ease_scores(sparse.csr_matrix(x), np.arange(40), lam, max_items=8)
    p = np.linalg.inv(x.T @ x + lam * np.eye(8))
    b = np.eye(8) - p / np.diag(p)
    assert np.allclose(got, x @ b, atol=1e-4)
    capped = ease_scores(sparse.csr_matrix(x), np.arange(40), lam, max_items=7)
    assert np.allclose(capped[:, 7], 0.0)


def _score(mean):
    ci = Interval(mean, mean, mean, 100)
    return rr.MethodScore(ci, ci)


def test_ship_gate_refuses_a_ranker_that_loses_on_validation():
    assert rr.choose_shipped({rr.MODEL: _score(0.20), rr.BASELINE: _score(0.21)}) == rr.BASELINE
    assert rr.choose_shipped({rr.MODEL: _score(0.21), rr.BASELINE: _score(0.21)}) == rr.BASELINE
    assert rr.choose_shipped({rr.MODEL: _score(0.22), rr.BASELINE: _score(0.21)}) == rr.MODEL


def test_neighbours_recent_purchases_reach_a_customer():
    """A customer's nearest neighbour (the one who shares their items) passes on what it
    bought lately; a stranger's purchases, and old ones, do not count."""
    from training.retail_features import neighbour_recent_scores

    cut = pd.Timestamp("2011-06-01", tz="UTC")
    old, new = cut - pd.Timedelta(days=200), cut - pd.Timedelta(days=3)
    rows = [
        ("A", "i1", old), ("A", "i2", old),
        ("B", "i1", old), ("B", "i2", old), ("B", "i3", new), ("B", "i5", old),
        ("C", "i9", old), ("C", "i4", new),
    ]  # fmt: skip
    hist = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts"])
    users, items = pd.Index(["A", "B", "C"]), pd.Index(sorted(hist["item_id"].unique()))
    x = sparse.csr_matrix(
        (np.ones(len(hist)), (users.get_indexer(hist.user_id), items.get_indexer(hist.item_id))),
        shape=(3, len(items)),
    )
    spec = CandidateSpec(neighbours=1, neighbour_days=30)
    got = neighbour_recent_scores(hist, x, np.array([0]), users, items, cut, spec, chunk=1)[0]
    score = dict(zip(items, got))
    assert score["i3"] > 0  # B, A's neighbour, bought it last week
    assert score["i4"] == 0 and score["i5"] == 0  # a stranger's item; the neighbour's old one
    assert score["i3"] == pytest.approx(2 / (np.sqrt(2) * np.sqrt(4)))  # cosine of A and B

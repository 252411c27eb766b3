"""Online Retail next-purchase ranking on synthetic purchases with repeat and co-purchase."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.training_data import retail_purchases
from training.retail import RetailArgs, _topk, main, rank_metrics, run


def test_model_compared_with_both_baselines(tmp_path):
    res = run(retail_purchases(n_users=200, n_items=120), RetailArgs(out_dir=str(tmp_path)))
    methods = res["methods"]
    assert set(methods) == {"recent_popularity", "own_top_popularity", "copurchase_repeat"}
    customers = {m["all"]["customers"] for m in methods.values()}
    assert len(customers) == 1 and customers.pop() > 50  # same customers for every method
    ndcg = {k: v["all"]["ndcg@10"] for k, v in methods.items()}
    # The synthetic shoppers repeat-buy within a cluster: own history beats popularity,
    # and the co-purchase blend (weights chosen before the cut-off) is at least as good.
    assert ndcg["own_top_popularity"] > ndcg["recent_popularity"]
    assert ndcg["copurchase_repeat"] >= ndcg["own_top_popularity"] - 1e-9
    report = json.loads((res["folder"] / "report.json").read_text())
    assert report["validation_grid"] and report["winner_by_ndcg"] in methods
    assert pd.Timestamp(report["cutoff"]) < pd.Timestamp(report["horizon_end"])


def test_rank_metrics_by_hand():
    scores = np.array([[0.9, 0.8, 0.1, 0.0]])
    top = _topk(scores, 2)
    assert top.tolist() == [[0, 1]]
    m = rank_metrics(top, [{1, 3}], k_recall=2, k_ndcg=2)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))


def test_cli(tmp_path):
    path = tmp_path / "p.parquet"
    retail_purchases(n_users=50, n_items=40).to_parquet(path)
    res = main(["--purchases", str(path), "--out-dir", str(tmp_path), "--cutoff", "2011-04-01"])
    assert str(res["cutoff"]).startswith("2011-04-01")

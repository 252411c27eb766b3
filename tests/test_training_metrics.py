"""training.metrics against scikit-learn, on random data with and without ties."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from training import metrics as m


@pytest.fixture(params=[0, 1, 2])
def binary(request):
    rng = np.random.default_rng(request.param)
    y = rng.integers(0, 2, 500)
    s = rng.random(500) + 0.3 * y
    if request.param == 2:  # heavy ties, as popularity scores have
        s = np.round(s, 1)
    return y, s


def test_auc_logloss_ap_match_sklearn(binary):
    y, s = binary
    p = np.clip(s / s.max(), 0.01, 0.99)
    assert m.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m.logloss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    assert m.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_pr_curve_matches_sklearn(binary):
    y, s = binary
    p1, r1, t1 = m.pr_curve(y, s)
    p2, r2, t2 = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(p1, p2)
    np.testing.assert_allclose(r1, r2)
    np.testing.assert_allclose(t1, t2)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = ["buy", "browse", "support", "other"]
    y = rng.choice(labels, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.choice(labels, 300))
    assert m.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert m.macro_f1(y, pred, labels) == pytest.approx(
        skm.f1_score(y, pred, labels=labels, average="macro")
    )
    np.testing.assert_array_equal(
        m.confusion(y, pred, labels), skm.confusion_matrix(y, pred, labels=labels)
    )


def test_ndcg_matches_sklearn_and_recall_by_hand():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rel = rng.integers(0, 3, 15)
        if rel.sum() == 0:
            continue
        s = rng.random(15)
        assert m.ndcg_at_k(rel, s, 10) == pytest.approx(skm.ndcg_score([rel], [s], k=10))
        top = set(np.argsort(-s)[:5])
        assert m.recall_at_k(rel, s, 5) == pytest.approx(
            sum(1 for i in top if rel[i] > 0) / (rel > 0).sum()
        )


def test_per_list_skips_lists_without_positives():
    frame = pd.DataFrame(
        {
            "list_id": ["a"] * 3 + ["b"] * 3,
            "label": [1, 0, 0, 0, 0, 0],
            "score": [0.1, 0.9, 0.5, 0.3, 0.2, 0.1],
        }
    )
    out = m.per_list(frame, "score", k_ndcg=10, k_recall=2)
    assert out["lists_evaluated"] == 1
    assert out["recall@2"] == 0.0
    assert out["ndcg@10"] == pytest.approx(1 / np.log2(4))


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = m.bootstrap_ci(rng.random(50), seed=1)
    large = m.bootstrap_ci(rng.random(5000), seed=1)
    assert small.low < small.mean < small.high
    assert large.high - large.low < (small.high - small.low) / 3
    assert m.bootstrap_ci([1.0, float("nan"), 3.0]).n == 2
    v = rng.random(50)
    assert m.bootstrap_ci(v, seed=1) == m.bootstrap_ci(v, seed=1)


def test_paired_ratio_and_t_interval():
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    ratio = m.paired_bootstrap_ci(base * 1.2, base, seed=0)
    assert ratio.mean == pytest.approx(1.2)
    assert ratio.low == pytest.approx(1.2) and ratio.high == pytest.approx(1.2)
    noisy = m.paired_bootstrap_ci(base + rng.normal(0, 0.1, 2000), base, seed=0)
    assert noisy.low < noisy.mean < noisy.high
    t = m.t_interval([0.5, 0.6, 0.7])
    assert t.mean == pytest.approx(0.6)
    # t(2 df) 97.5% quantile is 4.303; sd 0.1, n 3.
    assert t.high - t.mean == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)

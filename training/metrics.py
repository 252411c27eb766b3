"""Evaluation metrics in plain numpy, so serving and notebooks need no scikit-learn.

Each function mirrors a scikit-learn one (the tests check them against it); ranking metrics
are averaged per request list, because a ranker is judged on how it orders one page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def confusion(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Rows are true labels, columns predictions (scikit-learn's convention)."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            out[index[t], index[p]] += 1
    return out


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes seen in either)."""
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred))
    cm = confusion(y_true, y_pred, labels)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean()) if len(f1) else 0.0


def roc_auc(y_true: Sequence, score: Sequence) -> float:
    """Mann-Whitney AUC with tied scores counted half; NaN when only one class is present."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(score, dtype=float)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y_true: Sequence, prob: Sequence, eps: float = 1e-15) -> float:
    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(prob, dtype=float), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def pr_curve(y_true: Sequence, score: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, thresholds as scikit-learn's precision_recall_curve returns them."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(score, dtype=float)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # One point per distinct score: the last index of each run of equal scores.
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, len(y) - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    precision = np.divide(tps, tps + fps, out=np.ones_like(tps), where=(tps + fps) > 0)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones_like(tps)
    thresholds = s[idx]
    # Reverse to increasing thresholds and add the (precision 1, recall 0) end point.
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def pr_auc(y_true: Sequence, score: Sequence) -> float:
    """Average precision (step-wise area, scikit-learn's average_precision_score)."""
    precision, recall, _ = pr_curve(y_true, score)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def _dcg(gains: np.ndarray) -> float:
    return float(np.sum(gains / np.log2(np.arange(2, len(gains) + 2))))


def ndcg_at_k(relevance: Sequence, score: Sequence, k: int = 10) -> float:
    """NDCG@k of one list (linear gains, ties broken by order of appearance)."""
    rel = np.asarray(relevance, dtype=float)
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")[:k]
    ideal = _dcg(np.sort(rel)[::-1][:k])
    return _dcg(rel[order]) / ideal if ideal > 0 else float("nan")


def recall_at_k(relevance: Sequence, score: Sequence, k: int = 20) -> float:
    rel = np.asarray(relevance, dtype=float) > 0
    if not rel.any():
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")[:k]
    return float(rel[order].sum() / rel.sum())


def per_list(
    frame: pd.DataFrame,
    score_col: str,
    label_col: str = "label",
    list_col: str = "list_id",
    k_ndcg: int = 10,
    k_recall: int = 20,
) -> dict[str, float]:
    """Mean NDCG@k and Recall@k over lists with at least one positive (others say nothing)."""
    ndcgs, recalls = [], []
    for _, group in frame.groupby(list_col, sort=False):
        rel = group[label_col].to_numpy()
        if rel.sum() <= 0:
            continue
        s = group[score_col].to_numpy()
        ndcgs.append(ndcg_at_k(rel, s, k_ndcg))
        recalls.append(recall_at_k(rel, s, k_recall))
    return {
        f"ndcg@{k_ndcg}": float(np.mean(ndcgs)) if ndcgs else float("nan"),
        f"recall@{k_recall}": float(np.mean(recalls)) if recalls else float("nan"),
        "lists_evaluated": len(ndcgs),
    }


def ctr_metrics(y_true: Sequence, prob: Sequence) -> dict[str, float]:
    return {
        "auc": roc_auc(y_true, prob),
        "logloss": logloss(y_true, prob),
        "pr_auc": pr_auc(y_true, prob),
    }


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> dict:
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "confusion": confusion(y_true, y_pred, labels).tolist(),
        "labels": list(labels),
    }


# ---------------------------------------------------------------- uncertainty


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95
    method: str = "bootstrap"

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap of the mean over units (customers, sessions, queries).

    NaNs (units a metric says nothing about) are dropped first."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(v.mean()), float(low), float(high), len(v), level)


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Bootstrap interval of mean(a) / mean(b) over the same units resampled together, so
    a model and its baseline are compared on identical customers in every resample."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) == 0 or b.sum() == 0:
        return Interval(float("nan"), float("nan"), float("nan"), len(a), level, "paired ratio")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ratios = a[idx].mean(axis=1) / np.maximum(b[idx].mean(axis=1), 1e-12)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Interval(
        float(a.mean() / b.mean()), float(low), float(high), len(a), level, "paired ratio"
    )


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval over repeated splits or folds (few values, so not a
    bootstrap)."""
    from scipy import stats  # scipy comes with scikit-learn; only this function needs it

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level, "t")
    if n == 1:
        return Interval(float(v[0]), float("nan"), float("nan"), 1, level, "t")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half), n, level, "t")

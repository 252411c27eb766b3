"""How the ranker job judges its models: the ship gate, the test metrics and their intervals.

    ship_gate(val, {"dcn_v2": dcn, "logreg": lr})   -> ShipGate: the DCN ships only if it
                                                       beats logistic regression on validation
    evaluate(test, train, scorers, truth)            -> test metrics of every scorer, the
                                                       simulator's oracles and intervals

The oracles come from the simulator's truth file: `p_click` (with the examination term of the
slot the item was shown in, which the ranker never sees) and `p_click_position_free` (the same
click model without it: all that a ranker without the slot can hope to learn). Each scorer's
AUC is also given as a fraction of the position-free oracle's, on the rows the truth covers.

Intervals are a bootstrap over request lists (whole lists resampled, as the split keeps them),
paired: every scorer and the oracle are scored on the same resampled lists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from training.metrics import Interval, ctr_metrics, per_list, roc_auc

DCN, LOGREG = "dcn_v2", "logreg"


@dataclass(frozen=True)
class ShipGate:
    """Validation AUC of the DCN and of logistic regression, and which one ships."""

    val_auc: dict[str, float]
    min_gain: float
    shipped: str
    # Lower end of the one-sided interval of (DCN AUC - logistic regression AUC) over
    # bootstrap resamples of the validation lists (None: no list ids, point estimates only).
    gain_low: float | None = None
    level: float = 0.9

    @property
    def dcn_wins(self) -> bool:
        return self.shipped == DCN

    def reason(self) -> str:
        d, b = self.val_auc[DCN], self.val_auc[LOGREG]
        verdict = "ships" if self.dcn_wins else "loses: logistic regression ships instead"
        sure = (
            ""
            if self.gain_low is None
            else f", gain >= {self.gain_low:+.4f} at {self.level:.0%} over resampled lists"
        )
        return (
            f"DCN-v2 validation AUC {d:.4f} vs logistic regression {b:.4f}{sure} "
            f"(+{self.min_gain:g} needed): DCN {verdict}"
        )

    def asdict(self) -> dict:
        return asdict(self) | {"reason": self.reason()}


def ship_gate(
    val: pd.DataFrame,
    candidates: dict,
    min_gain: float = 0.0,
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> ShipGate:
    """`candidates` maps dcn_v2 and logreg to bundles (anything with predict(frame)). The DCN
    ships only when its validation AUC beats the baseline's by more than `min_gain`, and, when
    the rows carry list ids, does so with confidence: the `level` one-sided lower bound of the
    gain over `n_boot` paired resamples of whole lists must exceed `min_gain` too. A win within
    the noise of a small validation split ships the simpler model. A NaN (one class in
    validation) counts as losing."""
    y = val["label"].to_numpy()
    scores = {name: bundle.predict(val) for name, bundle in candidates.items()}
    auc = {name: roc_auc(y, s) for name, s in scores.items()}
    wins = bool(auc[DCN] > auc[LOGREG] + min_gain)  # NaN compares False
    low = None
    if wins and n_boot > 0 and "list_id" in val:
        gains = [
            roc_auc(y[i], scores[DCN][i]) - roc_auc(y[i], scores[LOGREG][i])
            for i in list_bootstrap_index(val["list_id"].to_numpy(), n_boot, seed)
        ]
        gains = np.asarray(gains, float)
        gains = gains[~np.isnan(gains)]
        low = float(np.quantile(gains, 1 - level)) if len(gains) else float("nan")
        wins = bool(low > min_gain)
    return ShipGate(auc, min_gain, DCN if wins else LOGREG, low, level)


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame, strength: float = 20.0):
    """Smoothed item CTR from training: (clicks + s*p) / (impressions + s)."""
    prior = float(train["label"].mean())
    g = train.groupby("item_id", observed=True)["label"].agg(["sum", "count"])
    ctr = (g["sum"] + strength * prior) / (g["count"] + strength)
    return test["item_id"].map(ctr).fillna(prior).to_numpy()


def list_bootstrap_index(list_ids, n_boot: int, seed: int = 0):
    """Yields row indices of `n_boot` resamples of whole lists (with replacement)."""
    codes, _ = pd.factorize(pd.Series(list_ids))
    order = np.argsort(codes, kind="mergesort")
    counts = np.bincount(codes)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        pick = rng.integers(0, len(counts), len(counts))
        lengths = counts[pick]
        offsets = np.r_[0, np.cumsum(lengths)[:-1]]
        idx = np.repeat(starts[pick] - offsets, lengths) + np.arange(lengths.sum())
        yield order[idx]


def _interval(point: float, draws: list[float], n: int, level: float, method: str) -> Interval:
    d = np.asarray(draws, float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return Interval(point, float("nan"), float("nan"), n, level, method)
    tail = (1 - level) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    return Interval(point, float(low), float(high), n, level, method)


def auc_intervals(
    y,
    scores: dict[str, np.ndarray],
    list_ids,
    reference: str | None = None,
    oracle: str | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Interval]]:
    """Paired list-bootstrap intervals: each score's AUC, its AUC minus `reference`'s and its
    AUC as a fraction of `oracle`'s, all on the same resampled lists."""
    y = np.asarray(y, float)
    scores = {k: np.asarray(v, float) for k, v in scores.items()}
    point = {k: roc_auc(y, s) for k, s in scores.items()}
    draws: dict[str, list[float]] = {k: [] for k in scores}
    for idx in list_bootstrap_index(list_ids, n_boot, seed):
        for k, s in scores.items():
            draws[k].append(roc_auc(y[idx], s[idx]))
    n_lists = int(pd.Series(list_ids).nunique())
    out: dict[str, dict[str, Interval]] = {}
    for k in scores:
        out[k] = {"auc": _interval(point[k], draws[k], n_lists, level, "list bootstrap")}
        if reference and k != reference:
            diff = np.asarray(draws[k]) - np.asarray(draws[reference])
            out[k]["auc_minus_" + reference] = _interval(
                point[k] - point[reference], list(diff), n_lists, level, "paired list bootstrap"
            )
        if oracle and k != oracle:
            ratio = np.asarray(draws[k]) / np.asarray(draws[oracle])
            out[k]["auc_fraction_of_" + oracle] = _interval(
                point[k] / point[oracle], list(ratio), n_lists, level, "paired list bootstrap"
            )
    return out


@dataclass
class Evaluation:
    """`metrics`: per scorer (and oracle) the test metrics, as the report and the model store
    keep them; `intervals`: per scorer the paired bootstrap intervals, as dicts."""

    metrics: dict
    intervals: dict


def evaluate(
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    truth: pd.DataFrame | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> Evaluation:
    """Test metrics of every scorer; with the simulator's truth, the two oracles (AUC on the
    logged clicks of the rows the truth covers) and, on those rows, each scorer's AUC as a
    fraction of the position-free oracle's. `intervals` holds the paired bootstrap intervals
    (AUC, AUC minus logistic regression's, fraction of the position-free oracle). The DCN's
    scores go in as "model"."""
    test = test.reset_index(drop=True).assign(**{f"score_{k}": v for k, v in scores.items()})
    y = test["label"].to_numpy()
    results: dict = {}
    for name in scores:
        results[name] = {**ctr_metrics(y, test[f"score_{name}"]), **per_list(test, f"score_{name}")}
    ci_scores = dict(scores)
    ci_rows = np.ones(len(test), bool)
    oracle = None
    if truth is not None:
        cols = [c for c in ("p_click", "p_click_position_free") if c in truth]
        p = test[["event_id"]].merge(truth[["event_id", *cols]], on="event_id", how="left")
        have = p[cols[0]].notna().to_numpy()
        for col, name in (("p_click", "oracle"), ("p_click_position_free", "oracle_position_free")):
            if col in cols:
                results[name] = {
                    "auc": roc_auc(y[have], p[col].to_numpy()[have]),
                    "events_matched": int(have.sum()),
                }
        if "p_click_position_free" in cols and have.any():
            oracle = "oracle_position_free"
            free = results[oracle]["auc"]
            for name in scores:
                auc = roc_auc(y[have], np.asarray(scores[name])[have])
                results[name]["auc_fraction_of_position_free_oracle"] = auc / free
            ci_scores = {**{k: np.asarray(v)[have] for k, v in scores.items()}}
            ci_scores[oracle] = p["p_click_position_free"].to_numpy()[have]
            ci_rows = have
    intervals: dict = {}
    if n_boot:
        ci = auc_intervals(
            y[ci_rows],
            ci_scores,
            test["list_id"].to_numpy()[ci_rows],
            reference=LOGREG if LOGREG in ci_scores else None,
            oracle=oracle,
            n_boot=n_boot,
            seed=seed,
        )
        intervals = {k: {m: asdict(iv) for m, iv in v.items()} for k, v in ci.items()}
        intervals["rows"] = int(ci_rows.sum())
    return Evaluation(results, intervals)

"""Online outcomes of served lists, per model version and variant, with confidence intervals.

    python -m training.online_report --hours 24 [--experiment NAME] [--json out.json]

Clicks and purchases sent to /events carry the `list_id` the service returned; they join the
served list's item at that id (served_lists/served_items). Per (model tag, variant):

- CTR: clicked served items / served items. Items of one list are not independent draws, so
  the interval is the delta-method one of a ratio of per-list sums (lists are the unit).
- conversion: share of lists with at least one purchase of a served item (same interval).
- NDCG of clicked positions: per list with a click, DCG of the clicked positions over the DCG
  of the same number of clicks at the top; the mean with a normal interval.

Differences are against the first variant (the control), with the interval of a difference of
independent estimates. Bot events never count.

Shadow: where a shadow model scored the served lists' items (served_items.shadow_score), per
(model tag, variant, shadow model): how far the shadow agrees with what was served (rank
correlation of its scores with the served scores within a list, share of lists whose top item
it would also put first) and, on lists with a click and a non-click, how often each ordering
puts a clicked item above an unclicked one (pairwise accuracy, 0.5 = chance; the same pairs
for both, so the two compare directly).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from governance.db import transaction

Z95 = 1.959963984540054

OUTCOMES_SQL = """
WITH clicks AS (
    SELECT DISTINCT list_id, item_id FROM events
    WHERE event_type = 'click' AND NOT is_bot AND list_id IS NOT NULL
), buys AS (
    SELECT DISTINCT list_id, item_id FROM events
    WHERE event_type = 'purchase' AND NOT is_bot AND list_id IS NOT NULL
)
SELECT sl.list_id, sl.model_tag, sl.variant, sl.experiment, sl.served_at, si.position,
       si.item_id, (c.list_id IS NOT NULL) AS clicked, (b.list_id IS NOT NULL) AS bought,
       si.score, si.shadow_score, sl.shadow_model
FROM served_lists sl
JOIN served_items si USING (list_id)
LEFT JOIN clicks c ON c.list_id = si.list_id AND c.item_id = si.item_id
LEFT JOIN buys b ON b.list_id = si.list_id AND b.item_id = si.item_id
WHERE sl.served_at >= %(since)s AND (%(experiment)s IS NULL OR sl.experiment = %(experiment)s)
ORDER BY sl.served_at, sl.list_id, si.position
"""


@dataclass
class Estimate:
    value: float
    lo: float
    hi: float

    def text(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass
class VariantOutcome:
    model_tag: str
    variant: str
    lists: int
    impressions: int
    clicks: int
    purchases: int
    ctr: Estimate
    conversion: Estimate
    ndcg_clicked: Estimate | None
    ctr_diff: Estimate | None = None  # vs the control (first variant)


@dataclass
class ShadowOutcome:
    """A shadow model against the ranking that was served, on the same lists and items."""

    model_tag: str
    variant: str
    shadow_model: str
    lists: int
    rank_corr: Estimate | None  # mean within-list Spearman of shadow vs served scores
    top1_agreement: Estimate  # lists whose served first item the shadow also scores highest
    clicked_lists: int  # lists with a clicked and an unclicked item
    pair_acc_served: Estimate | None  # clicked above unclicked, by the served scores
    pair_acc_shadow: Estimate | None  # the same pairs, by the shadow's scores


@dataclass
class OnlineReport:
    since: str
    experiment: str | None
    variants: list[VariantOutcome] = field(default_factory=list)
    shadows: list[ShadowOutcome] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"Online outcomes since {self.since}"
            + (f", experiment {self.experiment}" if self.experiment else "")
            + " (95% intervals; difference vs the first variant):",
            "",
            "| variant | model | lists | impressions | clicks | CTR | CTR diff | conversion "
            "| NDCG of clicks |",
            "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |",
        ]
        for v in self.variants:
            lines.append(
                f"| {v.variant} | {v.model_tag} | {v.lists} | {v.impressions} | {v.clicks} | "
                f"{v.ctr.text()} | {v.ctr_diff.text() if v.ctr_diff else '-'} | "
                f"{v.conversion.text()} | "
                f"{v.ndcg_clicked.text(3) if v.ndcg_clicked else '-'} |"
            )
        if self.shadows:
            lines += [
                "",
                "Shadow models on the same lists (pairwise accuracy: a clicked item above an "
                "unclicked one, 0.5 = chance):",
                "",
                "| variant | served model | shadow | lists | rank corr | top-1 agreement "
                "| lists with clicks | pairwise acc. served | pairwise acc. shadow |",
                "| --- | --- | --- | ---: | --- | --- | ---: | --- | --- |",
            ]
            for s in self.shadows:
                lines.append(
                    f"| {s.variant} | {s.model_tag} | {s.shadow_model} | {s.lists} | "
                    f"{s.rank_corr.text(3) if s.rank_corr else '-'} | "
                    f"{s.top1_agreement.text(3)} | {s.clicked_lists} | "
                    f"{s.pair_acc_served.text(3) if s.pair_acc_served else '-'} | "
                    f"{s.pair_acc_shadow.text(3) if s.pair_acc_shadow else '-'} |"
                )
        return "\n".join(lines) + "\n"


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> Estimate:
    """sum(num) / sum(den) over clusters, with the delta-method 95% interval."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    n = len(num)
    if n == 0 or den.sum() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    r = num.sum() / den.sum()
    if n < 2:
        return Estimate(r, float("nan"), float("nan"))
    resid = num - r * den
    se = np.sqrt(resid.var(ddof=1) / n) / den.mean()
    return Estimate(float(r), float(r - Z95 * se), float(r + Z95 * se))


def mean_estimate(x: np.ndarray) -> Estimate | None:
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return None
    m = float(x.mean())
    if len(x) < 2:
        return Estimate(m, float("nan"), float("nan"))
    se = float(x.std(ddof=1) / np.sqrt(len(x)))
    return Estimate(m, m - Z95 * se, m + Z95 * se)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """b - a for independent estimates (half-widths combine in quadrature)."""
    ha, hb = (a.hi - a.lo) / 2, (b.hi - b.lo) / 2
    d, h = b.value - a.value, float(np.hypot(ha, hb))
    return Estimate(d, d - h, d + h)


def ndcg_of_clicks(positions: np.ndarray) -> float:
    """NDCG of one list's clicked (0-based) positions."""
    pos = np.sort(np.asarray(positions, np.float64))
    dcg = np.sum(1.0 / np.log2(pos + 2))
    ideal = np.sum(1.0 / np.log2(np.arange(len(pos)) + 2))
    return float(dcg / ideal)


def summarise(rows: pd.DataFrame) -> list[VariantOutcome]:
    """Per (model tag, variant) outcomes from one row per served item (OUTCOMES_SQL)."""
    out: list[VariantOutcome] = []
    if rows.empty:
        return out
    order = rows.groupby(["variant", "model_tag"], sort=False)["served_at"].min().sort_values()
    for variant, model in order.index:
        g = rows[(rows["variant"] == variant) & (rows["model_tag"] == model)]
        per_list = g.groupby("list_id").agg(
            n=("item_id", "size"), clicks=("clicked", "sum"), bought=("bought", "any")
        )
        clicked = g[g["clicked"]]
        ndcg = clicked.groupby("list_id")["position"].apply(lambda p: ndcg_of_clicks(p.values))
        out.append(
            VariantOutcome(
                model_tag=str(model),
                variant=str(variant),
                lists=len(per_list),
                impressions=int(per_list["n"].sum()),
                clicks=int(per_list["clicks"].sum()),
                purchases=int(g["bought"].sum()),
                ctr=ratio_estimate(per_list["clicks"].to_numpy(), per_list["n"].to_numpy()),
                conversion=ratio_estimate(
                    per_list["bought"].to_numpy(float), np.ones(len(per_list))
                ),
                ndcg_clicked=mean_estimate(ndcg.to_numpy()),
            )
        )
    for v in out[1:]:
        v.ctr_diff = difference(out[0].ctr, v.ctr)
    return out


def pairwise_accuracy(scores: np.ndarray, clicked: np.ndarray) -> float | None:
    """Share of (clicked, unclicked) pairs of one list the scores order clicked-first (ties
    count half); None without both kinds."""
    pos, neg = scores[clicked], scores[~clicked]
    if not len(pos) or not len(neg):
        return None
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def summarise_shadow(rows: pd.DataFrame) -> list[ShadowOutcome]:
    """Per (model tag, variant, shadow model), from OUTCOMES_SQL rows with shadow scores."""
    if rows.empty or "shadow_score" not in rows:
        return []
    rows = rows[rows["shadow_score"].notna() & rows["shadow_model"].notna()]
    out: list[ShadowOutcome] = []
    for (model, variant, shadow), g in rows.groupby(
        ["model_tag", "variant", "shadow_model"], sort=True
    ):
        corr, top1, acc_served, acc_shadow = [], [], [], []
        for _, lst in g.groupby("list_id", sort=False):
            lst = lst.sort_values("position")
            served = lst["score"].to_numpy(np.float64)
            shadow_s = lst["shadow_score"].to_numpy(np.float64)
            clicked = lst["clicked"].to_numpy(bool)
            if (c := _spearman(served, shadow_s)) is not None:
                corr.append(c)
            top1.append(float(np.argmax(shadow_s) == 0))
            # Served order, not score: position 0 is what the user saw first.
            a = pairwise_accuracy(-lst["position"].to_numpy(np.float64), clicked)
            if a is not None:
                acc_served.append(a)
                acc_shadow.append(pairwise_accuracy(shadow_s, clicked))
        out.append(
            ShadowOutcome(
                model_tag=str(model),
                variant=str(variant),
                shadow_model=str(shadow),
                lists=len(top1),
                rank_corr=mean_estimate(np.array(corr)),
                top1_agreement=ratio_estimate(np.array(top1), np.ones(len(top1))),
                clicked_lists=len(acc_served),
                pair_acc_served=mean_estimate(np.array(acc_served)),
                pair_acc_shadow=mean_estimate(np.array(acc_shadow)),
            )
        )
    return out


def outcome_rows(settings=None, since=None, experiment: str | None = None) -> pd.DataFrame:
    since = since or datetime(1970, 1, 1, tzinfo=UTC)
    with transaction(settings) as cur:
        cur.execute(OUTCOMES_SQL, {"since": since, "experiment": experiment})
        cols = [d[0] for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def report(settings=None, since=None, experiment: str | None = None) -> OnlineReport:
    rows = outcome_rows(settings, since, experiment)
    return OnlineReport(str(since), experiment, summarise(rows), summarise_shadow(rows))


def main(argv: list[str] | None = None) -> OnlineReport:
    p = argparse.ArgumentParser(
        prog="python -m training.online_report",
        description="Online CTR, conversion and NDCG of clicked positions per model and variant.",
    )
    p.add_argument(
        "--hours", type=float, default=24.0, help="look back this many hours (default: %(default)s)"
    )
    p.add_argument("--experiment", default=None, help="only this experiment's lists")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    args = p.parse_args(argv)
    since = datetime.now(UTC) - timedelta(hours=args.hours)
    rep = report(since=since, experiment=args.experiment)
    print(rep.markdown())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(asdict(rep), fh, indent=2, default=str)
    return rep


if __name__ == "__main__":
    main()

"""Variant assignment, PSI drift and the online report's estimates (no server needed)."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from features.drift import compare, load_profiles, profile, psi, save_profiles
from serving.experiments import Experiment, Variant, parse
from training.online_report import (
    difference,
    ndcg_of_clicks,
    ratio_estimate,
    summarise,
    summarise_shadow,
)


def test_variant_assignment_is_stable_and_follows_shares():
    exp = parse(
        '{"name": "e1", "variants": [{"name": "a", "model": "m:1", "share": 0.2},'
        '{"name": "b", "model": "random", "share": 0.8}], "shadow": "m:2"}',
        "m:0",
    )
    assert exp.models == ["m:1", "m:2"] and not exp.variants[1].needs_model
    users = [f"u_{uuid.uuid4().hex[:20]}" for _ in range(20_000)]
    first = [exp.assign(u).name for u in users]
    assert first == [exp.assign(u).name for u in users]  # stable
    share_a = first.count("a") / len(users)
    # 20k draws: the binomial sd of the share is 0.0028, so 0.02 is seven of them.
    assert abs(share_a - 0.2) < 0.02
    # A different experiment name reshuffles users independently.
    other = Experiment("e2", exp.variants)
    agree = np.mean([other.assign(u).name == f for u, f in zip(users, first)])
    assert abs(agree - (0.2**2 + 0.8**2)) < 0.02
    assert parse(None, "m:0").assign("x").model == "m:0"
    with pytest.raises(ValueError, match="add up to 1"):
        Experiment("bad", (Variant("a", "m", 0.5), Variant("b", "m", 0.4)))
    with pytest.raises(ValueError, match="CARTWISE_EXPERIMENT"):
        parse('{"variants": [{"name": "a"}]}', "m")


def test_psi_flags_a_shifted_feature_and_not_an_unshifted_one(tmp_path):
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "ctr_7d": rng.beta(2, 30, 20_000),
            "price": rng.lognormal(3, 1, 20_000),
            "events_30d": rng.poisson(3, 20_000).astype(float),
            "user_id": ["u"] * 20_000,  # not numeric: not profiled
        }
    )
    profiles = profile(train, ["ctr_7d", "price", "events_30d", "user_id", "absent"])
    assert set(profiles) == {"ctr_7d", "price", "events_30d"}
    save_profiles(profiles, tmp_path)
    profiles = load_profiles(tmp_path)
    served = pd.DataFrame(
        {
            "ctr_7d": rng.beta(2, 30, 3_000),  # same distribution
            "price": rng.lognormal(3.8, 1, 3_000),  # prices went up
            "events_30d": np.where(rng.random(3_000) < 0.5, np.nan, rng.poisson(3, 3_000)),
        }
    )
    report = compare(profiles, served, threshold=0.2)
    by = {f.feature: f for f in report.features}
    assert by["ctr_7d"].psi < 0.05 and not by["ctr_7d"].drifted
    assert by["price"].psi > 0.2 and by["price"].drifted
    assert by["events_30d"].drifted  # half the values stopped arriving
    assert set(report.drifted) == {"price", "events_30d"}
    assert "| price |" in report.markdown()
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0)


def test_online_estimates():
    # Two variants, one row per served item.
    rows = []
    rng = np.random.default_rng(1)
    for variant, p in (("control", 0.1), ("treatment", 0.2)):
        for n in range(400):
            for pos in range(5):
                rows.append(
                    {
                        "list_id": f"{variant}-{n}",
                        "model_tag": f"m:{variant}",
                        "variant": variant,
                        "served_at": pd.Timestamp("2026-01-01", tz="UTC")
                        + pd.Timedelta(seconds=n + (0 if variant == "control" else 1000)),
                        "position": pos,
                        "item_id": f"i{pos}",
                        "clicked": bool(rng.random() < p / (1 + pos)),
                        "bought": False,
                    }
                )
    out = summarise(pd.DataFrame(rows))
    assert [v.variant for v in out] == ["control", "treatment"]
    c, t = out
    assert c.impressions == 2000 and c.lists == 400
    assert c.ctr.lo < c.clicks / c.impressions < c.ctr.hi
    assert t.ctr_diff.lo > 0  # the treatment's CTR is higher, and the interval says so
    assert c.conversion.value == 0
    assert ndcg_of_clicks(np.array([0])) == 1.0 and ndcg_of_clicks(np.array([3])) < 1
    est = ratio_estimate(np.array([1, 0, 2, 1]), np.array([5, 5, 5, 5]))
    assert est.value == pytest.approx(0.2) and est.lo < 0.2 < est.hi
    d = difference(est, est)
    assert d.value == 0 and d.lo < 0 < d.hi


def test_shadow_report_compares_the_shadow_with_the_served_ranking():
    """Served lists in position order; the 'good' shadow scores the clicked items highest,
    the 'same' shadow repeats the served scores."""
    rng = np.random.default_rng(0)
    rows = []
    for n in range(200):
        clicked = set(rng.choice(5, 1 + n % 2, replace=False).tolist())
        for shadow in ("good", "same"):
            for pos in range(5):
                served = 1.0 - pos / 10
                rows.append(
                    {
                        "list_id": f"{shadow}-{n}",
                        "model_tag": "m:1",
                        "variant": "ranker",
                        "position": pos,
                        "clicked": pos in clicked,
                        "score": served,
                        "shadow_model": f"m:{shadow}",
                        "shadow_score": (pos in clicked) + 0.01 * pos
                        if shadow == "good"
                        else served,
                    }
                )
    rows.append({**rows[0], "list_id": "unscored", "shadow_score": None, "shadow_model": None})
    good, same = summarise_shadow(pd.DataFrame(rows))
    assert (good.shadow_model, same.shadow_model) == ("m:good", "m:same")
    assert good.lists == same.lists == good.clicked_lists == 200  # each has 3-4 unclicked
    assert same.rank_corr.value == pytest.approx(1) and same.top1_agreement.value == 1
    assert same.pair_acc_shadow.value == pytest.approx(same.pair_acc_served.value)
    # Clicks fell on random positions: the served order is near chance, the shadow perfect.
    assert (
        good.pair_acc_shadow.value == 1 and good.pair_acc_served.lo < 0.5 < good.pair_acc_served.hi
    )

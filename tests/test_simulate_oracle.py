"""The simulator's position-free oracle is its click model with the position term removed."""

import numpy as np
import pandas as pd
import pytest

from governance.simulate import SimConfig, simulate
from governance.simulate.config import ClickModel


def test_position_free_is_the_top_slot_probability():
    cm = ClickModel()
    rng = np.random.default_rng(0)
    aff, fit, qual = rng.random(50), rng.random(50), rng.random(50)
    rel = (rng.random(50) < 0.5).astype(float)
    free = cm.p_click_position_free(aff, fit, qual, rel)
    assert free == pytest.approx(cm.p_click(aff, fit, qual, rel, np.zeros(50)))
    assert (free > cm.p_click(aff, fit, qual, rel, np.full(50, 3))).all()
    no_position = ClickModel(b_pos=0.0)
    assert no_position.p_click(aff, fit, qual, rel, np.full(50, 7)) == pytest.approx(free)


def test_truth_file_holds_both_probabilities(tmp_path):
    cm = ClickModel()
    simulate(SimConfig(seed=5, events=20_000, n_users=300, n_items=200, days=2), tmp_path, False)
    truth = pd.read_parquet(tmp_path / "truth" / "impressions.parquet")
    events = pd.concat(
        pd.read_csv(f, usecols=["event_id", "event_type", "position"], dtype={"event_id": str})
        for f in sorted((tmp_path / "events").glob("*.csv.gz"))
    )
    shown = truth.merge(events[events["event_type"] == "impression"], on="event_id")
    shown["position"] = pd.to_numeric(shown["position"], errors="coerce")
    shown = shown.dropna(subset=["position"])
    assert len(shown) > 1000
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    slot = shown["position"].to_numpy()  # 0-based, as in the click model
    restored = logit(shown["p_click"].to_numpy()) + cm.b_pos * np.log1p(slot)
    clean = (slot >= 0) & (slot < 50)  # dirty rows may carry a broken position
    assert (
        np.mean(np.isclose(restored, logit(shown["p_click_position_free"].to_numpy()))[clean])
        > 0.99
    )
    assert (shown["p_click_position_free"] >= shown["p_click"] - 1e-12).all()

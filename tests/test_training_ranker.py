"""Tiny DCN-v2 ranker runs: time split, report, determinism, model store, 2-process DDP."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from features.drift import load_profiles
from tests.training_data import TINY_RANKER, ranker_frame
from training.bundles import info, load_ranker, stored_ranker
from training.metrics import roc_auc
from training.ranker import RankerTrainArgs, train
from training.ranker_ceiling import main as ceiling
from training.ranker_ceiling import query_match
from training.ranker_data import time_split
from training.ranker_eval import DCN, LOGREG, auc_intervals, ship_gate
from training.ranker_model import FeatureSpec, LinearRanker, RankerBundle, hash_ids

TINY = TINY_RANKER


@pytest.fixture(scope="module")
def frame():
    return ranker_frame(n_lists=120, seed=1)


def test_time_split_puts_later_lists_later(frame):
    parts, ranges = time_split(frame, 0.15, 0.15)
    assert ranges["train"][1] < ranges["val"][0] <= ranges["val"][1] < ranges["test"][0]
    assert sum(len(p) for p in parts.values()) == len(frame)
    assert not set(parts["train"]["list_id"]) & set(parts["test"]["list_id"])


def test_feature_discovery_roles_and_stats(frame):
    spec = FeatureSpec.discover(frame, 256)
    assert spec.sparse == ["user_id", "item_id", "item_category"]
    assert "p_click" not in spec.dense and "position" not in spec.dense
    assert "user_item_cosine" in spec.dense and spec.vectors == {}
    enc = spec.encode(frame)
    dense = enc["dense"].numpy()
    assert dense.shape[1] == spec.dense_width == len(spec.dense) + len(spec.missing)
    assert np.allclose(dense[:, : len(spec.dense)].mean(0), 0, atol=0.05)
    assert np.abs(dense).max() <= spec.clip
    # Stable hashing: same ids, same buckets, in any process; 0 only for missing.
    assert (hash_ids(["a", "b", None], 256) == hash_ids(["a", "b", None], 256)).all()
    assert hash_ids([None], 256)[0] == 0 and hash_ids(["a"], 256)[0] > 0


def test_missing_dense_values_have_indicators_and_outliers_are_clipped():
    train = pd.DataFrame(
        {"user_id": ["u1"] * 4, "item_id": list("abcd"), "label": [0, 1, 0, 1],
         "uc_affinity_30d": [0.2, 0.8, None, None], "age_s": [10.0, 20.0, 30.0, 40.0]}
    )  # fmt: skip
    spec = FeatureSpec.discover(train, 64)
    assert spec.dense == ["uc_affinity_30d", "age_s"] and spec.missing == ["uc_affinity_30d"]
    served = pd.DataFrame(
        {"user_id": ["u1"] * 2, "item_id": ["a", "e"], "uc_affinity_30d": [0.5, None],
         "age_s": [25.0, 1e9]}
    )  # fmt: skip
    x = spec.encode(served)["dense"].numpy()
    # A null is the training mean (0) and says so; a value far out is held at `clip`.
    assert x.shape == (2, 3)
    assert x[1, 0] == 0 and x[:, 2].tolist() == [0.0, 1.0]
    assert x[1, 1] == spec.clip > 0
    old = FeatureSpec(**{**asdict(spec), "missing": [], "clip": 0.0})  # a spec saved before
    assert old.encode(served)["dense"].shape == (2, 2)


def test_tiny_training_report_and_determinism(frame, tmp_path):
    # The frame's p_click has no position term beyond -0.15*pos: the oracle without it is the
    # same logit with that term removed.
    z = np.log(frame["p_click"] / (1 - frame["p_click"])) + 0.15 * frame["position"]
    truth = frame[["event_id", "p_click"]].assign(p_click_position_free=1 / (1 + np.exp(-z)))
    a = train(RankerTrainArgs(out_dir=str(tmp_path), **TINY), frame=frame, truth=truth)
    b = train(RankerTrainArgs(out_dir=str(tmp_path), **TINY), frame=frame, truth=truth)
    np.testing.assert_array_equal(a.bundle.predict(frame), b.bundle.predict(frame))
    report = json.loads(a.report.read_text())
    assert set(report["test"]) == {
        "model",
        "popularity",
        "logreg",
        "oracle",
        "oracle_position_free",
    }
    for name in ("model", "popularity", "logreg"):
        assert {"auc", "logloss", "pr_auc", "ndcg@10", "recall@20"} <= set(report["test"][name])
        frac = report["test"][name]["auc_fraction_of_position_free_oracle"]
        assert frac == pytest.approx(
            report["test"][name]["auc"] / report["test"]["oracle_position_free"]["auc"]
        )
        ci = report["intervals"][name]["auc"]
        assert ci["low"] <= report["test"][name]["auc"] <= ci["high"]
        assert "auc_fraction_of_oracle_position_free" in report["intervals"][name]
    assert "auc_minus_logreg" in report["intervals"]["model"]
    rows = report["lineage"]["rows"]["test"]
    assert report["test"]["oracle"]["events_matched"] == rows
    assert report["test"]["oracle_position_free"]["events_matched"] == rows
    assert report["test"]["model"]["auc"] > 0.6
    assert report["shipped"] == a.shipped == a.bundle.kind
    gate = report["ship_gate"]
    if a.shipped == DCN:  # a confident validation win
        assert gate["val_auc"][DCN] > gate["val_auc"][LOGREG] and gate["gain_low"] > 0
    else:  # lost, or won within the noise of the validation lists
        assert gate["gain_low"] is None or gate["gain_low"] <= 0
    assert (a.folder / "pr_curve.png").stat().st_size > 0
    assert report["feature_service"] == "ranker_v1" and report["world_size"] == 1
    assert len(report["history"]) <= TINY["epochs"]


class _Fixed:
    """A stand-in bundle scoring a frame by one of its columns."""

    def __init__(self, column):
        self.column = column

    def predict(self, frame):
        return frame[self.column].to_numpy()


def test_ship_gate_refuses_a_dcn_that_loses_or_wins_by_too_little():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(int)
    val = pd.DataFrame({"label": y, "good": y + rng.normal(0, 1, 2000), "noise": rng.random(2000)})
    refused = ship_gate(val, {DCN: _Fixed("noise"), LOGREG: _Fixed("good")})
    assert refused.shipped == LOGREG and not refused.dcn_wins
    assert refused.val_auc[LOGREG] > refused.val_auc[DCN]
    assert "logistic regression ships" in refused.reason()
    assert ship_gate(val, {DCN: _Fixed("good"), LOGREG: _Fixed("noise")}).shipped == DCN
    # A win smaller than the required margin is refused too.
    gap = ship_gate(val, {DCN: _Fixed("good"), LOGREG: _Fixed("noise")}).val_auc
    margin = gap[DCN] - gap[LOGREG] + 0.01
    assert ship_gate(val, {DCN: _Fixed("good"), LOGREG: _Fixed("noise")}, margin).shipped == LOGREG


def test_ship_gate_refuses_a_win_within_the_noise():
    """A tiny validation win that resampled lists do not confirm ships the simpler model."""
    rng = np.random.default_rng(2)  # a seed where the DCN's point estimate wins
    n = 600
    y = (rng.random(n) < 0.3).astype(int)
    base = y + rng.normal(0, 1.5, n)
    val = pd.DataFrame(
        {
            "label": y,
            "list_id": [f"l{i // 6}" for i in range(n)],
            "lr": base,
            "dcn": base + rng.normal(0, 0.05, n),  # the same signal, a hair of noise
        }
    )
    gate = ship_gate(val, {DCN: _Fixed("dcn"), LOGREG: _Fixed("lr")})
    assert gate.val_auc[DCN] > gate.val_auc[LOGREG]  # a point win...
    assert gate.gain_low is not None and gate.gain_low <= 0  # ...the resamples do not confirm
    assert gate.shipped == LOGREG and "over resampled lists" in gate.reason()
    # Without list ids (no resampling) a point win alone decides.
    point = ship_gate(val.drop(columns="list_id"), {DCN: _Fixed("dcn"), LOGREG: _Fixed("lr")})
    assert point.gain_low is None
    assert point.shipped == (DCN if point.val_auc[DCN] > point.val_auc[LOGREG] else LOGREG)


def test_job_ships_logistic_regression_when_the_dcn_loses(frame, tmp_path, monkeypatch):
    """An untrained DCN (learning rate 0) loses to logistic regression on validation: the job
    ships the regression, through the same bundle interface serving loads."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))

    args = RankerTrainArgs(
        out_dir=str(tmp_path), **{**TINY, "epochs": 1}, lr=0.0, save_model=True, n_boot=0
    )
    res = train(args, frame=frame)
    assert res.gate.val_auc[LOGREG] > res.gate.val_auc[DCN]
    assert res.shipped == LOGREG and isinstance(res.bundle.model, LinearRanker)
    assert res.bundle is res.candidates[LOGREG]
    # The shipped regression scores test rows exactly as the report's logreg scores them.
    test = time_split(frame, 0.15, 0.15)[0]["test"]
    assert roc_auc(test["label"], res.bundle.predict(test)) == pytest.approx(
        res.test["logreg"]["auc"]
    )
    before = res.bundle.predict(frame)
    np.testing.assert_array_equal(RankerBundle.load(res.folder / "model").predict(frame), before)
    np.testing.assert_array_equal(load_ranker(res.tag).predict(frame), before)
    meta = info(res.tag)
    assert meta["metadata"]["kind"] == LOGREG
    assert meta["metrics"]["ship_gate"]["shipped"] == LOGREG


def test_list_bootstrap_intervals_are_paired():
    rng = np.random.default_rng(1)
    lists = np.repeat(np.arange(300), 8)
    y = (rng.random(len(lists)) < 0.2).astype(float)
    s = y + rng.normal(0, 1, len(y))
    ci = auc_intervals(y, {"a": s, "b": s, "o": y}, lists, reference="b", oracle="o", n_boot=50)
    assert ci["a"]["auc"].low < ci["a"]["auc"].mean < ci["a"]["auc"].high
    # Same scores on the same resampled lists: a zero difference in every resample.
    assert ci["a"]["auc_minus_b"].low == ci["a"]["auc_minus_b"].high == 0
    assert ci["a"]["auc_fraction_of_o"].high < 1


def test_store_round_trip_predicts_identically(frame, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))

    args = RankerTrainArgs(out_dir=str(tmp_path), **{**TINY, "epochs": 1, "save_model": True})
    res = train(args, frame=frame)
    before = res.bundle.predict(frame)
    tag = res.tag  # saved by the job itself, as training.all saves it
    np.testing.assert_array_equal(load_ranker(tag).predict(frame), before)
    # With its training profile, so the service measures drift for it like for a retrain.
    profiles = load_profiles(stored_ranker(tag).path)
    assert profiles and set(profiles) <= set(res.spec.dense) and "clicks_7d" in profiles
    meta = info(tag)
    assert meta["metadata"]["feature_service"] == "ranker_v1"
    assert set(meta["lineage"]["time_range"]) == {"train", "val", "test"}
    assert meta["metrics"]["model"]["auc"] == pytest.approx(res.test["model"]["auc"])


@pytest.mark.slow
def test_two_process_ddp_on_cpu(frame, tmp_path):
    path = tmp_path / "frame.parquet"
    frame.to_parquet(path)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.ranker",
        "--frame",
        str(path),
        "--out-dir",
        str(tmp_path / "runs"),
        "--buckets",
        "512",
        "--emb-dim",
        "8",
        "--deep",
        "32",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--no-tensorboard",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = list((tmp_path / "runs").glob("ranker-*/report.json"))
    assert len(reports) == 1  # rank 0 alone writes
    report = json.loads(reports[0].read_text())
    assert report["world_size"] == 2
    assert (reports[0].parent / "model" / "model.pt").exists()


def test_ceiling_analysis_on_a_known_frame(tmp_path):
    """training.ranker_ceiling on a frame whose position-free click model is known: the
    features carry it (high R^2) and the oracle scores as its own fraction 1."""
    frame = ranker_frame(n_lists=200, seed=1)
    frame.to_parquet(tmp_path / "frame.parquet")
    z = np.log(frame["p_click"] / (1 - frame["p_click"])) + 0.15 * frame["position"]
    truth = frame[["event_id", "p_click"]].assign(p_click_position_free=1 / (1 + np.exp(-z)))
    truth.to_parquet(tmp_path / "truth.parquet")
    out = ceiling(
        [
            "--frame",
            str(tmp_path / "frame.parquet"),
            "--truth",
            str(tmp_path / "truth.parquet"),
            "--n-boot",
            "20",
            "--out",
            str(tmp_path / "ceiling.json"),
        ]
    )
    assert out["rows"]["test"] == 300 and out["features_to_oracle_r2"] > 0.8
    auc = out["auc"]
    assert set(auc) == {
        "oracle",
        "oracle_position_free",
        "features_to_oracle",
        "lightgbm_clicks",
        "features_query_match_to_oracle",
        "lightgbm_clicks_query_match",
    }
    assert auc["features_to_oracle"]["auc_fraction_of_oracle_position_free"]["mean"] > 0.95
    assert json.loads((tmp_path / "ceiling.json").read_text())["rows"] == out["rows"]
    # --exclude: the ceiling is measured without the columns named (here one dense feature).
    args = ["--frame", str(tmp_path / "frame.parquet"), "--truth", str(tmp_path / "truth.parquet")]
    without = ceiling(
        [*args, "--n-boot", "20", "--exclude", "last_event_ts_s,item_ctr_smoothed_7d"]
    )
    assert without["features"]["dense"] == out["features"]["dense"] - 1


def test_query_match_is_the_query_s_most_shown_category_in_training():
    train = pd.DataFrame(
        {"query": ["sofa", "sofa", "sofa", None], "category": ["Sofas", "Sofas", "Lamps", "Mugs"]}
    )
    test = pd.DataFrame(
        {"query": ["sofa", "sofa", "lamp", None], "category": ["Sofas", "Lamps", "Lamps", "Mugs"]}
    )
    got = query_match({"train": train, "test": test}, "test")
    np.testing.assert_array_equal(got, [1.0, 0.0, np.nan, np.nan])

"""Tiny DCN-v2 ranker runs: time split, report, determinism, model store, 2-process DDP."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.training_data import ranker_frame
from training.ranker import RankerTrainArgs, time_split, train
from training.ranker_model import FeatureSpec, hash_ids

TINY = dict(
    feature_service="ranker_v1",  # the test frame has ranker_v1's columns
    buckets=512,
    emb_dim=8,
    cross_layers=2,
    deep="32",
    batch_size=64,
    epochs=4,
    patience=2,
    tensorboard=False,
)


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
    assert np.allclose(enc["dense"].numpy().mean(0), 0, atol=1e-4)
    # Stable hashing: same ids, same buckets, in any process; 0 only for missing.
    assert (hash_ids(["a", "b", None], 256) == hash_ids(["a", "b", None], 256)).all()
    assert hash_ids([None], 256)[0] == 0 and hash_ids(["a"], 256)[0] > 0


def test_tiny_training_report_and_determinism(frame, tmp_path):
    truth = frame[["event_id", "p_click"]]
    a = train(RankerTrainArgs(out_dir=str(tmp_path), **TINY), frame=frame, truth=truth)
    b = train(RankerTrainArgs(out_dir=str(tmp_path), **TINY), frame=frame, truth=truth)
    np.testing.assert_array_equal(a["bundle"].predict(frame), b["bundle"].predict(frame))
    report = json.loads(a["report"].read_text())
    assert set(report["test"]) == {"model", "popularity", "logreg", "oracle"}
    for name in ("model", "popularity", "logreg"):
        assert {"auc", "logloss", "pr_auc", "ndcg@10", "recall@20"} <= set(report["test"][name])
    assert report["test"]["oracle"]["events_matched"] == report["lineage"]["rows"]["test"]
    assert report["test"]["model"]["auc"] > 0.6
    assert (a["folder"] / "pr_curve.png").stat().st_size > 0
    assert report["feature_service"] == "ranker_v1" and report["world_size"] == 1
    assert len(report["history"]) <= TINY["epochs"]


def test_store_round_trip_predicts_identically(frame, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))
    from training.bundles import info, load_ranker, save_ranker

    res = train(RankerTrainArgs(out_dir=str(tmp_path), **{**TINY, "epochs": 1}), frame=frame)
    before = res["bundle"].predict(frame)
    tag = save_ranker(res["bundle"], res["test"], res["lineage"])
    np.testing.assert_array_equal(load_ranker(tag).predict(frame), before)
    meta = info(tag)
    assert meta["metadata"]["feature_service"] == "ranker_v1"
    assert set(meta["lineage"]["time_range"]) == {"train", "val", "test"}
    assert meta["metrics"]["model"]["auc"] == pytest.approx(res["test"]["model"]["auc"])


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

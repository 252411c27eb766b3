"""Training frames written once (features/frames.py): a frame built in small chunks equals the
one built at once, the Parquet file carries its lineage, and under torchrun rank 0 builds the
frame once while the other rank reads the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import _drop, _url_for, make_database

from features import feast_store, pipeline
from features.frames import build_frame, frame_table, read_frame, read_frame_info
from features.labels import labels_sql
from features.similarity import VectorBatch, cosine
from governance.db import transaction
from governance.settings import Settings
from tests import feature_events as synthetic

ROOT = Path(__file__).resolve().parents[1]
END = synthetic.T0 + timedelta(days=11)


@pytest.fixture(scope="module")
def env(template_database, tmp_path_factory):
    name = make_database(template_database)
    settings = Settings(
        database_url=_url_for(name),
        redis_url=None,
        data_dir=tmp_path_factory.mktemp("frames") / "data",
    )
    synthetic.load(settings, n_sessions=150, days=10, n_items=40, n_users=20)
    pipeline.run(settings, embeddings=True)
    fs = feast_store.apply(settings)
    yield {"settings": settings, "store": fs}
    _drop(name)


def test_cosine_lists_and_matrices_agree():
    rows_a = [[1.0, 0.0], None, [], [3.0, 4.0], [0.0, 0.0], [1.0, 2.0, 3.0]]
    rows_b = [[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 0.0], [1.0, 2.0, 3.0]]
    got = cosine(rows_a, rows_b)
    # missing, empty, zero-norm and other-length vectors give 0.0
    assert got == pytest.approx([2**-0.5, 0.0, 0.0, 1.0, 0.0, 0.0])
    batch = VectorBatch.from_rows(rows_a)
    assert batch.valid.tolist() == [True, False, False, True, True, False]
    assert cosine(batch, VectorBatch.from_rows(rows_b)) == got


def test_chunked_frame_equals_frame_at_once(env):
    entity = labels_sql("ranker_v2", synthetic.T0, END)
    at_once = frame_table(env["store"], "ranker_v2", entity, chunk_rows=10**6)
    chunked = frame_table(env["store"], "ranker_v2", entity, chunk_rows=97)
    assert at_once.num_rows > 5 * 97  # really several chunks
    assert chunked.equals(at_once)
    assert "user_item_cosine" in at_once.column_names
    assert "title_embedding" not in at_once.column_names  # an input, not a listed feature


def test_frame_file_holds_frame_and_lineage(env, tmp_path):
    path = tmp_path / "frame.parquet"
    info = build_frame(env["store"], "ranker_v2", path, start=synthetic.T0, end=END, chunk_rows=200)
    assert path.exists() and not path.with_name("frame.parquet.partial").exists()
    stored = read_frame_info(path)
    assert stored == info
    assert info.rows == pq.read_metadata(path).num_rows and info.chunks == -(-info.rows // 200)
    assert info.feature_service == "ranker_v2" and "user_item_cosine" in info.features
    assert info.label_window == [str(synthetic.T0), str(END)]
    frame = read_frame(path)
    entity = labels_sql("ranker_v2", synthetic.T0, END)
    assert frame.equals(frame_table(env["store"], "ranker_v2", entity).to_pandas())
    with transaction(env["settings"]) as cur:
        cur.execute("SELECT DISTINCT batch_id FROM events")
        batches = {r[0] for r in cur.fetchall()}
    assert info.batch_ids and set(info.batch_ids) <= batches


@pytest.mark.slow
def test_torchrun_builds_the_frame_once(env, tmp_path):
    settings = env["settings"]
    run_env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CARTWISE_DATA_DIR": str(settings.data_dir),
        "CARTWISE_FEAST_PROJECT": settings.feast_project,
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
    }
    run_env.pop("REDIS_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.ranker",
        "--feast",
        "--feature-service",
        "ranker_v2",
        "--out-dir",
        str(tmp_path / "runs"),
        "--buckets",
        "256",
        "--emb-dim",
        "4",
        "--deep",
        "16",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--no-tensorboard",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("built by rank 0") == 1, out[-3000:]  # one query, on rank 0
    assert out.count("read by rank 1 of 2") == 1
    assert "read by rank 0" not in out
    frames = list((tmp_path / "runs").glob("ranker-*/frame.parquet"))
    assert len(frames) == 1
    info = read_frame_info(frames[0])
    report = json.loads((frames[0].parent / "report.json").read_text())
    assert report["world_size"] == 2 and report["feature_service"] == "ranker_v2"
    assert sum(report["lineage"]["rows"].values()) == info.rows
    assert report["lineage"]["batch_ids"] == info.batch_ids
    # Trained again from that file with the default --feature-service (ranker_v3): the model
    # and its report name the frame's own service, the contract the columns were read under.
    from tests.training_data import TINY_RANKER
    from training.ranker import RankerTrainArgs, train

    tiny = {k: v for k, v in TINY_RANKER.items() if k != "feature_service"} | {"epochs": 1}
    again = train(RankerTrainArgs(out_dir=str(tmp_path / "again"), frame=str(frames[0]), **tiny))
    assert RankerTrainArgs().feature_service != "ranker_v2"
    assert json.loads(again.report.read_text())["feature_service"] == "ranker_v2"
    assert again.lineage["feature_service"] == "ranker_v2"

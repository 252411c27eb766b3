"""The ranker's real path: simulate -> ingest -> feature pipeline -> Feast apply -> training set
from ranker_v1 -> train -> BentoML model store -> reload, with lineage back to the batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import feast_store, pipeline
from governance.db import transaction
from governance.ingest import ingest_online_retail, ingest_simulation
from governance.simulate import preset, simulate
from training.ranker import RankerTrainArgs, train
from training.ranker_data import frame_from_feast
from training.retail import RetailArgs, purchases_from_db, run


def _sql(settings, query, params=()):
    with transaction(settings) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return rows


def test_ranker_from_feast_round_trip(settings, tmp_path, monkeypatch):
    from training.bundles import info, load_ranker

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))
    sim = tmp_path / "sim"
    simulate(preset("tiny", seed=5), sim, progress=False)
    ingest_simulation(sim, settings=settings, progress=False)
    pipeline.run(settings, embeddings=False)
    feast_store.apply(settings)

    # A share of the lists keeps the frame at a few hundred rows.
    frame, names, lineage = frame_from_feast(settings, "ranker_v1", list_sample=0.25)
    assert 150 <= len(frame) <= 2_000, len(frame)
    assert {"ctr_7d", "item_ctr_smoothed_30d", "uc_affinity_30d", "hour_of_day"} <= set(names)
    assert 0 < frame["label"].mean() < 1

    truth = pd.read_parquet(sim / "truth" / "impressions.parquet")
    args = RankerTrainArgs(
        out_dir=str(tmp_path / "runs"),
        buckets=1024,
        emb_dim=8,
        cross_layers=2,
        deep="32",
        batch_size=64,
        epochs=3,
        tensorboard=False,
        save_model=True,
    )
    res = train(args, frame=frame, feature_names=names, truth=truth, lineage=lineage)

    spec = res.spec
    assert "position" not in spec.dense and "label" not in spec.dense
    assert "last_event_ts_s" not in spec.dense and "ctr_7d" in spec.dense
    assert {"model", "logreg", "popularity", "oracle", "oracle_position_free"} <= set(res.test)
    assert res.test["oracle"]["events_matched"] == res.lineage["rows"]["test"]
    # The position-free oracle is the ceiling of a ranker that never sees the slot.
    free = res.test["oracle_position_free"]
    assert free["events_matched"] == res.lineage["rows"]["test"]
    assert res.test["model"]["auc_fraction_of_position_free_oracle"] == pytest.approx(
        res.test["model"]["auc"] / free["auc"]
    )

    before = res.bundle.predict(frame)
    np.testing.assert_array_equal(load_ranker(res.tag).predict(frame), before)

    meta = info(res.tag)
    assert meta["metadata"]["kind"] == res.shipped
    assert meta["metadata"]["feature_service"] == "ranker_v1"
    assert meta["labels"]["feature_service"] == "ranker_v1"
    sim_batches = {
        r[0]
        for r in _sql(
            settings,
            "SELECT batch_id FROM ingest_batches WHERE "
            "source = 'simulator' AND table_name = 'events'",
        )
    }
    batch_ids = set(meta["metadata"]["batch_ids"])
    # Three simulated days: the impressions of every daily events batch are in the frame.
    assert batch_ids and batch_ids <= sim_batches and len(batch_ids) == len(sim_batches)
    assert meta["lineage"]["batch_ids"] == sorted(batch_ids)
    assert set(meta["metadata"]["time_range"]) == {"train", "val", "test"}
    assert meta["metadata"]["time_range"]["train"][0] <= meta["metadata"]["time_range"]["test"][0]
    assert meta["metrics"]["model"]["auc"] == pytest.approx(res.test["model"]["auc"])


def test_retail_purchases_from_db_excludes_returns(settings, tmp_path):
    ingest_online_retail(
        Path(__file__).parent / "data" / "online_retail_sample.csv.gz", settings=settings
    )
    p = purchases_from_db(settings)
    n_purchases, n_returns = _sql(
        settings,
        """
        SELECT count(*) FILTER (WHERE event_type = 'purchase'),
               count(*) FILTER (WHERE event_type = 'return') FROM events""",
    )[0]
    assert len(p) == n_purchases > 0 and n_returns > 0
    assert purchases_from_db(settings, source="simulator").empty
    res = run(p, RetailArgs(out_dir=str(tmp_path)))
    assert res["lineage"]["batch_ids"] and res["lineage"]["rows"] == n_purchases
    assert set(res["methods"]) == {"recent_popularity", "own_top_popularity", "copurchase_repeat"}

"""The ranker's data: its point-in-time frame from Feast (written once, with lineage), the
time split, and the numeric clean-up of Feast's nullable integers.

The one place the ranker job touches Feast; `training.ranker` trains on what this returns,
and `training.retrain` and `training.ranker_ceiling` read their frames through it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.feast_store import get_store, set_env
from features.frames import build_frame, read_frame
from features.labels import labels_sql
from governance.db import transaction
from training.bundles import RANKER_FEATURE_SERVICE


def impression_window(settings=None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, last] clean impression time, end made exclusive by one microsecond."""
    with transaction(settings) as cur:
        cur.execute(
            "SELECT min(event_ts), max(event_ts) FROM events "
            "WHERE event_type = 'impression' AND NOT is_bot"
        )
        lo, hi = cur.fetchone()
    if lo is None:
        raise SystemExit("no clean impressions in the database: ingest a simulation first")
    return pd.Timestamp(lo), pd.Timestamp(hi) + pd.Timedelta(microseconds=1)


def frame_from_feast(
    settings=None,
    feature_service: str = RANKER_FEATURE_SERVICE,
    *,
    start=None,
    end=None,
    list_sample: float = 1.0,
    repo_path: str | None = None,
    path: str | Path | None = None,
):
    """The one place that touches Feast: the point-in-time frame of the service, written once
    as Parquet at `path` (a temporary file when None) by the set-based path, with the lineage
    of its labels (window, ingest batch ids) in the file's metadata. Returns (frame, feature
    names, lineage)."""
    if repo_path:
        # Feast is heavy to import (seconds): only code that opens a store pays for it.
        from feast import FeatureStore

        set_env(settings)
        store = FeatureStore(repo_path=repo_path)
    else:
        store = get_store(settings)
    if start is None or end is None:
        lo, hi = impression_window(settings)
        start, end = start or lo, end or hi
    entity_sql = labels_sql(feature_service, start, end)
    if list_sample < 1.0:
        # hashtext is stable for a given server, so a rerun samples the same lists.
        entity_sql = (
            f"SELECT * FROM ({entity_sql}) l WHERE "
            f"(hashtext(l.list_id) & 1023) < {int(round(list_sample * 1024))}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path else Path(tmp) / "frame.parquet"
        info = build_frame(
            store,
            feature_service,
            target,
            entity=entity_sql,
            progress=not os.environ.get("TQDM_DISABLE"),
            extra={"label_window": [str(start), str(end)], "list_sample": list_sample},
        )
        frame = read_frame(target)
    lineage = frame_lineage(info)
    if path is None:
        lineage["frame"] = None  # a temporary file, gone now
    return frame, info.features, lineage


def frame_lineage(info) -> dict:
    """A frame file's lineage as the training report records it."""
    window = info.label_window or info.extra.get("label_window")
    return {
        # The frame's own service, not a default: the model's train/serve contract.
        "feature_service": info.feature_service,
        "label_window": [pd.Timestamp(t) for t in window] if window else None,
        "list_sample": info.extra.get("list_sample", 1.0),
        "batch_ids": info.batch_ids,
        "frame": info.path,
        "frame_rows": info.rows,
    }


def time_split(frame: pd.DataFrame, val_frac: float, test_frac: float, consume: bool = False):
    """Whole lists by their first timestamp: train earliest, then validation, then test.
    consume=True empties `frame` column by column as the splits take them, so the frame and
    its splits are never held whole at once (a training job's peak memory)."""
    start = frame.groupby("list_id")["event_timestamp"].min().sort_values(kind="mergesort")
    n = len(start)
    n_test, n_val = max(1, int(round(n * test_frac))), max(1, int(round(n * val_frac)))
    parts = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    which = frame["list_id"].map(dict(zip(start.index, parts))).to_numpy()
    masks = {k: which == k for k in ("train", "val", "test")}
    if consume:
        columns: dict[str, dict[str, pd.Series]] = {k: {} for k in masks}
        for c in list(frame.columns):
            col = frame.pop(c)
            for k, mask in masks.items():
                columns[k][c] = col[mask].reset_index(drop=True)
            del col
        out = {k: pd.DataFrame(v, copy=False) for k, v in columns.items()}
    else:
        out = {k: frame[mask].reset_index(drop=True) for k, mask in masks.items()}
    ranges = {k: [v["event_timestamp"].min(), v["event_timestamp"].max()] for k, v in out.items()}
    return out, ranges


def numeric_objects(frame: pd.DataFrame, copy: bool = True) -> pd.DataFrame:
    """Feast hands back nullable integer features as object columns of ints and None; made
    float (NaN) here so they are standardised as numbers rather than hashed as strings.
    copy=False converts the caller's frame in place (a training job that owns its frame need
    not hold two of it at once)."""
    out = frame.copy() if copy else frame
    for c in out.columns:
        if out[c].dtype == object:
            sample = out[c].dropna().head(200)
            if len(sample) and all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                for v in sample
            ):
                out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out

"""The ranker job's bounded-memory frame handling gives the same data as the plain path:
a frame read from its file (strings as categoricals, emptied into its splits column by
column, encoded in slices) trains exactly as the same frame handed over in memory."""

import json

import numpy as np
import pandas as pd
import torch

from tests.training_data import TINY_RANKER, ranker_frame
from training.ranker import RankerTrainArgs, encode_in_chunks, train
from training.ranker_data import time_split
from training.ranker_model import FeatureSpec

TINY = {**TINY_RANKER, "epochs": 2, "n_boot": 20}


def test_consuming_time_split_equals_the_copying_one():
    frame = ranker_frame(n_lists=60, seed=3)
    copied, ranges = time_split(frame, 0.2, 0.2)
    emptied = frame.copy()
    consumed, ranges_c = time_split(emptied, 0.2, 0.2, consume=True)
    assert emptied.shape[1] == 0  # the frame gave up every column
    assert ranges == ranges_c
    for k in copied:
        pd.testing.assert_frame_equal(copied[k], consumed[k])


def test_encoding_in_slices_equals_encoding_at_once():
    frame = ranker_frame(n_lists=60, seed=4)
    frame.loc[frame.index[::7], "user_item_cosine"] = np.nan  # nulls in some slices only
    spec = FeatureSpec.discover(frame, 256)
    whole, sliced = spec.encode(frame), encode_in_chunks(spec, frame, rows=37)
    assert whole.keys() == sliced.keys()
    for k in whole:
        assert torch.equal(whole[k], sliced[k]), k


def test_a_frame_read_from_its_file_trains_as_the_same_frame_in_memory(tmp_path):
    frame = ranker_frame(n_lists=120, seed=1)
    path = tmp_path / "frame.parquet"
    frame.to_parquet(path)
    in_memory = train(RankerTrainArgs(out_dir=str(tmp_path / "a"), **TINY), frame=frame.copy())
    from_file = train(RankerTrainArgs(out_dir=str(tmp_path / "b"), frame=str(path), **TINY))
    assert from_file.spec.sparse == in_memory.spec.sparse
    assert from_file.spec.mean == in_memory.spec.mean
    assert from_file.test == in_memory.test
    a, b = (json.loads(r.report.read_text()) for r in (in_memory, from_file))
    assert a["history"] == b["history"] and a["ship_gate"] == b["ship_gate"]

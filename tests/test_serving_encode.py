"""The ranker's serving encode (ids hashed through kept buckets) equals the vectorised one.

`FeatureSpec.encode` is the train/serve contract: serving must give the model the very
numbers training gave it. Small frames hash their ids through `hash_ids_cached`; these tests
feed both paths the awkward values a served frame can hold (nulls of every kind, strings the
cache has never seen, numbers and booleans in id columns, extreme dense values) and require
equal tensors, from a cold cache and from a warm one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from training import ranker_model
from training.ranker_model import FeatureSpec, hash_ids, hash_ids_cached

AWKWARD_IDS = [
    "u1",
    "",
    None,
    float("nan"),
    np.nan,
    pd.NA,
    pd.NaT,
    "Ünïcødé ☕",
    "x" * 10_000,
    "1",
    1,
    1.0,
    True,
    0,
    np.int64(7),
    np.str_("numpy-str"),
    "nan",
    "None",
    "u1",  # a repeat within the same array
]


@pytest.fixture(autouse=True)
def cold_cache(monkeypatch):
    # Each test starts from an empty cache, and nothing it keeps leaks into another test.
    monkeypatch.setattr(ranker_model, "_BUCKETS_OF", {})


def test_cached_hash_equals_hash_ids_cold_and_warm():
    values = np.array(AWKWARD_IDS, dtype=object)
    want = hash_ids(values, 1024)
    assert (want[[2, 3, 4, 5, 6]] == 0).all() and (want != 0).sum() == len(values) - 5
    cold = hash_ids_cached(values, 1024)
    np.testing.assert_array_equal(cold, want)
    kept = ranker_model._BUCKETS_OF[1024]
    assert "u1" in kept and "Ünïcødé ☕" in kept and len(kept) > 5  # strings were kept
    np.testing.assert_array_equal(hash_ids_cached(values, 1024), want)  # from the cache
    # Another bucket count is another cache, and the same strings get their own buckets.
    np.testing.assert_array_equal(hash_ids_cached(values, 2**15), hash_ids(values, 2**15))
    # The cache holds exactly what hash_ids gives a string alone.
    for s, b in kept.items():
        assert b == hash_ids(np.array([s], dtype=object), 1024)[0], s


def test_a_full_cache_starts_afresh(monkeypatch):
    monkeypatch.setattr(ranker_model, "_BUCKETS_OF_MAX", 4)
    values = np.array([f"id{i}" for i in range(10)], dtype=object)
    np.testing.assert_array_equal(hash_ids_cached(values, 64), hash_ids(values, 64))
    assert len(ranker_model._BUCKETS_OF[64]) <= 10
    more = np.array([f"other{i}" for i in range(3)], dtype=object)
    np.testing.assert_array_equal(hash_ids_cached(more, 64), hash_ids(more, 64))
    assert len(ranker_model._BUCKETS_OF[64]) == 3  # cleared before growing past the bound


def _training_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ctr = rng.random(n)
    ctr[rng.random(n) < 0.3] = np.nan  # nulls in training: a missing indicator
    return pd.DataFrame(
        {
            "user_id": [f"u{i % 17}" for i in range(n)],
            "item_id": [f"i{i % 41}" for i in range(n)],
            "item_category": [f"c{i % 5}" for i in range(n)],
            "top_category_1": [None if i % 4 == 0 else f"c{i % 3}" for i in range(n)],
            "ctr_7d": ctr,
            "clicks_7d": rng.integers(0, 50, n),
            "item_price": rng.lognormal(3, 1, n),
            "label": rng.integers(0, 2, n),
        }
    )


def _served_frame() -> pd.DataFrame:
    """What serving can hand the spec: unseen ids and categories, nulls of every kind in id
    and dense columns, extreme and non-finite dense values, booleans, a missing column."""
    n = len(AWKWARD_IDS)
    return pd.DataFrame(
        {
            "user_id": AWKWARD_IDS,
            "item_id": list(reversed(AWKWARD_IDS)),
            "item_category": ["c1", "never-seen", None, *["c2"] * (n - 3)],
            "top_category_1": [np.nan, "c0", "", *["brand-new"] * (n - 3)],
            "ctr_7d": [None, math.inf, -math.inf, 1e308, -1e308, 0.5, *[np.nan] * (n - 6)],
            "clicks_7d": [2**62, -(2**62), 0, True, False, *[3] * (n - 5)],
            # item_price is missing entirely: the spec sees it as null (ranker_input adds it).
        }
    ).assign(item_price=None)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def test_serving_encode_equals_the_vectorised_encode():
    spec = FeatureSpec.discover(_training_frame(), buckets=1024)
    assert set(spec.sparse) >= {"user_id", "item_id", "item_category", "top_category_1"}
    assert "ctr_7d" in spec.missing and spec.clip
    for frame in (_training_frame(seed=1), _served_frame()):
        want = spec.encode(frame, cached_ids=False)
        _equal(spec.encode(frame, cached_ids=True), want)  # cold cache
        _equal(spec.encode(frame, cached_ids=True), want)  # warm cache
        _equal(spec.encode(frame), want)  # the default for a small frame: cached
    # The awkward ids really were awkward: nulls in bucket 0, everything else hashed.
    ids = spec.encode(_served_frame())["ids"]
    assert (ids[:, spec.sparse.index("user_id")] == 0).sum() == 5


def test_big_frames_stay_vectorised(monkeypatch):
    spec = FeatureSpec.discover(_training_frame(), buckets=1024)
    monkeypatch.setattr(ranker_model, "CACHED_IDS_MAX_ROWS", 10)
    spec.encode(_training_frame(n=50))
    assert ranker_model._BUCKETS_OF == {}  # the cache was never touched
    spec.encode(_training_frame(n=10))
    assert ranker_model._BUCKETS_OF[1024]


def test_ranker_input_numbers_object_columns_and_adds_missing_ones():
    """What the store hands serving for an unknown user: object columns of None (and a
    numeric string), a column dropped from the service; the spec gets numbers and nulls."""
    from serving.features import ranker_input

    spec = FeatureSpec.discover(_training_frame(), buckets=1024)
    served = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "item_category": ["c1", None],
            "ctr_7d": [None, "0.25"],  # object: a null and a number as text
            "clicks_7d": [3, 4],
        }
    )
    frame = ranker_input(served, spec)
    assert frame["ctr_7d"].dtype == np.float64 and frame["ctr_7d"].iloc[1] == 0.25
    assert np.isnan(frame["ctr_7d"].iloc[0])
    assert frame["top_category_1"].isna().all() and frame["item_price"].isna().all()
    assert served["ctr_7d"].dtype == object  # the caller's frame is not changed
    enc = spec.encode(frame)
    assert enc["dense"].shape == (2, spec.dense_width) and torch.isfinite(enc["dense"]).all()

"""The set-based point-in-time path (`build_training_set(..., method="lateral")`, bounded
memory: features/frames.py) returns the same rows and values as Feast's stock
`get_historical_features`, on small synthetic data with embeddings (the similarity on-demand
views), snapshot-boundary timestamps, TTL edges, ties, missing vectors and unknown keys."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import _drop, _url_for, make_database

from features import feast_store, pipeline
from features.labels import labels_sql
from features.training_set import build_training_set
from governance.db import transaction
from governance.settings import Settings
from tests import feature_events as synthetic

END = synthetic.T0 + timedelta(days=11)


@pytest.fixture(scope="module")
def env(template_database, tmp_path_factory):
    name = make_database(template_database)
    settings = Settings(
        database_url=_url_for(name),
        redis_url=None,
        data_dir=tmp_path_factory.mktemp("pit") / "data",
    )
    catalog = synthetic.load(settings, n_sessions=150, days=10, n_items=40, n_users=20)
    pipeline.run(settings, embeddings=True)
    fs = feast_store.apply(settings)
    yield {"settings": settings, "store": fs, "catalog": catalog}
    _drop(name)


def _norm(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(float(x) for x in v)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


# On-demand inputs that no service lists: the stock frame carries them, the set-based one not.
ODFV_ONLY_INPUTS = {
    "title_embedding",
    "recent_items_embedding",
    "q_top_category_1",
    "q_top_category_1_share",
    "q_top_category_2",
    "q_top_category_2_share",
}


def assert_same(stock: pd.DataFrame, fast: pd.DataFrame) -> None:
    """Same rows, same order, same values for every column of the set-based frame."""
    assert set(stock.columns) - set(fast.columns) <= ODFV_ONLY_INPUTS
    assert set(fast.columns) <= set(stock.columns)
    assert len(stock) == len(fast)
    for col in fast.columns:
        a, b = stock[col], fast[col]
        if col == "event_timestamp":  # stock hands back naive UTC, the frame aware UTC
            a = pd.to_datetime(a, utc=True)
        if a.dtype == object or b.dtype == object:
            assert [_norm(v) for v in a] == [_norm(v) for v in b], col
        else:
            pd.testing.assert_series_equal(
                a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, obj=col
            )


@pytest.mark.parametrize("service", ["ranker_v1", "ranker_v2", "ranker_v3", "intent_v1"])
def test_lateral_matches_stock_on_labels(env, service):
    kw = dict(start=synthetic.T0, end=END)
    stock = build_training_set(env["store"], service, method="stock", **kw)
    fast = build_training_set(env["store"], service, method="lateral", **kw)
    assert len(stock) > 50
    assert_same(stock, fast)
    feats = [c for c in stock.columns if c in ("ctr_7d", "item_ctr_smoothed_30d", "searches_30d")]
    assert feats and stock[feats].notna().any().all()  # the join found rows, not only nulls
    if "user_item_cosine" in fast:  # the similarity is really computed, and sometimes unknown
        assert (fast["user_item_cosine"] != 0).any() and (fast["user_item_cosine"] == 0).any()
    if "query_category_share" in fast:  # search rows get a relevance, recommendation rows null
        share = fast["query_category_share"]
        assert (share > 0).any() and (share == 0).any() and share.isna().any()
        assert share[fast["query"].isna()].isna().all()


def test_lateral_matches_stock_on_edge_rows(env):
    """Rows exactly at snapshot and embedding times, one second before, at and past the TTL,
    ties (the same keys and time twice), an empty embedding, unknown keys; on ranker_v2, whose
    similarity reads both embedding views."""
    with transaction(env["settings"]) as cur:
        cur.execute("SELECT user_id, event_timestamp FROM user_features ORDER BY 1, 2 LIMIT 20")
        users = cur.fetchall()
        cur.execute("SELECT item_id, event_timestamp FROM item_features ORDER BY 1, 2 LIMIT 20")
        items = cur.fetchall()
        cur.execute("SELECT user_id, event_timestamp FROM user_embeddings ORDER BY 1, 2 LIMIT 10")
        user_vectors = cur.fetchall()
        # A user whose recent-items vector is empty: the similarity is 0, not an error.
        cur.execute(
            "INSERT INTO user_embeddings (user_id, event_timestamp, recent_items_embedding) "
            "VALUES ('empty-vector', %s, '{}')",
            (users[0][1],),
        )
    cat = env["catalog"]["category"]
    rows = []
    for (u, ts), (i, _) in zip(users + user_vectors, items + items[:10]):
        for t in (
            ts,
            ts - timedelta(seconds=1),
            ts + timedelta(days=30),
            ts + timedelta(days=30, seconds=1),
            ts + timedelta(days=400),
        ):
            rows.append({"user_id": u, "item_id": i, "category": cat[i], "event_timestamp": t})
    rows += rows[:3]  # ties: the same keys at the same time, other event ids
    for user, item in (("nobody", "no-item"), ("empty-vector", items[0][0])):
        rows.append(
            {"user_id": user, "item_id": item, "category": "None", "event_timestamp": users[0][1]}
        )
    entity_df = pd.DataFrame(rows)
    entity_df["event_id"] = [f"r{k:04d}" for k in range(len(entity_df))]
    try:
        stock = build_training_set(env["store"], "ranker_v2", entity_df=entity_df, method="stock")
        fast = build_training_set(env["store"], "ranker_v2", entity_df=entity_df, method="lateral")
    finally:
        with transaction(env["settings"]) as cur:
            cur.execute("DELETE FROM user_embeddings WHERE user_id = 'empty-vector'")
    assert len(stock) == len(entity_df)
    assert_same(stock, fast)
    # the TTL edge really is exercised: some rows have features, some do not
    assert stock["ctr_7d"].notna().any() and stock["ctr_7d"].isna().any()
    cos = fast.set_index("event_id")["user_item_cosine"]
    assert (cos != 0).any() and (cos == 0).any()
    empty = entity_df.loc[entity_df["user_id"] == "empty-vector", "event_id"].iloc[0]
    assert cos[empty] == 0.0


def test_unknown_method_is_refused(env):
    with pytest.raises(ValueError):
        build_training_set(env["store"], "ranker_v1", start=synthetic.T0, end=END, method="fast")


LEGACY_RANKER_LABELS_SQL = """
SELECT i.event_id,
       (EXISTS (SELECT 1 FROM events c
                WHERE c.user_id = i.user_id AND c.event_ts >= i.event_ts
                  AND c.event_type = 'click' AND NOT c.is_bot
                  AND c.session_id = i.session_id AND c.item_id = i.item_id
                  AND c.list_id = i.list_id))::int AS label
FROM events i JOIN items it ON it.item_id = i.item_id
WHERE i.event_type = 'impression' AND NOT i.is_bot
  AND i.event_ts >= %(start)s AND i.event_ts < %(end)s
ORDER BY 1
"""


def test_ranker_labels_equal_the_per_impression_exists(env):
    """The grouped-clicks label query == the old per-impression EXISTS, also on a window
    that starts mid-period (clicks after the window's end count)."""
    starts = [synthetic.T0, synthetic.T0 + timedelta(days=4)]
    with transaction(env["settings"]) as cur:
        for start, end in ((starts[0], END), (starts[1], starts[1] + timedelta(days=2))):
            cur.execute(
                f"SELECT event_id, label FROM ({labels_sql('ranker_v2', start, end)}) s ORDER BY 1"
            )
            new = cur.fetchall()
            cur.execute(LEGACY_RANKER_LABELS_SQL, {"start": start, "end": end})
            old = cur.fetchall()
            assert new == old and 0 < sum(r[1] for r in new) < len(new)

"""Feast over the feature tables: point-in-time training sets without leakage, materialisation
to SQLite and Redis, push to online, train/serve consistency, title embeddings.

One database for the module (Feast apply + MiniLM load are the slow parts)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from conftest import _drop, _url_for, make_database

from features import feast_store, pipeline
from features.consistency import check, check_all, sample_entities
from features.embeddings import update_item_embeddings
from features.realtime import push_events
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
        data_dir=tmp_path_factory.mktemp("feast") / "data",
    )
    catalog = synthetic.load(settings, n_sessions=250, days=10)
    report = pipeline.run(settings, embeddings=True)
    fs = feast_store.apply(settings)
    yield {"settings": settings, "store": fs, "catalog": catalog, "report": report}
    _drop(name)


def _sql(settings, query, params=()):
    with transaction(settings) as cur:
        cur.execute(query, params)
        rows = cur.fetchall() if cur.description else None
    return rows


def test_training_set_point_in_time_without_leakage(env):
    settings, fs = env["settings"], env["store"]
    df = build_training_set(fs, "ranker_v1", start=synthetic.T0, end=END)
    n_impressions = _sql(
        settings, "SELECT count(*) FROM events WHERE event_type = 'impression' AND NOT is_bot"
    )[0][0]
    assert len(df) == n_impressions
    for col in (
        "event_id",
        "event_timestamp",
        "user_id",
        "item_id",
        "list_id",
        "position",
        "label",
        "ctr_7d",
        "item_ctr_smoothed_30d",
        "uc_affinity_30d",
        "session_clicks",
        "hour_of_day",
        "price_to_user_avg",
        "user_item_cosine",
    ):
        assert col in df.columns, col
    assert 0 < df["label"].mean() < 1

    # No feature counts anything at or after its label: clicks_30d never exceeds the user's
    # clean clicks strictly before the impression.
    before = pd.DataFrame(
        _sql(
            settings,
            """
        SELECT i.event_id, count(c.event_id) FROM events i
        LEFT JOIN events c ON c.user_id = i.user_id AND c.event_type = 'click'
             AND NOT c.is_bot AND c.event_ts < i.event_ts
        WHERE i.event_type = 'impression' AND NOT i.is_bot GROUP BY i.event_id""",
        ),
        columns=["event_id", "clicks_before"],
    )
    m = df.merge(before, on="event_id")
    assert (m["clicks_30d"].fillna(0) <= m["clicks_before"]).all()

    # A feature row stamped after a label's time never reaches it; one stamped at it does.
    row = df[df["label"] == 1].iloc[len(df[df["label"] == 1]) // 2]
    t = pd.Timestamp(row["event_timestamp"]).to_pydatetime()
    user, item = row["user_id"], row["item_id"]
    entity = pd.DataFrame(
        [{"user_id": user, "item_id": item, "category": row["category"], "event_timestamp": t}]
    )
    copy_user = """INSERT INTO user_features SELECT user_id, %s, now(), {v}, clicks_1h,
        ctr_1h, impressions_1d, clicks_1d, ctr_1d, impressions_7d, clicks_7d, ctr_7d,
        impressions_30d, clicks_30d, ctr_30d, purchases_30d, units_30d, spend_30d,
        avg_price_paid_30d, last_event_ts_s, top_category_1, top_category_1_share,
        top_category_2, top_category_2_share, top_category_3, top_category_3_share,
        most_active_hour, active_hour_share, active_hours_count
        FROM user_features WHERE user_id = %s ORDER BY event_timestamp LIMIT 1"""
    _sql(settings, copy_user.format(v=999999), (t + timedelta(microseconds=1), user))
    _sql(
        settings,
        """INSERT INTO user_session_features VALUES
        ('leak', %s, %s, 'leak', 99, 99, 99, 99, 99, 'x', 'y')""",
        (user, t + timedelta(microseconds=1)),
    )
    after = build_training_set(fs, "ranker_v1", entity_df=entity).iloc[0]
    assert after["impressions_1h"] != 999999 and after["session_clicks"] != 99
    _sql(settings, copy_user.format(v=888888), (t, user))
    at = build_training_set(fs, "ranker_v1", entity_df=entity).iloc[0]
    assert at["impressions_1h"] == 888888
    _sql(settings, "DELETE FROM user_features WHERE impressions_1h IN (888888, 999999)")
    _sql(settings, "DELETE FROM user_session_features WHERE event_id = 'leak'")

    intent = build_training_set(fs, "intent_v1", start=synthetic.T0, end=END)
    assert {"query", "searches_30d", "hour_of_day"} <= set(intent.columns) and len(intent)


def _latest_user_row(settings, user):
    return _sql(
        settings,
        "SELECT clicks_30d, ctr_7d FROM user_features WHERE user_id = %s "
        "ORDER BY event_timestamp DESC LIMIT 1",
        (user,),
    )[0]


def test_materialize_sqlite_and_consistency(env):
    settings, fs = env["settings"], env["store"]
    # synthetic data lives in 2024: materialize-incremental would start at now - TTL
    fs.materialize(start_date=synthetic.T0 - timedelta(days=400), end_date=END)
    user = env["catalog"]["users"][3]
    online = fs.get_online_features(
        features=["user_stats:clicks_30d", "user_stats:ctr_7d"], entity_rows=[{"user_id": user}]
    ).to_dict()
    assert (online["clicks_30d"][0], online["ctr_7d"][0]) == _latest_user_row(settings, user)

    entities = sample_entities(settings, n=20)
    report = check(fs, entities, at=END)
    assert report["compared"] > 0 and report["mismatches"] == []
    # Every service, on-demand similarities included, online vs the training frame.
    reports = check_all(fs, settings, n=20, at=END)
    assert set(reports) == {"ranker_v1", "ranker_v2", "ranker_v3", "intent_v1"}
    for name, r in reports.items():
        assert r["compared"] > 0 and r["mismatches"] == [], (name, r["mismatches"][:3])
    assert {"user_item_cosine", "hour_of_day", "ctr_7d"} <= set(
        reports["ranker_v2"]["feature_names"]
    )
    assert "user_session" in reports["ranker_v2"]["skipped"]
    assert {"query_category_share", "query_top_category_match"} <= set(
        reports["ranker_v3"]["feature_names"]
    )
    # A changed offline value is reported.
    u = entities.iloc[0]["user_id"]
    _sql(
        settings,
        """UPDATE user_features SET ctr_30d = ctr_30d + 1 WHERE user_id = %s AND
                      event_timestamp = (SELECT max(event_timestamp) FROM user_features
                                         WHERE user_id = %s)""",
        (u, u),
    )
    report = check(fs, entities, at=END)
    assert {(m["user_id"], m["feature"]) for m in report["mismatches"]} == {(u, "ctr_30d")}
    _sql(
        settings,
        """UPDATE user_features SET ctr_30d = ctr_30d - 1 WHERE user_id = %s AND
                      event_timestamp = (SELECT max(event_timestamp) FROM user_features
                                         WHERE user_id = %s)""",
        (u, u),
    )


def test_materialize_redis(env, redis_url):
    settings = env["settings"].model_copy(update={"redis_url": redis_url})
    fs = feast_store.apply(settings)
    assert fs.config.online_store.type == "redis"
    # synthetic data lives in 2024: materialize-incremental would start at now - TTL
    fs.materialize(start_date=synthetic.T0 - timedelta(days=400), end_date=END)
    user = env["catalog"]["users"][5]
    online = fs.get_online_features(
        features=["user_stats:clicks_30d", "user_stats:ctr_7d"], entity_rows=[{"user_id": user}]
    ).to_dict()
    assert (online["clicks_30d"][0], online["ctr_7d"][0]) == _latest_user_row(settings, user)
    feast_store.apply(env["settings"])  # back to SQLite for the other tests


def test_push_is_visible_within_a_second_and_never_double_counts(env):
    settings, fs = env["settings"], env["store"]
    user = env["catalog"]["users"][7]
    item = env["catalog"]["items"][4]
    now = datetime.now(UTC)

    def event(eid, kind, ts):
        return {
            "event_id": eid,
            "user_id": user,
            "session_id": "live-1",
            "event_type": kind,
            "item_id": item,
            "event_ts": ts,
            "is_bot": False,
        }

    def online():
        return fs.get_online_features(
            features=["user_session:session_clicks", "user_session:last_viewed_items"],
            entity_rows=[{"user_id": user}],
        ).to_dict()

    def append(e):  # the caller (ingest/serving) appends to the governed table
        with transaction(settings) as cur:
            synthetic.insert_events(
                cur,
                [
                    (
                        e["event_id"],
                        user,
                        "live-1",
                        e["event_type"],
                        item,
                        None,
                        None,
                        None,
                        None,
                        None,
                        e["event_ts"],
                        False,
                    )
                ],
            )

    first = event("live-a", "click", now)
    append(first)
    t0 = time.perf_counter()
    push_events(fs, pd.DataFrame([first]), settings)
    got = online()
    assert time.perf_counter() - t0 < 1.0
    assert got["session_clicks"] == [1] and got["last_viewed_items"] == [item]
    second = event("live-b", "click", now + timedelta(seconds=5))
    append(second)
    push_events(fs, pd.DataFrame([second]), settings)
    assert online()["session_clicks"] == [2]
    # A replayed (or late) push of the first event neither adds nor rolls back.
    push_events(fs, pd.DataFrame([first]), settings)
    assert online()["session_clicks"] == [2]
    # An event not yet in the table is counted once, and only once.
    third = event("live-c", "view", now + timedelta(seconds=9))
    push_events(fs, pd.DataFrame([third, third]), settings)
    got = online()
    assert got["session_clicks"] == [2]
    # The batch pipeline writes the same state offline for the same event.
    pipeline.run(settings, embeddings=False)
    assert (
        _sql(
            settings,
            "SELECT session_clicks FROM user_session_features WHERE user_id = %s"
            " ORDER BY event_timestamp DESC LIMIT 1",
            (user,),
        )[0][0]
        == 2
    )


def test_title_embeddings_only_recomputed_on_change(env):
    settings = env["settings"]
    assert env["report"].embeddings["embedded"] == len(env["catalog"]["items"])
    dims = _sql(settings, "SELECT DISTINCT array_length(title_embedding, 1) FROM item_embeddings")
    assert dims == [(384,)]
    assert update_item_embeddings(settings) == {"embedded": 0}
    item = env["catalog"]["items"][0]
    _sql(
        settings,
        "UPDATE items SET title = 'Brand new title', updated_at = now() WHERE item_id = %s",
        (item,),
    )
    assert update_item_embeddings(settings) == {"embedded": 1}
    assert (
        _sql(settings, "SELECT count(*) FROM item_embeddings WHERE item_id = %s", (item,))[0][0]
        == 2
    )
    n = _sql(settings, "SELECT count(*) FROM user_embeddings")[0][0]
    assert n > 0


def test_views_without_ttl_reach_the_online_store_in_full(template_database, tmp_path):
    """Before: materialize-incremental started a view without TTL one year back, so titles
    older than that (every item of this 2024 shop) had embeddings offline but none online."""
    name = make_database(template_database)
    try:
        settings = Settings(database_url=_url_for(name), redis_url=None, data_dir=tmp_path)
        catalog = synthetic.load(settings, n_sessions=20, days=2)
        pipeline.run(settings, embeddings=True)
        fs = feast_store.apply(settings)
        assert fs.get_feature_view("item_title_embedding").ttl == timedelta(0)
        now = datetime.now(UTC)
        assert "item_title_embedding" in feast_store.materialize_incremental(fs, now)
        items = list(catalog["items"])
        online = fs.get_online_features(
            features=["item_title_embedding:title_embedding"],
            entity_rows=[{"item_id": i} for i in items],
        ).to_dict()
        assert all(v is not None and len(v) == 384 for v in online["title_embedding"])
        # Later runs are Feast's own incremental ones.
        assert feast_store.materialize_incremental(fs, datetime.now(UTC)) == []
    finally:
        _drop(name)


def test_materialising_a_day_at_a_time_equals_the_offline_store(env, tmp_path):
    # A separate online store, loaded one window at a time (bounded memory at scale): every
    # entity must end with its latest row, so every service agrees with the training frame.
    settings = env["settings"].model_copy(
        update={"data_dir": tmp_path / "data", "feast_project": "cartwise_by_day"}
    )
    fs = feast_store.apply(settings)
    start = synthetic.T0 - timedelta(days=2)
    # titles listed long before the shop's events: one window, then the events a day at a time
    assert (
        feast_store.materialize_chunked(
            fs, start - timedelta(days=400), start, timedelta(days=400), progress=False
        )
        == 1
    )
    windows = feast_store.materialize_chunked(fs, start, END, timedelta(days=1), progress=False)
    assert windows == 13
    user = env["catalog"]["users"][3]
    online = fs.get_online_features(
        features=["user_stats:clicks_30d", "user_stats:ctr_7d"], entity_rows=[{"user_id": user}]
    ).to_dict()
    assert (online["clicks_30d"][0], online["ctr_7d"][0]) == _latest_user_row(settings, user)
    for name, r in check_all(fs, settings, n=20, at=END).items():
        assert r["compared"] > 0 and r["mismatches"] == [], (name, r["mismatches"][:3])

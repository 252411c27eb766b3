"""Feature pipeline (SQL only, no Feast): incremental = full recompute, bots excluded, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from conftest import _drop, _url_for, make_database

from features import pipeline
from features.embeddings import write_user_embeddings
from governance.db import transaction
from governance.settings import Settings
from tests import feature_events as synthetic

TABLES = {
    "user_features": "user_id, event_timestamp",
    "item_features": "item_id, event_timestamp",
    "category_features": "category, event_timestamp",
    "user_category_features": "user_id, category, event_timestamp",
    "query_features": "query, event_timestamp",
    "user_session_features": "user_id, event_timestamp",
}


def _dump(settings) -> dict:
    out = {}
    with transaction(settings) as cur:
        for table, key in TABLES.items():
            cur.execute(f"SELECT * FROM {table} ORDER BY {key}")
            cols = [d[0] for d in cur.description]
            keep = [i for i, c in enumerate(cols) if c != "created_at"]
            out[table] = [tuple(r[i] for i in keep) for r in cur.fetchall()]
    return out


def _load(settings, seed=1, days=6.0, start=synthetic.T0, n_sessions=150, prefix="e"):
    with transaction(settings) as cur:
        catalog = synthetic.insert_catalog(cur, seed=0)
        rows = synthetic.make_events(
            catalog, n_sessions, start=start, days=days, seed=seed, prefix=prefix
        )
        synthetic.insert_events(cur, rows)
    return catalog


def test_incremental_run_equals_full_recompute(settings, database_url, template_database):
    catalog = _load(settings)
    first = pipeline.run(settings, embeddings=False)
    assert first.events > 0 and first.rows["user_features"] > 0
    assert pipeline.run(settings, embeddings=False).batches == []  # nothing new: no-op
    # Second batch overlaps the first in time (late events) and extends it.
    late = synthetic.make_events(
        catalog, 120, start=synthetic.T0 + timedelta(days=3), days=6, seed=7, prefix="late"
    )
    with transaction(settings) as cur:
        batch2 = synthetic.insert_events(cur, late)
    second = pipeline.run(settings, embeddings=False)
    assert second.batches == [batch2]
    incremental = _dump(settings)

    # The same events processed in one run on a fresh database give the same tables.
    name = make_database(template_database)
    try:
        fresh = Settings(database_url=_url_for(name), data_dir=settings.data_dir)
        with transaction(settings) as cur:
            cur.execute("SELECT * FROM events ORDER BY event_id")
            events = cur.fetchall()
        with transaction(fresh) as cur:
            synthetic.insert_catalog(cur, seed=0)
            synthetic.insert_events(cur, [tuple(r[:12]) for r in events])
        pipeline.run(fresh, embeddings=False)
        full = _dump(fresh)
        for table in TABLES:
            diff = sorted(set(full[table]) ^ set(incremental[table]))
            assert not diff, (
                table,
                [
                    (r[:2], [x for x in zip(r, s) if x[0] != x[1]])
                    for r, s in zip(diff[::2], diff[1::2])
                ][:3],
            )
    finally:
        _drop(name)


def test_windows_and_bots(settings):
    t = datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    with transaction(settings) as cur:
        synthetic.insert_catalog(cur, n_items=6, n_users=3, seed=0)
        rows = [
            ("a1", "u00000", "s1", "impression", "i00000", None, 0, "L1", None, None, t, False),
            ("a2", "u00000", "s1", "impression", "i00001", None, 1, "L1", None, None, t, False),
            (
                "a3",
                "u00000",
                "s1",
                "click",
                "i00000",
                None,
                0,
                "L1",
                None,
                None,
                t + timedelta(minutes=1),
                False,
            ),
            (
                "a4",
                "u00000",
                "s1",
                "purchase",
                "i00000",
                None,
                None,
                None,
                2,
                "10.00",
                t + timedelta(minutes=5),
                False,
            ),
            # a bot's events never count, even for the same user
            (
                "b1",
                "u00000",
                "s9",
                "click",
                "i00001",
                None,
                0,
                "L9",
                None,
                None,
                t + timedelta(minutes=2),
                True,
            ),
            (
                "b2",
                "u00001",
                "s8",
                "click",
                "i00001",
                None,
                0,
                "L8",
                None,
                None,
                t + timedelta(minutes=2),
                True,
            ),
            # next day: the 1h window is empty again, 7d still counts
            (
                "c1",
                "u00000",
                "s2",
                "impression",
                "i00002",
                None,
                0,
                "L2",
                None,
                None,
                t + timedelta(days=1),
                False,
            ),
        ]
        synthetic.insert_events(cur, rows)
    pipeline.run(settings, embeddings=False)
    with transaction(settings) as cur:
        cur.execute("""SELECT event_timestamp, impressions_1h, clicks_1h, ctr_1h, clicks_7d,
                              purchases_30d, spend_30d, avg_price_paid_30d, top_category_1,
                              last_event_ts_s
                       FROM user_features WHERE user_id = 'u00000' ORDER BY 1""")
        snaps = cur.fetchall()
        cur.execute("SELECT count(*) FROM user_features WHERE user_id = 'u00001'")
        bot_only = cur.fetchone()[0]
        cur.execute(
            "SELECT session_clicks, last_viewed_items FROM user_session_features "
            "WHERE user_id = 'u00000' ORDER BY event_timestamp"
        )
        session = cur.fetchall()
    assert bot_only == 0
    first, second = snaps
    assert first[0] == datetime(2024, 3, 1, 11, tzinfo=UTC)  # end of the hour
    assert first[1:8] == (2, 1, 0.5, 1, 1, 20.0, 10.0)
    assert first[8] == synthetic.CATEGORIES[0]
    assert first[9] == int((t + timedelta(minutes=5)).timestamp())
    assert second[1:3] == (1, 0) and second[4] == 1  # 1h window moved, 7d kept the click
    assert session == [(1, "i00000"), (1, "i00000")]  # click then purchase; bot click absent


def test_item_and_category_windows_by_hand(settings):
    """7-day and 30-day item windows and the category's 30-day totals at known snapshots."""
    t = datetime(2024, 3, 1, 10, 15, tzinfo=UTC)

    def impression(eid, item, at, clicked=False):
        rows = [(eid, "u00000", eid, "impression", item, None, 0, eid, None, None, at, False)]
        if clicked:
            rows.append(
                (
                    eid + "c",
                    "u00000",
                    eid,
                    "click",
                    item,
                    None,
                    0,
                    eid,
                    None,
                    None,
                    at + timedelta(minutes=1),
                    False,
                )
            )
        return rows

    with transaction(settings) as cur:
        synthetic.insert_catalog(cur, n_items=2 * len(synthetic.CATEGORIES), n_users=3, seed=0)
        rows = (
            impression("x1", "i00000", t, clicked=True)
            + impression("x2", "i00000", t + timedelta(days=10))
            + impression("x3", "i00000", t + timedelta(days=35), clicked=True)
            # same category as i00000 (categories cycle with the item number)
            + impression(
                "y1", f"i{len(synthetic.CATEGORIES):05d}", t + timedelta(days=10), clicked=True
            )
        )
        synthetic.insert_events(cur, rows)
    pipeline.run(settings, embeddings=False)
    with transaction(settings) as cur:
        cur.execute("""SELECT event_timestamp, item_impressions_7d, item_clicks_7d,
                              item_impressions_30d, item_clicks_30d
                       FROM item_features WHERE item_id = 'i00000' ORDER BY 1""")
        item = cur.fetchall()
        cur.execute(
            """SELECT event_timestamp, cat_impressions_30d, cat_clicks_30d
                       FROM category_features WHERE category = %s ORDER BY 1""",
            (synthetic.CATEGORIES[0],),
        )
        category = cur.fetchall()
    hour = datetime(2024, 3, 1, 11, tzinfo=UTC)
    assert item == [
        (hour, 1, 1, 1, 1),
        (hour + timedelta(days=10), 1, 0, 2, 1),  # the first day left the 7d window only
        (hour + timedelta(days=35), 1, 1, 2, 1),  # day 0 left the 30d window, day 10 is in it
    ]
    assert category == [
        (hour, 1, 1),
        (hour + timedelta(days=10), 3, 2),  # both items of the category, 30 days back
        (hour + timedelta(days=35), 3, 2),  # day 0 is out; days 10 and 35 are in
    ]


# The user-embedding definition as one SQL statement, as the pipeline ran it before it moved
# to chunked numpy means (unnest every vector into rows, avg per dimension): the oracle the
# chunked path must equal.
LEGACY_USER_EMBEDDINGS_SQL = """
SELECT user_id, ts, array_agg(v ORDER BY i)
FROM (
    SELECT r.user_id, r.ts, u.i, avg(u.v)::real AS v
    FROM (
        SELECT t.user_id, t.ts, x.item_id
        FROM _user_targets t
        CROSS JOIN LATERAL (
            SELECT e.item_id FROM events e
            WHERE e.user_id = t.user_id AND e.event_ts >= t.ts - interval '30 days'
              AND e.event_ts < t.ts AND NOT e.is_bot
              AND e.event_type IN ('view', 'click', 'add_to_cart') AND e.item_id IS NOT NULL
            ORDER BY e.event_ts DESC, e.event_id DESC LIMIT 20
        ) x
    ) r
    JOIN LATERAL (
        SELECT title_embedding FROM item_embeddings m
        WHERE m.item_id = r.item_id AND m.event_timestamp < r.ts
        ORDER BY m.event_timestamp DESC LIMIT 1
    ) m ON true
    CROSS JOIN LATERAL unnest(m.title_embedding) WITH ORDINALITY AS u(v, i)
    GROUP BY r.user_id, r.ts, u.i
) per_dim
GROUP BY user_id, ts ORDER BY 1, 2
"""


def test_user_embeddings_equal_the_legacy_sql(settings):
    """Chunked numpy means == the old unnest/avg SQL (float32, 1e-6): title versions valid
    strictly before T, items without an embedding, ties, users with no events, small chunks."""
    catalog = _load(settings, n_sessions=120)
    pipeline.run(settings, embeddings=False)
    rng = np.random.default_rng(3)
    with transaction(settings) as cur:
        cur.execute("SELECT min(event_ts), max(event_ts) FROM events")
        lo, hi = cur.fetchone()
        versions = []
        for n, item in enumerate(catalog["items"]):
            if n % 7 == 0:
                continue  # never embedded: drops out of every mean
            stamps = {lo - timedelta(days=1)} if n % 3 else set()
            stamps |= {lo + (hi - lo) * float(f) for f in rng.uniform(0, 1, size=n % 4)}
            for k, ts in enumerate(sorted(stamps)):
                vec = rng.normal(size=384).astype(np.float32)
                versions.append((item, ts, f"h{k}", (vec / np.linalg.norm(vec)).tolist()))
        cur.executemany(
            "INSERT INTO item_embeddings (item_id, event_timestamp, title_hash, "
            "title_embedding) VALUES (%s, %s, %s, %s::real[])",
            versions,
        )
        # Targets: every user snapshot, an embedding's own timestamp (strictly before T),
        # and users with no events at all.
        cur.execute(
            """CREATE TEMP TABLE _user_targets ON COMMIT DROP AS
               SELECT user_id, event_timestamp AS ts FROM user_features
               UNION SELECT u, %s::timestamptz FROM unnest(%s::text[]) u
               UNION SELECT e.user_id, m.event_timestamp FROM item_embeddings m
                     JOIN events e USING (item_id) WHERE e.event_ts < m.event_timestamp""",
            (hi, ["nobody-1", "nobody-2"]),
        )
        cur.execute(LEGACY_USER_EMBEDDINGS_SQL)
        legacy = cur.fetchall()
        cur.execute("SELECT count(*) FROM _user_targets")
        n_targets = cur.fetchone()[0]
        written = write_user_embeddings(cur, chunk=37)
        cur.execute(
            "SELECT user_id, event_timestamp, recent_items_embedding FROM user_embeddings "
            "ORDER BY 1, 2"
        )
        chunked = cur.fetchall()
    assert len(legacy) > 100 and n_targets > len(legacy)  # some targets have nothing
    assert written == len(chunked)
    assert [r[:2] for r in chunked] == [r[:2] for r in legacy]
    assert not any(r[0].startswith("nobody") for r in chunked)
    got = np.array([r[2] for r in chunked], dtype=np.float32)
    want = np.array([r[2] for r in legacy], dtype=np.float32)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6

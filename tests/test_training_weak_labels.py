"""Weak-label rules on hand-made sessions, and the same rules over the events table."""

import pandas as pd

from governance.db import transaction
from training.weak_labels import label_events, rule_counts, weak_labels

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _ev(session, sec, etype, item=None, query=None, category=None, bot=False):
    return {
        "session_id": session,
        "event_ts": T0 + pd.Timedelta(seconds=sec),
        "event_type": etype,
        "item_id": item,
        "query": query,
        "category": category,
        "is_bot": bot,
    }


def sessions():
    return pd.DataFrame(
        [
            _ev("s1", 0, "search", query="iphone 15"),
            _ev("s1", 5, "view", "i1", category="phones"),
            _ev("s1", 9, "purchase", "i1", category="phones"),
            _ev("s2", 0, "search", query="sofas"),
            _ev("s2", 3, "view", "i2", category="sofas"),
            _ev("s2", 4, "click", "i3", category="sofas"),
            _ev("s2", 8, "search", query="lamp"),  # no engagement: abstain
            _ev("s3", 0, "search", query="gift ideas"),
            _ev("s3", 1, "view", "i1", category="phones"),
            _ev("s3", 2, "view", "i2", category="sofas"),
            _ev("s3", 3, "view", "i4", category="mugs"),
            _ev("s4", 0, "search", query="bot query", bot=True),
            _ev("s4", 1, "purchase", "i1", category="phones", bot=True),
            _ev("s5", 0, "search", query="mug"),
            _ev("s5", 1, "add_to_cart", "i4", category="mugs"),
        ]
    )


def test_rules_label_and_name_each_query():
    out = label_events(sessions()).set_index("query")
    assert out.loc["iphone 15"].tolist()[:3] == ["buy_product", "phones", "buy_after_search"]
    assert out.loc["sofas"].tolist()[:3] == ["browse_category", "sofas", "browse_one_category"]
    assert out.loc["gift ideas", "rule"] == "browse_many"
    assert out.loc["gift ideas", "category"] is None
    assert out.loc["mug", "rule"] == "cart_after_search"
    assert "lamp" not in out.index and "bot query" not in out.index
    assert (out["source"] == "weak").all()


def test_intent_map_renames_for_another_taxonomy():
    out = label_events(sessions(), intent_map={"buy_product": "transactional"})
    assert "transactional" in set(out["intent"])
    assert rule_counts(out)["buy_after_search"] == 1


def test_weak_labels_from_events_table(settings):
    with transaction(settings) as cur:
        cur.execute(
            "INSERT INTO ingest_batches (source, table_name, checksum) "
            "VALUES ('test', 'events', 'x') RETURNING batch_id"
        )
        batch = cur.fetchone()[0]
        for item, cat in [("i1", "phones"), ("i2", "sofas"), ("i3", "sofas"), ("i4", "mugs")]:
            cur.execute(
                "INSERT INTO items (item_id, title, category_path, category, price, "
                "listed_at, batch_id) VALUES (%s, %s, %s, %s, 10, now(), %s)",
                (item, item, cat, cat, batch),
            )
        for n, row in sessions().iterrows():
            cur.execute(
                "INSERT INTO events (event_id, user_id, session_id, event_type, item_id, "
                "query, event_ts, is_bot, batch_id) VALUES (%s,'u',%s,%s,%s,%s,%s,%s,%s)",
                (
                    f"e{n}",
                    row.session_id,
                    row.event_type,
                    row.item_id,
                    row.query,
                    row.event_ts.to_pydatetime(),
                    row.is_bot,
                    batch,
                ),
            )
    out = weak_labels(settings)
    assert set(out["query"]) == {"iphone 15", "sofas", "gift ideas", "mug"}

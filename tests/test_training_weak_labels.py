"""Weak-label rules on hand-made sessions, and the same rules over the events table."""

import json

import pandas as pd
import pytest

from governance.db import transaction
from tests.training_data import intent_queries
from training.intent import IntentTrainArgs, train
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


@pytest.mark.parametrize("kind", ["correct", "wrong"])
def test_weak_labels_admitted_only_when_they_raise_validation_macro_f1(kind, tmp_path):
    """60 labelled queries (9 for validation) and 400 weak ones: correct weak labels raise
    the labelled validation macro-F1 and are admitted; the same queries with every intent
    rotated to the next one lower it and are refused. Both trials are reported."""
    queries = intent_queries(460, seed=0)
    data = queries.iloc[:60].reset_index(drop=True)
    weak = queries.iloc[60:].assign(source="weak", rule="buy_after_search")
    if kind == "wrong":
        intents = sorted(data["intent"].unique())
        rotate = {a: intents[(i + 1) % len(intents)] for i, a in enumerate(intents)}
        weak = weak.assign(intent=weak["intent"].map(rotate))
    args = IntentTrainArgs(out_dir=str(tmp_path), candidates=("tfidf_lr",), tensorboard=False)
    res = train(args, data=data, weak=weak.reset_index(drop=True))
    d = res.weak
    without, with_weak = d.without.val_macro_f1, d.with_weak.val_macro_f1
    assert d.admitted == (kind == "correct") == (with_weak > without)
    rows = res.lineage["rows"]
    assert rows["weak_offered"] == 400 and d.with_weak.weak_rows == 400
    assert rows["weak_in_train"] == (400 if d.admitted else 0)
    shipped = d.with_weak if d.admitted else d.without
    assert res.predictor is shipped.candidates[shipped.winner]
    report = json.loads(res.report.read_text())["weak_labels"]
    assert report["admitted"] == d.admitted and report["rules"] == {"buy_after_search": 400}
    assert report["without"]["val_intent_macro_f1"] == pytest.approx(without)
    assert report["with"]["val_intent_macro_f1"] == pytest.approx(with_weak)
    assert report["val_macro_f1_gain"] == pytest.approx(with_weak - without)

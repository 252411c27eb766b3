"""Values the database cannot store are refused per row, before the database, with a reason.

Before: a NUL character (text and JSONB refuse it), a lone surrogate (not UTF-8), price 1e10 or
"inf" (numeric(12, 2) overflows), quantity or position of 2^31 (integer overflows) made the
whole batch fail, valid siblings included, and a price of 0.001 was stored as 0.00. Each such
row now lands in quarantine with its reason, and the valid rows of the same batch are stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from governance.db import transaction
from governance.ingest import ingest_frame
from serving.events import to_raw_frame

BAD = [
    ({"event_id": "nul\x00id"}, "event_id: contains_nul"),
    ({"user_id": "\ud800user"}, "user_id: invalid_unicode"),
    ({"session_id": "s\x00"}, "session_id: contains_nul"),
    ({"price": 1e10}, "price: in_range(0.01, 9999999999.99)"),
    ({"price": "inf"}, "price: in_range(0.01, 9999999999.99)"),
    ({"price": 0.001}, "price: in_range(0.01, 9999999999.99)"),
    ({"quantity": 2**31}, "quantity: less_than_or_equal_to(2147483647)"),
    ({"quantity": 2**80}, "quantity: coerce_dtype('Int64')"),
    ({"position": 2**31}, "position: less_than_or_equal_to(2147483647)"),
]


def purchase(i: int, **kw) -> dict:
    ts = (datetime.now(UTC) - timedelta(hours=1, seconds=i)).isoformat()
    return {
        "event_id": f"v-{i}",
        "user_id": f"shop-user-{i}",
        "session_id": f"s-{i}",
        "event_type": "purchase",
        "item_id": "i1",
        "quantity": 1,
        "price": 2.5,
        "event_ts": ts,
        **kw,
    }


@pytest.fixture
def with_item(settings):
    with transaction(settings) as cur:
        cur.execute(
            "INSERT INTO ingest_batches (source, table_name, checksum, started_at) "
            "VALUES ('test', 'items', 'x', now()) RETURNING batch_id"
        )
        batch = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO items (item_id, title, category_path, category, price, listed_at, "
            "batch_id) VALUES ('i1', 'Mug', 'Home > Mugs', 'Mugs', 3, '2020-01-01', %s)",
            (batch,),
        )
    return settings


def test_unstorable_values_are_quarantined_with_reasons_and_siblings_stored(with_item):
    settings = with_item
    events = [purchase(100), *(purchase(i, **change) for i, (change, _) in enumerate(BAD))]
    events.append(purchase(101))
    result = ingest_frame("events", to_raw_frame(events), settings=settings, source="api")
    assert result.status == "loaded" and result.reconciles
    assert result.rows_loaded == 2
    reasons = {r["row_number"]: r["reasons"] for r in result.rejected}
    for i, (_change, reason) in enumerate(BAD):
        assert reason in reasons[i + 1], (i, reasons.get(i + 1))
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT event_id FROM events ORDER BY 1")
            assert [r[0] for r in cur.fetchall()] == ["v-100", "v-101"]
            cur.execute(
                "SELECT raw->>'event_id' FROM quarantine WHERE batch_id = %s AND row_number = 1",
                (result.batch_id,),
            )
            # Stored as a visible escape: the quarantined row keeps what was sent.
            assert cur.fetchone()[0] == "nul\\x00id"
    finally:
        conn.close()

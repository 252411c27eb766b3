"""Governed ingest against real PostgreSQL: validation reasons, reconciliation, idempotency,
atomicity under a killed connection, and privacy."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest

from governance.db import transaction
from governance.ingest import IngestError, ingest_file, ingest_frame, ingest_simulation
from governance.privacy import is_pseudonym, pseudonymise
from governance.schemas import CLEAN_MODELS
from governance.simulate import SimConfig, simulate

ITEMS = pd.DataFrame(
    {
        "item_id": ["I1", "I2", "I3", "I4", "I5", "I6"],
        "title": ["Acme Kettle", "Acme Pan", "Acme Pot", "Acme Wok", "Acme Lid", "Acme Tray"],
        "category_path": ["Home > Kitchen > Cookware"] * 6,
        "brand": ["Acme"] * 6,
        "price": ["20.00", "25.00", "30.00", "22.00", "18.00", "21.00"],
        "listed_at": ["2026-08-01T00:00:00Z"] * 6,
    }
)


def event(**overrides) -> dict:
    row = {
        "event_id": "e-ok",
        "user_id": "C1",
        "session_id": "s1",
        "event_type": "view",
        "item_id": "I1",
        "query": None,
        "position": None,
        "list_id": None,
        "quantity": None,
        "price": None,
        "event_ts": "2026-09-01T10:00:00Z",
    }
    row.update(overrides)
    return row


# One row per kind of bad event, with the reason it must be quarantined for.
BAD_EVENTS = {
    "event_id: not_nullable": event(event_id=None),
    "user_id: not_nullable": event(event_id="e-nouser", user_id=None),
    "event_type: isin": event(event_id="e-type", event_type="clik"),
    "price: coerce_dtype('float64')": event(
        event_id="e-price", event_type="purchase", quantity="1", price="abc"
    ),
    "price: greater_than(0)": event(
        event_id="e-negprice", event_type="purchase", quantity="1", price="-3"
    ),
    "quantity: greater_than(0)": event(
        event_id="e-zeroq", event_type="purchase", quantity="0", price="3"
    ),
    "event_ts: coerce_dtype": event(event_id="e-ts", event_ts="not a date"),
    "timestamp_in_future": event(event_id="e-future", event_ts="2099-01-01T00:00:00Z"),
    "timestamp_before_shop_opened": event(event_id="e-old", event_ts="2001-01-01T00:00:00Z"),
    "unknown_item": event(event_id="e-unknown", item_id="NOPE"),
    "quantity_and_price_required_for_purchase_or_return": event(
        event_id="e-noqty", event_type="purchase"
    ),
    "list_and_position_required_for_impression": event(event_id="e-imp", event_type="impression"),
    "item_id_required_unless_search": event(event_id="e-noitem", item_id=None),
    "query_required_for_search": event(event_id="e-noq", event_type="search", item_id=None),
}
GOOD_EVENTS = [
    event(event_id="g1"),
    event(
        event_id="g2",
        event_type="search",
        item_id=None,
        query="red kettle",
        event_ts="2026-09-01T10:00:01Z",
    ),
    event(
        event_id="g3",
        event_type="impression",
        list_id="L1",
        position="0",
        query="red kettle",
        event_ts="2026-09-01T10:00:02Z",
    ),
    event(
        event_id="g4",
        event_type="click",
        list_id="L1",
        position="0",
        event_ts="2026-09-01T10:00:05Z",
    ),
    event(
        event_id="g5",
        event_type="purchase",
        quantity="2",
        price="19.99",
        event_ts="2026-09-01T10:03:00Z",
    ),
]


def rows(settings, sql, args=()):
    with transaction(settings) as cur:
        cur.execute(sql, args)
        return cur.fetchall()


@pytest.fixture
def with_items(settings):
    result = ingest_frame("items", ITEMS, settings=settings, source="test")
    assert result.rows_loaded == len(ITEMS)
    return settings


def test_each_bad_row_is_quarantined_with_its_reason_and_good_rows_load(with_items):
    settings = with_items
    raw = pd.DataFrame(GOOD_EVENTS + list(BAD_EVENTS.values()))
    result = ingest_frame("events", raw, settings=settings, source="test")

    assert result.rows_loaded == len(GOOD_EVENTS)
    assert result.rows_quarantined == len(BAD_EVENTS)
    loaded = {r[0] for r in rows(settings, "SELECT event_id FROM events")}
    assert loaded == {e["event_id"] for e in GOOD_EVENTS}
    stored = rows(
        settings,
        "SELECT row_number, reasons FROM quarantine WHERE batch_id = %s",
        (result.batch_id,),
    )
    by_position = dict(stored)
    for position, expected in enumerate(BAD_EVENTS, start=len(GOOD_EVENTS)):
        assert any(expected in reason for reason in by_position[position]), (
            expected,
            by_position[position],
        )


def test_items_price_outlier_and_empty_title_are_quarantined(settings):
    raw = pd.concat(
        [
            ITEMS,
            pd.DataFrame(
                [
                    {**ITEMS.iloc[0].to_dict(), "item_id": "OUT", "price": "5000"},
                    {**ITEMS.iloc[0].to_dict(), "item_id": "NOTITLE", "title": ""},
                ]
            ),
        ],
        ignore_index=True,
    )
    result = ingest_frame("items", raw, settings=settings, source="test")
    reasons = {r["raw"]["item_id"]: r["reasons"] for r in result.rejected}
    assert reasons["OUT"] == ["price_outlier_in_category"]
    assert reasons["NOTITLE"] == ["title: not_nullable"]
    assert result.rows_loaded == len(ITEMS)


def test_duplicates_are_counted_not_stored_twice(with_items):
    settings = with_items
    exact = event(event_id="d1")
    near = event(event_id="d2", event_ts="2026-09-01T10:00:01Z")  # same user/item/type 1 s later
    later = event(event_id="d3", event_ts="2026-09-01T10:05:00Z")  # a real second view
    result = ingest_frame(
        "events", pd.DataFrame([exact, exact, near, later]), settings=settings, source="t"
    )
    assert (result.rows_loaded, result.rows_duplicate) == (2, 2)
    assert result.rule_hits["exact_duplicate"] == 1 and result.rule_hits["near_duplicate"] == 1


@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(
        SimConfig(seed=11, events=20_000, days=2, n_users=1_200, n_items=150), out, progress=False
    )
    return out


def test_dirty_simulation_reconciles_and_every_dirty_row_is_accounted_for(settings, tiny_sim):
    results = ingest_simulation(tiny_sim, settings=settings, progress=False)
    for r in results:
        assert r.status == "loaded" and r.reconciles, r.summary()
    stored = rows(
        settings,
        """SELECT sum(rows_read), sum(rows_loaded + rows_quarantined + rows_duplicate)
                               FROM ingest_batches WHERE status = 'loaded'""",
    )[0]
    assert stored[0] == stored[1]
    # Nothing lost: every line of every file is a loaded row, a quarantined row or a duplicate.
    for r, path in zip(results[3:], sorted((tiny_sim / "events").glob("*.csv.gz"))):
        with gzip.open(path, "rt") as fh:
            assert sum(1 for _ in fh) - 1 == r.rows_read

    truth = pd.read_parquet(tiny_sim / "truth" / "dirty.parquet")
    quarantined = {
        (q[0], q[1])
        for q in rows(
            settings,
            """
        SELECT b.file_name, q.row_number
        FROM quarantine q JOIN ingest_batches b USING (batch_id)""",
        )
    }
    must_quarantine = truth[
        ~truth["kind"].isin(["exact_duplicate", "near_duplicate", "late_event"])
    ]
    missing = [
        (f, ln, k)
        for f, ln, k in zip(
            must_quarantine["file"], must_quarantine["line"], must_quarantine["kind"]
        )
        if (Path(f).name, ln) not in quarantined
    ]
    assert missing == []
    duplicates_injected = truth["kind"].isin(["exact_duplicate", "near_duplicate"]).sum()
    duplicates_found = sum(r.rows_duplicate for r in results if r.table == "events")
    assert duplicates_found >= duplicates_injected


def test_loaded_tables_are_analysed_for_the_planner(settings, tiny_sim):
    # Without fresh statistics the label query was planned for a handful of impressions
    # and ran a quadratic nested loop (3M events); after ingest the planner sees every row.
    ingest_simulation(tiny_sim, settings=settings, progress=False)
    for table in ("events", "items", "users"):
        ((planned, stored),) = rows(
            settings,
            f"SELECT (SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass), "
            f"(SELECT count(*) FROM {table})",
        )
        assert planned == stored, table


def test_reingesting_the_same_file_changes_nothing(settings, tiny_sim):
    first = ingest_simulation(tiny_sim, settings=settings, progress=False)
    before = rows(
        settings,
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM quarantine), "
        "(SELECT count(*) FROM ingest_batches)",
    )
    again = ingest_simulation(tiny_sim, settings=settings, progress=False)
    after = rows(
        settings,
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM quarantine), "
        "(SELECT count(*) FROM ingest_batches)",
    )
    assert before == after
    assert all(r.status == "already_loaded" for r in again)
    assert [r.batch_id for r in again] == [r.batch_id for r in first]


def test_the_same_events_in_a_new_file_are_duplicates_not_new_rows(with_items, tmp_path):
    settings = with_items
    first = ingest_frame("events", pd.DataFrame(GOOD_EVENTS), settings=settings, source="t")
    resent = pd.DataFrame(GOOD_EVENTS + [event(event_id="g-new", event_ts="2026-09-01T11:00:00Z")])
    second = ingest_frame("events", resent, settings=settings, source="t")
    assert first.rows_loaded == len(GOOD_EVENTS)
    assert (second.rows_loaded, second.rows_duplicate) == (1, len(GOOD_EVENTS))
    assert second.rule_hits["already_loaded"] == len(GOOD_EVENTS)


def test_connection_killed_mid_batch_leaves_nothing_and_rerun_completes(with_items):
    settings = with_items
    raw = pd.DataFrame(GOOD_EVENTS + [BAD_EVENTS["unknown_item"]])

    def kill_own_backend(conn) -> None:
        pid = conn.get_backend_pid()
        with transaction(settings) as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(IngestError, match="rolled back"):
        ingest_frame("events", raw, settings=settings, source="t", before_commit=kill_own_backend)
    assert rows(settings, "SELECT count(*) FROM events")[0][0] == 0
    assert rows(settings, "SELECT count(*) FROM quarantine")[0][0] == 0
    statuses = [
        r[0] for r in rows(settings, "SELECT status FROM ingest_batches WHERE table_name='events'")
    ]
    assert statuses == ["failed"]

    rerun = ingest_frame("events", raw, settings=settings, source="t")
    assert (rerun.status, rerun.rows_loaded, rerun.rows_quarantined) == (
        "loaded",
        len(GOOD_EVENTS),
        1,
    )


def test_a_file_missing_a_column_quarantines_every_row_with_the_reason(with_items, tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame(GOOD_EVENTS).drop(columns=["session_id"]).to_csv(path, index=False)
    result = ingest_file("events", path, settings=with_items)
    assert result.rows_loaded == 0 and result.rows_quarantined == len(GOOD_EVENTS)
    assert all(any("session_id" in reason for reason in r["reasons"]) for r in result.rejected)


def test_malformed_lines_are_quarantined_with_their_line_number(with_items, tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame(GOOD_EVENTS).to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines.insert(2, "only,three,fields")
    path.write_text("\n".join(lines) + "\n")
    result = ingest_file("events", path, settings=with_items)
    assert result.reconciles and result.rows_loaded == len(GOOD_EVENTS)
    (bad,) = result.rejected
    assert bad["row_number"] == 3
    assert bad["raw"]["event_id"] == "only" and is_pseudonym(bad["raw"]["user_id"])


def test_no_raw_identifier_or_personal_data_reaches_any_table(settings, tiny_sim):
    ingest_simulation(tiny_sim, settings=settings, progress=False)
    users = pd.read_csv(tiny_sim / "users.csv.gz", dtype=str)
    secrets = set()
    for column in ("user_id", "email", "full_name", "address"):
        secrets |= {v for v in users[column].dropna() if len(v) >= 6}
    assert len(secrets) > 500
    pattern = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))
    tables = [
        r[0]
        for r in rows(
            settings,
            """SELECT table_name FROM information_schema.tables
                                              WHERE table_schema = 'public'""",
        )
    ]
    leaks = []
    for table in tables:
        for (text,) in rows(settings, f"SELECT t::text FROM {table} t"):
            found = pattern.search(text)
            if found:
                leaks.append((table, found.group(0)))
    assert leaks == []
    stored_ids = [
        r[0] for r in rows(settings, "SELECT user_id FROM users UNION SELECT user_id FROM events")
    ]
    assert stored_ids and all(is_pseudonym(u) for u in stored_ids)
    # The same shop id maps to the same pseudonym everywhere, so joins still work.
    some = users["user_id"].dropna().iloc[0]
    assert (
        rows(
            settings,
            "SELECT count(*) FROM users WHERE user_id = %s",
            (pseudonymise(some, settings.pseudonym_key.get_secret_value()),),
        )[0][0]
        == 1
    )


def test_quality_report_is_written_for_people_and_machines(with_items):
    settings = with_items
    result = ingest_frame(
        "events",
        pd.DataFrame(GOOD_EVENTS + list(BAD_EVENTS.values())),
        settings=settings,
        source="t",
    )
    md = (settings.data_dir / "reports" / f"batch-{result.batch_id}.md").read_text()
    assert "| read | loaded |" in md and "unknown_item" in md
    q = result.quality
    assert (
        q["counts"]["reconciles"]
        and q["examples"]["unknown_item"][0]["raw"]["event_id"] == "e-unknown"
    )
    assert 0 < q["null_rates"]["query"] < 1
    shifted = ingest_frame(
        "events",
        pd.DataFrame(
            [
                event(
                    event_id=f"s{i}",
                    event_type="search",
                    item_id=None,
                    query="kettle",
                    event_ts=f"2026-09-02T10:00:{i:02d}Z",
                )
                for i in range(20)
            ]
        ),
        settings=settings,
        source="t",
    )
    assert shifted.quality["drift"]["previous_batch"] == result.batch_id
    assert shifted.quality["drift"]["columns"]["event_type"]["shifted"]


def test_bot_flags_match_the_simulators_ground_truth(settings, tiny_sim):
    ingest_simulation(tiny_sim, settings=settings, progress=False)
    truth = pd.read_parquet(tiny_sim / "truth" / "users.parquet")
    key = settings.pseudonym_key.get_secret_value()
    bots = {pseudonymise(u, key) for u in truth.loc[truth["is_bot"], "user_id"]}
    stored = pd.DataFrame(
        rows(settings, "SELECT user_id, is_bot FROM events"), columns=["user_id", "is_bot"]
    )
    is_bot_user = stored["user_id"].isin(bots)
    recall = stored.loc[is_bot_user, "is_bot"].mean()
    false_positive_rate = stored.loc[~is_bot_user, "is_bot"].mean()
    assert is_bot_user.any()
    assert recall > 0.95 and false_positive_rate < 0.001


def test_loaded_rows_satisfy_the_stored_row_models(settings, tiny_sim):
    results = ingest_simulation(tiny_sim, settings=settings, progress=False)
    assert {r.table for r in results} == set(CLEAN_MODELS)
    for r in results:
        assert len(r.clean) == r.rows_loaded > 0
        CLEAN_MODELS[r.table].validate(r.clean, lazy=True)

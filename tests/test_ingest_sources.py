"""Whole sources through the governed ingest: the Online Retail sample and the embedded database."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from governance import privacy, schemas
from governance.db import migrate, stop_embedded_server, transaction
from governance.ingest import ingest_frame, ingest_online_retail
from governance.settings import Settings

SAMPLE = Path(__file__).parent / "data" / "online_retail_sample.csv.gz"
NON_PRODUCT = {"POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}


def test_online_retail_sample_ingests_with_the_expected_counts(settings):
    source = pd.read_csv(SAMPLE, dtype=str)
    code = source["StockCode"].str.strip().str.upper()
    non_product = code.isin(NON_PRODUCT) | code.str.startswith("GIFT_0001")
    quantity = source["Quantity"].astype(int)
    adjustment = ~source["InvoiceNo"].str.startswith("C") & (quantity < 0)
    refused = non_product | adjustment
    zero_price = ~refused & (source["UnitPrice"].astype(float) <= 0)

    items, users, events = ingest_online_retail(SAMPLE, settings=settings)

    assert events.rows_read == len(source)
    assert events.reconciles and items.reconciles and users.reconciles
    assert events.rule_hits["non_product_stock_code"] == int(non_product.sum())
    reasons = pd.Series([r for row in events.rejected for r in row["reasons"]]).value_counts()
    assert reasons["non_product_stock_code"] == int(non_product.sum())
    assert reasons["price: greater_than(0)"] == int(zero_price.sum())
    assert users.rows_loaded == source["CustomerID"].dropna().nunique()
    with transaction(settings) as cur:
        cur.execute("SELECT count(*) FILTER (WHERE event_type = 'return'), count(*) FROM events")
        returns, stored = cur.fetchone()
        cur.execute(
            "SELECT rows_read, rows_loaded, rows_quarantined, rows_duplicate FROM ingest_batches "
            "WHERE table_name = 'events'"
        )
        assert cur.fetchone() == (
            events.rows_read,
            stored,
            events.rows_quarantined,
            events.rows_duplicate,
        )
    cancelled = source["InvoiceNo"].str.startswith("C") & ~refused
    assert 0 < returns <= int(cancelled.sum())


@pytest.mark.slow
def test_embedded_postgres_starts_migrates_and_loads(tmp_path):
    settings = Settings(database_url=None, data_dir=tmp_path / "data")
    try:
        migrate(settings)
        result = ingest_frame(
            "items",
            pd.DataFrame(
                [
                    {
                        "item_id": "X1",
                        "title": "Kettle",
                        "category_path": "Home > Kettles",
                        "brand": None,
                        "price": "10",
                        "listed_at": "2026-01-01T00:00:00Z",
                    }
                ]
            ),
            settings=settings,
            source="test",
        )
        assert result.rows_loaded == 1
        with transaction(settings) as cur:
            cur.execute("SELECT title FROM items")
            assert cur.fetchall() == [("Kettle",)]
    finally:
        assert stop_embedded_server(tmp_path / "data")
    assert not stop_embedded_server(tmp_path / "data")  # really stopped: nothing left to stop


def test_the_contract_column_lists_come_from_the_models():
    assert schemas.EVENT_COLUMNS[0] == "event_id" and "is_bot" not in schemas.EVENT_COLUMNS
    assert schemas.TABLE_COLUMNS["events"] == [*schemas.EVENT_COLUMNS, "is_bot"]
    # The users file = the model's columns plus the personal data validation drops.
    personal = [c for c in schemas.USER_FILE_COLUMNS if c not in schemas.USER_COLUMNS]
    assert personal and set(personal) <= set(schemas.PII_COLUMNS)
    pseudonym = privacy.pseudonymise("C0000001", "a key")
    assert re.fullmatch(schemas.PSEUDONYM_REGEX, pseudonym) and privacy.is_pseudonym(pseudonym)

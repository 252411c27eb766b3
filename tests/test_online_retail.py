"""Tests of the Online Retail adapter on a committed sample of the real file.

``tests/data/online_retail_sample.csv.gz`` holds 3,142 of the 541,909 lines of the UCI Online
Retail CSV (the shipped ``data_sets/online_retail/online_retail.csv.gz``), copied byte for byte
under the header and kept in their original order, so every row is a real line, unchanged. It
was cut once with a throwaway snippet that picked, from the full file:

- every line of 70 customers with 3-8 invoices spread over at least 60 days and at most 80
  lines (every k-th eligible CustomerID in sorted order), and every line of the customer with
  the fewest lines among those who show two countries;
- every line of 20 guest invoices (no CustomerID, at most 25 lines; every k-th in sorted order);
- the first lines, in file order, of each kind of dirt: 60 cancellations with and 15 without a
  customer, 2 lines of every StockCode not starting with five digits (postage, manual, fees,
  vouchers, DCGS...), the 3 bad-debt "A" invoices, 30 zero-price lines, 25 stock adjustments
  (negative quantity on a normal invoice), 25 lines without Description plus 2 described lines
  of each of their StockCodes, 15 lower-case StockCodes, and both copies of the first 20
  exactly duplicated lines;
- written with gzip mtime 0 and no file name in the gzip header, so cutting it again gives
  the same bytes.

The expected counts below are computed independently with plain pandas on the sample, never by
calling the adapter's own rule functions.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from governance.online_retail import (
    SOURCE_COLUMNS,
    RetailBatch,
    categorise,
    load_online_retail,
    main,
    map_lines,
    read_source,
)
from governance.schemas import EVENT_COLUMNS as EVENTS_COLUMNS
from governance.schemas import ITEM_COLUMNS as ITEMS_COLUMNS
from governance.schemas import USER_FILE_COLUMNS as USERS_COLUMNS

SAMPLE = Path(__file__).parent / "data" / "online_retail_sample.csv.gz"
NON_PRODUCT = {"POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """The sample as pandas reads it by default: NaN for empty fields, row_number as index."""
    frame = pd.read_csv(SAMPLE, dtype=str)
    frame.index = frame.index + 1
    return frame


@pytest.fixture(scope="module")
def batch() -> RetailBatch:
    return load_online_retail(SAMPLE)


@pytest.fixture(scope="module")
def expected(raw: pd.DataFrame) -> dict[str, pd.Series]:
    code = raw["StockCode"]
    cancel = raw["InvoiceNo"].str.startswith("C")
    qty = raw["Quantity"].astype(int)
    non_product = code.str.upper().isin(NON_PRODUCT) | code.str.startswith("gift_0001_")
    adjustment = ~cancel & (qty < 0)
    kept = ~non_product & ~adjustment
    return {
        "kept": kept,
        "non_product_stock_code": non_product,
        "stock_adjustment": adjustment,
        "cancellation": cancel & kept,
        "guest_checkout": raw["CustomerID"].isna() & kept,
        "non_positive_price": (raw["UnitPrice"].astype(float) <= 0) & kept,
        "missing_description": raw["Description"].isna() & kept,
        "stock_code_case": (code != code.str.upper()) & kept,
        "duplicate_line": raw.duplicated() & kept,
    }


def _row_numbers(events: pd.DataFrame) -> pd.Series:
    return events["event_id"].str.rsplit("-", n=1).str[1].astype(int)


def _naive(iso: pd.Series) -> pd.Series:
    """UTC ISO text as naive timestamps, comparable with the file's zone-less InvoiceDate."""
    return pd.to_datetime(iso).dt.tz_localize(None)


def _events_by_row(batch: RetailBatch) -> pd.DataFrame:
    return batch.events.set_index(_row_numbers(batch.events).to_numpy())


def test_sample_contains_every_kind_of_dirt(raw, expected):
    assert raw["CustomerID"].isna().any()
    assert raw["Description"].isna().any()
    for rule in (
        "non_product_stock_code",
        "stock_adjustment",
        "cancellation",
        "guest_checkout",
        "non_positive_price",
        "missing_description",
        "stock_code_case",
        "duplicate_line",
    ):
        assert expected[rule].sum() >= 10, rule
    invoices_per_customer = raw.groupby("CustomerID")["InvoiceNo"].nunique()
    assert (invoices_per_customer >= 3).sum() >= 50
    assert SAMPLE.stat().st_size < 200_000


def test_every_line_is_one_event_or_one_rejected_row(raw, batch):
    assert batch.rows_read == len(raw)
    assert batch.rows_read == len(batch.events) + len(batch.rejected)
    event_rows = set(_row_numbers(batch.events))
    rejected_rows = set(batch.rejected["row_number"])
    assert not event_rows & rejected_rows
    assert event_rows | rejected_rows == set(range(1, len(raw) + 1))
    assert batch.events["event_id"].is_unique


def test_frames_have_exactly_the_contract_columns_as_text(batch):
    assert list(batch.users.columns) == USERS_COLUMNS
    assert list(batch.items.columns) == ITEMS_COLUMNS
    assert list(batch.events.columns) == EVENTS_COLUMNS
    assert list(batch.rejected.columns) == ["table", "row_number", "raw", "reasons"]
    for frame in (batch.users, batch.items, batch.events):
        for value in frame.to_numpy().ravel():
            assert value is None or (isinstance(value, str) and value != ""), value


@pytest.mark.parametrize(
    "rule",
    [
        "non_product_stock_code",
        "stock_adjustment",
        "cancellation",
        "guest_checkout",
        "non_positive_price",
        "missing_description",
        "stock_code_case",
        "duplicate_line",
    ],
)
def test_rule_hits_match_an_independent_count(batch, expected, rule):
    assert batch.rule_hits[rule] == int(expected[rule].sum())


def test_rejected_rows_carry_their_reasons_and_the_original_line(raw, batch, expected):
    assert (batch.rejected["table"] == "events").all()
    by_row = batch.rejected.set_index("row_number")
    assert set(by_row.index) == set(raw.index[~expected["kept"]])
    for row, record in by_row.iterrows():
        wanted = [r for r in ("non_product_stock_code", "stock_adjustment") if expected[r][row]]
        assert record["reasons"] == wanted
        original = {k: (None if pd.isna(v) else v) for k, v in raw.loc[row].items()}
        assert record["raw"] == original
    assert batch.rejected_by_reason() == {
        "non_product_stock_code": int(expected["non_product_stock_code"].sum()),
        "stock_adjustment": int(expected["stock_adjustment"].sum()),
    }


def test_non_product_codes_never_become_events_or_items(raw, batch):
    codes = set(batch.events["item_id"]) | set(batch.items["item_id"])
    assert not codes & NON_PRODUCT
    assert not any(c.upper().startswith("GIFT_") for c in codes)
    rejected_codes = {r["StockCode"] for r in batch.rejected["raw"]}
    assert {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"} <= rejected_codes


def test_cancellations_become_returns_with_positive_quantity(raw, batch, expected):
    events = _events_by_row(batch)
    returns = events[events["event_type"] == "return"]
    assert set(returns.index) == set(raw.index[expected["cancellation"]])
    assert (returns["quantity"].astype(int) > 0).all()
    source_qty = raw.loc[returns.index, "Quantity"].astype(int)
    assert (returns["quantity"].astype(int) == -source_qty).all()
    purchases = events[events["event_type"] == "purchase"]
    source_qty = raw.loc[purchases.index, "Quantity"].astype(int)
    assert (purchases["quantity"].astype(int) == source_qty).all()
    assert set(events["event_type"]) == {"purchase", "return"}


def test_guests_get_a_per_invoice_user_and_no_users_row(raw, batch, expected):
    events = _events_by_row(batch)
    guest_rows = raw.index[expected["guest_checkout"]]
    assert (events.loc[guest_rows, "user_id"] == "guest-" + raw.loc[guest_rows, "InvoiceNo"]).all()
    assert not batch.users["user_id"].str.startswith("guest-").any()
    known_rows = raw.index[expected["kept"] & raw["CustomerID"].notna()]
    assert (events.loc[known_rows, "user_id"] == raw.loc[known_rows, "CustomerID"]).all()


def test_no_customer_id_is_lost(raw, batch):
    source_ids = set(raw["CustomerID"].dropna())
    assert set(batch.users["user_id"]) == source_ids
    assert batch.users["user_id"].is_unique
    assert not any(u.endswith(".0") for u in batch.users["user_id"])
    kept_ids = {u for u in batch.events["user_id"] if not u.startswith("guest-")}
    rejected_ids = {r["CustomerID"] for r in batch.rejected["raw"]} - {None}
    assert kept_ids | rejected_ids == source_ids


def test_users_signup_and_country(raw, batch):
    users = batch.users.set_index("user_id")
    first = pd.to_datetime(raw["InvoiceDate"]).groupby(raw["CustomerID"]).min()
    assert (_naive(users["signup_at"]) == first.reindex(users.index)).all()
    top_country = raw.groupby("CustomerID")["Country"].agg(lambda s: s.value_counts().index[0])
    single = raw.groupby("CustomerID")["Country"].nunique() == 1
    assert (users.loc[single[single].index, "country"] == top_country[single]).all()
    assert (~single).any(), "the sample should hold a customer seen in two countries"


def test_event_mapping(raw, batch):
    events = _events_by_row(batch)
    src = raw.loc[events.index]
    assert (events["session_id"] == src["InvoiceNo"]).all()
    assert (events["event_id"] == src["InvoiceNo"] + "-" + src.index.astype(str)).all()
    assert (events["item_id"] == src["StockCode"].str.upper()).all()
    assert (events["price"] == src["UnitPrice"]).all()
    assert events["event_ts"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00").all()
    assert (_naive(events["event_ts"]) == pd.to_datetime(src["InvoiceDate"])).all()
    assert events[["query", "position", "list_id"]].isna().all().all()


def test_non_positive_prices_pass_through_for_the_schema(raw, batch, expected):
    events = _events_by_row(batch)
    rows = raw.index[expected["non_positive_price"]]
    assert (events.loc[rows, "price"].astype(float) <= 0).all()


def test_items(raw, batch):
    items = batch.items.set_index("item_id")
    assert items.index.is_unique
    assert set(batch.events["item_id"]) == set(items.index)
    assert items["brand"].isna().all()
    priced = items["price"].dropna().astype(float)
    assert (priced > 0).all()
    assert (items["category_path"] != "").all()


def test_missing_description_takes_the_codes_most_frequent_title(raw, batch, expected):
    items = batch.items.set_index("item_id")
    kept = raw[expected["kept"]]
    for code in kept.loc[expected["missing_description"], "StockCode"].str.upper().unique():
        lines = kept[kept["StockCode"].str.upper() == code]
        paid = lines[(lines["UnitPrice"].astype(float) > 0) & lines["Description"].notna()]
        if paid.empty:
            continue
        counts = paid["Description"].str.strip().value_counts()
        best = sorted(counts[counts == counts.max()].index)[0]
        assert items.at[code, "title"] == best


def test_item_price_is_median_positive_price_and_listed_at_first_seen(raw, batch, expected):
    kept = raw[expected["kept"]].assign(
        item=lambda f: f["StockCode"].str.upper(), p=lambda f: f["UnitPrice"].astype(float)
    )
    median = kept[kept["p"] > 0].groupby("item")["p"].median()
    first = pd.to_datetime(kept["InvoiceDate"]).groupby(kept["item"]).min()
    items = batch.items.set_index("item_id")
    priced = items["price"].dropna().astype(float)
    assert (priced - median.reindex(priced.index)).abs().max() < 1e-4
    assert (_naive(items["listed_at"]) == first.reindex(items.index)).all()


def test_categorise():
    assert categorise("WHITE HANGING HEART T-LIGHT HOLDER") == "Home > Candles & Lights"
    assert categorise("SET OF 3 CAKE TINS PANTRY DESIGN") == "Kitchen > Baking & Storage"
    assert categorise("PAPER CHAIN KIT 50'S CHRISTMAS") == "Christmas"
    assert categorise("JUMBO BAG RED RETROSPOT") == "Bags"
    assert categorise("SAVE THE PLANET MUG") == "Kitchen > Mugs & Cups"
    assert categorise("FLY SWAT") == "Other"
    assert categorise("") == "Other"
    assert categorise(None) == "Other"
    # Keywords match whole words only: neither BOOK nor CASE is in BOOKCASE.
    assert categorise("BOOKCASE") == "Other"


def test_other_share_is_small(batch):
    assert batch.other_share() < 0.35


def test_stable_across_runs(batch):
    again = load_online_retail(SAMPLE)
    pd.testing.assert_frame_equal(again.events, batch.events)
    pd.testing.assert_frame_equal(again.items, batch.items)
    pd.testing.assert_frame_equal(again.users, batch.users)


def test_drop_duplicate_lines_refuses_the_later_copies(raw, expected):
    batch = load_online_retail(SAMPLE, drop_duplicate_lines=True)
    duplicates = raw.duplicated()
    assert batch.rule_hits["duplicate_line"] == int(duplicates.sum())
    assert batch.rows_read == len(batch.events) + len(batch.rejected)
    assert len(batch.rejected) == int((duplicates | ~expected["kept"]).sum())
    assert set(
        batch.rejected.loc[
            batch.rejected["reasons"].map(lambda r: "duplicate_line" in r), "row_number"
        ]
    ) == set(raw.index[duplicates])


def _lines(rows: list[list[str]], tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "mini.csv"
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    path.write_text(header + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return read_source(path)


def test_edge_cases_absent_from_the_real_file(tmp_path):
    lines = _lines(
        [
            ["C1", "10001", "A MUG", "3", "2011-01-01 10:00:00", "1.5", "17850.0", "EIRE"],
            ["2", "10001", "A MUG", "2", "12/1/2010 8:26", "1.5", "17850.0", "United Kingdom"],
            ["3", "10002", "", "1", "not a date", "2", "", "France"],
        ],
        tmp_path,
    )
    batch = map_lines(lines)
    assert batch.rule_hits["cancellation_with_positive_quantity"] == 1
    assert batch.rejected["reasons"].tolist() == [["cancellation_with_positive_quantity"]]
    assert batch.users["user_id"].tolist() == ["17850"]
    events = batch.events.set_index("event_id")
    assert events.at["2-2", "user_id"] == "17850"
    assert events.at["2-2", "event_ts"] == "2010-12-01T08:26:00+00:00"
    assert events.at["3-3", "event_ts"] is None
    assert batch.items.set_index("item_id").at["10002", "title"] is None
    assert batch.rule_hits["item_without_title"] == 1


def test_not_an_online_retail_file(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing columns"):
        load_online_retail(path)


def test_cli_writes_the_contract_files(tmp_path, capsys, batch):
    assert main([str(SAMPLE), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "guest_checkout" in printed and "rows read" in printed
    for name, columns, frame in (
        ("users", USERS_COLUMNS, batch.users),
        ("items", ITEMS_COLUMNS, batch.items),
        ("events", EVENTS_COLUMNS, batch.events),
    ):
        written = pd.read_csv(tmp_path / f"{name}.csv.gz", dtype=str)
        assert list(written.columns) == columns
        assert len(written) == len(frame)
    with (tmp_path / "rejected.jsonl").open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    assert len(records) == len(batch.rejected)
    assert set(records[0]) == {"table", "row_number", "raw", "reasons"}


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_sample_has_the_source_header():
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        header = fh.readline().strip()
    assert header.split(",") == SOURCE_COLUMNS

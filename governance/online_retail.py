"""Adapter: the UCI "Online Retail" purchase log mapped to cartwise's raw data contract.

The source (Chen, Sain and Guo, 2012) is one CSV of invoice lines with the columns
``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``. This
module turns it into the contract's ``users``, ``items`` and ``events`` frames
(``docs/data-contract.md``), with every value a string or ``None`` as a CSV read would give, so
the retail data goes through the same Pandera validation, quarantine and reconciliation as any
other source. The adapter refuses only what its own explicit rules below refuse; everything
else, dirty or not, is passed on and left to the shared schemas.

Run it::

    python -m governance.online_retail PATH/online_retail.csv.gz --out DIR

It writes ``DIR/users.csv.gz``, ``DIR/items.csv.gz``, ``DIR/events.csv.gz`` (contract CSVs) and
``DIR/rejected.jsonl`` (one JSON object per refused line), and prints the rule hits. From Python,
``load_online_retail(path)`` returns a :class:`RetailBatch`.

Reconciliation: every source line becomes exactly one event row or one rejected row, so
``rows_read == len(events) + len(rejected)``; ``row_number`` is the line's number in the file,
1-based after the header.

Mapping
-------
- ``event_id`` = ``<InvoiceNo>-<row_number>``: stable across runs of the same file, and unique
  even where the file repeats a line exactly.
- ``session_id`` = InvoiceNo; ``event_type`` = ``purchase`` (``return`` for cancellations).
- ``user_id`` = CustomerID as written, without a trailing ``.0`` (the ingest pseudonymises it).
- ``item_id`` = StockCode in upper case (rule ``stock_code_case``); ``quantity`` = Quantity;
  ``price`` = UnitPrice exactly as in the file.
- ``event_ts`` = InvoiceDate as ISO 8601 with ``+00:00``. The file carries no zone; the shop is
  in the UK and the times are its local clock, so treating them as UTC puts events between
  late March and late October one hour late. Nothing downstream needs sub-hour accuracy on this
  source, and guessing the DST rule of a 2010 till would be no more honest.
- users: one row per CustomerID seen on any line (kept or refused), ``country`` = the
  customer's most frequent Country (8 customers have two), ``signup_at`` = their first invoice
  time. Guest users (below) get no row. The personal-data columns are empty.
- items: one row per product StockCode that has at least one event, built from its event
  lines only. ``title`` = the most frequent non-empty Description, preferring lines with a
  positive price because zero-price lines often carry a warehouse note ("check", "found",
  "amazon") instead of the catalogue name (ties: alphabetical); ``category_path`` =
  :func:`categorise` of the title (a keyword taxonomy of 19 categories plus ``Other``);
  ``brand`` = None; ``price`` = median positive UnitPrice; ``listed_at`` = its first event
  time. An item without any description or positive price gets ``None`` there and is
  quarantined by the items schema, and with it its events ("must name a known item");
  counted as ``item_without_title`` / ``item_without_price``.
- Fields are read with surrounding whitespace removed; ``rejected.raw`` keeps the line as
  written, with ``None`` for empty fields.

Rules (``rule_hits`` counts each; refusing rules count every line they hit, and a line can hit
more than one; mapping rules count only the lines that became events)
--------------------------------------------------------------------------------------------
Refusing (the line goes to ``rejected`` with every reason that applies):

- ``non_product_stock_code``: postage (POST, DOT, C2 carriage), manual entries (M), discounts
  (D), samples (S), bad-debt adjustments (B), bank charges, Amazon fees, CRUK commission,
  cushion pads and gift vouchers (``gift_0001_*``) are money movements, not products a user
  chose; as items they would top every popularity list.
- ``stock_adjustment``: a negative Quantity on a normal (non-"C") invoice. In this file all of
  them have no customer and a zero price and a note for a description ("damaged", "thrown away",
  "check"): warehouse write-offs, not returns by a user.
- ``cancellation_with_positive_quantity``: a "C" invoice line with a positive Quantity
  contradicts itself (a return of minus n units); refused rather than guessed. None occur in
  the full file; the rule exists so that a new export cannot slip one through as a purchase.
- ``duplicate_line`` (only with ``drop_duplicate_lines=True``; off by default): a line
  identical in all eight columns to an earlier one. Off by default because the source has no
  line identifier: a second identical line is as likely a second scan of the same article on
  the invoice as an export glitch, and dropping it would under-count what the user bought.
  Counted either way.

Mapping (the line stays an event):

- ``cancellation``: InvoiceNo starting with "C" becomes a ``return`` event with a positive
  quantity (the sign moves into ``event_type``).
- ``guest_checkout``: a line without CustomerID gets the per-invoice guest user
  ``guest-<InvoiceNo>``, so item popularity keeps the sale and one guest's basket still
  looks like one basket; guests get no users row, and the ingest pseudonymises the id like
  any other.
- ``non_positive_price``: a zero or negative UnitPrice is passed through unchanged so that the
  shared ``price > 0`` check quarantines it with the standard reason; counted here for the
  report only.
- ``missing_description``: the line keeps its event; its item's title comes from the other
  lines of the same StockCode.
- ``stock_code_case``: some StockCodes appear in lower case ("85123a") for the same article as
  the upper-case code ("85123A", same description); upper-casing keeps one item per article.
- ``duplicate_line`` (default): counted, kept.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from governance.retail_taxonomy import TAXONOMY
from governance.schemas import EVENT_COLUMNS, ITEM_COLUMNS, USER_FILE_COLUMNS

SOURCE_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]

REJECTED_COLUMNS = ["table", "row_number", "raw", "reasons"]

NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}
)
_GIFT_VOUCHER = re.compile(r"^gift_\d+_\d+$", re.IGNORECASE)

# Refusing rules in the order their reasons are listed on a rejected line.
REJECT_RULES = (
    "non_product_stock_code",
    "stock_adjustment",
    "cancellation_with_positive_quantity",
    "duplicate_line",
)
MAPPING_RULES = (
    "cancellation",
    "guest_checkout",
    "non_positive_price",
    "missing_description",
    "stock_code_case",
    "duplicate_line",
)
ITEM_RULES = ("item_without_title", "item_without_price")

GUEST_PREFIX = "guest-"
OTHER_CATEGORY = "Other"


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    # Word boundaries so that "PAN" does not match "PANTRY" or "CASE" match "BOOKCASES" twice
    # over; multi-word keywords match across any run of separators.
    parts = sorted({re.escape(k).replace(r"\ ", r"\s+") for k in keywords}, key=len, reverse=True)
    return re.compile(r"(?<![A-Z0-9])(?:" + "|".join(parts) + r")(?![A-Z0-9])")


_TAXONOMY_PATTERNS = tuple((path, _keyword_pattern(words)) for path, words in TAXONOMY)


def categorise(description: str | None) -> str:
    """The category path of a product description by the keyword taxonomy; ``Other`` if none."""
    if not description:
        return OTHER_CATEGORY
    text = description.upper()
    for path, pattern in _TAXONOMY_PATTERNS:
        if pattern.search(text):
            return path
    return OTHER_CATEGORY


@dataclass
class RetailBatch:
    """The contract frames made from one Online Retail file, plus what the adapter refused."""

    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame
    rejected: pd.DataFrame
    rule_hits: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0

    def other_share(self) -> float:
        """Share of items whose category fell back to ``Other``."""
        if self.items.empty:
            return 0.0
        return float((self.items["category_path"] == OTHER_CATEGORY).mean())

    def rejected_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reasons in self.rejected["reasons"]:
            for reason in reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts


# --- rules: each takes the tidied source frame (see tidy) and returns a boolean mask ---


def is_cancellation(lines: pd.DataFrame) -> pd.Series:
    return lines["InvoiceNo"].str.upper().str.startswith("C")


def is_guest_checkout(lines: pd.DataFrame) -> pd.Series:
    return lines["CustomerID"] == ""


def is_non_product_stock_code(lines: pd.DataFrame) -> pd.Series:
    code = lines["StockCode"]
    return code.str.upper().isin(NON_PRODUCT_CODES) | code.str.match(_GIFT_VOUCHER)


def _quantity(lines: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(lines["Quantity"], errors="coerce")


def is_stock_adjustment(lines: pd.DataFrame) -> pd.Series:
    return ~is_cancellation(lines) & (_quantity(lines) < 0)


def is_cancellation_with_positive_quantity(lines: pd.DataFrame) -> pd.Series:
    return is_cancellation(lines) & (_quantity(lines) > 0)


def is_non_positive_price(lines: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(lines["UnitPrice"], errors="coerce") <= 0


def is_missing_description(lines: pd.DataFrame) -> pd.Series:
    return lines["Description"] == ""


def is_lower_case_stock_code(lines: pd.DataFrame) -> pd.Series:
    code = lines["StockCode"]
    return code != code.str.upper()


def is_duplicate_line(lines: pd.DataFrame) -> pd.Series:
    return lines.duplicated(subset=SOURCE_COLUMNS, keep="first")


# --- mapping helpers ---


def normalise_customer_id(customer_id: pd.Series) -> pd.Series:
    """CustomerID as text: a float round-trip (``17850.0``) loses its ``.0``."""
    return customer_id.str.replace(r"\.0+$", "", regex=True)


def to_utc_iso(invoice_date: pd.Series) -> pd.Series:
    """InvoiceDate as ISO 8601 UTC text; ``None`` where unreadable, for the schema to report."""
    text = invoice_date.astype(object)
    parsed = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    # Other exports of the same data set (the UCI spreadsheet) write "12/1/2010 8:26".
    retry = parsed.isna() & (text != "")
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], format="mixed", errors="coerce")
    # Formatting half a million timestamps costs seconds; text already in canonical form
    # (and proven a valid time by the parse above) only needs its separator and offset.
    canonical = parsed.notna() & text.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    iso = pd.Series(None, index=text.index, dtype=object)
    iso[canonical] = text[canonical].str.replace(" ", "T", n=1) + "+00:00"
    other = parsed.notna() & ~canonical
    if other.any():
        iso[other] = parsed[other].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return iso


def _format_price(value: float) -> str:
    return format(round(value, 4), ".4f").rstrip("0").rstrip(".")


def _nullify(frame: pd.DataFrame) -> pd.DataFrame:
    """Empty text becomes None, the way a CSV reader reports an empty field."""
    frame = frame.astype(object)
    return frame.where(frame.notna() & (frame != ""), None)


def read_source(path: str | Path) -> pd.DataFrame:
    """The file as text exactly as written, "" for empty fields, indexed by row_number."""
    # Arrow-backed strings make the many vectorised string operations several times faster
    # than Python objects on half a million lines.
    lines = pd.read_csv(path, dtype="string[pyarrow]", keep_default_na=False, na_values=[])
    missing = [c for c in SOURCE_COLUMNS if c not in lines.columns]
    if missing:
        raise ValueError(f"{path}: not an Online Retail file, missing columns {missing}")
    lines = lines[SOURCE_COLUMNS].copy()
    lines.index = pd.RangeIndex(1, len(lines) + 1, name="row_number")
    return lines


def tidy(lines: pd.DataFrame) -> pd.DataFrame:
    """Source lines with surrounding whitespace removed: the form every rule reads.

    The raw lines stay untouched for ``rejected``; padding is never part of a code or an id.
    """
    return lines.apply(lambda column: column.str.strip())


def _build_users(lines: pd.DataFrame, customer: pd.Series, event_ts: pd.Series) -> pd.DataFrame:
    known = customer != ""
    frame = pd.DataFrame(
        {"user_id": customer[known], "country": lines["Country"][known], "ts": event_ts[known]}
    )
    if frame.empty:
        return pd.DataFrame(columns=USER_FILE_COLUMNS, dtype=object)
    # ISO text with a fixed offset sorts like the time itself.
    signup = frame.dropna(subset=["ts"]).groupby("user_id")["ts"].min()
    country_counts = (
        frame[frame["country"] != ""]
        .groupby(["user_id", "country"], sort=False)
        .size()
        .rename("n")
        .reset_index()
    )
    # Ties go to the country seen first, since sort=False keeps first-seen order.
    country = (
        country_counts.sort_values("n", ascending=False, kind="stable")
        .drop_duplicates("user_id")
        .set_index("user_id")["country"]
    )
    ids = pd.Index(frame["user_id"].unique(), name="user_id")
    users = pd.DataFrame(index=ids)
    users["email"] = None
    users["full_name"] = None
    users["address"] = None
    users["country"] = country.reindex(ids)
    users["signup_at"] = signup.reindex(ids)
    return _nullify(users.reset_index())[USER_FILE_COLUMNS]


def _build_items(kept: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    price = pd.to_numeric(kept["UnitPrice"], errors="coerce")
    description = kept["Description"]
    frame = pd.DataFrame(
        {
            "item_id": kept["item_id"],
            "description": description,
            "price": price,
            "ts": kept["event_ts"],
        }
    )
    ids = pd.Index(frame["item_id"].unique(), name="item_id")

    described = frame[frame["description"] != ""].assign(paid=lambda f: f["price"] > 0)
    title_counts = (
        described.groupby(["item_id", "description", "paid"]).size().rename("n").reset_index()
    )
    title = (
        title_counts.sort_values(
            ["item_id", "paid", "n", "description"],
            ascending=[True, False, False, True],
            kind="stable",
        )
        .drop_duplicates("item_id")
        .set_index("item_id")["description"]
    )
    median_price = frame[frame["price"] > 0].groupby("item_id")["price"].median()
    listed_at = frame.dropna(subset=["ts"]).groupby("item_id")["ts"].min()

    items = pd.DataFrame(index=ids)
    items["title"] = title.reindex(ids)
    items["category_path"] = [
        categorise(t) if isinstance(t, str) else OTHER_CATEGORY for t in items["title"]
    ]
    items["brand"] = None
    items["price"] = median_price.reindex(ids).map(_format_price, na_action="ignore")
    items["listed_at"] = listed_at.reindex(ids)
    hits = {
        "item_without_title": int(items["title"].isna().sum()),
        "item_without_price": int(items["price"].isna().sum()),
    }
    return _nullify(items.reset_index())[ITEM_COLUMNS], hits


def map_lines(source: pd.DataFrame, *, drop_duplicate_lines: bool = False) -> RetailBatch:
    """Map source lines (as :func:`read_source` gives them) to the contract frames."""
    lines = tidy(source)
    reject_masks = {
        "non_product_stock_code": is_non_product_stock_code(lines),
        "stock_adjustment": is_stock_adjustment(lines),
        "cancellation_with_positive_quantity": is_cancellation_with_positive_quantity(lines),
    }
    duplicate = is_duplicate_line(lines)
    if drop_duplicate_lines:
        reject_masks["duplicate_line"] = duplicate
    refused = pd.Series(False, index=lines.index)
    for mask in reject_masks.values():
        refused |= mask
    kept_mask = ~refused

    rule_hits: dict[str, int] = {name: int(mask.sum()) for name, mask in reject_masks.items()}
    cancellation = is_cancellation(lines)
    guest = is_guest_checkout(lines)
    mapping_masks = {
        "cancellation": cancellation,
        "guest_checkout": guest,
        "non_positive_price": is_non_positive_price(lines),
        "missing_description": is_missing_description(lines),
        "stock_code_case": is_lower_case_stock_code(lines),
    }
    if not drop_duplicate_lines:
        mapping_masks["duplicate_line"] = duplicate
    for name, mask in mapping_masks.items():
        rule_hits[name] = int((mask & kept_mask).sum())

    invoice = lines["InvoiceNo"]
    customer = normalise_customer_id(lines["CustomerID"])
    event_ts = to_utc_iso(lines["InvoiceDate"])
    item_id = lines["StockCode"].str.upper()
    quantity = lines["Quantity"]
    # Only negative quantities reach here on "C" invoices; the sign moves into event_type.
    quantity = quantity.where(~cancellation, quantity.str.lstrip("-"))

    row_number = lines.index.to_series()
    events = pd.DataFrame(
        {
            "event_id": invoice + "-" + row_number.astype(str),
            "user_id": customer.where(~guest, GUEST_PREFIX + invoice),
            "session_id": invoice,
            "event_type": pd.Series("purchase", index=lines.index).where(~cancellation, "return"),
            "item_id": item_id,
            "query": None,
            "position": None,
            "list_id": None,
            "quantity": quantity,
            "price": lines["UnitPrice"],
            "event_ts": event_ts,
        },
        index=lines.index,
    )[kept_mask]

    items, item_hits = _build_items(
        pd.DataFrame(
            {
                "item_id": item_id,
                "Description": lines["Description"],
                "UnitPrice": lines["UnitPrice"],
                "event_ts": event_ts,
            }
        )[kept_mask]
    )
    rule_hits.update(item_hits)

    refused_lines = _nullify(source[refused])
    reasons = [
        [name for name in REJECT_RULES if name in reject_masks and reject_masks[name].at[row]]
        for row in refused_lines.index
    ]
    rejected = pd.DataFrame(
        {
            "table": "events",
            "row_number": refused_lines.index.to_numpy(),
            "raw": refused_lines.to_dict(orient="records"),
            "reasons": reasons,
        },
        columns=REJECTED_COLUMNS,
    )

    return RetailBatch(
        users=_build_users(lines, customer, event_ts),
        items=items,
        events=_nullify(events.reset_index(drop=True))[EVENT_COLUMNS],
        rejected=rejected,
        rule_hits=rule_hits,
        rows_read=len(lines),
    )


def load_online_retail(path: str | Path, *, drop_duplicate_lines: bool = False) -> RetailBatch:
    """Read an Online Retail CSV (optionally gzip-compressed) and map it to the contract."""
    return map_lines(read_source(path), drop_duplicate_lines=drop_duplicate_lines)


def write_batch(batch: RetailBatch, out_dir: str | Path) -> dict[str, Path]:
    """Write the contract CSVs and ``rejected.jsonl`` into out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.csv.gz" for name in ("users", "items", "events")}
    for name, path in paths.items():
        getattr(batch, name).to_csv(path, index=False)
    paths["rejected"] = out / "rejected.jsonl"
    with paths["rejected"].open("w", encoding="utf-8") as fh:
        for record in batch.rejected.to_dict(orient="records"):
            record["row_number"] = int(record["row_number"])
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m governance.online_retail",
        description="Map the UCI Online Retail purchase log to cartwise's raw data contract "
        "(users, items, events CSVs plus rejected.jsonl).",
    )
    parser.add_argument("path", type=Path, help="online_retail.csv or .csv.gz")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument(
        "--drop-duplicate-lines",
        action="store_true",
        help="refuse lines identical to an earlier line (default: keep them, count them)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    batch = load_online_retail(args.path, drop_duplicate_lines=args.drop_duplicate_lines)
    mapped = time.perf_counter() - started
    paths = write_batch(batch, args.out)
    total = time.perf_counter() - started

    print(f"rows read      {batch.rows_read}")
    print(f"events         {len(batch.events)}")
    print(f"rejected       {len(batch.rejected)}")
    for reason, count in sorted(batch.rejected_by_reason().items()):
        print(f"  {reason:<36} {count}")
    print(f"users          {len(batch.users)}")
    print(f"items          {len(batch.items)} ({batch.other_share():.1%} in {OTHER_CATEGORY})")
    print("rule hits")
    for rule, count in batch.rule_hits.items():
        print(f"  {rule:<36} {count}")
    print(f"mapped in {mapped:.1f}s, written in {total - mapped:.1f}s")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

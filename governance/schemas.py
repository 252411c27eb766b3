"""What a valid row is: one Pandera `DataFrameModel` per source table.

These models are the only definition of validity. Batch ingest, the Online Retail adapter and
the HTTP `/events` endpoint all validate through them (see `governance.validation`), so a row
that is good in one entry point is good in all. `docs/data-contract.md` is the prose form.

Each `*Record` model describes an incoming row, before pseudonymisation; each `Clean*` model
describes the row as stored in PostgreSQL. The column lists and vocabularies every other module
uses (the simulator, the Online Retail adapter, ingest, the `/events` endpoint) are defined here,
next to the models, and derived from them where a model holds them.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

EVENT_TYPES = ("impression", "search", "view", "click", "add_to_cart", "purchase", "return")
# The search intents, in one order everywhere: the simulator's templates, the labelled queries,
# the weak labels and the intent classifier all use this set.
INTENTS = ("buy_product", "browse_category", "compare_prices", "product_info")

# Personal data a shop may send with a user; accepted in the file and dropped before validation,
# so it never reaches a DataFrame that is written anywhere.
PII_COLUMNS = ("email", "full_name", "name", "address", "phone")

UTC_TS = {"unit": "ns", "tz": "UTC"}
# Arrow-backed strings: null checks read a bitmap and string kernels run in C++, where object
# strings cost a Python call per cell (a third of ingest time at a million rows).
Text = Annotated[pd.StringDtype, "pyarrow", pd.NA]
# A user pseudonym: the prefix and the first hex characters of an HMAC-SHA256
# (governance.privacy makes them; the Clean* models require them).
PSEUDONYM_PREFIX = "u_"
PSEUDONYM_HEX_CHARS = 20
PSEUDONYM_REGEX = rf"^{PSEUDONYM_PREFIX}[0-9a-f]{{{PSEUDONYM_HEX_CHARS}}}$"
# What the columns can store (PostgreSQL integer and numeric(12, 2)); a value past these would
# be refused or silently rounded by the database, so it is refused here, with its reason.
INT4_MAX = 2**31 - 1
MIN_PRICE = 0.01  # numeric(12, 2) rounds 0.001 to 0.00
MAX_PRICE = 9_999_999_999.99  # also refuses infinity
PRICE_STORABLE = {"min_value": MIN_PRICE, "max_value": MAX_PRICE}


# Text is stripped and empty text becomes null while parsing (governance.validation), so a
# required text column is simply not nullable.
class _Strict:
    strict = True
    coerce = True


class UserRecord(pa.DataFrameModel):
    user_id: Series[Text] = pa.Field()
    country: Series[Text] | None = pa.Field(nullable=True)
    signup_at: Series[pd.DatetimeTZDtype] | None = pa.Field(nullable=True, dtype_kwargs=UTC_TS)

    class Config(_Strict):
        name = "users"


class CleanUsers(UserRecord):
    user_id: Series[Text] = pa.Field(str_matches=PSEUDONYM_REGEX, unique=True)


class ItemRecord(pa.DataFrameModel):
    item_id: Series[Text] = pa.Field()
    title: Series[Text] = pa.Field()
    category_path: Series[Text] = pa.Field()
    brand: Series[Text] | None = pa.Field(nullable=True)
    price: Series[float] = pa.Field(gt=0, in_range=PRICE_STORABLE)
    listed_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC_TS)

    class Config(_Strict):
        name = "items"


class CleanItems(ItemRecord):
    item_id: Series[Text] = pa.Field(unique=True)
    category: Series[Text] = pa.Field(str_length={"min_value": 1})


class EventRecord(pa.DataFrameModel):
    event_id: Series[Text] = pa.Field()
    user_id: Series[Text] = pa.Field()
    session_id: Series[Text] = pa.Field()
    event_type: Series[Text] = pa.Field(isin=EVENT_TYPES)
    item_id: Series[Text] = pa.Field(nullable=True)
    query: Series[Text] = pa.Field(nullable=True)
    position: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0, le=INT4_MAX)
    list_id: Series[Text] = pa.Field(nullable=True)
    quantity: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0, le=INT4_MAX)
    price: Series[float] = pa.Field(nullable=True, gt=0, in_range=PRICE_STORABLE)
    event_ts: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC_TS)

    class Config(_Strict):
        name = "events"

    # Requirements that depend on the event type; element-wise so each bad row is named.
    @pa.dataframe_check(name="item_id_required_unless_search")
    def _item_required(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["event_type"] == "search") | df["item_id"].notna()

    @pa.dataframe_check(name="query_required_for_search")
    def _query_required(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["event_type"] != "search") | df["query"].notna()

    @pa.dataframe_check(name="list_and_position_required_for_impression")
    def _impression_fields(cls, df: pd.DataFrame) -> Series[bool]:
        is_impression = df["event_type"] == "impression"
        return ~is_impression | (df["list_id"].notna() & df["position"].notna())

    @pa.dataframe_check(name="quantity_and_price_required_for_purchase_or_return")
    def _purchase_fields(cls, df: pd.DataFrame) -> Series[bool]:
        is_sale = df["event_type"].isin(["purchase", "return"])
        return ~is_sale | (df["quantity"].notna() & df["price"].notna())


class CleanEvents(EventRecord):
    event_id: Series[Text] = pa.Field(unique=True)
    user_id: Series[Text] = pa.Field(str_matches=PSEUDONYM_REGEX)
    is_bot: Series[bool]


class LabelledQueryRecord(pa.DataFrameModel):
    query: Series[Text] = pa.Field()
    intent: Series[Text] = pa.Field()
    category: Series[Text] = pa.Field(nullable=True)

    class Config(_Strict):
        name = "labelled_queries"


class CleanLabelledQueries(LabelledQueryRecord):
    source: Series[Text] = pa.Field(description="'labelled', or the weak-label rule that made it")


SERVED_ENDPOINTS = ("search", "recommend")


class ServedItemRecord(pa.DataFrameModel):
    """One position of a list the service served (the list's fields repeat on each row).

    Written by the service itself, so a failure here is a serving bug: the whole list goes to
    quarantine with its reasons rather than half of it to `served_items`.
    """

    list_id: Series[Text] = pa.Field(str_length={"min_value": 8, "max_value": 64})
    served_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC_TS)
    endpoint: Series[Text] = pa.Field(isin=SERVED_ENDPOINTS)
    user_id: Series[Text] = pa.Field(nullable=True, str_matches=PSEUDONYM_REGEX)
    query: Series[Text] = pa.Field(nullable=True)
    model_tag: Series[Text] = pa.Field()
    feature_service: Series[Text] = pa.Field()
    variant: Series[Text] = pa.Field(str_length={"min_value": 1, "max_value": 64})
    position: Series[pd.Int64Dtype] = pa.Field(ge=0)
    item_id: Series[Text] = pa.Field()
    score: Series[float] = pa.Field(ge=-1e9, le=1e9)  # also rejects NaN and inf

    class Config(_Strict):
        name = "served_items"

    @pa.dataframe_check(name="positions_unique_within_list")
    def _positions_unique(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(["list_id", "position"], keep=False)


RECORD_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "users": UserRecord,
    "items": ItemRecord,
    "events": EventRecord,
    "labelled_queries": LabelledQueryRecord,
}

# The row as stored: what a batch loads must pass these (checked in tests/test_ingest.py).
CLEAN_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "users": CleanUsers,
    "items": CleanItems,
    "events": CleanEvents,
    "labelled_queries": CleanLabelledQueries,
}


def columns(model: type[pa.DataFrameModel]) -> list[str]:
    """The model's columns in declaration order (an inherited column keeps its place)."""
    return list(model.to_schema().columns)


# The raw files' header rows (docs/data-contract.md). A users file may also carry personal data,
# which validation drops first; the simulator writes it so that the drop is exercised.
EVENT_COLUMNS = columns(EventRecord)
ITEM_COLUMNS = columns(ItemRecord)
LABELLED_QUERY_COLUMNS = columns(LabelledQueryRecord)
USER_COLUMNS = columns(UserRecord)
USER_FILE_COLUMNS = ["user_id", "email", "full_name", "address", *USER_COLUMNS[1:]]

# The stored tables' columns, in the order ingest loads them.
TABLE_COLUMNS = {table: columns(model) for table, model in CLEAN_MODELS.items()}

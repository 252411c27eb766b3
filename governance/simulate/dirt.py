"""Dirty rows: copies of clean rows broken in one known way each, as a real feed breaks.

Every dirty row is listed in truth/dirty.parquet with its kind and column, so the validation
tests can check that each one is quarantined for the right reason and nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from governance.schemas import EVENT_COLUMNS
from governance.simulate.config import (
    DAY_MS,
    DIRTY_EVENT_KINDS,
    DIRTY_ITEM_KINDS,
    DIRTY_QUERY_KINDS,
    DIRTY_USER_KINDS,
)
from governance.simulate.day import PURCHASE, RETURN, SEARCH
from governance.simulate.shop import Shop
from governance.simulate.text import iso, shift_iso

_PRICED_KINDS = ("malformed_price", "nonpositive_price", "zero_quantity")


@dataclass
class DirtyRows:
    """Extra rows for an entity file, each with the key, kind and column truth records."""

    rows: list[dict] = field(default_factory=list)
    keys: list = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    columns: list[str | None] = field(default_factory=list)

    def add(self, row: dict, key, kind: str, column: str | None) -> None:
        self.rows.append(row)
        self.keys.append(key)
        self.kinds.append(kind)
        self.columns.append(column)


@dataclass
class DirtyEvents:
    copies: list[tuple[int, dict, str, str | None]]  # (source row, row, kind, column)
    broken_lines: list[tuple[int, str, str]]  # (source row, text, event_id)
    late: list[int]  # rows to move into tomorrow's file


def _per_kind(n_rows: int, share: float, n_kinds: int) -> int:
    """Dirty rows of each kind: at least one, so every kind is always exercised."""
    return max(1, round(n_rows * share / n_kinds))


def dirty_users(users: pa.Table, shop: Shop, rng: np.random.Generator) -> DirtyRows:
    """A few broken users: extra rows with new ids, so events never point at them."""
    n = shop.cfg.n_users
    k = _per_kind(n, shop.cfg.dirty_share, 4)
    out = DirtyRows()
    extra = users.take(rng.integers(0, n, 2 * k)).to_pylist()
    for j, row in enumerate(extra):
        kind = DIRTY_USER_KINDS[j // k]
        row["user_id"] = f"C{n + j + 1:07d}"
        if kind == "missing_user_id":
            row["user_id"], column = None, "user_id"
        else:
            # A fixed far future: relative to the simulated period it could be in the past by the
            # time the data is ingested, and the simulator must not read the wall clock.
            signup = iso(shop.end_ms + int(rng.integers(30, 900)) * DAY_MS)
            row["signup_at"], column = "2099" + signup[4:], "signup_at"
        out.add(row, row["user_id"], kind, column)
    return out


def dirty_items(items: pa.Table, shop: Shop, rng: np.random.Generator) -> DirtyRows:
    n = shop.cfg.n_items
    k = _per_kind(n, shop.cfg.dirty_share, 4)
    out = DirtyRows()
    source = rng.integers(0, n, 3 * k)
    for j, (row, i) in enumerate(zip(items.take(source).to_pylist(), source)):
        kind = DIRTY_ITEM_KINDS[j // k]
        row["item_id"] = f"P{n + j + 1:07d}"
        if kind == "nonpositive_price":
            row["price"], column = ("0.00" if j % 2 else "-" + row["price"]), "price"
        elif kind == "price_outlier":
            median = shop.leaf_median[shop.item_leaf[i]]
            row["price"], column = f"{median * 100 - 0.01:.2f}", "price"
        else:
            row["title"], column = "", "title"
        out.add(row, row["item_id"], kind, column)
    return out


def dirty_queries(rows: list[dict], share: float, rng: np.random.Generator) -> DirtyRows:
    k = _per_kind(len(rows), share, 3)
    out = DirtyRows()
    source = rng.integers(0, len(rows), 3 * k)
    for j, i in enumerate(source):
        kind = DIRTY_QUERY_KINDS[j // k]
        row = dict(rows[i])
        if kind == "empty_query":
            row["query"], column = "", "query"
        elif kind == "missing_intent":
            row["intent"], column = None, "intent"
        else:
            # Not a leaf of the tree: a made-up one, or an inner node.
            row["category"] = ["Hovercrafts", "Misc", "Electronics > Audio"][int(rng.integers(3))]
            column = "category"
        out.add(row, row["query"], kind, column)
    return out


class EventDirt:
    """Turns chosen clean event rows into dirty copies (or moves them, for late events)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def events(
        self, table: pa.Table, etype: np.ndarray, n: int, last_day: bool, next_id, day: str
    ) -> DirtyEvents:
        kinds = list(DIRTY_EVENT_KINDS)
        plan = self._plan(n, last_day)
        sources = self._sources(etype, [kinds[k] for k in plan])
        out = DirtyEvents([], [], [])
        rows = table.take(pa.array(sources, pa.int64())).to_pylist()
        for i, k, row in zip(sources.tolist(), plan, rows):
            kind = kinds[k]
            if kind == "late_event":
                out.late.append(i)
                continue
            if kind != "exact_duplicate":
                row["event_id"] = next_id()
            if kind == "broken_line":
                out.broken_lines.append((i, self._broken_line(row), row["event_id"]))
            else:
                out.copies.append((i, row, kind, self._break(row, kind, day)))
        return out

    def _plan(self, n: int, last_day: bool) -> np.ndarray:
        """The kind (index into DIRTY_EVENT_KINDS) of each of the n dirty rows; no late events
        on the last day, which has no next file to arrive in."""
        weights = np.array(
            [0.0 if (k == "late_event" and last_day) else v for k, v in DIRTY_EVENT_KINDS.items()]
        )
        counts = self.rng.multinomial(n, weights / weights.sum())
        return np.repeat(np.arange(len(weights)), counts)

    def _sources(self, etype: np.ndarray, kinds: list[str]) -> np.ndarray:
        """The clean row each dirty row copies: a purchase or return for the priced kinds."""
        rng = self.rng
        priced = np.flatnonzero((etype == PURCHASE) | (etype == RETURN))
        # Distinct sources, so a late (moved) row is never also the original of a duplicate.
        generic = rng.permutation(np.flatnonzero(etype != SEARCH))[: len(kinds)]
        return np.array(
            [
                priced[rng.integers(len(priced))]
                if kind in _PRICED_KINDS and len(priced)
                else generic[j]
                for j, kind in enumerate(kinds)
            ],
            dtype=np.int64,
        )

    def _broken_line(self, row: dict) -> str:
        """A CSV line with too few or too many fields."""
        values = ["" if row[c] is None else str(row[c]) for c in EVENT_COLUMNS]
        if self.rng.random() < 0.5:
            return ",".join(values[:3])
        return ",".join(values + ["x", "y"])

    def _break(self, row: dict, kind: str, day: str) -> str | None:
        """Breaks the row in place; returns the column at fault (None: the row as a whole)."""
        rng, pick = self.rng, self.pick
        if kind == "malformed_price":
            row["price"] = pick(["abc", "N/A", "12.99 EUR", "twelve"])
            return "price"
        if kind == "malformed_timestamp":
            row["event_ts"] = pick(
                [f"{day}T25:61:00Z", "yesterday", "N/A", f"{day[:4]}-02-30T10:00:00Z"]
            )
            return "event_ts"
        if kind == "unknown_event_type":
            row["event_type"] = pick(["clik", "purchace", "add-to-cart", "pageview"])
            return "event_type"
        if kind == "missing_required":
            options = ["event_id", "user_id", "session_id", "event_ts", "item_id"]
            if row["event_type"] == "impression":
                options += ["list_id", "position"]
            elif row["event_type"] == "purchase":
                options += ["quantity", "price"]
            column = pick(options)
            row[column] = None
            return column
        if kind == "near_duplicate":
            row["event_ts"] = shift_iso(row["event_ts"], int(rng.integers(50, 1000)))
            return None
        if kind in ("nonpositive_price", "zero_quantity"):
            if row["event_type"] not in ("purchase", "return"):  # no purchase today to copy
                row["event_type"], row["quantity"], row["price"] = "purchase", 1, "9.99"
            if kind == "zero_quantity":
                row["quantity"] = 0
                return "quantity"
            row["price"] = pick(["0.00", "-" + row["price"]])
            return "price"
        if kind == "timestamp_out_of_range":
            ts = row["event_ts"]
            row["event_ts"] = pick(["2099" + ts[4:], "2009" + ts[4:], "1970-01-01T00:00:00.000Z"])
            return "event_ts"
        if kind == "unknown_item":
            row["item_id"] = f"P9{int(rng.integers(0, 10**6)):06d}"
            return "item_id"
        return None  # exact_duplicate: the row as it was

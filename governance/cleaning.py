"""Cleaning rules: each a named, pure function over validated rows, each hit counted per batch.

A rule either *quarantines* a row (it is wrong: impossible values, unknown references,
outliers), *drops* it as a duplicate (it adds nothing: counted, not stored twice), *flags* it
(bot traffic: stored with `is_bot`, excluded from training features) or *normalises* it
(noise in free text). Thresholds are module constants so a reviewer sees them in one place.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

NEAR_DUPLICATE_WINDOW = timedelta(seconds=2)
FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks drift; a few minutes ahead is not "future"
PRICE_OUTLIER_FACTOR = 20.0  # x or 1/x the category median price
PRICE_OUTLIER_MIN_ITEMS = 5  # a category needs this many items before it has a "normal" price

# Bot sessions: hundreds of clicks a minute, inhuman event rates, clicks with no impression.
BOT_MIN_CLICKS = 20
BOT_CLICKS_PER_MINUTE = 60.0
BOT_MIN_EVENTS = 60
BOT_EVENTS_PER_SECOND = 2.0
BOT_ORPHAN_CLICK_SHARE = 0.8


def timestamp_out_of_range(ts: pd.Series, opened_at: datetime, now: datetime) -> pd.Series:
    """Reason per row ('before_shop_opened' / 'in_future') or None."""
    reason = pd.Series(None, index=ts.index, dtype=object)
    reason[ts < pd.Timestamp(opened_at)] = "timestamp_before_shop_opened"
    reason[ts > pd.Timestamp(now + FUTURE_TOLERANCE)] = "timestamp_in_future"
    return reason


def unknown_reference(values: pd.Series, known: set[str] | pd.Index) -> pd.Series:
    """True where a non-null value names nothing known (an item id, a category)."""
    known_index = known if isinstance(known, pd.Index) else pd.Index(list(known))
    return values.notna() & ~values.isin(known_index)


def exact_duplicates(df: pd.DataFrame, key: list[str], content: list[str]) -> pd.Series:
    """A row whose key, or whose whole content, already appeared earlier in the batch."""
    return df.duplicated(subset=key, keep="first") | df.duplicated(subset=content, keep="first")


def near_duplicates(df: pd.DataFrame, window: timedelta = NEAR_DUPLICATE_WINDOW) -> pd.Series:
    """Same user, item, type, list, quantity and price within `window` of the previous such event.

    Quantity and price are part of the key: two lines of one invoice for the same product with
    different quantities are two purchases, not a double send.
    """
    group = ["user_id", "item_id", "event_type", "list_id", "quantity", "price"]
    ordered = df.sort_values(group + ["event_ts"], kind="stable")
    keys = ordered[group].astype("string").fillna("\x00")
    same_group = (keys == keys.shift()).fillna(False).all(axis=1)
    gap = ordered["event_ts"].diff()
    hit = same_group & (gap <= pd.Timedelta(window))
    return hit.reindex(df.index)


def price_outliers(
    price: pd.Series, category: pd.Series, factor: float = PRICE_OUTLIER_FACTOR
) -> pd.Series:
    """Price more than `factor` times above or below its category's median."""
    median = price.groupby(category).transform("median")
    size = price.groupby(category).transform("size")
    ratio = price / median
    return (size >= PRICE_OUTLIER_MIN_ITEMS) & ((ratio > factor) | (ratio < 1.0 / factor))


def bot_sessions(events: pd.DataFrame) -> pd.Series:
    """True for every event of a session that behaves like a bot.

    Rates count what a person does (search, view, click, add to cart): impressions arrive a page
    at a time and an invoice's lines share one timestamp, so neither says anything about speed.
    """
    clicks = events["event_type"] == "click"
    acts = events["event_type"].isin(["search", "view", "click", "add_to_cart"])
    impressions = events.loc[
        events["event_type"] == "impression", ["session_id", "list_id", "item_id"]
    ]
    shown = pd.MultiIndex.from_frame(impressions.dropna())
    click_keys = pd.MultiIndex.from_frame(
        events[["session_id", "list_id", "item_id"]].fillna("\x00")
    )
    orphan = clicks & ~click_keys.isin(shown)

    per = pd.DataFrame(
        {
            "session_id": events["session_id"],
            "ts": events["event_ts"],
            "act": acts,
            "click": clicks,
            "orphan": orphan,
        }
    )
    stats = per.groupby("session_id").agg(
        n=("act", "sum"),
        first=("ts", "min"),
        last=("ts", "max"),
        clicks=("click", "sum"),
        orphans=("orphan", "sum"),
    )
    seconds = (stats["last"] - stats["first"]).dt.total_seconds().clip(lower=1.0)
    clicks_per_minute = stats["clicks"] / (seconds / 60.0)
    bot = (
        ((stats["clicks"] >= BOT_MIN_CLICKS) & (clicks_per_minute > BOT_CLICKS_PER_MINUTE))
        | ((stats["n"] >= BOT_MIN_EVENTS) & (stats["n"] / seconds > BOT_EVENTS_PER_SECOND))
        | (
            (stats["clicks"] >= BOT_MIN_CLICKS)
            & (stats["orphans"] / stats["clicks"].clip(lower=1) > BOT_ORPHAN_CLICK_SHARE)
        )
    )
    return events["session_id"].map(bot).fillna(False).astype(bool)


def normalise_text(text: pd.Series) -> pd.Series:
    """Noise in free text: control characters and runs of blanks. Case is kept (intent uses it)."""
    cleaned = text.str.replace(r"[\x00-\x1f\x7f]", " ", regex=True)
    cleaned = cleaned.str.replace(r"\s+", " ", regex=True).str.strip()
    return cleaned.where(cleaned != "", None)


def leaf_category(category_path: pd.Series) -> pd.Series:
    return category_path.str.split(">").str[-1].str.strip()


def count(mask: pd.Series) -> int:
    return int(np.asarray(mask, dtype=bool).sum())

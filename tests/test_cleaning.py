"""The cleaning rules, one by one, on small frames whose answer is known by construction."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from governance import cleaning

T0 = pd.Timestamp("2026-09-01T10:00:00Z")


def events(rows: list[dict]) -> pd.DataFrame:
    base = {
        "user_id": "u",
        "session_id": "s",
        "event_type": "view",
        "item_id": "i",
        "list_id": None,
        "quantity": pd.NA,
        "price": float("nan"),
        "event_ts": T0,
    }
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame["quantity"] = frame["quantity"].astype("Int64")
    return frame


def test_timestamps_out_of_range_are_named():
    ts = pd.Series(
        pd.to_datetime(["2009-12-31T00:00Z", "2026-09-01T00:00Z", "2099-01-01T00:00Z"], utc=True)
    )
    reason = cleaning.timestamp_out_of_range(
        ts, datetime(2010, 1, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert reason.fillna("ok").tolist() == [
        "timestamp_before_shop_opened",
        "ok",
        "timestamp_in_future",
    ]


def test_near_duplicates_need_the_same_content_within_the_window():
    frame = events(
        [
            {},
            {"event_ts": T0 + pd.Timedelta(seconds=1)},  # double send
            {"event_ts": T0 + pd.Timedelta(seconds=30)},  # a real second view
            {"event_type": "click", "event_ts": T0 + pd.Timedelta(seconds=1)},  # another type
            {"event_type": "purchase", "quantity": 1, "price": 5.0},
            {"event_type": "purchase", "quantity": 3, "price": 5.0},  # another line of the invoice
        ]
    )
    assert cleaning.near_duplicates(frame).tolist() == [False, True, False, False, False, False]


def test_exact_duplicates_by_key_or_by_content():
    frame = pd.DataFrame({"event_id": ["a", "a", "b", "c"], "x": [1, 1, 2, 2]})
    assert cleaning.exact_duplicates(frame, ["event_id"], ["x"]).tolist() == [
        False,
        True,
        False,
        True,
    ]


def test_bot_sessions_click_fast_or_without_impressions_but_invoices_do_not():
    fast_clicks = [
        {
            "session_id": "bot",
            "event_type": "click",
            "item_id": f"i{k}",
            "event_ts": T0 + pd.Timedelta(milliseconds=200 * k),
        }
        for k in range(40)
    ]
    human = [
        {"session_id": "human", "event_type": "impression", "list_id": "L", "item_id": f"i{k}"}
        for k in range(10)
    ]
    human += [
        {
            "session_id": "human",
            "event_type": "click",
            "list_id": "L",
            "item_id": "i3",
            "event_ts": T0 + pd.Timedelta(seconds=20),
        }
    ]
    invoice = [
        {
            "session_id": "invoice",
            "event_type": "purchase",
            "item_id": f"p{k}",
            "quantity": 1,
            "price": 2.0,
        }
        for k in range(300)
    ]
    frame = events(fast_clicks + human + invoice)
    flagged = cleaning.bot_sessions(frame).groupby(frame["session_id"]).all()
    assert flagged.to_dict() == {"bot": True, "human": False, "invoice": False}


def test_price_outliers_compare_with_the_category_median():
    price = pd.Series([10.0, 11, 9, 10, 12, 400, 0.1, 50])
    category = pd.Series(["a"] * 7 + ["b"])
    assert cleaning.price_outliers(price, category).tolist() == [False] * 5 + [True, True, False]


def test_normalise_text_removes_control_characters_and_blank_runs():
    text = pd.Series(["  red\tkettle \x00 ", "   ", None], dtype="string")
    assert cleaning.normalise_text(text).fillna("<missing>").tolist() == [
        "red kettle",
        "<missing>",
        "<missing>",
    ]


def test_unknown_reference_ignores_missing_values():
    values = pd.Series(["a", "zz", None])
    assert cleaning.unknown_reference(values, {"a"}).tolist() == [False, True, False]

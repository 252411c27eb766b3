"""Real-time path: push a user's fresh session state to the online store as events arrive.

    push_events(store, events_df, settings)   # events_df: governed `events` columns

The caller (ingest / serving) appends the events to the governed `events` table itself; this
module only updates the online `user_session` features through the `user_session_push` push
source with PushMode.ONLINE (the Postgres offline store cannot take offline pushes).

No double counting: the pushed values are the *recomputed* session state after the event --
counts over the session's clean non-impression events (from `events` plus any of
`events_df` not yet there, deduplicated by event_id), last 5 viewed items -- exactly what
features/sql/60_session.sql writes offline later for the same event. A replayed or late push
recomputes the same state; the batch features (user_stats etc.) never include pushed values.
Impressions and bot events push nothing.
"""

from __future__ import annotations

import pandas as pd

from governance.db import transaction

ITEM_EVENTS = ("view", "click", "add_to_cart")
COLUMNS = [
    "user_id",
    "event_timestamp",
    "session_events",
    "session_views",
    "session_clicks",
    "session_add_to_carts",
    "session_searches",
    "last_viewed_items",
    "last_viewed_categories",
]


def _session_rows(settings, keys: list[tuple[str, str]]) -> pd.DataFrame:
    with transaction(settings) as cur:
        cur.execute(
            """SELECT e.event_id, e.user_id, e.session_id, e.event_type, e.item_id,
                      e.event_ts, i.category
               FROM events e
               JOIN unnest(%s::text[], %s::text[]) k(user_id, session_id)
                 ON e.user_id = k.user_id AND e.session_id = k.session_id
               LEFT JOIN items i ON i.item_id = e.item_id
               WHERE NOT e.is_bot AND e.event_type <> 'impression'""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        rows = cur.fetchall()
        cols = [d[0] for d in cur.description]
    return pd.DataFrame(rows, columns=cols)


def _categories(settings, item_ids: list[str]) -> dict[str, str]:
    if not item_ids:
        return {}
    with transaction(settings) as cur:
        cur.execute("SELECT item_id, category FROM items WHERE item_id = ANY(%s)", (item_ids,))
        return dict(cur.fetchall())


def session_states(events_df: pd.DataFrame, settings=None) -> pd.DataFrame:
    """The latest session state per user among the pushed events (one row per user)."""
    ev = events_df.copy()
    ev["event_ts"] = pd.to_datetime(ev["event_ts"], utc=True)
    if "is_bot" in ev:
        ev = ev[~ev["is_bot"].fillna(False).astype(bool)]
    ev = ev[ev["event_type"] != "impression"]
    if ev.empty:
        return pd.DataFrame(columns=COLUMNS)
    keys = sorted(set(zip(ev["user_id"], ev["session_id"])))
    known = _session_rows(settings, keys)
    fresh = ev[~ev["event_id"].isin(set(known["event_id"]))].copy() if len(known) else ev.copy()
    fresh = fresh.drop_duplicates("event_id")
    cats = _categories(settings, sorted(set(fresh["item_id"].dropna())))
    fresh["category"] = fresh["item_id"].map(cats)
    allev = pd.concat(
        [
            known,
            fresh[
                known.columns
                if len(known)
                else [
                    "event_id",
                    "user_id",
                    "session_id",
                    "event_type",
                    "item_id",
                    "event_ts",
                    "category",
                ]
            ],
        ],
        ignore_index=True,
    )
    allev["event_ts"] = pd.to_datetime(allev["event_ts"], utc=True)
    out = []
    # The latest pushed event per user picks the session; the state is the one after that
    # session's latest known event, so a replayed old event never rolls the state back.
    last = ev.sort_values(["event_ts", "event_id"]).groupby("user_id").tail(1)
    for r in last.itertuples():
        s = allev[(allev.user_id == r.user_id) & (allev.session_id == r.session_id)]
        s = s.sort_values(["event_ts", "event_id"])
        r = s.iloc[-1]
        viewed = s[s.event_type.isin(ITEM_EVENTS) & s.item_id.notna()].iloc[::-1].head(5)
        out.append(
            {
                "user_id": r.user_id,
                "event_timestamp": r.event_ts,
                "session_events": len(s),
                "session_views": int((s.event_type == "view").sum()),
                "session_clicks": int((s.event_type == "click").sum()),
                "session_add_to_carts": int((s.event_type == "add_to_cart").sum()),
                "session_searches": int((s.event_type == "search").sum()),
                "last_viewed_items": "|".join(viewed.item_id),
                "last_viewed_categories": "|".join(viewed.category.fillna("")),
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)


def push_events(store, events_df: pd.DataFrame, settings=None) -> pd.DataFrame:
    """Push the users' new session states online; returns what was pushed."""
    from feast.data_source import PushMode  # heavy: only the push path needs Feast

    states = session_states(events_df, settings)
    if len(states):
        store.push("user_session_push", states, to=PushMode.ONLINE)
    return states

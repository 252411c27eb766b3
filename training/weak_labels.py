"""Weak intent labels from behaviour, for search logs nobody labelled.

Each rule is a named, separately testable function over the events that follow one search in
its session (up to the next search). Rules run in priority order; the first that fires labels
the query and records its name in `rule`, so a label can always be traced back to why.
Bots are excluded before any rule sees an event.

    buy_after_search      a purchase follows       -> buy_product, category of the bought item
    cart_after_search     an add-to-cart follows   -> buy_product, category of that item
    browse_one_category   >= 2 views/clicks, all in one category -> browse_category, that category
    browse_many           >= 3 views/clicks across several categories
                          -> browse_category, no category

Queries with no engagement get no label (abstain) rather than a guessed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from governance.db import engine

EVENTS_SQL = """
SELECT e.session_id, e.event_ts, e.event_type, e.item_id, e.query, i.category
FROM events e LEFT JOIN items i ON i.item_id = e.item_id
WHERE NOT e.is_bot AND e.event_type IN ('search', 'view', 'click', 'add_to_cart', 'purchase')
ORDER BY e.session_id, e.event_ts, e.event_id
"""

ENGAGE = ("view", "click")


@dataclass(frozen=True)
class Rule:
    name: str
    intent: str
    fn: Callable[[pd.DataFrame], str | None | bool]
    """Returns a category (str), True (fires without a category) or None/False (abstains)."""


def _first_category(after: pd.DataFrame, event_type: str):
    hit = after[after["event_type"] == event_type]
    if hit.empty:
        return None
    cat = hit["category"].iloc[0]
    return cat if isinstance(cat, str) else True


def buy_after_search(after: pd.DataFrame):
    return _first_category(after, "purchase")


def cart_after_search(after: pd.DataFrame):
    return _first_category(after, "add_to_cart")


def browse_one_category(after: pd.DataFrame, min_views: int = 2):
    views = after[after["event_type"].isin(ENGAGE)]["category"].dropna()
    if len(views) >= min_views and views.nunique() == 1:
        return views.iloc[0]
    return None


def browse_many(after: pd.DataFrame, min_views: int = 3):
    views = after[after["event_type"].isin(ENGAGE)]["category"].dropna()
    return len(views) >= min_views and views.nunique() > 1


RULES: tuple[Rule, ...] = (
    Rule("buy_after_search", "buy_product", buy_after_search),
    Rule("cart_after_search", "buy_product", cart_after_search),
    Rule("browse_one_category", "browse_category", browse_one_category),
    Rule("browse_many", "browse_category", browse_many),
)


def label_events(
    events: pd.DataFrame, rules: tuple[Rule, ...] = RULES, intent_map: dict[str, str] | None = None
) -> pd.DataFrame:
    """events (session_id, event_ts, event_type, item_id, query, category[, is_bot]) ->
    one row per labelled search: query, intent, category, rule, source='weak'.

    `intent_map` renames the rules' intents to another shop's taxonomy.
    """
    ev = events
    if "is_bot" in ev:
        ev = ev[~ev["is_bot"].astype(bool)]
    ev = ev.sort_values(["session_id", "event_ts"], kind="mergesort").reset_index(drop=True)
    ev["search_no"] = (ev["event_type"] == "search").groupby(ev["session_id"]).cumsum()
    rows = []
    for (_, _no), group in ev[ev["search_no"] > 0].groupby(["session_id", "search_no"], sort=False):
        query = group["query"].iloc[0]
        if not isinstance(query, str) or not query.strip():
            continue
        after = group.iloc[1:]
        for rule in rules:
            out = rule.fn(after)
            if out is None or out is False:
                continue
            intent = (intent_map or {}).get(rule.intent, rule.intent)
            rows.append(
                {
                    "query": query.strip(),
                    "intent": intent,
                    "category": out if isinstance(out, str) else None,
                    "rule": rule.name,
                    "source": "weak",
                }
            )
            break
    return pd.DataFrame(rows, columns=["query", "intent", "category", "rule", "source"])


def load_events(settings) -> pd.DataFrame:
    with engine(settings).connect() as conn:
        return pd.read_sql_query(EVENTS_SQL, conn)


def weak_labels(settings, intent_map: dict[str, str] | None = None) -> pd.DataFrame:
    return label_events(load_events(settings), intent_map=intent_map)


def rule_counts(labels: pd.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in labels["rule"].value_counts().items()}

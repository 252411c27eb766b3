"""What the simulated shop looks like: its size presets, click model and kinds of dirt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from governance.simulate import vocabulary

DAY_MS = 86_400_000

# Relative frequency of each dirty kind among the injected event rows; the names are the
# `kind` values in truth/dirty.parquet, which the validation tests reconcile against.
DIRTY_EVENT_KINDS = {
    "malformed_price": 1.0,  # price like "abc"
    "malformed_timestamp": 1.0,  # event_ts that no ISO parser accepts
    "unknown_event_type": 1.0,  # "clik", "purchace", ...
    "missing_required": 1.5,  # a required field left empty (see `column`)
    "broken_line": 0.5,  # a CSV line with the wrong number of fields
    "exact_duplicate": 1.5,  # the same row, event_id included, twice
    "near_duplicate": 1.5,  # same user/item/type/list within 1 s, new event_id
    "late_event": 1.0,  # a valid row that arrives in the next day's file
    "nonpositive_price": 0.75,  # price 0 or negative on a priced event
    "zero_quantity": 0.5,  # purchase with quantity 0
    "timestamp_out_of_range": 1.0,  # event_ts in 2099 or before the shop opened
    "unknown_item": 1.0,  # item_id that is not in items.csv.gz
}
DIRTY_USER_KINDS = ["missing_user_id", "future_signup"]
DIRTY_ITEM_KINDS = ["nonpositive_price", "price_outlier", "empty_title"]
DIRTY_QUERY_KINDS = ["empty_query", "missing_intent", "unknown_category"]

# Hourly shape of human traffic: quiet nights, lunch and evening peaks.
HOURLY_TRAFFIC = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 10, 10, 9, 6, 4], float
)


@dataclass(frozen=True)
class ClickModel:
    """p(click) = sigmoid(b0 + b_aff*affinity + b_price*price_fit + b_qual*quality
    + b_rel*relevant - b_pos*log1p(position))."""

    b0: float = -5.0
    b_aff: float = 6.0
    b_price: float = 1.6
    b_qual: float = 2.2
    b_rel: float = 1.4
    b_pos: float = 0.8
    price_width: float = 0.5  # log-price distance at which price_fit drops to exp(-1/2)

    def p_click(self, affinity, price_fit, quality, relevant, position):
        logit = (
            self.b0
            + self.b_aff * affinity
            + self.b_price * price_fit
            + self.b_qual * quality
            + self.b_rel * relevant
            - self.b_pos * np.log1p(position)
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def p_click_position_free(self, affinity, price_fit, quality, relevant):
        """The click probability without the examination (position) term: how much the user
        wants the item, which is all a ranker that never sees the slot can hope to learn.
        Equal to p_click at the top slot (log1p(0) = 0)."""
        return self.p_click(affinity, price_fit, quality, relevant, np.zeros_like(price_fit))


@dataclass
class SimConfig:
    seed: int = 7
    events: int = 1_000_000  # target clean events over the whole run (dirty rows come on top)
    n_users: int | None = None  # default: events // 100
    n_items: int | None = None  # default: events // 500
    days: int = 30
    start: datetime = datetime(2026, 9, 1, tzinfo=UTC)
    dirty_share: float = 0.02  # of event rows; users/items/queries get a few each as well
    bot_share: float = 0.005  # of users
    bot_event_share: float = 0.03  # of each day's events
    new_item_share: float = 0.1  # items listed during the simulated period
    new_user_share: float = 0.05  # users who sign up during the simulated period
    search_share: float = 0.6  # of human sessions; the rest browse recommendations
    search_page_size: int = 10
    rec_page_size: int = 8
    n_labelled_queries: int | None = None  # default: events // 300, clipped to 2000..20000
    query_variants: int = 6  # distinct query strings per (category, intent) in the event log
    query_style: str = "hard"  # "hard" (realistic, see simulate/queries.py) or "templates"
    affinity_concentration: float = 0.15  # Dirichlet alpha: small means few favourite leaves
    click_model: ClickModel = field(default_factory=ClickModel)
    gzip_level: int = 6

    def __post_init__(self):
        if self.n_users is None:
            self.n_users = max(self.events // 100, 50)
        if self.n_items is None:
            self.n_items = max(self.events // 500, 2 * len(vocabulary.LEAVES))
        if self.n_labelled_queries is None:
            self.n_labelled_queries = int(np.clip(self.events // 300, 2000, 20000))
        if self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=UTC)


# Named sizes, so tests, the demo and the benchmarks draw the same shop at different scales.
# tiny: seconds, for test fixtures (every leaf has items, bots and dirt of every kind);
# demo: what `make demo` ingests; bench: the benchmarks' default size.
PRESETS: dict[str, dict] = {
    # tiny keeps template queries: fixtures need models that learn from a few hundred rows.
    "tiny": dict(events=6_000, days=3, n_users=150, n_items=120, query_style="templates"),
    "demo": dict(events=300_000, days=14),
    "bench": dict(events=1_000_000, days=30),
}


def preset(name: str, **overrides) -> SimConfig:
    """A SimConfig of one of the PRESETS, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return SimConfig(**{**PRESETS[name], **overrides})

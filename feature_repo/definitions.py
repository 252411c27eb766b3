"""cartwise Feast definitions: declarative only, over tables the feature pipeline writes.

The tables and their time semantics are documented in `features/pipeline.py`: a snapshot row
stamped T describes its entity from clean events with event_ts < T. Feature names are unique
across views so training sets and online responses need no view prefixes.

Feature services are model contracts, versioned with the model: `ranker_v1` to `ranker_v3`,
`intent_v1`.

Sources: the PostgreSQL feature tables, or with `CARTWISE_OFFLINE_ENGINE=spark` the same tables
as Parquet under `CARTWISE_LAKE_FEATURES` (written by features.spark_pipeline) for Feast's
Spark offline store and compute engine. Only `_source` looks at the engine; views, services and
feature names are the same on both.
"""

import os
from datetime import timedelta

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.stream_feature_view import StreamFeatureView
from feast.types import Array, Float32, Float64, Int64, String

# Who answers for a definition, as the Feast UI shows it: the feature pipeline's team owns the
# entities and views; each model's team owns its feature services (the train/serve contracts).
FEATURES_OWNER = "cartwise-features"
RANKER_OWNER = "cartwise-ranking"
INTENT_OWNER = "cartwise-search"

# ---------------------------------------------------------------- entities
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="Shopper (keyed-hash pseudonym).",
    owner=FEATURES_OWNER,
    tags={"pii": "pseudonymised"},
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="Catalogue item.",
    owner=FEATURES_OWNER,
    tags={"pii": "none"},
)
category = Entity(
    name="category",
    join_keys=["category"],
    value_type=ValueType.STRING,
    description="Leaf category of the catalogue tree.",
    owner=FEATURES_OWNER,
    tags={"pii": "none"},
)
query = Entity(
    name="query",
    join_keys=["query"],
    value_type=ValueType.STRING,
    description="Search query, lower-cased and trimmed.",
    owner=FEATURES_OWNER,
    tags={"pii": "free text"},
)


def _source(table: str):
    """The feature table `table`: in PostgreSQL, or as Parquet in the lake for Spark."""
    if os.environ.get("CARTWISE_OFFLINE_ENGINE", "postgres") == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(
            name=f"{table}_source",
            path=f"{os.environ['CARTWISE_LAKE_FEATURES']}/{table}",
            file_format="parquet",
            timestamp_field="event_timestamp",
        )
    return PostgreSQLSource(
        name=f"{table}_source",
        query=f"SELECT * FROM {table}",
        timestamp_field="event_timestamp",
    )


# One Field a line, name, type and description together, as Feast's templates write them:
# the formatter would fold the long ones over three lines each.
# fmt: off
# ---------------------------------------------------------------- batch feature views
user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="impressions_1h", dtype=Int64, description="Items shown to the user in [T-1h, T)."),
        Field(name="clicks_1h", dtype=Int64, description="Clicks by the user in [T-1h, T)."),
        Field(name="ctr_1h", dtype=Float64, description="clicks_1h / impressions_1h (0 when no impression)."),
        Field(name="impressions_1d", dtype=Int64, description="Items shown to the user in [T-1d, T)."),
        Field(name="clicks_1d", dtype=Int64, description="Clicks by the user in [T-1d, T)."),
        Field(name="ctr_1d", dtype=Float64, description="clicks_1d / impressions_1d (0 when no impression)."),
        Field(name="impressions_7d", dtype=Int64, description="Items shown to the user in [T-7d, T)."),
        Field(name="clicks_7d", dtype=Int64, description="Clicks by the user in [T-7d, T)."),
        Field(name="ctr_7d", dtype=Float64, description="clicks_7d / impressions_7d (0 when no impression)."),
        Field(name="impressions_30d", dtype=Int64, description="Items shown to the user in [T-30d, T)."),
        Field(name="clicks_30d", dtype=Int64, description="Clicks by the user in [T-30d, T)."),
        Field(name="ctr_30d", dtype=Float64, description="clicks_30d / impressions_30d (0 when no impression)."),
        Field(name="purchases_30d", dtype=Int64, description="Purchase events by the user in [T-30d, T)."),
        Field(name="units_30d", dtype=Int64, description="Units bought by the user in [T-30d, T) (quantity, 1 when missing)."),
        Field(name="spend_30d", dtype=Float64, description="Money spent by the user in [T-30d, T): sum of quantity * unit price."),
        Field(name="avg_price_paid_30d", dtype=Float64, description="spend_30d / units_30d: average unit price paid (null: no purchase)."),
        Field(name="last_event_ts_s", dtype=Int64, description="Unix seconds (UTC) of the user's last clean event before T."),
        Field(name="top_category_1", dtype=String, description="Category with most of the user's interactions in [T-30d, T)."),
        Field(name="top_category_1_share", dtype=Float64, description="Share of the user's 30-day interactions in top_category_1."),
        Field(name="top_category_2", dtype=String, description="Second category by the user's interactions in [T-30d, T)."),
        Field(name="top_category_2_share", dtype=Float64, description="Share of the user's 30-day interactions in top_category_2."),
        Field(name="top_category_3", dtype=String, description="Third category by the user's interactions in [T-30d, T)."),
        Field(name="top_category_3_share", dtype=Float64, description="Share of the user's 30-day interactions in top_category_3."),
        Field(name="most_active_hour", dtype=Int64, description="UTC hour of day (0-23) with most of the user's events in [T-30d, T)."),
        Field(name="active_hour_share", dtype=Float64, description="Share of the user's 30-day events in most_active_hour."),
        Field(name="active_hours_count", dtype=Int64, description="Distinct UTC hours of day the user was active in [T-30d, T)."),
    ],
    source=_source("user_features"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "user_features"},
    online=True,
    description="User activity at hourly snapshots, windows [T-w, T) of clean events.",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=30),
    schema=[
        Field(name="item_category", dtype=String, description="Leaf category of the item (current catalogue row)."),
        Field(name="item_impressions_7d", dtype=Int64, description="Times the item was shown in [T-7d, T)."),
        Field(name="item_clicks_7d", dtype=Int64, description="Clicks on the item in [T-7d, T)."),
        Field(name="item_ctr_smoothed_7d", dtype=Float64, description="7-day CTR shrunk to the prior: (clicks + prior * k) / (impressions + k)."),
        Field(name="item_impressions_30d", dtype=Int64, description="Times the item was shown in [T-30d, T)."),
        Field(name="item_clicks_30d", dtype=Int64, description="Clicks on the item in [T-30d, T)."),
        Field(name="item_ctr_smoothed_30d", dtype=Float64, description="30-day CTR shrunk to the prior: (clicks + prior * k) / (impressions + k)."),
        Field(name="item_add_to_cart_rate_30d", dtype=Float64, description="Add-to-carts / (clicks + views) on the item in [T-30d, T)."),
        Field(name="item_conversion_rate_30d", dtype=Float64, description="Purchases / (clicks + views) of the item in [T-30d, T)."),
        Field(name="item_purchases_30d", dtype=Int64, description="Purchase events of the item in [T-30d, T)."),
        Field(name="item_popularity_trend", dtype=Float64, description="Daily interactions over 7 days / over 30 days (>1: rising)."),
        Field(name="item_price", dtype=Float64, description="Current unit price of the item."),
        Field(name="item_price_rel_category", dtype=Float64, description="item_price / median price of the item's category."),
        Field(name="item_listed_at_s", dtype=Int64, description="Unix seconds (UTC) when the item was listed."),
        Field(name="item_age_days", dtype=Float64, description="Days from listing to T (0 when listed later)."),
    ],
    source=_source("item_features"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "item_features"},
    online=True,
    description="Item engagement (smoothed CTR, cart and conversion rates, trend) and price.",
)

category_stats = FeatureView(
    name="category_stats",
    entities=[category],
    ttl=timedelta(days=30),
    schema=[
        Field(name="cat_impressions_30d", dtype=Int64, description="Impressions of the category's items in [T-30d, T)."),
        Field(name="cat_clicks_30d", dtype=Int64, description="Clicks on the category's items in [T-30d, T)."),
        Field(name="cat_ctr_smoothed_30d", dtype=Float64, description="30-day category CTR shrunk to the prior, as item_ctr_smoothed_30d."),
        Field(name="cat_purchases_30d", dtype=Int64, description="Purchase events of the category's items in [T-30d, T)."),
        Field(name="cat_n_items", dtype=Int64, description="Items in the category in the current catalogue."),
        Field(name="cat_median_price", dtype=Float64, description="Median current price of the category's items."),
    ],
    source=_source("category_features"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "category_features"},
    online=True,
    description="Category engagement of its items in 30 days, size and median price.",
)

user_category_affinity = FeatureView(
    name="user_category_affinity",
    entities=[user, category],
    ttl=timedelta(days=30),
    schema=[
        Field(name="uc_interactions_30d", dtype=Int64, description="User's views, clicks, carts and purchases in the category in [T-30d, T)."),
        Field(name="uc_clicks_30d", dtype=Int64, description="User's clicks in the category in [T-30d, T)."),
        Field(name="uc_purchases_30d", dtype=Int64, description="User's purchases in the category in [T-30d, T)."),
        Field(name="uc_affinity_30d", dtype=Float64, description="uc_interactions_30d / all the user's interactions in [T-30d, T)."),
    ],
    source=_source("user_category_features"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "user_category_features"},
    online=True,
    description="Share of the user's last-30-day interactions that fell in the category.",
)

query_stats = FeatureView(
    name="query_stats",
    entities=[query],
    ttl=timedelta(days=90),
    schema=[
        Field(name="searches_30d", dtype=Int64, description="Searches for the query in [T-30d, T) (rows only for >= min searches)."),
        Field(name="query_clicks_30d", dtype=Int64, description="Clicks on items from the query's results in [T-30d, T)."),
        Field(name="query_ctr_30d", dtype=Float64, description="query_clicks_30d / searches_30d."),
        Field(name="n_clicked_categories", dtype=Int64, description="Distinct categories clicked from the query's results in [T-30d, T)."),
        Field(name="q_top_category_1", dtype=String, description="Category most clicked from the query's results in [T-30d, T)."),
        Field(name="q_top_category_1_share", dtype=Float64, description="Share of the query's 30-day clicks in q_top_category_1."),
        Field(name="q_top_category_2", dtype=String, description="Second category by clicks from the query's results in [T-30d, T)."),
        Field(name="q_top_category_2_share", dtype=Float64, description="Share of the query's 30-day clicks in q_top_category_2."),
        Field(name="labelled_intent", dtype=String, description="Most frequent human label of the query's intent (null: unlabelled)."),
        Field(name="labelled_category", dtype=String, description="Category labelled with that intent (null: unlabelled or none)."),
    ],
    source=_source("query_features"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "query_features"},
    online=True,
    description="Frequent queries: categories their searchers click, labelled intent.",
)

item_title_embedding = FeatureView(
    name="item_title_embedding",
    entities=[item],
    ttl=timedelta(0),  # never expires: valid until the title changes
    schema=[
        Field(name="title_embedding", dtype=Array(Float32), description="all-MiniLM-L6-v2 mean-pooled, L2-normalised title embedding (384 floats).")
    ],
    source=_source("item_embeddings"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "item_embeddings"},
    online=True,
    description="all-MiniLM-L6-v2 mean-pooled, L2-normalised title embedding (384).",
)

user_recent_embedding = FeatureView(
    name="user_recent_embedding",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="recent_items_embedding", dtype=Array(Float32), description="Mean title embedding of the user's last 20 viewed/clicked/carted items.")
    ],
    source=_source("user_embeddings"),
    owner=FEATURES_OWNER,
    tags={"layer": "batch", "table": "user_embeddings"},
    online=True,
    description="Mean title embedding of the user's last 20 viewed/clicked/carted items.",
)

# ---------------------------------------------------------------- push / stream
user_session_push = PushSource(
    name="user_session_push",
    batch_source=_source("user_session_features"),
    description="Session state pushed by features.realtime as events arrive (online only).",
    owner=FEATURES_OWNER,
    tags={"layer": "push", "table": "user_session_features"},
)

user_session = StreamFeatureView(
    name="user_session",
    source=user_session_push,
    entities=[user],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="session_events", dtype=Int64, description="Clean non-impression events so far in the user's current session."),
        Field(name="session_views", dtype=Int64, description="Views so far in the session."),
        Field(name="session_clicks", dtype=Int64, description="Clicks so far in the session."),
        Field(name="session_add_to_carts", dtype=Int64, description="Add-to-carts so far in the session."),
        Field(name="session_searches", dtype=Int64, description="Searches so far in the session."),
        Field(name="last_viewed_items", dtype=String, description="Session's last 5 viewed/clicked/carted items, newest first, '|'-joined."),
        Field(name="last_viewed_categories", dtype=String, description="Categories of last_viewed_items, same order ('|'-joined, as the items)."),
    ],
    timestamp_field="event_timestamp",
    online=True,
    offline=False,
    owner=FEATURES_OWNER,
    tags={"layer": "stream", "pushed_by": "features.realtime"},
    description="Fast session features; same values offline from user_session_features.",
)

# ---------------------------------------------------------------- on-demand views
# Feast 0.67 checks an on-demand view's declared output Fields against the ones it infers from the
# UDF, and Field equality includes the description, so a described output Field fails `feast
# apply`. Each on-demand view's description therefore names and describes its outputs instead.
request_context = RequestSource(
    name="request_context",
    schema=[
        Field(name="request_ts_s", dtype=Int64, description="Unix seconds (UTC) of the request, or of the label in a training set.")
    ],
    description="Unix seconds (UTC) of the request, or of the label in a training set.",
    owner=FEATURES_OWNER,
    tags={"layer": "request"},
)
query_request = RequestSource(
    name="query_request",
    schema=[
        Field(name="query_embedding", dtype=Array(Float32), description="MiniLM embedding of the request's query (384 floats).")
    ],
    description="MiniLM embedding of the request's query (features.embeddings.embed_texts).",
    owner=FEATURES_OWNER,
    tags={"layer": "request"},
)


@on_demand_feature_view(
    sources=[request_context],
    schema=[
        Field(name="hour_of_day", dtype=Int64),
        Field(name="day_of_week", dtype=Int64),
    ],
    mode="python",
    description=(
        "hour_of_day: UTC hour of the request (0-23); day_of_week: Day of week of the request in "
        "UTC (Monday = 0)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def request_time_features(inputs: dict) -> dict:
    """UTC hour (0-23) and ISO day of week - 1 (Monday = 0) of the request."""
    ts = inputs["request_ts_s"]
    return {
        "hour_of_day": [None if t is None else (int(t) // 3600) % 24 for t in ts],
        "day_of_week": [None if t is None else (int(t) // 86400 + 3) % 7 for t in ts],
    }


@on_demand_feature_view(
    sources=[user_stats[["last_event_ts_s"]], request_context],
    schema=[Field(name="seconds_since_last_activity", dtype=Float64)],
    mode="python",
    description=(
        "seconds_since_last_activity: Request time - last_event_ts_s in seconds (-1: unknown)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def user_recency(inputs: dict) -> dict:
    """Request time - the user's last clean event before their latest snapshot (-1: unknown)."""
    return {
        "seconds_since_last_activity": [
            -1.0 if last is None or now is None else float(max(int(now) - int(last), 0))
            for last, now in zip(inputs["last_event_ts_s"], inputs["request_ts_s"])
        ]
    }


@on_demand_feature_view(
    sources=[item_stats[["item_price"]], user_stats[["avg_price_paid_30d"]]],
    schema=[
        Field(name="price_to_user_avg", dtype=Float64),
        Field(name="price_minus_user_avg", dtype=Float64),
    ],
    mode="python",
    description=(
        "price_to_user_avg: item_price / avg_price_paid_30d (-1: unknown); price_minus_user_avg: "
        "item_price - avg_price_paid_30d (0: unknown)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def price_vs_user_avg(inputs: dict) -> dict:
    """Item price against the user's average unit price paid in 30 days (-1 / 0: unknown)."""
    ratio, diff = [], []
    for price, avg in zip(inputs["item_price"], inputs["avg_price_paid_30d"]):
        ok = price is not None and avg is not None and avg > 0
        ratio.append(float(price) / float(avg) if ok else -1.0)
        diff.append(float(price) - float(avg) if ok else 0.0)
    return {"price_to_user_avg": ratio, "price_minus_user_avg": diff}


@on_demand_feature_view(
    sources=[item_title_embedding, query_request],
    schema=[Field(name="query_item_cosine", dtype=Float64)],
    mode="python",
    description="query_item_cosine: Cosine of query_embedding and title_embedding (0: unknown).",
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def query_item_similarity(inputs: dict) -> dict:
    """Cosine between the request's query embedding and the item title embedding (0: unknown)."""
    # One definition for serving and the set-based training path (features.similarity).
    from features.similarity import cosine

    return {"query_item_cosine": cosine(inputs["query_embedding"], inputs["title_embedding"])}


@on_demand_feature_view(
    sources=[item_title_embedding, user_recent_embedding],
    schema=[Field(name="user_item_cosine", dtype=Float64)],
    mode="python",
    description=(
        "user_item_cosine: Cosine of recent_items_embedding and title_embedding (0: unknown)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def user_item_similarity(inputs: dict) -> dict:
    """Cosine between the user's recent-items embedding and the item title (0: unknown)."""
    from features.similarity import cosine

    return {"user_item_cosine": cosine(inputs["recent_items_embedding"], inputs["title_embedding"])}


@on_demand_feature_view(
    sources=[
        user_session[["last_viewed_categories", "session_views"]],
        item_stats[["item_category"]],
    ],
    schema=[
        Field(name="item_in_session_categories", dtype=Int64),
        Field(name="session_category_rank", dtype=Int64),
    ],
    mode="python",
    description=(
        "item_in_session_categories: 1 when the item's category was viewed earlier in the "
        "session, else 0; session_category_rank: Recency rank of the item's category in the "
        "session (1: latest; 0: none)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def session_category_match(inputs: dict) -> dict:
    """Whether the item's category was viewed earlier in the session, and how recently.

    The session's categories arrive by push within a second of a view, so this is what lets a
    ranking react to what the user is doing now. Rank 1 is the latest category; 0 means not
    viewed in the session (or no session known).
    """
    match, rank = [], []
    for viewed, category in zip(inputs["last_viewed_categories"], inputs["item_category"]):
        recent = [c for c in (viewed or "").split("|") if c]
        order = list(dict.fromkeys(recent))
        hit = category is not None and category in order
        match.append(1 if hit else 0)
        rank.append(order.index(category) + 1 if hit else 0)
    return {"item_in_session_categories": match, "session_category_rank": rank}


@on_demand_feature_view(
    sources=[
        query_stats[
            [
                "q_top_category_1",
                "q_top_category_1_share",
                "q_top_category_2",
                "q_top_category_2_share",
            ]
        ],
        item_stats[["item_category"]],
    ],
    schema=[
        Field(name="query_category_share", dtype=Float64),
        Field(name="query_top_category_match", dtype=Float64),
    ],
    mode="python",
    description=(
        "query_category_share: Share of the query's 30-day clicks that went to the item's "
        "category (its top two categories; 0 for any other; null: no query, or a query without "
        "clicked categories in query_stats); query_top_category_match: 1 when the item's "
        "category is the query's most clicked one, else 0 (null as the share)."
    ),
    owner=FEATURES_OWNER,
    tags={"layer": "on_demand"},
)
def query_category_match(inputs: dict) -> dict:
    """How relevant the item's category is to the request's query, from what the query's
    searchers clicked: a query-item relevance for search lists. Recommendation lists have no
    query, so both values are null there (the ranker adds a missing indicator)."""

    # The registry stores the function alone, so its helper lives inside it.
    def _unknown(value) -> bool:
        """None, or the NaN a missing value becomes in Feast's offline (pandas) path."""
        return value is None or (isinstance(value, float) and value != value)

    share, top = [], []
    for c1, s1, c2, s2, category in zip(
        inputs["q_top_category_1"],
        inputs["q_top_category_1_share"],
        inputs["q_top_category_2"],
        inputs["q_top_category_2_share"],
        inputs["item_category"],
    ):
        if _unknown(c1):
            share.append(None)
            top.append(None)
            continue
        hit1 = not _unknown(category) and category == c1
        hit2 = not _unknown(category) and not _unknown(c2) and category == c2
        share.append(float(s1) if hit1 else float(s2) if hit2 else 0.0)
        top.append(1.0 if hit1 else 0.0)
    return {"query_category_share": share, "query_top_category_match": top}


# fmt: on
# ---------------------------------------------------------------- feature services
# ranker_v1 needs entity rows with user_id, item_id, category (the item's leaf category),
# event_timestamp and request_ts_s. Pinned features: changing this list is a new version.
ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        user_stats,
        item_stats,
        category_stats,
        user_category_affinity,
        user_session,
        request_time_features,
        user_recency,
        price_vs_user_avg,
        user_item_similarity,
    ],
    owner=RANKER_OWNER,
    tags={"model": "ranker", "version": "1"},
    description="Ranker contract: one row per (user, item) candidate at a request time.",
)

# ranker_v2 = ranker_v1 + the item-in-session match, so a ranking follows the live session.
ranker_v2 = FeatureService(
    name="ranker_v2",
    features=[
        user_stats,
        item_stats,
        category_stats,
        user_category_affinity,
        user_session,
        request_time_features,
        user_recency,
        price_vs_user_avg,
        user_item_similarity,
        session_category_match,
    ],
    owner=RANKER_OWNER,
    tags={"model": "ranker", "version": "2"},
    description="ranker_v1 + whether the item's category was viewed earlier in the session.",
)

# ranker_v3 = ranker_v2 + query-item relevance: how much of the query's clicks went to the
# item's category. Entity rows carry `query` (lower-cased, trimmed; null on recommendation
# lists, which leaves the relevance null).
ranker_v3 = FeatureService(
    name="ranker_v3",
    features=[
        user_stats,
        item_stats,
        category_stats,
        user_category_affinity,
        user_session,
        request_time_features,
        user_recency,
        price_vs_user_avg,
        user_item_similarity,
        session_category_match,
        query_category_match,
    ],
    owner=RANKER_OWNER,
    tags={"model": "ranker", "version": "3"},
    description="ranker_v2 + the query's click share in the item's category (search lists).",
)


# intent_v1 needs entity rows with query, event_timestamp and request_ts_s.
intent_v1 = FeatureService(
    name="intent_v1",
    features=[query_stats, request_time_features],
    owner=INTENT_OWNER,
    tags={"model": "intent", "version": "1"},
    description="Query-level features for the intent classifier.",
)

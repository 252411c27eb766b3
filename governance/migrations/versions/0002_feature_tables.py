"""Feature tables: hourly aggregates, time-stamped feature snapshots, embeddings, watermark.

Written by the feature pipeline (`python -m features.pipeline`), read by Feast as
PostgreSQLSource tables (see `feature_repo/`). Semantics are documented in
`features/pipeline.py`.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = (
    "feature_processed_batches",
    "feature_user_hourly",
    "feature_user_category_hourly",
    "feature_item_hourly",
    "feature_query_hourly",
    "user_features",
    "item_features",
    "category_features",
    "user_category_features",
    "query_features",
    "user_session_features",
    "item_embeddings",
    "user_embeddings",
)


def upgrade() -> None:
    op.execute(
        """
        -- Watermark: an events batch listed here has been folded into every feature table.
        CREATE TABLE feature_processed_batches (
            batch_id      bigint PRIMARY KEY REFERENCES ingest_batches (batch_id),
            events        bigint NOT NULL,
            processed_at  timestamptz NOT NULL DEFAULT now()
        );

        -- Hourly aggregates of clean (non-bot) events: hour_ts is the start of the hour.
        CREATE TABLE feature_user_hourly (
            user_id        text NOT NULL,
            hour_ts        timestamptz NOT NULL,
            events         bigint NOT NULL,
            impressions    bigint NOT NULL,
            clicks         bigint NOT NULL,
            views          bigint NOT NULL,
            searches       bigint NOT NULL,
            add_to_carts   bigint NOT NULL,
            purchases      bigint NOT NULL,
            units          bigint NOT NULL,
            spend          numeric(16, 2) NOT NULL,
            returns        bigint NOT NULL,
            last_event_ts  timestamptz NOT NULL,
            PRIMARY KEY (user_id, hour_ts)
        );
        CREATE TABLE feature_user_category_hourly (
            user_id       text NOT NULL,
            category      text NOT NULL,
            hour_ts       timestamptz NOT NULL,
            interactions  bigint NOT NULL,   -- view + click + add_to_cart + purchase
            clicks        bigint NOT NULL,
            purchases     bigint NOT NULL,
            PRIMARY KEY (user_id, category, hour_ts)
        );
        CREATE TABLE feature_item_hourly (
            item_id       text NOT NULL,
            hour_ts       timestamptz NOT NULL,
            impressions   bigint NOT NULL,
            clicks        bigint NOT NULL,
            views         bigint NOT NULL,
            add_to_carts  bigint NOT NULL,
            purchases     bigint NOT NULL,
            units         bigint NOT NULL,
            PRIMARY KEY (item_id, hour_ts)
        );
        CREATE INDEX feature_item_hourly_hour ON feature_item_hourly (hour_ts);
        -- category '' holds the searches of the query; other rows the clicks into a category.
        CREATE TABLE feature_query_hourly (
            query     text NOT NULL,
            category  text NOT NULL,
            hour_ts   timestamptz NOT NULL,
            searches  bigint NOT NULL,
            clicks    bigint NOT NULL,
            PRIMARY KEY (query, category, hour_ts)
        );

        -- Snapshots: a row at event_timestamp T describes the entity from clean events with
        -- event_ts < T (T is an hour boundary; a row exists for each hour the entity was active).
        CREATE TABLE user_features (
            user_id               text NOT NULL,
            event_timestamp       timestamptz NOT NULL,
            created_at            timestamptz NOT NULL DEFAULT now(),
            impressions_1h        bigint NOT NULL,
            clicks_1h             bigint NOT NULL,
            ctr_1h                double precision NOT NULL,
            impressions_1d        bigint NOT NULL,
            clicks_1d             bigint NOT NULL,
            ctr_1d                double precision NOT NULL,
            impressions_7d        bigint NOT NULL,
            clicks_7d             bigint NOT NULL,
            ctr_7d                double precision NOT NULL,
            impressions_30d       bigint NOT NULL,
            clicks_30d            bigint NOT NULL,
            ctr_30d               double precision NOT NULL,
            purchases_30d         bigint NOT NULL,
            units_30d             bigint NOT NULL,
            spend_30d             double precision NOT NULL,
            avg_price_paid_30d    double precision,
            last_event_ts_s       bigint NOT NULL,
            top_category_1        text,
            top_category_1_share  double precision NOT NULL,
            top_category_2        text,
            top_category_2_share  double precision NOT NULL,
            top_category_3        text,
            top_category_3_share  double precision NOT NULL,
            most_active_hour      bigint NOT NULL,
            active_hour_share     double precision NOT NULL,
            active_hours_count    bigint NOT NULL,
            PRIMARY KEY (user_id, event_timestamp)
        );
        CREATE TABLE item_features (
            item_id               text NOT NULL,
            event_timestamp       timestamptz NOT NULL,
            created_at            timestamptz NOT NULL DEFAULT now(),
            item_category              text NOT NULL,
            item_impressions_7d        bigint NOT NULL,
            item_clicks_7d             bigint NOT NULL,
            item_ctr_smoothed_7d       double precision NOT NULL,
            item_impressions_30d       bigint NOT NULL,
            item_clicks_30d            bigint NOT NULL,
            item_ctr_smoothed_30d      double precision NOT NULL,
            item_add_to_cart_rate_30d  double precision NOT NULL,
            item_conversion_rate_30d   double precision NOT NULL,
            item_purchases_30d         bigint NOT NULL,
            item_popularity_trend      double precision NOT NULL,
            item_price                 double precision NOT NULL,
            item_price_rel_category    double precision NOT NULL,
            item_listed_at_s           bigint NOT NULL,
            item_age_days              double precision NOT NULL,
            PRIMARY KEY (item_id, event_timestamp)
        );
        CREATE TABLE category_features (
            category              text NOT NULL,
            event_timestamp       timestamptz NOT NULL,
            created_at            timestamptz NOT NULL DEFAULT now(),
            cat_impressions_30d       bigint NOT NULL,
            cat_clicks_30d            bigint NOT NULL,
            cat_ctr_smoothed_30d      double precision NOT NULL,
            cat_purchases_30d         bigint NOT NULL,
            cat_n_items               bigint NOT NULL,
            cat_median_price          double precision NOT NULL,
            PRIMARY KEY (category, event_timestamp)
        );
        CREATE TABLE user_category_features (
            user_id               text NOT NULL,
            category              text NOT NULL,
            event_timestamp       timestamptz NOT NULL,
            created_at            timestamptz NOT NULL DEFAULT now(),
            uc_interactions_30d   bigint NOT NULL,
            uc_clicks_30d         bigint NOT NULL,
            uc_purchases_30d      bigint NOT NULL,
            uc_affinity_30d       double precision NOT NULL,
            PRIMARY KEY (user_id, category, event_timestamp)
        );
        CREATE TABLE query_features (
            query                 text NOT NULL,   -- lower(trim(query))
            event_timestamp       timestamptz NOT NULL,
            created_at            timestamptz NOT NULL DEFAULT now(),
            searches_30d          bigint NOT NULL,
            query_clicks_30d      bigint NOT NULL,
            query_ctr_30d         double precision NOT NULL,
            n_clicked_categories  bigint NOT NULL,
            q_top_category_1      text,
            q_top_category_1_share double precision NOT NULL,
            q_top_category_2      text,
            q_top_category_2_share double precision NOT NULL,
            labelled_intent       text,
            labelled_category     text,
            PRIMARY KEY (query, event_timestamp)
        );
        -- One row per clean non-impression event: the user's session state just after it.
        -- The same values are pushed online by features.realtime (never added on top).
        CREATE TABLE user_session_features (
            event_id                text NOT NULL,
            user_id                 text NOT NULL,
            event_timestamp         timestamptz NOT NULL,
            session_id              text NOT NULL,
            session_events          bigint NOT NULL,
            session_views           bigint NOT NULL,
            session_clicks          bigint NOT NULL,
            session_add_to_carts    bigint NOT NULL,
            session_searches        bigint NOT NULL,
            last_viewed_items       text NOT NULL,    -- up to 5 item ids, newest first, '|'-joined
            last_viewed_categories  text NOT NULL,
            PRIMARY KEY (user_id, event_timestamp)
        );
        CREATE INDEX user_session_features_session
            ON user_session_features (user_id, session_id);
        CREATE INDEX user_session_features_ts ON user_session_features (event_timestamp);

        -- MiniLM title embeddings: one row per (item, title version); event_timestamp is when
        -- that title became known (listed_at for the first one).
        CREATE TABLE item_embeddings (
            item_id          text NOT NULL,
            event_timestamp  timestamptz NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            title_hash       text NOT NULL,
            title_embedding  real[] NOT NULL,
            PRIMARY KEY (item_id, event_timestamp),
            UNIQUE (item_id, title_hash)
        );
        -- Mean title embedding of the user's recent (30d, up to 20) viewed/clicked items,
        -- snapshot at the same hour boundaries as user_features.
        CREATE TABLE user_embeddings (
            user_id                 text NOT NULL,
            event_timestamp         timestamptz NOT NULL,
            created_at              timestamptz NOT NULL DEFAULT now(),
            recent_items_embedding  real[] NOT NULL,
            PRIMARY KEY (user_id, event_timestamp)
        );

        CREATE INDEX user_features_ts ON user_features (event_timestamp);
        CREATE INDEX item_features_ts ON item_features (event_timestamp);
        CREATE INDEX category_features_ts ON category_features (event_timestamp);
        CREATE INDEX user_category_features_ts ON user_category_features (event_timestamp);
        CREATE INDEX query_features_ts ON query_features (event_timestamp);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE " + ", ".join(reversed(TABLES)) + " CASCADE")

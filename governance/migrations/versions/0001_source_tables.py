"""Source tables (users, items, events, labelled_queries) and governance tables.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EVENT_TYPES = ("impression", "search", "view", "click", "add_to_cart", "purchase", "return")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ingest_batches (
            batch_id          bigserial PRIMARY KEY,
            source            text NOT NULL,
            table_name        text NOT NULL,
            file_name         text,
            checksum          text NOT NULL,
            status            text NOT NULL DEFAULT 'running'
                              CHECK (status IN ('running', 'loaded', 'failed')),
            rows_read         bigint,
            rows_loaded       bigint,
            rows_quarantined  bigint,
            rows_duplicate    bigint,
            rule_hits         jsonb NOT NULL DEFAULT '{}'::jsonb,
            quality           jsonb NOT NULL DEFAULT '{}'::jsonb,
            error             text,
            started_at        timestamptz NOT NULL DEFAULT now(),
            finished_at       timestamptz,
            CONSTRAINT reconciles CHECK (
                status <> 'loaded'
                OR rows_read = rows_loaded + rows_quarantined + rows_duplicate
            )
        );
        -- A file loads once per table: re-running it finds this row and changes nothing.
        CREATE UNIQUE INDEX ingest_batches_loaded_once
            ON ingest_batches (table_name, checksum) WHERE status = 'loaded';

        CREATE TABLE quarantine (
            quarantine_id  bigserial PRIMARY KEY,
            batch_id       bigint NOT NULL REFERENCES ingest_batches (batch_id),
            table_name     text NOT NULL,
            row_number     bigint,
            raw            jsonb NOT NULL,
            reasons        text[] NOT NULL CHECK (cardinality(reasons) > 0),
            quarantined_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX quarantine_batch ON quarantine (batch_id);

        CREATE TABLE users (
            user_id    text PRIMARY KEY,            -- keyed-hash pseudonym, never a raw id
            country    text,
            signup_at  timestamptz,
            batch_id   bigint NOT NULL REFERENCES ingest_batches (batch_id)
        );

        CREATE TABLE items (
            item_id        text PRIMARY KEY,
            title          text NOT NULL,
            category_path  text NOT NULL,           -- 'Electronics > Phones > Smartphones'
            category       text NOT NULL,           -- leaf of category_path
            brand          text,
            price          numeric(12, 2) NOT NULL CHECK (price > 0),
            listed_at      timestamptz NOT NULL,
            batch_id       bigint NOT NULL REFERENCES ingest_batches (batch_id),
            updated_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX items_category ON items (category);

        CREATE TABLE events (
            event_id    text PRIMARY KEY,
            user_id     text NOT NULL,              -- keyed-hash pseudonym
            session_id  text NOT NULL,
            event_type  text NOT NULL CHECK (event_type IN %(types)s),
            item_id     text,
            query       text,
            position    integer,
            list_id     text,
            quantity    integer,
            price       numeric(12, 2),
            event_ts    timestamptz NOT NULL,
            is_bot      boolean NOT NULL DEFAULT false,
            batch_id    bigint NOT NULL REFERENCES ingest_batches (batch_id)
        );
        CREATE INDEX events_ts ON events (event_ts);
        CREATE INDEX events_user_ts ON events (user_id, event_ts);
        CREATE INDEX events_item ON events (item_id);
        CREATE INDEX events_batch ON events (batch_id);

        CREATE TABLE labelled_queries (
            query_id   bigserial PRIMARY KEY,
            query      text NOT NULL,
            intent     text NOT NULL,
            category   text,
            source     text NOT NULL DEFAULT 'labelled',
            batch_id   bigint NOT NULL REFERENCES ingest_batches (batch_id),
            UNIQUE (query, intent, category)
        );
        """.replace("%(types)s", "(" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + ")")
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE labelled_queries, events, items, users, quarantine, ingest_batches CASCADE"
    )

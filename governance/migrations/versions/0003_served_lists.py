"""Served lists: what /search and /recommend showed, to whom, by which model and variant.

Written by the service's list logger (serving/list_log.py) through the governed path
(governance/served_lists.py): one `ingest_batches` row per flushed batch (table_name
'served_lists', source 'serving'), bad lists in `quarantine`, counts that reconcile. Clicks and
purchases sent to /events with a `list_id` join these rows (training/online_report.py).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE served_lists (
            list_id          text PRIMARY KEY,
            served_at        timestamptz NOT NULL,
            endpoint         text NOT NULL CHECK (endpoint IN ('search', 'recommend')),
            user_id          text,               -- keyed-hash pseudonym; null when anonymous
            query            text,
            model_tag        text NOT NULL,      -- the model that ordered the list
            feature_service  text NOT NULL,
            variant          text NOT NULL,
            experiment       text,
            shadow_model     text,               -- scored on the same request, not served
            fallback         boolean NOT NULL DEFAULT false,
            n_items          integer NOT NULL CHECK (n_items > 0),
            batch_id         bigint NOT NULL REFERENCES ingest_batches (batch_id)
        );
        CREATE INDEX served_lists_served_at ON served_lists (served_at);
        CREATE INDEX served_lists_variant ON served_lists (variant, model_tag);

        CREATE TABLE served_items (
            list_id       text NOT NULL REFERENCES served_lists (list_id) ON DELETE CASCADE,
            position      integer NOT NULL CHECK (position >= 0),
            item_id       text NOT NULL,
            score         double precision NOT NULL,
            p_click       double precision,
            shadow_score  double precision,
            features      jsonb,                -- the feature values the ranker scored
            PRIMARY KEY (list_id, position)
        );
        CREATE INDEX served_items_item ON served_items (item_id);

        -- Outcomes join their list by id.
        CREATE INDEX events_list ON events (list_id) WHERE list_id IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS events_list; DROP TABLE served_items, served_lists")

"""Online features for serving: every value the ranker sees comes from Feast.

The ranker's feature service name is read from the model's own metadata (written by
`training.bundles.save_ranker`, read by `training.bundles.stored_ranker`), so a model trained
on `ranker_v2` is served `ranker_v2` features without a code change, and on-demand features
(hour of day, price vs user average, cosine similarities) are computed by Feast's on-demand
views, never here.

Every call goes through a breaker: after a failure (Redis or the registry's PostgreSQL down) the
store is skipped for `cooldown_s`, then tried again, so a dead store costs one failed call per
cooldown instead of one per request, and recovery needs no restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from serving.breaker import Breaker
from serving.feature_plan import FeaturePlan, SharedCache, UserViews, ranker_frame

log = logging.getLogger(__name__)

# What candidate generation reads about a user before there is anything to rank. All of it is
# online feature state: `user_session` is pushed by features.realtime the moment an event
# arrives, so the next request sees it.
USER_CONTEXT_FEATURES = (
    "user_session:last_viewed_items",
    "user_session:last_viewed_categories",
    "user_session:session_events",
    "user_stats:top_category_1",
    "user_stats:top_category_2",
    "user_stats:top_category_3",
)
# Join key used for requests without a user (anonymous search): never a real pseudonym, so
# Feast answers nulls, which the ranker saw in training for unknown users.
ANONYMOUS_USER = "anonymous"
# Query join key for lists without a query, on the path that reads the whole service through
# Feast (which takes no null key): never a real key, so the query's views answer nulls.
NO_QUERY = ""


class StoreUnavailable(RuntimeError):
    """The online store (or the registry behind it) could not answer."""


class OnlineFeatures:
    """Feast online reads for one ranker: its feature service, and the user's context."""

    def __init__(
        self,
        store,
        feature_service_name: str,
        cooldown_s: float = 1.0,
        cache_s: float | None = 300.0,
    ):
        """`cache_s`: how long item- and category-level values may be kept between
        materialisations (serving.feature_plan); 0 reads every value fresh, but still in parts;
        None reads the whole service in one `get_online_features` call, as Feast serves it."""
        self.store = store
        self.feature_service_name = feature_service_name
        self.breaker = Breaker("online store", StoreUnavailable, cooldown_s)
        self.cache_s = cache_s
        self._service = None
        self._plan: tuple[FeaturePlan, SharedCache, UserViews] | None = None
        self._query_keyed: bool | None = None

    def _feature_service(self):
        # Resolved lazily (and kept): the registry may be down when the service starts.
        if self._service is None:
            self._service = self.store.get_feature_service(self.feature_service_name)
        return self._service

    def _ranker_rows(
        self,
        user_id: str,
        items: list[str],
        categories: list[str],
        request_ts_s: int,
        query: str | None,
    ) -> pd.DataFrame:
        if self.cache_s is not None:
            plan, cache, users = self._parts()
            return ranker_frame(plan, cache, users, user_id, items, categories, request_ts_s, query)
        # Entity rows exactly as the feature services document them: user, item, the item's
        # leaf category, the request time the on-demand views read, and the query where the
        # service reads query-keyed views (ranker_v3).
        rows = {
            "user_id": [user_id] * len(items),
            "item_id": list(items),
            "category": list(categories),
            "request_ts_s": [int(request_ts_s)] * len(items),
        }
        if self._reads_query():
            # Feast's online read takes no null join key: a list without a query asks for one
            # no query is ever keyed by (query_key never returns ''), so it reads nulls.
            rows["query"] = [query or NO_QUERY] * len(items)
        resp = self.store.get_online_features(features=self._feature_service(), entity_rows=rows)
        frame = pd.DataFrame(resp.to_dict())
        if "query" in frame:
            frame["query"] = query
        return frame

    def _reads_query(self) -> bool:
        if self._query_keyed is None:  # once: a plan reads the registry
            plan = FeaturePlan(self.store, self._feature_service())
            self._query_keyed = "query" in plan.row_keys
        return self._query_keyed

    def _parts(self) -> tuple[FeaturePlan, SharedCache, UserViews]:
        if self._plan is None:
            plan = FeaturePlan(self.store, self._feature_service())
            cache = SharedCache(self.store, plan, ttl_s=self.cache_s)
            self._plan = (plan, cache, UserViews(self.store, plan))
        return self._plan

    def warm(self, items: list[str], categories: list[str], chunk: int = 1000) -> int:
        """Fill the item- and category-level cache for these items (a worker's start: its
        first requests then pay no misses). Returns the keys read; 0 without a cache."""
        if not self.cache_s:
            return 0
        plan, cache, _users = self._parts()
        rows = {"item_id": list(items), "category": list(categories)}
        n = 0
        for group in plan.shared_groups:
            if not set(group.join_keys) <= set(rows):  # keyed by the request (the query)
                continue
            keys = list(dict.fromkeys(zip(*(rows[k] for k in group.join_keys))))
            for i in range(0, len(keys), chunk):
                cache.rows(group, keys[i : i + chunk])
            n += len(keys)
        return n

    def ranker_features(
        self,
        user_id: str | None,
        items: list[str],
        categories: list[str],
        request_ts_s: int | None = None,
        query: str | None = None,
    ) -> pd.DataFrame:
        """One row per candidate with the feature service's features (nulls where unknown).
        `query`: the search's query as `features.labels.query_key` keys it (None: no query)."""
        if not items:
            return pd.DataFrame()
        ts = int(request_ts_s if request_ts_s is not None else time.time())
        frame = self.breaker.call(
            self._ranker_rows, user_id or ANONYMOUS_USER, items, categories, ts, query
        )
        # Feast returns rows in request order; the keys make that checkable downstream.
        frame["user_id"] = user_id or ANONYMOUS_USER
        frame["item_id"] = list(items)
        return frame

    def _context(self, user_id: str) -> dict[str, Any]:
        resp = self.store.get_online_features(
            features=list(USER_CONTEXT_FEATURES), entity_rows=[{"user_id": user_id}]
        )
        return {k: v[0] for k, v in resp.to_dict().items()}

    def user_context(self, user_id: str) -> dict[str, Any]:
        """Recent items/categories and top categories of a user (None where unknown)."""
        ctx = self.breaker.call(self._context, user_id)
        return {
            "recent_items": _split(ctx.get("last_viewed_items")),
            "recent_categories": _split(ctx.get("last_viewed_categories")),
            "top_categories": [
                c
                for c in (
                    ctx.get("top_category_1"),
                    ctx.get("top_category_2"),
                    ctx.get("top_category_3"),
                )
                if c
            ],
            "session_events": ctx.get("session_events"),
        }

    def health(self) -> dict:
        return self.breaker.health()


def _split(value) -> list[str]:
    """'a|b|a' (newest first, as features.realtime writes it) -> ['a', 'b']."""
    if not value or not isinstance(value, str):
        return []
    seen, out = set(), []
    for part in value.split("|"):
        if part and part not in seen:
            seen.add(part)
            out.append(part)
    return out


def ranker_input(features: pd.DataFrame, spec) -> pd.DataFrame:
    """The frame the ranker's FeatureSpec encodes: every column it was trained on.

    A column the store did not return (a view dropped from the service, say) becomes null,
    which the spec maps to the training mean / the missing-id bucket, as in training.
    """
    frame = features.copy()
    for col in list(spec.sparse) + list(spec.dense) + list(spec.vectors):
        if col not in frame.columns:
            frame[col] = None
    # Dtypes read once as a dict: `frame[col].dtype` per column builds a Series each time,
    # which cost more than the rest of this per request.
    kinds = frame.dtypes.to_dict()
    for col in spec.dense:
        if not pd.api.types.is_numeric_dtype(kinds[col]):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame

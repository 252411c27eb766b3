"""The ranker's feature service read in three parts, with item- and category-level values
cached between materialisations. Same values as one `get_online_features` call on the service
(tests/test_serving.py, test_served_features_equal_feasts_*, compares them); a fraction of its
time.

One `FeatureStore.get_online_features` call over the whole service, for 200 candidates, spends
most of its time turning ~13k proto values into Python twice (once for the on-demand views,
once for the response) and running each on-demand view over the rows. Most of those values do
not depend on the user: an item's statistics, its title embedding and its category's
statistics change only when a materialisation writes them. So a request reads:

    per request  the views keyed by the user alone (user_stats, user_session, ...) together
                 with the views keyed by the user and something else (user_category_affinity,
                 a row per distinct category among the candidates): one read through the
                 online store's own reader (`UserViews`), never cached;
    cached       the views keyed by item or category only, fetched through Feast for the keys
                 not yet cached and kept until the materialisation watermark of any of those
                 views moves (read from the registry every `recheck_s`) or `ttl_s` passes;
    computed     every on-demand view of the service, over all rows at once, by its own
                 definition: `OnDemandFeatureView.transform_dict`, the call Feast makes online
                 (the views' Python UDFs are batch functions: lists in, lists out).

Views the cache may hold are those whose join keys do not include `user_id`; views keyed by
anything a request alone decides (user, session) are always read fresh, and pushes only ever
target those (`user_session`). A cached value can be up to `ttl_s` staler than the store after
a direct write that moves no watermark; `ttl_s=0` turns the cache off (every read fresh).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

USER_KEY = "user_id"
# Join keys of the ranker's entity rows: the user, the candidate, the candidate's category and,
# for services with query-keyed views (ranker_v3), the request's query (None on lists without
# one: those rows read nulls, as their training rows did).
ROW_KEYS = ("user_id", "item_id", "category", "query")


@dataclass
class _Group:
    """Feature views read together, keyed by the same join keys."""

    join_keys: tuple[str, ...]
    refs: list[str] = field(default_factory=list)  # 'view:feature', service and ODFV inputs
    names: list[str] = field(default_factory=list)  # the refs' feature names, same order
    # The refs' Feast value types (from the views' schemas), for the same Python conversion
    # `OnlineResponse.to_dict` applies.
    types: list[Any] = field(default_factory=list)


class FeaturePlan:
    """What to read and compute for one feature service (built once from the registry)."""

    def __init__(self, store, service):
        # Feast is heavy to import (seconds); a plan exists only where a store is open.
        from feast.type_map import feast_value_type_to_python_type

        self.store = store
        self.to_python = feast_value_type_to_python_type  # what OnlineResponse.to_dict uses
        self.outputs: list[str] = []  # feature names in the service's order, FVs then ODFVs
        self.request_fields: list[str] = []
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.odfvs: list[tuple[Any, list[str]]] = []  # (view, its outputs in the service)
        wanted: dict[str, set[str]] = {}  # view -> features needed (outputs and ODFV inputs)
        odfv_names = {o.name for o in store.list_on_demand_feature_views()}
        for proj in service.feature_view_projections:
            names = [f.name for f in proj.features]
            if proj.name in odfv_names:
                odfv = store.get_on_demand_feature_view(proj.name)
                self.odfvs.append((odfv, names))
                for src in odfv.source_feature_view_projections.values():
                    wanted.setdefault(src.name, set()).update(f.name for f in src.features)
                for req in odfv.source_request_sources.values():
                    self.request_fields += [f.name for f in req.schema]
            else:
                wanted.setdefault(proj.name, set()).update(names)
                self.outputs += names
        for _odfv, names in self.odfvs:
            self.outputs += names
        self.request_fields = list(dict.fromkeys(self.request_fields))
        for name, feats in wanted.items():
            view = _feature_view(store, name)
            keys = tuple(sorted(view.join_keys))
            if not set(keys) <= set(ROW_KEYS):
                raise ValueError(f"{name} is keyed by {keys}, not by the ranker's entity rows")
            group = self.groups.setdefault(keys, _Group(keys))
            # The view's own field order, so a group's columns come out as Feast's would.
            for f in view.features:
                if f.name in feats:
                    group.refs.append(f"{name}:{f.name}")
                    group.names.append(f.name)
                    group.types.append(f.dtype.to_value_type())
        self.cached_views = sorted(
            {ref.split(":")[0] for g in self.shared_groups for ref in g.refs}
        )
        # The entity-row keys this service reads (a frame carries only these, as Feast's does).
        used = {k for keys in self.groups for k in keys}
        self.row_keys = tuple(k for k in ROW_KEYS if k in used or k != "query")

    @property
    def user_groups(self) -> list[_Group]:
        return [g for k, g in self.groups.items() if USER_KEY in k]

    @property
    def shared_groups(self) -> list[_Group]:
        return [g for k, g in self.groups.items() if USER_KEY not in k]


def _feature_view(store, name: str):
    try:
        return store.get_feature_view(name, allow_registry_cache=True)
    except Exception:  # a stream view (user_session) is not a plain FeatureView to the registry
        return store.get_stream_feature_view(name, allow_registry_cache=True)


class SharedCache:
    """Values of the views keyed without the user, per join-key tuple, between materialisations."""

    def __init__(self, store, plan: FeaturePlan, ttl_s: float = 60.0, recheck_s: float = 5.0):
        self.store, self.plan = store, plan
        self.ttl_s, self.recheck_s = ttl_s, recheck_s
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], dict[tuple, list]] = {}
        self._born = 0.0
        self._checked = 0.0
        self._watermark: tuple | None = None
        self.hits = self.misses = 0

    def watermark(self) -> tuple:
        """The end of the latest materialisation interval of every cached view."""
        out = []
        for name in self.plan.cached_views:
            view = _feature_view(self.store, name)
            intervals = view.materialization_intervals
            out.append(intervals[-1][1].timestamp() if intervals else None)
        return tuple(out)

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._born > self.ttl_s:
            self._clear(now)
        if now - self._checked > self.recheck_s:
            mark = self.watermark()
            self._checked = now
            if mark != self._watermark:
                self._clear(now)
                self._watermark = mark

    def _clear(self, now: float) -> None:
        with self._lock:
            self._values = {}
            self._born = now

    def rows(self, group: _Group, keys: list[tuple]) -> dict[tuple, list]:
        """{key tuple: [value per feature of the group]} for the distinct `keys`."""
        if self.ttl_s <= 0:
            return _read(self.store, group, keys)
        self._expire()
        values = self._values.setdefault(group.join_keys, {})
        missing = [k for k in keys if k not in values]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = _read(self.store, group, missing)
            with self._lock:
                values.update(fresh)
        return {k: values[k] for k in keys}


def _read(store, group: _Group, keys: list[tuple]) -> dict[tuple, list]:
    """One Feast online read of a group's refs for distinct join-key tuples."""
    known = [k for k in keys if all(v is not None for v in k)]
    out = {k: [None] * len(group.names) for k in keys if k not in known}
    if not known:
        return out
    rows = {jk: [k[i] for k in known] for i, jk in enumerate(group.join_keys)}
    resp = store.get_online_features(features=group.refs, entity_rows=rows).to_dict()
    cols = [resp[n] for n in group.names]
    for r, k in enumerate(known):
        out[k] = [_frozen(c[r]) for c in cols]
    return out


def _frozen(value):
    # Vectors are kept as float32 arrays (what they are in the store): cheap to stack.
    return np.asarray(value, np.float32) if isinstance(value, list) else value


def ranker_frame(
    plan: FeaturePlan,
    cache: SharedCache,
    users: UserViews,
    user_id: str,
    items: list[str],
    categories: list[str],
    request_ts_s: int,
    query: str | None = None,
) -> pd.DataFrame:
    """Rows as `get_online_features(feature_service, entity_rows)` returns them, as a frame;
    `query` as `features.labels.query_key` keys it."""
    n = len(items)
    row_keys = {"user_id": [user_id] * n, "item_id": list(items), "category": list(categories)}
    if "query" in plan.row_keys:
        row_keys["query"] = [query] * n
    columns: dict[str, list] = dict(row_keys)
    # Per request: every view keyed by the user, in one read, never cached.
    columns.update(users.read(row_keys))
    for group in plan.shared_groups:
        keys = list(zip(*(row_keys[k] for k in group.join_keys)))
        values = cache.rows(group, list(dict.fromkeys(keys)))
        per_row = [values[k] for k in keys]
        for j, name in enumerate(group.names):
            columns[name] = [v[j] for v in per_row]
    inputs = {**columns, **{f: [int(request_ts_s)] * n for f in plan.request_fields}}
    for odfv, names in plan.odfvs:
        out = odfv.transform_dict(dict(inputs))
        for name in names:
            columns[name] = list(out[name])
    wanted = [*plan.row_keys, *plan.outputs]
    return pd.DataFrame({c: columns[c] for c in wanted})


class UserViews:
    """The plan's views keyed by the user, read for one request in one round trip.

    `get_online_features` over all of them at once is slower than the two calls it replaces
    (measured: it fans every user-alone value out to each (user, category) row as protos);
    so the views are read through the online store's own reader instead: Feast's entity-key
    encoding, Feast's stored format, Feast's conversion to Python
    (`feast_value_type_to_python_type` with the view's declared type, as
    `OnlineResponse.to_dict` does), each view read once per distinct key of its own. On
    Redis, every view's HMGETs go out in one pipeline, split exactly as the store's
    `online_read` splits its own (key and field encoding, then the replies' decoding), with
    the field keys computed once here instead of once per call; any other store gets one
    `online_read` per view. Like `get_online_features` in this Feast, no TTL is applied to
    online rows (tests/test_serving.py checks an expired row against it).
    """

    def __init__(self, store, plan: FeaturePlan, batched: bool | None = None):
        # Feast is heavy to import (seconds); only a process with an open store gets here.
        from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
        from feast.infra.provider import get_provider
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        self.config = store.config
        self.online = get_provider(store.config).online_store
        self._entity_key, self._to_protos = EntityKey, python_values_to_proto_values
        self.to_python = plan.to_python
        if batched is None:
            batched = isinstance(self.online, RedisOnlineStore)
        self.batched = batched
        self.views: list[_UserView] = []
        for group in plan.user_groups:
            by_view: dict[str, list[tuple[str, Any]]] = {}
            for ref, name, vtype in zip(group.refs, group.names, group.types):
                by_view.setdefault(ref.split(":")[0], []).append((name, vtype))
            for name, feats in by_view.items():
                view = _feature_view(store, name)
                key_types = {f.name: f.dtype.to_value_type() for f in view.entity_columns}
                uv = _UserView(
                    view,
                    group.join_keys,
                    [key_types[k] for k in group.join_keys],
                    [f for f, _ in feats],
                    [t for _, t in feats],
                )
                if batched:
                    # The store's own field keys (and its timestamp field), made once.
                    uv.fv_name = _versioned_fv_name(view, self.config)
                    uv.fields, uv.hset_keys = self.online._generate_hset_keys_for_features(
                        view, list(uv.names), fv_name_override=uv.fv_name
                    )
                self.views.append(uv)

    def _keys(self, uv: _UserView, distinct: list[tuple]) -> list:
        cols = [self._to_protos([t[i] for t in distinct], vt) for i, vt in enumerate(uv.key_types)]
        return [
            self._entity_key(join_keys=list(uv.join_keys), entity_values=[c[r] for c in cols])
            for r in range(len(distinct))
        ]

    def read(self, row_keys: dict[str, list]) -> dict[str, list]:
        """{feature: [value per row]} for the rows' join keys (a row whose key has a null
        gets nulls, as the cached views' rows do)."""
        plans = []
        for uv in self.views:
            tuples = list(zip(*(row_keys[k] for k in uv.join_keys)))
            distinct = list(dict.fromkeys(tuples))
            known = [t for t in distinct if all(v is not None for v in t)]
            plans.append((uv, tuples, known, self._keys(uv, known) if known else []))
        if self.batched:
            commands, spans = [], []
            for uv, _t, _k, keys in plans:
                redis_keys = self.online._generate_redis_keys_for_entities(self.config, keys)
                spans.append(len(redis_keys))
                commands += [(k, uv.hset_keys) for k in redis_keys]
            replies = self.online._read_hash_fields(self.config, commands) if commands else []
            read, at = [], 0
            for (uv, *_), n in zip(plans, spans):
                part = replies[at : at + n]
                at += n
                read.append(
                    self.online._convert_redis_values_to_protobuf(part, uv.fv_name, uv.fields)
                    if n
                    else []
                )
        else:
            read = [
                self.online.online_read(self.config, uv.view, keys, list(uv.names)) if keys else []
                for uv, _t, _k, keys in plans
            ]
        out: dict[str, list] = {}
        n = len(row_keys[ROW_KEYS[0]])
        for (uv, tuples, known, _keys), rows in zip(plans, read):
            data = [d or {} for _ts, d in rows]
            index = {t: i for i, t in enumerate(known)}
            # Each row's read (the last slot: a key with a null, read as nulls), found once
            # per view; a user-alone view has one read for all rows.
            null = len(known)
            pos = [index.get(t, null) for t in tuples]
            same = len(set(pos)) == 1
            for name, vtype in zip(uv.names, uv.types):
                vals = [
                    _frozen(self.to_python(d[name], vtype)) if name in d else None for d in data
                ]
                vals.append(None)
                out[name] = [vals[pos[0]]] * n if same else [vals[p] for p in pos]
        return out


@dataclass
class _UserView:
    view: Any
    join_keys: tuple[str, ...]
    key_types: list[Any]
    names: list[str]
    types: list[Any]
    fv_name: str = ""
    fields: list[str] = field(default_factory=list)  # the store's reply order (names + ts)
    hset_keys: list = field(default_factory=list)

"""The ranker's feature service read in three parts, with item- and category-level values
cached between materialisations. Same values as one `get_online_features` call on the service
(tests/test_feature_plan.py compares them); a fraction of its time.

One `FeatureStore.get_online_features` call over the whole service, for 200 candidates, spends
most of its time turning ~13k proto values into Python twice (once for the on-demand views,
once for the response) and running each on-demand view over the rows. Most of those values do
not depend on the user: an item's statistics, its title embedding and its category's
statistics change only when a materialisation writes them. So a request reads:

    per request  the views keyed by the user alone (one entity row) together with the views
                 keyed by the user and something else (one row per distinct category among
                 the candidates): one Feast call;
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
# Join keys of the ranker's entity rows: the user, the candidate and the candidate's category.
ROW_KEYS = ("user_id", "item_id", "category")


@dataclass
class _Group:
    """Feature views read together, keyed by the same join keys."""

    join_keys: tuple[str, ...]
    refs: list[str] = field(default_factory=list)  # 'view:feature', service and ODFV inputs
    names: list[str] = field(default_factory=list)  # the refs' feature names, same order


class FeaturePlan:
    """What to read and compute for one feature service (built once from the registry)."""

    def __init__(self, store, service):
        self.store = store
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
        self.cached_views = sorted(
            {ref.split(":")[0] for g in self.shared_groups for ref in g.refs}
        )

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
    user_id: str,
    items: list[str],
    categories: list[str],
    request_ts_s: int,
) -> pd.DataFrame:
    """Rows as `get_online_features(feature_service, entity_rows)` returns them, as a frame."""
    n = len(items)
    row_keys = {"user_id": [user_id] * n, "item_id": list(items), "category": list(categories)}
    columns: dict[str, list] = dict(row_keys)
    # Per request: the views keyed by the user, one call per join-key set (the user alone: one
    # row; the user and a category: a row per distinct category), never cached.
    for group in plan.user_groups:
        _user_columns(plan.store, group, row_keys, columns)
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
    wanted = [*ROW_KEYS, *plan.outputs]
    return pd.DataFrame({c: columns[c] for c in wanted})


def _user_columns(store, group: _Group, row_keys: dict, columns: dict) -> None:
    tuples = list(zip(*(row_keys[k] for k in group.join_keys)))
    distinct = list(dict.fromkeys(tuples))
    rows = {k: [t[i] for t in distinct] for i, k in enumerate(group.join_keys)}
    resp = store.get_online_features(features=group.refs, entity_rows=rows).to_dict()
    index = {t: r for r, t in enumerate(distinct)}
    pos = [index[t] for t in tuples]
    for name in group.names:
        col = [_frozen(v) for v in resp[name]]
        columns[name] = [col[p] for p in pos]

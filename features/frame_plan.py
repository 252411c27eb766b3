"""What a frame needs from the Feast registry, and the service's on-demand views run on a chunk.

`plan` resolves a feature service as Feast's own get_historical_features does (feature views,
TTLs, sources, field mappings, on-demand views); `apply_odfvs` runs the on-demand views of the
service on one chunk: python-mode views get their inputs as Feast gives them (lists per
column), except vector columns, which come as `VectorBatch` matrices (features.similarity).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pyarrow as pa

from features import frame_io
from features.frame_sql import view_joins


@dataclass
class Plan:
    joins: list
    odfvs: list
    features: list[str]  # output names, service order
    vector_outputs: set[str]


def plan(store, service, full_feature_names: bool, ts_range) -> Plan:
    """Feature views, TTLs, sources and on-demand views of a service, as Feast resolves them."""
    # Feast is heavy to import (seconds): only code that opens a store pays for it.
    from feast import utils
    from feast.infra.offline_stores import offline_utils
    from feast.types import Array

    registry, project = store.registry, store.project
    refs = utils._get_features(registry, project, service, allow_cache=True)
    all_fvs, all_odfvs = utils._get_feature_views_to_use(registry, project, service)
    all_odfvs = copy.deepcopy(all_odfvs)
    fvs, odfvs = utils._group_feature_refs(refs, all_fvs, all_odfvs)
    provider_refs, seen = list(refs), set(refs)
    for view, feats in fvs:
        for feat in feats:
            ref = f"{view.projection.name_to_use()}:{feat}"
            if ref not in seen:
                provider_refs.append(ref)
                seen.add(ref)
    utils._validate_feature_refs(refs, full_feature_names)
    views = [view for view, _ in fvs]
    contexts = offline_utils.get_feature_view_query_context(
        provider_refs, views, registry, project, ts_range
    )
    arrays = {
        (view.projection.name_to_use(), f.name)
        for view in views
        for f in view.features
        if isinstance(f.dtype, Array)
    }
    joins = view_joins(contexts, full_feature_names, lambda v, f: (v, f) in arrays)
    names = []
    for proj in service.feature_view_projections:
        for f in proj.features:
            names.append(f"{proj.name_to_use()}__{f.name}" if full_feature_names else f.name)
    vector_outputs = {out for j in joins for _, out in j.vectors}
    return Plan(joins, [view for view, _ in odfvs], names, vector_outputs)


def _odfv_inputs(odfv, table: pa.Table, vectors: dict) -> dict:
    """What Feast hands a python-mode view (short and view-prefixed names), vectors as
    VectorBatch matrices instead of lists."""
    inputs = {}
    for proj in odfv.source_feature_view_projections.values():
        for f in proj.features:
            full = f"{proj.name}__{f.name}"
            for name in (f.name, full, f"{proj.name_to_use()}__{f.name}"):
                if name in vectors:
                    value = vectors[name]
                elif name in table.column_names:
                    value = table[name].to_pylist()
                else:
                    continue
                inputs[f.name] = inputs[full] = value
                break
    for src in odfv.source_request_sources.values():
        for f in src.schema:
            if f.name not in table.column_names:
                raise ValueError(
                    f"on-demand view {odfv.name} needs request column {f.name!r} in the entity rows"
                )
            inputs[f.name] = table[f.name].to_pylist()
    return inputs


def apply_odfvs(plan: Plan, table: pa.Table, vectors: dict, full_names: bool) -> pa.Table:
    # Feast is heavy to import (seconds): only code that opens a store pays for it.
    from feast.type_map import feast_value_type_to_pa

    for odfv in plan.odfvs:
        if odfv.mode == "python":
            out = odfv.feature_transformation.udf(_odfv_inputs(odfv, table, vectors))
        else:  # pandas/substrait views: Feast's own transform, on this chunk only
            full = table
            for name, batch in vectors.items():
                full = full.append_column(name, frame_io.vector_arrow(batch))
            res = odfv.transform_arrow(full, full_names)
            out = {f.name: res[f.name] for f in odfv.features if f.name in res.column_names}
        for f in odfv.features:
            name = f"{odfv.projection.name_to_use()}__{f.name}" if full_names else f.name
            if name in plan.features and name not in table.column_names:
                typ = feast_value_type_to_pa(f.dtype.to_value_type())
                values = out[f.name] if f.name in out else out[name]
                table = table.append_column(name, pa.array(values, typ))
    return table

"""Feast's Spark compute engine, able to materialise cartwise's push-fed stream view too.

`feature_store.yaml` names this engine on the Spark path (`CARTWISE_OFFLINE_ENGINE=spark`,
governance.db.feast_batch_engine). It is Feast's `SparkComputeEngine` unchanged except for one
thing: Feast 0.67 ships a StreamFeatureView to its Python workers as a StreamFeatureView
protobuf and parses it there as a FeatureView one (`feast.infra.common.serde`), which fails
("Wire format was corrupt"), so `feast materialize` of `user_session` breaks. Here such a view
is materialised as a plain FeatureView with the same name, entities, fields, TTL and batch
source: the same rows reach the same online-store keys, and Feast's Spark DAG does the work.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from feast import FeatureView, Field
from feast.infra.compute_engines.spark.compute import (
    SparkComputeEngine,
    SparkComputeEngineConfig,
)
from feast.stream_feature_view import StreamFeatureView

ENGINE_TYPE = "features.spark_engine.SparkEngine"


class SparkEngineConfig(SparkComputeEngineConfig):
    """Feast's Spark compute engine settings (spark_conf, partitions, ...) under our type."""

    type: Literal["features.spark_engine.SparkEngine"] = ENGINE_TYPE  # type: ignore[assignment]


def batch_twin(view: StreamFeatureView, registry, project: str) -> FeatureView:
    """A FeatureView that materialises exactly as `view` would (name, keys, fields, source)."""
    entities = [registry.get_entity(name, project) for name in view.entities]
    schema = [Field(name=c.name, dtype=c.dtype) for c in [*view.entity_columns, *view.features]]
    twin = FeatureView(
        name=view.name,
        entities=entities,
        ttl=view.ttl,
        schema=schema,
        source=view.batch_source,
        online=view.online,
        offline=False,
        tags=view.tags,
    )
    twin.projection = view.projection
    return twin


class SparkEngine(SparkComputeEngine):
    def _materialize_one(self, registry, task, **kwargs):
        if isinstance(task.feature_view, StreamFeatureView):
            twin = batch_twin(task.feature_view, registry, task.project)
            task = replace(task, feature_view=twin)
        return super()._materialize_one(registry, task, **kwargs)

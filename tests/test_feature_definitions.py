"""The declarative feature repo: on-demand views on known inputs, services as contracts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from feast import Entity, FeatureService, FeatureView, RequestSource
from feast.on_demand_feature_view import OnDemandFeatureView

REPO = Path(__file__).resolve().parent.parent / "feature_repo"


@pytest.fixture(scope="module")
def definitions():
    # Loaded by path, as `feast apply` does: feature_repo/ is a Feast repo, not a package.
    spec = importlib.util.spec_from_file_location(
        "cartwise_feature_definitions", REPO / "definitions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_session_category_match_ranks_the_latest_category_first(definitions):
    udf = definitions.session_category_match.feature_transformation.udf
    out = udf(
        {
            "last_viewed_categories": ["Headphones|Lamps|Headphones", "Lamps", None, "Lamps"],
            "session_views": [3, 1, None, 1],
            "item_category": ["Lamps", "Lamps", "Lamps", None],
        }
    )
    assert out == {
        "item_in_session_categories": [1, 1, 0, 0],
        "session_category_rank": [2, 1, 0, 0],
    }


def test_ranker_v2_is_ranker_v1_plus_the_session_match(definitions):
    names = lambda service: {p.name for p in service.feature_view_projections}  # noqa: E731
    v1, v2 = names(definitions.ranker_v1), names(definitions.ranker_v2)
    assert v2 - v1 == {"session_category_match"} and v1 <= v2


def test_query_category_match_is_the_query_click_share_of_the_item_category(definitions):
    udf = definitions.query_category_match.feature_transformation.udf
    nan = float("nan")
    out = udf(
        {
            "q_top_category_1": ["Lamps", "Lamps", "Lamps", None, nan, "Lamps"],
            "q_top_category_1_share": [0.7, 0.7, 0.7, None, nan, 1.0],
            "q_top_category_2": ["Sofas", "Sofas", None, None, nan, None],
            "q_top_category_2_share": [0.2, 0.2, 0.0, None, nan, 0.0],
            "item_category": ["Lamps", "Sofas", "Sofas", "Lamps", "Lamps", None],
        }
    )
    # top category, second category, another category, then no query stats (None online,
    # NaN offline): unknown, so null; an item without a category matches nothing.
    assert out == {
        "query_category_share": [0.7, 0.2, 0.0, None, None, 0.0],
        "query_top_category_match": [1.0, 0.0, 0.0, None, None, 0.0],
    }


def test_ranker_v3_is_ranker_v2_plus_the_query_category_match(definitions):
    names = lambda service: {p.name for p in service.feature_view_projections}  # noqa: E731
    v2, v3 = names(definitions.ranker_v2), names(definitions.ranker_v3)
    assert v3 - v2 == {"query_category_match"} and v2 <= v3


def _definitions_of(definitions, kind):
    return [v for v in vars(definitions).values() if isinstance(v, kind)]


def test_every_field_says_what_it_holds(definitions):
    fields = [
        (view.name, field)
        for view in _definitions_of(definitions, FeatureView)
        for field in view.features
    ]
    fields += [
        (source.name, field)
        for source in _definitions_of(definitions, RequestSource)
        for field in source.schema
    ]
    assert len(fields) > 60
    bare = [f"{view}.{field.name}" for view, field in fields if not field.description.strip()]
    # Feast rejects described output Fields of on-demand views (feature_repo/definitions.py
    # says why): there the view's description names and describes each output.
    for view in _definitions_of(definitions, OnDemandFeatureView):
        described = {part.split(":")[0].strip() for part in view.description.split(";")}
        bare += [f"{view.name}.{f.name}" for f in view.features if f.name not in described]
    assert bare == []


def test_every_entity_view_and_service_has_an_owner_and_tags(definitions):
    objects = [
        obj
        for kind in (Entity, FeatureView, OnDemandFeatureView, FeatureService)
        for obj in _definitions_of(definitions, kind)
    ]
    names = {obj.name for obj in objects}
    assert {"user", "user_stats", "user_session", "price_vs_user_avg", "ranker_v2"} <= names
    assert [o.name for o in objects if not o.owner or not o.tags] == []

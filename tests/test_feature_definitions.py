"""The declarative feature repo: on-demand views on known inputs, services as contracts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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

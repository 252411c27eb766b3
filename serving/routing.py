"""Which ordering serves a request: the experiment's variants as routes, swapped atomically.

A `Routing` is an immutable snapshot: the experiment, one `Route` per variant (its ranker or a
model-free ordering, and the online features of its feature service) and the shadow route.
The service holds one snapshot in one attribute; a reload builds a complete new snapshot
(loading the new models while the old one keeps serving) and replaces the attribute in one
assignment. A request reads the attribute once, so it is served wholly by the old or wholly by
the new models, and none fails during the swap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.drift import load_profiles
from serving.experiments import Experiment
from serving.features import ranker_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    variant: str
    model_tag: str  # the resolved ranker tag, or 'random' / 'popularity'
    feature_service: str
    features: object  # serving.features.OnlineFeatures of that feature service
    score: Callable[[pd.DataFrame, list[str], str], np.ndarray]  # (features, items, list_id)
    profiles: dict | None = None  # training feature profiles (features.drift), for drift

    @property
    def is_model(self) -> bool:
        return self.model_tag not in ("random", "popularity")


@dataclass(frozen=True)
class Routing:
    experiment: Experiment
    routes: dict[str, Route]
    shadow: Route | None = None

    def pick(self, key: str) -> Route:
        return self.routes[self.experiment.assign(key).name]

    def describe(self) -> dict:
        return {
            "experiment": self.experiment.name,
            "variants": [
                {
                    "name": v.name,
                    "share": v.share,
                    "model": self.routes[v.name].model_tag,
                    "feature_service": self.routes[v.name].feature_service,
                }
                for v in self.experiment.variants
            ],
            "shadow": self.shadow.model_tag if self.shadow else None,
        }


def ranker_scorer(bundle) -> Callable:
    def score(features: pd.DataFrame, items: list[str], list_id: str) -> np.ndarray:
        return bundle.predict(ranker_input(features, bundle.spec))

    return score


def random_scorer(features: pd.DataFrame, items: list[str], list_id: str) -> np.ndarray:
    # Seeded by the list id: the order a list was served in can be recomputed from its id.
    return np.random.default_rng(int(list_id[:16], 16)).random(len(items))


def popularity_scorer(catalog_cache) -> Callable:
    def score(features: pd.DataFrame, items: list[str], list_id: str) -> np.ndarray:
        pop = catalog_cache.current.items["popularity"].reindex(items).fillna(0.0)
        return pop.to_numpy(np.float64)

    return score


def build(
    experiment: Experiment,
    load_ranker: Callable[[str], tuple[object, str, str, str]],
    features_for: Callable[[str], object],
    catalog_cache,
) -> Routing:
    """A complete snapshot. `load_ranker(tag) -> (bundle, resolved tag, feature service, path)`;
    `features_for(feature service) -> OnlineFeatures` (kept per service, breakers included)."""
    loaded: dict[str, tuple] = {}

    def model_route(variant: str, tag: str) -> Route:
        if tag not in loaded:
            loaded[tag] = load_ranker(tag)
        bundle, resolved, service, path = loaded[tag]
        return Route(
            variant,
            resolved,
            service,
            features_for(service),
            ranker_scorer(bundle),
            load_profiles(path),
        )

    routes: dict[str, Route] = {}
    for v in experiment.variants:
        if v.needs_model:
            routes[v.name] = model_route(v.name, v.model)
    # Model-free orderings fetch (and log) the features of the experiment's first ranker, so
    # their latency and their logged rows compare with the ranker's.
    base = next(iter(routes.values()), None)
    if base is None:
        raise ValueError("an experiment needs at least one ranker variant (for its features)")
    for v in experiment.variants:
        if not v.needs_model:
            score = random_scorer if v.model == "random" else popularity_scorer(catalog_cache)
            routes[v.name] = Route(
                v.name, v.model, base.feature_service, base.features, score, base.profiles
            )
    shadow = model_route("shadow", experiment.shadow) if experiment.shadow else None
    return Routing(experiment, routes, shadow)

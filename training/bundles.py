"""The train/serve contract: model names, feature-service names, and both models' bundles in
the BentoML model store, with what serving and an auditor need.

Training jobs save through this module and serving loads through it; it imports no training
job, so serving depends on the model definitions (training.intent_model, training.ranker_model)
and these names, never on a job.

Each saved model folder holds the model's own files (weights, tokenizer, label maps, feature
spec with normalisation stats) plus `metrics.json` and `lineage.json`; the model's BentoML
metadata repeats the feature service, training time range, ingest batch ids and headline
metrics so `bentoml models get` shows them without opening files.

    save_intent(predictor, metrics, lineage) -> "cartwise-intent:<version>"
    load_intent("cartwise-intent:latest") -> IntentPredictor
    save_ranker(bundle, metrics, lineage, profiles=...) / load_ranker(tag) -> RankerBundle

BENTOML_HOME is read on every call: bentoml caches its home on first use, which would
send a test (or a second job in one process) to the wrong store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml._internal.models.model import ModelStore

from features.drift import save_profiles
from training.common import to_jsonable
from training.intent_model import IntentPredictor
from training.ranker_model import RankerBundle

INTENT_MODEL = "cartwise-intent"
RANKER_MODEL = "cartwise-ranker"
# The Feast feature services the models are trained on: one owner for each name. A stored
# ranker carries its own service in its metadata (ranker_feature_service), so serving follows
# the model rather than this default.
INTENT_FEATURE_SERVICE = "intent_v1"
RANKER_FEATURE_SERVICE = "ranker_v3"


def ranker_feature_service(model_metadata: dict) -> str:
    """The feature service a stored ranker was trained on (its train/serve contract)."""
    name = model_metadata.get("feature_service")
    if not name:
        raise ValueError(
            "ranker model has no 'feature_service' in its metadata; "
            "save it with training.bundles.save_ranker"
        )
    return str(name)


def model_store() -> ModelStore:
    home = os.environ.get("BENTOML_HOME", os.path.join(os.path.expanduser("~"), "bentoml"))
    path = os.path.join(os.path.expanduser(home), "models")
    os.makedirs(path, exist_ok=True)
    return ModelStore(path)


def _metadata(obj: Any) -> Any:
    """bentoml metadata takes no None; drop those rather than invent a value."""
    if isinstance(obj, dict):
        return {k: _metadata(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_metadata(v) for v in obj if v is not None]
    return obj


def _headline(metrics: dict) -> dict:
    """Scalar metrics only (the confusion matrices stay in metrics.json)."""
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, dict):
            sub = _headline(v)
            if sub:
                out[k] = sub
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


def _save(
    name: str,
    write,
    feature_service: str,
    kind: str,
    metrics: dict,
    lineage: dict,
    extra: dict | None = None,
) -> str:
    metrics, lineage = to_jsonable(metrics or {}), to_jsonable(lineage or {})
    meta = _metadata(
        {
            "feature_service": feature_service,
            "kind": kind,
            "batch_ids": lineage.get("batch_ids", []),
            "time_range": lineage.get("time_range", {}),
            "metrics": _headline(metrics),
            **(extra or {}),
        }
    )
    with bentoml.models.create(
        name,
        labels={"feature_service": feature_service, "kind": kind},
        metadata=meta,
        _model_store=model_store(),
    ) as m:
        folder = Path(m.path)
        write(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (folder / "lineage.json").write_text(json.dumps(lineage, indent=2))
    return str(m.tag)


def _folder(tag: str) -> tuple[Path, Any]:
    m = bentoml.models.get(tag, _model_store=model_store())
    return Path(m.path), m


def save_intent(
    predictor, metrics: dict | None = None, lineage: dict | None = None, name: str = INTENT_MODEL
) -> str:
    return _save(
        name,
        predictor.save,
        INTENT_FEATURE_SERVICE,
        predictor.kind,
        metrics,
        lineage,
        {"intents": predictor.intents, "categories": predictor.categories},
    )


def load_intent(tag: str = f"{INTENT_MODEL}:latest") -> IntentPredictor:
    folder, _ = _folder(tag)
    return IntentPredictor.load(folder)


def save_ranker(
    bundle,
    metrics: dict | None = None,
    lineage: dict | None = None,
    name: str = RANKER_MODEL,
    profiles: dict | None = None,
) -> str:
    """`profiles`: the training split's feature profiles (features.drift.profile), saved next
    to the weights so the service can measure the drift of what it serves this model."""
    service = (lineage or {}).get("feature_service", RANKER_FEATURE_SERVICE)

    def write(folder: Path) -> None:
        bundle.save(folder)
        if profiles:
            save_profiles(profiles, folder)

    return _save(
        name,
        write,
        service,
        getattr(bundle, "kind", "dcn_v2"),  # or "logreg" when the ship gate chose it
        metrics,
        lineage,
    )


def load_ranker(tag: str = f"{RANKER_MODEL}:latest") -> RankerBundle:
    folder, _ = _folder(tag)
    return RankerBundle.load(folder)


def info(tag: str) -> dict:
    """Metadata, metrics and lineage of a stored model, as plain dicts."""
    folder, m = _folder(tag)
    return {
        "tag": str(m.tag),
        "metadata": dict(m.info.metadata),
        "labels": dict(m.info.labels),
        "metrics": json.loads((folder / "metrics.json").read_text()),
        "lineage": json.loads((folder / "lineage.json").read_text()),
    }


@dataclass(frozen=True)
class StoredRanker:
    """A ranker from the model store with what serving needs beside the weights."""

    bundle: RankerBundle
    tag: str
    feature_service: str
    path: Path


@dataclass(frozen=True)
class StoredIntent:
    predictor: IntentPredictor
    tag: str
    path: Path


def stored_ranker(tag: str = f"{RANKER_MODEL}:latest") -> StoredRanker:
    """The ranker under `tag` (':latest' resolves to the newest), its resolved tag and the
    feature service it was trained on."""
    folder, m = _folder(tag)
    return StoredRanker(
        RankerBundle.load(folder),
        str(m.tag),
        ranker_feature_service(dict(m.info.metadata)),
        folder,
    )


def stored_intent(tag: str = f"{INTENT_MODEL}:latest") -> StoredIntent:
    folder, m = _folder(tag)
    return StoredIntent(IntentPredictor.load(folder), str(m.tag), folder)


def resolve_tag(tag: str) -> str:
    """'cartwise-ranker:latest' -> the concrete tag it names now."""
    return str(_folder(tag)[1].tag)

"""Both models in the BentoML model store, with what serving and an auditor need.

Each saved model folder holds the model's own files (weights, tokenizer, label maps, feature
spec with normalisation stats) plus `metrics.json` and `lineage.json`; the model's BentoML
metadata repeats the feature service, training time range, ingest batch ids and headline
metrics so `bentoml models get` shows them without opening files.

    save_intent(predictor, metrics, lineage) -> "cartwise-intent:<version>"
    load_intent("cartwise-intent:latest") -> IntentPredictor
    save_ranker(bundle, metrics, lineage) / load_ranker(tag) -> RankerBundle

BENTOML_HOME is read on every call: bentoml caches its home on first use, which would
send a test (or a second job in one process) to the wrong store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.common import to_jsonable

INTENT_MODEL = "cartwise-intent"
RANKER_MODEL = "cartwise-ranker"


def model_store():
    from bentoml._internal.models.model import ModelStore

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
    import bentoml

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
    import bentoml

    m = bentoml.models.get(tag, _model_store=model_store())
    return Path(m.path), m


def save_intent(
    predictor, metrics: dict | None = None, lineage: dict | None = None, name: str = INTENT_MODEL
) -> str:
    from training.intent import FEATURE_SERVICE

    return _save(
        name,
        predictor.save,
        FEATURE_SERVICE,
        predictor.kind,
        metrics,
        lineage,
        {"intents": predictor.intents, "categories": predictor.categories},
    )


def load_intent(tag: str = f"{INTENT_MODEL}:latest"):
    from training.intent_model import IntentPredictor

    folder, _ = _folder(tag)
    return IntentPredictor.load(folder)


def save_ranker(
    bundle, metrics: dict | None = None, lineage: dict | None = None, name: str = RANKER_MODEL
) -> str:
    from training.ranker import FEATURE_SERVICE

    return _save(
        name,
        bundle.save,
        lineage.get("feature_service", FEATURE_SERVICE) if lineage else FEATURE_SERVICE,
        "dcn_v2",
        metrics,
        lineage,
    )


def load_ranker(tag: str = f"{RANKER_MODEL}:latest"):
    from training.ranker_model import RankerBundle

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

"""A small simulated shop with its ground truth, ready to serve: for the feedback-loop tests.

The project's own path at a small size: simulate (ending now, so online features are fresh)
-> governed ingest -> feature pipeline (MiniLM embeddings) -> Feast apply + materialise ->
ranker_v1 training set -> tiny DCN-v2 ranker (saved with its feature profile) and a TF-IDF
intent model in the BentoML store of $BENTOML_HOME.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from features import pipeline
from features.drift import profile
from features.store import apply
from governance.ingest import ingest_simulation
from governance.simulate import SimConfig, simulate
from training.intent import IntentTrainArgs, load_labelled
from training.intent import train as train_intent
from training.ranker import RankerTrainArgs, frame_from_feast
from training.ranker import train as train_ranker
from training.retrain import _WithProfile
from training.store import save_intent, save_ranker

TINY_RANKER = dict(
    buckets=1024,
    emb_dim=8,
    cross_layers=2,
    deep="32",
    batch_size=64,
    epochs=4,
    patience=1,
    tensorboard=False,
    save_model=False,
)


def build(settings, root: Path, seed: int = 5) -> dict:
    days = 3
    start = (datetime.now(UTC) - timedelta(days=days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    sim = root / "sim"
    simulate(
        SimConfig(seed=seed, events=6_000, days=days, n_users=150, n_items=120, start=start),
        sim,
        progress=False,
    )
    ingest_simulation(sim, settings=settings, progress=False)
    pipeline.run(settings, embeddings=True)
    store = apply(settings)
    store.materialize(start - timedelta(days=1), datetime.now(UTC))
    frame, names, lineage = frame_from_feast(settings, "ranker_v1", list_sample=0.5)
    res = train_ranker(
        RankerTrainArgs(out_dir=str(root / "runs"), seed=seed, **TINY_RANKER),
        frame=frame,
        feature_names=names,
        lineage=lineage,
    )
    profiles = profile(frame, list(res["spec"].dense))
    ranker_tag = save_ranker(_WithProfile(res["bundle"], profiles), res["test"], res["lineage"])
    ires = train_intent(
        IntentTrainArgs(
            out_dir=str(root / "runs"), candidates=("tfidf_lr",), tensorboard=False, seed=seed
        ),
        data=load_labelled(settings),
    )
    intent_tag = save_intent(
        ires["predictor"], {"test": ires["test"][ires["winner"]]}, ires["lineage"]
    )
    return {
        "sim": sim,
        "ranker_tag": ranker_tag,
        "intent_tag": intent_tag,
        "bundle": res["bundle"],
        "profiles": profiles,
        "bentoml_home": os.environ.get("BENTOML_HOME"),
    }

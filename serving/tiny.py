"""A tiny, complete world to serve: data, features, online store, both models.

For the serving tests, the serving benchmark and a quick local try-out; minutes of CPU at most:

    python -m serving.tiny          # uses DATABASE_URL / REDIS_URL / BENTOML_HOME from the env

Steps, each the project's own code path: synthetic catalogue + events (tests/feature_events), user
ids pseudonymised as the ingest would have stored them, the feature pipeline (with MiniLM title
embeddings), `feast apply` + materialize, a point-in-time training set from the ranker's feature
service, a tiny DCN-v2 ranker and a TF-IDF intent model saved to the BentoML model store.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

TINY_RANKER = dict(
    buckets=512,
    emb_dim=8,
    cross_layers=2,
    deep="32",
    batch_size=128,
    epochs=3,
    patience=1,
    tensorboard=False,
    save_model=False,
)
INTENT_TEMPLATES = {
    "buy_product": ["buy {w}", "order {w} now", "{w} add to cart", "cheap {w} to buy"],
    "browse_category": ["best {w}", "all {w}", "{w} ideas", "top rated {w}"],
    "compare_prices": ["{w} price", "{w} price comparison", "{w} vs", "compare {w} prices"],
}


def pseudonymise_synthetic_users(settings) -> None:
    """tests/feature_events.py writes raw shop ids; the governed tables hold keyed pseudonyms."""
    from governance.db import transaction
    from governance.privacy import pseudonymise

    key = settings.pseudonym_key.get_secret_value()
    with transaction(settings) as cur:
        cur.execute("SELECT DISTINCT user_id FROM events UNION SELECT user_id FROM users")
        ids = [r[0] for r in cur.fetchall() if not r[0].startswith("u_")]
        pairs = [(pseudonymise(u, key), u) for u in ids]
        cur.executemany("UPDATE events SET user_id = %s WHERE user_id = %s", pairs)
        cur.executemany("UPDATE users SET user_id = %s WHERE user_id = %s", pairs)


def intent_examples():
    import pandas as pd

    from tests.feature_events import WORDS

    rows = []
    for cat, words in WORDS.items():
        for w in words:
            for intent, templates in INTENT_TEMPLATES.items():
                for t in templates:
                    rows.append(
                        {
                            "query": t.format(w=w),
                            "intent": intent,
                            "category": cat,
                            "source": "synthetic",
                            "batch_id": 0,
                        }
                    )
    return pd.DataFrame(rows).drop_duplicates(["query", "intent", "category"])


def build(
    settings,
    *,
    out_dir: str,
    n_sessions: int = 300,
    n_items: int = 60,
    n_users: int = 30,
    days: float = 10,
    seed: int = 1,
) -> dict:
    """Everything `serving.service:Cartwise` needs, in `settings`' database and online store
    and in the model store of $BENTOML_HOME. Returns the catalogue and the model tags."""
    from features import pipeline
    from features.store import apply
    from features.training_set import build_training_set
    from governance.db import transaction
    from tests import feature_events as synthetic
    from training.intent import IntentTrainArgs
    from training.intent import train as train_intent
    from training.ranker import RankerTrainArgs
    from training.ranker import train as train_ranker
    from training.store import save_intent, save_ranker

    # History ending now, not at synthetic.T0: recency features (seconds since last activity,
    # session TTLs) must look at serving time the way they looked at training time.
    start = (datetime.now(UTC) - timedelta(days=days + 1)).replace(
        minute=0, second=0, microsecond=0
    )
    with transaction(settings) as cur:
        catalog = synthetic.insert_catalog(cur, n_items=n_items, n_users=n_users, seed=seed)
        rows = synthetic.make_events(catalog, n_sessions, start=start, days=days, seed=seed)
        catalog["batch_id"] = synthetic.insert_events(cur, rows)
    pseudonymise_synthetic_users(settings)
    pipeline.run(settings, embeddings=True)
    store = apply(settings)
    store.materialize(start - timedelta(days=1), datetime.now(UTC))

    service = store.get_feature_service("ranker_v1")
    names = [f.name for p in service.feature_view_projections for f in p.features]
    frame = build_training_set(store, "ranker_v1", start=start, end=datetime.now(UTC))
    res = train_ranker(
        RankerTrainArgs(out_dir=out_dir, seed=seed, **TINY_RANKER), frame=frame, feature_names=names
    )
    ranker_tag = save_ranker(res["bundle"], res["test"], res["lineage"])
    ires = train_intent(
        IntentTrainArgs(out_dir=out_dir, candidates=("tfidf_lr",), tensorboard=False, seed=seed),
        data=intent_examples(),
    )
    intent_tag = save_intent(
        ires["predictor"], {"test": ires["test"][ires["winner"]]}, ires["lineage"]
    )
    return {
        "catalog": catalog,
        "ranker_tag": ranker_tag,
        "intent_tag": intent_tag,
        "bentoml_home": os.environ.get("BENTOML_HOME"),
    }


if __name__ == "__main__":
    import json

    from governance.db import migrate
    from governance.settings import get_settings

    logging.basicConfig(level=logging.INFO)
    s = get_settings()
    migrate(s)
    out = build(s, out_dir="runs")
    print(json.dumps({k: v for k, v in out.items() if k != "catalog"}, indent=2))

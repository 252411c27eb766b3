"""Small training frames with known structure, for the training tests and benchmarks.

Each has a signal the models can learn and noise they cannot, so a test can check that
training beats a trivial baseline. They speak the project's vocabulary: the intents are
governance.schemas.INTENTS and the queries come from the simulator's templates
(governance.simulate.vocabulary), validated by the labelled-queries Pandera model; the ranker
frame's feature columns are features of the ranker's feature service.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from governance.schemas import INTENTS
from governance.simulate import vocabulary
from governance.validation import validate

# (category, leaf index) of a few leaves: enough categories to classify, few enough to learn.
LEAVES = [i for i, leaf in enumerate(vocabulary.LEAVES) if leaf[0].startswith("Electronics")][:5]


def intent_queries(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """(query, intent, category, source, batch_id): the simulator's labelled-query templates,
    intents in turn, distinct texts, every row valid under LabelledQueryRecord."""
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    for k in range(20 * n):
        if len(rows) == n:
            break
        intent = INTENTS[k % len(INTENTS)]
        leaf = LEAVES[int(rng.integers(len(LEAVES)))]
        query = vocabulary.make_query(leaf, intent, rng, typo_rate=0.0)
        if query in seen:
            continue
        seen.add(query)
        category = vocabulary.leaf_name(vocabulary.LEAVES[leaf][0])
        rows.append({"query": query, "intent": intent, "category": category})
    checked = validate("labelled_queries", pd.DataFrame(rows, dtype=object))
    assert checked.reasons.empty, checked.reasons
    frame = pd.DataFrame(rows)
    frame["source"] = "labelled"
    frame["batch_id"] = 1 + np.arange(len(frame)) % 2
    return frame


# RankerTrainArgs of a ranker small enough for tests to train in seconds on ranker_frame's
# rows (which carry ranker_v1's columns).
TINY_RANKER = dict(
    feature_service="ranker_v1",
    buckets=512,
    emb_dim=8,
    cross_layers=2,
    deep="32",
    batch_size=64,
    epochs=4,
    patience=2,
    tensorboard=False,
)


def ranker_frame(
    n_lists: int = 60,
    list_size: int = 10,
    n_users: int = 40,
    n_items: int = 80,
    days: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """A frame shaped like features.training_set.build_training_set's output for the ranker:
    keys and label, the simulator-style p_click, and a few of ranker_v2's feature columns
    (item_ctr_smoothed_7d, item_price, clicks_7d, user_item_cosine, item_category)."""
    rng = np.random.default_rng(seed)
    emb_dim = 8
    item_cat = rng.integers(0, 5, n_items)
    item_q = rng.normal(0, 1, n_items)
    item_emb = rng.normal(0, 1, (n_items, emb_dim)).astype(np.float32)
    user_pref = rng.integers(0, 5, n_users)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for li in range(n_lists):
        u = int(rng.integers(n_users))
        ts = start + pd.Timedelta(seconds=float(rng.uniform(0, days * 86400)))
        items = rng.choice(n_items, list_size, replace=False)
        # The user's recent-items embedding: one item of their favourite category.
        taste = (
            item_emb[rng.choice(np.where(item_cat == user_pref[u])[0])]
            if (item_cat == user_pref[u]).any()
            else rng.normal(0, 1, emb_dim)
        )
        for pos, it in enumerate(items):
            cos = float(
                item_emb[it] @ taste / (np.linalg.norm(item_emb[it]) * np.linalg.norm(taste))
            )
            z = (
                -2.0
                + 1.2 * item_q[it]
                + 1.5 * (item_cat[it] == user_pref[u])
                + 1.0 * cos
                - 0.15 * pos
            )
            p = 1 / (1 + np.exp(-z))
            ctr = float(1 / (1 + np.exp(-(item_q[it] - 2))) + rng.normal(0, 0.02))
            rows.append(
                {
                    "event_id": f"e{li}_{pos}",
                    "event_timestamp": ts,
                    "user_id": f"u{u}",
                    "item_id": f"i{it}",
                    "list_id": f"l{li}",
                    "position": pos,
                    "label": int(rng.random() < p),
                    "p_click": p,
                    "item_ctr_smoothed_7d": ctr,
                    "item_price": float(np.exp(rng.normal(3, 1))),
                    "clicks_7d": int(rng.poisson(3)),
                    "user_item_cosine": cos,
                    "item_category": f"c{item_cat[it]}",
                }
            )
    return pd.DataFrame(rows)


def retail_purchases(
    n_users: int = 60, n_items: int = 50, days: int = 120, seed: int = 0
) -> pd.DataFrame:
    """Purchases (the events table's user_id, item_id, event_ts, quantity) with repeat buying,
    co-purchase clusters and a popularity drift, as training.retail reads them."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 5, n_items)
    start = pd.Timestamp("2011-01-01", tz="UTC")
    rows = []
    for u in range(n_users):
        fav = int(rng.integers(5))
        staples = rng.choice(np.where(cluster == fav)[0], 2)
        for _ in range(int(rng.integers(4, 20))):
            t = start + pd.Timedelta(days=float(rng.uniform(0, days)))
            pool = np.where(cluster == fav)[0] if rng.random() < 0.7 else np.arange(n_items)
            basket = set(rng.choice(pool, int(rng.integers(1, 4))).tolist())
            if rng.random() < 0.5:
                basket.add(int(rng.choice(staples)))
            for it in basket:
                rows.append(
                    {
                        "user_id": f"c{u}",
                        "item_id": f"p{it}",
                        "event_ts": t,
                        "quantity": int(rng.integers(1, 6)),
                    }
                )
    return pd.DataFrame(rows)

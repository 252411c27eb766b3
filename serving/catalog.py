"""In-memory catalogue for candidate generation, loaded from PostgreSQL and refreshed.

Candidate generation needs whole-catalogue scans (nearest title embeddings, popular items per
category, co-visitation neighbours) that a key-value online store cannot answer, so the
service keeps them in memory. They double as the fallback: when Redis or PostgreSQL is down the
last good copy still answers (flagged in the response), and a refresh that fails keeps it.

Title embeddings are the stored ones (`item_embeddings`, written by features.embeddings), so a
new item is reachable by text as soon as the pipeline has embedded its title, before it has
any clicks or co-visits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from governance.db import engine
from serving.breaker import describe

log = logging.getLogger(__name__)

ITEMS_SQL = "SELECT item_id, title, category, price::float8 AS price FROM items"
EMBEDDINGS_SQL = """
SELECT DISTINCT ON (item_id) item_id, title_embedding
FROM item_embeddings ORDER BY item_id, event_timestamp DESC
"""
# Popularity over the 30 days before the newest clean event (not before now(): a replayed or
# simulated history must not look empty), weighted by how committed each action is.
POPULAR_SQL = """
WITH horizon AS (SELECT max(event_ts) - interval '30 days' AS since FROM events WHERE NOT is_bot)
SELECT e.item_id,
       sum(CASE e.event_type WHEN 'purchase' THEN 5 WHEN 'add_to_cart' THEN 3
                             WHEN 'click' THEN 1 WHEN 'view' THEN 1 ELSE 0 END)::float8 AS score
FROM events e, horizon h
WHERE NOT e.is_bot AND e.item_id IS NOT NULL AND e.event_ts >= h.since
  AND e.event_type IN ('purchase', 'add_to_cart', 'click', 'view')
GROUP BY e.item_id
"""
# Items interacted with in the same session, over the same 30 days; sessions with very many
# distinct items (crawlers that escaped the bot rule) would add quadratic noise, so skip them.
COVISIT_SQL = """
WITH horizon AS (SELECT max(event_ts) - interval '30 days' AS since FROM events WHERE NOT is_bot),
s AS (
    SELECT e.session_id, e.item_id FROM events e, horizon h
    WHERE NOT e.is_bot AND e.item_id IS NOT NULL AND e.event_ts >= h.since
      AND e.event_type IN ('view', 'click', 'add_to_cart', 'purchase')
    GROUP BY 1, 2
), sized AS (
    SELECT session_id FROM s GROUP BY 1 HAVING count(*) BETWEEN 2 AND %(max_items)s
), pairs AS (
    SELECT a.item_id AS item_id, b.item_id AS other, count(*)::float8 AS n
    FROM s a JOIN s b USING (session_id) JOIN sized USING (session_id)
    WHERE a.item_id <> b.item_id GROUP BY 1, 2
)
SELECT item_id, other, n FROM (
    SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY n DESC, other) AS r FROM pairs
) t WHERE r <= %(per_item)s
"""


@dataclass
class Catalog:
    items: pd.DataFrame  # index item_id: title, category, price, popularity
    emb_ids: np.ndarray  # item ids of the rows of `emb`
    emb: np.ndarray  # (n, d) float32, L2-normalised stored title embeddings
    covisit: dict[str, list[tuple[str, float]]]
    popular: list[str]  # item ids, most popular first
    popular_by_category: dict[str, list[str]]
    loaded_at: float = field(default_factory=time.time)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def nearest(
        self, vector: np.ndarray, n: int, exclude: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-n items by cosine of their stored title embedding to `vector`."""
        if len(self.emb_ids) == 0 or vector is None:
            return []
        v = np.asarray(vector, np.float32).ravel()
        if v.shape[0] != self.emb.shape[1]:
            return []
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        sims = self.emb @ v
        want = min(len(sims), n + len(exclude or ()))
        top = np.argpartition(-sims, want - 1)[:want]
        top = top[np.argsort(-sims[top], kind="stable")]
        out = [(str(self.emb_ids[i]), float(sims[i])) for i in top]
        if exclude:
            out = [p for p in out if p[0] not in exclude]
        return out[:n]

    def mean_embedding(self, item_ids: list[str]) -> np.ndarray | None:
        idx = self._emb_index()
        rows = [idx[i] for i in item_ids if i in idx]
        if not rows:
            return None
        return self.emb[rows].mean(0)

    def _emb_index(self) -> dict[str, int]:
        if not hasattr(self, "_idx"):
            self._idx = {str(k): i for i, k in enumerate(self.emb_ids)}
        return self._idx

    def _by_id(self) -> dict[str, tuple]:
        # Dicts, not `items.at` / `items.loc`: ranking asks for every candidate's category
        # and every shown item's row on every request, and a pandas lookup costs ~100 times
        # a dict's. Built once per catalogue (a refresh makes a new Catalog); two threads
        # building it at once build the same.
        if not hasattr(self, "_rows"):
            cols = [self.items[c].tolist() for c in ("title", "category", "price")]
            self._rows = dict(zip(self.items.index, zip(*cols)))
        return self._rows

    def row_of(self, item_id: str) -> tuple | None:
        """(title, category, price) of an item, None when it is not in the catalogue."""
        return self._by_id().get(item_id)

    def category_of(self, item_id: str) -> str | None:
        row = self._by_id().get(item_id)
        return None if row is None else row[1]

    def title_of(self, item_id: str) -> str:
        row = self._by_id().get(item_id)
        return item_id if row is None else str(row[0])


def load_catalog(settings, covisit_per_item: int = 20, max_session_items: int = 50) -> Catalog:
    eng = engine(settings)
    try:
        with eng.connect() as conn:
            items = pd.read_sql_query(ITEMS_SQL, conn).set_index("item_id")
            emb = pd.read_sql_query(EMBEDDINGS_SQL, conn)
            pop = pd.read_sql_query(POPULAR_SQL, conn)
            cov = pd.read_sql_query(
                COVISIT_SQL,
                conn,
                params={"per_item": covisit_per_item, "max_items": max_session_items},
            )
    finally:
        eng.dispose()
    items["popularity"] = pop.set_index("item_id")["score"].reindex(items.index).fillna(0.0)
    emb = emb[emb["item_id"].isin(items.index)]
    matrix = (
        np.stack([np.asarray(v, np.float32) for v in emb["title_embedding"]])
        if len(emb)
        else np.zeros((0, 384), np.float32)
    )
    if len(matrix):
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    # Ties (no interactions at all) go to the newest rows last: stable order by item id.
    ranked = items.sort_values(["popularity"], ascending=False, kind="stable")
    by_cat = {c: g.index.tolist() for c, g in ranked.groupby("category", sort=False)}
    covisit: dict[str, list[tuple[str, float]]] = {}
    for item, other, n in cov.itertuples(index=False):
        covisit.setdefault(item, []).append((other, float(n)))
    return Catalog(
        items=items,
        emb_ids=emb["item_id"].to_numpy(dtype=object),
        emb=matrix,
        covisit=covisit,
        popular=ranked.index.tolist(),
        popular_by_category=by_cat,
    )


class CatalogCache:
    """The current Catalog, replaced whole by a background refresh every `refresh_s`."""

    def __init__(self, settings, refresh_s: float = 300.0):
        self.settings = settings
        self.refresh_s = refresh_s
        self.current: Catalog | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        try:
            cat = load_catalog(self.settings)
        except Exception as exc:  # keep serving the last good copy
            self.last_error = describe(exc)  # no addresses: /status shows it
            log.warning("catalog refresh failed, keeping the last copy: %s", self.last_error)
            return False
        self.current = cat  # one reference swap: readers never see a half-built catalog
        self.last_error = None
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="catalog-refresh", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(
            self.refresh_s if self.current is not None else min(self.refresh_s, 2.0)
        ):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict:
        cat = self.current
        return {
            "loaded": cat is not None,
            "items": cat.n_items if cat else 0,
            "embedded_items": len(cat.emb_ids) if cat else 0,
            "age_s": round(time.time() - cat.loaded_at, 1) if cat else None,
            "last_error": self.last_error,
        }

"""Intent, search and recommendation: candidate generation, ranking, reasons, fallbacks.

Kept apart from the BentoML class so it can be driven in-process (tests, benchmarks) with the
same code the HTTP service runs.

Candidates come from the in-memory catalogue (serving.catalog); every feature the ranker
scores them with comes from Feast (serving.features). When Feast cannot answer, the response
is built from the catalogue alone and says so (`fallback`, `fallback_reason`).
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.labels import query_key
from serving.features import OnlineFeatures, StoreUnavailable
from serving.routing import Route, ranker_scorer

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """The catalogue has never loaded (PostgreSQL unreachable since start)."""


@dataclass
class Tuning:
    # Search: predicted-category boost on cosine, scaled by the category probability.
    category_boost: float = 0.15
    # A browse query with a confident category shows only that category (when it has enough).
    filter_min_p: float = 0.6
    # Search order blends relevance and the ranker: mostly relevance, the ranker reorders
    # near-ties by predicted engagement.
    relevance_weight: float = 0.7
    # Recommendation candidate budget per source (before the overall `candidates` cap).
    per_recent_item: int = 20
    similar_items: int = 40
    per_category: int = 30


class Candidates:
    """Ordered candidate set remembering which sources proposed each item and why."""

    def __init__(self, exclude: set[str] | None = None):
        self.items: OrderedDict[str, list[str]] = OrderedDict()
        self.reasons: dict[str, str] = {}
        self.exclude = exclude or set()

    def add(self, item: str, source: str, reason: str) -> None:
        if item in self.exclude:
            return
        if item not in self.items:
            self.items[item] = []
            self.reasons[item] = reason
        if source not in self.items[item]:
            self.items[item].append(source)

    def __len__(self) -> int:
        return len(self.items)


class Engine:
    def __init__(
        self,
        catalog_cache,
        features: OnlineFeatures,
        ranker,
        intent_model,
        encode,
        pseudonymise,
        tuning: Tuning | None = None,
        ranker_tag: str = "",
    ):
        self.catalog_cache = catalog_cache
        self.features = features
        self.ranker = ranker
        self.intent_model = intent_model
        self.encode = encode  # texts -> list of 384-float vectors (features.embeddings)
        self.pseudonymise = pseudonymise
        self.tuning = tuning or Tuning()
        self.ranker_tag = ranker_tag
        # Without an experiment every request takes this route: the one ranker.
        self.default_route = Route(
            "default", ranker_tag, features.feature_service_name, features, ranker_scorer(ranker)
        )

    @property
    def catalog(self):
        cat = self.catalog_cache.current
        if cat is None:
            raise NotReady(f"catalogue not loaded yet ({self.catalog_cache.last_error})")
        return cat

    # ------------------------------------------------------------------ intent
    def intent(self, query: str) -> dict:
        ip, cp = self.intent_model.predict_proba([query])
        intents, cats = self.intent_model.intents, self.intent_model.categories
        out = {
            "query": query,
            "intent": intents[int(ip[0].argmax())],
            "intent_p": float(ip[0].max()),
            "probabilities": {"intent": {k: float(p) for k, p in zip(intents, ip[0])}},
        }
        if cats:
            out["category"] = cats[int(cp[0].argmax())]
            out["category_p"] = float(cp[0].max())
            out["probabilities"]["category"] = {k: float(p) for k, p in zip(cats, cp[0])}
        return out

    # ------------------------------------------------------------------ ranking
    def _rank(
        self,
        user: str | None,
        items: list[str],
        request_ts_s: int | None,
        route: Route,
        list_id: str,
        query: str | None = None,
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """The route's scores of the candidates, and the feature rows they were scored on;
        `query`: a search's raw query (keyed by `query_key`, as its training rows were)."""
        cat = self.catalog
        cats = [cat.category_of(i) for i in items]
        feats = route.features.ranker_features(user, items, cats, request_ts_s, query_key(query))
        return route.score(feats, items, list_id), feats

    @staticmethod
    def _served(out: dict, route: Route, list_id: str, user: str | None, feats, top) -> dict:
        """What a served list says about itself; `_`-keys are for the list log only."""
        out.update(
            list_id=list_id,
            variant=route.variant,
            ranker=route.model_tag,
            feature_service=route.feature_service,
            _user=user,
            _features=None if feats is None or not len(feats) else feats.iloc[list(top)],
        )
        return out

    def _item(
        self, item: str, score: float, p: float | None, reason: str, sources: list[str]
    ) -> dict:
        row = self.catalog.row_of(item)  # (title, category, price)
        return {
            "item_id": item,
            "title": str(row[0]) if row is not None else item,
            "category": row[1] if row is not None else None,
            "price": float(row[2]) if row is not None else None,
            "score": round(float(score), 6),
            "p_click": None if p is None else round(float(p), 6),
            "reason": reason,
            "sources": sources,
        }

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: str,
        user_id: str | None,
        k: int,
        n_candidates: int = 200,
        route: Route | None = None,
    ) -> dict:
        cat = self.catalog
        route = route or self.default_route
        list_id = uuid.uuid4().hex
        t = self.tuning
        intent = self.intent(query)
        qv = np.asarray(self.encode([query])[0], np.float32)
        hits = cat.nearest(qv, max(n_candidates, k) * 2)
        pcat, pcat_p = intent.get("category"), intent.get("category_p") or 0.0
        rel = {}
        for item, sim in hits:
            boost = t.category_boost * pcat_p if pcat and cat.category_of(item) == pcat else 0.0
            rel[item] = (sim + boost, sim, boost > 0)
        if intent["intent"] == "browse_category" and pcat and pcat_p >= t.filter_min_p:
            only = {i: v for i, v in rel.items() if v[2]}
            if len(only) >= k:
                rel = only
        order = sorted(rel, key=lambda i: -rel[i][0])[:n_candidates]
        user = self.pseudonymise(user_id) if user_id else None
        fallback, reason_fb, p, feats = False, None, None, None
        try:
            p, feats = self._rank(user, order, None, route, list_id, query)
        except StoreUnavailable as exc:
            fallback, reason_fb = True, f"online store unavailable: {exc}"
        r = np.array([rel[i][0] for i in order], np.float64)
        rn = r / max(float(r.max()), 1e-9) if len(r) else r
        if p is not None and len(order):
            pn = p / max(float(p.max()), 1e-9)
            score = t.relevance_weight * rn + (1 - t.relevance_weight) * pn
        else:
            pop = cat.items["popularity"].reindex(order).fillna(0).to_numpy(np.float64)
            score = rn + 0.01 * pop / max(float(pop.max()) if len(pop) else 0.0, 1.0)
        top = np.argsort(-score, kind="stable")[:k]
        items = []
        for j in top:
            item = order[j]
            why = f"matches '{query}' (similarity {rel[item][1]:.2f})"
            if rel[item][2]:
                why += f"; in predicted category {pcat}"
            if p is not None and route.is_model:
                why += f"; predicted click {p[j]:.2f}"
            sources = ["text_similarity"] + (["intent_category"] if rel[item][2] else [])
            p_item = p[j] if p is not None and route.is_model else None
            items.append(self._item(item, score[j], p_item, why, sources))
        out = {
            "query": query,
            "intent": intent,
            "items": items,
            "fallback": fallback,
            "fallback_reason": reason_fb,
        }
        return self._served(out, route, list_id, user, feats, top)

    # ------------------------------------------------------------------ recommend
    def _context_candidates(self, cands: Candidates, context: dict | None, n: int) -> None:
        cat = self.catalog
        context = context or {}
        if context.get("query"):
            qv = self.encode([context["query"]])[0]
            for item, _sim in cat.nearest(np.asarray(qv, np.float32), self.tuning.similar_items):
                cands.add(item, "context_query", f"matches your search '{context['query']}'")
            pred = self.intent(context["query"]).get("category")
            if pred:
                for item in cat.popular_by_category.get(pred, [])[:n]:
                    cands.add(item, "context_query_category", f"popular in {pred}")
        if context.get("category"):
            c = context["category"]
            for item in cat.popular_by_category.get(c, [])[:n]:
                cands.add(item, "context_category", f"popular in {c}")

    def _popular(self, cands: Candidates, n: int) -> None:
        for item in self.catalog.popular[:n]:
            cands.add(item, "popular", "popular right now")

    def recommend_candidates(
        self,
        user: str,
        n_candidates: int = 200,
        context: dict | None = None,
        k: int = 10,
        features: OnlineFeatures | None = None,
    ) -> tuple[list[str], Candidates, bool]:
        """The items /recommend ranks for a user (pseudonym), in order, with their sources and
        reasons, and whether the user is cold. Raises StoreUnavailable when Feast cannot."""
        cat = self.catalog
        t = self.tuning
        uctx = (features or self.features).user_context(user)
        recent = [i for i in uctx["recent_items"] if i in cat.items.index]
        affinity = list(dict.fromkeys(uctx["top_categories"] + uctx["recent_categories"]))
        cold = not recent and not affinity
        # Items just viewed are what the user already saw: recommend around them, not them.
        cands = Candidates(exclude=set(recent))
        self._context_candidates(cands, context, t.per_category)
        for _rank, item in enumerate(recent[:5]):
            title = cat.title_of(item)
            for other, _ in cat.covisit.get(item, [])[: t.per_recent_item]:
                cands.add(other, "co_visitation", f"often viewed with '{title}'")
        if recent:
            # Text similarity reaches new items that have no co-visits or clicks yet.
            v = cat.mean_embedding(recent)
            for item, _ in cat.nearest(v, t.similar_items):
                cands.add(item, "similar_title", "similar to items you viewed recently")
        for c in affinity[:3]:
            for item in cat.popular_by_category.get(c, [])[: t.per_category]:
                cands.add(item, "category_affinity", f"you often browse {c}")
        # A cold user's only signal is the context: global popularity only tops it up.
        if not (cold and len(cands) >= k):
            self._popular(cands, max(n_candidates, k))
        return list(cands.items)[:n_candidates], cands, cold

    def recommend(
        self,
        user_id: str,
        k: int,
        n_candidates: int = 200,
        context: dict | None = None,
        request_ts_s: int | None = None,
        route: Route | None = None,
        user: str | None = None,
    ) -> dict:
        """`user`: the pseudonym when the caller already computed it (to pick the route)."""
        route = route or self.default_route
        list_id = uuid.uuid4().hex
        user = user or self.pseudonymise(user_id)
        try:
            order, cands, cold = self.recommend_candidates(
                user, n_candidates, context, k, route.features
            )
            p, feats = self._rank(user, order, request_ts_s, route, list_id)
        except StoreUnavailable as exc:
            out = self._fallback_recommend(user_id, k, context, f"online store unavailable: {exc}")
            return self._served(out, route, list_id, user, None, ())
        top = np.argsort(-p, kind="stable")[:k]
        # p_click is a probability only when a ranker ordered the list.
        items = [
            self._item(
                order[j],
                p[j],
                p[j] if route.is_model else None,
                cands.reasons[order[j]],
                cands.items[order[j]],
            )
            for j in top
        ]
        out = {
            "user_id": user_id,
            "items": items,
            "cold_start": cold,
            "fallback": False,
            "fallback_reason": None,
        }
        return self._served(out, route, list_id, user, feats, top)

    def _fallback_recommend(self, user_id: str, k: int, context: dict | None, reason: str) -> dict:
        """Popular items (for the context's category when given) from memory, no Feast."""
        cat = self.catalog
        cands = Candidates()
        c = (context or {}).get("category")
        if c:
            for item in cat.popular_by_category.get(c, [])[:k]:
                cands.add(item, "context_category", f"popular in {c}")
        self._popular(cands, k)
        order = list(cands.items)[:k]
        pop = cat.items["popularity"].reindex(order).fillna(0).to_numpy(np.float64)
        denom = max(float(pop.max()) if len(pop) else 0.0, 1.0)
        # Context items first, then global popularity: score keeps that order.
        n = len(order)
        items = [
            self._item(
                item,
                (n - j) / n + pop[j] / denom / (10 * n),
                None,
                cands.reasons[item] + " (fallback)",
                cands.items[item],
            )
            for j, item in enumerate(order)
        ]
        return {
            "user_id": user_id,
            "items": items,
            "cold_start": False,
            "fallback": True,
            "fallback_reason": reason,
        }

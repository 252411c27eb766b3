"""The cartwise HTTP service (BentoML 1.4).

    bentoml serve serving.service:Cartwise --port 3000      # OpenAPI page at /docs
    bentoml build                                            # a Bento (see bentofile.yaml)

Endpoints (POST, JSON): /intent, /search, /recommend, /status (header X-API-Key), /events and
/reload (Authorization: Bearer). BentoML adds /livez, /readyz and Prometheus /metrics. Every
/search and /recommend answer carries its `list_id`, variant and model (serving.loop).
Everything but the HTTP surface lives in plain modules: serving.app (loading, lanes,
breakers), serving.engine (candidates, ranking, reasons), serving.events (the governed ingest),
serving.middleware (auth, size, content type, docs). docs/serving.md has the configuration.
"""

from __future__ import annotations

import bentoml
from starlette.responses import JSONResponse

from serving.api_models import (
    Context,
    EventIn,
    EventsRequest,
    EventsResponse,
    IntentRequest,
    IntentResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
    StatusResponse,
)
from serving.middleware import Guard
from serving.openapi import build

FALLBACKS = bentoml.metrics.Counter(
    name="cartwise_fallback_responses",
    documentation="Responses served from fallbacks",
    labelnames=["endpoint"],
)


def _json(status: int, body: dict, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


@bentoml.service(
    name="cartwise",
    workers=2,  # one process per core; endpoints run in lanes of threads (serving.app)
    traffic={"timeout": 30, "max_concurrency": 64},  # past it: 503 at once, no unbounded queue
    metrics={"enabled": True},
)
class Cartwise:
    def __init__(self) -> None:
        # Heavy (torch, transformers, Feast): each worker loads it, not the process that
        # imports this module to build a Bento or to route.
        from serving.app import load

        self.app = load()

    def __is_ready__(self) -> bool:
        return self.app.catalog.current is not None

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.app.stop()

    @bentoml.api(input_spec=IntentRequest)
    async def intent(self, query: str) -> IntentResponse:
        """Predicted shopping intent and target category of a query, with probabilities."""
        return IntentResponse(**await self.app.run("fast", self.app.engine.intent, query))

    @bentoml.api(input_spec=SearchRequest)
    async def search(
        self, query: str, user_id: str | None = None, k: int = 10, candidates: int = 200
    ) -> SearchResponse:
        """Items for a query: title-embedding retrieval, intent boost, ranker re-ranking."""
        out = await self.app.run("rank", self.app.search, query, user_id, k, candidates)
        if out.status != 200:
            return _json(out.status, out.body, out.retry_after)
        FALLBACKS.labels(endpoint="search").inc(int(out.body["fallback"]))
        return SearchResponse(**out.body)

    @bentoml.api(input_spec=RecommendRequest)
    async def recommend(
        self, user_id: str, k: int = 10, candidates: int = 200, context: Context | None = None
    ) -> RecommendResponse:
        """Ranked recommendations from recent items, category affinity and popularity."""
        ctx = context.model_dump() if context else None
        out = await self.app.run("rank", self.app.recommend, user_id, k, candidates, ctx)
        if out.status != 200:
            return _json(out.status, out.body, out.retry_after)
        FALLBACKS.labels(endpoint="recommend").inc(int(out.body["fallback"]))
        return RecommendResponse(**out.body)

    @bentoml.api(input_spec=EventsRequest)
    async def events(self, events: list[EventIn]) -> EventsResponse:
        """Append events. Invalid ones: 422 with reasons, quarantined; valid ones in the same
        request are still stored and pushed online. 503: nothing stored, retry."""
        out = await self.app.run("events", self.app.events, [e.model_dump() for e in events])
        if out.status != 200:
            return _json(out.status, out.body, out.retry_after)
        return EventsResponse(**out.body)

    @bentoml.api
    async def status(self) -> StatusResponse:
        """Models, runtime, and the database, online store and catalogue checked live."""
        return StatusResponse(**await self.app.run("fast", self.app.status))

    @bentoml.api(input_spec=ReloadRequest)
    async def reload(
        self, model: str | None = None, experiment: str | None = None
    ) -> ReloadResponse:
        """Load models from the store and swap them in without a restart (Bearer token).
        Requests during the reload are served by the old models; a model that cannot be
        loaded is a 400 and nothing changes."""
        out = await self.app.run("events", self.app.reload, model, experiment)
        if out.status != 200:
            return _json(out.status, out.body, out.retry_after)
        return ReloadResponse(**out.body)


Cartwise.add_asgi_middleware(Guard, spec_factory=lambda: _spec())


def _spec() -> dict:
    return build(Cartwise.openapi_spec.asdict())

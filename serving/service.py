"""The cartwise HTTP service (BentoML 1.4).

    bentoml serve serving.service:Cartwise --port 3000      # OpenAPI page at /docs
    bentoml build                                            # a Bento (see bentofile.yaml)

Endpoints (all POST, JSON): /intent, /search, /recommend, /events, /status. BentoML adds
/livez, /readyz (false until the models and the catalogue are loaded) and Prometheus /metrics.

Configuration comes from the environment, like every cartwise program (governance.settings):
DATABASE_URL, REDIS_URL, CARTWISE_PSEUDONYM_KEY, CARTWISE_EVENTS_TOKEN, BENTOML_HOME (the model
store), plus CARTWISE_RANKER_MODEL / CARTWISE_INTENT_MODEL (tags, default `:latest`),
CARTWISE_SERVING_REFRESH_S (catalogue refresh, default 300), CARTWISE_SERVING_COOLDOWN_S
(how long a failed online store is skipped before it is tried again, default 1),
CARTWISE_EXPERIMENT (variants with traffic shares and a shadow model, serving/experiments.py)
and CARTWISE_LIST_LOG (`off` stops logging served lists; on by default).

Every /search and /recommend answer carries its `list_id`, variant and model; the list is logged
(serving/loop.py). POST /reload (Bearer token) swaps in new models without a restart.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import uuid

import bentoml
from starlette.responses import JSONResponse

from serving.schemas import (
    MAX_EVENTS,
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

log = logging.getLogger("cartwise.serving")

# Whole-body cap, checked before parsing: 1000 events of ordinary size fit well within it.
MAX_BODY_BYTES = 1_048_576
PROTECTED_ROUTES = ("/events", "/reload")

# Declared here, created lazily by BentoML in the worker (no registry side effect at import).
FALLBACKS = bentoml.metrics.Counter(
    name="cartwise_fallback_responses",
    documentation="Responses served from fallbacks",
    labelnames=["endpoint"],
)
EVENTS = bentoml.metrics.Counter(
    name="cartwise_events",
    documentation="Events received over HTTP, by outcome",
    labelnames=["outcome"],
)


class Guard:
    """ASGI middleware: body size cap for every POST, bearer token for /events.

    Both run before BentoML parses the body, so an oversized or unauthenticated request costs
    no parsing and gets a clear 413 / 401 instead of a validation error.
    """

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._token: bytes | None = None

    def _expected_token(self) -> bytes:
        if self._token is None:
            from governance.settings import get_settings

            self._token = get_settings().events_token.get_secret_value().encode()
        return self._token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v for k, v in scope.get("headers", [])}
        if scope.get("path") in PROTECTED_ROUTES:
            auth = headers.get("authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                token.strip(), self._expected_token()
            ):
                return await _send_json(
                    send,
                    401,
                    {
                        "error": "unauthorized",
                        "detail": f"POST {scope.get('path')} needs "
                        "'Authorization: Bearer <CARTWISE_EVENTS_TOKEN>'",
                    },
                    [(b"www-authenticate", b"Bearer")],
                )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _send_json(send, 413, _too_large(self.max_body_bytes))
        # Without a Content-Length (chunked), read up to the cap, then replay the body.
        if length is None:
            chunks, size = [], 0
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    break
                chunks.append(msg.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body_bytes:
                    return await _send_json(send, 413, _too_large(self.max_body_bytes))
                if not msg.get("more_body"):
                    break
            body, sent = b"".join(chunks), False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


def _too_large(limit: int) -> dict:
    return {
        "error": "request too large",
        "detail": f"bodies are limited to {limit} bytes ({MAX_EVENTS} events per request)",
    }


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _error(status: int, error: str, detail: str | None = None, retry_after: int | None = None):
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


@bentoml.service(
    name="cartwise",
    workers=1,
    # Bounded concurrency: past it BentoML answers 503 at once instead of queueing unboundedly.
    traffic={"timeout": 30, "max_concurrency": 64},
    metrics={"enabled": True},
)
class Cartwise:
    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from features.embeddings import embed_texts
        from features.store import get_store
        from governance.privacy import pseudonymise
        from governance.settings import get_settings
        from serving.catalog import CatalogCache
        from serving.engine import Engine
        from serving.features import OnlineFeatures, ranker_feature_service
        from training.intent_model import IntentPredictor
        from training.ranker_model import RankerBundle

        self.settings = get_settings()
        ranker_tag = os.environ.get("CARTWISE_RANKER_MODEL", "cartwise-ranker:latest")
        intent_tag = os.environ.get("CARTWISE_INTENT_MODEL", "cartwise-intent:latest")
        # bentoml.models.get reads the active model store: BENTOML_HOME locally, the Bento's
        # own models when served from a built Bento.
        ranker_model = bentoml.models.get(ranker_tag)
        intent_model = bentoml.models.get(intent_tag)
        self.ranker = RankerBundle.load(ranker_model.path)
        self.intent_model = IntentPredictor.load(intent_model.path)
        self.models = {"ranker": str(ranker_model.tag), "intent": str(intent_model.tag)}
        service_name = ranker_feature_service(dict(ranker_model.info.metadata))
        self.store = get_store(self.settings)
        self.features = OnlineFeatures(
            self.store,
            service_name,
            cooldown_s=float(os.environ.get("CARTWISE_SERVING_COOLDOWN_S", "1")),
        )
        self.catalog = CatalogCache(
            self.settings, refresh_s=float(os.environ.get("CARTWISE_SERVING_REFRESH_S", "300"))
        )
        self.catalog.refresh()  # a failure here is retried by the refresh loop
        self.catalog.start()
        key = self.settings.pseudonym_key.get_secret_value()
        self.engine = Engine(
            self.catalog,
            self.features,
            self.ranker,
            self.intent_model,
            encode=embed_texts,
            pseudonymise=lambda u: pseudonymise(u, key),
            ranker_tag=self.models["ranker"],
        )
        from serving.loop import ServingLoop

        self._online = {service_name: self.features}
        self.loop = ServingLoop(
            self.settings,
            self.engine,
            self._load_ranker,
            self._features_for,
            os.environ.get("CARTWISE_EXPERIMENT"),
            default_model=ranker_tag,
            log_lists=os.environ.get("CARTWISE_LIST_LOG", "on").lower() != "off",
        )
        embed_texts(["warm up"])  # load MiniLM now, not on the first request
        log.info(
            "cartwise ready: %s, feature service %s, %s",
            self.models,
            service_name,
            self.catalog.health(),
        )

    def __is_ready__(self) -> bool:
        return self.catalog.current is not None

    def _load_ranker(self, tag: str):
        """(bundle, resolved tag, feature service, folder) of a stored ranker."""
        from serving.features import ranker_feature_service
        from training.ranker_model import RankerBundle

        m = bentoml.models.get(tag)
        service = ranker_feature_service(dict(m.info.metadata))
        return RankerBundle.load(m.path), str(m.tag), service, m.path

    def _features_for(self, service_name: str):
        from serving.features import OnlineFeatures

        if service_name not in self._online:
            self._online[service_name] = OnlineFeatures(
                self.store,
                service_name,
                cooldown_s=float(os.environ.get("CARTWISE_SERVING_COOLDOWN_S", "1")),
            )
        return self._online[service_name]

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.catalog.stop()
        self.loop.stop()  # writes (or spills) what is still queued

    @bentoml.api(input_spec=IntentRequest)
    def intent(self, query: str) -> IntentResponse:
        """Predicted shopping intent and target category of a query, with probabilities."""
        return IntentResponse(**self.engine.intent(query))

    @bentoml.api(input_spec=SearchRequest)
    def search(
        self, query: str, user_id: str | None = None, k: int = 10, candidates: int = 200
    ) -> SearchResponse:
        """Items for a query: title-embedding retrieval, intent boost, ranker re-ranking."""
        from serving.engine import NotReady

        user = self.engine.pseudonymise(user_id) if user_id else None
        route = self.loop.route(user or uuid.uuid4().hex)
        try:
            out = self.engine.search(query, user_id, k, candidates, route=route)
        except NotReady as exc:
            return _error(503, "not ready", str(exc), retry_after=5)
        if out["fallback"]:
            FALLBACKS.labels(endpoint="search").inc()
        return SearchResponse(**self.loop.served(out, "search", query))

    @bentoml.api(input_spec=RecommendRequest)
    def recommend(
        self, user_id: str, k: int = 10, candidates: int = 200, context: Context | None = None
    ) -> RecommendResponse:
        """Ranked recommendations from recent items, category affinity and popularity."""
        from serving.engine import NotReady

        user = self.engine.pseudonymise(user_id)
        try:
            out = self.engine.recommend(
                user_id,
                k,
                candidates,
                context.model_dump() if context else None,
                route=self.loop.route(user),
                user=user,
            )
        except NotReady as exc:
            return _error(503, "not ready", str(exc), retry_after=5)
        if out["fallback"]:
            FALLBACKS.labels(endpoint="recommend").inc()
        query = context.query if context else None
        return RecommendResponse(**self.loop.served(out, "recommend", query))

    @bentoml.api(input_spec=EventsRequest)
    def events(self, events: list[EventIn]) -> EventsResponse:
        """Append events (Bearer token required). Invalid ones: 422 with reasons, quarantined;
        valid ones in the same request are still appended and pushed online. 503: nothing
        stored, retry."""
        from serving.events import Unavailable, ingest_events

        try:
            outcome = ingest_events(
                [e.model_dump() for e in events], settings=self.settings, store=self.store
            )
        except Unavailable as exc:
            EVENTS.labels(outcome="unavailable").inc(len(events))
            return _error(
                503, "unavailable", f"{exc}; nothing was stored, retry later", retry_after=5
            )
        body = outcome.body
        self.loop.clicked([e.model_dump() for e in events])
        EVENTS.labels(outcome="accepted").inc(body["accepted"])
        EVENTS.labels(outcome="rejected").inc(len(body["rejected"]))
        if outcome.status_code != 200:
            return JSONResponse(
                EventsResponse(**body).model_dump(mode="json"), status_code=outcome.status_code
            )
        return EventsResponse(**body)

    @bentoml.api
    def status(self) -> StatusResponse:
        """Models, feature service, online-store breaker and catalogue state."""
        return StatusResponse(
            ready=self.__is_ready__(),
            models=self.models,
            feature_service=self.features.feature_service_name,
            online_store=self.features.health(),
            catalog=self.catalog.health(),
            experiment=self.loop.status(),
        )

    @bentoml.api(input_spec=ReloadRequest)
    def reload(self, model: str | None = None, experiment: str | None = None) -> ReloadResponse:
        """Load models from the store and swap them in without a restart (Bearer token).
        Requests during the reload are served by the old models; a model that cannot be
        loaded is a 400 and nothing changes."""
        try:
            out = self.loop.reload(model=model, experiment_json=experiment)
        except Exception as exc:  # bad tag, bad experiment, unreadable model: keep serving
            log.warning("reload failed: %s", exc)
            return _error(400, "reload failed", f"{type(exc).__name__}: {exc}"[:500])
        log.info("reloaded in %.2fs: %s", out["took_s"], out["after"])
        return ReloadResponse(**out)


Cartwise.add_asgi_middleware(Guard)

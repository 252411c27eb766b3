"""What the BentoML service runs: loaded once per worker, called by the thin service class.

Concurrency: every endpoint is async and runs its blocking work in a thread, in a lane of its
own (an anyio CapacityLimiter per lane), so a burst of /recommend or a slow database behind
/events never queues /intent or /status; `workers=2` in the service puts a process on each
core. Each store has a breaker (serving.breaker) and every connection has timeouts
(governance.db, governance.settings), so a dead or stuck store costs only the requests that
need it, for a bounded time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass

import anyio
import anyio.to_thread

from features.feast_store import get_store
from governance.db import connect
from governance.privacy import pseudonymise
from governance.settings import get_settings
from serving.api_models import EventsResponse
from serving.breaker import Breaker, describe
from serving.catalog import CatalogCache
from serving.engine import Engine, NotReady
from serving.events import Unavailable, check_online_store, ingest_events
from serving.features import OnlineFeatures
from serving.logs import configure
from serving.loop import ServingLoop
from serving.onnx_models import intent_model, query_encoder
from training.bundles import (
    INTENT_MODEL,
    RANKER_MODEL,
    resolve_tag,
    stored_intent,
    stored_ranker,
)

log = logging.getLogger("cartwise.serving")

# Threads per lane and worker: the rank lane is CPU-bound (2 cores); events wait on PostgreSQL.
LANES = {
    "fast": 8,
    "rank": int(os.environ.get("CARTWISE_RANK_THREADS", "4")),
    "events": 4,
}


@dataclass
class Outcome:
    status: int
    body: dict
    retry_after: int | None = None


class ServingApp:
    def __init__(
        self, settings, engine, features, catalog, models: dict, store, runtime: str, loop
    ):
        self.settings = settings
        self.engine = engine
        self.loop = loop  # experiment routing, served-list log, drift (serving.loop)
        self.features = features
        self.catalog = catalog
        self.models = models
        self.store = store
        self.runtime = runtime
        self.database = Breaker(
            "PostgreSQL",
            Unavailable,
            cooldown_s=features.breaker.cooldown_s,
            trips_on=(Unavailable,),
        )
        self._lanes: dict[str, anyio.CapacityLimiter] = {}

    async def run(self, lane: str, fn, *args):
        # Limiters belong to the event loop: made on first use, inside it.
        if lane not in self._lanes:
            self._lanes[lane] = anyio.CapacityLimiter(LANES[lane])
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self._lanes[lane])

    # ------------------------------------------------------------------ endpoints' work
    def search(self, query: str, user_id: str | None, k: int, candidates: int) -> Outcome:
        user = self.engine.pseudonymise(user_id) if user_id else None
        route = self.loop.route(user or uuid.uuid4().hex)
        t0 = time.perf_counter()
        try:
            out = self.engine.search(query, user_id, k, candidates, route=route)
        except NotReady as exc:
            return _not_ready(exc)
        took = time.perf_counter() - t0
        return Outcome(200, self.loop.served(out, "search", query, took))

    def recommend(self, user_id: str, k: int, candidates: int, context: dict | None) -> Outcome:
        user = self.engine.pseudonymise(user_id)
        route = self.loop.route(user)
        t0 = time.perf_counter()
        try:
            out = self.engine.recommend(user_id, k, candidates, context, route=route, user=user)
        except NotReady as exc:
            return _not_ready(exc)
        took = time.perf_counter() - t0
        query = (context or {}).get("query")
        return Outcome(200, self.loop.served(out, "recommend", query, took))

    def reload(self, model: str | None, experiment: str | None) -> Outcome:
        try:
            out = self.loop.reload(model=model, experiment_json=experiment)
        except Exception as exc:  # bad tag, bad experiment, unreadable model: keep serving
            log.warning("reload failed: %s", describe(exc))
            return Outcome(400, {"error": "reload failed", "detail": describe(exc)})
        log.info("reloaded in %.2fs: %s", out["took_s"], out["after"])
        return Outcome(200, out)

    def stop(self) -> None:
        self.catalog.stop()
        self.loop.stop()  # writes (or spills) what is still queued

    def events(self, events: list[dict]) -> Outcome:
        try:
            out = self.database.call(
                ingest_events, events, settings=self.settings, store=self.store
            )
        except Unavailable as exc:
            return Outcome(
                503,
                {"error": "unavailable", "detail": f"{exc}; nothing was stored, retry later"},
                retry_after=5,
            )
        self.loop.clicked(events)
        # The 422 body is an EventsResponse too: validated here, as the 200 one is by BentoML.
        return Outcome(out.status_code, EventsResponse(**out.body).model_dump(mode="json"))

    def status(self) -> dict:
        """Checked live, now: the database and the online store answer or they do not."""
        database = _live(self.database, self._ping_database)
        online = _live(self.features.breaker, lambda: check_online_store(self.settings))
        catalog = self.catalog.health()
        return {
            "ready": bool(catalog["loaded"] and database["healthy"] and online["healthy"]),
            "models": self.models,
            "feature_service": self.features.feature_service_name,
            "runtime": self.runtime,
            "database": database,
            "online_store": online,
            "catalog": catalog,
            "experiment": self.loop.status(),
        }

    def _ping_database(self) -> None:
        try:
            conn = connect(self.settings)
        except Exception as exc:
            raise Unavailable(describe(exc)) from exc
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()


def _not_ready(exc: Exception) -> Outcome:
    return Outcome(503, {"error": "not ready", "detail": str(exc)}, retry_after=5)


def _live(breaker: Breaker, check) -> dict:
    try:
        check()
    except Exception as exc:
        breaker.trip(exc)
    else:
        breaker.reset()
    return breaker.health()


def _warm(features: OnlineFeatures, catalog: CatalogCache) -> None:
    """Item- and category-level feature values of the whole catalogue, read once at start in
    the background, so the first requests of a worker do not pay the cache misses."""
    cat = catalog.current
    if cat is None:
        return
    items = [i for i in cat.items.index if cat.category_of(i)]
    t0 = time.perf_counter()
    try:
        n = features.breaker.call(features.warm, items, [cat.category_of(i) for i in items])
    except Exception as exc:  # the store may be down at start: requests fill it later
        log.warning("feature cache not warmed: %s", describe(exc))
        return
    log.info("feature cache warmed: %d keys in %.1fs", n, time.perf_counter() - t0)


def serving_settings():
    """The process settings with the service's own (short) statement and lock timeouts."""
    s = get_settings()
    return s.model_copy(
        update={
            "db_statement_timeout_s": s.serving_statement_timeout_s,
            "db_lock_timeout_s": s.serving_lock_timeout_s,
        }
    )


def load() -> ServingApp:
    """Models from the BentoML store, the Feast store, the catalogue: once per worker."""
    settings = serving_settings()
    configure(settings.log_format)
    # One intra-op thread per call: a worker per core already runs calls side by side in its
    # lanes, and torch's default (a thread per core per call) makes them fight for the cores.
    import torch  # heavy: the worker that serves pays for it, not a module import

    torch.set_num_threads(1)
    # The configured tags (':latest' by default): a reload picks up the newest model.
    ranker_tag = os.environ.get("CARTWISE_RANKER_MODEL", f"{RANKER_MODEL}:latest")
    ranker = stored_ranker(ranker_tag)
    intent_stored = stored_intent(os.environ.get("CARTWISE_INTENT_MODEL", f"{INTENT_MODEL}:latest"))
    cache = settings.data_dir / "onnx"
    runtime = settings.serving_runtime
    intent = intent_model(intent_stored.predictor, intent_stored.path, runtime, cache)
    encode = query_encoder(runtime, cache)
    models = {"ranker": ranker.tag, "intent": intent_stored.tag}
    service_name = ranker.feature_service
    store = get_store(settings)
    cooldown_s = float(os.environ.get("CARTWISE_SERVING_COOLDOWN_S", "1"))
    # Item- and category-level feature values kept between materialisations (seconds; 0: read
    # in parts, nothing kept; 'off': one get_online_features call per request, as Feast serves).
    cache = os.environ.get("CARTWISE_FEATURE_CACHE_S", "300").strip().lower()
    cache_s = None if cache == "off" else float(cache)
    features = OnlineFeatures(store, service_name, cooldown_s=cooldown_s, cache_s=cache_s)
    catalog = CatalogCache(
        settings, refresh_s=float(os.environ.get("CARTWISE_SERVING_REFRESH_S", "300"))
    )
    catalog.refresh()  # a failure here is retried by the refresh loop
    catalog.start()
    threading.Thread(
        target=_warm, args=(features, catalog), daemon=True, name="feature-cache-warm"
    ).start()
    key = settings.pseudonym_key.get_secret_value()
    engine = Engine(
        catalog,
        features,
        ranker.bundle,
        intent,
        encode=encode,
        pseudonymise=lambda u: pseudonymise(u, key),
        ranker_tag=models["ranker"],
    )
    online = {service_name: features}

    def features_for(name: str) -> OnlineFeatures:
        if name not in online:
            online[name] = OnlineFeatures(store, name, cooldown_s=cooldown_s, cache_s=cache_s)
        return online[name]

    def load_ranker(tag: str):
        """(bundle, resolved tag, feature service, folder) of a stored ranker."""
        m = stored_ranker(tag)
        return m.bundle, m.tag, m.feature_service, m.path

    loop = ServingLoop(
        settings,
        engine,
        load_ranker,
        features_for,
        os.environ.get("CARTWISE_EXPERIMENT"),
        default_model=ranker_tag,
        resolve_tag=resolve_tag,
        watch_s=float(os.environ.get("CARTWISE_MODEL_WATCH_S", "5")),
        log_lists=os.environ.get("CARTWISE_LIST_LOG", "on").lower() != "off",
    )
    encode(["warm up"])
    engine.intent("warm up")
    log.info("cartwise ready: %s, feature service %s, runtime %s", models, service_name, runtime)
    return ServingApp(settings, engine, features, catalog, models, store, runtime, loop)

"""The service's side of the feedback loop: route, log, count, watch drift, reload.

`ServingLoop` sits next to the engine in the BentoML service:

- `route(key)`: the variant serving this user (serving.routing snapshot, swapped on reload);
- `served(out, endpoint, query)`: hands the served list to the list logger (serving.list_log:
  bounded queue, disk spill, governed write), counts it per variant, and returns the public
  response body (the engine's `_`-keys stay inside);
- `clicked(events)`: counts clicks per variant for lists it served recently;
- `reload(model, experiment_json)`: a new routing snapshot (new models from the store) in one
  swap. The service runs several worker processes and a request reaches one of them, so each
  worker also watches (every CARTWISE_MODEL_WATCH_S, default 5 s) what its tags resolve to in
  the model store and the experiment a reload left in <data_dir>/experiment_override.json, and
  reloads itself when either changed: a reload or a newly registered `:latest` model reaches
  every worker;
- drift: the served feature values of each model feed a rolling window whose PSI against the
  model's training profile (features.drift) is a Prometheus gauge per feature.

Logging is on unless CARTWISE_LIST_LOG=off; spill files go to <data_dir>/served_spill.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd

from features.drift import DEFAULT_THRESHOLD, compare
from governance.served_lists import store_served_lists
from serving import routing
from serving.experiments import parse, single
from serving.list_log import ListLogger, ProcessWriter

log = logging.getLogger(__name__)

# Declared at import, created lazily by BentoML in the worker.
SERVED = bentoml.metrics.Counter(
    name="cartwise_served_lists",
    documentation="Lists served, by endpoint, variant and model",
    labelnames=["endpoint", "variant", "model"],
)
CLICKS = bentoml.metrics.Counter(
    name="cartwise_list_clicks",
    documentation="Clicks received for recently served lists, by variant and model",
    labelnames=["variant", "model"],
)
PSI = bentoml.metrics.Gauge(
    name="cartwise_feature_psi",
    documentation="PSI of served feature values against the model's training set",
    labelnames=["model", "feature"],
)
DRIFTED = bentoml.metrics.Gauge(
    name="cartwise_feature_drifted",
    documentation="1 when a feature's PSI is at or above the drift threshold",
    labelnames=["model", "feature"],
)
LATENCY = bentoml.metrics.Histogram(
    name="cartwise_list_seconds",
    documentation="Time to build a served list (candidates, features, ranking), by variant",
    labelnames=["endpoint", "variant"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOG_PENDING = bentoml.metrics.Gauge(
    name="cartwise_list_log_pending",
    documentation="Served lists not yet stored (queued or spilled to disk)",
)

RECENT_LISTS = 100_000  # list id -> (variant, model) kept for click counting
DRIFT_WINDOW = 5_000  # served item rows per model in the drift window
DRIFT_EVERY_S = 30.0
LOG_FLUSH_S = 1.0  # the list logger writes a batch at least this often


NOT_LOGGED = ("user_id", "item_id", "request_ts_s")


def feature_dicts(frame: pd.DataFrame | None) -> list[dict | None]:
    """Numeric feature values per served row (vectors and ids are not logged; a non-finite
    value is None). One dtype scan and one float array per list: this runs for every served
    list, in the same process as the requests."""
    if frame is None:
        return []
    cols = [c for c, d in frame.dtypes.items() if c not in NOT_LOGGED and d.kind in "biuf"]
    values = frame[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    rows = np.where(np.isfinite(values), values, None).tolist() if values.size else []
    return [dict(zip(cols, row)) for row in rows] or [{} for _ in range(len(frame))]


class DriftMonitor:
    def __init__(self, threshold: float = DEFAULT_THRESHOLD, every_s: float = DRIFT_EVERY_S):
        self.threshold, self.every_s = threshold, every_s
        self.windows: dict[str, deque] = {}
        self.profiles: dict[str, dict] = {}
        self.last: dict[str, dict[str, float]] = {}
        self._next = time.monotonic() + every_s

    def observe(self, model: str, profiles: dict | None, rows: list[dict]) -> None:
        if not profiles or not rows:
            return
        self.windows.setdefault(model, deque(maxlen=DRIFT_WINDOW)).extend(rows)
        self.profiles[model] = profiles
        if time.monotonic() >= self._next:
            self.update()

    def update(self) -> None:
        self._next = time.monotonic() + self.every_s
        for model, window in self.windows.items():
            report = compare(self.profiles[model], pd.DataFrame(list(window)), self.threshold)
            self.last[model] = {f.feature: round(f.psi, 4) for f in report.features}
            for f in report.features:
                PSI.labels(model=model, feature=f.feature).set(f.psi)
                DRIFTED.labels(model=model, feature=f.feature).set(int(f.drifted))


class ServingLoop:
    def __init__(
        self,
        settings,
        engine,
        load_ranker,
        features_for,
        experiment_json: str | None,
        default_model: str,
        *,
        resolve_tag=None,
        log_lists: bool = True,
        watch_s: float = 5.0,
    ):
        self.engine = engine
        self.resolve_tag = resolve_tag  # tag -> resolved tag (':latest' -> a version)
        self.override = Path(settings.data_dir) / "experiment_override.json"
        self.load_ranker, self.features_for = load_ranker, features_for
        self._reload_lock = threading.Lock()
        # The configured tag (':latest' by default), not the resolved one: a reload without
        # an experiment then picks up the newest model in the store.
        self.default_model = default_model
        self.configured = parse(experiment_json, default_model)
        self.routing = routing.build(
            self._experiment(), load_ranker, features_for, engine.catalog_cache
        )
        self._signature = self.signature()
        self._stop = threading.Event()
        self._watch = None
        if watch_s > 0 and resolve_tag is not None:
            self._watch = threading.Thread(
                target=self._watch_store, args=(watch_s,), name="model-watch", daemon=True
            )
            self._watch.start()
        self.recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self.drift = DriftMonitor()
        self.logger = None
        self._writer = None
        if log_lists:
            # Validation and the database write run in a child process (serving.list_log.
            # ProcessWriter): off this worker's GIL, so requests do not wait behind them.
            self._writer = ProcessWriter(store_served_lists, settings).start()
            self.logger = ListLogger(
                self._writer,
                Path(settings.data_dir) / "served_spill",
                prepare=self._prepare,
                # A batch's validation has a fixed cost (~25 ms of Pandera whether it holds 20
                # lists or 200): written once a second, it is paid over more lists.
                flush_s=LOG_FLUSH_S,
            ).start()

    # ------------------------------------------------------------------ requests
    def route(self, key: str) -> routing.Route:
        return self.routing.pick(key)

    def served(
        self, out: dict, endpoint: str, query: str | None = None, seconds: float | None = None
    ) -> dict:
        public = {k: v for k, v in out.items() if not k.startswith("_")}
        SERVED.labels(endpoint=endpoint, variant=out["variant"], model=out["ranker"]).inc()
        if seconds is not None:
            LATENCY.labels(endpoint=endpoint, variant=out["variant"]).observe(seconds)
        with self._recent_lock:
            self.recent[out["list_id"]] = (out["variant"], out["ranker"])
            if len(self.recent) > RECENT_LISTS:
                self.recent.popitem(last=False)
        if self.logger is not None and out["items"]:
            self.logger.log(
                {
                    "list_id": out["list_id"],
                    "served_at": pd.Timestamp.now(tz="UTC").isoformat(),
                    "endpoint": endpoint,
                    "user_id": out.get("_user"),
                    "query": query,
                    "model_tag": out["ranker"],
                    "feature_service": out["feature_service"],
                    "variant": out["variant"],
                    "experiment": self.routing.experiment.name,
                    "fallback": bool(out.get("fallback")),
                    "items": [
                        {
                            "item_id": it["item_id"],
                            "position": n,
                            "score": it["score"],
                            "p_click": it.get("p_click"),
                        }
                        for n, it in enumerate(out["items"])
                    ],
                    "_features": out.get("_features"),
                    "_routing": self.routing,
                }
            )
        return public

    def clicked(self, events: list[dict]) -> None:
        for e in events:
            if e.get("event_type") != "click" or not e.get("list_id"):
                continue
            with self._recent_lock:
                hit = self.recent.get(str(e["list_id"]))
            if hit:
                CLICKS.labels(variant=hit[0], model=hit[1]).inc()

    # ------------------------------------------------------------------ logger thread
    def _prepare(self, record: dict) -> dict:
        """Feature values and shadow scores, computed off the request path."""
        feats = record.pop("_features", None)
        snapshot = record.pop("_routing", None)
        rows = feature_dicts(feats)
        for item, values in zip(record["items"], rows):
            item["features"] = values
        shadow = snapshot.shadow if snapshot is not None else None
        if (
            shadow is not None
            and feats is not None
            and len(feats) == len(record["items"])
            and shadow.feature_service == record["feature_service"]
        ):
            scores = shadow.score(feats, list(feats["item_id"]), record["list_id"])
            record["shadow_model"] = shadow.model_tag
            for item, s in zip(record["items"], scores):
                item["shadow_score"] = float(s)
        if snapshot is not None and not record.get("fallback"):
            route = snapshot.routes.get(record["variant"])
            if route is not None and route.is_model:
                self.drift.observe(record["model_tag"], route.profiles, rows)
        LOG_PENDING.set(self.logger.stats().pending if self.logger else 0)
        return record

    # ------------------------------------------------------------------ admin
    def _experiment(self):
        """The experiment a reload left for every worker, else the configured one."""
        try:
            return parse(self.override.read_text(), self.default_model)
        except FileNotFoundError:
            return self.configured
        except ValueError:
            log.warning("ignoring an unreadable %s", self.override)
            return self.configured

    def signature(self) -> tuple:
        experiment = self._experiment()
        return (experiment, tuple(self.resolve_tag(t) for t in experiment.models))

    def _watch_store(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                sig = self.signature()
                if sig != self._signature:
                    out = self.reload()
                    log.info("model store changed: reloaded %s", out["after"])
            except Exception:  # a half-written model or a store hiccup: try at the next tick
                log.warning("model-store watch failed", exc_info=True)

    def reload(self, model: str | None = None, experiment_json: str | None = None) -> dict:
        """Build a new snapshot from the store, then swap. `model`: serve this tag to everyone;
        `experiment_json`: a new experiment; neither: the same experiment, its `:latest` tags
        resolved anew (how a retrained model goes live). A new model or experiment is left in
        the override file, where the other workers' watches find it."""
        with self._reload_lock:
            t0 = time.monotonic()
            before = self.routing.describe()
            if model:
                experiment = single(model)
            elif experiment_json:
                experiment = parse(experiment_json, self.default_model)
            else:
                experiment = self._experiment()
            new = routing.build(
                experiment, self.load_ranker, self.features_for, self.engine.catalog_cache
            )
            if model or experiment_json:
                self.override.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.override.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(experiment.to_json())
                tmp.replace(self.override)  # atomic: a watch reads the old or the new file
            self.routing = new  # one assignment: a request sees the old or the new snapshot
            if self.resolve_tag is not None:
                self._signature = self.signature()
            return {
                "before": before,
                "after": new.describe(),
                "took_s": round(time.monotonic() - t0, 3),
            }

    def status(self) -> dict:
        return {
            **self.routing.describe(),
            "list_log": self.logger.stats().as_dict() if self.logger else None,
            "drift_psi": self.drift.last,
        }

    def stop(self) -> None:
        self._stop.set()
        if self.logger is not None:
            self.logger.stop()  # writes (or spills) what is queued, through the child
        if self._writer is not None:
            self._writer.close()

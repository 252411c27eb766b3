"""A circuit breaker for each store the service reads or writes: the online store (Redis and
the Feast registry behind it) and PostgreSQL.

After a failure the store is skipped for `cooldown_s`, then tried again, so a dead store costs
one failed (timed-out) call per cooldown instead of one per request, and recovery needs no
restart. Only the requests that need that store are affected.
"""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger(__name__)


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@%+-]+){2,}/?")
_HOSTPORT = re.compile(r"\b[\w.-]+:\d{2,5}\b")


def describe(exc: BaseException) -> str:
    """The exception's type and first line without quoted names, paths or host:port, so a
    status page or a response never shows where the stores live."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    first = _HOSTPORT.sub("<host>", _PATH.sub("<path>", _QUOTED.sub("<…>", first)))
    return f"{type(exc).__name__}: {first}"[:200].rstrip(": ")


class Breaker:
    def __init__(
        self,
        name: str,
        error: type[Exception],
        cooldown_s: float = 1.0,
        trips_on: tuple[type[BaseException], ...] = (Exception,),
    ):
        self.name = name
        self.error = error  # what callers get, with the reason
        self.cooldown_s = cooldown_s
        self.trips_on = trips_on
        self._lock = threading.Lock()
        self._open_until = 0.0
        self.last_error: str | None = None
        self.last_failure_at: float | None = None
        self.failures = 0

    def call(self, fn, *args, **kwargs):
        if time.monotonic() < self._open_until:
            raise self.error(self.last_error or f"{self.name} unavailable")
        try:
            out = fn(*args, **kwargs)
        except self.trips_on as exc:  # a store failure must become a fallback/503, never a 500
            self.trip(exc)
            raise self.error(self.last_error) from exc
        self.reset()
        return out

    def trip(self, exc: BaseException) -> None:
        reason = describe(exc)
        with self._lock:
            self._open_until = time.monotonic() + self.cooldown_s
            self.last_error = reason
            self.last_failure_at = time.time()
            self.failures += 1
        log.warning("%s call failed (%s); skipped for %.1fs", self.name, reason, self.cooldown_s)

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self.last_error = None

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    def health(self) -> dict:
        return {"healthy": self.healthy, "last_error": self.last_error, "failures": self.failures}

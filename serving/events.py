"""POST /events: the HTTP entry into the governed ingest, then the online push.

Decision for a request mixing valid and invalid events: the valid ones are appended (and
pushed online) and the response is 422 listing every invalid one with its reasons; the invalid
ones are in `quarantine` under the same batch. Events are facts that already happened, so
holding good ones back because a sibling is malformed would lose them whenever the client
cannot fix the bad one. Resending the same request is safe: an identical request is the same
batch (checksum) and gets the first answer again (same status, same rejected events with the
same reasons, nothing stored twice); a corrected one only adds the fixed events (event_id is
the key). Every event that is not stored says why, per event: `rejected` (invalid, in
quarantine) or `duplicate_events` (exact_duplicate / near_duplicate of another event in the
request, or already_stored by an earlier request).

Nothing is dropped silently: when PostgreSQL or the online store is unreachable the answer is
503 and nothing was stored, so the client retries. (If the store fails *between* the append and
the push, the events are stored and the response says `pushed_online: false`; the batch
pipeline recomputes the same session state from the stored events.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import psycopg2
import sqlalchemy.exc

from features.realtime import push_events
from governance.db import transaction
from governance.ingest import ingest_frame
from governance.quarantine import storable
from governance.redis_url import redis_client
from governance.schemas import EVENT_COLUMNS as EVENT_FIELDS

log = logging.getLogger(__name__)


class Unavailable(RuntimeError):
    """A dependency is down; nothing was stored."""


@dataclass
class EventsOutcome:
    status_code: int
    body: dict


def to_raw_frame(events: list[dict]) -> pd.DataFrame:
    """The request as the contract's text columns, the same shape a CSV batch arrives in."""

    def text(v):
        if v is None:
            return None
        if isinstance(v, bool):  # JSON true/false is no valid value of any event column
            return str(v).lower()
        return str(v)

    return pd.DataFrame(
        [{f: text(e.get(f)) for f in EVENT_FIELDS} for e in events],
        columns=EVENT_FIELDS,
        dtype=object,
    )


def check_online_store(settings) -> None:
    timeout_s = settings.redis_timeout_s
    if not settings.redis_url:
        return  # SQLite online store (embedded demo): a local file, nothing to reach
    client = redis_client(settings.redis_url, cluster=settings.redis_cluster, timeout_s=timeout_s)
    try:
        client.ping()
    except Exception as exc:
        raise Unavailable(f"online store unreachable: {type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


def _is_connection_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(
            exc,
            (
                psycopg2.OperationalError,
                psycopg2.InterfaceError,
                sqlalchemy.exc.OperationalError,
                ConnectionError,
            ),
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def ingest_events(events: list[dict], *, settings, store, push=None) -> EventsOutcome:
    """Validate + append (governance.ingest), push the accepted events online."""
    if push is None:
        push = push_events
    check_online_store(settings)
    raw = to_raw_frame(events)
    try:
        result = ingest_frame("events", raw, settings=settings, source="api", write_files=False)
    except Exception as exc:
        if _is_connection_error(exc):
            raise Unavailable(f"database unreachable: {type(exc).__name__}") from exc
        raise
    if result.status == "already_loaded":
        return _replay(events, result, settings)
    rejected = _rejected(events, [(r["row_number"], r["reasons"]) for r in result.rejected])
    body = {
        "batch_id": result.batch_id,
        "accepted": int(result.rows_loaded),
        "duplicates": int(result.rows_duplicate),
        "duplicate_events": _duplicates(events, result.duplicate_rows),
        "rejected": rejected,
        "pushed_online": False,
        "detail": None,
    }
    clean = result.clean
    if clean is not None and len(clean):
        try:
            push(store, clean, settings)
            body["pushed_online"] = True
        except Exception as exc:
            log.warning(
                "events of batch %s stored but not pushed online", result.batch_id, exc_info=True
            )
            body["detail"] = (
                f"stored, not pushed online ({type(exc).__name__}); the batch "
                "pipeline will compute the same features"
            )
    else:
        body["pushed_online"] = True  # nothing to push
    body["status"] = _status(body["accepted"], body["duplicates"], rejected)
    if rejected:
        body["detail"] = body["detail"] or (
            f"{len(rejected)} invalid event(s) quarantined in batch {result.batch_id}; "
            "the others were accepted"
        )
        return EventsOutcome(422, body)
    return EventsOutcome(200, body)


def _rejected(events: list[dict], rows) -> list[dict]:
    return sorted(
        (
            {
                "index": int(row),
                "event_id": _event_id(events, row),
                "reasons": [str(x) for x in reasons],
            }
            for row, reasons in rows
        ),
        key=lambda r: r["index"],
    )


def _duplicates(events: list[dict], rows: list[dict]) -> list[dict]:
    return [
        {
            "index": int(r["row_number"]),
            "event_id": _event_id(events, r["row_number"]),
            "reason": r["reason"],
        }
        for r in rows
    ]


def _replay(events: list[dict], result, settings) -> EventsOutcome:
    """An identical request was loaded before: answer what the first one was answered."""
    with transaction(settings) as cur:
        cur.execute(
            "SELECT row_number, reasons FROM quarantine WHERE batch_id = %s ORDER BY row_number",
            (result.batch_id,),
        )
        rejected = _rejected(events, cur.fetchall())
    body = {
        "status": _status(int(result.rows_loaded), int(result.rows_duplicate), rejected),
        "batch_id": result.batch_id,
        "accepted": int(result.rows_loaded),
        "duplicates": int(result.rows_duplicate),
        "duplicate_events": _duplicates(events, (result.quality or {}).get("duplicate_rows", [])),
        "rejected": rejected,
        "pushed_online": None,
        "detail": (
            f"identical request already received as batch {result.batch_id}: this is its "
            "answer again, nothing was stored twice"
        ),
    }
    return EventsOutcome(422 if rejected else 200, body)


def _status(accepted: int, duplicates: int, rejected: list) -> str:
    if not rejected:
        return "accepted"
    return "partially_rejected" if accepted or duplicates else "rejected"


def _event_id(events: list[dict], row_number) -> str | None:
    try:
        v = events[int(row_number)].get("event_id")
    except (IndexError, TypeError, ValueError):
        return None
    # As stored in quarantine: a NUL or a lone surrogate (why it was refused) escaped.
    return None if v is None else storable(str(v))

"""Request and response models of the HTTP API (they are the OpenAPI page at `/docs`).

Bounds live here so an oversized request is a 400 with a reason before any work starts.
Events are deliberately loose (any JSON scalar per field): whether an event is *valid* is
decided by the Pandera `EventRecord` in governance, the one definition, so that a bad event
reaches quarantine with its reasons instead of bouncing off a second, different validator.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

MAX_K = 100
MAX_CANDIDATES = 500
MAX_EVENTS = 1000
Scalar = str | int | float | bool | None
# Text that says something: blank or whitespace-only is refused like a missing value.
NOT_BLANK = r"\S"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntentRequest(_Strict):
    query: str = Field(
        min_length=1, max_length=256, pattern=NOT_BLANK, examples=["buy wireless headphones"]
    )


class IntentResponse(BaseModel):
    query: str
    intent: str
    intent_p: float
    category: str | None = None
    category_p: float | None = None
    probabilities: dict[str, dict[str, float]] = Field(
        description="{'intent': {label: p}, 'category': {label: p}}"
    )


class ScoredItem(BaseModel):
    item_id: str
    title: str
    category: str | None = None
    price: float | None = None
    score: float = Field(description="Final ordering score (higher first).")
    p_click: float | None = Field(None, description="Ranker probability; null in fallback.")
    reason: str
    sources: list[str] = Field(description="Candidate sources that proposed the item.")


class Context(_Strict):
    category: str | None = Field(None, max_length=128, description="Page category the user is on.")
    query: str | None = Field(None, max_length=256, description="Current search, if any.")


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=256, pattern=NOT_BLANK, examples=["running shoes"])
    user_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=NOT_BLANK,
        description="The shop's user id (pseudonymised here).",
    )
    # strict: `true` or "5" is not a number of items.
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    candidates: int = Field(
        200,
        ge=1,
        le=MAX_CANDIDATES,
        strict=True,
        description="How many retrieved items the ranker scores.",
    )


class ServedList(BaseModel):
    """What every served list carries (search and recommendations): the ranked items, whether
    a fallback served them, and what the feedback loop joins clicks on."""

    items: list[ScoredItem]
    fallback: bool = False
    fallback_reason: str | None = None
    list_id: str = Field(
        description="Id of this served list: send it with the clicks and purchases it leads to."
    )
    variant: str = Field(description="Experiment variant that served the list.")
    ranker: str = Field(description="Model (tag) or ordering ('random', 'popularity') used.")
    feature_service: str


class SearchResponse(ServedList):
    query: str
    intent: IntentResponse


class RecommendRequest(_Strict):
    user_id: str = Field(min_length=1, max_length=128, pattern=NOT_BLANK, examples=["u00001"])
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    candidates: int = Field(200, ge=1, le=MAX_CANDIDATES, strict=True)
    context: Context | None = None


class RecommendResponse(ServedList):
    user_id: str
    cold_start: bool = Field(description="No recent items or affinities known for the user.")


class EventIn(_Strict):
    """One event as the shop sends it; see docs/data-contract.md (events)."""

    event_id: Scalar = None
    user_id: Scalar = Field(None, description="The shop's id; pseudonymised before storage.")
    session_id: Scalar = None
    event_type: Scalar = Field(None, examples=["view"])
    item_id: Scalar = None
    query: Scalar = None
    position: Scalar = None
    list_id: Scalar = None
    quantity: Scalar = None
    price: Scalar = None
    event_ts: Scalar = Field(None, examples=["2024-03-05T12:00:00Z"])


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class RejectedEvent(BaseModel):
    index: int = Field(description="Position of the event in the request.")
    event_id: str | None = None
    reasons: list[str]


class DuplicateEvent(BaseModel):
    index: int = Field(description="Position of the event in the request.")
    event_id: str | None = None
    reason: Literal["exact_duplicate", "near_duplicate", "already_stored"] = Field(
        description="Repeats another event of the request (exactly, or the same action within "
        "seconds), or its event_id was stored by an earlier request."
    )


class EventsResponse(BaseModel):
    status: Literal["accepted", "partially_rejected", "rejected"]
    batch_id: int | None = None
    accepted: int = Field(
        description="Events of this request appended to the events table (on an identical "
        "resend: by the first send, nothing is appended twice)."
    )
    duplicates: int = Field(0, description="Events not appended because they are duplicates.")
    duplicate_events: list[DuplicateEvent] = Field(
        default_factory=list, description="Each duplicate event and why."
    )
    rejected: list[RejectedEvent] = Field(
        default_factory=list, description="Invalid events; each is in the quarantine table."
    )
    pushed_online: bool | None = Field(
        description="Accepted events are in the online store (null on an identical resend)."
    )
    detail: str | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: str | list[dict[str, JsonValue]] | None = Field(
        None, description="Why; for a validation error, one entry per field (loc, msg, type)."
    )


class StoreHealth(BaseModel):
    healthy: bool = Field(description="Answered a live check just now.")
    last_error: str | None = Field(description="Error type and message, without addresses.")
    failures: int = Field(description="Failed calls since start.")


class CatalogHealth(BaseModel):
    loaded: bool
    items: int
    embedded_items: int
    age_s: float | None = Field(description="Seconds since the last successful refresh.")
    last_error: str | None = Field(description="Why the last refresh failed, if it did.")


class StatusResponse(BaseModel):
    ready: bool = Field(description="Every endpoint can answer without a fallback right now.")
    models: dict[str, str]
    feature_service: str
    runtime: str = Field(description="How the query encoder and the intent net run.")
    database: StoreHealth
    online_store: StoreHealth
    catalog: CatalogHealth
    experiment: dict | None = Field(
        None, description="Variants, shadow model, list-log counts and feature drift (PSI)."
    )


class ReloadRequest(_Strict):
    model: str | None = Field(
        None, max_length=200, description="Serve this ranker tag to everyone (e.g. m:latest)."
    )
    experiment: str | None = Field(
        None,
        max_length=4000,
        description="A new experiment as JSON (see serving/experiments.py). Neither field: "
        "the same experiment with its ':latest' tags resolved anew.",
    )


class ReloadResponse(BaseModel):
    before: dict
    after: dict
    took_s: float

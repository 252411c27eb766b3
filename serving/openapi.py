"""The OpenAPI document the service serves at /docs.json (and the page at /docs).

BentoML generates one from the pydantic models, but drops `null` from optional fields and
documents only 200/400/404/500. This one is built from the same pydantic models as JSON Schema
(OpenAPI 3.1), with every status an endpoint can answer and its auth scheme, so clients and
the schemathesis run in the tests can rely on it.
"""

from __future__ import annotations

import copy

from pydantic import BaseModel

from serving.api_models import (
    ErrorResponse,
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

API_KEY_HEADER = "X-API-Key"
READ = ("apiKey", "userToken")  # either one (a user token when the service has its secret)
# path -> (request model, 200 model, summary, auth scheme, extra statuses)
ROUTES: dict[str, tuple] = {
    "/intent": (IntentRequest, IntentResponse, "Intent and category of a query", READ, ()),
    "/search": (SearchRequest, SearchResponse, "Items for a query", READ, (403, 503)),
    "/recommend": (RecommendRequest, RecommendResponse, "Items for a user", READ, (403, 503)),
    "/status": (None, StatusResponse, "Models, stores and catalogue, checked live", "apiKey", ()),
    "/events": (EventsRequest, EventsResponse, "Append events", "bearer", (422, 503)),
    "/reload": (ReloadRequest, ReloadResponse, "Swap in models from the store", "bearer", ()),
}
COMMON = {
    400: "Malformed body or invalid field (detail names the fields)",
    401: "Missing or wrong credentials",
    413: "Body over the size limit",
    415: "Body is not application/json",
}
WHY = {
    403: "The user token names another user than the body's user_id",
    422: "Some events are invalid: listed with reasons and quarantined; the others are stored",
    503: "A store is unavailable: nothing was stored, retry after Retry-After seconds",
}


def _schema(model: type[BaseModel], mode: str, components: dict) -> dict:
    schema = model.model_json_schema(mode=mode, ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    name = model.__name__ if mode == "serialization" else model.__name__ + "Input"
    components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def build(bentoml_spec: dict) -> dict:
    """Our API paths replace BentoML's; its infrastructure paths (/livez, /readyz, /metrics)
    and info stay."""
    spec = copy.deepcopy(bentoml_spec)
    spec["openapi"] = "3.1.0"
    # BentoML's own schemas stay: its infrastructure paths refer to them.
    components: dict = dict(spec.get("components", {}).get("schemas", {}))
    error = _schema(ErrorResponse, "serialization", components)
    paths = {p: v for p, v in spec.get("paths", {}).items() if p not in ROUTES}
    for path, (request, response, summary, auth, extra) in ROUTES.items():
        responses = {"200": _json(_schema(response, "serialization", components), "OK")}
        for status, text in COMMON.items():
            if status == 400 and request is None:
                text = "Malformed body"
            responses[str(status)] = _json(error, text)
        for status in extra:
            body = _schema(response, "serialization", components) if status == 422 else error
            responses[str(status)] = _json(body, WHY[status])
        op = {
            "summary": summary,
            "operationId": path.strip("/"),
            "tags": ["Service APIs"],
            "security": [{a: []} for a in ((auth,) if isinstance(auth, str) else auth)],
            "responses": responses,
        }
        body_schema = (
            _schema(request, "validation", components)
            if request is not None
            else {"type": "object", "additionalProperties": False}
        )
        op["requestBody"] = {
            "required": request is not None,
            "content": {"application/json": {"schema": body_schema}},
        }
        paths[path] = {"post": op}
    spec["paths"] = paths
    spec["components"] = {
        "schemas": components,
        "securitySchemes": {
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": API_KEY_HEADER,
                "description": "CARTWISE_API_KEY: the read endpoints are for the shop's backend",
            },
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "CARTWISE_EVENTS_TOKEN: POST /events",
            },
            "userToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "cwu1 (serving.user_tokens)",
                "description": "A token signed with CARTWISE_USER_TOKEN_SECRET naming one user "
                "(when the service has that secret): reads for that user only",
            },
        },
    }
    return spec

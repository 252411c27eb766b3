"""ASGI middleware in front of the BentoML app: credentials, body size, content type, docs.

All of it runs before BentoML parses a body, so a request without credentials, too large or
not JSON costs no parsing and gets a clear 401 / 413 / 415 (BentoML would answer 500 to a
multipart body without a boundary, and parse the others).

- POST /events and /reload need `Authorization: Bearer <CARTWISE_EVENTS_TOKEN>`;
- the read endpoints (/intent, /search, /recommend, /status) need `X-API-Key:
  <CARTWISE_API_KEY>`: they are for the shop's backend, which is authorised for all its users;
  nobody else may read recommendations (their reasons name what a user viewed);
- with `CARTWISE_USER_TOKEN_SECRET` set, /intent, /search and /recommend also take
  `Authorization: Bearer <signed user token>` (serving.user_tokens) in place of the key: such a
  request may name only the token's user (`user_id` of another: 403);
- GET /docs is the OpenAPI page, GET /docs.json the document of serving.openapi.
"""

from __future__ import annotations

import hmac
import json

from governance.settings import get_settings
from serving.api_models import MAX_EVENTS
from serving.openapi import API_KEY_HEADER
from serving.user_tokens import InvalidToken, verify

# Whole-body cap, checked before parsing: 1000 events of ordinary size fit well within it.
MAX_BODY_BYTES = 1_048_576
BEARER_ROUTES = ("/events", "/reload")
READ_ROUTES = ("/intent", "/search", "/recommend", "/status")
USER_TOKEN_ROUTES = ("/intent", "/search", "/recommend")


class Guard:
    def __init__(self, app, spec_factory=None, max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.spec_factory = spec_factory
        self.max_body_bytes = max_body_bytes
        self._secrets: tuple[bytes, bytes, str | None] | None = None
        self._spec: bytes | None = None

    def _tokens(self) -> tuple[bytes, bytes, str | None]:
        if self._secrets is None:
            s = get_settings()
            user = s.user_token_secret
            self._secrets = (
                s.events_token.get_secret_value().encode(),
                s.api_key.get_secret_value().encode(),
                user.get_secret_value() if user is not None else None,
            )
        return self._secrets

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path"), scope.get("method")
        if method == "GET" and path == "/docs.json" and self.spec_factory is not None:
            if self._spec is None:
                self._spec = json.dumps(self.spec_factory()).encode()
            return await _send(send, 200, self._spec)
        if method == "GET" and path == "/docs":
            # BentoML serves its Swagger UI (which reads /docs.json) at "/".
            return await self.app({**scope, "path": "/", "raw_path": b"/"}, receive, send)
        if method != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        refused = self._refuse(path, headers)
        if refused is not None:
            return await _send_json(send, *refused)
        user = None
        if path in USER_TOKEN_ROUTES and not self._has_api_key(headers):
            # No valid key: _refuse let it through on a valid user token.
            user = verify(self._tokens()[2], _bearer(headers))
        return await self._capped(scope, receive, send, headers, user)

    def _has_api_key(self, headers: dict) -> bool:
        given = headers.get(API_KEY_HEADER.lower(), b"")
        return hmac.compare_digest(given.strip(), self._tokens()[1])

    def _refuse(self, path: str, headers: dict) -> tuple | None:
        """(status, body, headers) for a request refused before parsing, or None."""
        events_token, api_key, user_secret = self._tokens()
        if path in BEARER_ROUTES:
            scheme, _, token = headers.get("authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), events_token):
                return (
                    401,
                    _err("unauthorized", f"POST {path} needs 'Authorization: Bearer <token>'"),
                    [(b"www-authenticate", b"Bearer")],
                )
        elif path in READ_ROUTES and not self._has_api_key(headers):
            token = _bearer(headers)
            if user_secret is None or path not in USER_TOKEN_ROUTES or not token:
                return (
                    401,
                    _err("unauthorized", f"this endpoint needs the '{API_KEY_HEADER}' header"),
                    [],
                )
            try:
                verify(user_secret, token)
            except InvalidToken as exc:
                return (
                    401,
                    _err("unauthorized", f"user token refused: {exc}"),
                    [(b"www-authenticate", b"Bearer")],
                )
        ctype = headers.get("content-type", b"application/json").decode("latin-1")
        if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
            return 415, _err("unsupported media type", "send the body as application/json"), []
        length = headers.get("content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return 413, _too_large(self.max_body_bytes), []
        return None

    async def _capped(self, scope, receive, send, headers, user: str | None = None):
        """Without a Content-Length (chunked), read up to the cap, then replay the body.
        With a user token (`user`), read it too: a request for another user is a 403."""
        if "content-length" in headers and user is None:
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await _send_json(send, 413, _too_large(self.max_body_bytes), [])
            if not msg.get("more_body"):
                break
        body, sent = b"".join(chunks), False
        if user is not None and _names_another_user(body, user):
            return await _send_json(
                send, 403, _err("forbidden", "this user token is for another user_id"), []
            )

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _bearer(headers: dict) -> str:
    scheme, _, token = headers.get("authorization", b"").partition(b" ")
    return token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""


def _names_another_user(body: bytes, user: str) -> bool:
    """Whether a JSON body asks for a `user_id` other than the token's. A body that is not
    a JSON object passes here and gets its 400 from the request model."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return False
    if not isinstance(data, dict) or data.get("user_id") is None:
        return False
    return data["user_id"] != user


def _err(error: str, detail: str) -> dict:
    return {"error": error, "detail": detail}


def _too_large(limit: int) -> dict:
    return _err(
        "request too large",
        f"bodies are limited to {limit} bytes ({MAX_EVENTS} events per request)",
    )


async def _send_json(send, status: int, body: dict, extra_headers) -> None:
    await _send(send, status, json.dumps(body).encode(), extra_headers)


async def _send(send, status: int, data: bytes, extra_headers=()) -> None:
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

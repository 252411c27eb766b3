"""Signed per-user read tokens: an alternative to the API key that names one user.

    python -m serving.user_tokens USER_ID [--ttl-s 3600]     # prints a token (the shop's side)

A shop that lets a user's browser or app call /recommend and /search directly cannot hand
out the API key (it reads every user). Instead its backend issues each signed-in user a token
signed with `CARTWISE_USER_TOKEN_SECRET`:

    cwu1.<base64url {"sub": user_id, "exp": unix seconds}>.<base64url HMAC-SHA256>

The service (serving.middleware) accepts it as `Authorization: Bearer <token>` on /intent,
/search and /recommend when the secret is set: a bad signature or an expired token is 401, a
request whose `user_id` is another user is 403, so nobody's recommendations (whose reasons
name what they viewed) reach another user. The API key keeps working for the shop's backend.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time

from governance.settings import get_settings

PREFIX = "cwu1"


class InvalidToken(ValueError):
    """The token is malformed, not signed with the secret, or expired (the message says)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, body: str) -> str:
    mac = hmac.new(secret.encode(), f"{PREFIX}.{body}".encode(), hashlib.sha256)
    return _b64(mac.digest())


def issue(secret: str, user_id: str, ttl_s: int = 3600, now: float | None = None) -> str:
    """A token naming `user_id` (the shop's raw id, as requests send it), valid `ttl_s`."""
    if not secret:
        raise ValueError("no user token secret configured (CARTWISE_USER_TOKEN_SECRET)")
    exp = int((time.time() if now is None else now) + ttl_s)
    body = _b64(json.dumps({"sub": user_id, "exp": exp}, separators=(",", ":")).encode())
    return f"{PREFIX}.{body}.{_sign(secret, body)}"


def verify(secret: str, token: str, now: float | None = None) -> str:
    """The user a valid token names; InvalidToken otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidToken("not a cartwise user token")
    body, sig = parts[1], parts[2]
    if not hmac.compare_digest(sig.encode(), _sign(secret, body).encode()):
        raise InvalidToken("bad signature")
    try:
        claims = json.loads(_unb64(body))
        user, exp = claims["sub"], int(claims["exp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("malformed claims") from exc
    if not isinstance(user, str) or not user:
        raise InvalidToken("malformed claims")
    if exp <= (time.time() if now is None else now):
        raise InvalidToken("expired")
    return user


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.user_tokens", description=__doc__)
    parser.add_argument("user_id", help="the shop's id of the user, as requests send it")
    parser.add_argument(
        "--ttl-s", type=int, default=3600, help="seconds the token is valid (default 3600)"
    )
    args = parser.parse_args(argv)
    secret = get_settings().user_token_secret
    if secret is None:
        parser.error("set CARTWISE_USER_TOKEN_SECRET first")
    print(issue(secret.get_secret_value(), args.user_id, args.ttl_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The serving API against a real `bentoml serve` process over HTTP.

One module-wide world (tests/serving_world.py: a small simulated shop through the governed
ingest, feature pipeline, Feast apply/materialise, tiny ranker and intent models in a temporary
BentoML home; `facts` names its users, items, category and queries) and one server on a free
port. The server's online store is a private redis-server this module starts on its own port, so the
degradation test can stop and restart it without touching the machine's shared Redis.
The Redis test runs last: it stops that server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import psycopg2
import pytest
import redis as redis_lib
from conftest import TEST_PSEUDONYM_KEY, _drop, _url_for, make_database

from governance.settings import Settings
from tests.serving_world import (
    API_KEY,
    TOKEN,
    WorldFacts,
    build,
    free_port,
    serve,
    top_query,
)

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ = {"X-API-Key": API_KEY}
USER_SECRET = "test-user-token-secret"


class PrivateRedis:
    """A redis-server of our own: stoppable (with its data saved) and restartable."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",  # DEBUG SLEEP pauses it (test_a_paused_redis_...)
                "--dir",
                str(self.folder),
                "--dbfilename",
                "dump.rdb",
                "--logfile",
                str(self.folder / "redis.log"),
                "--pidfile",
                str(self.folder / "redis.pid"),
            ],
            check=True,
        )
        for _ in range(50):
            try:
                if redis_lib.Redis(port=self.port).ping():
                    return
            except redis_lib.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """SHUTDOWN SAVE: the features survive the restart, as a persistent Redis would."""
        # The server closes the connection as it exits.
        with contextlib.suppress(redis_lib.ConnectionError):
            redis_lib.Redis(port=self.port).shutdown(save=True)
        for _ in range(50):
            try:
                redis_lib.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                time.sleep(0.1)
            except redis_lib.ConnectionError:
                return


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    r = PrivateRedis(tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def world(template_database, private_redis, tmp_path_factory):
    """Data, features and models for the server; ~40 s on 2 cores."""
    root = tmp_path_factory.mktemp("serving")
    db = make_database(template_database)
    settings = Settings(
        database_url=_url_for(db),
        redis_url=private_redis.url,
        data_dir=root / "data",
        pseudonym_key=TEST_PSEUDONYM_KEY,
        events_token=TOKEN,
    )
    old_home = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        built = build(settings, root)
    finally:
        if old_home is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = old_home
    yield {"settings": settings, "root": root, **built}
    _drop(db)


@pytest.fixture(scope="module")
def facts(world) -> WorldFacts:
    return world["facts"]


@pytest.fixture(scope="module")
def server(world):
    env = {
        "CARTWISE_USER_TOKEN_SECRET": USER_SECRET,
        "CARTWISE_SERVING_LOCK_TIMEOUT_S": "5",
        "CARTWISE_REDIS_TIMEOUT_S": "0.5",
        "CARTWISE_SERVING_COOLDOWN_S": "0.5",
        "CARTWISE_SERVING_REFRESH_S": "2",
    }
    with serve(world, env) as client:
        yield client


def now_iso(delta_s: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=1 - delta_s)).isoformat()


def view(user: str, item: str, **kw) -> dict:
    return {
        "event_id": f"api-{uuid.uuid4().hex[:12]}",
        "user_id": user,
        "session_id": f"s-{user}",
        "event_type": "view",
        "item_id": item,
        "event_ts": now_iso(),
        **kw,
    }


def count(settings, sql: str, *args):
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0]
    finally:
        conn.close()


def check_items(body: dict, k: int) -> list[dict]:
    items = body["items"]
    assert 0 < len(items) <= k
    assert len({i["item_id"] for i in items}) == len(items)
    assert all(i["reason"] and i["sources"] for i in items)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    return items


# ----------------------------------------------------------------------------- endpoints


def test_health_openapi_and_metrics(server, world):
    assert server.get("/livez").status_code == 200
    assert server.get("/readyz").status_code == 200
    spec = server.get("/docs.json").json()
    assert {"/intent", "/search", "/recommend", "/events"} <= set(spec["paths"])
    status = server.post("/status", json={}).json()
    assert status["feature_service"] == world["feature_service"]  # the ranker's metadata
    items = count(world["settings"], "SELECT count(*) FROM items")
    assert status["online_store"]["healthy"] and status["catalog"]["embedded_items"] == items
    server.post("/intent", json={"query": "coffee"})
    metrics = server.get("/metrics").text
    assert "bentoml_service_request_total" in metrics and 'endpoint="/intent"' in metrics


def test_intent(server, facts):
    r = server.post("/intent", json={"query": facts.query})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"] == facts.query_intent and body["category"] == facts.query_category
    assert sum(body["probabilities"]["intent"].values()) == pytest.approx(1, abs=1e-6)
    assert body["intent_p"] == max(body["probabilities"]["intent"].values())


def test_search_retrieves_by_text_and_ranks(server, facts):
    query = facts.search_query
    r = server.post("/search", json={"query": query, "user_id": facts.other_user, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"]["category"] == facts.category and not body["fallback"]
    items = check_items(body, 5)
    assert sum(i["category"] == facts.category for i in items) >= 3
    assert all(i["p_click"] is not None and f"matches '{query}'" in i["reason"] for i in items)
    anon = server.post("/search", json={"query": facts.query, "k": 3})
    assert anon.status_code == 200 and check_items(anon.json(), 3)


def test_recommend_for_a_known_user(server, facts):
    r = server.post("/recommend", json={"user_id": facts.user, "k": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["cold_start"] and not body["fallback"]
    items = check_items(body, 8)
    sources = {s for i in items for s in i["sources"]}
    assert sources & {"co_visitation", "similar_title", "category_affinity"}
    assert all(0 <= i["p_click"] <= 1 for i in items)


def test_cold_start_gets_popular_items_for_its_context(server, facts):
    r = server.post(
        "/recommend",
        json={
            "user_id": f"new-{uuid.uuid4().hex[:6]}",
            "k": 5,
            "context": {"category": facts.category},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cold_start"] and not body["fallback"]
    items = check_items(body, 5)
    assert sum(i["category"] == facts.category for i in items) >= 3
    assert any(i["reason"] == f"popular in {facts.category}" for i in items)


BAD_REQUESTS = [
    ("/search", {"query": "x", "k": 0}),
    ("/search", {"query": "x", "k": 101}),
    ("/search", {"query": "x", "candidates": 501}),
    ("/search", {"query": ""}),
    ("/search", {"k": 3}),
    ("/search", {"query": "x" * 257}),
    ("/recommend", {"user_id": "u1", "k": "many"}),
    ("/recommend", {"user_id": "u1", "surprise": 1}),
    ("/recommend", {"user_id": "u1", "context": {"category": 3, "mood": "x"}}),
    ("/intent", {"query": None}),
    # Before: accepted (lax coercion, blank text).
    ("/search", {"query": "x", "k": True}),
    ("/search", {"query": "x", "k": "5"}),
    ("/recommend", {"user_id": "u1", "candidates": 2.0}),
    ("/search", {"query": "   "}),
    ("/intent", {"query": " \t"}),
    ("/recommend", {"user_id": "  "}),
    ("/search", {"query": "x", "user_id": " "}),
]


@pytest.mark.parametrize("path,body", BAD_REQUESTS)
def test_bad_inputs_are_4xx_with_reasons(server, path, body):
    r = server.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]  # pydantic says which field and why


def test_malformed_oversized_and_unauthorised_requests(server, facts):
    r = server.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    r = server.post("/search", json={"query": "x" * 2_000_000})
    assert r.status_code == 413 and "limited" in r.json()["detail"]
    ev = {"events": [view(facts.user, facts.items[1])]}
    assert server.post("/events", json=ev).status_code == 401
    r = server.post("/events", json=ev, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert server.post("/events", json={"events": []}, headers=AUTH).status_code == 400
    many = {"events": [view(facts.user, facts.items[1]) for _ in range(1001)]}
    assert server.post("/events", json=many, headers=AUTH).status_code == 400
    nested = {"events": [{**view(facts.user, facts.items[1]), "item_id": {"x": 1}}]}
    assert server.post("/events", json=nested, headers=AUTH).status_code == 400


def test_mixed_events_keep_the_valid_ones_and_quarantine_the_rest(server, world, facts):
    s = world["settings"]
    good = [
        view("mixed-user", facts.items[4]),
        view("mixed-user", facts.items[10], event_type="click"),
    ]
    bad = [
        {**view("mixed-user", facts.items[5]), "event_type": "teleport"},
        {**view("mixed-user", "nope"), "event_ts": "yesterday-ish"},
    ]
    r = server.post("/events", json={"events": [good[0], bad[0], good[1], bad[1]]}, headers=AUTH)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == "partially_rejected" and body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 3]
    assert all(x["reasons"] for x in body["rejected"])
    assert body["rejected"][0]["event_id"] == bad[0]["event_id"]
    assert any("event_type" in reason for reason in body["rejected"][0]["reasons"])
    assert (
        count(
            s, "SELECT count(*) FROM events WHERE event_id = ANY(%s)", [g["event_id"] for g in good]
        )
        == 2
    )
    assert count(s, "SELECT count(*) FROM quarantine WHERE batch_id = %s", body["batch_id"]) == 2
    # Raw shop ids never reach the table.
    assert count(s, "SELECT count(*) FROM events WHERE user_id = 'mixed-user'") == 0
    # Resending the same request stores nothing again and gets the same answer (before: 200
    # "accepted" with the rejected events counted as duplicates).
    again = server.post(
        "/events", json={"events": [good[0], bad[0], good[1], bad[1]]}, headers=AUTH
    )
    assert again.status_code == 422, again.text
    same = {k: body[k] for k in ("status", "batch_id", "accepted", "rejected", "duplicates")}
    assert {k: again.json()[k] for k in same} == same
    assert count(s, "SELECT count(*) FROM quarantine WHERE batch_id = %s", body["batch_id"]) == 2


def test_an_event_changes_the_next_recommendation(server, facts):
    user = f"fresh-{uuid.uuid4().hex[:6]}"
    before = server.post("/recommend", json={"user_id": user, "k": 10}).json()
    assert before["cold_start"]
    r = server.post("/events", json={"events": [view(user, facts.items[7])]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() | {"batch_id": None} == {
        "status": "accepted",
        "batch_id": None,
        "accepted": 1,
        "duplicates": 0,
        "duplicate_events": [],
        "rejected": [],
        "pushed_online": True,
        "detail": None,
    }
    after = server.post("/recommend", json={"user_id": user, "k": 10}).json()
    assert not after["cold_start"] and not after["fallback"]
    ids = [i["item_id"] for i in after["items"]]
    assert facts.items[7] not in ids  # just seen
    assert ids != [i["item_id"] for i in before["items"]]
    sources = {s for i in after["items"] for s in i["sources"]}
    assert sources & {"co_visitation", "similar_title", "category_affinity"}


def test_a_new_item_is_reachable_through_its_title(server, world):
    from features.embeddings import update_item_embeddings
    from governance.db import transaction

    s = world["settings"]
    with transaction(s) as cur:
        cur.execute("""INSERT INTO items (item_id, title, category_path, category, brand, price,
                                          listed_at, batch_id)
                       SELECT 'i-new-1', 'Nova hand espresso grinder', 'Shop > Coffee', 'Coffee',
                              'Nova', 49.0, now(), min(batch_id) FROM ingest_batches""")
    update_item_embeddings(s)
    deadline = time.time() + 15
    while True:  # the catalogue refreshes every 2 s in this server
        body = server.post("/search", json={"query": "espresso grinder", "k": 5}).json()
        if "i-new-1" in [i["item_id"] for i in body["items"]] or time.time() > deadline:
            break
        time.sleep(0.5)
    assert "i-new-1" in [i["item_id"] for i in body["items"]]


# ------------------------------------------------------------------ production defects (issue 10)


def test_reads_need_the_api_key(server, facts):
    """Before: /recommend and /search answered anyone, reasons naming what a user viewed."""
    bodies = {
        "/intent": {"query": "coffee"},
        "/search": {"query": "coffee", "user_id": facts.user},
        "/recommend": {"user_id": facts.user},
        "/status": {},
    }
    with httpx.Client(base_url=str(server.base_url), timeout=30) as anonymous:
        for path, body in bodies.items():
            r = anonymous.post(path, json=body)
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"], (path, r.text)
            assert "items" not in r.json()
            r = anonymous.post(path, json=body, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401, path
            # The events token is not a read key.
            r = anonymous.post(path, json=body, headers={"X-API-Key": TOKEN, **AUTH})
            assert r.status_code == 401, path
    assert server.post("/recommend", json=bodies["/recommend"]).status_code == 200


def test_docs_page_and_a_truthful_schema(server):
    page = server.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    spec = server.get("/docs.json").json()
    schemas = spec["components"]["schemas"]
    nullable = {"type": "null"}
    assert nullable in schemas["RecommendResponse"]["properties"]["fallback_reason"]["anyOf"]
    assert nullable in schemas["EventsResponse"]["properties"]["batch_id"]["anyOf"]
    assert nullable in schemas["ErrorResponse"]["properties"]["detail"]["anyOf"]
    assert set(spec["components"]["securitySchemes"]) == {"apiKey", "bearer", "userToken"}
    events = spec["paths"]["/events"]["post"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(events["responses"])
    assert events["security"] == [{"bearer": []}]
    recommend = spec["paths"]["/recommend"]["post"]
    assert recommend["security"] == [{"apiKey": []}, {"userToken": []}]
    assert {"403", "503"} <= set(recommend["responses"])
    assert spec["paths"]["/status"]["post"]["security"] == [{"apiKey": []}]


def test_a_user_token_reads_for_its_user_only(server, facts):
    """A signed per-user token (CARTWISE_USER_TOKEN_SECRET) in place of the API key: reads
    for its user; another user's are 403, a forged, altered or expired token is 401."""
    from serving.user_tokens import issue

    token = issue(USER_SECRET, facts.user, ttl_s=300)
    mine = {"Authorization": f"Bearer {token}"}
    query = facts.search_query
    with httpx.Client(base_url=str(server.base_url), timeout=30) as c:
        r = c.post("/recommend", json={"user_id": facts.user}, headers=mine)
        assert r.status_code == 200 and r.json()["items"], r.text
        for body in ({"query": query, "user_id": facts.user}, {"query": query}):
            assert c.post("/search", json=body, headers=mine).status_code == 200
        assert c.post("/intent", json={"query": query}, headers=mine).status_code == 200
        for path, body in (
            ("/recommend", {"user_id": facts.other_user}),
            ("/search", {"query": query, "user_id": facts.other_user}),
        ):
            r = c.post(path, json=body, headers=mine)
            assert r.status_code == 403 and "items" not in r.json(), (path, r.text)
        # Chunked (no Content-Length): the body is still read and checked.
        chunked = iter([json.dumps({"user_id": facts.other_user}).encode()])
        as_json = {**mine, "content-type": "application/json"}
        r = c.post("/recommend", content=chunked, headers=as_json)
        assert r.status_code == 403
        # /status is the shop's own: a user token does not open it.
        assert c.post("/status", json={}, headers=mine).status_code == 401
        head, _, sig = token.split(".")
        other_claims = issue(USER_SECRET, facts.other_user).split(".")[1]
        for bad in (
            issue("another-secret", facts.user),
            issue(USER_SECRET, facts.user, ttl_s=-1),
            f"{head}.{other_claims}.{sig}",
            "not-a-token",
        ):
            r = c.post(
                "/recommend",
                json={"user_id": facts.user},
                headers={"Authorization": f"Bearer {bad}"},
            )
            assert r.status_code == 401 and "items" not in r.json(), (bad, r.text)
    # The API key still reads for every user.
    assert server.post("/recommend", json={"user_id": facts.other_user}).status_code == 200


@pytest.mark.parametrize("path", ["/intent", "/search", "/recommend", "/status", "/events"])
def test_malformed_content_types_are_415_never_500(server, path):
    """Before: multipart/form-data without a boundary gave 500 on every POST route."""
    headers = {**AUTH}
    for ctype, body in (
        ("multipart/form-data", b"--x\r\n"),
        ("application/x-www-form-urlencoded", b"query=x"),
        ("text/plain", b"{}"),
        ("application/vnd.bentoml+pickle", b"\x80\x04"),
    ):
        r = server.post(path, content=body, headers={**headers, "content-type": ctype})
        assert r.status_code == 415, (path, ctype, r.status_code, r.text)
        assert r.json()["error"] == "unsupported media type"


def test_client_errors_log_one_line_without_values(server, world):
    """Before: each 4xx logged a full traceback at ERROR with the raw values (e-mails)."""
    log = world["root"] / "serve.log"
    secret = f"jane.{uuid.uuid4().hex[:8]}@example.com"
    before = log.read_text().count("Traceback")
    for body in ({"query": secret, "k": secret}, {"user_id": secret, "surprise": secret}):
        r = server.post("/search" if "query" in body else "/recommend", json=body)
        assert r.status_code == 400
    time.sleep(0.5)
    text = log.read_text()
    assert secret not in text
    assert text.count("Traceback") == before
    assert "400 /search: 1 validation error(s): k (int_type)" in text


def test_status_is_live_and_names_no_paths(server, world):
    """Before: /status showed the database socket path and stayed stale for 300 s."""
    body = server.post("/status", json={}).json()
    assert body["ready"] and body["database"]["healthy"] and body["online_store"]["healthy"]
    assert body["runtime"] in ("onnx-int8", "onnx", "torch")
    text = server.post("/status", json={}).text
    assert str(world["root"]) not in text and "/tmp" not in text and "127.0.0.1" not in text


def test_unstorable_event_values_are_422_and_siblings_stored(server, world, facts):
    """Before: /events answered 500 and stored nothing, valid events included, on each retry."""
    s = world["settings"]
    good = [view("values-user", facts.items[4]), view("values-user", facts.items[11])]
    bad = [
        ({"event_id": f"nul\x00{uuid.uuid4().hex[:6]}"}, "event_id: contains_nul"),
        ({"event_type": "purchase", "quantity": 1, "price": 1e10}, "price: in_range"),
        ({"event_type": "purchase", "quantity": 1, "price": "inf"}, "price: in_range"),
        ({"event_type": "purchase", "quantity": 1, "price": 0.001}, "price: in_range"),
        ({"event_type": "purchase", "quantity": 2**31, "price": 3}, "quantity: less_than"),
        ({"list_id": "l1", "position": 2**31, "event_type": "impression"}, "position: less_than"),
    ]
    events = (
        [good[0]] + [view("values-user", facts.items[5], **change) for change, _ in bad] + [good[1]]
    )
    payload = json.dumps({"events": events}).encode()
    headers = {**AUTH, "content-type": "application/json"}
    r = server.post("/events", content=payload, headers=headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["accepted"] == 2 and [x["index"] for x in body["rejected"]] == list(
        range(1, len(bad) + 1)
    )
    for rejected, (_, reason) in zip(body["rejected"], bad):
        assert any(x.startswith(reason) for x in rejected["reasons"]), rejected
    ids = [g["event_id"] for g in good]
    assert count(s, "SELECT count(*) FROM events WHERE event_id = ANY(%s)", ids) == 2
    n = len(bad)
    assert count(s, "SELECT count(*) FROM quarantine WHERE batch_id = %s", body["batch_id"]) == n
    again = server.post("/events", content=payload, headers=headers)
    assert again.status_code == 422 and again.json()["rejected"] == body["rejected"]
    # A lone surrogate escape is not Unicode: the JSON parser refuses the whole body (400,
    # nothing stored); the same value from a file is quarantined (tests/test_ingest_values.py).
    broken = json.dumps({"events": [view("values-user", facts.items[4], session_id="s\ud800")]})
    r = server.post("/events", content=broken.encode(), headers=headers)
    assert r.status_code == 400 and "Invalid JSON" in r.text


def test_near_duplicates_are_reported_per_event(server, facts):
    first = view("dup-user", facts.items[6])
    near = {**first, "event_id": f"api-{uuid.uuid4().hex[:12]}", "event_ts": now_iso(0.5)}
    r = server.post("/events", json={"events": [first, near, first]}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["duplicates"] == 2
    reasons = {(d["index"], d["reason"]) for d in body["duplicate_events"]}
    assert reasons == {(1, "near_duplicate"), (2, "exact_duplicate")}
    later = server.post(
        "/events", json={"events": [first, view("dup-user", facts.items[12])]}, headers=AUTH
    )
    assert later.json()["duplicate_events"] == [
        {"index": 0, "event_id": first["event_id"], "reason": "already_stored"}
    ]


def test_production_refuses_development_secrets(tmp_path):
    env = {
        **os.environ,
        "CARTWISE_ENV": "production",
        "CARTWISE_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    }
    for name in ("CARTWISE_PSEUDONYM_KEY", "CARTWISE_EVENTS_TOKEN", "CARTWISE_API_KEY"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "governance.db", "url"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "CARTWISE_PSEUDONYM_KEY" in out.stderr
    assert "CARTWISE_API_KEY" in out.stderr
    secrets = {
        "CARTWISE_PSEUDONYM_KEY": "k1",
        "CARTWISE_EVENTS_TOKEN": "t1",
        "CARTWISE_API_KEY": "a1",
    }
    ok = subprocess.run(cmd, env={**env, **secrets}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    dev = {**env, "CARTWISE_ENV": "development"}
    warned = subprocess.run(cmd, env=dev, capture_output=True, text=True, timeout=60)
    assert warned.returncode == 0 and warned.stderr.count("public development values") == 1


def test_every_connection_has_timeouts(world):
    from governance.db import connect, feast_env

    s = world["settings"]
    conn = connect(s)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] != "0"
            cur.execute("SHOW lock_timeout")
            assert cur.fetchone()[0] != "0"
    finally:
        conn.close()
    assert "connect_timeout=" in feast_env(s)["CARTWISE_REGISTRY_URL"]
    online = feast_env(s)["CARTWISE_ONLINE_STORE"]
    assert "socket_timeout=" in online and "socket_connect_timeout=" in online
    assert "retry=null" in online  # no retries with backoff inside one request


def test_served_features_equal_feasts_fresh_cached_and_after_materialising(world, facts):
    """The ranker's features as serving reads them (views keyed by the user per request in one
    read through the online store's reader, item and category views cached, on-demand views
    over all rows by their own definitions) equal one `get_online_features` call on the
    feature service: fresh, from the cache, after a materialisation moves the watermark (which
    drops the cache), for an unknown user, and for a user whose rows are past every user
    view's TTL (whatever Feast answers for those, serving must answer the same)."""
    from features.feast_store import get_store
    from governance.privacy import pseudonymise
    from serving.catalog import load_catalog
    from serving.feature_plan import FeaturePlan, UserViews
    from serving.features import OnlineFeatures

    s = world["settings"]
    store = get_store(s)
    cat = load_catalog(s)
    items = [i for i in cat.items.index if cat.category_of(i)]
    cats = [cat.category_of(i) for i in items]
    key = s.pseudonym_key.get_secret_value()
    expired = _write_expired_user(store, cats[0])
    users = [pseudonymise(facts.user, key), pseudonymise(facts.other_user, key), None, expired]
    stock = OnlineFeatures(store, "ranker_v1", cache_s=None)
    served = OnlineFeatures(store, "ranker_v1", cache_s=600)
    now = int(time.time())

    def agree(stock=stock, served=served, query=None):
        for user in users:
            want = stock.ranker_features(user, items, cats, now, query)
            got = served.ranker_features(user, items, cats, now, query)
            assert sorted(got.columns) == sorted(want.columns)
            pd.testing.assert_frame_equal(got[list(want.columns)], want)
        return got

    # ranker_v2 adds an on-demand view over a pushed (user) and a cached (item) view.
    agree(OnlineFeatures(store, "ranker_v2", cache_s=None), OnlineFeatures(store, "ranker_v2"))
    # ranker_v3 adds a view keyed by the query (cached) under an on-demand view: for a search
    # with the world's most searched query, then for a list without a query.
    v3 = (OnlineFeatures(store, "ranker_v3", cache_s=None), OnlineFeatures(store, "ranker_v3"))
    # A worker's start warms the item and category views, never the query's (no query yet).
    assert v3[1].warm(items, cats) == len(set(items)) + len(set(cats))
    query = top_query(s)
    searched = agree(*v3, query=query)
    assert searched["query"].eq(query).all()
    assert searched["query_category_share"].notna().all()  # the query's rows were read
    assert searched["query_top_category_match"].eq(1).any()
    unsearched = agree(*v3, query=None)
    assert unsearched["query_category_share"].isna().all()
    agree()
    # The expired user's rows were read, not dropped: the comparison above covered them.
    frame = stock.ranker_features(expired, items, cats, now)
    assert frame["clicks_1h"].eq(3).all() and frame["session_views"].eq(3).all()
    assert frame.loc[0, "uc_clicks_30d"] == 2
    # The Redis path (one pipeline over all user views) equals the store's plain per-view
    # `online_read`, the path every other online store takes.
    plan = FeaturePlan(store, store.get_feature_service("ranker_v1"))
    batched, per_view = UserViews(store, plan), UserViews(store, plan, batched=False)
    assert batched.batched and not per_view.batched
    for user in users:
        rows = {"user_id": [user or "anonymous"] * len(items), "item_id": items, "category": cats}
        a, b = batched.read(rows), per_view.read(rows)
        assert a.keys() == b.keys()
        for name in a:
            pd.testing.assert_series_equal(pd.Series(a[name]), pd.Series(b[name]), obj=name)
    _, cache, _ = served._plan
    assert cache.misses > 0 and cache.hits > 0
    hits = cache.hits
    agree()
    assert cache.hits - hits == 4 * (len(items) + len(set(cats)))  # all from the cache
    cache.recheck_s = 0
    before = cache.watermark()
    store.materialize_incremental(datetime.now(UTC))
    assert cache.watermark() != before
    misses = cache.misses
    agree()
    assert cache.misses > misses  # read again after the materialisation


def _write_expired_user(store, category: str) -> str:
    """A user whose every user-keyed row is older than its view's TTL; returns its key."""
    user = f"expired-{uuid.uuid4().hex[:8]}"
    long_ago = datetime.now(UTC) - timedelta(days=90)  # past 30 d (stats) and 2 h (session)
    for name in ("user_stats", "user_category_affinity", "user_session", "user_recent_embedding"):
        try:
            view = store.get_feature_view(name)
        except Exception:  # user_session is a stream view
            view = store.get_stream_feature_view(name)
        assert view.ttl and view.ttl < datetime.now(UTC) - long_ago, name
        row = {"user_id": [user], "event_timestamp": [long_ago], "created": [long_ago]}
        if "category" in view.join_keys:
            row["category"] = [category]
        for f in view.features:
            if f.name in view.join_keys:  # a stream view lists its entity among its fields
                continue
            kind = f.dtype.to_value_type().name
            row[f.name] = [category if kind == "STRING" else [0.1] * 384 if "LIST" in kind else 3]
        if name == "user_category_affinity":
            row["uc_clicks_30d"] = [2]
        if name == "user_session":  # a stream view is written through its push source
            from feast.data_source import PushMode  # heavy: Feast, only where a store is open

            store.push("user_session_push", pd.DataFrame(row), to=PushMode.ONLINE)
        else:
            store.write_to_online_store(name, pd.DataFrame(row))
    return user


def test_a_held_lock_delays_only_events(server, world, facts):
    """Before: with the events lock held 20 s, /intent took 18.7 s (one thread served all)."""
    s = world["settings"]
    holder = psycopg2.connect(s.database_url)
    holder.autocommit = True
    results: dict[str, list] = {"events": [], "intent": [], "recommend": []}

    def call(kind: str, path: str, body: dict, headers: dict) -> None:
        t = time.perf_counter()
        with httpx.Client(base_url=str(server.base_url), timeout=30) as c:
            r = c.post(path, json=body, headers=headers)
        results[kind].append((r.status_code, time.perf_counter() - t))

    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('cartwise.ingest.events'))")
        threads = [
            threading.Thread(
                target=call,
                args=("events", "/events", {"events": [view("lock-user", facts.items[2])]}, AUTH),
            )
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for _ in range(5):
            call("intent", "/intent", {"query": "buy coffee"}, READ)
            call("recommend", "/recommend", {"user_id": facts.other_user, "k": 5}, READ)
        for t in threads:
            t.join()
    finally:
        holder.close()
    assert all(code == 503 for code, _ in results["events"]), results["events"]
    waits = [dt for _, dt in results["events"]]
    assert min(waits) > 4.5 and max(waits) < 30, waits  # lock_timeout 5 s, then 503
    assert all(code == 200 for code, _ in results["intent"] + results["recommend"])
    # Queued behind even one /events call, a request would take over 5 s.
    assert max(dt for _, dt in results["intent"] + results["recommend"]) < 4.5, results
    # The lock is gone: events are stored again.
    deadline = time.time() + 10
    while True:
        r = server.post(
            "/events", json={"events": [view("lock-user", facts.items[2])]}, headers=AUTH
        )
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 200, r.text


def test_a_paused_redis_delays_only_what_needs_it(server, private_redis, facts):
    """A Redis that accepts connections but does not answer: socket timeouts, then fallbacks."""
    pause = threading.Thread(
        target=lambda: subprocess.run(
            ["redis-cli", "-p", str(private_redis.port), "DEBUG", "SLEEP", "4"], timeout=30
        )
    )
    pause.start()
    time.sleep(0.3)
    try:
        t = time.perf_counter()
        r = server.post("/recommend", json={"user_id": facts.other_user, "k": 5})
        recommend_s = time.perf_counter() - t
        assert r.status_code == 200 and r.json()["fallback"], r.text
        assert recommend_s < 3.0  # socket timeout 0.5 s, not the 4 s pause
        t = time.perf_counter()
        assert server.post("/intent", json={"query": "buy coffee"}).status_code == 200
        assert time.perf_counter() - t < 1.0
    finally:
        pause.join()
    deadline = time.time() + 15
    while True:
        body = server.post("/recommend", json={"user_id": facts.other_user, "k": 5}).json()
        if not body["fallback"] or time.time() > deadline:
            break
        time.sleep(0.3)
    assert not body["fallback"]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, world, tmp_path):
    """>= 1,000 generated requests over every endpoint, with both credentials."""
    report = tmp_path / "schemathesis.json"
    cmd = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{server.base_url}/docs.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--max-examples",
        "150",
        "--seed",
        "1",
        "--workers",
        "2",
        "--header",
        f"X-API-Key: {API_KEY}",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
        "--request-timeout",
        "30",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    summary = out.stdout[-3000:]
    assert out.returncode == 0, summary
    calls = report.read_text().count('"status_code"')
    assert calls >= 1000, (calls, summary)


# ------------------------------------------------------------------ degradation (runs last)


def test_redis_down_fallbacks_then_recovery(server, world, private_redis, facts):
    s = world["settings"]
    private_redis.stop()
    try:
        r = server.post(
            "/recommend",
            json={"user_id": facts.user, "k": 5, "context": {"category": facts.category}},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] and "online store unavailable" in body["fallback_reason"]
        items = check_items(body, 5)
        assert items[0]["category"] == facts.category and items[0]["p_click"] is None
        r = server.post("/search", json={"query": "running shoes", "user_id": facts.user, "k": 3})
        assert r.status_code == 200 and r.json()["fallback"]
        assert check_items(r.json(), 3)
        ev = view("down-user", facts.items[3])
        r = server.post("/events", json={"events": [ev]}, headers=AUTH)
        assert r.status_code == 503 and r.headers.get("retry-after")
        assert count(s, "SELECT count(*) FROM events WHERE event_id = %s", ev["event_id"]) == 0
        assert server.post("/status", json={}).json()["online_store"]["healthy"] is False
        assert "cartwise_fallback_responses_total" in server.get("/metrics").text
    finally:
        private_redis.start()
    deadline = time.time() + 15
    while True:  # recovers by itself: no restart, no call to the service
        body = server.post("/recommend", json={"user_id": facts.user, "k": 5}).json()
        if not body["fallback"] or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not body["fallback"] and not body["cold_start"]
    r = server.post("/events", json={"events": [view("down-user", facts.items[3])]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["pushed_online"]


# ------------------------------------------------------------------ in-process, no server


def test_events_are_refused_not_dropped_when_postgres_is_unreachable():
    from serving.events import Unavailable, ingest_events

    down = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/none",
        redis_url=None,
        pseudonym_key=TEST_PSEUDONYM_KEY,
    )
    pushed = []
    with pytest.raises(Unavailable, match="database unreachable"):
        ingest_events(
            [view("u1", "P0000001")],
            settings=down,
            store=None,
            push=lambda *a: pushed.append(a),
        )
    assert not pushed


def test_breaker_skips_a_failed_store_then_retries():
    from serving.breaker import Breaker
    from serving.features import StoreUnavailable

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("refused")
        return "ok"

    b = Breaker("online store", StoreUnavailable, cooldown_s=0.2)
    with pytest.raises(StoreUnavailable, match="refused"):
        b.call(flaky)
    with pytest.raises(StoreUnavailable):  # within the cooldown: not even tried
        b.call(flaky)
    assert len(calls) == 1 and not b.healthy
    time.sleep(0.25)
    assert b.call(flaky) == "ok" and b.healthy

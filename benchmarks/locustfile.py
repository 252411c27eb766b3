"""Load-test a cartwise deployment with Locust (pip install 'cartwise[load]').

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:3000 \
        --users 8 --spawn-rate 8 --run-time 60s --headless

Environment: CARTWISE_API_KEY (reads), CARTWISE_EVENTS_TOKEN (POST /events; unset = no events
are sent), CARTWISE_LOAD_USERS (shop user ids to recommend for, comma-separated; default
u00000..u00099, the simulator's ids) and CARTWISE_LOAD_QUERIES (search queries, '|'-separated).
The mix follows a shop page view: recommendations most, then search, intent and events.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime

from locust import HttpUser, between, task

USERS = [
    u
    for u in os.environ.get("CARTWISE_LOAD_USERS", ",".join(f"u{i:05d}" for i in range(100))).split(
        ","
    )
    if u
]
QUERIES = os.environ.get(
    "CARTWISE_LOAD_QUERIES",
    "wireless headphones|running shoes|espresso beans|winter jacket|buy iphone|cheap laptop",
).split("|")


class ShopBackend(HttpUser):
    """One shop backend thread calling cartwise as a page is built."""

    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        self.client.headers["X-API-Key"] = os.environ.get("CARTWISE_API_KEY", "")
        self.events_token = os.environ.get("CARTWISE_EVENTS_TOKEN")

    @task(5)
    def recommend(self) -> None:
        self.client.post("/recommend", json={"user_id": random.choice(USERS), "k": 10})

    @task(3)
    def search(self) -> None:
        body = {"query": random.choice(QUERIES), "user_id": random.choice(USERS), "k": 10}
        self.client.post("/search", json=body)

    @task(2)
    def intent(self) -> None:
        self.client.post("/intent", json={"query": random.choice(QUERIES)})

    @task(1)
    def events(self) -> None:
        if not self.events_token:
            return
        event = {
            "event_id": f"load-{uuid.uuid4().hex}",
            "user_id": random.choice(USERS),
            "session_id": f"load-{uuid.uuid4().hex[:8]}",
            "event_type": "search",
            "query": random.choice(QUERIES),
            "event_ts": datetime.now(UTC).isoformat(),
        }
        self.client.post(
            "/events",
            json={"events": [event]},
            headers={"Authorization": f"Bearer {self.events_token}"},
        )

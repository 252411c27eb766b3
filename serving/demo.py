"""Call the cartwise service the way a shop would, and print what it answers.

    python -m serving.demo --sim data/sim --start          # start a server, call it, stop it
    python -m serving.demo --sim data/sim --url http://127.0.0.1:3000   # a server already running

Users and queries come from a simulator output folder (the shop's own ids: the service
pseudonymises them). The walk-through asks for intents, searches, recommendations for active
users and for an unknown one, then sends a view event and asks again.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

from governance.settings import get_settings

READY_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    log = open(log_path, "w")  # noqa: SIM115 (the server process writes it until stopped)
    return subprocess.Popen(
        [bentoml, "serve", "serving.service:Cartwise", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(client: httpx.Client, proc: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("the service exited while starting; see its log")
        try:
            if (
                client.get("/readyz").status_code == 200
                and client.post("/status", json={}).json()["ready"]
            ):
                return
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(2)
    raise TimeoutError(f"the service was not ready within {READY_TIMEOUT_S} s")


def _shop_sample(sim: Path) -> tuple[list[str], list[str], list[str], pd.DataFrame]:
    day = sorted((sim / "events").glob("*.csv.gz"))[-1]
    with gzip.open(day, "rt") as fh:
        events = pd.read_csv(fh, dtype=str, on_bad_lines="skip")
    # Buyers, not the busiest ids: the busiest are bots, whose events no feature counts.
    buyers = events[events["event_type"] == "purchase"].dropna(subset=["user_id"])
    users = buyers["user_id"].value_counts().index[:2].tolist()
    queries = events.loc[events["event_type"] == "search", "query"].dropna().drop_duplicates()
    items = pd.read_csv(sim / "items.csv.gz", dtype=str).dropna(subset=["price"])
    categories = items["category_path"].str.split(" > ").str[-1].drop_duplicates().tolist()
    return users, queries.head(3).tolist(), categories, items


def _print_items(title: str, answer: dict) -> None:
    flag = f"  [fallback: {answer.get('fallback_reason')}]" if answer.get("fallback") else ""
    print(f"{title}{flag}")
    for rank, item in enumerate(answer.get("items", []), 1):
        print(
            f"   {rank}. {item.get('title', item.get('item_id'))[:48]:<48} "
            f"score {item.get('score', 0):.3f}  {item.get('reason', '')}"
        )


def walk_through(client: httpx.Client, sim: Path, token: str) -> None:
    users, queries, categories, items = _shop_sample(sim)
    print("== /intent")
    for q in queries:
        a = client.post("/intent", json={"query": q}).json()
        print(f"   {q!r:<40} -> {a['intent']} ({a['intent_p']:.2f}), category {a.get('category')}")
    print("== /search")
    for q in queries[:2]:
        _print_items(
            f"   {q!r} for {users[0]}",
            client.post("/search", json={"query": q, "user_id": users[0], "k": 5}).json(),
        )
    print("== /recommend")
    for u in users:
        _print_items(f"   for {u}", client.post("/recommend", json={"user_id": u, "k": 5}).json())
    newcomer = f"new-{uuid.uuid4().hex[:6]}"
    _print_items(
        f"   for an unknown user on a '{categories[0]}' page",
        client.post(
            "/recommend", json={"user_id": newcomer, "k": 5, "context": {"category": categories[0]}}
        ).json(),
    )

    print("== /events, then the same /recommend again")
    category = categories[-1]
    viewed = items[items["category_path"].str.endswith(category)].head(3)
    before = client.post("/recommend", json={"user_id": newcomer, "k": 5}).json()
    now = datetime.now(UTC).isoformat()
    views = [
        {
            "event_id": f"demo-{uuid.uuid4().hex}",
            "user_id": newcomer,
            "session_id": f"s-{newcomer}",
            "event_type": "view",
            "item_id": item_id,
            "event_ts": now,
        }
        for item_id in viewed["item_id"]
    ]
    answer = client.post(
        "/events", json={"events": views}, headers={"Authorization": f"Bearer {token}"}
    )
    print(
        f"   POST /events: {len(views)} views in '{category}' -> "
        f"{answer.status_code} {answer.json()}"
    )
    after = client.post("/recommend", json={"user_id": newcomer, "k": 5}).json()
    _print_items(f"   for {newcomer} before (cold start: {before['cold_start']})", before)
    _print_items(f"   for {newcomer} after (cold start: {after['cold_start']})", after)
    sources = sorted({src for item in after["items"] for src in item["sources"]})
    changed = [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    print(f"   the list changed: {changed}; candidate sources now: {', '.join(sources)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sim", type=Path, required=True, help="simulator output folder")
    parser.add_argument("--url", help="a running service; default: start one with --start")
    parser.add_argument(
        "--start", action="store_true", help="start the service, stop it at the end"
    )
    args = parser.parse_args(argv)
    if not args.url and not args.start:
        parser.error("give --url of a running service, or --start")

    token = get_settings().events_token.get_secret_value()
    proc = None
    url = args.url
    if args.start:
        port = _free_port()
        log_path = get_settings().data_dir / "serving-demo.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = start_server(port, log_path)
        url = f"http://127.0.0.1:{port}"
        print(f"starting the service on {url} (log: {log_path})", flush=True)
    try:
        api_key = get_settings().api_key.get_secret_value()
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": api_key}) as client:
            wait_ready(client, proc)
            walk_through(client, args.sim, token)
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# ruff: noqa: B023  (add() is called only within the iteration that defines it)
"""Small hand-shaped event data for the feature-pipeline tests: rows whose every count the tests
know, in a few categories, with bot sessions marked by the test itself.

Every row is first checked against the contract's Pandera record models (governance.schemas, via
governance.validation), then written with COPY into the governed source tables (one
`ingest_batches` row per call, status 'loaded'), the way the ingest leaves them. Not through the
ingest itself: its cleaning rules would re-decide `is_bot` and pseudonymise the ids the tests
name. Realistic data for the other tests comes from the simulator (governance.simulate).
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta

import pandas as pd

from governance.db import transaction
from governance.schemas import EVENT_COLUMNS
from governance.validation import validate

CATEGORIES = ["Smartphones", "Laptops", "Headphones", "Sneakers", "Jackets", "Coffee"]
WORDS = {
    "Smartphones": ["phone", "android phone", "iphone"],
    "Laptops": ["laptop", "notebook", "gaming laptop"],
    "Headphones": ["headphones", "earbuds", "wireless headphones"],
    "Sneakers": ["sneakers", "running shoes", "trainers"],
    "Jackets": ["jacket", "rain jacket", "winter coat"],
    "Coffee": ["coffee", "espresso beans", "ground coffee"],
}
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def new_batch(cur, table: str = "events", rows: int = 0, checksum: str | None = None) -> int:
    cur.execute(
        """INSERT INTO ingest_batches (source, table_name, checksum, status, rows_read,
                                       rows_loaded, rows_quarantined, rows_duplicate,
                                       finished_at)
           VALUES ('synthetic', %s, %s, 'loaded', %s, %s, 0, 0, now()) RETURNING batch_id""",
        (table, checksum or f"synthetic-{random.random()}", rows, rows),
    )
    return cur.fetchone()[0]


def check_contract(table: str, rows: list[dict]) -> None:
    """Raises when a row breaks the contract: the test data must be data ingest would load."""
    text = [{k: None if v is None else _text(v) for k, v in r.items()} for r in rows]
    reasons = validate(table, pd.DataFrame(text, dtype=object)).reasons
    if not reasons.empty:
        raise ValueError(f"test {table} rows break the contract: {reasons.head().to_dict()}")


def _text(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def insert_catalog(cur, n_items: int = 60, n_users: int = 30, seed: int = 0) -> dict:
    rng = random.Random(seed)
    batch = new_batch(cur, "items", n_items)
    items = []
    for i in range(n_items):
        cat = CATEGORIES[i % len(CATEGORIES)]
        title = f"{rng.choice(['Acme', 'Zeta', 'Nova'])} {rng.choice(WORDS[cat])} {i}"
        price = round(rng.uniform(5, 500), 2)
        items.append(
            (
                f"i{i:05d}",
                title,
                f"Shop > {cat}",
                cat,
                "Acme",
                price,
                T0 - timedelta(days=rng.randint(1, 300)),
                batch,
            )
        )
    check_contract(
        "items",
        [
            dict(
                zip(
                    ("item_id", "title", "category_path", "brand", "price", "listed_at"),
                    (r[0], r[1], r[2], r[4], r[5], r[6]),
                )
            )
            for r in items
        ],
    )
    buf = io.StringIO()
    for row in items:
        buf.write("\t".join(str(v) for v in row) + "\n")
    buf.seek(0)
    cur.copy_from(
        buf,
        "items",
        columns=(
            "item_id",
            "title",
            "category_path",
            "category",
            "brand",
            "price",
            "listed_at",
            "batch_id",
        ),
    )
    ubatch = new_batch(cur, "users", n_users)
    users = [(f"u{u:05d}", "DE", T0 - timedelta(days=400)) for u in range(n_users)]
    check_contract("users", [dict(zip(("user_id", "country", "signup_at"), u)) for u in users])
    cur.executemany(
        "INSERT INTO users (user_id, country, signup_at, batch_id) VALUES (%s, %s, %s, %s)",
        [(*u, ubatch) for u in users],
    )
    return {
        "items": [r[0] for r in items],
        "category": {r[0]: r[3] for r in items},
        "price": {r[0]: r[5] for r in items},
        "users": [f"u{u:05d}" for u in range(n_users)],
    }


def make_events(
    catalog: dict,
    n_sessions: int,
    start: datetime = T0,
    days: float = 10,
    seed: int = 1,
    bot_share: float = 0.05,
    prefix: str = "e",
) -> list[tuple]:
    """Sessions of search -> impressions -> click -> view -> add_to_cart -> purchase."""
    rng = random.Random(seed)
    items, users = catalog["items"], catalog["users"]
    by_cat: dict[str, list[str]] = {}
    for item in items:
        by_cat.setdefault(catalog["category"][item], []).append(item)
    rows = []
    for s in range(n_sessions):
        user = rng.choice(users)
        bot = rng.random() < bot_share
        sid = f"{prefix}s{s}"
        ts = start + timedelta(seconds=rng.uniform(0, days * 86400))
        n = 0

        def add(kind, item=None, query=None, position=None, list_id=None, qty=None, price=None):
            nonlocal n, ts
            ts = ts + timedelta(seconds=rng.uniform(1, 60))
            rows.append(
                (
                    f"{prefix}{s}_{n}",
                    user,
                    sid,
                    kind,
                    item,
                    query,
                    position,
                    list_id,
                    qty,
                    price,
                    ts,
                    bot,
                )
            )
            n += 1

        for k in range(rng.randint(1, 3)):
            cat = rng.choice(CATEGORIES)
            query = rng.choice(WORDS[cat]) if rng.random() < 0.6 else None
            if query:
                add("search", query=query)
            list_id = f"{sid}_l{k}"
            shown = rng.sample(by_cat[cat], min(4, len(by_cat[cat]))) + rng.sample(items, 2)
            for pos, item in enumerate(shown):
                add("impression", item, query, pos, list_id)
            for pos, item in enumerate(shown):
                if rng.random() < 0.25 / (1 + pos * 0.3):
                    add("click", item, query, pos, list_id)
                    add("view", item)
                    if rng.random() < 0.3:
                        add("add_to_cart", item)
                        if rng.random() < 0.5:
                            add(
                                "purchase",
                                item,
                                qty=rng.randint(1, 2),
                                price=catalog["price"][item],
                            )
    return rows


def insert_events(cur, rows: list[tuple], batch_id: int | None = None) -> int:
    check_contract("events", [dict(zip(EVENT_COLUMNS, r[: len(EVENT_COLUMNS)])) for r in rows])
    batch_id = batch_id or new_batch(cur, "events", len(rows))
    buf = io.StringIO()
    for r in rows:
        vals = [
            "\\N"
            if v is None
            else (
                ("t" if v else "f")
                if isinstance(v, bool)
                else (v.isoformat() if isinstance(v, datetime) else str(v))
            )
            for v in r
        ]
        buf.write("\t".join(vals) + f"\t{batch_id}\n")
    buf.seek(0)
    cur.copy_from(
        buf,
        "events",
        columns=(
            "event_id",
            "user_id",
            "session_id",
            "event_type",
            "item_id",
            "query",
            "position",
            "list_id",
            "quantity",
            "price",
            "event_ts",
            "is_bot",
            "batch_id",
        ),
    )
    return batch_id


def load(
    settings,
    n_sessions: int = 300,
    days: float = 10,
    seed: int = 1,
    n_items: int = 60,
    n_users: int = 30,
) -> dict:
    """Catalog + one events batch; returns the catalog dict with `batch_id`, `rows`."""
    with transaction(settings) as cur:
        catalog = insert_catalog(cur, n_items=n_items, n_users=n_users, seed=seed)
        rows = make_events(catalog, n_sessions, days=days, seed=seed)
        catalog["batch_id"] = insert_events(cur, rows)
        catalog["rows"] = rows
    return catalog

"""Writing the shop out: gzip CSV files per the data contract, with dirt slotted in, and truth/."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from governance.schemas import EVENT_COLUMNS, INTENTS, LABELLED_QUERY_COLUMNS
from governance.simulate import vocabulary
from governance.simulate.config import (
    DIRTY_EVENT_KINDS,
    DIRTY_ITEM_KINDS,
    DIRTY_QUERY_KINDS,
    DIRTY_USER_KINDS,
    SimConfig,
)
from governance.simulate.day import Day
from governance.simulate.dirt import DirtyRows
from governance.simulate.queries import shopper_query
from governance.simulate.shop import Shop
from governance.simulate.text import iso_array, money

EVENT_SCHEMA = pa.schema(
    [(c, pa.int64() if c in ("position", "quantity") else pa.string()) for c in EVENT_COLUMNS]
)
DIRTY_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("key", pa.string()),
        ("kind", pa.string()),
        ("column", pa.string()),
    ]
)


def write_csv_gz(path: Path, table: pa.Table, raw: list[tuple[int, str]], level: int) -> None:
    """`raw` holds (row index, text) lines slotted in before that row; they are what a schema
    cannot express, e.g. a line with the wrong number of fields. gzip mtime 0: same bytes."""
    buf = pa.BufferOutputStream()
    start = 0
    for i, (at, text) in enumerate(raw + [(table.num_rows, None)]):
        if at > start or i == 0:
            pacsv.write_csv(
                table.slice(start, at - start), buf, pacsv.WriteOptions(include_header=i == 0)
            )
        start = at
        if text is not None:
            buf.write((text + "\n").encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw_file,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw_file, mtime=0, compresslevel=level) as gz,
    ):
        gz.write(buf.getvalue())


def place(table: pa.Table, keys: np.ndarray, raw: list[tuple[float, str]]):
    """Orders rows by key, slots raw lines in by their keys and returns the sorted table, the
    raw lines as (row index, text), each row's physical line number (header = line 1, in the
    caller's row order) and each raw line's line number."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    raw = sorted(raw, key=lambda r: r[0])
    at = np.searchsorted(sorted_keys, np.array([k for k, _ in raw], float), side="right")
    lines = np.empty(len(keys), np.int64)
    lines[order] = np.arange(len(keys)) + 2 + np.searchsorted(at, np.arange(len(keys)), "right")
    raw_lines = at + np.arange(len(raw)) + 2
    return table.take(order), [(int(a), t) for a, (_, t) in zip(at, raw)], lines, raw_lines


class DirtLog:
    """Where each dirty row landed (file, physical line): truth/dirty.parquet."""

    def __init__(self):
        self.rows: list[dict] = []

    def record(self, file, lines, keys, kinds, columns) -> None:
        for line, key, kind, column in zip(lines, keys, kinds, columns):
            self.rows.append(dict(file=file, line=int(line), key=key, kind=kind, column=column))

    def counts(self) -> dict[str, int]:
        """Dirty rows per "file/kind", e.g. "users/future_signup"."""
        kinds: dict[str, int] = {}
        for d in self.rows:
            name = f"{d['file'].split('/')[0].removesuffix('.csv.gz')}/{d['kind']}"
            kinds[name] = kinds.get(name, 0) + 1
        return dict(sorted(kinds.items()))


def with_dirt(
    clean: pa.Table, dirt: DirtyRows, rng: np.random.Generator, file: str, log: DirtLog
) -> pa.Table:
    """The clean rows in order with the dirty ones scattered among them, logged by line."""
    n = clean.num_rows
    full = pa.concat_tables([clean, pa.Table.from_pylist(dirt.rows, clean.schema)])
    keys = np.concatenate([np.arange(n, dtype=float), rng.random(len(dirt.rows)) * n])
    table, _, lines, _ = place(full, keys, [])
    log.record(file, lines[n:], dirt.keys, dirt.kinds, dirt.columns)
    return table


def users_table(shop: Shop, rng: np.random.Generator) -> pa.Table:
    """users.csv.gz's rows, with the personal data a shop sends (which ingest must drop)."""
    n = shop.cfg.n_users
    first = rng.integers(len(vocabulary.FIRST_NAMES), size=n)
    last = rng.integers(len(vocabulary.LAST_NAMES), size=n)
    shares = [c[1] for c in vocabulary.COUNTRIES]
    country = rng.choice(len(vocabulary.COUNTRIES), n, p=shares)
    street = rng.integers(len(vocabulary.STREETS), size=n)
    house, city = rng.integers(1, 200, n), rng.integers(0, 100, n)
    names, emails, addresses = [], [], []
    for i in range(n):
        given, family = vocabulary.FIRST_NAMES[first[i]], vocabulary.LAST_NAMES[last[i]]
        names.append(f"{given} {family}")
        emails.append(f"{given}.{family}.{i + 1}@mail.example".lower().replace(" ", ""))
        _, _, cities = vocabulary.COUNTRIES[country[i]]
        town = cities[city[i] % len(cities)]
        postcode = 10000 + 37 * i % 89999
        addresses.append(f"{vocabulary.STREETS[street[i]]} {house[i]}, {postcode} {town}")
    return pa.table(
        {
            "user_id": shop.user_ids,
            "email": emails,
            "full_name": names,
            "address": addresses,
            "country": pa.array([vocabulary.COUNTRIES[c][0] for c in country]),
            "signup_at": iso_array(shop.user_signup_ms),
        }
    )


def items_table(shop: Shop) -> pa.Table:
    return pa.table(
        {
            "item_id": shop.item_ids,
            "title": shop.item_title,
            "category_path": pa.array([shop.leaf_paths[x] for x in shop.item_leaf]),
            "brand": shop.item_brand,
            "price": money(shop.item_cents),
            "listed_at": iso_array(shop.item_listed_ms),
        }
    )


# The intent mix of the labelled queries: buy_product, browse_category, compare_prices,
# product_info (governance.schemas.INTENTS order).
LABELLED_INTENT_P = (0.35, 0.25, 0.2, 0.2)


def labelled_query_rows(shop: Shop, rng: np.random.Generator) -> list[dict]:
    """Labelled examples for the intent classifier, from the same templates as the event log
    but drawn independently, de-duplicated so one text never carries two labels."""
    n = shop.cfg.n_labelled_queries
    intent_p = np.array(LABELLED_INTENT_P)
    seen, rows = set(), []
    for _ in range(20 * n):
        if len(rows) == n:
            break
        leaf = int(rng.integers(shop.n_leaves))
        intent = INTENTS[rng.choice(len(INTENTS), p=intent_p)]
        query = shopper_query(leaf, intent, rng, shop.cfg.query_style)
        if query not in seen:
            seen.add(query)
            category = vocabulary.leaf_name(shop.leaf_paths[leaf])
            rows.append({"query": query, "intent": intent, "category": category})
    return rows


LABELLED_QUERY_SCHEMA = pa.schema([(c, pa.string()) for c in LABELLED_QUERY_COLUMNS])


def write_truth(cfg: SimConfig, shop: Shop, out: Path, log: DirtLog) -> None:
    """truth/: the latent state behind the files, for checking every later stage."""
    truth = out / "truth"
    pref = pa.FixedSizeListArray.from_arrays(pa.array(shop.user_pref.ravel()), shop.n_leaves)
    leaf_names = [vocabulary.leaf_name(p) for p in shop.leaf_paths]
    pq.write_table(
        pa.table(
            {
                "user_id": shop.user_ids,
                "is_bot": shop.is_bot,
                "price_pref": shop.user_price_pref,
                "activity": shop.user_activity,
                "leaf_affinity": pref,
                "top_leaf": pa.array([leaf_names[x] for x in shop.user_pref.argmax(1)]),
            }
        ),
        truth / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": shop.item_ids,
                "leaf": shop.item_leaf,
                "category_path": pa.array([shop.leaf_paths[x] for x in shop.item_leaf]),
                "quality": shop.item_quality,
                "popularity": shop.item_pop,
                "price": shop.item_cents / 100,
                "is_new": shop.item_listed_ms >= shop.start_ms,
            }
        ),
        truth / "items.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "query": shop.pool,
                "intent": shop.pool_intent,
                "category": [leaf_names[x] for x in shop.pool_leaf],
            }
        ),
        truth / "query_pool.parquet",
    )
    dirty = sorted(log.rows, key=lambda r: (r["file"], r["line"]))
    pq.write_table(pa.Table.from_pylist(dirty, DIRTY_SCHEMA), truth / "dirty.parquet")
    model = _model_description(cfg)
    (truth / "model.json").write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n")


def _model_description(cfg: SimConfig) -> dict:
    """truth/model.json: the generating model in words and numbers."""
    conf = asdict(cfg)
    conf["start"] = cfg.start.isoformat()
    with_rec = [*INTENTS, "recommendation"]
    return {
        "click_model": {
            "formula": "p = sigmoid(b0 + b_aff*affinity + b_price*price_fit + b_qual*quality"
            " + b_rel*relevant - b_pos*log1p(position))",
            "params": asdict(cfg.click_model),
            "features": {
                "affinity": "the user's Dirichlet weight of the item's leaf "
                "(truth/users.parquet leaf_affinity)",
                "price_fit": "exp(-0.5*((ln(price) - ln(leaf median) - user price_pref)"
                "/price_width)^2)",
                "quality": "truth/items.parquet quality, Beta(2,2)",
                "relevant": "1 when the item's leaf is the search's target leaf, 0 on rec- lists",
                "position": "0-based position in the list",
            },
        },
        "logging_ranker": "score = relevant + 1.2*quality + 0.3*ln(popularity) + 0.7*Gumbel; "
        "search lists take 70% of slots from the target leaf, rec lists 60% from "
        "leaves drawn from the user's affinity, the rest by popularity",
        "funnel": {
            "view_p": Day.VIEW_P,
            "cart_p_by_intent": dict(zip(with_rec, Day.CART_P.tolist())),
            "cart_p_factor": "(0.4 + 0.6*price_fit) * (0.5 + quality)",
            "purchase_p_by_intent": dict(zip(with_rec, Day.PURCHASE_P.tolist())),
            "return_p": Day.RETURN_P,
            "discount_p": Day.DISCOUNT_P,
        },
        "intents": list(INTENTS),
        "search_intent_p": dict(zip(INTENTS, Day.INTENT_P.tolist())),
        "category_tree": [
            {"path": p, "leaf": vocabulary.leaf_name(p), "median_price": m, "price_sigma": s}
            for p, _, _, m, s in vocabulary.LEAVES
        ],
        "brands": vocabulary.BRANDS,
        "dirty_kinds": {
            "events": list(DIRTY_EVENT_KINDS),
            "users": DIRTY_USER_KINDS,
            "items": DIRTY_ITEM_KINDS,
            "labelled_queries": DIRTY_QUERY_KINDS,
        },
        "config": conf,
    }

"""A deterministic shop simulator that writes raw files per `docs/data-contract.md`, plus the truth.

The shop has users with latent category tastes and a price preference, a catalogue with a
category tree, searches with intents, result and recommendation lists, clicks drawn from a
known click model, a purchase funnel, a few bots and a controlled share of dirty rows. Because
every latent quantity is written to `truth/`, later stages (validation, features, ranker,
intent classifier) can be checked against what really happened.

Run it:

    .venv/bin/python -m governance.simulate --out data/sim                 # ~1M events, 30 days
    .venv/bin/python -m governance.simulate --out data/sim10m --events 10000000
    .venv/bin/python -m governance.simulate --help

Layout under --out: users.csv.gz, items.csv.gz, labelled_queries.csv.gz, events/YYYY-MM-DD.csv.gz
and truth/{model.json, users.parquet, items.parquet, impressions.parquet, dirty.parquet,
query_pool.parquet}. The same seed and config give byte-identical files (gzip mtime 0, no wall
clock, one seeded numpy Generator).
"""

from __future__ import annotations

import argparse
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from governance import catalog

EVENT_TYPES = ["search", "impression", "click", "view", "add_to_cart", "purchase", "return"]
SEARCH, IMPRESSION, CLICK, VIEW, CART, PURCHASE, RETURN = range(len(EVENT_TYPES))
EVENT_COLUMNS = [
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
]
EVENT_SCHEMA = pa.schema(
    [(c, pa.int64() if c in ("position", "quantity") else pa.string()) for c in EVENT_COLUMNS]
)
DAY_MS = 86_400_000

# Relative frequency of each dirty kind among the injected event rows; the names are the
# `kind` values in truth/dirty.parquet, which the validation tests reconcile against.
DIRTY_EVENT_KINDS = {
    "malformed_price": 1.0,  # price like "abc"
    "malformed_timestamp": 1.0,  # event_ts that no ISO parser accepts
    "unknown_event_type": 1.0,  # "clik", "purchace", ...
    "missing_required": 1.5,  # a required field left empty (see `column`)
    "broken_line": 0.5,  # a CSV line with the wrong number of fields
    "exact_duplicate": 1.5,  # the same row, event_id included, twice
    "near_duplicate": 1.5,  # same user/item/type/list within 1 s, new event_id
    "late_event": 1.0,  # a valid row that arrives in the next day's file
    "nonpositive_price": 0.75,  # price 0 or negative on a priced event
    "zero_quantity": 0.5,  # purchase with quantity 0
    "timestamp_out_of_range": 1.0,  # event_ts in 2099 or before the shop opened
    "unknown_item": 1.0,  # item_id that is not in items.csv.gz
}
DIRTY_USER_KINDS = ["missing_user_id", "future_signup"]
DIRTY_ITEM_KINDS = ["nonpositive_price", "price_outlier", "empty_title"]
DIRTY_QUERY_KINDS = ["empty_query", "missing_intent", "unknown_category"]

# Hourly shape of human traffic: quiet nights, lunch and evening peaks.
_HOURLY = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 10, 10, 9, 6, 4], float
)


@dataclass(frozen=True)
class ClickModel:
    """p(click) = sigmoid(b0 + b_aff*affinity + b_price*price_fit + b_qual*quality
    + b_rel*relevant - b_pos*log1p(position))."""

    b0: float = -5.0
    b_aff: float = 6.0
    b_price: float = 1.6
    b_qual: float = 2.2
    b_rel: float = 1.4
    b_pos: float = 0.8
    price_width: float = 0.5  # log-price distance at which price_fit drops to exp(-1/2)

    def p_click(self, affinity, price_fit, quality, relevant, position):
        logit = (
            self.b0
            + self.b_aff * affinity
            + self.b_price * price_fit
            + self.b_qual * quality
            + self.b_rel * relevant
            - self.b_pos * np.log1p(position)
        )
        return 1.0 / (1.0 + np.exp(-logit))


@dataclass
class SimConfig:
    seed: int = 7
    events: int = 1_000_000  # target clean events over the whole run (dirty rows come on top)
    n_users: int | None = None  # default: events // 100
    n_items: int | None = None  # default: events // 500
    days: int = 30
    start: datetime = datetime(2026, 9, 1, tzinfo=UTC)
    dirty_share: float = 0.02  # of event rows; users/items/queries get a few each as well
    bot_share: float = 0.005  # of users
    bot_event_share: float = 0.03  # of each day's events
    new_item_share: float = 0.1  # items listed during the simulated period
    new_user_share: float = 0.05  # users who sign up during the simulated period
    search_share: float = 0.6  # of human sessions; the rest browse recommendations
    search_page_size: int = 10
    rec_page_size: int = 8
    n_labelled_queries: int | None = None  # default: events // 300, clipped to 2000..20000
    query_variants: int = 6  # distinct query strings per (category, intent) in the event log
    affinity_concentration: float = 0.15  # Dirichlet alpha: small means few favourite leaves
    click_model: ClickModel = field(default_factory=ClickModel)
    gzip_level: int = 6

    def __post_init__(self):
        if self.n_users is None:
            self.n_users = max(self.events // 100, 50)
        if self.n_items is None:
            self.n_items = max(self.events // 500, 2 * len(catalog.LEAVES))
        if self.n_labelled_queries is None:
            self.n_labelled_queries = int(np.clip(self.events // 300, 2000, 20000))
        if self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- string helpers


def _ids(prefix, numbers: np.ndarray, width: int, null: np.ndarray | None = None) -> pa.Array:
    numbers = pa.array(numbers, type=pa.int64(), mask=null)
    digits = pc.utf8_lpad(pc.cast(numbers, pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _money(cents: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    cents = np.asarray(cents, dtype=np.int64)
    euros = pc.cast(pa.array(cents // 100, mask=null), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
    return pc.binary_join_element_wise(euros, ".", frac, "")


def _iso(ms: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _epoch_ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000


def _shift_iso(text: str, ms: int) -> str:
    t = datetime.fromisoformat(text.replace("Z", "+00:00")) + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _iso_array(ms: np.ndarray) -> pa.Array:
    return pa.array([_iso(m) for m in ms], type=pa.string())


class _DayClock:
    """ISO strings for millisecond timestamps inside one day, via lookup tables: pc.strftime
    costs ~1 µs a row, which is the largest single cost at 10M events."""

    def __init__(self):
        self.hms = pa.array(
            [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]
        )
        self.msec = pa.array([f"{m:03d}" for m in range(1000)])

    def format(self, day_start_ms: int, ms: np.ndarray) -> pa.Array:
        prefix = _iso(day_start_ms)[:11]
        rel = ms - day_start_ms
        return pc.binary_join_element_wise(
            prefix,
            self.hms.take(pa.array(rel // 1000)),
            ".",
            self.msec.take(pa.array(rel % 1000)),
            "Z",
            "",
        )


# --------------------------------------------------------------------------- writing


def _write_csv_gz(path: Path, table: pa.Table, raw: list[tuple[int, str]], level: int) -> None:
    """`raw` holds (row index, text) lines slotted in before that row; they are what a schema
    cannot express, e.g. a line with the wrong number of fields."""
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


def _place(table: pa.Table, keys: np.ndarray, raw: list[tuple[float, str]]):
    """Orders rows by key, slots raw lines in by their keys and returns the sorted table, the
    raw lines as (row index, text), each row's physical line number (header = line 1, in the
    caller's row order) and each raw line's line number."""
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    raw = sorted(raw, key=lambda r: r[0])
    at = np.searchsorted(skeys, np.array([k for k, _ in raw], float), side="right")
    lines = np.empty(len(keys), np.int64)
    lines[order] = np.arange(len(keys)) + 2 + np.searchsorted(at, np.arange(len(keys)), "right")
    raw_lines = at + np.arange(len(raw)) + 2
    return table.take(order), [(int(a), t) for a, (_, t) in zip(at, raw)], lines, raw_lines


# --------------------------------------------------------------------------- the shop


class _Shop:
    """Entities and their latent state, built once per run."""

    def __init__(self, cfg: SimConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.start_ms = _epoch_ms(cfg.start)
        self.end_ms = self.start_ms + cfg.days * DAY_MS
        self.n_leaves = len(catalog.LEAVES)
        self.leaf_paths = [leaf[0] for leaf in catalog.LEAVES]
        self.leaf_median = np.array([leaf[3] for leaf in catalog.LEAVES], float)
        self.leaf_sigma = np.array([leaf[4] for leaf in catalog.LEAVES], float)
        self._make_items()
        self._make_users()
        self._make_query_pool()

    def _make_items(self):
        cfg, rng, n = self.cfg, self.rng, self.cfg.n_items
        size = rng.dirichlet(np.full(self.n_leaves, 5.0))
        # Every leaf gets an item first, so no category is empty when n_items allows it.
        leaf = np.concatenate(
            [
                np.arange(min(n, self.n_leaves)),
                rng.choice(self.n_leaves, max(n - self.n_leaves, 0), p=size),
            ]
        )
        self.item_leaf = rng.permutation(leaf)
        euros = self.leaf_median[self.item_leaf] * np.exp(
            self.leaf_sigma[self.item_leaf] * rng.standard_normal(n)
        )
        # Shop prices end in .99 and never drop below 0.99.
        self.item_cents = np.maximum(np.round(euros), 1).astype(np.int64) * 100 - 1
        self.item_quality = rng.beta(2.0, 2.0, n)
        # Popular items tend to be good ones, but not only: popularity alone must not be enough.
        self.item_pop = np.exp(0.8 * rng.standard_normal(n) + 2.0 * (self.item_quality - 0.5))
        new = rng.random(n) < cfg.new_item_share
        before = rng.integers(1, 3 * 365, n) * DAY_MS + rng.integers(0, DAY_MS, n)
        during = rng.integers(0, cfg.days * DAY_MS, n)
        self.item_listed_ms = np.where(new, self.start_ms + during, self.start_ms - before)
        self.item_ids = _ids("P", np.arange(1, n + 1), 7)
        self.item_brand, self.item_title = [], []
        r = rng.integers(0, 1 << 30, size=(n, 5))
        for i in range(n):
            path, nouns, descs, _, _ = catalog.LEAVES[self.item_leaf[i]]
            dept = catalog.department(path)
            brand = catalog.BRANDS[dept][r[i, 0] % len(catalog.BRANDS[dept])]
            d1 = descs[r[i, 1] % len(descs)]
            d2 = descs[r[i, 2] % len(descs)]
            words = [brand, d1] + ([d2] if d2 != d1 and r[i, 2] % 2 else [])
            noun = nouns[r[i, 3] % len(nouns)]
            variant = catalog.VARIANTS[dept][r[i, 4] % len(catalog.VARIANTS[dept])]
            self.item_brand.append(brand)
            self.item_title.append(f"{' '.join(words)} {noun}, {variant}")

    def _make_users(self):
        cfg, rng, n = self.cfg, self.rng, self.cfg.n_users
        self.user_pref = rng.dirichlet(np.full(self.n_leaves, cfg.affinity_concentration), n)
        # Row i's cumulative preferences shifted by i: one searchsorted then samples a leaf
        # for many users at once, each from their own distribution.
        self.pref_flat = (np.cumsum(self.user_pref, axis=1) + np.arange(n)[:, None]).ravel()
        self.user_price_pref = rng.normal(0.0, 0.4, n)
        self.user_activity = rng.lognormal(0.0, 1.0, n)
        n_bots = int(round(n * cfg.bot_share))
        n_bots = max(n_bots, 1) if cfg.bot_share > 0 else 0
        self.is_bot = np.zeros(n, bool)
        self.is_bot[rng.choice(n, n_bots, replace=False)] = True
        new = (rng.random(n) < cfg.new_user_share) & ~self.is_bot
        before = rng.integers(1, 4 * 365, n) * DAY_MS + rng.integers(0, DAY_MS, n)
        during = rng.integers(0, cfg.days * DAY_MS, n)
        self.user_signup_ms = np.where(new, self.start_ms + during, self.start_ms - before)
        self.user_ids = _ids("C", np.arange(1, n + 1), 7)

    def _make_query_pool(self):
        """The strings searched in the event log: `query_variants` per (leaf, intent)."""
        rng, v = self.rng, self.cfg.query_variants
        self.pool_query, self.pool_leaf, self.pool_intent = [], [], []
        for leaf in range(self.n_leaves):
            for intent in catalog.INTENTS:
                for _ in range(v):
                    self.pool_query.append(catalog.make_query(leaf, intent, rng))
                    self.pool_leaf.append(leaf)
                    self.pool_intent.append(intent)
        self.pool = pa.array(self.pool_query)


# --------------------------------------------------------------------------- one day


class _Day:
    """Generates one day's clean events in bulk: sessions, lists, slots, clicks, funnel."""

    INTENT_P = np.array([0.45, 0.25, 0.18, 0.12])  # buy, browse, compare, info
    CART_P = np.array([0.16, 0.08, 0.10, 0.05, 0.07])  # per intent, last = recommendation list
    PURCHASE_P = np.array([0.6, 0.45, 0.5, 0.35, 0.45])
    VIEW_P, RETURN_P, DISCOUNT_P = 0.9, 0.04, 0.15

    def __init__(self, shop: _Shop, rng: np.random.Generator, day: int):
        self.s, self.rng, self.day = shop, rng, day
        self.t0 = shop.start_ms + day * DAY_MS
        items = np.flatnonzero(shop.item_listed_ms < self.t0)
        pop = shop.item_pop[items]
        self.items, self.pop_cum = items, np.cumsum(pop) / pop.sum()
        # Same shifted-cumsum trick as the users' preferences, per leaf and weighted by
        # popularity, so the shop's own ranker mostly shows what sells.
        order = np.lexsort((items, shop.item_leaf[items]))
        self.by_leaf = items[order]
        leaf = shop.item_leaf[self.by_leaf]
        self.leaf_count = np.bincount(leaf, minlength=shop.n_leaves)
        self.leaf_start = np.concatenate([[0], np.cumsum(self.leaf_count)[:-1]])
        w = shop.item_pop[self.by_leaf]
        csum = np.cumsum(w)
        leaf_total = np.add.reduceat(w, self.leaf_start[self.leaf_count > 0])
        totals = np.zeros(shop.n_leaves)
        totals[self.leaf_count > 0] = leaf_total
        base = csum - w  # cumsum before each item
        base -= np.repeat(np.concatenate([[0], np.cumsum(totals)[:-1]]), self.leaf_count)
        self.leaf_flat = leaf + (base + w) / np.repeat(
            np.where(totals > 0, totals, 1), self.leaf_count
        )

    def popular(self, n):
        idx = np.searchsorted(self.pop_cum, self.rng.random(n), "right")
        return self.items[np.minimum(idx, len(self.items) - 1)]

    def in_leaf(self, leaf):
        """An item of each given leaf (popularity-weighted); a popular one where a leaf is empty."""
        idx = np.searchsorted(self.leaf_flat, leaf + self.rng.random(len(leaf)), "right")
        lo = self.leaf_start[leaf]
        idx = np.clip(idx, lo, lo + np.maximum(self.leaf_count[leaf] - 1, 0))
        out = self.by_leaf[np.minimum(idx, len(self.by_leaf) - 1)]
        empty = self.leaf_count[leaf] == 0
        out[empty] = self.popular(int(empty.sum()))
        return out

    def user_leaf(self, users):
        s, L = self.s, self.s.n_leaves
        idx = np.searchsorted(s.pref_flat, users + self.rng.random(len(users)), "right")
        return np.clip(idx - users * L, 0, L - 1)

    def humans(self, n_sessions: int) -> dict:
        s, rng, cfg = self.s, self.rng, self.s.cfg
        cm = cfg.click_model
        ok = np.flatnonzero(~s.is_bot & (s.user_signup_ms < self.t0))
        act = np.cumsum(s.user_activity[ok])
        users = ok[np.minimum(np.searchsorted(act, rng.random(n_sessions) * act[-1]), len(ok) - 1)]
        search = rng.random(n_sessions) < cfg.search_share
        n_lists = 1 + np.minimum(rng.poisson(0.8, n_sessions), 4)
        hour = rng.choice(24, n_sessions, p=_HOURLY / _HOURLY.sum())
        start = self.t0 + (hour * 3600 + rng.random(n_sessions) * 3600) * 1000

        # Lists: a session's lists follow each other with ~1 min gaps.
        sess = np.repeat(np.arange(n_sessions), n_lists)
        first = np.cumsum(n_lists) - n_lists
        gaps = rng.exponential(60_000, len(sess))
        gaps[first] = 0
        csum = np.cumsum(gaps)
        list_ts = (start[sess] + csum - np.repeat(csum[first], n_lists)).astype(np.int64)
        luser, lsearch = users[sess], search[sess]
        n_l = len(sess)
        target = np.where(
            rng.random(n_l) < 0.85, self.user_leaf(luser), rng.integers(0, s.n_leaves, n_l)
        )
        target = np.where(lsearch, target, -1)
        intent = np.where(lsearch, rng.choice(4, n_l, p=self.INTENT_P), 4)
        qidx = np.where(
            lsearch,
            (np.maximum(target, 0) * 4 + intent % 4) * cfg.query_variants
            + rng.integers(0, cfg.query_variants, n_l),
            -1,
        )

        # Slots: search lists mix the target leaf with popular items, recommendation lists mix
        # the user's tastes with popular items; then the shop's noisy ranker orders them.
        K = max(cfg.search_page_size, cfg.rec_page_size)
        size = np.where(lsearch, cfg.search_page_size, cfg.rec_page_size)
        valid = np.arange(K)[None, :] < size[:, None]
        from_leaf = rng.random((n_l, K)) < np.where(lsearch, 0.7, 0.6)[:, None]
        leaf = np.where(lsearch[:, None], target[:, None], -1).repeat(K, 1)
        rec_leaf = from_leaf & ~lsearch[:, None]
        leaf[rec_leaf] = self.user_leaf(np.broadcast_to(luser[:, None], (n_l, K))[rec_leaf])
        item = np.empty((n_l, K), np.int64)
        item[from_leaf] = self.in_leaf(leaf[from_leaf])
        item[~from_leaf] = self.popular(int((~from_leaf).sum()))
        # Drop repeated items within a list so (list_id, item_id) identifies an impression.
        big = np.where(valid, item, -1 - np.arange(K)[None, :])
        o = np.argsort(big, axis=1, kind="stable")
        sb = np.take_along_axis(big, o, 1)
        dup = np.zeros_like(valid)
        np.put_along_axis(dup, o[:, 1:], sb[:, 1:] == sb[:, :-1], 1)
        valid &= ~dup
        rel = s.item_leaf[item] == target[:, None]
        score = (
            1.0 * rel
            + 1.2 * s.item_quality[item]
            + 0.3 * np.log(s.item_pop[item])
            + 0.7 * rng.gumbel(size=(n_l, K))
        )
        o = np.argsort(np.where(valid, -score, np.inf), axis=1, kind="stable")
        item, valid, rel = (np.take_along_axis(a, o, 1) for a in (item, valid, rel))
        li, pos = np.nonzero(valid)
        item, rel = item[li, pos], rel[li, pos]
        u = luser[li]

        ileaf = s.item_leaf[item]
        affinity = s.user_pref[u, ileaf]
        z = np.log(s.item_cents[item] / 100) - np.log(s.leaf_median[ileaf]) - s.user_price_pref[u]
        price_fit = np.exp(-0.5 * (z / cm.price_width) ** 2)
        p = cm.p_click(affinity, price_fit, s.item_quality[item], rel.astype(float), pos)
        clicked = rng.random(len(p)) < p
        imp_ts = list_ts[li] + np.where(lsearch[li], 400, 0)

        # Funnel after a click: product view, cart, purchase, sometimes a return.
        c = np.flatnonzero(clicked)
        c_ts = imp_ts[c] + 1500 + rng.exponential(8000, len(c)).astype(np.int64) + 700 * pos[c]
        cint = intent[li[c]]
        v = c[rng.random(len(c)) < self.VIEW_P]
        v_ts = c_ts[np.searchsorted(c, v)] + rng.integers(300, 1500, len(v))
        cart_p = self.CART_P[cint] * (0.4 + 0.6 * price_fit[c]) * (0.5 + s.item_quality[item[c]])
        k = rng.random(len(c)) < cart_p
        a, a_ts, aint = (
            c[k],
            c_ts[k] + 20_000 + rng.exponential(40_000, k.sum()).astype(np.int64),
            cint[k],
        )
        k = rng.random(len(a)) < self.PURCHASE_P[aint]
        b, b_ts = a[k], a_ts[k] + 60_000 + rng.exponential(120_000, k.sum()).astype(np.int64)
        qty = rng.geometric(0.75, len(b))
        unit = s.item_cents[item[b]]
        unit = np.where(rng.random(len(b)) < self.DISCOUNT_P, (unit * 0.9).astype(np.int64), unit)
        k = rng.random(len(b)) < self.RETURN_P
        r, r_qty, r_unit = b[k], qty[k], unit[k]
        r_ts = b_ts[k] + rng.integers(3_600_000, 6 * 3_600_000, k.sum())

        lists = np.flatnonzero(lsearch)
        parts = [
            (SEARCH, lists, -1, list_ts[lists], None, None, True),
            (IMPRESSION, li, item, imp_ts, pos, None, True),
            (CLICK, li[c], item[c], c_ts, pos[c], None, True),
            (VIEW, li[v], item[v], v_ts, None, None, False),
            (
                CART,
                li[a],
                item[a],
                a_ts,
                None,
                (np.ones(len(a), np.int64), s.item_cents[item[a]]),
                False,
            ),
            (PURCHASE, li[b], item[b], b_ts, None, (qty, unit), False),
            (RETURN, li[r], item[r], r_ts, None, (r_qty, r_unit), False),
        ]
        ev = {k: [] for k in ("type", "list", "item", "ts", "pos", "qty", "cents", "in_list")}
        for etype, lst, it, ts, ps, money, in_list in parts:
            n = len(lst)
            ev["type"].append(np.full(n, etype, np.int8))
            ev["list"].append(lst)
            ev["item"].append(np.broadcast_to(np.asarray(it, np.int64), (n,)))
            ev["ts"].append(ts.astype(np.int64))
            ev["pos"].append(np.full(n, -1, np.int64) if ps is None else ps)
            ev["qty"].append(np.full(n, -1, np.int64) if money is None else money[0])
            ev["cents"].append(np.full(n, -1, np.int64) if money is None else money[1])
            ev["in_list"].append(np.full(n, in_list))
        ev = {k: np.concatenate(x) for k, x in ev.items()}
        lst = ev.pop("list")
        ev["user"] = luser[lst]
        ev["session"] = sess[lst]
        ev["query"] = np.where(ev["in_list"] & lsearch[lst], qidx[lst], -1)
        ev["list_no"] = np.where(ev["in_list"] & (ev["type"] != SEARCH), lst, -1)
        ev["list_is_rec"] = ~lsearch[lst]
        n_imp = len(li)
        ev["imp_truth"] = np.full(len(lst), -1, np.int64)
        ev["imp_truth"][len(lists) : len(lists) + n_imp] = np.arange(n_imp)
        del ev["in_list"]
        return dict(events=ev, n_sessions=n_sessions, n_lists=n_l, p_click=p, clicked=clicked)

    def bots(self, n_sessions: int) -> dict:
        """Scrapers and click bots: hundreds of clicks a minute, never from a shown list."""
        s, rng = self.s, self.rng
        bots = np.flatnonzero(s.is_bot)
        users = rng.choice(bots, n_sessions)
        n = rng.integers(150, 700, n_sessions)
        sess = np.repeat(np.arange(n_sessions), n)
        start = self.t0 + rng.integers(0, DAY_MS - 600_000, n_sessions)
        gaps = rng.exponential(200, len(sess))
        first = np.cumsum(n) - n
        csum = np.cumsum(gaps)
        ts = (start[sess] + csum - np.repeat(csum[first], n)).astype(np.int64)
        m = len(sess)
        neg = np.full(m, -1, np.int64)
        return dict(
            events=dict(
                type=np.where(rng.random(m) < 0.9, CLICK, VIEW).astype(np.int8),
                item=self.items[rng.integers(0, len(self.items), m)],
                ts=ts,
                pos=neg,
                qty=neg,
                cents=neg,
                user=users[sess],
                session=sess,
                query=neg,
                list_no=neg,
                list_is_rec=np.zeros(m, bool),
                imp_truth=neg,
            ),
            n_sessions=n_sessions,
        )


# --------------------------------------------------------------------------- dirt


_PRICED_KINDS = ("malformed_price", "nonpositive_price", "zero_quantity")


class _Dirt:
    """Turns chosen clean rows into dirty copies (or moves them, for late events)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def events(self, table: pa.Table, etype: np.ndarray, n: int, last_day: bool, next_id, day: str):
        """Returns dirty copies as (source row, row dict, kind, column), broken lines as
        (source row, text, event_id) and the rows to move into tomorrow's file."""
        rng = self.rng
        kinds = list(DIRTY_EVENT_KINDS)
        w = np.array(
            [0.0 if (k == "late_event" and last_day) else v for k, v in DIRTY_EVENT_KINDS.items()]
        )
        plan = np.repeat(np.arange(len(kinds)), rng.multinomial(n, w / w.sum()))
        priced = np.flatnonzero((etype == PURCHASE) | (etype == RETURN))
        # Distinct sources, so a late (moved) row is never also the original of a duplicate.
        generic = rng.permutation(np.flatnonzero(etype != SEARCH))[: len(plan)]
        src = np.array(
            [
                priced[rng.integers(len(priced))]
                if kinds[k] in _PRICED_KINDS and len(priced)
                else generic[j]
                for j, k in enumerate(plan)
            ],
            dtype=np.int64,
        )
        rows, raw, late = [], [], []
        for i, k, r in zip(src.tolist(), plan, table.take(pa.array(src, pa.int64())).to_pylist()):
            kind, column = kinds[k], None
            if kind == "late_event":
                late.append(i)
                continue
            if kind != "exact_duplicate":
                r["event_id"] = next_id()
            if kind == "malformed_price":
                r["price"], column = self.pick(["abc", "N/A", "12.99 EUR", "twelve"]), "price"
            elif kind == "malformed_timestamp":
                r["event_ts"] = self.pick(
                    [f"{day}T25:61:00Z", "yesterday", "N/A", f"{day[:4]}-02-30T10:00:00Z"]
                )
                column = "event_ts"
            elif kind == "unknown_event_type":
                r["event_type"] = self.pick(["clik", "purchace", "add-to-cart", "pageview"])
                column = "event_type"
            elif kind == "missing_required":
                options = ["event_id", "user_id", "session_id", "event_ts", "item_id"]
                if r["event_type"] == "impression":
                    options += ["list_id", "position"]
                elif r["event_type"] == "purchase":
                    options += ["quantity", "price"]
                column = self.pick(options)
                r[column] = None
            elif kind == "broken_line":
                vals = ["" if r[c] is None else str(r[c]) for c in EVENT_COLUMNS]
                text = ",".join(vals[:3]) if rng.random() < 0.5 else ",".join(vals + ["x", "y"])
                raw.append((i, text, r["event_id"]))
                continue
            elif kind == "near_duplicate":
                r["event_ts"] = _shift_iso(r["event_ts"], int(rng.integers(50, 1000)))
            elif kind in ("nonpositive_price", "zero_quantity"):
                if r["event_type"] not in ("purchase", "return"):  # no purchase today to copy
                    r["event_type"], r["quantity"], r["price"] = "purchase", 1, "9.99"
                if kind == "zero_quantity":
                    r["quantity"], column = 0, "quantity"
                else:
                    r["price"], column = self.pick(["0.00", "-" + r["price"]]), "price"
            elif kind == "timestamp_out_of_range":
                ts = r["event_ts"]
                r["event_ts"] = self.pick(
                    ["2099" + ts[4:], "2009" + ts[4:], "1970-01-01T00:00:00.000Z"]
                )
                column = "event_ts"
            elif kind == "unknown_item":
                r["item_id"], column = f"P9{int(rng.integers(0, 10**6)):06d}", "item_id"
            rows.append((i, r, kind, column))
        return rows, raw, late


# --------------------------------------------------------------------------- simulate


def simulate(config: SimConfig, out_dir: Path, progress: bool = True) -> dict:
    """Writes the raw files and the truth under `out_dir`; returns summary counts."""
    cfg, out = config, Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    shop = _Shop(cfg, rng)
    dirt = _Dirt(rng)
    dirty: list[dict] = []
    summary = {"users": cfg.n_users, "items": cfg.n_items, "days": cfg.days}

    # One writer thread: CSV formatting and gzip release the GIL, so day d is compressed while
    # day d+1 is simulated. Only the main thread draws random numbers, which keeps runs exact.
    with ThreadPoolExecutor(max_workers=1) as pool:
        jobs = _write_entities(cfg, shop, rng, out, dirty, pool)
        summary["labelled_queries"] = _write_labelled_queries(
            cfg, shop, rng, out, dirty, pool, jobs
        )
        summary.update(_write_events(cfg, shop, dirt, rng, out, dirty, pool, progress))
        for j in jobs:
            j.result()
    _write_truth(cfg, shop, out, dirty)
    kinds: dict[str, int] = {}
    for d in dirty:
        name = f"{d['file'].split('/')[0].removesuffix('.csv.gz')}/{d['kind']}"
        kinds[name] = kinds.get(name, 0) + 1
    summary["dirty"] = dict(sorted(kinds.items()))
    return summary


def _record(dirty, file, lines, keys, kinds, columns):
    for line, key, kind, column in zip(lines, keys, kinds, columns):
        dirty.append(dict(file=file, line=int(line), key=key, kind=kind, column=column))


def _write_entities(cfg, shop: _Shop, rng, out: Path, dirty, pool):
    n_u, n_i = cfg.n_users, cfg.n_items
    first = rng.integers(len(catalog.FIRST_NAMES), size=n_u)
    last = rng.integers(len(catalog.LAST_NAMES), size=n_u)
    country = rng.choice(len(catalog.COUNTRIES), n_u, p=[c[1] for c in catalog.COUNTRIES])
    street = rng.integers(len(catalog.STREETS), size=n_u)
    house, city = rng.integers(1, 200, n_u), rng.integers(0, 100, n_u)
    names, emails, addresses = [], [], []
    for i in range(n_u):
        f, l = catalog.FIRST_NAMES[first[i]], catalog.LAST_NAMES[last[i]]  # noqa: E741
        names.append(f"{f} {l}")
        emails.append(f"{f}.{l}.{i + 1}@mail.example".lower().replace(" ", ""))
        code, _, cities = catalog.COUNTRIES[country[i]]
        town = cities[city[i] % len(cities)]
        addresses.append(
            f"{catalog.STREETS[street[i]]} {house[i]}, {10000 + 37 * i % 89999} {town}"
        )
    users = pa.table(
        {
            "user_id": shop.user_ids,
            "email": emails,
            "full_name": names,
            "address": addresses,
            "country": pa.array([catalog.COUNTRIES[c][0] for c in country]),
            "signup_at": _iso_array(shop.user_signup_ms),
        }
    )
    # A few broken users: extra rows with new ids, so events never point at them.
    k = max(1, round(n_u * cfg.dirty_share / 4))
    extra = users.take(rng.integers(0, n_u, 2 * k)).to_pylist()
    kinds = [DIRTY_USER_KINDS[j // k] for j in range(2 * k)]
    keys, columns = [], []
    for j, (r, kind) in enumerate(zip(extra, kinds)):
        r["user_id"] = f"C{n_u + j + 1:07d}"
        if kind == "missing_user_id":
            r["user_id"], column = None, "user_id"
        else:
            # A fixed far future: relative to the simulated period it could be in the past by the
            # time the data is ingested, and the simulator must not read the wall clock.
            signup = _iso(shop.end_ms + int(rng.integers(30, 900)) * DAY_MS)
            r["signup_at"], column = "2099" + signup[4:], "signup_at"
        keys.append(r["user_id"])
        columns.append(column)
    users_all = pa.concat_tables([users, pa.Table.from_pylist(extra, users.schema)])
    keyv = np.concatenate([np.arange(n_u, dtype=float), rng.random(2 * k) * n_u])
    table, _, lines, _ = _place(users_all, keyv, [])
    _record(dirty, "users.csv.gz", lines[n_u:], keys, kinds, columns)
    jobs = [pool.submit(_write_csv_gz, out / "users.csv.gz", table, [], cfg.gzip_level)]

    items = pa.table(
        {
            "item_id": shop.item_ids,
            "title": shop.item_title,
            "category_path": pa.array([shop.leaf_paths[x] for x in shop.item_leaf]),
            "brand": shop.item_brand,
            "price": _money(shop.item_cents),
            "listed_at": _iso_array(shop.item_listed_ms),
        }
    )
    k = max(1, round(n_i * cfg.dirty_share / 4))
    src = rng.integers(0, n_i, 3 * k)
    extra = items.take(src).to_pylist()
    kinds = [DIRTY_ITEM_KINDS[j // k] for j in range(3 * k)]
    keys, columns = [], []
    for j, (r, kind, i) in enumerate(zip(extra, kinds, src)):
        r["item_id"] = f"P{n_i + j + 1:07d}"
        if kind == "nonpositive_price":
            r["price"], column = ("0.00" if j % 2 else "-" + r["price"]), "price"
        elif kind == "price_outlier":
            median = shop.leaf_median[shop.item_leaf[i]]
            r["price"], column = f"{median * 100 - 0.01:.2f}", "price"
        else:
            r["title"], column = "", "title"
        keys.append(r["item_id"])
        columns.append(column)
    items_all = pa.concat_tables([items, pa.Table.from_pylist(extra, items.schema)])
    keyv = np.concatenate([np.arange(n_i, dtype=float), rng.random(3 * k) * n_i])
    table, _, lines, _ = _place(items_all, keyv, [])
    _record(dirty, "items.csv.gz", lines[n_i:], keys, kinds, columns)
    jobs.append(pool.submit(_write_csv_gz, out / "items.csv.gz", table, [], cfg.gzip_level))
    return jobs


def _write_labelled_queries(cfg, shop: _Shop, rng, out: Path, dirty, pool, jobs) -> int:
    """Labelled examples for the intent classifier, from the same templates as the event log
    but drawn independently, de-duplicated so one text never carries two labels."""
    n = cfg.n_labelled_queries
    p = np.array([0.35, 0.25, 0.2, 0.2])
    seen, rows = set(), []
    for _ in range(20 * n):
        if len(rows) == n:
            break
        leaf, intent = int(rng.integers(shop.n_leaves)), catalog.INTENTS[rng.choice(4, p=p)]
        q = catalog.make_query(leaf, intent, rng)
        if q not in seen:
            seen.add(q)
            rows.append(
                {"query": q, "intent": intent, "category": catalog.leaf_name(shop.leaf_paths[leaf])}
            )
    k = max(1, round(len(rows) * cfg.dirty_share / 3))
    src = rng.integers(0, len(rows), 3 * k)
    kinds = [DIRTY_QUERY_KINDS[j // k] for j in range(3 * k)]
    extra, keys, columns = [], [], []
    for i, kind in zip(src, kinds):
        r = dict(rows[i])
        if kind == "empty_query":
            r["query"], column = "", "query"
        elif kind == "missing_intent":
            r["intent"], column = None, "intent"
        else:
            # Not a leaf of the tree: a made-up one, or an inner node.
            r["category"] = ["Hovercrafts", "Misc", "Electronics > Audio"][int(rng.integers(3))]
            column = "category"
        extra.append(r)
        keys.append(r["query"])
        columns.append(column)
    schema = pa.schema([("query", pa.string()), ("intent", pa.string()), ("category", pa.string())])
    table = pa.Table.from_pylist(rows + extra, schema)
    keyv = np.concatenate([np.arange(len(rows), dtype=float), rng.random(len(extra)) * len(rows)])
    table, _, lines, _ = _place(table, keyv, [])
    _record(dirty, "labelled_queries.csv.gz", lines[len(rows) :], keys, kinds, columns)
    jobs.append(
        pool.submit(_write_csv_gz, out / "labelled_queries.csv.gz", table, [], cfg.gzip_level)
    )
    return len(rows)


def _events_table(
    shop: _Shop, ev: dict, event_no: np.ndarray, session_no, list_no, ts_text
) -> pa.Table:
    type_names = pa.array(EVENT_TYPES)
    list_prefix = pc.if_else(pa.array(ev["list_is_rec"]), "rec-", "srp-")
    return pa.table(
        {
            "event_id": _ids("E", event_no, 10),
            "user_id": shop.user_ids.take(pa.array(ev["user"])),
            "session_id": _ids("S", session_no, 9),
            "event_type": type_names.take(pa.array(ev["type"])),
            "item_id": shop.item_ids.take(pa.array(ev["item"], mask=ev["item"] < 0)),
            "query": shop.pool.take(pa.array(ev["query"], mask=ev["query"] < 0)),
            "position": pa.array(ev["pos"], mask=ev["pos"] < 0),
            "list_id": _ids(list_prefix, list_no, 9, null=list_no < 0),
            "quantity": pa.array(ev["qty"], mask=ev["qty"] < 0),
            "price": _money(np.maximum(ev["cents"], 0), ev["cents"] < 0),
            "event_ts": ts_text,
        },
        schema=EVENT_SCHEMA,
    )


def _write_events(cfg, shop: _Shop, dirt: _Dirt, rng, out: Path, dirty, pool, progress):
    clock = _DayClock()
    per_day = cfg.events / cfg.days
    est = 20.0  # clean events per human session, refined from each simulated day
    human_events = human_sessions = 0
    next_event = 1
    next_session = next_list = 0
    carried: list[dict] = []  # late rows waiting for tomorrow's file
    counts = dict(
        events_clean=0, event_rows=0, impressions=0, clicks=0, purchases=0, bot_events=0, sessions=0
    )
    truth_writer = pq.ParquetWriter(
        out / "truth" / "impressions.parquet",
        pa.schema([("event_id", pa.string()), ("p_click", pa.float64()), ("clicked", pa.bool_())]),
    )
    jobs = []
    for d in tqdm(range(cfg.days), desc="days", unit="day", disable=not progress):
        day = _Day(shop, rng, d)
        n_bot = int(round(per_day * cfg.bot_event_share / 425)) if shop.is_bot.any() else 0
        n_hum = max(1, int(round((per_day - n_bot * 425) / est)))
        h, b = day.humans(n_hum), day.bots(n_bot)
        human_events += len(h["events"]["ts"])
        human_sessions += n_hum
        est = human_events / human_sessions
        b["events"]["session"] = b["events"]["session"] + n_hum
        ev = {k: np.concatenate([h["events"][k], b["events"][k]]) for k in h["events"]}
        n_h = len(h["events"]["ts"])
        ev["ts"] = np.minimum(ev["ts"], day.t0 + DAY_MS - 1)
        order = np.argsort(ev["ts"], kind="stable")
        ev = {k: v[order] for k, v in ev.items()}
        n = len(order)
        event_no = next_event + np.arange(n)
        next_event += n
        list_no = np.where(ev["list_no"] >= 0, next_list + ev["list_no"], -1)
        next_list += h["n_lists"]
        table = _events_table(
            shop,
            ev,
            event_no,
            next_session + ev["session"],
            list_no,
            clock.format(day.t0, ev["ts"]),
        )
        next_session += n_hum + n_bot

        imp = np.flatnonzero(ev["imp_truth"] >= 0)
        src = ev["imp_truth"][imp]
        truth_writer.write_table(
            pa.table(
                {
                    "event_id": table.column("event_id").take(pa.array(imp)),
                    "p_click": h["p_click"][src],
                    "clicked": h["clicked"][src],
                }
            )
        )
        counts["events_clean"] += n
        counts["impressions"] += len(imp)
        counts["clicks"] += int((ev["type"] == CLICK).sum())
        counts["purchases"] += int((ev["type"] == PURCHASE).sum())
        counts["bot_events"] += n - n_h
        counts["sessions"] += n_hum + n_bot

        # Dirty rows: sized so they make up dirty_share of the rows in the day's file.
        f_late = (
            0
            if d == cfg.days - 1
            else DIRTY_EVENT_KINDS["late_event"] / sum(DIRTY_EVENT_KINDS.values())
        )
        n_dirty = int(round(cfg.dirty_share * n / (1 - cfg.dirty_share * (1 - f_late))))

        def next_id():
            nonlocal next_event
            next_event += 1
            return f"E{next_event - 1:010d}"

        day_date = _iso(day.t0)[:10]
        rows, raw, late = dirt.events(
            table, ev["type"], n_dirty, d == cfg.days - 1, next_id, day_date
        )
        keep = np.ones(n, bool)
        keep[late] = False
        moved = table.take(pa.array(late, pa.int64())).to_pylist()
        parts = [table.filter(pa.array(keep))]
        keys = [np.flatnonzero(keep).astype(float)]
        meta = [(r["event_id"], "late_event", None) for r in carried]
        if carried:
            parts.append(pa.Table.from_pylist(carried, EVENT_SCHEMA))
            keys.append(np.sort(rng.random(len(carried))) * n)
        if rows:
            parts.append(pa.Table.from_pylist([r for _, r, _, _ in rows], EVENT_SCHEMA))
            keys.append(np.array([i + 0.5 for i, _, _, _ in rows]))
            meta += [(r["event_id"], kind, col) for _, r, kind, col in rows]
        carried = moved
        full = pa.concat_tables(parts)
        keyv = np.concatenate(keys)
        table, raw_at, lines, raw_lines = _place(full, keyv, [(i + 0.75, t) for i, t, _ in raw])
        fname = f"events/{day_date}.csv.gz"
        n_keep = int(keep.sum())
        _record(
            dirty,
            fname,
            lines[n_keep:],
            [m[0] for m in meta],
            [m[1] for m in meta],
            [m[2] for m in meta],
        )
        raw_sorted = sorted(raw, key=lambda r: r[0] + 0.75)
        _record(
            dirty,
            fname,
            raw_lines,
            [r[2] for r in raw_sorted],
            ["broken_line"] * len(raw),
            [None] * len(raw),
        )
        counts["event_rows"] += table.num_rows + len(raw)
        jobs.append(pool.submit(_write_csv_gz, out / fname, table, raw_at, cfg.gzip_level))
        # Keep at most two days queued: each holds a day's table in memory.
        while len(jobs) > 2:
            jobs.pop(0).result()
    for j in jobs:
        j.result()
    truth_writer.close()
    return counts


def _write_truth(cfg, shop: _Shop, out: Path, dirty: list[dict]) -> None:
    truth = out / "truth"
    pref = pa.FixedSizeListArray.from_arrays(pa.array(shop.user_pref.ravel()), shop.n_leaves)
    pq.write_table(
        pa.table(
            {
                "user_id": shop.user_ids,
                "is_bot": shop.is_bot,
                "price_pref": shop.user_price_pref,
                "activity": shop.user_activity,
                "leaf_affinity": pref,
                "top_leaf": pa.array(
                    [catalog.leaf_name(shop.leaf_paths[x]) for x in shop.user_pref.argmax(1)]
                ),
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
                "category": [catalog.leaf_name(shop.leaf_paths[x]) for x in shop.pool_leaf],
            }
        ),
        truth / "query_pool.parquet",
    )
    dirty = sorted(dirty, key=lambda r: (r["file"], r["line"]))
    pq.write_table(
        pa.Table.from_pylist(
            dirty,
            pa.schema(
                [
                    ("file", pa.string()),
                    ("line", pa.int64()),
                    ("key", pa.string()),
                    ("kind", pa.string()),
                    ("column", pa.string()),
                ]
            ),
        ),
        truth / "dirty.parquet",
    )
    cm = cfg.click_model
    conf = asdict(cfg)
    conf["start"] = cfg.start.isoformat()
    model = {
        "click_model": {
            "formula": "p = sigmoid(b0 + b_aff*affinity + b_price*price_fit + b_qual*quality"
            " + b_rel*relevant - b_pos*log1p(position))",
            "params": asdict(cm),
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
            "view_p": _Day.VIEW_P,
            "cart_p_by_intent": dict(
                zip(catalog.INTENTS + ["recommendation"], _Day.CART_P.tolist())
            ),
            "cart_p_factor": "(0.4 + 0.6*price_fit) * (0.5 + quality)",
            "purchase_p_by_intent": dict(
                zip(catalog.INTENTS + ["recommendation"], _Day.PURCHASE_P.tolist())
            ),
            "return_p": _Day.RETURN_P,
            "discount_p": _Day.DISCOUNT_P,
        },
        "intents": catalog.INTENTS,
        "search_intent_p": dict(zip(catalog.INTENTS, _Day.INTENT_P.tolist())),
        "category_tree": [
            {"path": p, "leaf": catalog.leaf_name(p), "median_price": m, "price_sigma": s}
            for p, _, _, m, s in catalog.LEAVES
        ],
        "brands": catalog.BRANDS,
        "dirty_kinds": {
            "events": list(DIRTY_EVENT_KINDS),
            "users": DIRTY_USER_KINDS,
            "items": DIRTY_ITEM_KINDS,
            "labelled_queries": DIRTY_QUERY_KINDS,
        },
        "config": conf,
    }
    (truth / "model.json").write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m governance.simulate",
        description="Simulate the shop: raw CSV files per docs/data-contract.md plus truth/.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="target clean events (default 1M)"
    )
    parser.add_argument("--users", type=int, default=None, help="users (default events/100)")
    parser.add_argument("--items", type=int, default=None, help="items (default events/500)")
    parser.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    parser.add_argument("--start", default="2026-09-01", help="first day, UTC (default 2026-09-01)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dirty-share", type=float, default=0.02, help="share of dirty event rows")
    parser.add_argument(
        "--bot-share", type=float, default=0.005, help="share of users that are bots"
    )
    args = parser.parse_args(argv)
    cfg = SimConfig(
        seed=args.seed,
        events=args.events,
        n_users=args.users,
        n_items=args.items,
        days=args.days,
        start=datetime.fromisoformat(args.start).replace(tzinfo=UTC),
        dirty_share=args.dirty_share,
        bot_share=args.bot_share,
    )
    summary = simulate(cfg, args.out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

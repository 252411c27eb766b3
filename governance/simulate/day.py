"""One simulated day: human sessions step by step, and the bots.

A human session opens one or more lists (a search results page, or a recommendation strip when
the user browses), the shop's own ranker fills and orders each list, the user clicks by the
known click model, and a click may go on to a product view, a cart, a purchase and a return.
Everything is drawn in bulk with numpy from the run's one Generator, in a fixed order, so a
seed gives the same day every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance.schemas import EVENT_TYPES, INTENTS
from governance.simulate.config import DAY_MS, HOURLY_TRAFFIC
from governance.simulate.shop import Shop

SEARCH, IMPRESSION, CLICK, VIEW, CART, PURCHASE, RETURN = (
    EVENT_TYPES.index(t)
    for t in ("search", "impression", "click", "view", "add_to_cart", "purchase", "return")
)
REC = len(INTENTS)  # the "intent" of a recommendation list, after the search intents
NONE = -1  # an absent id, position, quantity or price in the event arrays


@dataclass
class Sessions:
    user: np.ndarray  # user index
    is_search: np.ndarray  # searches (else browses recommendations)
    n_lists: np.ndarray  # lists the session opens
    start_ms: np.ndarray


@dataclass
class Lists:
    """One row per list shown: a search results page or a recommendation strip."""

    session: np.ndarray  # session index within the day
    user: np.ndarray
    is_search: np.ndarray
    ts: np.ndarray
    target_leaf: np.ndarray  # the leaf a search looks for; -1 on recommendation lists
    intent: np.ndarray  # index into INTENTS; REC on recommendation lists
    query: np.ndarray  # index into the shop's query pool; -1 on recommendation lists

    def __len__(self) -> int:
        return len(self.session)


@dataclass
class Impressions:
    """One row per item shown, in list order."""

    list_no: np.ndarray  # index into Lists
    position: np.ndarray  # 0-based slot in the list
    item: np.ndarray
    relevant: np.ndarray  # the item is in the search's target leaf
    price_fit: np.ndarray
    p_click: np.ndarray  # the click model's probability
    p_click_position_free: np.ndarray  # the same without the position term
    clicked: np.ndarray
    ts: np.ndarray


@dataclass
class Step:
    """Impressions (by index) that went on to one funnel step, with when and for how much."""

    at: np.ndarray  # indices into Impressions
    ts: np.ndarray
    quantity: np.ndarray | None = None
    unit_cents: np.ndarray | None = None


@dataclass
class Funnel:
    click: Step
    view: Step
    cart: Step
    purchase: Step
    ret: Step


class Day:
    """Generates one day's clean events in bulk: sessions, lists, slots, clicks, funnel."""

    INTENT_P = np.array([0.45, 0.25, 0.18, 0.12])  # per INTENTS: buy, browse, compare, info
    CART_P = np.array([0.16, 0.08, 0.10, 0.05, 0.07])  # per intent, last = recommendation list
    PURCHASE_P = np.array([0.6, 0.45, 0.5, 0.35, 0.45])
    VIEW_P, RETURN_P, DISCOUNT_P = 0.9, 0.04, 0.15
    TARGET_FROM_TASTE_P = 0.85  # a search looks for one of the user's leaves, else any leaf
    LIST_GAP_MS = 60_000  # mean gap between a session's lists
    SEARCH_TO_RESULTS_MS = 400

    def __init__(self, shop: Shop, rng: np.random.Generator, day: int):
        self.shop, self.rng, self.day = shop, rng, day
        self.t0 = shop.start_ms + day * DAY_MS
        self._index_items()

    # ------------------------------------------------------------------ item sampling
    def _index_items(self) -> None:
        """The items listed before the day, for popularity-weighted draws overall and per leaf."""
        shop = self.shop
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
        weight = shop.item_pop[self.by_leaf]
        csum = np.cumsum(weight)
        leaf_total = np.add.reduceat(weight, self.leaf_start[self.leaf_count > 0])
        totals = np.zeros(shop.n_leaves)
        totals[self.leaf_count > 0] = leaf_total
        base = csum - weight  # cumsum before each item
        base -= np.repeat(np.concatenate([[0], np.cumsum(totals)[:-1]]), self.leaf_count)
        self.leaf_flat = leaf + (base + weight) / np.repeat(
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
        """A leaf for each user, drawn from that user's own taste."""
        n_leaves = self.shop.n_leaves
        idx = np.searchsorted(self.shop.pref_flat, users + self.rng.random(len(users)), "right")
        return np.clip(idx - users * n_leaves, 0, n_leaves - 1)

    # ------------------------------------------------------------------ humans, step by step
    def humans(self, n_sessions: int) -> dict:
        sessions = self._start_sessions(n_sessions)
        lists = self._open_lists(sessions)
        item, shown = self._fill_slots(lists)
        impressions = self._rank_and_click(lists, item, shown)
        funnel = self._funnel(lists, impressions)
        events = self._events(lists, impressions, funnel)
        return dict(
            events=events,
            n_sessions=n_sessions,
            n_lists=len(lists),
            p_click=impressions.p_click,
            p_click_position_free=impressions.p_click_position_free,
            clicked=impressions.clicked,
        )

    def _start_sessions(self, n: int) -> Sessions:
        """Who shops (by activity, signed up, no bots), whether they search, and when."""
        shop, rng = self.shop, self.rng
        eligible = np.flatnonzero(~shop.is_bot & (shop.user_signup_ms < self.t0))
        activity = np.cumsum(shop.user_activity[eligible])
        pick = np.searchsorted(activity, rng.random(n) * activity[-1])
        user = eligible[np.minimum(pick, len(eligible) - 1)]
        is_search = rng.random(n) < shop.cfg.search_share
        n_lists = 1 + np.minimum(rng.poisson(0.8, n), 4)
        hour = rng.choice(24, n, p=HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum())
        start = self.t0 + (hour * 3600 + rng.random(n) * 3600) * 1000
        return Sessions(user, is_search, n_lists, start)

    def _open_lists(self, sessions: Sessions) -> Lists:
        """A session's lists follow each other with ~1 min gaps; a search list has a target
        leaf, an intent and the query string typed for them."""
        shop, rng, cfg = self.shop, self.rng, self.shop.cfg
        session = np.repeat(np.arange(len(sessions.user)), sessions.n_lists)
        first = np.cumsum(sessions.n_lists) - sessions.n_lists
        gaps = rng.exponential(self.LIST_GAP_MS, len(session))
        gaps[first] = 0
        csum = np.cumsum(gaps)
        # (start + running gap) - the session's first gap: kept in this order, as floats.
        ts = sessions.start_ms[session] + csum - np.repeat(csum[first], sessions.n_lists)
        ts = ts.astype(np.int64)
        user, is_search = sessions.user[session], sessions.is_search[session]
        n = len(session)
        target = np.where(
            rng.random(n) < self.TARGET_FROM_TASTE_P,
            self.user_leaf(user),
            rng.integers(0, shop.n_leaves, n),
        )
        target = np.where(is_search, target, -1)
        intent = np.where(is_search, rng.choice(len(INTENTS), n, p=self.INTENT_P), REC)
        variant = rng.integers(0, cfg.query_variants, n)
        query = np.where(
            is_search, shop.query_index(np.maximum(target, 0), intent % REC, variant), -1
        )
        return Lists(session, user, is_search, ts, target, intent, query)

    def _fill_slots(self, lists: Lists) -> tuple[np.ndarray, np.ndarray]:
        """Search lists mix the target leaf with popular items, recommendation lists mix the
        user's tastes with popular items. Returns (item, shown) matrices, a row per list."""
        cfg, rng, n = self.shop.cfg, self.rng, len(lists)
        slots = max(cfg.search_page_size, cfg.rec_page_size)
        size = np.where(lists.is_search, cfg.search_page_size, cfg.rec_page_size)
        shown = np.arange(slots)[None, :] < size[:, None]
        from_leaf = rng.random((n, slots)) < np.where(lists.is_search, 0.7, 0.6)[:, None]
        leaf = np.where(lists.is_search[:, None], lists.target_leaf[:, None], -1).repeat(slots, 1)
        taste_slot = from_leaf & ~lists.is_search[:, None]
        users = np.broadcast_to(lists.user[:, None], (n, slots))
        leaf[taste_slot] = self.user_leaf(users[taste_slot])
        item = np.empty((n, slots), np.int64)
        item[from_leaf] = self.in_leaf(leaf[from_leaf])
        item[~from_leaf] = self.popular(int((~from_leaf).sum()))
        # Drop repeated items within a list so (list_id, item_id) identifies an impression.
        keyed = np.where(shown, item, -1 - np.arange(slots)[None, :])
        order = np.argsort(keyed, axis=1, kind="stable")
        sorted_keys = np.take_along_axis(keyed, order, 1)
        repeated = np.zeros_like(shown)
        np.put_along_axis(repeated, order[:, 1:], sorted_keys[:, 1:] == sorted_keys[:, :-1], 1)
        return item, shown & ~repeated

    def _rank_and_click(self, lists: Lists, item: np.ndarray, shown: np.ndarray) -> Impressions:
        """The shop's noisy ranker orders each list; the user clicks by the click model."""
        shop, rng = self.shop, self.rng
        cm = shop.cfg.click_model
        relevant = shop.item_leaf[item] == lists.target_leaf[:, None]
        score = (
            1.0 * relevant
            + 1.2 * shop.item_quality[item]
            + 0.3 * np.log(shop.item_pop[item])
            + 0.7 * rng.gumbel(size=item.shape)
        )
        order = np.argsort(np.where(shown, -score, np.inf), axis=1, kind="stable")
        item, shown, relevant = (np.take_along_axis(a, order, 1) for a in (item, shown, relevant))
        list_no, position = np.nonzero(shown)
        item, relevant = item[list_no, position], relevant[list_no, position]
        user = lists.user[list_no]

        leaf = shop.item_leaf[item]
        affinity = shop.user_pref[user, leaf]
        log_price_gap = (
            np.log(shop.item_cents[item] / 100)
            - np.log(shop.leaf_median[leaf])
            - shop.user_price_pref[user]
        )
        price_fit = np.exp(-0.5 * (log_price_gap / cm.price_width) ** 2)
        p_click = cm.p_click(
            affinity, price_fit, shop.item_quality[item], relevant.astype(float), position
        )
        p_free = cm.p_click_position_free(
            affinity, price_fit, shop.item_quality[item], relevant.astype(float)
        )
        clicked = rng.random(len(p_click)) < p_click
        ts = lists.ts[list_no] + np.where(lists.is_search[list_no], self.SEARCH_TO_RESULTS_MS, 0)
        return Impressions(
            list_no, position, item, relevant, price_fit, p_click, p_free, clicked, ts
        )

    def _funnel(self, lists: Lists, imp: Impressions) -> Funnel:
        """After a click: product view, cart, purchase, sometimes a return."""
        shop, rng = self.shop, self.rng
        c = np.flatnonzero(imp.clicked)
        wait = rng.exponential(8000, len(c)).astype(np.int64)
        click_ts = imp.ts[c] + 1500 + wait + 700 * imp.position[c]
        intent = lists.intent[imp.list_no[c]]

        v = c[rng.random(len(c)) < self.VIEW_P]
        view_ts = click_ts[np.searchsorted(c, v)] + rng.integers(300, 1500, len(v))

        cart_p = (
            self.CART_P[intent]
            * (0.4 + 0.6 * imp.price_fit[c])
            * (0.5 + shop.item_quality[imp.item[c]])
        )
        carted = rng.random(len(c)) < cart_p
        a = c[carted]
        cart_ts = click_ts[carted] + 20_000 + rng.exponential(40_000, carted.sum()).astype(np.int64)
        cart_intent = intent[carted]
        cart_units = (np.ones(len(a), np.int64), shop.item_cents[imp.item[a]])

        bought = rng.random(len(a)) < self.PURCHASE_P[cart_intent]
        b = a[bought]
        buy_ts = cart_ts[bought] + 60_000 + rng.exponential(120_000, bought.sum()).astype(np.int64)
        quantity = rng.geometric(0.75, len(b))
        unit = shop.item_cents[imp.item[b]]
        discounted = rng.random(len(b)) < self.DISCOUNT_P
        unit = np.where(discounted, (unit * 0.9).astype(np.int64), unit)

        returned = rng.random(len(b)) < self.RETURN_P
        return_ts = buy_ts[returned] + rng.integers(3_600_000, 6 * 3_600_000, returned.sum())
        return Funnel(
            click=Step(c, click_ts),
            view=Step(v, view_ts),
            cart=Step(a, cart_ts, *cart_units),
            purchase=Step(b, buy_ts, quantity, unit),
            ret=Step(b[returned], return_ts, quantity[returned], unit[returned]),
        )

    def _events(self, lists: Lists, imp: Impressions, funnel: Funnel) -> dict:
        """All of the day's human events as parallel arrays (see EVENT_ARRAYS in writing)."""
        searches = np.flatnonzero(lists.is_search)
        n_imp = len(imp.list_no)
        # (type, list, item, ts, position, (quantity, cents), belongs to the shown list)
        parts = [
            (SEARCH, searches, NONE, lists.ts[searches], None, None, True),
            (IMPRESSION, imp.list_no, imp.item, imp.ts, imp.position, None, True),
        ]
        for etype, step, in_list in (
            (CLICK, funnel.click, True),
            (VIEW, funnel.view, False),
            (CART, funnel.cart, False),
            (PURCHASE, funnel.purchase, False),
            (RETURN, funnel.ret, False),
        ):
            money = None if step.quantity is None else (step.quantity, step.unit_cents)
            position = imp.position[step.at] if etype == CLICK else None
            parts.append(
                (etype, imp.list_no[step.at], imp.item[step.at], step.ts, position, money, in_list)
            )
        ev = {k: [] for k in ("type", "list", "item", "ts", "pos", "qty", "cents", "in_list")}
        for etype, list_no, item, ts, position, money, in_list in parts:
            n = len(list_no)
            absent = np.full(n, NONE, np.int64)
            ev["type"].append(np.full(n, etype, np.int8))
            ev["list"].append(list_no)
            ev["item"].append(np.broadcast_to(np.asarray(item, np.int64), (n,)))
            ev["ts"].append(ts.astype(np.int64))
            ev["pos"].append(absent if position is None else position)
            ev["qty"].append(absent if money is None else money[0])
            ev["cents"].append(absent if money is None else money[1])
            ev["in_list"].append(np.full(n, in_list))
        ev = {k: np.concatenate(x) for k, x in ev.items()}
        list_no = ev.pop("list")
        in_list = ev.pop("in_list")
        ev["user"] = lists.user[list_no]
        ev["session"] = lists.session[list_no]
        ev["query"] = np.where(in_list & lists.is_search[list_no], lists.query[list_no], NONE)
        ev["list_no"] = np.where(in_list & (ev["type"] != SEARCH), list_no, NONE)
        ev["list_is_rec"] = ~lists.is_search[list_no]
        # Each impression event's row in the day's truth (p_click, clicked).
        ev["imp_truth"] = np.full(len(list_no), NONE, np.int64)
        ev["imp_truth"][len(searches) : len(searches) + n_imp] = np.arange(n_imp)
        return ev

    # ------------------------------------------------------------------ bots
    def bots(self, n_sessions: int) -> dict:
        """Scrapers and click bots: hundreds of clicks a minute, never from a shown list."""
        shop, rng = self.shop, self.rng
        users = rng.choice(np.flatnonzero(shop.is_bot), n_sessions)
        n = rng.integers(150, 700, n_sessions)
        session = np.repeat(np.arange(n_sessions), n)
        start = self.t0 + rng.integers(0, DAY_MS - 600_000, n_sessions)
        gaps = rng.exponential(200, len(session))
        first = np.cumsum(n) - n
        csum = np.cumsum(gaps)
        ts = (start[session] + csum - np.repeat(csum[first], n)).astype(np.int64)
        m = len(session)
        absent = np.full(m, NONE, np.int64)
        return dict(
            events=dict(
                type=np.where(rng.random(m) < 0.9, CLICK, VIEW).astype(np.int8),
                item=self.items[rng.integers(0, len(self.items), m)],
                ts=ts,
                pos=absent,
                qty=absent,
                cents=absent,
                user=users[session],
                session=session,
                query=absent,
                list_no=absent,
                list_is_rec=np.zeros(m, bool),
                imp_truth=absent,
            ),
            n_sessions=n_sessions,
        )

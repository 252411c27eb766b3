"""The shop: its catalogue, its users and the queries they type, with their latent state."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from governance.schemas import INTENTS
from governance.simulate import vocabulary
from governance.simulate.config import DAY_MS, SimConfig
from governance.simulate.queries import shopper_query
from governance.simulate.text import epoch_ms, ids


class Shop:
    """Entities and their latent state, built once per run."""

    def __init__(self, cfg: SimConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.start_ms = epoch_ms(cfg.start)
        self.end_ms = self.start_ms + cfg.days * DAY_MS
        self.n_leaves = len(vocabulary.LEAVES)
        self.leaf_paths = [leaf[0] for leaf in vocabulary.LEAVES]
        self.leaf_median = np.array([leaf[3] for leaf in vocabulary.LEAVES], float)
        self.leaf_sigma = np.array([leaf[4] for leaf in vocabulary.LEAVES], float)
        self._make_items()
        self._make_users()
        self._make_query_pool()

    def _make_items(self):
        cfg, rng, n = self.cfg, self.rng, self.cfg.n_items
        leaf_size = rng.dirichlet(np.full(self.n_leaves, 5.0))
        # Every leaf gets an item first, so no category is empty when n_items allows it.
        leaf = np.concatenate(
            [
                np.arange(min(n, self.n_leaves)),
                rng.choice(self.n_leaves, max(n - self.n_leaves, 0), p=leaf_size),
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
        self.item_ids = ids("P", np.arange(1, n + 1), 7)
        self.item_brand, self.item_title = [], []
        word_draws = rng.integers(0, 1 << 30, size=(n, 5))
        for i in range(n):
            brand, title = self._title(self.item_leaf[i], word_draws[i])
            self.item_brand.append(brand)
            self.item_title.append(title)

    @staticmethod
    def _title(leaf: int, draws: np.ndarray) -> tuple[str, str]:
        """Brand and title from the leaf's words, e.g. "Auralis Wireless Headphones, Black"."""
        path, nouns, descriptors, _, _ = vocabulary.LEAVES[leaf]
        dept = vocabulary.department(path)
        brands, variants = vocabulary.BRANDS[dept], vocabulary.VARIANTS[dept]
        brand = brands[draws[0] % len(brands)]
        first = descriptors[draws[1] % len(descriptors)]
        second = descriptors[draws[2] % len(descriptors)]
        words = [brand, first] + ([second] if second != first and draws[2] % 2 else [])
        noun = nouns[draws[3] % len(nouns)]
        variant = variants[draws[4] % len(variants)]
        return brand, f"{' '.join(words)} {noun}, {variant}"

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
        self.user_ids = ids("C", np.arange(1, n + 1), 7)

    def _make_query_pool(self):
        """The strings searched in the event log: `query_variants` per (leaf, intent)."""
        rng, variants = self.rng, self.cfg.query_variants
        self.pool_query, self.pool_leaf, self.pool_intent = [], [], []
        for leaf in range(self.n_leaves):
            for intent in INTENTS:
                for _ in range(variants):
                    self.pool_query.append(shopper_query(leaf, intent, rng, self.cfg.query_style))
                    self.pool_leaf.append(leaf)
                    self.pool_intent.append(intent)
        self.pool = pa.array(self.pool_query)

    def query_index(self, leaf: np.ndarray, intent: np.ndarray, variant: np.ndarray):
        """Position in the pool of the query string for (leaf, intent index, variant)."""
        return (leaf * len(INTENTS) + intent) * self.cfg.query_variants + variant

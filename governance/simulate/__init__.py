"""A deterministic shop simulator that writes raw files per `docs/data-contract.md`, plus the truth.

The shop has users with latent category tastes and a price preference, a catalogue with a
category tree, searches with intents, result and recommendation lists, clicks drawn from a
known click model, a purchase funnel, a few bots and a controlled share of dirty rows. Because
every latent quantity is written to `truth/`, later stages (validation, features, ranker,
intent classifier) can be checked against what really happened.

Run it:

    python -m governance.simulate --out data/sim                 # ~1M events, 30 days
    python -m governance.simulate --out data/sim --preset tiny   # seconds: what the tests use
    python -m governance.simulate --out data/sim10m --events 10000000
    python -m governance.simulate --help

Layout under --out: users.csv.gz, items.csv.gz, labelled_queries.csv.gz, events/YYYY-MM-DD.csv.gz
and truth/{model.json, users.parquet, items.parquet, impressions.parquet, dirty.parquet,
query_pool.parquet}. The same seed and config give byte-identical files (gzip mtime 0, no wall
clock, one seeded numpy Generator).

The modules, in the order a run uses them: `config` (sizes, presets, click model, dirty kinds),
`vocabulary` (category tree, names, query templates), `shop` (items, users, query pool),
`day` (one day's sessions, lists, clicks and funnel), `dirt` (broken copies of clean rows),
`writing` and `events` (the files and truth/), `run` (simulate() and the command line).
"""

from governance.schemas import EVENT_COLUMNS, EVENT_TYPES
from governance.simulate.config import PRESETS, ClickModel, SimConfig, preset
from governance.simulate.run import main, simulate

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_TYPES",
    "PRESETS",
    "ClickModel",
    "SimConfig",
    "main",
    "preset",
    "simulate",
]

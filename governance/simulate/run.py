"""simulate(): the whole run, in order: shop, entity files, labelled queries, days, truth."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from governance.simulate.config import PRESETS, SimConfig
from governance.simulate.dirt import dirty_items, dirty_queries, dirty_users
from governance.simulate.events import write_events
from governance.simulate.queries import STYLES
from governance.simulate.shop import Shop
from governance.simulate.writing import (
    LABELLED_QUERY_SCHEMA,
    DirtLog,
    items_table,
    labelled_query_rows,
    users_table,
    with_dirt,
    write_csv_gz,
    write_truth,
)


def simulate(config: SimConfig, out_dir: Path, progress: bool = True) -> dict:
    """Writes the raw files and the truth under `out_dir`; returns summary counts."""
    cfg, out = config, Path(out_dir)
    # One seeded Generator, drawn from in a fixed order by the main thread only: same bytes.
    rng = np.random.default_rng(cfg.seed)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    shop = Shop(cfg, rng)
    log = DirtLog()
    summary = {"users": cfg.n_users, "items": cfg.n_items, "days": cfg.days}

    # One writer thread: CSV formatting and gzip release the GIL, so day d is compressed while
    # day d+1 is simulated.
    with ThreadPoolExecutor(max_workers=1) as pool:

        def write(name: str, table: pa.Table):
            return pool.submit(write_csv_gz, out / name, table, [], cfg.gzip_level)

        jobs = _write_entities(shop, rng, log, write)
        summary["labelled_queries"] = _write_labelled_queries(shop, rng, log, write, jobs)
        summary.update(write_events(cfg, shop, rng, out, log, pool, progress))
        for job in jobs:
            job.result()
    write_truth(cfg, shop, out, log)
    summary["dirty"] = log.counts()
    return summary


def _write_entities(shop: Shop, rng, log: DirtLog, write: Callable) -> list:
    users = users_table(shop, rng)
    users = with_dirt(users, dirty_users(users, shop, rng), rng, "users.csv.gz", log)
    jobs = [write("users.csv.gz", users)]
    items = items_table(shop)
    items = with_dirt(items, dirty_items(items, shop, rng), rng, "items.csv.gz", log)
    jobs.append(write("items.csv.gz", items))
    return jobs


def _write_labelled_queries(shop: Shop, rng, log: DirtLog, write: Callable, jobs: list) -> int:
    name = "labelled_queries.csv.gz"
    rows = labelled_query_rows(shop, rng)
    dirt = dirty_queries(rows, shop.cfg.dirty_share, rng)
    table = with_dirt(pa.Table.from_pylist(rows, LABELLED_QUERY_SCHEMA), dirt, rng, name, log)
    jobs.append(write(name, table))
    return len(rows)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, SimConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m governance.simulate",
        description="Simulate the shop: raw CSV files per docs/data-contract.md plus truth/.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named size: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in size.items())
            for name, size in PRESETS.items()
        )
        + " (the flags below override it; default: their own defaults)",
    )
    parser.add_argument("--events", type=int, default=None, help="target clean events (default 1M)")
    parser.add_argument("--users", type=int, default=None, help="users (default events/100)")
    parser.add_argument("--items", type=int, default=None, help="items (default events/500)")
    parser.add_argument("--days", type=int, default=None, help="simulated days (default 30)")
    parser.add_argument("--start", default="2026-09-01", help="first day, UTC (default 2026-09-01)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--dirty-share", type=float, default=0.02, help="share of dirty event rows (default 0.02)"
    )
    parser.add_argument(
        "--bot-share",
        type=float,
        default=0.005,
        help="share of users that are bots (default 0.005)",
    )
    parser.add_argument(
        "--query-style",
        choices=STYLES,
        default=None,
        help="how shoppers type queries: hard (synonyms, a second language, brand and model "
        "tokens, ambiguous queries, abbreviations, typos) or templates (default: the "
        "preset's, else hard)",
    )
    args = parser.parse_args(argv)
    sizes = dict(PRESETS[args.preset]) if args.preset else {}
    flags = dict(
        events=args.events,
        n_users=args.users,
        n_items=args.items,
        days=args.days,
        query_style=args.query_style,
    )
    sizes.update({k: v for k, v in flags.items() if v is not None})
    cfg = SimConfig(
        seed=args.seed,
        start=datetime.fromisoformat(args.start).replace(tzinfo=UTC),
        dirty_share=args.dirty_share,
        bot_share=args.bot_share,
        **sizes,
    )
    return args, cfg


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse_args(argv)
    summary = simulate(cfg, args.out)
    print(json.dumps(summary, indent=2))

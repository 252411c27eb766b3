"""The feature pipeline: time-stamped feature tables in PostgreSQL from clean, non-bot events.

    python -m features.pipeline                 # fold every new loaded batch into the tables
    python -m features.pipeline --no-embeddings # skip MiniLM title embeddings
    python -m features.pipeline --status        # watermark: processed batches

Incremental by batch. `feature_processed_batches` is the watermark: a run takes the
`ingest_batches` with status 'loaded' not listed there (``_new_batches``), runs
`features/sql/*.sql` in order inside one transaction (under an advisory lock, so two runs never
interleave), and lists them. A rerun with no new batch does nothing; a run over a new batch
touches only the keys and hours that batch's events fall in. Bot-flagged events
(`events.is_bot`) never count.

Semantics (all times UTC):

* Hourly aggregates (`feature_*_hourly`, hour_ts = start of the hour) are *recomputed* for every
  (key, hour) a new batch touches from all clean events of that hour -- never incremented -- so
  replays and late events cannot double count.
* Snapshots (`user_features`, `item_features`, `category_features`, `user_category_features`,
  `query_features`): a row with event_timestamp T (an hour boundary) describes the entity from
  events with event_ts < T only, with windows [T-1h, T), [T-1d, T), [T-7d, T), [T-30d, T). A row
  is written for each hour in which the entity was active (T = end of that hour); a late event
  also recomputes the entity's existing snapshots in the 30 days after it. Feast's
  point-in-time join takes the latest row with T <= label time, so a label never sees an
  event at or after its own time, nor anything after the last hour boundary before it.
  Between snapshots the values are those of the entity's last active hour (an inactive user's
  "clicks_1h" is the count of the hour before their last activity); Feast TTLs (30 days; 90 for
  queries) turn them into nulls when they would be meaningless. Recency is request-time exact
  through the on-demand view `user_recency` (request time - last_event_ts_s).
* `user_session_features`: one row per clean non-impression event, the session state just
  after it (counts of events/views/clicks/add-to-carts/searches in the session, last 5 viewed
  items and their categories). features/realtime.py pushes exactly the same values online
  the moment an event arrives; the batch run later writes the same rows offline. Push values
  are *recomputed* session states, never increments, so nothing is counted twice.
* `item_embeddings`: MiniLM title embedding per item, recomputed only when md5(title) changes
  (features/embeddings.py); `user_embeddings`: mean embedding of the user's last 20
  viewed/clicked/carted items in [T-30d, T) at the user's snapshot times.
* item price / category / listed_at come from the current `items` row (items carry no price
  history); price_rel_category = price / median price of the category now.

Late-arriving events rewrite snapshots with old timestamps; `feast materialize-incremental`
only moves rows newer than its last run, so after a backfill run
`python -m features.feast_cli materialize <first affected time> <now>` (the run reports
`earliest_affected`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from features.embeddings import update_item_embeddings, write_user_embeddings
from governance.db import migrate, transaction
from governance.settings import get_settings

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
LOCK_KEY = 0x6361727477697365  # 'cartwise'


@dataclass
class PipelineParams:
    ctr_prior: float = 0.05
    ctr_prior_strength: float = 20.0
    min_query_searches: int = 3
    batch_statuses: tuple[str, ...] = ("loaded",)

    def sql_params(self) -> dict:
        return {
            "ctr_prior": self.ctr_prior,
            "ctr_prior_strength": self.ctr_prior_strength,
            "min_query_searches": self.min_query_searches,
        }


@dataclass
class RunReport:
    batches: list[int] = field(default_factory=list)
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    earliest_affected: str | None = None
    embeddings: dict | None = None

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def run(
    settings=None,
    params: PipelineParams | None = None,
    *,
    embeddings: bool = True,
    batch_ids: list[int] | None = None,
    progress: bool = False,
) -> RunReport:
    """Fold every loaded, unprocessed batch (or just `batch_ids`) into the feature tables."""
    settings = settings or get_settings()
    params = params or PipelineParams()
    report = RunReport()
    if embeddings:
        report.embeddings = update_item_embeddings(settings, progress=progress)

    with transaction(settings) as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur.execute("CREATE TEMP TABLE _new_batches (batch_id bigint PRIMARY KEY) ON COMMIT DROP")
        if batch_ids is None:
            cur.execute(
                """INSERT INTO _new_batches
                   SELECT b.batch_id FROM ingest_batches b
                   WHERE b.status = ANY(%s)
                     AND NOT EXISTS (SELECT 1 FROM feature_processed_batches p
                                     WHERE p.batch_id = b.batch_id)""",
                (list(params.batch_statuses),),
            )
        else:
            cur.execute(
                """INSERT INTO _new_batches SELECT unnest(%s::bigint[])
                   EXCEPT SELECT batch_id FROM feature_processed_batches""",
                (list(batch_ids),),
            )
        cur.execute("SELECT batch_id FROM _new_batches ORDER BY 1")
        report.batches = [r[0] for r in cur.fetchall()]
        if not report.batches:
            log.info("no new batches")
            return report
        files = sql_files()
        iterator = files
        if progress:
            iterator = tqdm(files, desc="feature SQL", unit="step")
        for path in iterator:
            t0 = time.perf_counter()
            cur.execute(path.read_text(), params.sql_params())
            report.seconds[path.stem] = round(time.perf_counter() - t0, 3)
            log.info("%s: %.2fs", path.name, report.seconds[path.stem])
            if path.stem.startswith("00"):
                cur.execute("SELECT count(*), min(hour_ts) FROM _new_events")
                n, earliest = cur.fetchone()
                report.events = n
                report.earliest_affected = earliest.isoformat() if earliest else None
        if embeddings:
            t0 = time.perf_counter()
            written = write_user_embeddings(cur, progress=progress)
            report.embeddings = {**(report.embeddings or {}), "user_snapshots": written}
            report.seconds["user_embeddings"] = round(time.perf_counter() - t0, 3)
        for table in (
            "user_features",
            "item_features",
            "category_features",
            "user_category_features",
            "query_features",
            "user_session_features",
        ):
            cur.execute(f"SELECT count(*) FROM {table}")
            report.rows[table] = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO feature_processed_batches (batch_id, events)
               SELECT b.batch_id, count(e.event_id) FROM _new_batches b
               LEFT JOIN events e USING (batch_id) GROUP BY b.batch_id"""
        )
    return report


def status(settings=None) -> dict:
    with transaction(settings) as cur:
        cur.execute(
            "SELECT count(*), coalesce(max(batch_id), 0), coalesce(sum(events), 0), "
            "max(processed_at) FROM feature_processed_batches"
        )
        n, last, events, at = cur.fetchone()
        cur.execute("""SELECT count(*) FROM ingest_batches b WHERE status = 'loaded' AND
                       NOT EXISTS (SELECT 1 FROM feature_processed_batches p
                                   WHERE p.batch_id = b.batch_id)""")
        pending = cur.fetchone()[0]
    return {
        "processed_batches": n,
        "last_batch_id": last,
        "events": int(events),
        "last_run": at.isoformat() if at else None,
        "pending_batches": pending,
    }


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m features.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-embeddings", action="store_true", help="skip MiniLM item/user embeddings"
    )
    parser.add_argument(
        "--batch",
        type=int,
        action="append",
        dest="batch_ids",
        help="process only this batch id (repeatable; default: every batch not yet processed)",
    )
    parser.add_argument(
        "--min-query-searches",
        type=int,
        default=PipelineParams.min_query_searches,
        help="searches in 30 days a query needs to get query features (default: %(default)s)",
    )
    parser.add_argument("--status", action="store_true", help="print the watermark and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.status:
        print(json.dumps(status(), indent=2))
        return

    migrate()
    report = run(
        params=PipelineParams(min_query_searches=args.min_query_searches),
        embeddings=not args.no_embeddings,
        batch_ids=args.batch_ids,
        progress=True,
    )
    print(json.dumps(report.as_dict(), indent=2, default=str))


if __name__ == "__main__":
    _main()

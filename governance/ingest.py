"""Audited batch ingest: every input row ends in a clean table or in quarantine.

    python -m governance.ingest sim DIR              # a simulator output folder, in order
    python -m governance.ingest file TABLE PATH      # one contract CSV
                                                     # (users/items/events/labelled_queries)
    python -m governance.ingest online-retail PATH   # the UCI Online Retail log through its adapter
    python -m governance.ingest summary              # batches, counts and quarantine reasons

One call is one batch (a row in `ingest_batches`): the rows are validated lazily against the
table's Pandera model, cleaned by the named rules of `governance.cleaning`, pseudonymised, then
loaded with COPY together with the quarantined rows and the batch's counts in one transaction,
so a failure leaves nothing half-loaded. Counts reconcile and the database checks it:
rows_read = rows_loaded + rows_quarantined + rows_duplicate. The same file (same checksum)
loads once; running it again changes nothing.

The steps live in their own modules: governance.raw_files (reading, checksums),
governance.validation (Pandera), governance.cleaning (the rules), governance.loading (COPY)
and governance.quarantine (what a refused row may keep); this module runs them as one batch.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from governance import cleaning
from governance.db import connect, migrate, transaction
from governance.loading import KEYS, load_clean
from governance.online_retail import load_online_retail
from governance.privacy import pseudonymise_series
from governance.quarantine import quarantine_rows, raw_record, redact
from governance.raw_files import file_checksum, frame_checksum, read_csv
from governance.report import build_quality, write_report
from governance.schemas import RECORD_MODELS, TABLE_COLUMNS
from governance.settings import Settings, get_settings
from governance.validation import validate

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    table: str
    batch_id: int | None
    status: str  # 'loaded' | 'already_loaded'
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int
    rule_hits: dict[str, int] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)  # {row_number, reasons, raw}; row_number
    # is the line number in a file, or the position in a frame (an API request)
    clean: pd.DataFrame | None = None  # rows loaded, as stored
    quality: dict = field(default_factory=dict)
    # {row_number, reason}: each row not loaded because it repeats one already kept
    # (exact_duplicate, near_duplicate) or stored by an earlier batch (already_stored).
    duplicate_rows: list[dict] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined + self.rows_duplicate

    def summary(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "table",
                "batch_id",
                "status",
                "rows_read",
                "rows_loaded",
                "rows_quarantined",
                "rows_duplicate",
                "rule_hits",
            )
        }


class IngestError(RuntimeError):
    """The batch could not be loaded; nothing of it was written (see ingest_batches.error)."""


# --------------------------------------------------------------------------------- cleaning


@dataclass
class Cleaned:
    clean: pd.DataFrame
    quarantine: pd.Series  # index -> list of reasons
    duplicate: pd.Series  # bool per valid row
    rule_hits: dict[str, int]
    duplicate_reason: pd.Series | None = None  # index -> exact_duplicate / near_duplicate


def _known(cur, sql: str) -> pd.Index:
    cur.execute(sql)
    return pd.Index([r[0] for r in cur.fetchall()])


def clean_rows(table: str, valid: pd.DataFrame, cur, settings: Settings) -> Cleaned:
    """Apply the table's cleaning rules to validated rows."""
    hits: dict[str, int] = {}
    reasons: list[pd.Series] = []
    df = valid.copy()

    def quarantine(mask: pd.Series, reason: str) -> None:
        hits[reason] = cleaning.count(mask)
        if hits[reason]:
            reasons.append(pd.Series(reason, index=df.index[mask.to_numpy(dtype=bool)]))

    now = datetime.now(UTC)
    ts_column = {"users": "signup_at", "items": "listed_at", "events": "event_ts"}.get(table)
    if ts_column:
        out_of_range = cleaning.timestamp_out_of_range(df[ts_column], settings.shop_opened_at, now)
        for reason in ("timestamp_before_shop_opened", "timestamp_in_future"):
            quarantine(out_of_range == reason, reason)

    if table == "items":
        df["category"] = cleaning.leaf_category(df["category_path"])
        quarantine(
            cleaning.price_outliers(df["price"], df["category"]), "price_outlier_in_category"
        )
    if table == "events":
        before = df["query"].copy()
        df["query"] = cleaning.normalise_text(df["query"])
        hits["query_normalised"] = int((before.fillna("") != df["query"].fillna("")).sum())
        known_items = _known(cur, "SELECT item_id FROM items")
        quarantine(cleaning.unknown_reference(df["item_id"], known_items), "unknown_item")
    if table == "labelled_queries":
        df["query"] = cleaning.normalise_text(df["query"])
        known = _known(cur, "SELECT DISTINCT category FROM items")
        if len(known):  # another shop's taxonomy may arrive before its catalogue
            quarantine(cleaning.unknown_reference(df["category"], known), "unknown_category")
        df["source"] = "labelled"

    bad = pd.concat(reasons).groupby(level=0).agg(list) if reasons else pd.Series([], dtype=object)
    ok = df.loc[~df.index.isin(bad.index)]

    content = [c for c in ok.columns if c not in ("event_id",)]
    exact = cleaning.exact_duplicates(ok, KEYS[table], content)
    hits["exact_duplicate"] = cleaning.count(exact)
    duplicate = exact.copy()
    why = pd.Series("exact_duplicate", index=ok.index[exact.to_numpy(dtype=bool)], dtype=object)
    if table == "events":
        near = cleaning.near_duplicates(ok.loc[~exact]).reindex(ok.index, fill_value=False)
        hits["near_duplicate"] = cleaning.count(near)
        duplicate = exact | near
        near_idx = ok.index[near.to_numpy(dtype=bool)]
        why = pd.concat([why, pd.Series("near_duplicate", index=near_idx, dtype=object)])
        ok = ok.assign(is_bot=False)
        kept = ok.loc[~duplicate]
        ok.loc[kept.index, "is_bot"] = cleaning.bot_sessions(kept).to_numpy()
        hits["bot_flagged"] = int(ok.loc[~duplicate, "is_bot"].sum())
    return Cleaned(
        clean=ok.loc[~duplicate],
        quarantine=bad,
        duplicate=duplicate,
        rule_hits=hits,
        duplicate_reason=why,
    )


# ------------------------------------------------------------------------------------ batch


def _existing(cur, table: str, checksum: str) -> BatchResult | None:
    cur.execute(
        """SELECT batch_id, rows_read, rows_loaded, rows_quarantined, rows_duplicate,
                          rule_hits, quality
                   FROM ingest_batches
                   WHERE table_name = %s AND checksum = %s AND status = 'loaded'""",
        (table, checksum),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return BatchResult(table, row[0], "already_loaded", *row[1:5], rule_hits=row[5], quality=row[6])


def ingest_frame(
    table: str,
    raw: pd.DataFrame,
    *,
    settings: Settings | None = None,
    source: str,
    file_name: str | None = None,
    checksum: str | None = None,
    pre_rejected: list[dict] | None = None,
    pre_rule_hits: dict[str, int] | None = None,
    write_files: bool = True,
    before_commit: Callable[[object], None] | None = None,
) -> BatchResult:
    """Validate, clean, pseudonymise and load `raw` (text columns of the contract) as one batch.

    `pre_rejected` are rows an adapter already refused ({row_number, reasons, raw}); they are
    part of the batch (read and quarantined). `before_commit` runs inside the transaction just
    before it commits; tests use it to kill the connection mid-batch.
    """
    if table not in RECORD_MODELS:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(RECORD_MODELS)}")
    settings = settings or get_settings()
    pre_rejected = list(pre_rejected or [])
    if not raw.index.is_unique:
        raw = raw.reset_index(drop=True)
    checksum = checksum or frame_checksum(raw)
    rows_read = len(raw) + len(pre_rejected)
    started = datetime.now(UTC)

    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            existing = _existing(cur, table, checksum)
            if existing is not None:
                return existing
            cur.execute(
                """INSERT INTO ingest_batches (source, table_name, file_name, checksum, started_at)
                           VALUES (%s, %s, %s, %s, %s) RETURNING batch_id""",
                (source, table, file_name, checksum, started),
            )
            batch_id = cur.fetchone()[0]
        try:
            result = _load_batch(
                conn,
                table,
                raw,
                batch_id,
                settings,
                source,
                checksum,
                pre_rejected,
                dict(pre_rule_hits or {}),
                rows_read,
                before_commit,
            )
        except Exception as exc:
            _mark_failed(settings, batch_id, exc)
            raise IngestError(
                f"batch {batch_id} ({table}, {file_name or source}) failed and was "
                f"rolled back: {exc}. Fix the cause and run the same command again."
            ) from exc
    finally:
        conn.close()
    if write_files:
        write_report(result.quality, settings.data_dir / "reports", batch_id)
    return result


def _load_batch(
    conn,
    table,
    raw,
    batch_id,
    settings,
    source,
    checksum,
    pre_rejected,
    rule_hits,
    rows_read,
    before_commit,
) -> BatchResult:
    with conn, conn.cursor() as cur:
        # One writer per table at a time: the duplicate check and the load must see the same rows.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cartwise.ingest.{table}",))
        if _existing(cur, table, checksum) is not None:
            raise IngestError("the same data was loaded concurrently by another process")
        validation = validate(table, raw)
        cleaned = clean_rows(table, validation.valid, cur, settings)
        hits = {**rule_hits, **validation.check_counts, **cleaned.rule_hits}

        key = settings.pseudonym_key.get_secret_value()
        rejected = [{**r, "raw": redact(r["raw"], key)} for r in pre_rejected]
        for index, reasons in validation.reasons.items():
            rejected.append(
                {"row_number": int(index), "reasons": reasons, "raw": raw_record(raw, index, key)}
            )
        for index, reasons in cleaned.quarantine.items():
            rejected.append(
                {"row_number": int(index), "reasons": reasons, "raw": raw_record(raw, index, key)}
            )

        clean = cleaned.clean
        if "user_id" in clean.columns:
            clean = clean.assign(
                user_id=pseudonymise_series(
                    clean["user_id"], settings.pseudonym_key.get_secret_value()
                )
            )
        clean = clean[TABLE_COLUMNS[table]]
        written, stored_before = load_clean(cur, table, clean, batch_id)
        already = len(clean) - written
        hits["already_loaded"] = already
        duplicates = cleaning.count(cleaned.duplicate) + already
        duplicate_rows = _duplicate_rows(cleaned.duplicate_reason, stored_before)
        quarantine_rows(cur, batch_id, table, rejected)

        quality = build_quality(
            cur,
            table=table,
            batch_id=batch_id,
            source=source,
            raw=raw,
            clean=clean,
            rejected=rejected,
            rule_hits=hits,
            rows_read=rows_read,
            rows_loaded=written,
            rows_duplicate=duplicates,
        )
        if source == "api":
            # An API request is small (<= 1000 rows): keep which row was a duplicate of what,
            # so a resent request is answered exactly as the first time.
            quality["duplicate_rows"] = duplicate_rows
        cur.execute(
            """UPDATE ingest_batches SET status = 'loaded', rows_read = %s, rows_loaded = %s,
                   rows_quarantined = %s, rows_duplicate = %s, rule_hits = %s, quality = %s,
                   finished_at = now()
               WHERE batch_id = %s""",
            (
                rows_read,
                written,
                len(rejected),
                duplicates,
                json.dumps(hits),
                json.dumps(quality, default=str),
                batch_id,
            ),
        )
        if before_commit is not None:
            before_commit(conn)
    return BatchResult(
        table,
        batch_id,
        "loaded",
        rows_read,
        written,
        len(rejected),
        duplicates,
        rule_hits=hits,
        rejected=rejected,
        clean=clean,
        quality=quality,
        duplicate_rows=duplicate_rows,
    )


def _duplicate_rows(reason: pd.Series | None, stored_before: pd.Index) -> list[dict]:
    rows = [] if reason is None else [(int(i), str(r)) for i, r in reason.items()]
    rows += [(int(i), "already_stored") for i in stored_before]
    return [{"row_number": i, "reason": r} for i, r in sorted(rows)]


def _mark_failed(settings: Settings, batch_id: int, exc: BaseException) -> None:
    try:
        with transaction(settings) as cur:
            cur.execute(
                """UPDATE ingest_batches SET status = 'failed', error = %s, finished_at = now()
                           WHERE batch_id = %s AND status = 'running'""",
                (str(exc)[:2000], batch_id),
            )
    except Exception:  # the database itself may be what failed; the batch stays 'running'
        log.warning("could not mark batch %s as failed", batch_id, exc_info=True)


def ingest_file(
    table: str,
    path: Path | str,
    *,
    settings: Settings | None = None,
    source: str | None = None,
    write_files: bool = True,
) -> BatchResult:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    raw, malformed = read_csv(path)
    return ingest_frame(
        table,
        raw,
        settings=settings,
        source=source or f"file:{table}",
        file_name=path.name,
        checksum=file_checksum(path),
        pre_rejected=malformed,
        pre_rule_hits={"malformed_line": len(malformed)},
        write_files=write_files,
    )


def analyze(results: list[BatchResult], settings: Settings | None = None) -> None:
    """ANALYZE every table the batches loaded rows into. After a bulk COPY the planner's
    statistics still describe the table before it (autovacuum catches up minutes later, or
    not before the next job): at 3M events the ranker label query, planned for 19
    impressions, ran a nested loop over 2M and did not finish in 15 minutes, where the
    analysed 10M-event table took 114 s."""
    tables = sorted({r.table for r in results if r.rows_loaded})
    with transaction(settings) as cur:
        for table in tables:
            cur.execute(f"ANALYZE {table}")  # names from RECORD_MODELS, never user input


# ----------------------------------------------------------------------------- whole sources


def ingest_simulation(
    folder: Path | str, *, settings: Settings | None = None, progress: bool = True
) -> list[BatchResult]:
    """Catalogue first (events must name known items), then users, queries and daily events."""
    folder = Path(folder)
    files = [
        ("items", folder / "items.csv.gz"),
        ("users", folder / "users.csv.gz"),
        ("labelled_queries", folder / "labelled_queries.csv.gz"),
    ]
    files += [("events", p) for p in sorted((folder / "events").glob("*.csv.gz"))]
    missing = [str(p) for _, p in files[:3] if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"not a simulator output folder, missing: {missing}. "
            "Create one with `python -m governance.simulate --out DIR`."
        )
    results = []
    for table, path in tqdm(files, desc="ingest", unit="file", disable=not progress):
        results.append(ingest_file(table, path, settings=settings, source="simulator"))
    analyze(results, settings)
    return results


def ingest_online_retail(
    path: Path | str, *, settings: Settings | None = None
) -> list[BatchResult]:
    """The UCI Online Retail log through its adapter: items, users, then events."""
    path = Path(path)
    checksum = file_checksum(path)
    batch = load_online_retail(path)
    results = [
        ingest_frame(
            "items",
            batch.items,
            settings=settings,
            source="online_retail",
            file_name=path.name,
            checksum=f"{checksum}:items",
        ),
        ingest_frame(
            "users",
            batch.users,
            settings=settings,
            source="online_retail",
            file_name=path.name,
            checksum=f"{checksum}:users",
        ),
    ]
    refused = [
        {"row_number": int(r.row_number), "reasons": list(r.reasons), "raw": r.raw}
        for r in batch.rejected.itertuples()
        if r.table == "events"
    ]
    results.append(
        ingest_frame(
            "events",
            batch.events,
            settings=settings,
            source="online_retail",
            file_name=path.name,
            checksum=f"{checksum}:events",
            pre_rejected=refused,
            pre_rule_hits=batch.rule_hits,
        )
    )
    analyze(results, settings)
    return results


def _print(results: list[BatchResult]) -> None:
    for r in results:
        print(json.dumps(r.summary(), default=str))


def summary(settings: Settings | None = None) -> str:
    """Loaded batches per table and source, with the quarantine reasons: the demo's printout."""
    with transaction(settings) as cur:
        cur.execute("""SELECT table_name, source, count(*), sum(rows_read), sum(rows_loaded),
                              sum(rows_quarantined), sum(rows_duplicate)
                       FROM ingest_batches WHERE status = 'loaded'
                       GROUP BY 1, 2 ORDER BY 2, 1""")
        batches = cur.fetchall()
        cur.execute("""SELECT b.source, r.reason, count(*) FROM quarantine q
                       JOIN ingest_batches b USING (batch_id), unnest(q.reasons) AS r(reason)
                       GROUP BY 1, 2 ORDER BY 1, 3 DESC""")
        reasons = cur.fetchall()
        cur.execute("SELECT count(*) FILTER (WHERE is_bot), count(*) FROM events")
        bots, events = cur.fetchone()
    lines = [
        f"{'source':<15} {'table':<17} {'batches':>7} {'read':>10} {'loaded':>10} "
        f"{'quarantined':>11} {'duplicates':>10}"
    ]
    for table, source, n, read, loaded, quarantined, duplicate in batches:
        lines.append(
            f"{source:<15} {table:<17} {n:>7} {read:>10,} {loaded:>10,} {quarantined:>11,} "
            f"{duplicate:>10,}"
        )
    lines.append(f"\nevents stored: {events:,}, of which flagged as bot traffic: {bots:,}")
    lines.append("\nquarantine reasons (top 8 per source):")
    shown: dict[str, int] = {}
    for source, reason, n in reasons:
        shown[source] = shown.get(source, 0) + 1
        if shown[source] <= 8:
            lines.append(f"  {source:<15} {n:>8,}  {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m governance.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="ingest a simulator output folder")
    sim.add_argument("folder", type=Path, help="folder written by python -m governance.simulate")
    one = sub.add_parser("file", help="ingest one contract CSV")
    one.add_argument("table", choices=sorted(RECORD_MODELS), help="the table the file is for")
    one.add_argument("path", type=Path, help="CSV (or .csv.gz) per docs/data-contract.md")
    retail = sub.add_parser("online-retail", help="ingest the UCI Online Retail CSV")
    retail.add_argument("path", type=Path, help="online_retail.csv or .csv.gz")
    sub.add_parser("summary", help="print loaded batches and quarantine reasons")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    migrate()
    if args.command == "summary":
        print(summary())
    elif args.command == "sim":
        _print(ingest_simulation(args.folder))
    elif args.command == "file":
        results = [ingest_file(args.table, args.path)]
        analyze(results)
        _print(results)
    else:
        _print(ingest_online_retail(args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

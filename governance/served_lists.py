"""Served lists into PostgreSQL through the governed path: validated, audited, quarantined.

    result = store_served_lists(lists, settings)   # one audited batch

A served list is a dict (JSON-able, so the service's logger can spill it to disk unchanged):

    {"list_id", "served_at" (ISO 8601), "endpoint" ('search' | 'recommend'), "user_id"
     (pseudonym or None), "query", "model_tag", "feature_service", "variant", "experiment",
     "shadow_model", "fallback", "items": [{"item_id", "position", "score", "p_click",
     "shadow_score", "features": {name: value}}]}

One call is one `ingest_batches` row (source 'serving', table 'served_lists') and one
transaction: lists that fail `governance.schemas.ServedItemRecord` go to `quarantine` whole, with
every reason; the others land in `served_lists` + `served_items`. Counts are in lists and
reconcile (rows_read = loaded + quarantined + duplicate). Writing the same lists again changes
nothing: an identical batch is found by its checksum, and a list id already stored counts as a
duplicate, so a replay after a lost commit acknowledgement never doubles a list.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa
import psycopg2
from psycopg2.extras import Json, execute_values

from governance.db import libpq_params
from governance.schemas import ServedItemRecord
from governance.settings import Settings

TABLE = "served_lists"
SOURCE = "serving"
LIST_FIELDS = (
    "list_id",
    "served_at",
    "endpoint",
    "user_id",
    "query",
    "model_tag",
    "feature_service",
    "variant",
)
ITEM_FIELDS = ("position", "item_id", "score")


@dataclass
class ServedBatch:
    batch_id: int | None
    status: str  # 'loaded' | 'already_loaded'
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int
    reasons: dict[str, list[str]] = field(default_factory=dict)  # list_id -> reasons

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined + self.rows_duplicate


def flatten(lists: list[dict]) -> tuple[pd.DataFrame, list[int]]:
    """One row per served item, the list's fields repeated; and each row's list index."""
    rows, owner = [], []
    for n, lst in enumerate(lists):
        head = {f: lst.get(f) for f in LIST_FIELDS}
        for item in lst.get("items") or []:
            rows.append({**head, **{f: item.get(f) for f in ITEM_FIELDS}})
            owner.append(n)
    frame = pd.DataFrame(rows, columns=list(LIST_FIELDS) + list(ITEM_FIELDS))
    return frame, owner


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in LIST_FIELDS + ("item_id",):
        if col != "served_at":
            out[col] = out[col].astype("string[pyarrow]")
    out["served_at"] = pd.to_datetime(out["served_at"], utc=True, errors="coerce")
    out["position"] = pd.to_numeric(out["position"], errors="coerce").astype("Int64")
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype("float64")
    return out


def validate_lists(lists: list[dict]) -> dict[int, list[str]]:
    """Reasons per list index, for the lists that are not valid (every reason, lazily)."""
    bad: dict[int, set[str]] = {}
    for n, lst in enumerate(lists):
        if not lst.get("items"):
            bad.setdefault(n, set()).add("no_items")
    frame, owner = flatten(lists)
    if not len(frame):
        return {n: sorted(r) for n, r in bad.items()}
    try:
        ServedItemRecord.validate(_typed(frame), lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        for _, case in cases.iterrows():
            where = case["index"]
            reason = str(case["check"])
            if (
                str(case.get("column")) not in ("None", "nan")
                and case["schema_context"] == "Column"
            ):
                reason = f"{case['column']}: {reason}"
            targets = range(len(lists)) if pd.isna(where) else [owner[int(where)]]
            for n in targets:
                bad.setdefault(n, set()).add(reason)
    return {n: sorted(r) for n, r in bad.items()}


def checksum(lists: list[dict]) -> str:
    ids = sorted(str(lst.get("list_id")) for lst in lists)
    return hashlib.sha256(("served:" + ",".join(ids)).encode()).hexdigest()


def _finite(x):
    """JSON has no NaN: a missing feature value is stored as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    if isinstance(obj, float):
        return _finite(obj)
    return str(obj)


def connect(settings: Settings | None, timeout_s: float):
    params = {k: v for k, v in libpq_params(settings).items() if v != ""}
    return psycopg2.connect(**params, connect_timeout=max(1, int(math.ceil(timeout_s))))


def store_served_lists(
    lists: list[dict], settings: Settings | None = None, *, timeout_s: float = 2.0
) -> ServedBatch:
    """Validate and write one batch of served lists; raises psycopg2 errors when PostgreSQL
    is unreachable (the caller keeps the lists and retries: nothing was written)."""
    bad = validate_lists(lists)
    digest = checksum(lists)
    conn = connect(settings, timeout_s)
    try:
        with conn, conn.cursor() as cur:
            # Bound every statement: a hung server must not hold the logger forever.
            cur.execute("SET LOCAL statement_timeout = %s", (int(timeout_s * 5000),))
            cur.execute(
                "SELECT batch_id FROM ingest_batches WHERE table_name = %s AND checksum = %s "
                "AND status = 'loaded'",
                (TABLE, digest),
            )
            row = cur.fetchone()
            if row:
                return ServedBatch(row[0], "already_loaded", len(lists), 0, 0, len(lists))
            cur.execute(
                "INSERT INTO ingest_batches (source, table_name, checksum) VALUES (%s, %s, %s) "
                "RETURNING batch_id",
                (SOURCE, TABLE, digest),
            )
            batch_id = cur.fetchone()[0]
            _quarantine(cur, batch_id, lists, bad)
            good = [lst for n, lst in enumerate(lists) if n not in bad]
            loaded = _insert(cur, batch_id, good)
            result = ServedBatch(
                batch_id,
                "loaded",
                len(lists),
                loaded,
                len(bad),
                len(good) - loaded,
                {str(lists[n].get("list_id")): r for n, r in bad.items()},
            )
            hits = {}
            for reasons in bad.values():
                for r in reasons:
                    hits[r] = hits.get(r, 0) + 1
            cur.execute(
                """UPDATE ingest_batches SET status = 'loaded', rows_read = %s, rows_loaded = %s,
                          rows_quarantined = %s, rows_duplicate = %s, rule_hits = %s,
                          finished_at = now()
                   WHERE batch_id = %s""",
                (
                    result.rows_read,
                    result.rows_loaded,
                    result.rows_quarantined,
                    result.rows_duplicate,
                    Json(hits),
                    batch_id,
                ),
            )
            return result
    finally:
        conn.close()


def _quarantine(cur, batch_id: int, lists: list[dict], bad: dict[int, list[str]]) -> None:
    if not bad:
        return
    execute_values(
        cur,
        "INSERT INTO quarantine (batch_id, table_name, row_number, raw, reasons) VALUES %s",
        [(batch_id, TABLE, n, Json(json_safe(lists[n])), r) for n, r in sorted(bad.items())],
    )


def _insert(cur, batch_id: int, lists: list[dict]) -> int:
    """Insert the lists not stored yet; returns how many were new."""
    if not lists:
        return 0
    heads = [
        (
            lst["list_id"],
            lst["served_at"],
            lst["endpoint"],
            lst.get("user_id"),
            lst.get("query"),
            lst["model_tag"],
            lst["feature_service"],
            lst["variant"],
            lst.get("experiment"),
            lst.get("shadow_model"),
            bool(lst.get("fallback")),
            len(lst["items"]),
            batch_id,
        )
        for lst in lists
    ]
    new = execute_values(
        cur,
        """INSERT INTO served_lists (list_id, served_at, endpoint, user_id, query, model_tag,
                  feature_service, variant, experiment, shadow_model, fallback, n_items, batch_id)
           VALUES %s ON CONFLICT (list_id) DO NOTHING RETURNING list_id""",
        heads,
        fetch=True,
    )
    new_ids = {r[0] for r in new}
    items = [
        (
            lst["list_id"],
            int(it["position"]),
            it["item_id"],
            float(it["score"]),
            _finite(it.get("p_click")),
            _finite(it.get("shadow_score")),
            None
            if it.get("features") is None
            else Json({k: _finite(v) for k, v in it["features"].items()}),
        )
        for lst in lists
        if lst["list_id"] in new_ids
        for it in lst["items"]
    ]
    if items:
        execute_values(
            cur,
            """INSERT INTO served_items (list_id, position, item_id, score, p_click,
                      shadow_score, features) VALUES %s""",
            items,
            page_size=1000,
        )
    return len(new_ids)

"""COPY into the governed tables: users and items upserted, events and labels appended once."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

KEYS = {
    "users": ["user_id"],
    "items": ["item_id"],
    "events": ["event_id"],
    "labelled_queries": ["query", "intent", "category"],
}


# Later batches may correct users and items (a new price, a fixed title); events are immutable.
UPSERT = {"users": True, "items": True, "events": False, "labelled_queries": False}


def _to_csv_bytes(frame: pd.DataFrame) -> io.BytesIO:
    """pyarrow's CSV writer: an order of magnitude faster than pandas.to_csv at a million rows."""
    converted = {}
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            converted[name] = pa.array(col.dt.tz_convert("UTC").astype("datetime64[us, UTC]"))
        else:
            converted[name] = pa.array(col, from_pandas=True)
    buffer = io.BytesIO()
    pacsv.write_csv(
        pa.table(converted),
        buffer,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    buffer.seek(0)
    return buffer


def copy_rows(cur, table: str, frame: pd.DataFrame) -> None:
    columns = ", ".join(frame.columns)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", _to_csv_bytes(frame))


def load_clean(cur, table: str, frame: pd.DataFrame, batch_id: int) -> tuple[int, pd.Index]:
    """Load rows; returns how many were written and, for events, the index of the rows that
    were already stored (an event id of an earlier batch)."""
    frame = frame.assign(batch_id=batch_id)
    if table == "events":
        # Events are immutable: ids already stored are duplicates of an earlier batch.
        cur.execute("CREATE TEMP TABLE incoming_ids (event_id text) ON COMMIT DROP")
        copy_rows(cur, "incoming_ids", frame[["event_id"]])
        cur.execute("SELECT i.event_id FROM incoming_ids i JOIN events e USING (event_id)")
        stored = {r[0] for r in cur.fetchall()}
        already = frame.index[frame["event_id"].isin(stored).to_numpy(dtype=bool)]
        if stored:
            frame = frame.loc[~frame["event_id"].isin(stored)]
        copy_rows(cur, "events", frame)
        return len(frame), already
    columns = list(frame.columns)
    cur.execute(f"CREATE TEMP TABLE staging (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    copy_rows(cur, "staging", frame)
    key = ", ".join(KEYS[table])
    if UPSERT[table]:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in KEYS[table])
        extra = ", updated_at = now()" if table == "items" else ""
        action = f"DO UPDATE SET {updates}{extra}"
    else:
        action = "DO NOTHING"
    cols = ", ".join(columns)
    cur.execute(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM staging ON CONFLICT ({key}) {action}"
    )
    return cur.rowcount, pd.Index([])

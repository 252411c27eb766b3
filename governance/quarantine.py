"""Quarantined rows as they may be stored: personal data dropped, user ids pseudonymised, any
raw value (NUL, lone surrogates) made storable in JSONB, with the reasons it was refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from governance.loading import copy_rows
from governance.privacy import pseudonymise
from governance.schemas import PII_COLUMNS


def quarantine_rows(cur, batch_id: int, table: str, rejected: list[dict]) -> None:
    if not rejected:
        return
    frame = pd.DataFrame(
        {
            "batch_id": batch_id,
            "table_name": table,
            "row_number": [r.get("row_number") for r in rejected],
            "raw": [json.dumps(r["raw"], default=str) for r in rejected],
            "reasons": [
                "{" + ",".join(json.dumps(x) for x in r["reasons"]) + "}" for r in rejected
            ],
        }
    )
    frame["row_number"] = frame["row_number"].astype("Int64")
    copy_rows(cur, "quarantine", frame)


def storable(value):
    """A raw value as JSONB can hold it: NUL and lone surrogates (which a quarantined row may
    carry: they are why it was refused) become visible backslash escapes."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    return value


def redact(record: dict, key: str) -> dict:
    """What of a raw row may be stored: personal data dropped, the shop's user id pseudonymised."""
    out = {}
    for name, value in record.items():
        if name in PII_COLUMNS:
            continue
        value = storable(value)
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            value = None
        elif name == "user_id" and str(value).strip():
            value = pseudonymise(str(value).strip(), key)
        out[name] = value
    return out


def raw_record(raw: pd.DataFrame, index, key: str) -> dict:
    return redact(raw.loc[index].to_dict(), key)

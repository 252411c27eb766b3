"""Raw contract files as the ingest reads them: every line kept, as text, with its number.

A line with the wrong number of fields comes back apart, for quarantine, never skipped; the
checksums make a file (or an in-memory batch) load once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from governance.quarantine import storable


def read_csv(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Read a contract CSV as text, indexed by line number (the header is line 1).

    A line with the wrong number of fields is returned apart, for quarantine, never skipped.
    """
    malformed: list[dict] = []

    def keep_malformed(row) -> str:
        malformed.append(
            {
                "row_number": row.number,
                "reasons": [
                    f"malformed_line: expected {row.expected_columns} fields, "
                    f"got {row.actual_columns}"
                ],
                "raw": _fields_of(row.text, names),
            }
        )
        return "skip"

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        header = fh.readline().strip()
    names = next(csv.reader([header]))
    frame = pacsv.read_csv(
        path,
        # single-threaded so the invalid-row handler sees line numbers
        read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(invalid_row_handler=keep_malformed),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    ).to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    bad_lines = {m["row_number"] for m in malformed if m["row_number"] is not None}
    lines = np.arange(2, len(frame) + len(malformed) + 2)
    frame.index = pd.Index(lines[~np.isin(lines, list(bad_lines))][: len(frame)], name="line")
    return frame, malformed


def _fields_of(line: str, names: list[str]) -> dict:
    """A malformed line as named fields (extras numbered), so it can be redacted like any row."""
    fields = next(csv.reader([line]), [])
    return {(names[i] if i < len(names) else f"extra_{i}"): v for i, v in enumerate(fields)}


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frame_checksum(frame: pd.DataFrame) -> str:
    try:
        hashed = pd.util.hash_pandas_object(frame.astype("string"), index=False).to_numpy()
    except UnicodeEncodeError:  # a lone surrogate (refused per row later): hash its escape
        escaped = frame.astype("string").map(storable, na_action="ignore")
        hashed = pd.util.hash_pandas_object(escaped, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()

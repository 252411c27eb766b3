"""PostgreSQL <-> Arrow for training frames: COPY as CSV into Arrow kernels, vectors as matrices.

Nothing here makes a Python object per value: tables travel as CSV (timestamps as epoch
microseconds, arrays as their text) and are parsed by Arrow; real[] text becomes a float32
matrix (`VectorBatch`) through Arrow's split and cast kernels.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from features.frame_sql import q
from features.similarity import VectorBatch

TIMESTAMP_OIDS = {1184: "UTC", 1114: None}  # timestamptz, timestamp
ARRAY_OIDS = {1021, 1022, 1007, 1016, 1009}  # float4[], float8[], int4[], int8[], text[]
PARSE = pacsv.ParseOptions(newlines_in_values=True)  # titles and queries may hold newlines


def copy_csv(cur, sql: str) -> io.BytesIO:
    buf = io.BytesIO()
    with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for block in copy:
            buf.write(block)
    buf.seek(0)
    return buf


def read_csv(buf: io.BytesIO, names: list[str], types: dict, **convert) -> pa.Table:
    """CSV from COPY as an Arrow table of `types` (an empty table when COPY sent no rows)."""
    if not buf.getbuffer().nbytes:
        return pa.table({n: pa.array([], types[n]) for n in names})
    return pacsv.read_csv(
        buf,
        read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, **convert
        ),
        parse_options=PARSE,
    )


def columns(cur, table: str) -> list[tuple[str, int]]:
    cur.execute(f"SELECT * FROM {q(table)} LIMIT 0")
    return [(c.name, c.type_code) for c in cur.description]


def read_table(cur, table: str, columns: list[tuple[str, int]], where: str = "") -> pa.Table:
    """`columns` of `table` (ordered by __row when it has one) as Arrow, typed as Feast types
    them; timestamps travel as epoch microseconds, arrays as their text."""
    # Feast is heavy to import (seconds): only code that opens a store pays for it.
    from feast.type_map import pg_type_code_to_arrow

    select, types = [], {}
    for name, oid in columns:
        if oid in TIMESTAMP_OIDS:
            select.append(f"(extract(epoch FROM {q(name)}) * 1000000)::int8")
            types[name] = pa.int64()
        elif oid in ARRAY_OIDS:
            select.append(q(name))
            types[name] = pa.string()
        else:
            select.append(q(name))
            types[name] = pg_type_code_to_arrow(oid)
    order = " ORDER BY __row" if any(n == "__row" for n, _ in columns) else ""
    buf = copy_csv(cur, f"SELECT {', '.join(select)} FROM {q(table)} {where}{order}")
    names = [n for n, _ in columns]
    table_ = read_csv(
        buf,
        names,
        types,
        quoted_strings_can_be_null=False,  # PostgreSQL quotes '' and leaves NULL bare
        true_values=["t"],
        false_values=["f"],
    )
    for name, oid in columns:
        if oid in TIMESTAMP_OIDS:
            col = table_[name].cast(pa.timestamp("us", tz=TIMESTAMP_OIDS[oid]))
            table_ = table_.set_column(table_.schema.get_field_index(name), name, col)
    return table_


def parse_vectors(texts: pa.ChunkedArray | pa.Array) -> VectorBatch:
    """PostgreSQL real[] text ('{0.1,-2e-05}') to a VectorBatch, in Arrow kernels."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    body = pc.utf8_trim(texts, "{}")
    body = pc.if_else(pc.equal(body, ""), pa.scalar(None, pa.string()), body)
    lists = pc.split_pattern(body, ",").cast(pa.list_(pa.float32()))
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    dim = int(lengths[lengths > 0][0]) if (lengths > 0).any() else 0
    valid = lengths == dim if dim else np.zeros(len(lengths), bool)
    values = np.zeros((len(lengths), dim), np.float32)
    if dim:
        flat = pc.list_flatten(lists.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
        values[valid] = flat.reshape(-1, dim)
    return VectorBatch(values, valid)


def read_vectors(cur, join, chunk_table: str) -> dict[str, tuple[str, VectorBatch]]:
    """A view's vectors of the chunk: output name -> (id column, distinct vectors, row k-1 =
    id k), each distinct vector read once."""
    sql = join.vectors_sql(chunk_table)
    names = [join.vid_col] + [out for _, out in join.vectors]
    types = {n: pa.int64() if n == join.vid_col else pa.string() for n in names}
    got = read_csv(copy_csv(cur, sql), names, types)
    return {out: (join.vid_col, parse_vectors(got[out])) for _, out in join.vectors}


def gather(ids: pa.ChunkedArray, distinct: VectorBatch) -> VectorBatch:
    """Per row: the vector numbered `ids` (1-based; null: the view had no row)."""
    v = pc.fill_null(ids, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(v)
    if distinct.dim == 0 or len(distinct) == 0:
        return VectorBatch(np.zeros((n, distinct.dim), np.float32), np.zeros(n, bool))
    have = v > 0
    idx = np.where(have, v - 1, 0)
    return VectorBatch(distinct.values[idx], have & distinct.valid[idx])


def vector_arrow(batch: VectorBatch) -> pa.Array:
    """A VectorBatch as an Arrow list<float> column (null where not valid)."""
    n, dim = len(batch), batch.dim
    offsets = pa.array(
        np.arange(0, n * dim + 1, dim, dtype=np.int32) if dim else np.zeros(n + 1, np.int32)
    )
    return pa.ListArray.from_arrays(
        offsets, pa.array(batch.values.reshape(-1)), mask=pa.array(~batch.valid)
    )

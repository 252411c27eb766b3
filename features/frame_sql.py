"""SQL of the set-based point-in-time join (features/frames.py runs it chunk by chunk).

Per entity row and feature view: the latest feature row with event_timestamp in
[ts - ttl, ts] (no lower bound for ttl 0), ties broken by the created timestamp, as Feast's
stock join. One `LEFT JOIN LATERAL (... ORDER BY event_timestamp DESC LIMIT 1)` per view, which
PostgreSQL answers from the (entity, event_timestamp) primary keys of the feature tables.

Views with vector (array) features do not return the vectors per row: the lateral returns the
chosen feature row's timestamps, each distinct (key, timestamp) of a chunk gets a number
(`__v_K`), and `vectors_sql` reads every distinct vector once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class ViewJoin:
    """One feature view's part of the join, from Feast's query context."""

    index: int
    ctx: object  # feast offline_utils.FeatureViewQueryContext
    scalars: list[tuple[str, str]] = field(default_factory=list)  # (source column, output name)
    vectors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return f"fv_{self.index}"

    @property
    def ts_col(self) -> str:
        return f"__ts_{self.index}"

    @property
    def cts_col(self) -> str:
        return f"__cts_{self.index}"

    @property
    def vid_col(self) -> str:
        return f"__v_{self.index}"

    def keys(self) -> list[tuple[str, str]]:
        """(feature-table column, entity column) pairs; entity_selections read 'col AS key'."""
        out = []
        for sel in self.ctx.entity_selections:
            src, _, key = sel.partition(" AS ")
            out.append((src.strip(), (key or src).strip()))
        return out

    def _where(self, outer: str, ts_expr: str, exact: bool) -> str:
        ctx = self.ctx
        conds = [f"sub.{q(src)} = {outer}.{q(key)}" for src, key in self.keys()]
        tsf = q(ctx.timestamp_field)
        if exact:
            conds.append(f"sub.{tsf} = {ts_expr}")
            if ctx.created_timestamp_column:
                conds.append(
                    f"sub.{q(ctx.created_timestamp_column)} "
                    f"IS NOT DISTINCT FROM {outer}.{q(self.cts_col)}"
                )
        else:
            conds.append(f"sub.{tsf} <= {ts_expr}")
            if ctx.ttl:
                conds.append(f"sub.{tsf} >= {ts_expr} - {int(ctx.ttl)} * interval '1' second")
        return " AND ".join(conds)

    def _order(self) -> str:
        order = f"sub.{q(self.ctx.timestamp_field)} DESC"
        if self.ctx.created_timestamp_column:
            order += f", sub.{q(self.ctx.created_timestamp_column)} DESC"
        return order

    def lateral(self, ts_col: str) -> tuple[list[str], str]:
        """(select items, join clause) of this view for entity alias `e`."""
        cols = [f"sub.{q(src)} AS {q(out)}" for src, out in self.scalars]
        select = [f"{self.alias}.{q(out)}" for _, out in self.scalars]
        if self.vectors:
            cols.append(f"sub.{q(self.ctx.timestamp_field)} AS {q(self.ts_col)}")
            select.append(f"{self.alias}.{q(self.ts_col)}")
            if self.ctx.created_timestamp_column:
                cols.append(f"sub.{q(self.ctx.created_timestamp_column)} AS {q(self.cts_col)}")
                select.append(f"{self.alias}.{q(self.cts_col)}")
        join = (
            f"LEFT JOIN LATERAL (SELECT {', '.join(cols) or '1 AS _none'} "
            f"FROM {self.ctx.table_subquery} AS sub "
            f"WHERE {self._where('e', f'e.{q(ts_col)}', exact=False)} "
            f"ORDER BY {self._order()} LIMIT 1) AS {self.alias} ON true"
        )
        return select, join

    def vector_id(self) -> str:
        """Number of the distinct (keys, timestamps) of the chunk's row, 1..m; NULL if none."""
        parts = [f"{q(key)}" for _, key in self.keys()] + [q(self.ts_col)]
        if self.ctx.created_timestamp_column:
            parts.append(q(self.cts_col))
        ts = q(self.ts_col)
        return (
            f"CASE WHEN {ts} IS NULL THEN NULL ELSE dense_rank() OVER "
            f"(ORDER BY {ts} IS NULL, {', '.join(parts)}) END AS {q(self.vid_col)}"
        )

    def vectors_sql(self, chunk_table: str) -> str:
        """The chunk's distinct vectors of this view, ordered by their number."""
        keys = [q(key) for _, key in self.keys()] + [q(self.ts_col)]
        if self.ctx.created_timestamp_column:
            keys.append(q(self.cts_col))
        cols = ", ".join(f"sub.{q(src)} AS {q(out)}" for src, out in self.vectors)
        return (
            f"SELECT k.{q(self.vid_col)}, {', '.join(f'v.{q(out)}' for _, out in self.vectors)} "
            f"FROM (SELECT DISTINCT {q(self.vid_col)}, {', '.join(keys)} FROM {chunk_table} "
            f"WHERE {q(self.vid_col)} IS NOT NULL) AS k "
            f"CROSS JOIN LATERAL (SELECT {cols} FROM {self.ctx.table_subquery} AS sub "
            f"WHERE {self._where('k', f'k.{q(self.ts_col)}', exact=True)} "
            f"ORDER BY {self._order()} LIMIT 1) AS v ORDER BY k.{q(self.vid_col)}"
        )


def view_joins(contexts, full_feature_names: bool, is_vector) -> list[ViewJoin]:
    """ViewJoins of Feast's query contexts; `is_vector(view_name, feature)` picks arrays."""
    joins = []
    for k, ctx in enumerate(contexts):
        join = ViewJoin(k, ctx)
        for feature in ctx.features:
            out = ctx.field_mapping.get(feature, feature)
            if full_feature_names:
                out = f"{ctx.name}__{out}"
            (join.vectors if is_vector(ctx.name, feature) else join.scalars).append((feature, out))
        joins.append(join)
    return joins


def chunk_sql(entity_table: str, joins: list[ViewJoin], ts_col: str, lo: int, hi: int) -> str:
    """Rows lo < __row <= hi of the entity table with their point-in-time features."""
    select, froms = ["e.*"], []
    for join in joins:
        cols, clause = join.lateral(ts_col)
        select += cols
        froms.append(clause)
    inner = (
        f"SELECT {', '.join(select)} FROM {q(entity_table)} AS e\n"
        + "\n".join(froms)
        + f"\nWHERE e.__row > {int(lo)} AND e.__row <= {int(hi)}"
    )
    ids = [join.vector_id() for join in joins if join.vectors]
    return f"SELECT j.*{''.join(', ' + i for i in ids)} FROM ({inner}) AS j"

"""The feature SQL, written once for PostgreSQL, turned into Spark SQL steps with sqlglot.

`features/sql/*.sql` is the one source of the feature logic. `spark_steps` parses each file
as PostgreSQL and yields what the Spark pipeline runs:

* `CREATE TEMP TABLE x ON COMMIT DROP AS SELECT ...` -> a `view` step (a cached Spark view);
* `INSERT INTO t [(cols)] SELECT ...` (its WITH clause included) -> an `insert` step, whose
  rows the runner appends to table `t`; ON CONFLICT is dropped (see below);
* `DELETE`, `ANALYZE` and `CREATE INDEX` -> nothing.

The Spark pipeline is a rebuild: every batch in the lake is new and every feature table starts
empty, so the DELETEs of the incremental PostgreSQL run have nothing to delete and no INSERT can
conflict with an earlier row (the session INSERT's DISTINCT ON already keeps one row per key).

Where sqlglot keeps a PostgreSQL construct that Spark reads differently, a rewrite here makes
the meaning identical (each rewrite is exact in both dialects):

* `agg(x) FILTER (WHERE c) OVER w` -> `agg(CASE WHEN c THEN x END) OVER w` (Spark refuses
  FILTER on window aggregates);
* `a / b` -> `CAST(a AS DOUBLE) / CAST(b AS DOUBLE)`: Spark's decimal division keeps only six
  decimal places where PostgreSQL's numeric keeps at least 16 significant digits (the feature
  SQL has no integer division, and stores every quotient as float8);
* `percentile_cont(p) WITHIN GROUP (ORDER BY x)` -> `percentile(x, p)`, Spark's exact
  interpolated percentile (sqlglot writes `percentile_approx`, which is not the same number);
* `extract(epoch FROM t)` -> exact epoch seconds from `unix_micros`, and
  `extract(epoch FROM a - b)` -> the difference of those (Spark has no epoch field), with a
  cast to an integer rounding as PostgreSQL's numeric cast does (Spark's truncates).

`feature_table_schemas` reads the feature tables' columns from the Alembic migration that
creates them, so the Spark tables have the PostgreSQL tables' names and types.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp

MIGRATION = (
    Path(__file__).resolve().parent.parent
    / "governance"
    / "migrations"
    / "versions"
    / "0002_feature_tables.py"
)


@dataclass
class Step:
    """One Spark statement: `view` (cache as `name`) or `insert` (append rows to `name`)."""

    kind: str
    name: str
    sql: str
    columns: list[str] | None = None  # INSERT's column list; None means the table's order
    source: str = ""  # file the statement came from


def bind_params(sql: str, params: dict) -> str:
    """Inline psycopg2's %(name)s parameters as SQL literals (numbers only)."""

    def literal(m: re.Match) -> str:
        value = params[m.group(1)]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"feature SQL parameter {m.group(1)} must be a number: {value!r}")
        return repr(float(value)) if isinstance(value, float) else str(value)

    return re.sub(r"%\((\w+)\)s", literal, sql)


def _is_epoch(node: exp.Expression) -> bool:
    return isinstance(node, exp.Extract) and node.name.lower() == "epoch"


def _epoch_seconds(node: exp.Expression) -> exp.Expression:
    """Epoch seconds of a timestamp, or of a difference of timestamps, from exact microseconds."""
    inner = node.expression
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.Sub):
        micros = exp.Paren(
            this=exp.Sub(
                this=exp.func("unix_micros", _inner(inner.this)),
                expression=exp.func("unix_micros", _inner(inner.expression)),
            )
        )
    else:
        micros = exp.func("unix_micros", _inner(inner))
    return exp.Paren(this=exp.Div(this=micros, expression=exp.Literal.number(1000000)))


def _inner(node: exp.Expression) -> exp.Expression:
    # A node that _rewrite replaces is not descended into: rewrite its parts first.
    return node.copy().transform(_rewrite)


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        order = node.expression.expressions
        if len(order) != 1 or order[0].args.get("desc"):
            raise ValueError("percentile_cont needs one ascending ORDER BY expression")
        return exp.Anonymous(
            this="percentile", expressions=[_inner(order[0].this), node.this.this.copy()]
        )
    if isinstance(node, exp.Div):
        # PostgreSQL divides numerics to >= 16 significant digits (the feature SQL then stores
        # float8); Spark's decimal division keeps only 6 decimal places. Dividing in double
        # precision matches PostgreSQL to ~1e-15.
        return exp.Div(
            this=exp.cast(_inner(node.this), "DOUBLE"),
            expression=exp.cast(_inner(node.expression), "DOUBLE"),
        )
    if isinstance(node, exp.Window) and isinstance(node.this, exp.Filter):
        agg, cond = node.this.this, node.this.expression.this
        arg = agg.this if not isinstance(agg.this, exp.Star) else exp.Literal.number(1)
        case = exp.Case(ifs=[exp.If(this=_inner(cond), true=_inner(arg))])
        new_agg = agg.copy()
        new_agg.set("this", case)
        node = node.copy()
        node.set("this", new_agg)
        return node
    if (
        isinstance(node, exp.Cast)
        and _is_epoch(node.this)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
    ):
        return exp.Cast(this=exp.func("round", _epoch_seconds(node.this)), to=node.to.copy())
    if _is_epoch(node):
        return _epoch_seconds(node)
    return node


def _statements(text: str) -> Iterator[exp.Expression]:
    # Spark has no ON COMMIT: a view lives as long as the run anyway.
    text = re.sub(r"\bON\s+COMMIT\s+DROP\b", "", text, flags=re.IGNORECASE)
    for statement in sqlglot.parse(text, read="postgres"):
        if statement is not None:
            yield statement


def to_spark(node: exp.Expression) -> str:
    return node.transform(_rewrite).sql("spark", unsupported_level=sqlglot.ErrorLevel.RAISE)


def spark_steps(path: Path, params: dict) -> Iterator[Step]:
    """The Spark steps of one feature SQL file."""
    for st in _statements(bind_params(path.read_text(), params)):
        if isinstance(st, exp.Create) and st.kind == "TABLE" and st.expression is not None:
            yield Step("view", st.this.name, to_spark(st.expression), source=path.name)
        elif isinstance(st, exp.Insert):
            select = st.expression.copy()
            if st.args.get("with_"):
                select.set("with_", st.args["with_"].copy())
            target = st.this
            columns = None
            if isinstance(target, exp.Schema):
                columns = [c.name for c in target.expressions]
                target = target.this
            yield Step("insert", target.name, to_spark(select), columns, source=path.name)
        elif isinstance(st, (exp.Delete, exp.Analyze)) or (
            isinstance(st, exp.Create) and st.kind == "INDEX"
        ):
            continue
        else:
            raise ValueError(f"{path.name}: no Spark step for {st.sql('postgres')[:80]!r}")


def written_tables(paths: list[Path], params: dict) -> tuple[str, ...]:
    """The tables the feature SQL files INSERT into, in the order they are first written."""
    tables: dict[str, None] = {}
    for path in paths:
        for step in spark_steps(path, params):
            if step.kind == "insert":
                tables.setdefault(step.name)
    return tuple(tables)


def feature_table_schemas() -> dict[str, list[tuple[str, str]]]:
    """(column, Spark type) per feature table, from the migration's CREATE TABLE statements."""
    tree = ast.parse(MIGRATION.read_text())
    ddl = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "CREATE TABLE" in node.value
    )
    schemas = {}
    for st in sqlglot.parse(ddl, read="postgres"):
        if isinstance(st, exp.Create) and st.kind == "TABLE":
            cols = [
                (c.name, c.args["kind"].sql("spark"))
                for c in st.this.expressions
                if isinstance(c, exp.ColumnDef)
            ]
            schemas[st.this.this.name] = cols
    return schemas

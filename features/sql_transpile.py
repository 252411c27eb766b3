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

Two rewrites are for the plan, not the meaning:

* `_decorrelate_lateral`: a `LEFT JOIN LATERAL` that aggregates the first k rows of a
  correlated `ORDER BY ... LIMIT k` becomes a join with `row_number()`. Spark decorrelates the
  LATERAL by itself, but it pairs the correlated rows of a non-equality predicate
  (`(p.ts, p.id) <= (s.ts, s.id)`) with every row of the inner table in a CartesianProduct, so
  the session step grew with the square of all events (97 s of a 169 s run at 20k events,
  unfinished at 300k). Rewritten, the equality predicates are hash keys and each row meets
  only its own key's rows, as PostgreSQL's index scan does.
* `_sliding_sums`: `sum(x) OVER (... ORDER BY t RANGE BETWEEN w PRECEDING AND CURRENT ROW)`
  becomes the running sum up to the row minus the running sum up to `t - w - 1 microsecond`
  (NULL where the frame holds no non-NULL x, as sum's). PostgreSQL slides such a frame by
  adding the entering row and subtracting the leaving one; Spark sums the whole frame again for
  every row, so a 30-day frame over an item's hourly rows cost up to 720 additions per row
  and aggregate (item_features was 41 s of the 261 s Spark run at 1M events). Running sums are
  one addition per row. Exact for integer and numeric sums (the feature SQL's windowed sums are
  all counts) with a non-NULL ascending order key; a float sum would differ by rounding.

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


# Aggregates that return NULL over no rows, as a LEFT JOIN's missing row does.
_NULL_ON_EMPTY = (exp.GroupConcat, exp.Max, exp.Min, exp.Sum, exp.Avg, exp.ArrayAgg)


def _lateral_parts(join: exp.Join):
    """(body, limited) of `LEFT JOIN LATERAL (SELECT aggs FROM (SELECT ... LIMIT k) x) ON true`,
    or None for any other shape (left to Spark's own decorrelation)."""
    lateral = join.this
    if not (
        isinstance(lateral, exp.Lateral)
        and isinstance(lateral.this, exp.Subquery)
        and join.side in ("", "LEFT")
        and join.args.get("on") in (None, exp.true())
        and lateral.alias
    ):
        return None
    body = lateral.this.this
    if not isinstance(body, exp.Select) or body.args.get("joins"):
        return None
    for key in ("where", "group", "having", "limit", "order", "distinct", "qualify"):
        if body.args.get(key):
            return None
    if not all(
        isinstance(e, exp.Alias) and isinstance(e.this, _NULL_ON_EMPTY) for e in body.expressions
    ):
        return None
    source = body.args["from_"].this
    if not isinstance(source, exp.Subquery) or not isinstance(source.this, exp.Select):
        return None
    limited = source.this
    limit = limited.args.get("limit")
    if not (limit and isinstance(limit.expression, exp.Literal) and limited.args.get("where")):
        return None
    for key in ("group", "having", "distinct", "qualify", "offset", "with_"):
        if limited.args.get(key):
            return None
    if any(isinstance(e, exp.Star) for e in limited.expressions):
        return None
    return body, limited


def _decorrelate_lateral(node: exp.Expression) -> exp.Expression:
    """`s LEFT JOIN LATERAL (SELECT aggs FROM (SELECT cols FROM t p WHERE pred ORDER BY o
    LIMIT k) x) lv ON true` -> `s LEFT JOIN (SELECT keys, aggs FROM (SELECT cols, keys,
    row_number() OVER (PARTITION BY keys ORDER BY o) FROM t p, (SELECT DISTINCT keys FROM s)
    s WHERE pred) x WHERE rn <= k GROUP BY keys) lv ON lv.keys <=> s.keys`, where keys are the
    outer columns the LATERAL reads. Exact: each outer row gets the aggregates of the same k
    rows, and no row (NULL aggregates) where the LATERAL's aggregates are over no rows."""
    if not isinstance(node, exp.Select) or not node.args.get("joins"):
        return node
    for i, join in enumerate(node.args["joins"]):
        parts = _lateral_parts(join)
        if parts is None:
            continue
        body, limited = parts
        inner = {t.alias_or_name for t in join.this.this.find_all(exp.Table, exp.Subquery)}
        inner |= {a.name for a in join.this.this.find_all(exp.TableAlias)}
        refs = [c for c in join.this.find_all(exp.Column) if c.table and c.table not in inner]
        where = limited.args["where"]
        if not refs or any(c.find_ancestor(exp.Where) is not where for c in refs):
            continue  # correlated outside the limited WHERE: not this shape
        outer_alias = refs[0].table
        if any(c.table != outer_alias for c in refs):
            continue
        sources = [node.args["from_"].this] + [j.this for j in node.args["joins"][:i]]
        outer = next((t for t in sources if t.alias_or_name == outer_alias), None)
        if not isinstance(outer, (exp.Table, exp.Subquery)):
            continue
        keys = list(dict.fromkeys(c.name for c in refs))
        key_names = [f"_lateral_{k}" for k in keys]
        domain = (
            exp.select(*[exp.column(k, outer_alias) for k in keys])
            .distinct()
            .from_(outer.copy())
            .subquery(outer_alias)
        )
        order = limited.args.get("order")
        rank = exp.Window(
            this=exp.RowNumber(),
            partition_by=[exp.column(k, outer_alias) for k in keys],
            order=order.copy() if order else None,
        )
        ranked = limited.copy()
        ranked.set("limit", None)
        ranked.set("order", None)
        ranked = ranked.select(
            *[exp.column(k, outer_alias).as_(n) for k, n in zip(keys, key_names)],
            exp.alias_(rank, "_lateral_rn"),
        ).join(domain, join_type="CROSS")
        x = body.args["from_"].this.alias
        first_k = (
            exp.select("*")
            .from_(ranked.subquery("_ranked"))
            .where(exp.column("_lateral_rn") <= limited.args["limit"].expression.copy())
        )
        grouped = body.copy()
        grouped.set("from_", exp.From(this=first_k.subquery(x)))
        grouped.set("expressions", [exp.column(n, x) for n in key_names] + grouped.expressions)
        grouped.set("group", exp.Group(expressions=[exp.column(n, x) for n in key_names]))
        lv = join.this.alias
        on = exp.and_(
            *[
                exp.NullSafeEQ(this=exp.column(n, lv), expression=exp.column(k, outer_alias))
                for k, n in zip(keys, key_names)
            ]
        )
        node = node.copy()
        node.args["joins"][i] = exp.Join(this=grouped.subquery(lv), side="LEFT", on=on)
        node.args["joins"][i].parent = node
        return _decorrelate_lateral(node)
    return node


_MICROS = {"SECOND": 10**6, "MINUTE": 60 * 10**6, "HOUR": 3600 * 10**6, "DAY": 86400 * 10**6}


def _interval_micros(node: exp.Expression) -> int | None:
    """Microseconds of a literal day-time interval (`interval '167 hours'`), else None."""
    if not isinstance(node, exp.Interval) or not isinstance(node.this, exp.Literal):
        return None
    value, unit = node.this.name.strip(), node.unit.name.upper() if node.unit else ""
    if not unit and " " in value:
        value, unit = value.split(None, 1)
    unit = unit.upper().rstrip("S")
    if unit not in _MICROS or not re.fullmatch(r"\d+", value):
        return None
    return int(value) * _MICROS[unit]


def _sliding_sum(window: exp.Window, named: dict[str, exp.Window]) -> exp.Expression | None:
    """The running-sum form of a `sum(x) OVER (RANGE BETWEEN w PRECEDING AND CURRENT ROW)`."""
    if not isinstance(window.this, exp.Sum) or window.this.find(exp.Distinct):
        return None
    spec_of = window
    if not window.args.get("spec") and window.alias and window.alias in named:
        if window.args.get("partition_by") or window.args.get("order"):
            return None
        spec_of = named[window.alias]
    spec, order = spec_of.args.get("spec"), spec_of.args.get("order")
    if not (
        spec
        and order
        and len(order.expressions) == 1
        and not order.expressions[0].args.get("desc")
        and str(spec.args.get("kind", "")).upper() == "RANGE"
        and str(spec.args.get("start_side", "")).upper() == "PRECEDING"
        and str(spec.args.get("end", "")).upper() == "CURRENT ROW"
    ):
        return None
    width = _interval_micros(spec.args.get("start"))
    if width is None:
        return None
    before = exp.Interval(this=exp.Literal.string(str(width + 1)), unit=exp.var("MICROSECOND"))

    def over(agg: exp.Expression, end, end_side=None) -> exp.Window:
        frame = exp.WindowSpec(
            kind="RANGE", start="UNBOUNDED", start_side="PRECEDING", end=end, end_side=end_side
        )
        return exp.Window(
            this=agg,
            partition_by=[p.copy() for p in spec_of.args.get("partition_by") or []],
            order=order.copy(),
            spec=frame,
        )

    x = window.this.this
    upto = over(exp.Sum(this=x.copy()), "CURRENT ROW")
    prior = over(exp.Sum(this=x.copy()), before, "PRECEDING")
    n_upto = over(exp.Count(this=x.copy()), "CURRENT ROW")
    n_prior = over(exp.Count(this=x.copy()), before.copy(), "PRECEDING")
    zero = exp.Literal.number(0)
    return exp.Paren(
        this=exp.Case(
            ifs=[
                exp.If(
                    this=exp.GT(
                        this=exp.Sub(
                            this=n_upto, expression=exp.Coalesce(this=n_prior, expressions=[zero])
                        ),
                        expression=zero.copy(),
                    ),
                    true=exp.Sub(
                        this=upto, expression=exp.Coalesce(this=prior, expressions=[zero.copy()])
                    ),
                )
            ]
        )
    )


def _sliding_sums(node: exp.Expression) -> exp.Expression:
    """Every sliding RANGE sum of a SELECT as a difference of running sums (see the module)."""
    if not isinstance(node, exp.Select):
        return node
    named = {w.name: w for w in node.args.get("windows") or []}
    changed = False
    for window in list(node.find_all(exp.Window)):
        if window.find_ancestor(exp.Select) is not node or window.parent is None:
            continue
        if window.parent.arg_key == "windows" or isinstance(window.this, exp.Identifier):
            continue  # a named window's definition
        new = _sliding_sum(window, named)
        if new is not None:
            window.replace(new)
            changed = True
    if changed:
        used = {w.alias for w in node.find_all(exp.Window) if w.alias and not w.args.get("spec")}
        kept = [w for w in node.args.get("windows") or [] if w.name in used]
        node.set("windows", kept or None)
    return node


def _statements(text: str) -> Iterator[exp.Expression]:
    # Spark has no ON COMMIT: a view lives as long as the run anyway.
    text = re.sub(r"\bON\s+COMMIT\s+DROP\b", "", text, flags=re.IGNORECASE)
    for statement in sqlglot.parse(text, read="postgres"):
        if statement is not None:
            yield statement


def to_spark(node: exp.Expression) -> str:
    node = node.transform(_decorrelate_lateral).transform(_sliding_sums).transform(_rewrite)
    return node.sql("spark", unsupported_level=sqlglot.ErrorLevel.RAISE)


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

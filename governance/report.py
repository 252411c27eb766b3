"""Quality report per batch: JSON for machines, Markdown for people.

Counts and reconciliation, rule hits, null rates, value distributions and their drift
against the previous loaded batch of the same table, and examples of quarantined rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORICAL = {
    "events": ["event_type"],
    "items": ["category"],
    "users": ["country"],
    "labelled_queries": ["intent"],
}
NUMERIC = {"events": ["price", "quantity", "position"], "items": ["price"]}
EXAMPLES_PER_REASON = 3
PSI_ALERT = 0.2  # population stability index above which a distribution has shifted


def _null_rates(raw: pd.DataFrame) -> dict[str, float]:
    if raw.empty:
        return {}
    # Readers give None for empty fields, so isna is the whole test (stripping costs seconds).
    return {c: round(float(raw[c].isna().mean()), 6) for c in raw.columns}


def _distributions(table: str, clean: pd.DataFrame) -> dict:
    out: dict[str, dict] = {}
    for column in CATEGORICAL.get(table, []):
        if column in clean and len(clean):
            shares = clean[column].fillna("<null>").value_counts(normalize=True).head(30)
            out[column] = {
                "kind": "categorical",
                "shares": {k: round(float(v), 6) for k, v in shares.items()},
            }
    for column in NUMERIC.get(table, []):
        values = pd.to_numeric(clean.get(column), errors="coerce") if column in clean else None
        if values is not None and values.notna().any():
            q = values.quantile([0.05, 0.5, 0.95])
            out[column] = {
                "kind": "numeric",
                "mean": float(values.mean()),
                "p05": float(q[0.05]),
                "p50": float(q[0.5]),
                "p95": float(q[0.95]),
                "count": int(values.notna().sum()),
            }
    return out


def psi(current: dict[str, float], previous: dict[str, float]) -> float:
    """Population stability index between two share tables."""
    keys = set(current) | set(previous)
    eps = 1e-4
    a = np.array([max(current.get(k, 0.0), eps) for k in keys])
    b = np.array([max(previous.get(k, 0.0), eps) for k in keys])
    return float(np.sum((a - b) * np.log(a / b)))


def drift(now: dict, before: dict | None) -> dict:
    if not before:
        return {"previous_batch": None}
    out: dict = {"previous_batch": before.get("batch_id"), "columns": {}}
    for column, dist in now.get("distributions", {}).items():
        old = before.get("distributions", {}).get(column)
        if not old:
            continue
        if dist["kind"] == "categorical":
            value = psi(dist["shares"], old["shares"])
            out["columns"][column] = {"psi": round(value, 4), "shifted": value > PSI_ALERT}
        else:
            change = (dist["p50"] - old["p50"]) / old["p50"] if old["p50"] else None
            out["columns"][column] = {
                "median_change": None if change is None else round(change, 4),
                "shifted": change is not None and abs(change) > 0.25,
            }
    nulls = now.get("null_rates", {})
    out["null_rate_change"] = {
        c: round(nulls[c] - before.get("null_rates", {}).get(c, 0.0), 6)
        for c in nulls
        if c in before.get("null_rates", {})
    }
    return out


def build_quality(
    cur,
    *,
    table,
    batch_id,
    source,
    raw,
    clean,
    rejected,
    rule_hits,
    rows_read,
    rows_loaded,
    rows_duplicate,
) -> dict:
    by_reason: dict[str, list] = {}
    reason_counts: dict[str, int] = {}
    for row in rejected:
        for reason in row["reasons"]:
            reason_counts[reason] = reason_counts.get(reason, 0) + 1
            examples = by_reason.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"row_number": row.get("row_number"), "raw": row["raw"]})
    quality = {
        "batch_id": batch_id,
        "table": table,
        "source": source,
        "counts": {
            "rows_read": rows_read,
            "rows_loaded": rows_loaded,
            "rows_quarantined": len(rejected),
            "rows_duplicate": rows_duplicate,
            "reconciles": rows_read == rows_loaded + len(rejected) + rows_duplicate,
        },
        "rule_hits": {k: int(v) for k, v in sorted(rule_hits.items()) if v},
        "quarantine_reasons": reason_counts,
        "null_rates": _null_rates(raw),
        "distributions": _distributions(table, clean),
        "examples": by_reason,
    }
    cur.execute(
        """SELECT quality FROM ingest_batches WHERE table_name = %s AND status = 'loaded'
                   AND source = %s AND batch_id < %s ORDER BY batch_id DESC LIMIT 1""",
        (table, source, batch_id),
    )
    previous = cur.fetchone()
    quality["drift"] = drift(quality, previous[0] if previous else None)
    return quality


def to_markdown(quality: dict) -> str:
    c = quality["counts"]
    lines = [
        f"# Batch {quality['batch_id']}: {quality['table']} from {quality['source']}",
        "",
        "| read | loaded | quarantined | duplicates | reconciles |",
        "|---:|---:|---:|---:|:---:|",
        f"| {c['rows_read']:,} | {c['rows_loaded']:,} | {c['rows_quarantined']:,} | "
        f"{c['rows_duplicate']:,} | {'yes' if c['reconciles'] else '**NO**'} |",
        "",
        "## Rule hits",
        "",
        "| rule | rows |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in quality["rule_hits"].items()],
        "",
        "## Null rates (raw input)",
        "",
        "| column | null share |",
        "|---|---:|",
        *[f"| {k} | {v:.2%} |" for k, v in quality["null_rates"].items()],
        "",
        "## Distributions and drift",
        "",
    ]
    d = quality.get("drift", {})
    lines.append(
        f"Compared with batch {d.get('previous_batch')}."
        if d.get("previous_batch")
        else "First batch of this table and source: nothing to compare with."
    )
    lines.append("")
    for column, dist in quality["distributions"].items():
        shift = d.get("columns", {}).get(column, {})
        flag = " **shifted**" if shift.get("shifted") else ""
        if dist["kind"] == "categorical":
            shares = ", ".join(f"{k} {v:.1%}" for k, v in list(dist["shares"].items())[:10])
            lines.append(
                f"- `{column}`: {shares}" + (f" (PSI {shift['psi']}){flag}" if shift else "")
            )
        else:
            lines.append(
                f"- `{column}`: mean {dist['mean']:.2f}, p05 {dist['p05']:.2f}, "
                f"p50 {dist['p50']:.2f}, p95 {dist['p95']:.2f}"
                + (f" (median change {shift.get('median_change')}){flag}" if shift else "")
            )
    lines += ["", "## Quarantined rows by reason (examples)", ""]
    for reason, examples in quality["examples"].items():
        lines.append(f"### {reason} ({quality['quarantine_reasons'][reason]:,} rows)")
        for ex in examples:
            lines.append(f"- row {ex['row_number']}: `{json.dumps(ex['raw'], default=str)[:300]}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_report(quality: dict, folder: Path, batch_id: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"batch-{batch_id}.json"
    md_path = folder / f"batch-{batch_id}.md"
    json_path.write_text(json.dumps(quality, indent=2, default=str))
    md_path.write_text(to_markdown(quality))
    return json_path, md_path

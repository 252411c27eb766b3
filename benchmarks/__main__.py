"""Run the benchmarks and write benchmarks/results/latest.json.

    python -m benchmarks [--only ingest training features serving loop]

Each record is {name, value, unit, baseline_value, ratio, params}: a measurement next to a
baseline run in the same process or run, since absolute timings on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

SUITES = ["ingest", "training", "features", "serving", "loop"]
RESULTS = Path(__file__).parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SUITES,
        default=SUITES,
        help=f"suites to run (default: all of {' '.join(SUITES)})",
    )
    args = parser.parse_args(argv)
    records: list[dict] = []
    for suite in args.only:
        module = importlib.import_module(f"benchmarks.bench_{suite}")
        print(f"== {suite}", flush=True)
        for rec in module.run_all():
            print(json.dumps(rec), flush=True)
            records.append(rec)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # A partial run (--only) replaces its own records and keeps the others' latest ones.
    if RESULTS.exists() and set(args.only) != set(SUITES):
        ran = {r["name"] for r in records}
        kept = [r for r in json.loads(RESULTS.read_text())["records"] if r["name"] not in ran]
        records = kept + records
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": platform.node(),
                "python": platform.python_version(),
                "records": records,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

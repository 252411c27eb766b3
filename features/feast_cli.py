"""Run the feast CLI on feature_repo/ with cartwise's environment set.

    python -m features.feast_cli apply
    python -m features.feast_cli plan
    python -m features.feast_cli materialize-incremental [END_TS]     # default END_TS: now
    python -m features.feast_cli materialize START_TS END_TS [--chunk-hours H] [--views V ...]
    python -m features.feast_cli ui [--port 8888]
    python -m features.feast_cli env        # print the exports (same as governance.db env)

Anything else is passed through to `feast` unchanged.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from features.feast_store import (
    REPO_PATH,
    feast_environ,
    get_store,
    materialize_chunked,
    materialize_incremental,
)


def _utc(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _materialize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m features.feast_cli materialize",
        description="Load the online store with each entity's latest row in [START, END], "
        "one window at a time (bounded memory).",
    )
    p.add_argument("start", help="window start, ISO 8601 (UTC when no offset)")
    p.add_argument("end", help="window end, ISO 8601 (UTC when no offset)")
    p.add_argument(
        "--chunk-hours",
        type=float,
        default=24.0,
        help="hours per window; memory holds one window's rows (default: 24)",
    )
    p.add_argument(
        "--views",
        "-v",
        nargs="+",
        default=None,
        help="feature views to load, as the feast CLI's -v (default: all online)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0

    env = feast_environ()
    if argv[0] == "env":
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if argv[0] == "materialize-incremental":
        # In process: views without a TTL get their first load from the epoch (see
        # features.feast_store.materialize_incremental), which the feast CLI cannot do.
        end = datetime.fromisoformat(argv[1]) if len(argv) > 1 else datetime.now(UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        full = materialize_incremental(get_store(), end.replace(microsecond=0))
        if full:
            print(f"first load from the epoch (no TTL): {', '.join(full)}")
        return 0
    if argv[0] == "materialize":
        # In process and a window at a time (features.feast_store.materialize_chunked): the
        # feast CLI pulls the whole range into memory at once.
        args = _materialize_parser().parse_args(argv[1:])
        n = materialize_chunked(
            get_store(),
            _utc(args.start),
            _utc(args.end),
            timedelta(hours=args.chunk_hours),
            views=args.views,
        )
        print(f"materialised {args.start} .. {args.end} in {n} windows")
        return 0
    feast = shutil.which("feast", path=str(Path(sys.executable).parent)) or "feast"
    return subprocess.call([feast, *argv], cwd=REPO_PATH, env={**os.environ, **env})


if __name__ == "__main__":
    raise SystemExit(main())

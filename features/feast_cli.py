"""Run the feast CLI on feature_repo/ with cartwise's environment set.

    python -m features.feast_cli apply
    python -m features.feast_cli plan
    python -m features.feast_cli materialize-incremental [END_TS]     # default END_TS: now
    python -m features.feast_cli materialize START_TS END_TS
    python -m features.feast_cli ui [--port 8888]
    python -m features.feast_cli env        # print the exports (same as governance.db env)

Anything else is passed through to `feast` unchanged.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from features.feast_store import REPO_PATH, feast_environ, get_store, materialize_incremental


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
    feast = shutil.which("feast", path=str(Path(sys.executable).parent)) or "feast"
    return subprocess.call([feast, *argv], cwd=REPO_PATH, env={**os.environ, **env})


if __name__ == "__main__":
    raise SystemExit(main())

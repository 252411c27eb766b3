"""`cartwise COMMAND [ARGS]`: each command runs one of the project's programs, as its
`python -m MODULE [ARGS]` form does (same flags, same output, same exit code).

    cartwise --help                 # the commands
    cartwise ingest sim data/sim    # = python -m governance.ingest sim data/sim
    cartwise train --help           # = python -m training.all --help
    cartwise serve --port 3000      # = bentoml serve serving.service:Cartwise --port 3000

The programs are found by module name and loaded only when their command runs, so
`cartwise --help` starts in a moment and this module imports nothing of the project.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # run as `python -m module`
    help: str
    prefix: tuple[str, ...] = ()  # arguments put before the user's


COMMANDS: dict[str, Command] = {
    "db": Command("governance.db", "database: migrate, url, env, stop the embedded PostgreSQL"),
    "simulate": Command("governance.simulate", "simulate the shop: raw files plus truth/"),
    "ingest": Command("governance.ingest", "governed ingest of a simulated shop, a file or a log"),
    "online-retail": Command(
        "governance.online_retail", "map the Online Retail log to contract CSVs"
    ),
    "retail-data": Command(
        "governance.retail_data", "verify or fetch the shipped Online Retail file"
    ),
    "features": Command("features.pipeline", "compute the feature tables from clean events"),
    "feast": Command(
        "features.feast_cli", "Feast CLI on feature_repo/: apply, plan, materialize, ui"
    ),
    "show": Command("features.show", "print a few online feature vectors"),
    "consistency": Command("features.consistency", "check the online store against offline"),
    "train": Command("training.all", "train the intent model, the ranker and retail ranking"),
    "train-intent": Command("training.intent", "train the query-intent model"),
    "train-ranker": Command("training.ranker", "train the ranker"),
    "train-retail": Command("training.retail", "Online Retail next-purchase ranking"),
    "serve": Command(
        "bentoml", "serve the HTTP API (bentoml serve flags)", ("serve", "serving.service:Cartwise")
    ),
    "service-demo": Command("serving.demo", "call the running service the way a shop would"),
    "retrain": Command(
        "training.retrain", "retrain on events and served lists, gate, register, reload"
    ),
    "closed-loop": Command(
        "training.closed_loop", "simulated users against the running service, clicks by truth"
    ),
    "online-report": Command(
        "training.online_report", "online CTR, conversion, NDCG per model and variant"
    ),
    "drift-report": Command("training.drift_report", "PSI per feature: served vs training"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"  {name:<{width}}  {c.help} (python -m {' '.join((c.module, *c.prefix))})"
        for name, c in COMMANDS.items()
    ]
    return (
        "usage: cartwise COMMAND [ARGS]   (cartwise COMMAND --help: the command's flags)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"cartwise: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"cartwise {name}", *command.prefix, *rest]
    try:
        runpy.run_module(command.module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0

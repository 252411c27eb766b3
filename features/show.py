"""Print a few online feature vectors, as serving will read them.

    python -m features.show [--rows 3] [--service ranker_v1]

Entities are sampled from the latest user x category snapshots; the features are those of the
feature service (the train/serve contract), read from the online store.
"""

from __future__ import annotations

import argparse
import time

from features.consistency import sample_entities
from features.feast_store import get_store


def show(settings=None, rows: int = 3, service: str = "ranker_v1") -> str:
    store = get_store(settings)
    entities = sample_entities(settings, rows)
    if entities.empty:
        return "no feature rows yet: run `python -m features.pipeline` first"

    # ranker_v1's on-demand views need the request time, as serving passes it.
    entity_rows = entities.assign(request_ts_s=int(time.time())).to_dict("records")
    response = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=entity_rows
    ).to_dict()
    lines = []
    for i, keys in enumerate(entity_rows):
        lines.append(f"-- {service} for " + ", ".join(f"{k}={v}" for k, v in keys.items()))
        for name, values in response.items():
            if name in keys or name == "request_ts_s":
                continue
            value = values[i]
            if isinstance(value, list):
                value = f"[{len(value)} floats]"
            elif isinstance(value, float):
                value = round(value, 4)
            lines.append(f"   {name:<32} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.show",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=3, help="entity rows to show (default: 3)")
    parser.add_argument(
        "--service", default="ranker_v1", help="feature service to read (default: ranker_v1)"
    )
    args = parser.parse_args(argv)
    print(show(rows=args.rows, service=args.service))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

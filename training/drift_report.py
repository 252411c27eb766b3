"""Drift report: PSI per feature between what a model was served and its training set.

    python -m training.drift_report --model cartwise-ranker:latest --hours 24 [--threshold 0.2]

The reference is the feature profile stored with the model (`feature_profile.json`, written by
`training.retrain`); the served values are the ones the service logged with each served item
(served_items.features). Prints a markdown table, drifted features first; exits 1 when a
feature drifted, so a scheduler can alert on it. The service exports the same numbers as the
Prometheus gauges `cartwise_feature_psi` / `cartwise_feature_drifted`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from features.drift import DEFAULT_THRESHOLD, DriftReport, compare, load_profiles, served_features
from governance.db import transaction
from training.bundles import info, model_store


def drift(model: str, since, threshold: float = DEFAULT_THRESHOLD, settings=None) -> DriftReport:
    meta = info(model)
    folder = Path(model_store().get(meta["tag"]).path)
    profiles = load_profiles(folder)
    if profiles is None:
        raise SystemExit(
            f"{meta['tag']} has no feature profile; models registered by training.retrain have one"
        )
    with transaction(settings) as cur:
        served = served_features(cur, meta["tag"], since)
    if served.empty:
        raise SystemExit(f"nothing served by {meta['tag']} since {since}")
    return compare(profiles, served, threshold)


def main(argv: list[str] | None = None) -> DriftReport:
    p = argparse.ArgumentParser(
        prog="python -m training.drift_report",
        description="PSI per feature: served feature values against the model's training set.",
    )
    p.add_argument(
        "--model", default="cartwise-ranker:latest", help="model tag (default: %(default)s)"
    )
    p.add_argument(
        "--hours",
        type=float,
        default=24.0,
        help="served lists of the last N hours (default: %(default)s)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="PSI that marks a drift (default: %(default)s)",
    )
    args = p.parse_args(argv)
    since = datetime.now(UTC) - timedelta(hours=args.hours)
    report = drift(args.model, since, args.threshold)
    print(report.markdown())
    if report.drifted:
        print(f"drifted: {', '.join(report.drifted)}", file=sys.stderr)
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()

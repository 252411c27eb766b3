"""Feature drift: population stability index (PSI) between a model's training set and the
feature values it is served.

    profiles = profile(training_frame, ["ctr_7d", "price", ...])   # stored with the model
    report = compare(profiles, served_frame, threshold=0.2)       # per feature PSI + flag

A profile keeps, per numeric feature, the training set's decile edges and the share of rows in
each bin (plus a bin for missing values, so a feature that stops arriving drifts too).
PSI = sum over bins of (served - expected) * ln(served / expected), shares smoothed by
`EPSILON` so an empty bin costs a finite amount. The usual reading: below 0.1 stable,
0.1-0.25 a moderate shift, above 0.25 a major one; `DEFAULT_THRESHOLD` marks 0.2 as drifted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 0.2
DEFAULT_BINS = 10
EPSILON = 1e-4
PROFILE_FILE = "feature_profile.json"


@dataclass
class FeatureProfile:
    feature: str
    edges: list[float]  # inner bin edges; len(edges) + 1 value bins, then the missing bin
    expected: list[float]  # shares per bin, missing bin last; sums to 1
    n: int

    def shares(self, values) -> np.ndarray:
        v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
        missing = ~np.isfinite(v)
        idx = np.searchsorted(np.asarray(self.edges, np.float64), v[~missing], side="right")
        counts = np.bincount(idx, minlength=len(self.edges) + 1).astype(np.float64)
        counts = np.append(counts, missing.sum())
        return counts / max(counts.sum(), 1.0)


@dataclass
class FeatureDrift:
    feature: str
    psi: float
    drifted: bool
    n_reference: int
    n_served: int


@dataclass
class DriftReport:
    threshold: float
    features: list[FeatureDrift]

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def markdown(self) -> str:
        lines = [
            f"PSI per feature (drifted at >= {self.threshold:g}):",
            "",
            "| feature | PSI | drifted | training rows | served rows |",
            "| --- | ---: | --- | ---: | ---: |",
        ]
        for f in sorted(self.features, key=lambda f: -f.psi):
            lines.append(
                f"| {f.feature} | {f.psi:.4f} | {'yes' if f.drifted else 'no'} | "
                f"{f.n_reference} | {f.n_served} |"
            )
        return "\n".join(lines) + "\n"


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPSILON) -> float:
    e = np.clip(np.asarray(expected, np.float64), eps, None)
    a = np.clip(np.asarray(actual, np.float64), eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def profile_one(feature: str, values, bins: int = DEFAULT_BINS) -> FeatureProfile:
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    finite = v[np.isfinite(v)]
    if len(finite):
        qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = sorted(set(float(q) for q in qs))  # ties (a mostly-zero count) merge bins
    else:
        edges = []
    p = FeatureProfile(feature, edges, [], int(len(v)))
    p.expected = p.shares(v).tolist()
    return p


def numeric_features(frame: pd.DataFrame, names: list[str]) -> list[str]:
    """The named columns that hold numbers (vectors and ids are not profiled)."""
    out = []
    for name in names:
        if name not in frame.columns:
            continue
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            out.append(name)
    return out


def profile(frame: pd.DataFrame, names: list[str], bins: int = DEFAULT_BINS) -> dict:
    return {n: profile_one(n, frame[n], bins) for n in numeric_features(frame, names)}


def compare(
    profiles: dict[str, FeatureProfile], served: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD
) -> DriftReport:
    rows = []
    for name, prof in profiles.items():
        if name not in served.columns:
            continue
        value = psi(np.asarray(prof.expected), prof.shares(served[name]))
        rows.append(FeatureDrift(name, value, value >= threshold, prof.n, int(len(served))))
    return DriftReport(threshold, rows)


def save_profiles(profiles: dict[str, FeatureProfile], folder: str | Path) -> Path:
    path = Path(folder) / PROFILE_FILE
    path.write_text(json.dumps({k: asdict(v) for k, v in profiles.items()}, indent=1))
    return path


def load_profiles(folder: str | Path) -> dict[str, FeatureProfile] | None:
    path = Path(folder) / PROFILE_FILE
    if not path.exists():
        return None
    return {k: FeatureProfile(**v) for k, v in json.loads(path.read_text()).items()}


SERVED_FEATURES_SQL = """
SELECT si.features
FROM served_items si JOIN served_lists sl USING (list_id)
WHERE sl.model_tag = %(model)s AND sl.served_at >= %(since)s AND si.features IS NOT NULL
ORDER BY sl.served_at DESC
LIMIT %(limit)s
"""


def served_features(cur, model_tag: str, since, limit: int = 200_000) -> pd.DataFrame:
    """The feature values a model was served since `since`, one row per served item."""
    cur.execute(SERVED_FEATURES_SQL, {"model": model_tag, "since": since, "limit": limit})
    return pd.DataFrame([r[0] for r in cur.fetchall()])

"""Feast access for cartwise programs: the repo folder, its environment, a FeatureStore.

`feature_repo/feature_store.yaml` reads everything through `${...}`; `feast_environ` sets
those variables from `governance.settings` (see `governance.db.feast_env`).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from governance.db import feast_env

REPO_PATH = Path(__file__).resolve().parent.parent / "feature_repo"


def feast_environ(settings=None) -> dict[str, str]:
    return feast_env(settings)


def set_env(settings=None) -> dict[str, str]:
    env = feast_environ(settings)
    os.environ.update(env)
    return env


@contextmanager
def _restoring_cwd():
    """Feast's apply_total chdirs into the repo and leaves it there; undo that for the caller."""
    old = os.getcwd()
    try:
        yield
    finally:
        os.chdir(old)


def get_store(settings=None):
    """A FeatureStore on feature_repo/ configured for `settings` (process env updated)."""
    # Feast is heavy to import (seconds): only code that opens a store pays for it.
    from feast import FeatureStore

    set_env(settings)
    return FeatureStore(repo_path=str(REPO_PATH))


def apply(settings=None, skip_source_validation: bool = True):
    """In-process `feast apply` of feature_repo/ (creates the registry and online tables)."""
    # Feast is heavy to import (seconds): only code that opens a store pays for it.
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    set_env(settings)
    config = load_repo_config(REPO_PATH, REPO_PATH / "feature_store.yaml")

    # Feast imports the repo's modules by name; its own CLI puts the repo on sys.path the same way.
    if str(REPO_PATH) not in sys.path:
        sys.path.insert(0, str(REPO_PATH))
    # ... and Python caches them: drop what an earlier apply imported, so the sources follow
    # this call's environment (CARTWISE_OFFLINE_ENGINE), not the first apply's.
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin.startswith(str(REPO_PATH) + os.sep):
            del sys.modules[name]
    with _restoring_cwd():
        apply_total(config, REPO_PATH, skip_source_validation=skip_source_validation)
    return get_store(settings)


# Where a never-expiring view's history starts: materialising from here finds every row.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def materialize_incremental(store, end: datetime) -> list[str]:
    """Feast's materialize_incremental, plus the first load of views without a TTL.

    For a view with ttl=0 that was never materialised Feast starts one year back, so an item
    whose title (and title embedding) dates from earlier never reached the online store while
    the offline point-in-time join found it. Those views are first materialised from the
    epoch (one latest row per entity); afterwards Feast continues incrementally from there.
    Returns the names of the views given that first full load."""
    never = [
        fv.name
        for fv in store.list_feature_views()
        if fv.online and not fv.ttl and not fv.materialization_intervals
    ]
    if never:
        store.materialize(start_date=EPOCH, end_date=end, feature_views=never)
    store.materialize_incremental(end_date=end)
    return never


def materialize_chunked(
    store,
    start: datetime,
    end: datetime,
    chunk: timedelta = timedelta(days=1),
    views: list[str] | None = None,
    progress: bool = True,
) -> int:
    """Feast's materialize over [start, end] in consecutive windows of `chunk`, oldest first.

    Feast pulls a window's latest row per entity into memory at once (the PostgreSQL offline
    store as Python objects, 384 floats per embedding row): one 30-day window at 10M events
    peaked at 10.7 GB. A day at a time holds one day's rows. Windows run in time order and a
    later row replaces an earlier one, so the online store ends with each entity's latest
    row in [start, end], as with one call. Returns the number of windows."""
    # tqdm is light, but only materialisation draws a bar here.
    from tqdm.auto import tqdm

    edges = [start]
    while edges[-1] < end:
        edges.append(min(edges[-1] + chunk, end))
    windows = list(zip(edges, edges[1:]))
    for lo, hi in tqdm(windows, desc="materialize", unit="window", disable=not progress):
        store.materialize(start_date=lo, end_date=hi, feature_views=views)
    return len(windows)

"""Shared helpers: records in one shape, and a throwaway database on the local server."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import psycopg2
from sqlalchemy.engine import make_url

from governance.db import migrate
from governance.settings import Settings

ADMIN_URL = os.environ.get("CARTWISE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def record(
    name: str,
    value: float,
    unit: str,
    baseline_value: float | None,
    params: dict,
    higher_is_better: bool = True,
) -> dict:
    if baseline_value:
        ratio = value / baseline_value if higher_is_better else baseline_value / value
    else:
        ratio = None
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline_value": None if baseline_value is None else round(baseline_value, 4),
        "ratio": None if ratio is None else round(ratio, 4),
        "params": params,
    }


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def scratch_database():
    """A migrated database that exists for the benchmark only."""
    name = f"cw_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url)
    try:
        migrate(settings)
        yield settings
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

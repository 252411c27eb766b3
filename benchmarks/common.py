"""Shared helpers: records in one shape, and a throwaway database on the local server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
def scratch_database(prefix: str = "cw_bench"):
    """A migrated database that exists for the benchmark only (PREFIX_<random>)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url)
    try:
        migrate(settings)
        yield settings
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- stages in their own process


@dataclass
class StageRun:
    seconds: float
    peak_rss_gb: float
    finished: bool
    reason: str = ""


def _tree_rss_kb(pid: int, field: str = "VmRSS:") -> int:
    """Resident set of a process and its descendants now (kB), from /proc; field "VmHWM:"
    gives each process's own peak instead."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(x.split()[1]) for x in fh if x.startswith(field))
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def run_stage(args: list[str], env: dict, log: Path, timeout_s=None, max_rss_gb=None) -> StageRun:
    """Run `python ARGS`; its peak RSS is the largest sum over the process tree of each
    process's own high-water mark (VmHWM), read every 0.2 s. Not wait4's ru_maxrss: Linux
    carries the parent's resident set at fork into the child's ru_maxrss across exec, so a
    stage started by a benchmark holding 6.8 GB reported 6.8 GB whatever it used. Stopped
    (process group killed) past timeout_s or above max_rss_gb."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        reason: list[str] = []
        hwm_kb = [_tree_rss_kb(proc.pid, "VmHWM:")]
        done = threading.Event()

        def watch():
            while not done.wait(0.2):
                hwm_kb[0] = max(hwm_kb[0], _tree_rss_kb(proc.pid, "VmHWM:"))
                if timeout_s and time.perf_counter() - t0 > timeout_s:
                    reason.append(f"time limit {timeout_s}s")
                elif max_rss_gb and _tree_rss_kb(proc.pid) > max_rss_gb * 2**20:
                    reason.append(f"RSS cap {max_rss_gb} GB")
                else:
                    continue
                os.killpg(proc.pid, 9)
                return

        threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    # kB -> GB; wait4's figure only for a stage too short to be read even once
    peak = (hwm_kb[0] or usage.ru_maxrss) / 2**20
    if reason:
        return StageRun(seconds, peak, False, reason[0])
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed ({proc.returncode}); see {log}")
    return StageRun(seconds, peak, True)

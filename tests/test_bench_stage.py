"""The benchmarks' stage runner measures a stage's own peak memory, not its parent's."""

import os

from benchmarks.common import run_stage

CHILD = (
    "x = bytearray(200 * 2**20)\n"
    "for i in range(0, len(x), 4096): x[i] = 1\n"
    "import time; time.sleep(1)\n"
)


def test_a_stage_peak_is_its_own_not_the_parents(tmp_path):
    # Linux carries the parent's resident set into a child's ru_maxrss across exec: a
    # benchmark holding 800 MB made every stage it started report at least 800 MB.
    parent = bytearray(800 * 2**20)
    for i in range(0, len(parent), 4096):
        parent[i] = 1
    run = run_stage(["-c", CHILD], dict(os.environ), tmp_path / "log")
    assert run.finished
    assert 0.2 <= run.peak_rss_gb < 0.5, run.peak_rss_gb
    del parent

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


def test_scale_plot_redraws_from_the_committed_per_size_files(tmp_path, monkeypatch):
    """`bench_scale --plot-only` merges every results/scale-<size>.json (a restored stopped
    stage has no peak RSS) into scale.json and draws scale.png from them."""
    import json
    import shutil

    from benchmarks import bench_scale

    for path in bench_scale.RESULTS.glob("scale-*.json"):
        shutil.copy(path, tmp_path / path.name)
    sizes = {
        json.loads(p.read_text())["records"][0]["params"]["events"] for p in tmp_path.iterdir()
    }
    assert {1_000_000, 3_000_000} <= sizes
    monkeypatch.setattr(bench_scale, "RESULTS", tmp_path)
    assert bench_scale.main(["--plot-only"]) == 0
    merged = json.loads((tmp_path / "scale.json").read_text())["records"]
    assert {r["params"]["events"] for r in merged} == sizes
    assert len(merged) == sum(
        len(json.loads(p.read_text())["records"]) for p in tmp_path.glob("scale-*.json")
    )
    assert (tmp_path / "scale.png").stat().st_size > 10_000

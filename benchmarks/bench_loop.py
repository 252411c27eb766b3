"""The feedback loop: what logging served lists costs, and how close the ranker gets online to
the simulator's oracle.

    python -m benchmarks --only loop
    python -m benchmarks.bench_loop

Records {name, value, unit, baseline_value, ratio, params}:

    serving_logging_overhead   /recommend p99 with served-list logging on, divided by the p99
                               with it off (CARTWISE_LIST_LOG=off). Two servers on the same
                               stores, the same request bodies sent to each in alternating
                               rounds (off, on, off, on, ...), so drift of the shared machine
                               hits both alike. Target <= 1.1.
    closed_loop_ctr_ratio      the ranker variant's realised online CTR in a closed-loop run
                               (training/closed_loop.py: the simulator's users, clicks by its
                               ground-truth model) divided by the oracle's CTR on the same
                               requests; the random-order variant's CTR is the baseline.

The world is a small simulated shop (tests/serving_world.py: simulate -> ingest -> features ->
Feast -> tiny ranker). The closed loop runs on the logging-on server after a /reload that
turns on a 50/50 experiment of the ranker against random ordering.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import redis

from benchmarks.bench_serving import _free_port, _stop, _wait
from benchmarks.common import record, scratch_database
from tests.serving_world import build
from training.closed_loop import ClosedLoopArgs, run

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
API_KEY = "bench-api-key"


def _serve(env: dict, port: int, log: Path):
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "serving.service:Cartwise",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def bench_loop(
    requests_per_round: int = 100,
    rounds: int = 8,
    concurrency: int = 4,
    loop_requests: int = 400,
) -> list[dict]:

    tmp = Path(tempfile.mkdtemp(prefix="cw_bench_loop_"))
    # A logical database of its own on the machine's Redis, emptied before and after.
    server = re.sub(r"/\d+$", "", os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379")
    redis_url = f"{server}/{1 + uuid.uuid4().int % 15}"
    redis.Redis.from_url(redis_url).flushdb()
    procs = []
    try:
        with scratch_database() as base:
            settings = base.model_copy(
                update={"redis_url": redis_url, "data_dir": tmp / "data", "events_token": TOKEN}
            )
            os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
            os.environ.setdefault("TQDM_DISABLE", "1")
            world = build(settings, tmp)
            env = {
                **os.environ,
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": redis_url,
                "CARTWISE_PSEUDONYM_KEY": settings.pseudonym_key.get_secret_value(),
                "CARTWISE_EVENTS_TOKEN": TOKEN,
                "CARTWISE_API_KEY": API_KEY,
                "HF_HUB_OFFLINE": "1",
                "BENTOML_DO_NOT_TRACK": "True",
            }
            ports = {"on": _free_port(), "off": _free_port()}
            for mode, port in ports.items():
                mode_env = {
                    **env,
                    "CARTWISE_LIST_LOG": mode,
                    "CARTWISE_DATA_DIR": str(tmp / f"data-{mode}"),
                }
                procs.append(_serve(mode_env, port, tmp / f"serve-{mode}.log"))
            for proc, (mode, port) in zip(procs, ports.items()):
                _wait(f"http://127.0.0.1:{port}/readyz", proc, tmp / f"serve-{mode}.log")

            users = pd.read_parquet(world["sim"] / "truth" / "users.parquet")
            users = users.loc[~users["is_bot"], "user_id"].tolist()
            bodies = [
                {"user_id": users[i % len(users)], "k": 10, "candidates": 200}
                for i in range(requests_per_round)
            ]
            lat = {"on": [], "off": []}
            errors = {"on": 0, "off": 0}
            load_before = os.getloadavg()
            for r in range(rounds):
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    out = _run_load(
                        f"http://127.0.0.1:{ports[mode]}/recommend", bodies, concurrency
                    )
                    lat[mode] += out["latencies_ms"]
                    errors[mode] += out["errors"]
            load_after = os.getloadavg()
            p99 = {m: _pick(sorted(v), 0.99) for m, v in lat.items()}
            p50 = {m: _pick(sorted(v), 0.5) for m, v in lat.items()}
            status = httpx.post(
                f"http://127.0.0.1:{ports['on']}/status",
                json={},
                timeout=30,
                headers={"X-API-Key": API_KEY},
            )
            log_stats = status.json()["experiment"]["list_log"]

            experiment = {
                "name": "bench-ranker-vs-random",
                "variants": [
                    {"name": "ranker", "model": "cartwise-ranker:latest", "share": 0.5},
                    {"name": "random", "model": "random", "share": 0.5},
                ],
            }
            url = f"http://127.0.0.1:{ports['on']}"
            httpx.post(
                f"{url}/reload",
                json={"experiment": json.dumps(experiment)},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            ).raise_for_status()
            # The reload reached one worker; the others follow by their store watch (5 s).
            # The closed loop starts once several /status calls in a row show the experiment.
            deadline, seen = time.monotonic() + 60, 0
            while seen < 8 and time.monotonic() < deadline:
                st = httpx.post(
                    f"{url}/status", json={}, timeout=30, headers={"X-API-Key": API_KEY}
                )
                seen = (
                    seen + 1 if st.json()["experiment"]["experiment"] == experiment["name"] else 0
                )
                time.sleep(0.25)
            loop = run(
                ClosedLoopArgs(
                    url=url,
                    sim=world["sim"],
                    requests=loop_requests,
                    k=8,
                    seed=11,
                    token=TOKEN,
                    api_key=API_KEY,  # reads need the server's key (a 401 is a failed request)
                    progress=False,
                )
            )
    finally:
        for p in procs:
            _stop(p)
        redis.Redis.from_url(redis_url).flushdb()

        shutil.rmtree(tmp, ignore_errors=True)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(loop.text(), file=sys.stderr)
    by = loop.by_variant()
    if not {"ranker", "random"} <= set(by):
        raise RuntimeError(f"closed loop: variants {sorted(by)} (expected ranker and random)")
    ranker, rnd = by["ranker"], by["random"]
    overhead_params = {
        "requests": requests_per_round * rounds,
        "rounds": rounds,
        "concurrency": concurrency,
        "candidates": 200,
        "k": 10,
        "p50_ms_on": round(p50["on"], 2),
        "p50_ms_off": round(p50["off"], 2),
        "errors_on": errors["on"],
        "errors_off": errors["off"],
        "lists_logged": log_stats["loaded"],
        "log_reconciles": log_stats["reconciles"],
        "peak_child_rss_mb": round(rss_mb, 1),
        "cpus": os.cpu_count(),
        # The machine is shared: its 1-minute load average before and after the timed rounds.
        "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    loop_params = {
        "requests": loop_requests,
        "k": 8,
        "ranker_lists": ranker.requests,
        "random_lists": rnd.requests,
        "ranker_ctr": ranker.ctr.text(),
        "random_ctr": rnd.ctr.text(),
        "ranker_expected_ctr": round(ranker.expected_ctr, 4),
        "random_expected_ctr": round(rnd.expected_ctr, 4),
        "oracle_ctr_ranker_requests": round(ranker.oracle_ctr, 4),
        "oracle_ctr_random_requests": round(rnd.oracle_ctr, 4),
        "random_ratio_to_oracle": round(rnd.ratio_to_oracle, 4),
        "ranker": ranker.model,
        "baseline": "random ordering of the same candidates (its CTR)",
    }
    return [
        # ratio = off / on: 1.0 means logging costs nothing at the tail.
        record(
            "serving_logging_overhead",
            p99["on"] / p99["off"],
            "p99 on / p99 off",
            None,
            overhead_params
            | {"p99_ms_on": round(p99["on"], 2), "p99_ms_off": round(p99["off"], 2)},
            higher_is_better=False,
        ),
        record(
            "closed_loop_ctr_ratio",
            ranker.ratio_to_oracle,
            "ranker CTR / oracle CTR",
            None,
            loop_params
            | {
                "ranker_over_random_ctr": round(ranker.ctr.value / rnd.ctr.value, 4)
                if rnd.ctr.value
                else None
            },
        ),
    ]


def load(url: str, bodies: list[dict], concurrency: int, warmup: int = 10) -> dict:
    """POST `bodies` from `concurrency` threads (in a process of its own); latencies in ms."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    it = iter(range(len(bodies)))

    def worker():
        nonlocal errors
        with httpx.Client(timeout=60, headers={"X-API-Key": API_KEY}) as client:
            for _ in range(warmup // concurrency + 1):
                client.post(url, json=bodies[0])
            while (i := _next(it, lock)) is not None:
                t = time.perf_counter()
                r = client.post(url, json=bodies[i])
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies_ms": lat, "errors": errors}


def _next(it, lock):
    with lock:
        return next(it, None)


def _run_load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """The load from another process, so the client's own work never shares the server's CPU
    accounting or GIL."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"url": url, "bodies": bodies, "concurrency": concurrency}, fh)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_loop", "--load", fh.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    os.unlink(fh.name)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pick(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")


def run_all() -> list[dict]:
    t0 = time.time()
    out = bench_loop()
    print(f"loop bench took {time.time() - t0:.0f} s", file=sys.stderr)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        spec = json.loads(Path(sys.argv[2]).read_text())
        print(json.dumps(load(spec["url"], spec["bodies"], spec["concurrency"])))
    else:
        print(json.dumps(run_all(), indent=2))

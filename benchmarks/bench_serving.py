"""Serving latency: /recommend (200 candidates ranked) against `feast serve` alone.

    python -m benchmarks --only serving
    python -m benchmarks.bench_serving            # prints the records

Records {name, value, unit, baseline_value, ratio, params}:

    serving_recommend_p50_ms / _p99_ms   /recommend {user_id, k: 10, candidates: 200}
    serving_recommend_rps                requests/s at fixed concurrency
    baseline: `feast serve` answering /get-online-features for the ranker's feature service
    (ranker_v1) for the same user and 200 items -- the feature fetch alone, over HTTP, which
    is the floor under any service that ranks 200 Feast-fed candidates. ratio = baseline /
    value for latencies, value / baseline for throughput (1.0 = as fast as Feast alone).

Both servers run one worker on this machine, against the same PostgreSQL registry and a private
redis-server; the load comes from a separate process (threads, fixed concurrency), and the same
load code drives both. The baseline's 200 items are the catalogue's 200 most popular; the
service picks its own 200 (co-visitation, similarity, affinity, popularity) for the same user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record, scratch_database

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------ load process


def load(url: str, bodies: list[dict], concurrency: int, warmup: int) -> dict:
    """POST `bodies` (cycled) from `concurrency` threads; latencies in ms."""
    import threading

    import httpx

    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    it = iter(range(len(bodies)))

    def worker():
        nonlocal errors
        with httpx.Client(timeout=60) as client:
            for _ in range(warmup // concurrency + 1):
                client.post(url, json=bodies[0])
            while True:
                with lock:
                    i = next(it, None)
                if i is None:
                    return
                t = time.perf_counter()
                r = client.post(url, json=bodies[i])
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat.sort()

    def pick(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "rps": len(lat) / wall,
        "ok": len(lat),
        "errors": errors,
    }


def _run_load(url: str, bodies: list[dict], concurrency: int, warmup: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"url": url, "bodies": bodies, "concurrency": concurrency, "warmup": warmup}, fh)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_serving", "--load", fh.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    os.unlink(fh.name)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the benchmark


def bench_recommend(
    requests: int = 200,
    concurrency: int = 4,
    candidates: int = 200,
    n_items: int = 400,
    n_users: int = 100,
) -> list[dict]:
    from features.store import feast_environ
    from governance.privacy import pseudonymise
    from serving.catalog import load_catalog
    from serving.tiny import build

    tmp = Path(tempfile.mkdtemp(prefix="cw_bench_serving_"))
    redis_port = _free_port()
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--pidfile",
            str(tmp / "redis.pid"),
        ],
        check=True,
    )
    procs: list[subprocess.Popen] = []
    try:
        with scratch_database() as base:
            settings = base.model_copy(
                update={"redis_url": f"redis://127.0.0.1:{redis_port}/0", "data_dir": tmp / "data"}
            )
            os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
            os.environ.setdefault("TQDM_DISABLE", "1")
            build(
                settings,
                out_dir=str(tmp / "runs"),
                n_items=n_items,
                n_users=n_users,
                n_sessions=n_users * 10,
            )
            key = settings.pseudonym_key.get_secret_value()
            env = {
                **os.environ,
                **feast_environ(settings),
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url,
                "CARTWISE_DATA_DIR": str(tmp / "data"),
                "CARTWISE_PSEUDONYM_KEY": key,
                "HF_HUB_OFFLINE": "1",
                "BENTOML_DO_NOT_TRACK": "True",
            }
            svc_port, feast_port = _free_port(), _free_port()
            for name, cmd, cwd in (
                (
                    "bento",
                    [
                        str(Path(sys.executable).with_name("bentoml")),
                        "serve",
                        "serving.service:Cartwise",
                        "--port",
                        str(svc_port),
                    ],
                    ROOT,
                ),
                (
                    "feast",
                    [
                        str(Path(sys.executable).with_name("feast")),
                        "serve",
                        "-p",
                        str(feast_port),
                        "--no-access-log",
                        "-w",
                        "1",
                    ],
                    ROOT / "feature_repo",
                ),
            ):
                log = tmp / f"{name}.log"
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=cwd,
                        env=env,
                        stdout=open(log, "w"),  # noqa: SIM115 (the child owns it)
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            _wait(f"http://127.0.0.1:{svc_port}/readyz", procs[0], tmp / "bento.log")
            _wait(f"http://127.0.0.1:{feast_port}/health", procs[1], tmp / "feast.log")

            users = [f"u{u:05d}" for u in range(n_users)]
            cat = load_catalog(settings)
            items = cat.popular[:candidates]
            cats = [cat.category_of(i) for i in items]
            now = int(time.time())
            svc_bodies = [
                {"user_id": users[i % n_users], "k": 10, "candidates": candidates}
                for i in range(requests)
            ]
            feast_bodies = [
                {
                    "feature_service": "ranker_v1",
                    "entities": {
                        "user_id": [pseudonymise(users[i % n_users], key)] * len(items),
                        "item_id": items,
                        "category": cats,
                        "request_ts_s": [now] * len(items),
                    },
                }
                for i in range(requests)
            ]
            svc = _run_load(
                f"http://127.0.0.1:{svc_port}/recommend", svc_bodies, concurrency, warmup=10
            )
            fst = _run_load(
                f"http://127.0.0.1:{feast_port}/get-online-features",
                feast_bodies,
                concurrency,
                warmup=10,
            )
    finally:
        for p in procs:
            _stop(p)
        subprocess.run(
            ["redis-cli", "-p", str(redis_port), "shutdown", "nosave"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)
    params = {
        "requests": requests,
        "concurrency": concurrency,
        "candidates": candidates,
        "k": 10,
        "items": n_items,
        "users": n_users,
        "workers": 1,
        "cpus": os.cpu_count(),
        "service_errors": svc["errors"],
        "feast_errors": fst["errors"],
        "baseline": "feast serve /get-online-features ranker_v1, same user, 200 items",
    }
    return [
        record(
            "serving_recommend_p50_ms",
            svc["p50_ms"],
            "ms",
            fst["p50_ms"],
            params,
            higher_is_better=False,
        ),
        record(
            "serving_recommend_p99_ms",
            svc["p99_ms"],
            "ms",
            fst["p99_ms"],
            params,
            higher_is_better=False,
        ),
        record("serving_recommend_rps", svc["rps"], "requests/s", fst["rps"], params),
    ]


def run_all() -> list[dict]:
    return bench_recommend()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        spec = json.loads(Path(sys.argv[2]).read_text())
        print(json.dumps(load(spec["url"], spec["bodies"], spec["concurrency"], spec["warmup"])))
    else:
        print(json.dumps(run_all(), indent=2))

"""A small simulated shop, ready to serve: the one world of the serving and feedback-loop tests
and of the serving benchmarks.

The project's own path at a small size, so every row the server reads passed validation:
simulate (ending now, so online features are fresh) -> governed ingest (Pandera, cleaning,
pseudonyms, audited batches) -> feature pipeline (MiniLM title embeddings) -> Feast apply +
materialise -> training set of the ranker's default feature service (ranker_v3: what ships) ->
tiny DCN-v2 ranker (saved with its feature profile)
and a TF-IDF intent model, in the BentoML model store of $BENTOML_HOME.

`WorldFacts` names what the tests may rely on, read from the governed tables and the shipped
intent model (never hard-coded: a change to the simulator's vocabulary moves them with it).

    python -m tests.serving_world OUT_DIR   # with DATABASE_URL / REDIS_URL / BENTOML_HOME
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd

from features import pipeline
from features.feast_store import apply
from governance.db import migrate, transaction
from governance.ingest import ingest_simulation
from governance.privacy import pseudonymise
from governance.settings import get_settings
from governance.simulate import SimConfig, simulate
from tests.training_data import TINY_RANKER
from training.bundles import RANKER_FEATURE_SERVICE, save_intent, save_ranker
from training.intent import IntentTrainArgs
from training.intent import train as train_intent
from training.intent_data import load_labelled
from training.ranker import RankerTrainArgs
from training.ranker import train as train_ranker
from training.ranker_data import frame_from_feast

# The credentials every served world is started with (never a deployment's).
TOKEN = "test-events-token"
API_KEY = "test-api-key"
BENTOML = str(Path(sys.executable).with_name("bentoml"))
REPO = Path(__file__).resolve().parent.parent

# The tests' tiny ranker (tests/training_data.py), on the world's feature service, with more
# hash buckets for the world's ids and the model left out of the store (build saves its own).
WORLD_RANKER = {k: v for k, v in TINY_RANKER.items() if k != "feature_service"} | dict(
    buckets=1024, patience=1, save_model=False
)


@dataclass(frozen=True)
class WorldFacts:
    """What the served world holds, for tests to ask about by name."""

    user: str  # raw shop id (as a shop sends it) of the user with the most clean views
    other_user: str  # the user with the second most
    category: str  # the category with the most items
    item: str  # an item of that category
    query: str  # a labelled query the shipped intent model gets right (intent and category)
    query_intent: str
    query_category: str
    search_query: str  # a labelled query of `category` the model maps to `category`
    items: tuple[str, ...]  # item ids, sorted: events name real items


def users_by_views(settings, sim: Path, limit: int = 50) -> list[str]:
    """Raw simulator user ids, most clean views first (the tables hold their pseudonyms)."""
    raw = pd.read_csv(sim / "users.csv.gz", usecols=["user_id"])["user_id"].dropna().unique()
    key = settings.pseudonym_key.get_secret_value()
    by_pseudonym = {pseudonymise(str(u), key): str(u) for u in raw}
    with transaction(settings) as cur:
        cur.execute(
            """SELECT user_id FROM events WHERE event_type = 'view' AND NOT is_bot
               GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT %s""",
            (limit,),
        )
        return [by_pseudonym[u] for (u,) in cur.fetchall() if u in by_pseudonym]


def _largest_category(settings) -> tuple[str, str]:
    with transaction(settings) as cur:
        cur.execute(
            """SELECT category, min(item_id) FROM items GROUP BY category
               ORDER BY count(*) DESC, category LIMIT 1"""
        )
        return cur.fetchone()


def _item_ids(settings) -> tuple[str, ...]:
    with transaction(settings) as cur:
        cur.execute("SELECT item_id FROM items ORDER BY item_id LIMIT 20")
        return tuple(r[0] for r in cur.fetchall())


def top_query(settings) -> str:
    """The world's most searched query with clicked categories, as query_stats keys it."""
    with transaction(settings) as cur:
        cur.execute(
            """SELECT query FROM query_features WHERE q_top_category_1 IS NOT NULL
               ORDER BY searches_30d DESC, query LIMIT 1"""
        )
        return cur.fetchone()[0]


def world_facts(settings, sim: Path, predictor, labelled: pd.DataFrame) -> WorldFacts:
    users = users_by_views(settings, sim)
    category, item = _largest_category(settings)
    queries = labelled.drop_duplicates("query").reset_index(drop=True)
    predicted = pd.DataFrame(predictor.predict(list(queries["query"])))
    right = queries[
        (predicted["intent"] == queries["intent"]) & (predicted["category"] == queries["category"])
    ]
    in_category = right[right["category"] == category]
    search = in_category if not in_category.empty else right
    return WorldFacts(
        user=users[0],
        other_user=users[1],
        category=category if not in_category.empty else str(search["category"].iloc[0]),
        item=item,
        query=str(right["query"].iloc[0]),
        query_intent=str(right["intent"].iloc[0]),
        query_category=str(right["category"].iloc[0]),
        search_query=str(search["query"].iloc[0]),
        items=_item_ids(settings),
    )


def build(
    settings,
    root: Path,
    seed: int = 5,
    events: int = 6_000,
    n_users: int = 150,
    n_items: int = 120,
) -> dict:
    """Everything `serving.service:Cartwise` needs, in `settings`' database and online store
    and in the model store of $BENTOML_HOME."""
    days = 3
    start = (datetime.now(UTC) - timedelta(days=days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    sim = root / "sim"
    simulate(
        SimConfig(
            seed=seed, events=events, days=days, n_users=n_users, n_items=n_items, start=start
        ),
        sim,
        progress=False,
    )
    ingest_simulation(sim, settings=settings, progress=False)
    pipeline.run(settings, embeddings=True)
    store = apply(settings)
    store.materialize(start - timedelta(days=1), datetime.now(UTC))
    service = RANKER_FEATURE_SERVICE  # the contract `make demo` ships and serves
    frame, names, lineage = frame_from_feast(settings, service, list_sample=0.5)
    res = train_ranker(
        RankerTrainArgs(
            out_dir=str(root / "runs"), seed=seed, feature_service=service, **WORLD_RANKER
        ),
        frame=frame,
        feature_names=names,
        lineage=lineage,
    )
    # The DCN whatever the ship gate chose: these worlds test serving (an event must move the
    # next list), not which model the job would ship on so little data.
    dcn = res.candidates["dcn_v2"]
    profiles = res.profiles  # the training split's, as training.ranker saves them
    ranker_tag = save_ranker(dcn, res.test, res.lineage, profiles=profiles)
    labelled = load_labelled(settings)
    ires = train_intent(
        IntentTrainArgs(
            out_dir=str(root / "runs"), candidates=("tfidf_lr",), tensorboard=False, seed=seed
        ),
        data=labelled,
    )
    intent_tag = save_intent(ires.predictor, {"test": ires.test[ires.winner]}, ires.lineage)
    return {
        "sim": sim,
        "facts": world_facts(settings, sim, ires.predictor, labelled),
        "ranker_tag": ranker_tag,
        "intent_tag": intent_tag,
        "bundle": dcn,
        "profiles": profiles,
        "bentoml_home": os.environ.get("BENTOML_HOME"),
        "feature_service": service,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(world: dict, env: dict | None = None, ready_s: float = 300) -> Iterator[httpx.Client]:
    """A real `bentoml serve serving.service:Cartwise` of `world` (what `build` returned plus
    its `settings` and `root`) on a free port, with `env` on top of the world's connections and
    credentials; yields a client that sends the API key. The log is `root`/serve.log; the
    server's process group is stopped on exit."""
    s, port = world["settings"], free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "CARTWISE_PSEUDONYM_KEY": s.pseudonym_key.get_secret_value(),
        "CARTWISE_EVENTS_TOKEN": TOKEN,
        "CARTWISE_API_KEY": API_KEY,
        "CARTWISE_DATA_DIR": str(s.data_dir),
        "BENTOML_HOME": world["bentoml_home"],
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "BENTOML_DO_NOT_TRACK": "True",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    log_path = world["root"] / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 (the server writes it)
    proc = subprocess.Popen(
        [BENTOML, "serve", "serving.service:Cartwise", "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"X-API-Key": API_KEY}
    )
    # Two workers load the models; the first start exports MiniLM to ONNX (a minute on a
    # busy 2-core machine).
    deadline = time.time() + ready_s
    try:
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, log_path.read_text()[-3000:]
            try:
                # /readyz answers once a worker's __init__ ran and the catalogue loaded.
                if (
                    client.get("/readyz").status_code == 200
                    and client.post("/status", json={}).json()["ready"]
                ):
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        yield client
    finally:
        client.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    settings = get_settings()
    migrate(settings)
    built = build(settings, Path(sys.argv[1] if len(sys.argv) > 1 else "runs/world"))
    out = {k: built[k] for k in ("ranker_tag", "intent_tag", "bentoml_home")}
    print(json.dumps({**out, "facts": asdict(built["facts"])}, indent=2))

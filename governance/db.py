"""Database access: the one place that turns settings into a PostgreSQL connection.

With `DATABASE_URL` unset, cartwise starts (or reuses) an embedded PostgreSQL from the
`pgserver` wheel under `<data_dir>/pg`, and leaves it running so the feature pipeline, Feast,
training and serving (separate programs) all reach the same database.

    python -m governance.db migrate     # apply Alembic migrations
    python -m governance.db url         # print the SQLAlchemy URL in use
    eval "$(python -m governance.db env)"   # export what feature_store.yaml reads
    python -m governance.db stop        # stop the embedded PostgreSQL (it outlives each program)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from governance.redis_url import feast_online_store
from governance.settings import Settings, get_settings

log = logging.getLogger(__name__)


def embedded_server_url(data_dir: Path) -> str:
    """Start (or find running) the embedded PostgreSQL and return its libpq URI."""
    import pgserver  # heavy and only needed on the embedded path

    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, other programs reuse it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop_embedded_server(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL under `data_dir`, if it runs; True when one was stopped.

    pgserver stops a server only when the last process holding it lets go, and programs here
    deliberately leave it running, so stopping is an explicit act.
    """
    # pgserver (the embedded PostgreSQL) is needed only without DATABASE_URL.
    import pgserver  # heavy (bundled PostgreSQL binaries): only the embedded path needs it
    from pgserver.postgres_server import PostmasterInfo

    pgdata = (data_dir / "pg").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    # As root, pgserver runs PostgreSQL as its own 'pgserver' user; pg_ctl must run as that user.
    user = "pgserver" if os.geteuid() == 0 else None
    pgserver.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user)
    _resolved_url.cache_clear()
    return True


@lru_cache(maxsize=4)
def _resolved_url(database_url: str | None, data_dir: str) -> str:
    raw = database_url or embedded_server_url(Path(data_dir))
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def sqlalchemy_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return _resolved_url(settings.database_url, str(settings.data_dir))


def libpq_params(settings: Settings | None = None) -> dict[str, str]:
    """host/port/dbname/user/password as libpq takes them (host may be a socket folder)."""
    url = make_url(sqlalchemy_url(settings))
    query = {k: (v if isinstance(v, str) else v[0]) for k, v in url.query.items()}
    return {
        "host": query.get("host", url.host or "localhost"),
        "port": str(url.port or query.get("port", 5432)),
        "dbname": url.database or "postgres",
        "user": url.username or "postgres",
        "password": url.password or "",
    }


def connect_options(settings: Settings | None = None) -> dict[str, str]:
    """libpq connect_timeout and the session's statement/lock timeouts, for every connection:
    an unreachable server, a runaway query or a held lock ends in an error, never a hang."""
    settings = settings or get_settings()
    statement_ms = int(settings.db_statement_timeout_s * 1000)
    lock_ms = int(settings.db_lock_timeout_s * 1000)
    return {
        "connect_timeout": str(settings.db_connect_timeout_s),
        "options": f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}",
    }


def connect(settings: Settings | None = None) -> psycopg2.extensions.connection:
    """A raw psycopg2 connection, for COPY and explicit transactions."""
    params = {k: v for k, v in libpq_params(settings).items() if v != ""}
    return psycopg2.connect(**params, **connect_options(settings))


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction: committed on success, rolled back on any error."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def engine(settings: Settings | None = None) -> sa.Engine:
    return sa.create_engine(
        sqlalchemy_url(settings), pool_pre_ping=True, connect_args=connect_options(settings)
    )


def migrate(settings: Settings | None = None, revision: str = "head") -> None:
    """Apply the versioned schema (Alembic); safe to call on every start."""
    cfg = Config()
    cfg.set_main_option("script_location", "governance:migrations")
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(settings).replace("%", "%%"))
    command.upgrade(cfg, revision)


def spark_conf(settings: Settings | None = None) -> dict[str, str]:
    """What a SparkSession of cartwise's gets: the master, its memory when set, UTC, no UI,
    this interpreter."""
    settings = settings or get_settings()
    memory = settings.spark_driver_memory
    return ({"spark.driver.memory": memory} if memory else {}) | {
        "spark.master": settings.spark_master,
        "spark.app.name": "cartwise-feast",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Python workers run this interpreter (with Feast and cartwise), not the first python3
        # on PATH; a cluster whose executors have another path sets PYSPARK_PYTHON there.
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
    }


def feast_offline_store(settings: Settings | None = None) -> str:
    """Feast's `offline_store` block (a YAML flow mapping) for settings.offline_engine."""
    settings = settings or get_settings()
    if settings.offline_engine == "spark":
        return json.dumps({"type": "spark", "spark_conf": spark_conf(settings)})
    pg = libpq_params(settings)
    block = {
        "type": "postgres",
        "host": pg["host"],
        "port": int(pg["port"]),
        "database": pg["dbname"],
        # Feast puts db_schema into the libpq `options` as `-c search_path=...`: this value
        # also turns nested loops off for the offline store's sessions. Feast's point-in-time
        # SQL joins CTEs whose row estimates are ~1 (timestamp bounds are InitPlan
        # parameters), so PostgreSQL otherwise picks nested loops that are quadratic in the
        # entity rows (minutes for 3k rows; 0.5 s with this). search_path ends up
        # 'public,public'. Still needed: training uses the set-based path (features/frames.py,
        # which turns nested loops back on in its own session, since a LATERAL ... LIMIT 1 is
        # one), but Feast's stock join stays the reference that the tests,
        # `features.consistency.check` and the benchmarks' baselines run.
        "db_schema": "public -c enable_nestloop=off -c search_path=public",
        "user": pg["user"],
        "password": pg["password"],
        "sslmode": "disable",
    }
    return json.dumps(block)  # JSON is a YAML flow mapping, with every string quoted


def feast_batch_engine(settings: Settings | None = None) -> str:
    """Feast's `batch_engine` block: its Spark compute engine on the Spark path, else local.

    On Spark: `features.spark_engine.SparkEngine`, Feast's SparkComputeEngine with one fix
    (Feast 0.67 cannot ship a stream feature view to its workers; see that module)."""
    settings = settings or get_settings()
    if settings.offline_engine == "spark":
        engine = "features.spark_engine.SparkEngine"
        return json.dumps({"type": engine, "spark_conf": spark_conf(settings)})
    return "local"


def feast_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment that `feature_repo/feature_store.yaml` reads through `${...}`.

    `CARTWISE_OFFLINE_ENGINE` and `CARTWISE_LAKE_FEATURES` are read by feature_repo's source
    function (PostgreSQL tables, or the Parquet feature tables that features.spark_pipeline
    writes under `<lake>/features`)."""
    settings = settings or get_settings()
    pg = libpq_params(settings)
    registry = make_url(sqlalchemy_url(settings)).set(drivername="postgresql+psycopg")
    registry = registry.update_query_dict(connect_options(settings))
    if settings.redis_url:
        # Feast passes the timeouts to redis-py: a dead or paused Redis fails fast, never hangs.
        online = feast_online_store(
            settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.redis_timeout_s
        )
    else:
        sqlite_path = (settings.data_dir / "online_store.db").resolve()
        online = f"{{type: sqlite, path: '{sqlite_path}'}}"
    return {
        "CARTWISE_FEAST_PROJECT": settings.feast_project,
        "CARTWISE_PG_HOST": pg["host"],
        "CARTWISE_PG_PORT": pg["port"],
        "CARTWISE_PG_DB": pg["dbname"],
        "CARTWISE_PG_USER": pg["user"],
        "CARTWISE_PG_PASSWORD": pg["password"],
        "CARTWISE_REGISTRY_URL": registry.render_as_string(hide_password=False),
        "CARTWISE_ONLINE_STORE": online,
        "CARTWISE_OFFLINE_ENGINE": settings.offline_engine,
        "CARTWISE_OFFLINE_STORE": feast_offline_store(settings),
        "CARTWISE_BATCH_ENGINE": feast_batch_engine(settings),
        "CARTWISE_LAKE_FEATURES": settings.lake_features(),
    }


def _main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m governance.db",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=["migrate", "url", "env", "stop"],
        help="migrate: apply the migrations; url: print the database URL; env: print the "
        "Feast exports; stop: stop the embedded PostgreSQL",
    )
    args = parser.parse_args()
    if args.command == "migrate":
        migrate()
        print("migrations applied")
    elif args.command == "stop":
        settings = get_settings()
        stopped = stop_embedded_server(settings.data_dir)
        print(
            "embedded PostgreSQL stopped"
            if stopped
            else f"no embedded PostgreSQL running under {settings.data_dir / 'pg'}"
        )
    elif args.command == "url":
        print(sqlalchemy_url())
    else:
        for key, value in feast_env().items():
            print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    _main()

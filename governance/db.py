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
import logging
import os
import shlex
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


def feast_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment that `feature_repo/feature_store.yaml` reads through `${...}`."""
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

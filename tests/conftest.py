"""Shared fixtures: real PostgreSQL and Redis, one throwaway database per test that needs it.

The machine's PostgreSQL is reached through CARTWISE_TEST_ADMIN_URL (default: the local
server's `test` database). A migrated template database is made once per session; each
`settings` fixture clones it, so tests never see each other's rows and parallel runs of the
suite do not collide.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import psycopg2
import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

from governance.db import migrate
from governance.settings import Settings

ADMIN_URL = os.environ.get("CARTWISE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CARTWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_PSEUDONYM_KEY = "test-pseudonym-key"


@contextmanager
def _admin_cursor():
    # CREATE/DROP DATABASE cannot run in a transaction; psycopg2's `with conn` opens one.
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _url_for(database: str) -> str:
    return make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def _drop(database: str) -> None:
    with _admin_cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_database() -> str:
    name = f"cw_tmpl_{uuid.uuid4().hex[:10]}"
    with _admin_cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    migrate(Settings(database_url=_url_for(name), pseudonym_key=TEST_PSEUDONYM_KEY))
    yield name
    _drop(name)


def make_database(template: str) -> str:
    name = f"cw_test_{uuid.uuid4().hex[:10]}"
    with _admin_cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


@pytest.fixture
def database_url(template_database):
    name = make_database(template_database)
    yield _url_for(name)
    _drop(name)


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """Settings for one test: its own migrated database, SQLite online store under tmp_path."""
    return Settings(
        database_url=database_url,
        redis_url=None,
        data_dir=tmp_path / "data",
        pseudonym_key=TEST_PSEUDONYM_KEY,
    )


@pytest.fixture
def redis_url():
    """A Redis logical database chosen at random and emptied, so runs do not share keys."""
    db = 1 + uuid.uuid4().int % 15
    url = f"{REDIS_URL}/{db}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A local three-master Redis Cluster (TLS only, ACL user) for the session, then stopped."""
    from redis_cluster import RedisCluster, tools_available

    if not tools_available():
        pytest.fail("redis-server, redis-cli and openssl are needed for the Redis Cluster tests")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()

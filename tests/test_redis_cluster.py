"""Online store at scale: Redis Cluster, TLS and ACL users reach Feast's online-store config,
and materialisation into a real local Redis Cluster (TLS only, default user off) reads back
the offline values with 0 consistency mismatches."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from features import pipeline
from governance.db import feast_env
from governance.redis_url import feast_online_store, parse_redis_url, redis_client
from governance.settings import Settings
from tests import feature_events as synthetic


def _block(url: str, cluster: bool = False) -> dict:
    return yaml.safe_load(feast_online_store(url, cluster=cluster))


def test_plain_url_keeps_db():
    assert _block("redis://cache:6380/3") == {
        "type": "redis",
        "redis_type": "redis",
        "connection_string": "cache:6380,db=3",
    }


def test_tls_acl_user_and_params_reach_the_connection_string():
    block = _block("rediss://app%40shop:p%27w@cache:6380/0?ssl_cert_reqs=none")
    assert block["connection_string"] == (
        "cache:6380,db=0,ssl=true,username=app@shop,password=p'w,ssl_cert_reqs=none"
    )


def test_cluster_takes_every_seed_node():
    block = _block("rediss://u:pw@h1:7000,h2:7001,h3:7002", cluster=True)
    assert block["redis_type"] == "redis_cluster"
    assert block["connection_string"] == "h1:7000,h2:7001,h3:7002,ssl=true,username=u,password=pw"


def test_numeric_password_stays_a_string():
    # Feast json-decodes connection-string values; 1234 must reach redis-py as "1234".
    assert 'password="1234"' in _block("redis://:1234@h:1")["connection_string"]


@pytest.mark.parametrize(
    ("url", "cluster", "reason"),
    [
        ("http://h:1", False, "redis:// or rediss://"),
        ("redis://h1:1,h2:2", False, "CARTWISE_REDIS_CLUSTER"),
        ("redis://h1:1/2", True, "only database 0"),
        ("redis://u:a,b@h:1", False, "cannot carry"),
    ],
)
def test_bad_urls_say_what_to_do(url, cluster, reason):
    with pytest.raises(ValueError, match=reason):
        feast_online_store(url, cluster=cluster)


def test_feast_env_uses_the_cluster_setting():
    s = Settings(
        database_url="postgresql://u@h:5432/d",
        redis_url="rediss://u:pw@h1:7000,h2:7001",
        redis_cluster=True,
    )
    block = yaml.safe_load(feast_env(s)["CARTWISE_ONLINE_STORE"])
    assert block["redis_type"] == "redis_cluster"
    assert parse_redis_url(s.redis_url).nodes == [("h1", 7000), ("h2", 7001)]


def test_cluster_refuses_the_default_user(redis_cluster):
    from redis.exceptions import AuthenticationError, RedisClusterException

    client = redis_client(redis_cluster.url, cluster=True, timeout_s=5)
    assert client.ping()
    client.close()
    anonymous = redis_cluster.url.replace("cartwise:s3cret-acl-pass@", "")
    with pytest.raises((RedisClusterException, AuthenticationError), match="Authentication"):
        redis_client(anonymous, cluster=True, timeout_s=5).ping()


def test_materialize_into_redis_cluster_is_consistent(template_database, redis_cluster, tmp_path):
    from conftest import _drop, _url_for, make_database

    from features import feast_store
    from features.consistency import check, sample_entities

    name = make_database(template_database)
    try:
        settings = Settings(
            database_url=_url_for(name),
            redis_url=redis_cluster.url,
            redis_cluster=True,
            data_dir=tmp_path / "data",
            feast_project=f"cw_{name[-10:]}",
        )
        synthetic.load(settings, n_sessions=60, days=4)
        pipeline.run(settings, embeddings=False)
        fs = feast_store.apply(settings)
        assert fs.config.online_store.redis_type == "redis_cluster"
        end = synthetic.T0 + timedelta(days=5)
        fs.materialize(start_date=synthetic.T0 - timedelta(days=1), end_date=end)
        report = check(fs, sample_entities(settings, n=20), at=end)
        assert report["compared"] > 0
        assert report["mismatches"] == []
    finally:
        _drop(name)

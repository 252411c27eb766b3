"""A Redis URL turned into Feast's online-store block and into a redis-py client.

    redis://[user[:password]@]host:port[/db][?param=value&...]
    rediss://...                               # TLS (Feast: ssl=true)
    rediss://user:pw@h1:7000,h2:7001,h3:7002   # several seed nodes (Redis Cluster)

With `CARTWISE_REDIS_CLUSTER=true` Feast gets `redis_type: redis_cluster` and every host of
the URL as a startup node (a cluster has only database 0, so a /db part is refused). A user
name selects a Redis ACL user. Query parameters pass through to redis-py as they are, e.g.
`?ssl_ca_certs=/etc/ssl/redis-ca.pem` for a private CA or `?ssl_cert_reqs=none` for a test
server. Feast's connection string is comma- and `=`-separated, so a password containing `,` or
`=` is refused with a message instead of being split into garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from redis.cluster import ClusterNode, RedisCluster


@dataclass
class RedisTarget:
    """What a Redis URL says: seed nodes, TLS, ACL credentials, database, extra parameters."""

    nodes: list[tuple[str, int]]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    params: dict[str, str] = field(default_factory=dict)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a (possibly multi-host) redis:// or rediss:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss:// (got {scheme!r})")
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    hosts, _, db = hostpart.partition("/")
    username = password = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    nodes = []
    for h in hosts.split(","):
        host, colon, port = h.strip().rpartition(":")
        if not colon:
            host, port = h.strip(), "6379"
        if not host:
            raise ValueError(f"REDIS_URL has an empty host in {hosts!r}")
        nodes.append((host.strip("[]"), int(port)))
    return RedisTarget(
        nodes=nodes,
        tls=scheme == "rediss",
        username=username,
        password=password,
        db=int(db) if db else 0,
        params=dict(parse_qsl(query)),
    )


def feast_online_store(url: str, cluster: bool = False, timeout_s: float | None = None) -> str:
    """Feast's `online_store` block for `url` as a YAML flow mapping (feature_store.yaml).

    `timeout_s`: connect and socket timeouts, and no redis-py retries (redis-py 7 retries 3
    times with up to 10 s backoff: seconds per call with Redis down, measured), so a dead or
    paused Redis costs one bounded call; the service's breaker decides when to try again."""
    t = parse_redis_url(url)
    if cluster and t.db:
        raise ValueError("Redis Cluster has only database 0: drop the /db part of REDIS_URL")
    if not cluster and len(t.nodes) > 1:
        raise ValueError("REDIS_URL names several hosts: set CARTWISE_REDIS_CLUSTER=true")
    parts = [f"{h}:{p}" for h, p in t.nodes]
    if not cluster:
        parts.append(f"db={t.db}")
    if t.tls:
        parts.append("ssl=true")
    for key, value in (("username", t.username), ("password", t.password), *t.params.items()):
        if value is None:
            continue
        if "," in value or "=" in value:
            raise ValueError(
                f"the Redis {key} contains ',' or '=', which Feast's connection string cannot "
                "carry: choose one without them"
            )
        # Feast json-decodes each value: quote one that would decode to a non-string.
        if key in ("username", "password") and _decodes_to_non_string(value):
            value = json.dumps(value)
        parts.append(f"{key}={value}")
    if timeout_s is not None:
        parts += [f"socket_timeout={timeout_s}", f"socket_connect_timeout={timeout_s}"]
        if not cluster:
            parts.append("retry=null")  # Feast json-decodes it: redis.Redis(retry=None)
    conn = ",".join(parts).replace("'", "''")  # YAML single-quoted scalar
    redis_type = "redis_cluster" if cluster else "redis"
    return f"{{type: redis, redis_type: {redis_type}, connection_string: '{conn}'}}"


def _decodes_to_non_string(value: str) -> bool:
    try:
        return not isinstance(json.loads(value), str)
    except json.JSONDecodeError:
        return False


def redis_client(url: str, cluster: bool = False, timeout_s: float = 0.5):
    """A redis-py client (RedisCluster when `cluster`) with connect and socket timeouts."""
    import redis  # only programs that talk to Redis need it loaded

    t = parse_redis_url(url)
    kwargs = dict(
        username=t.username,
        password=t.password,
        ssl=t.tls,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        **t.params,
    )
    if cluster:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.nodes], **kwargs)
    host, port = t.nodes[0]
    # retry=None: no retries with backoff inside one call (see feast_online_store).
    return redis.Redis(host=host, port=port, db=t.db, retry=None, **kwargs)

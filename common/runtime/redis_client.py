"""A Redis client configured from the environment, with short timeouts on every call: one server, a Redis
Cluster or a Sentinel-managed master, each through redis-py's own client (``Redis``, ``RedisCluster``,
``Sentinel.master_for``).

Variables (the names CVAT's deployments use, plus a few of our own):

- ``CVAT_FUNCTIONS_REDIS_HOST`` (one server), ``CVAT_FUNCTIONS_REDIS_CLUSTER`` (a cluster: seed nodes as
  ``host:port,host:port``) or ``CVAT_FUNCTIONS_REDIS_SENTINELS`` (sentinels as ``host:port,...``, with
  ``CVAT_FUNCTIONS_REDIS_SENTINEL_SERVICE``, the master's name, ``mymaster`` by default): no Redis is used when
  none is set; setting two of them is an error;
- ``CVAT_FUNCTIONS_REDIS_PORT`` (6379, one server), ``CVAT_FUNCTIONS_REDIS_DB`` (0; a cluster has only 0);
- ``CVAT_FUNCTIONS_REDIS_USERNAME`` (an ACL user) and ``CVAT_FUNCTIONS_REDIS_PASSWORD``, for the data nodes;
  ``CVAT_FUNCTIONS_REDIS_SENTINEL_PASSWORD`` for the sentinels when they have their own;
- ``CVAT_FUNCTIONS_REDIS_TLS``: ``1``/``true`` to connect to every node (and sentinel) with TLS;
- ``CVAT_FUNCTIONS_REDIS_TIMEOUT``: seconds for connecting and for each reply (2). A Redis that accepts the
  connection but does not answer counts as unreachable after this long, so it never holds a worker until
  Nuclio's event timeout.

Every client tries each call once (the caller decides what a failure means: a 503, or carrying on without a
cache); a cluster or Sentinel client learns the new master after a failover on the next call.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import OutOfMemoryError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from common.core.settings import current_env, env_bool, env_float, env_int, env_str

PREFIX = "CVAT_FUNCTIONS_REDIS_"
Client = Any  # redis.Redis, or RedisCluster (the same commands and pipelines, spread over nodes)


def nodes(text: str, variable: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        host, _, port = item.rpartition(":")
        if not item or not host or not port.isdigit():
            raise ValueError(f"{variable}: {item!r} is not host:port (a comma-separated list of them)")
        found.append((host.strip("[]"), int(port)))
    return found


def mode(env: Mapping[str, str]) -> str | None:
    """``single``, ``cluster``, ``sentinel`` or None (no Redis configured)."""
    given = [name for name, variable in (("single", "HOST"), ("cluster", "CLUSTER"), ("sentinel", "SENTINELS"))
             if env_str(PREFIX + variable, env=env)]
    if len(given) > 1:
        raise ValueError(f"set only one of {PREFIX}HOST, {PREFIX}CLUSTER and {PREFIX}SENTINELS "
                           f"(found {', '.join(given)})")
    return given[0] if given else None


def describe(env: Mapping[str, str] | None = None) -> str:
    """Where the configured Redis is, for messages (never a password)."""
    env = current_env() if env is None else env
    kind = mode(env)
    if kind == "cluster":
        return f"cluster {env_str(PREFIX + 'CLUSTER', env=env)}"
    if kind == "sentinel":
        service = env_str(PREFIX + "SENTINEL_SERVICE", "mymaster", env)
        return f"master {service!r} of sentinels {env_str(PREFIX + 'SENTINELS', env=env)}"
    return f"{env_str(PREFIX + 'HOST', env=env)}:{env_int(PREFIX + 'PORT', 6379, env)}/{env_int(PREFIX + 'DB', 0, env)}"


def from_env(env: Mapping[str, str] | None = None) -> Client | None:
    """The configured client, or None when no Redis is configured. Does not connect yet (a cluster's client is
    made on its first call, see :class:`LazyCluster`)."""
    env = current_env() if env is None else env
    kind = mode(env)
    if kind is None:
        return None
    timeout = env_float(PREFIX + "TIMEOUT", 2.0, env)
    common: dict[str, Any] = {
        "username": env.get(PREFIX + "USERNAME") or None,
        "password": env.get(PREFIX + "PASSWORD") or None,  # as given: a password may hold blanks
        "ssl": env_bool(PREFIX + "TLS", False, env),
        "socket_timeout": timeout, "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),  # one try per call: the caller decides what a failure means
    }
    db = env_int(PREFIX + "DB", 0, env)
    if kind == "cluster":
        if db != 0:
            raise ValueError(f"{PREFIX}DB={db}: a Redis Cluster has database 0 only")
        seeds = [ClusterNode(host, port) for host, port in nodes(env_str(PREFIX + "CLUSTER", env=env),
                                                                 PREFIX + "CLUSTER")]
        return LazyCluster(lambda: RedisCluster(startup_nodes=seeds, **common), describe(env))
    if kind == "sentinel":
        sentinel_auth = {"password": env.get(PREFIX + "SENTINEL_PASSWORD") or None, "ssl": common["ssl"],
                         "socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinels = Sentinel(nodes(env_str(PREFIX + "SENTINELS", env=env), PREFIX + "SENTINELS"),
                             sentinel_kwargs=sentinel_auth, **common)
        return sentinels.master_for(env_str(PREFIX + "SENTINEL_SERVICE", "mymaster", env), db=db, **common)
    return redis.Redis(host=env_str(PREFIX + "HOST", env=env), port=env_int(PREFIX + "PORT", 6379, env), db=db,
                       **common)


class ClusterUnreachable(redis.ConnectionError):
    """No seed node of the cluster answered when the client was made."""


class LazyCluster:
    """A ``RedisCluster`` made on first use, and made again after a call that failed (:meth:`reset`): redis-py's
    cluster client reads the slot map when it is made, so a cluster not yet reachable when a worker starts (its
    pods still starting) is a failed call, retried on the next one, as with a single server, rather than a
    worker that never starts; and a failover is followed on the next call."""

    def __init__(self, make: Callable[[], RedisCluster], where: str):
        self._make, self._where, self._client, self._lock = make, where, None, threading.Lock()

    def client(self) -> RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except (redis.RedisError, RedisClusterException) as exc:
                        raise ClusterUnreachable(f"the Redis Cluster ({self._where}) cannot be reached: "
                                                 f"{exc}") from None
        return self._client

    def reset(self) -> None:
        """Forget the client after a failed call, so that the next call reads the slot map afresh: after a
        failover, redis-py's client can keep sending one slot's commands to the master that is gone."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing the connections of a dead node may fail too; they are dropped anyway
                pass

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """The client's method ``name``, the client made when the method is called (inside the caller's error
        handling), not when it is looked up."""
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.client(), name)(*args, **kwargs)
        return call


def failure(exc: redis.RedisError, what: str, where: str) -> str:
    """A client's message for a Redis error: full (maxmemory), unreachable, or failing (``what`` names the store)."""
    text = str(exc)
    if isinstance(exc, OutOfMemoryError) or (isinstance(exc, redis.ResponseError) and "maxmemory" in text):
        return (f"{what} (Redis at {where}) is full: it reached its maxmemory and evicts nothing (noeviction); "
                "free memory, raise maxmemory or lower TRACKER_STATE_TTL, then try again")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or "CLUSTERDOWN" in text or "TRYAGAIN" in text:
        return (f"{what} (Redis at {where}) is unreachable or failing over ({type(exc).__name__}); "
                "try again in a moment")
    return f"{what} (Redis at {where}) failed: {text[:200]}"


def reset_after_failure(client: Client) -> None:
    """After a failed call: a cluster's client is made again on the next call (see :meth:`LazyCluster.reset`);
    other clients reconnect by themselves."""
    if isinstance(client, LazyCluster):
        client.reset()

"""A Redis client configured from the environment, with short timeouts on every call.

Variables (the names CVAT's deployments use, plus a few of our own):

- ``CVAT_FUNCTIONS_REDIS_HOST``: no Redis is used when unset or empty;
- ``CVAT_FUNCTIONS_REDIS_PORT`` (6379), ``CVAT_FUNCTIONS_REDIS_PASSWORD``, ``CVAT_FUNCTIONS_REDIS_DB`` (0);
- ``CVAT_FUNCTIONS_REDIS_TLS``: ``1``/``true`` to connect with TLS;
- ``CVAT_FUNCTIONS_REDIS_TIMEOUT``: seconds for connecting and for each reply (2). A Redis that accepts the
  connection but does not answer counts as unreachable after this long, so it never holds a worker until
  Nuclio's event timeout.
"""

from __future__ import annotations

from typing import Mapping

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.core.settings import current_env, env_bool, env_float, env_int, env_str

PREFIX = "CVAT_FUNCTIONS_REDIS_"


def describe(env: Mapping[str, str] | None = None) -> str:
    """``host:port/db`` of the configured Redis, for messages (never the password)."""
    return f"{env_str(PREFIX + 'HOST', env=env)}:{env_int(PREFIX + 'PORT', 6379, env)}/{env_int(PREFIX + 'DB', 0, env)}"


def from_env(env: Mapping[str, str] | None = None) -> redis.Redis | None:
    """The configured client, or None when ``CVAT_FUNCTIONS_REDIS_HOST`` is not set. Does not connect yet."""
    env = current_env() if env is None else env
    host = env_str(PREFIX + "HOST", env=env)
    if not host:
        return None
    timeout = env_float(PREFIX + "TIMEOUT", 2.0, env)
    return redis.Redis(
        host=host,
        port=env_int(PREFIX + "PORT", 6379, env),
        db=env_int(PREFIX + "DB", 0, env),
        password=env.get(PREFIX + "PASSWORD") or None,  # as given: a password may hold blanks
        ssl=env_bool(PREFIX + "TLS", False, env),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # one try per call: the caller decides what a failure means
    )

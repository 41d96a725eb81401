"""Tracker state kept on the server: clients hold opaque tokens, the arrays live in Redis (or in memory).

A token is 128 random bits written as 22 URL-safe characters. What it names is a payload of
:mod:`common.runtime.arrays` (NumPy arrays with explicit dtype and shape plus JSON metadata, read back without
pickle), stored under ``cvat-functions:state:<namespace>:<token>`` with an expiry that every read refreshes.

States are immutable: each tracking step stores a new state under a new token and leaves the previous one
alone until it expires. A client that goes back to an earlier frame and tracks again from there therefore
continues from exactly the state it had then. Memory stays bounded because step states are small (large,
unchanging parts such as a tracker's template features are stored once and referenced by token) and every
entry expires ``TRACKER_STATE_TTL`` seconds (default 3600) after its last use.

Errors a client sees: a malformed token → 400; an unknown, expired or damaged state → 410 asking it to start
the track again; Redis unreachable or not answering within ``CVAT_FUNCTIONS_REDIS_TIMEOUT`` → 503. The Redis
client reconnects on the next call, so service resumes by itself when Redis is back.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import redis

from common.runtime import arrays, redis_client
from common.core.errors import FunctionError, RequestError, UnavailableError
from common.core.settings import env_int

TOKEN_BYTES = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
KEY_PREFIX = "cvat-functions:state:"


class StateGone(FunctionError):
    """The state a token names is unknown, expired or damaged: the client must start the track again."""

    status = 410


class StoreUnavailable(UnavailableError):
    """The state store cannot be reached; the request may be retried."""


class Backend(Protocol):
    def set(self, key: str, data: bytes, ttl: int) -> None: ...

    def get(self, key: str, ttl: int) -> bytes | None: ...  # refreshes the expiry

    def get_many(self, keys: list[str], ttl: int) -> list[bytes | None]: ...  # one round trip

    def delete(self, key: str) -> None: ...


class RedisBackend:
    """Entries in Redis with ``SET ... EX`` and ``GETEX ... EX``; every failure becomes :class:`StoreUnavailable`."""

    def __init__(self, client: redis.Redis, where: str):
        self.client = client
        self.where = where

    def _call(self, method: Callable, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"the tracker state store (Redis at {self.where}) is unreachable ({type(exc).__name__}); "
                "try again in a moment"
            ) from None
        except redis.RedisError as exc:
            raise StoreUnavailable(f"the tracker state store (Redis at {self.where}) failed: {exc}") from None

    def set(self, key: str, data: bytes, ttl: int) -> None:
        self._call(self.client.set, key, data, ex=ttl)

    def get(self, key: str, ttl: int) -> bytes | None:
        return self._call(self.client.getex, key, ex=ttl)

    def get_many(self, keys: list[str], ttl: int) -> list[bytes | None]:
        """``GETEX`` of every key in one pipelined round trip (not a transaction)."""
        def run():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.getex(key, ex=ttl)
            return pipe.execute()
        return self._call(run)

    def delete(self, key: str) -> None:
        self._call(self.client.delete, key)


class MemoryBackend:
    """This process's memory, for when no Redis exists: entries expire and the oldest go beyond ``max_entries``."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.max_entries = max_entries
        self.clock = clock
        self.lock = threading.Lock()

    def set(self, key: str, data: bytes, ttl: int) -> None:
        with self.lock:
            self.entries[key] = (bytes(data), self.clock() + ttl)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)

    def get(self, key: str, ttl: int) -> bytes | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            if entry[1] <= self.clock():
                del self.entries[key]
                return None
            self.entries[key] = (entry[0], self.clock() + ttl)
            self.entries.move_to_end(key)
            return entry[0]

    def get_many(self, keys: list[str], ttl: int) -> list[bytes | None]:
        return [self.get(key, ttl) for key in keys]

    def delete(self, key: str) -> None:
        with self.lock:
            self.entries.pop(key, None)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class StateStore:
    """Immutable states under random tokens, in one namespace (a function's name)."""

    def __init__(self, backend: Backend, namespace: str, ttl: int = 3600):
        self.backend = backend
        self.namespace = namespace
        self.ttl = int(ttl)

    def key(self, token: str) -> str:
        return f"{KEY_PREFIX}{self.namespace}:{token}"

    def put(self, data: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> str:
        """Store a new state; its token."""
        token = new_token()
        self.backend.set(self.key(token), arrays.pack(data, meta), self.ttl)
        return token

    def get(self, token: object, what: str = "state") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays and metadata a token names; its expiry starts again."""
        self._check(token, what)
        return self._unpack(token, what, self.backend.get(self.key(token), self.ttl))

    def get_many(self, tokens: list[object], whats: list[str]) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """:meth:`get` of several tokens (``whats`` name them in errors) in one round trip to the store."""
        for token, what in zip(tokens, whats):
            self._check(token, what)
        found = self.backend.get_many([self.key(token) for token in tokens], self.ttl)
        return [self._unpack(token, what, data) for token, what, data in zip(tokens, whats, found)]

    @staticmethod
    def _check(token: object, what: str) -> None:
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            raise RequestError(f"{what} is not a tracker state of this function; start the track again")

    def _unpack(self, token: str, what: str, data: bytes | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if data is None:
            raise StateGone(f"{what} is unknown or has expired; start the track again")
        try:
            return arrays.unpack(data)
        except arrays.PayloadError as exc:
            self.backend.delete(self.key(token))
            raise StateGone(f"{what} is damaged ({exc}); start the track again") from None

    def delete(self, token: str) -> None:
        self.backend.delete(self.key(token))


def from_env(namespace: str, warn: Callable[[str], None], env: Mapping[str, str] = os.environ) -> StateStore:
    """Redis when ``CVAT_FUNCTIONS_REDIS_HOST`` is set, else this process's memory (with a warning)."""
    ttl = env_int("TRACKER_STATE_TTL", 3600, env)
    client = redis_client.from_env(env)
    if client is not None:
        return StateStore(RedisBackend(client, redis_client.describe(env)), namespace, ttl)
    warn("no Redis configured (CVAT_FUNCTIONS_REDIS_HOST): tracker states live in this worker's memory, so "
         "the function must run with one worker and one replica, and states are lost when it restarts")
    return StateStore(MemoryBackend(), namespace, ttl)

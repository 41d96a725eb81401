"""Caches of image embeddings for promptable segmenters (SAM, SAM 2).

A click on an image whose embedding is cached runs only the prompt encoder and mask decoder. Keys are
built by the caller from a hash of the image bytes as sent plus the model identity. Values are
:class:`Entry` objects: named float arrays plus JSON metadata (sizes needed to map coordinates).

- :class:`MemoryCache`: in-process LRU bounded in bytes, entries expire after ``ttl`` seconds.
- :class:`RedisCache`: shared by every worker and replica; entries serialised with :mod:`common.runtime.arrays`
  (no pickle) and expire after ``ttl`` seconds, refreshed on use. Redis errors and timeouts are logged as
  warnings and the call carries on without the cache; Redis is then left alone for ``retry_after`` seconds
  so that a down or hung Redis costs one timeout, not one per click.
- :class:`TieredCache`: a worker's own LRU in front of Redis, so repeated clicks in one worker skip the
  transfer. It writes to Redis from a background thread: a cold click's answer does not wait for the
  embedding's upload (when uploads back up behind a slow Redis, new ones stay in the worker's tier only);
  a precompute request (an image without prompts) waits for it, so that any worker finds it next.

:func:`from_env` builds what the environment asks for (see the README's variable table).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import redis

from common.core.settings import env_float
from common.runtime import arrays, redis_client

Warn = Callable[[str], None]


@dataclass
class Entry:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(value.nbytes for value in self.arrays.values())


class Cache(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def put(self, key: str, entry: Entry) -> None: ...

    def flush(self) -> None: ...  # returns once what put wrote is visible to other workers


class MemoryCache:
    """LRU of entries, at most ``max_bytes`` of arrays in all; entries older than ``ttl`` seconds expire."""

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.max_bytes, self.ttl, self.clock = max_bytes, ttl, clock
        self._items: OrderedDict[str, tuple[float, Entry]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Entry | None:
        item = self._items.get(key)
        if item is None:
            return None
        stored_at, entry = item
        if self.clock() - stored_at > self.ttl:
            self._drop(key)
            return None
        self._items[key] = (self.clock(), entry)  # use refreshes both recency and expiry
        self._items.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        if key in self._items:
            self._drop(key)
        if entry.nbytes > self.max_bytes:
            return
        self._items[key] = (self.clock(), entry)
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def discard(self, key: str) -> None:
        """Forget ``key`` if it is held."""
        if key in self._items:
            self._drop(key)

    def flush(self) -> None:
        """Nothing is ever pending here."""

    def _drop(self, key: str) -> None:
        _, entry = self._items.pop(key)
        self.nbytes -= entry.nbytes


class RedisCache:
    """Entries in Redis under ``prefix + key``, expiring ``ttl`` seconds after their last use."""

    def __init__(self, client: redis.Redis, ttl: float, warn: Warn, prefix: str = "cvat-functions:embedding:",
                 retry_after: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.client, self.ttl, self.warn, self.prefix = client, max(1, int(ttl)), warn, prefix
        self.retry_after, self.clock = retry_after, clock
        self._down_until = 0.0

    def get(self, key: str) -> Entry | None:
        data = self._call("read", lambda: self.client.getex(self.prefix + key, ex=self.ttl))
        if data is None:
            return None
        try:
            found, meta = arrays.unpack(data)
        except arrays.PayloadError as exc:
            self.warn(f"dropping unreadable embedding cache entry: {exc}")
            self._call("delete", lambda: self.client.delete(self.prefix + key))
            return None
        return Entry(found, meta)

    def put(self, key: str, entry: Entry) -> None:
        payload = arrays.pack(entry.arrays, entry.meta)
        self._call("write", lambda: self.client.set(self.prefix + key, payload, ex=self.ttl))

    def flush(self) -> None:
        """Writes are done when put returns."""

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        if self.clock() < self._down_until:
            return None
        try:
            return action()
        except redis.RedisError as exc:
            redis_client.reset_after_failure(self.client)
            self._down_until = self.clock() + self.retry_after
            self.warn(f"embedding cache: Redis {what} failed ({type(exc).__name__}: {exc}); "
                      f"answering without the shared cache, next try in {self.retry_after:g} s")
            return None


class TieredCache:
    """A local cache consulted first, then a shared one; hits in the shared one fill the local one. Writes to
    the shared one happen in a background thread, at most ``pending`` at a time."""

    def __init__(self, local: Cache, shared: Cache, pending: int = 2):
        self.local, self.shared = local, shared
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="embedding-cache-writer")
        self._slots = threading.BoundedSemaphore(pending)
        self._last: Future | None = None

    def get(self, key: str) -> Entry | None:
        entry = self.local.get(key)
        if entry is None:
            entry = self.shared.get(key)
            if entry is not None:
                self.local.put(key, entry)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        self.local.put(key, entry)
        if not self._slots.acquire(blocking=False):
            return  # uploads are backed up behind a slow shared cache: this one stays in the local tier

        def write() -> None:
            try:
                self.shared.put(key, entry)
            finally:
                self._slots.release()

        self._last = self._writer.submit(write)

    def flush(self) -> None:
        """Wait for the uploads submitted so far (one writer thread: the last one finishes last)."""
        if self._last is not None:
            self._last.result()


def from_env(warn: Warn, env: Mapping[str, str] | None = None) -> Cache:
    """``EMBEDDING_CACHE_BYTES`` (per worker, 512 MiB; 0 turns the local cache off) and
    ``EMBEDDING_CACHE_TTL`` (seconds, 900); Redis in addition when ``CVAT_FUNCTIONS_REDIS_HOST`` is set."""
    ttl = env_float("EMBEDDING_CACHE_TTL", 900, env)
    local = MemoryCache(int(env_float("EMBEDDING_CACHE_BYTES", 512 * 2**20, env)), ttl)
    client = redis_client.from_env(env)
    if client is None:
        return local
    return TieredCache(local, RedisCache(client, ttl, warn))

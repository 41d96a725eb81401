"""Tracker state kept on the server: clients hold opaque tokens, the arrays live in Redis (or in memory).

A token is 22 URL-safe characters: a 6-character track tag (36 random bits, drawn when a track starts and
shared by every state of that track) and 16 random characters (96 bits). What it names is a payload of
:mod:`common.runtime.arrays` (NumPy arrays with explicit dtype and shape plus JSON metadata, read back without
pickle), stored under ``cvat-functions:state:<namespace>:{<tag>}<rest>`` with an expiry that every read
refreshes.

Why the tag: on a Redis Cluster a key's slot is the hash of what its braces hold, so every key of one track
(its template or prompt-frame memory, its step states, its memory entries) lands in one slot, on one master.
A request on one object then reads and writes in one pipelined round trip to one node, and a failover keeps
or loses a track as a whole. A request on several objects (SAM 2's batched steps) touches several tracks, so
several slots: redis-py's cluster pipeline sends each node its share; nothing here uses a multi-key command,
a transaction, SCAN or a database other than 0, which a cluster would refuse.

States are immutable: each tracking step stores a new state under a new token and leaves the previous one
alone until it expires. A client that goes back to an earlier frame and tracks again from there therefore
continues from exactly the state it had then. Memory stays bounded because step states are small (large,
unchanging parts such as a tracker's template features are stored once and referenced by token) and every
entry expires ``TRACKER_STATE_TTL`` seconds (default 3600) after its last use.

A worker also keeps the states it recently wrote or read, unpacked, in a cache bounded in bytes
(``TRACKER_CACHE_BYTES``, default 256 MiB; ``0`` turns it off): a token's state never changes, so a hit skips
the transfer and the unpacking. Redis stays the authority on what exists: a hit still refreshes the entry's
expiry in the same pipelined round trip (``EXPIRE``), and an entry gone from Redis is gone here too.

Errors a client sees: a malformed token → 400; an unknown, expired or damaged state → 410 asking it to start
the track again; Redis unreachable or not answering within ``CVAT_FUNCTIONS_REDIS_TIMEOUT`` → 503. The Redis
client reconnects on the next call, so service resumes by itself when Redis is back.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import redis

from common.runtime import arrays, redis_client
from common.runtime.embedding_cache import Entry, MemoryCache
from common.core.errors import FunctionError, RequestError, UnavailableError
from common.core.settings import env_int

TOKEN_BYTES = 16
TAG_LENGTH = 6  # a token's first characters: its track's tag, the hash tag of its key
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
KEY_PREFIX = "cvat-functions:state:"


class StateGone(FunctionError):
    """The state a token names is unknown, expired or damaged: the client must start the track again."""

    status = 410


class StoreUnavailable(UnavailableError):
    """The state store cannot be reached; the request may be retried."""


class Backend(Protocol):
    def set(self, key: str, data: bytes, ttl: int) -> None: ...
    def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None: ...  # one round trip

    def get(self, key: str, ttl: int) -> bytes | None: ...  # refreshes the expiry

    # one round trip; for keys in ``touch`` only the expiry is refreshed and b"" stands for "exists"
    def get_many(self, keys: list[str], ttl: int, touch: frozenset[str] = frozenset()) -> list[bytes | None]: ...

    def delete(self, key: str) -> None: ...


class RedisBackend:
    """Entries in Redis with ``SET ... EX`` and ``GETEX ... EX``; every failure becomes :class:`StoreUnavailable`."""

    def __init__(self, client: redis.Redis, where: str):
        self.client = client
        self.where = where

    def _call(self, method: Callable, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:  # unreachable, failing over, full: each a 503 saying which
            if not isinstance(exc, redis.ResponseError):
                redis_client.reset_after_failure(self.client)
            raise StoreUnavailable(redis_client.failure(exc, "the tracker state store", self.where)) from None
        except IndexError:  # redis-py's cluster pipeline, when a node of its slot map is gone mid-failover
            redis_client.reset_after_failure(self.client)
            raise StoreUnavailable(f"the tracker state store (Redis at {self.where}) is failing over; "
                                   "try again in a moment") from None

    def set(self, key: str, data: bytes, ttl: int) -> None:
        self._call(self.client.set, key, data, ex=ttl)

    def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        """``SET ... EX`` of every item in one pipelined round trip."""
        def run():
            pipe = self.client.pipeline(transaction=False)
            for key, data in items:
                pipe.set(key, data, ex=ttl)
            return pipe.execute()
        self._call(run)

    def get(self, key: str, ttl: int) -> bytes | None:
        return self._call(self.client.getex, key, ex=ttl)

    def get_many(self, keys: list[str], ttl: int, touch: frozenset[str] = frozenset()) -> list[bytes | None]:
        """``GETEX`` of every key (``EXPIRE`` of those in ``touch``) in one pipelined round trip (not a
        transaction)."""
        def run():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                if key in touch:
                    pipe.expire(key, ttl)
                else:
                    pipe.getex(key, ex=ttl)
            return pipe.execute()
        found = self._call(run)
        return [(b"" if value else None) if key in touch else value for key, value in zip(keys, found)]

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

    def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        for key, data in items:
            self.set(key, data, ttl)

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

    def get_many(self, keys: list[str], ttl: int, touch: frozenset[str] = frozenset()) -> list[bytes | None]:
        found = [self.get(key, ttl) for key in keys]
        return [b"" if key in touch and data is not None else data for key, data in zip(keys, found)]

    def delete(self, key: str) -> None:
        with self.lock:
            self.entries.pop(key, None)


def state_key(namespace: str, token: str) -> str:
    """The Redis key of a token's state: its track tag in braces, the hash tag of a cluster slot."""
    return f"{KEY_PREFIX}{namespace}:{{{token[:TAG_LENGTH]}}}{token[TAG_LENGTH:]}"


def new_token(near: str | None = None) -> str:
    """A new token; with ``near`` (a token of the same track) it shares that token's track tag."""
    tag = near[:TAG_LENGTH] if near else secrets.token_urlsafe(TOKEN_BYTES)[:TAG_LENGTH]
    return tag + secrets.token_urlsafe(TOKEN_BYTES)[:22 - TAG_LENGTH]


State = tuple[dict[str, np.ndarray], dict[str, Any]]


class StateStore:
    """Immutable states under random tokens, in one namespace (a function's name); ``cache_bytes`` bounds the
    worker's cache of recently used states (0: none)."""

    def __init__(self, backend: Backend, namespace: str, ttl: int = 3600, cache_bytes: int = 0):
        self.backend = backend
        self.namespace = namespace
        self.ttl = int(ttl)
        # unpacked states by token, read-only (every reader shares them); Redis keeps their expiry
        self.cache = MemoryCache(cache_bytes, math.inf) if cache_bytes > 0 else None
        self._stored = threading.local()

    def stored_bytes(self) -> int:
        """The bytes this thread has stored so far (packed payloads, keys aside): the difference over a request
        is what it cost the store."""
        return getattr(self._stored, "total", 0)

    def key(self, token: str) -> str:
        return state_key(self.namespace, token)

    def put(self, data: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None,
            near: str | None = None) -> str:
        """Store a new state; its token. ``near``: a token of the same track (its keys share a slot), None for
        the first state of a new track."""
        return self.put_many([(data, meta)], [near])[0]

    def put_many(self, states: list[tuple[Mapping[str, np.ndarray], Mapping[str, Any] | None]],
                 near: list[str | None] | None = None) -> list[str]:
        """:meth:`put` of several states (arrays, metadata) in one round trip; their tokens. ``near[i]``: a
        token of state i's track."""
        near = [None] * len(states) if near is None else near
        if len(near) != len(states):
            raise ValueError(f"put_many: {len(states)} states but {len(near)} tracks")
        tokens = [new_token(n) for n in near]
        payloads = [arrays.pack(data, meta) for data, meta in states]
        self._stored.total = self.stored_bytes() + sum(len(p) for p in payloads)
        if len(payloads) == 1:
            self.backend.set(self.key(tokens[0]), payloads[0], self.ttl)
        elif payloads:
            self.backend.set_many([(self.key(t), p) for t, p in zip(tokens, payloads)], self.ttl)
        for token, payload in zip(tokens, payloads):
            self._remember(token, arrays.unpack(payload))
        return tokens

    def get(self, token: object, what: str = "state") -> State:
        """The arrays and metadata a token names; its expiry starts again."""
        return self.get_many([token], [what])[0]

    def get_many(self, tokens: list[object], whats: list[str]) -> list[State]:
        """:meth:`get` of several tokens (``whats`` name them in errors) in one round trip to the store."""
        for token, what in zip(tokens, whats):
            self._check(token, what)
        cached = {} if self.cache is None else {t: e for t in tokens if (e := self.cache.get(t)) is not None}
        keys = [self.key(token) for token in tokens]
        found = self.backend.get_many(keys, self.ttl, frozenset(self.key(token) for token in cached))
        states = []
        for token, what, data in zip(tokens, whats, found):
            if token in cached and data is not None:
                states.append((cached[token].arrays, cached[token].meta))
                continue
            if token in cached:  # gone from the store: gone here too
                self.cache.discard(token)
            states.append(self._unpack(token, what, data))
        return states

    @staticmethod
    def _check(token: object, what: str) -> None:
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            raise RequestError(f"{what} is not a tracker state of this function; start the track again")

    def _unpack(self, token: str, what: str, data: bytes | None) -> State:
        if data is None:
            raise StateGone(f"{what} is unknown or has expired; start the track again")
        try:
            state = arrays.unpack(data)
        except arrays.PayloadError as exc:
            self.backend.delete(self.key(token))
            raise StateGone(f"{what} is damaged ({exc}); start the track again") from None
        return self._remember(token, state)

    def _remember(self, token: str, state: State) -> State:
        if self.cache is not None:
            for value in state[0].values():
                value.flags.writeable = False
            self.cache.put(token, Entry(*state))
        return state

    def delete(self, token: str) -> None:
        if self.cache is not None:
            self.cache.discard(token)
        self.backend.delete(self.key(token))


def from_env(namespace: str, warn: Callable[[str], None], env: Mapping[str, str] | None = None) -> StateStore:
    """Redis when one is configured (``CVAT_FUNCTIONS_REDIS_HOST``, ``_CLUSTER`` or ``_SENTINELS``), else this
    process's memory (with a warning)."""
    ttl = env_int("TRACKER_STATE_TTL", 3600, env)
    client = redis_client.from_env(env)
    if client is not None:
        cache_bytes = env_int("TRACKER_CACHE_BYTES", 256 * 2**20, env)
        return StateStore(RedisBackend(client, redis_client.describe(env)), namespace, ttl, cache_bytes)
    warn("no Redis configured (CVAT_FUNCTIONS_REDIS_HOST): tracker states live in this worker's memory, so "
         "the function must run with one worker and one replica, and states are lost when it restarts")
    return StateStore(MemoryBackend(), namespace, ttl)

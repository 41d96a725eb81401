"""The tracker state store on a real redis-server: tokens, round trips, expiry, damage, outages."""

from __future__ import annotations

import base64
import os
import pickle
import time

import numpy as np
import pytest

from common.runtime import arrays, redis_client, state_store
from common.core.errors import RequestError
from common.runtime.state_store import MemoryBackend, RedisBackend, StateGone, StateStore, StoreUnavailable
from tests.redis_server import Clock, RedisServer, free_port, hung_redis


def redis_store(server, ttl: int = 60, namespace: str = "test") -> StateStore:
    env = server.env() if hasattr(server, "env") else server
    return StateStore(RedisBackend(redis_client.from_env(env), redis_client.describe(env)), namespace, ttl)


def test_tokens_are_128_random_bits_in_short_url_safe_strings():
    tokens = {state_store.new_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    for token in list(tokens)[:100]:
        assert len(token) == 22 and state_store.TOKEN_PATTERN.fullmatch(token)
        assert len(base64.urlsafe_b64decode(token + "==")) == 16
    bits = np.unpackbits(np.frombuffer(b"".join(base64.urlsafe_b64decode(t + "==") for t in tokens), np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01  # no stuck bits


def test_round_trip_with_expiry_refreshed_on_use(redis_server):
    store = redis_store(redis_server, ttl=30)
    template = np.arange(48 * 64, dtype=np.float32).reshape(1, 48, 8, 8)
    token = store.put({"template": template}, {"center": [1.5, 2.0], "legacy": False})
    client = redis_server.client()
    key = store.key(token)
    assert key == f"cvat-functions:state:test:{{{token[:6]}}}{token[6:]}"  # the track tag is the hash tag
    client.expire(key, 5)
    data, meta = store.get(token)
    assert np.array_equal(data["template"], template) and data["template"].dtype == np.float32
    assert meta == {"center": [1.5, 2.0], "legacy": False}
    assert 25 < client.ttl(key) <= 30  # reading refreshed the expiry


def test_expired_and_unknown_tokens_are_410(redis_server):
    store = redis_store(redis_server, ttl=1)
    token = store.put({}, {"x": 1})
    time.sleep(1.2)
    with pytest.raises(StateGone, match="expired; start the track again") as error:
        store.get(token, "states[0]")
    assert error.value.status == 410 and "states[0]" in error.value.message
    with pytest.raises(StateGone):
        store.get(state_store.new_token())


@pytest.mark.parametrize("token", [None, 17, "", "short", "x" * 21 + "!", "../../etc/passwd/aaaaaa", ["a"], {"k": 1}])
def test_malformed_tokens_are_400(redis_server, token):
    with pytest.raises(RequestError, match="not a tracker state"):
        redis_store(redis_server).get(token)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


@pytest.mark.parametrize("payload", [b"garbage", arrays.MAGIC + b"\x01not a zip", pickle.dumps(Exploit())])
def test_damaged_or_foreign_payloads_are_rejected_and_dropped(redis_server, payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = redis_store(redis_server)
    token = state_store.new_token()
    redis_server.client().set(store.key(token), payload)
    with pytest.raises(StateGone, match="damaged"):
        store.get(token)
    assert not redis_server.client().exists(store.key(token))
    assert not (tmp_path / "exploited").exists()


def test_namespaces_do_not_see_each_other(redis_server):
    a, b = redis_store(redis_server, namespace="a"), redis_store(redis_server, namespace="b")
    token = a.put({}, {"who": "a"})
    with pytest.raises(StateGone):
        b.get(token)


def test_unreachable_redis_is_503():
    store = redis_store({"CVAT_FUNCTIONS_REDIS_HOST": "127.0.0.1", "CVAT_FUNCTIONS_REDIS_PORT": str(free_port())})
    with pytest.raises(StoreUnavailable, match="unreachable") as error:
        store.put({}, {})
    assert error.value.status == 503


def test_a_hung_redis_is_503_within_the_timeout():
    with hung_redis() as env:
        store = redis_store(env)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.get(state_store.new_token())
        assert time.monotonic() - started < 2


def test_service_resumes_when_redis_comes_back():
    server = RedisServer().start()
    store = redis_store(server)
    token = store.put({}, {"n": 1})
    server.stop()
    with pytest.raises(StoreUnavailable):
        store.get(token)
    server.start()  # same port, empty (no persistence): old states are gone, new ones work
    try:
        with pytest.raises(StateGone):
            store.get(token)
        assert store.get(store.put({}, {"n": 2}))[1] == {"n": 2}
    finally:
        server.stop()


def test_memory_backend_expires_refreshes_and_bounds_entries():
    clock = Clock()
    store = StateStore(MemoryBackend(max_entries=3, clock=clock), "m", ttl=10)
    first = store.put({}, {"i": 0})
    clock.now += 8
    store.get(first)  # refreshed: 10 more seconds
    clock.now += 8
    assert store.get(first)[1] == {"i": 0}
    clock.now += 11
    with pytest.raises(StateGone):
        store.get(first)
    tokens = [store.put({}, {"i": i}) for i in range(4)]
    with pytest.raises(StateGone):
        store.get(tokens[0])  # the oldest went when the fourth came
    assert [store.get(t)[1]["i"] for t in tokens[1:]] == [1, 2, 3]


def test_from_env_uses_redis_when_configured_else_memory_with_a_warning(redis_server):
    warnings: list[str] = []
    store = state_store.from_env("f", warnings.append, {**redis_server.env(), "TRACKER_STATE_TTL": "42"})
    assert isinstance(store.backend, RedisBackend) and store.ttl == 42 and not warnings
    store = state_store.from_env("f", warnings.append, {})
    assert isinstance(store.backend, MemoryBackend) and "one worker" in warnings[0]


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_several_states_in_one_round_trip(redis_server, backend):
    """get_many (one pipelined round trip on Redis) answers what get answers for each token, names the right
    one in errors, and refreshes every expiry (one GETEX each)."""
    store = redis_store(redis_server, ttl=30) if backend == "redis" else StateStore(MemoryBackend(), "test", 30)
    tokens = [store.put({"a": np.full(3, i, np.int32)}, {"i": i}) for i in range(5)]
    found = store.get_many(tokens, [f"entry {i}" for i in range(5)])
    assert [meta["i"] for _, meta in found] == list(range(5))
    assert [found_arrays["a"].tolist() for found_arrays, _ in found] == [[i] * 3 for i in range(5)]
    with pytest.raises(StateGone, match="entry 1 is unknown"):
        store.get_many([tokens[0], "A" * 22], ["entry 0", "entry 1"])
    with pytest.raises(RequestError, match="entry 1 is not a tracker state"):
        store.get_many([tokens[0], "nope"], ["entry 0", "entry 1"])
    if backend == "redis":
        client = redis_server.client()
        client.expire(store.key(tokens[2]), 5)
        before = client.info("commandstats").get("cmdstat_getex", {}).get("calls", 0)
        store.get_many(tokens, ["x"] * 5)
        assert client.info("commandstats")["cmdstat_getex"]["calls"] - before == 5
        assert client.ttl(store.key(tokens[2])) > 5  # refreshed


def test_a_workers_cache_skips_the_transfer_but_redis_decides_what_exists(redis_server):
    """A state this worker wrote or read comes from its cache (one EXPIRE, no GETEX), read-only; one deleted
    or expired in Redis is gone here too; the cache keeps to its byte bound, oldest first out."""
    env = redis_server.env()
    backend = RedisBackend(redis_client.from_env(env), redis_client.describe(env))
    store = StateStore(backend, "cached", ttl=30, cache_bytes=3000)
    other = redis_store(redis_server, ttl=30, namespace="cached")  # another worker: no cache
    client = redis_server.client()

    def calls(command: str) -> int:
        return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)

    first = store.put({"a": np.arange(200, dtype=np.float32)}, {"n": 1})  # 800 bytes of array
    client.expire(store.key(first), 5)
    getex, expire = calls("getex"), calls("expire")
    found, meta = store.get(first, "s")
    assert (calls("getex") - getex, calls("expire") - expire) == (0, 1)
    assert meta == {"n": 1} and found["a"].tolist() == list(range(200)) and not found["a"].flags.writeable
    assert client.ttl(store.key(first)) > 5  # the hit refreshed the expiry in Redis
    assert other.get(first, "s")[1] == {"n": 1}

    client.delete(store.key(first))
    with pytest.raises(StateGone, match="s is unknown"):
        store.get(first, "s")
    assert store.cache.get(first) is None

    tokens = [other.put({"a": np.full(200, i, np.float32)}, {"n": i}) for i in range(5)]
    store.get_many(tokens, ["s"] * 5)  # read by this worker: cached, the oldest beyond 3000 bytes dropped
    assert store.cache.nbytes <= 3000 and store.cache.get(tokens[0]) is None and store.cache.get(tokens[4])
    getex = calls("getex")
    assert [meta["n"] for _, meta in store.get_many(tokens, ["s"] * 5)] == list(range(5))
    assert calls("getex") - getex == 5 - len(store.cache)

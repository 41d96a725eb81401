"""Pickle-free payloads, the in-process LRU, and the Redis cache against a real redis-server."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.runtime import arrays, embedding_cache, redis_client
from common.runtime.embedding_cache import Entry, MemoryCache, RedisCache, TieredCache
from tests.redis_server import Clock, free_port, hung_redis


def entry(nbytes: int, value: float = 1.0) -> Entry:
    return Entry({"x": np.full(nbytes // 4, value, np.float32)}, {"size": [nbytes]})


# ---------------------------------------------------------------- payloads

@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
def test_payload_round_trip(array, meta):
    found, found_meta = arrays.unpack(arrays.pack({"a": array}, meta))
    assert found["a"].dtype == array.dtype and found["a"].shape == array.shape
    np.testing.assert_array_equal(found["a"], array)
    assert found_meta == meta


def test_object_arrays_are_refused():
    with pytest.raises(ValueError, match="pickle"):
        arrays.pack({"a": np.array([{"x": 1}], dtype=object)})


@pytest.mark.parametrize("damage", [
    lambda d: d[:-100],                      # truncated
    lambda d: b"XXXX" + d[4:],               # not our magic
    lambda d: d[:4] + bytes([99]) + d[5:],   # another version
    lambda d: d[:5] + b"\0" * 64,            # garbage archive
    lambda d: b"",
])
def test_damaged_payloads_are_rejected(damage):
    data = arrays.pack({"a": np.arange(1000, dtype=np.float32)}, {"k": 1})
    with pytest.raises(arrays.PayloadError):
        arrays.unpack(damage(data))


def test_a_pickled_array_inside_the_archive_is_not_loaded():
    import io

    out = io.BytesIO()  # np.savez pickles object arrays; unpack must refuse to load them
    np.savez(out, a=np.array([object()], dtype=object), __meta__=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(arrays.PayloadError):
        arrays.unpack(arrays.MAGIC + bytes([1]) + out.getvalue())  # version 1 was an .npz archive


def test_version_1_payloads_are_still_read():
    import io

    out = io.BytesIO()
    np.savez(out, a=np.arange(6, dtype=np.int16).reshape(2, 3), __meta__=np.frombuffer(b'{"k": 1}', np.uint8))
    found, meta = arrays.unpack(arrays.MAGIC + bytes([1]) + out.getvalue())
    assert meta == {"k": 1} and found["a"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("entry", [["a", "|O", [1]], ["a", "<U3", [1]], ["a", "|V8", [1]], ["a", "<f4", [10**12]],
                                   ["a", "<f4", [-1]], ["a", "<f4", [1.5]], ["a", "no dtype", [1]]])
def test_a_header_naming_anything_but_plain_numbers_is_refused(entry):
    import json
    import struct

    header = json.dumps({"meta": {}, "arrays": [entry]}).encode()
    with pytest.raises(arrays.PayloadError):
        arrays.unpack(arrays.MAGIC + bytes([arrays.VERSION]) + struct.pack("<I", len(header)) + header + b"\0" * 8)


def test_unpacked_arrays_are_writable_and_empty_ones_work():
    found, _ = arrays.unpack(arrays.pack({"a": np.zeros((2, 0), np.float32), "b": np.ones(3, np.uint8),
                                          "c": np.float64(2.5)}))
    found["b"][0] = 7
    assert found["a"].shape == (2, 0) and found["b"].tolist() == [7, 1, 1] and found["c"].shape == ()


# ---------------------------------------------------------------- in-process LRU

def test_memory_cache_evicts_least_recently_used_by_bytes():
    cache = MemoryCache(max_bytes=2500, ttl=60, clock=Clock())
    cache.put("a", entry(1000))
    cache.put("b", entry(1000))
    assert cache.get("a") is not None  # a is now more recent than b
    cache.put("c", entry(1000))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 2000 and len(cache) == 2


def test_memory_cache_does_not_store_an_entry_larger_than_its_bound():
    cache = MemoryCache(max_bytes=100, ttl=60)
    cache.put("big", entry(400))
    assert cache.get("big") is None and cache.nbytes == 0


def test_memory_cache_entries_expire_and_use_refreshes_them():
    clock = Clock()
    cache = MemoryCache(max_bytes=10_000, ttl=10, clock=clock)
    cache.put("a", entry(100))
    cache.put("b", entry(100))
    clock.now += 8
    assert cache.get("a") is not None
    clock.now += 8  # a was used 8 s ago, b stored 16 s ago
    assert cache.get("a") is not None
    assert cache.get("b") is None
    assert cache.nbytes == 100


# ---------------------------------------------------------------- Redis

def test_redis_client_from_env():
    assert redis_client.from_env({}) is None
    client = redis_client.from_env({"CVAT_FUNCTIONS_REDIS_HOST": "redis.example", "CVAT_FUNCTIONS_REDIS_PORT": "6380",
                                     "CVAT_FUNCTIONS_REDIS_PASSWORD": "s3cret", "CVAT_FUNCTIONS_REDIS_DB": "3",
                                     "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.5"})
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.example", 6380, 3, "s3cret")
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
    assert "s3cret" not in redis_client.describe({"CVAT_FUNCTIONS_REDIS_HOST": "h", "CVAT_FUNCTIONS_REDIS_PASSWORD": "s3cret"})


def redis_cache(server, warnings, **kw) -> RedisCache:
    client = redis_client.from_env(server.env())
    return RedisCache(client, kw.pop("ttl", 60), warnings.append, prefix=f"test:{time.monotonic_ns()}:", **kw)


def test_redis_cache_round_trip_with_expiry_refreshed_on_use(redis_server):
    warnings: list[str] = []
    cache = redis_cache(redis_server, warnings, ttl=100)
    stored = entry(4096, 0.5)
    cache.put("k", stored)
    client = redis_server.client()
    client.expire(cache.prefix + "k", 5)
    found = cache.get("k")
    np.testing.assert_array_equal(found.arrays["x"], stored.arrays["x"])
    assert found.meta == stored.meta
    assert 95 <= client.ttl(cache.prefix + "k") <= 100
    assert cache.get("missing") is None and warnings == []


def test_redis_cache_entries_expire(redis_server):
    cache = redis_cache(redis_server, [], ttl=1)
    cache.put("k", entry(64))
    assert cache.get("k") is not None
    time.sleep(1.3)
    assert cache.get("k") is None


def test_redis_cache_drops_a_corrupt_entry_with_a_warning(redis_server):
    warnings: list[str] = []
    cache = redis_cache(redis_server, warnings)
    redis_server.client().set(cache.prefix + "k", b"CVFA\x01garbage")
    assert cache.get("k") is None
    assert any("unreadable" in w for w in warnings)
    assert redis_server.client().exists(cache.prefix + "k") == 0


def test_redis_down_costs_one_try_then_backs_off():
    warnings: list[str] = []
    clock = Clock()
    client = redis_client.from_env({"CVAT_FUNCTIONS_REDIS_HOST": "127.0.0.1", "CVAT_FUNCTIONS_REDIS_PORT": str(free_port())})
    cache = RedisCache(client, 60, warnings.append, retry_after=10, clock=clock)
    assert cache.get("k") is None
    cache.put("k", entry(64))
    assert len(warnings) == 1 and "without the shared cache" in warnings[0]
    clock.now += 11
    assert cache.get("k") is None
    assert len(warnings) == 2


def test_a_hung_redis_times_out_quickly():
    """A server that accepts connections and never answers must not hold the caller."""
    with hung_redis() as env:
        warnings: list[str] = []
        cache = RedisCache(redis_client.from_env(env), 60, warnings.append)
        started = time.monotonic()
        assert cache.get("k") is None
        assert time.monotonic() - started < 2
        assert "Timeout" in warnings[0]


def test_tiered_cache_fills_the_local_tier_from_redis(redis_server):
    shared = redis_cache(redis_server, [])
    shared.put("k", entry(256))
    local = MemoryCache(10_000, 60)
    cache = TieredCache(local, shared)
    assert cache.get("k") is not None and local.get("k") is not None
    cache.put("j", entry(128))
    cache.flush()
    assert shared.get("j") is not None and local.get("j") is not None


def test_tiered_cache_does_not_wait_for_a_slow_redis():
    """An embedding is in the worker's own tier as soon as put returns, while its upload to a Redis that does
    not answer runs (and times out, with a warning) in the background."""
    with hung_redis() as env:
        warnings: list[str] = []
        cache = TieredCache(MemoryCache(10_000, 60), RedisCache(redis_client.from_env(env), 60, warnings.append))
        started = time.monotonic()
        for key in "abc":  # the third finds both upload slots taken: it stays local
            cache.put(key, entry(256))
        assert time.monotonic() - started < 0.2
        assert all(cache.local.get(key) is not None for key in "abc") and warnings == []
        cache.flush()
        assert "Timeout" in warnings[0]


def test_from_env_picks_the_configured_cache(redis_server):
    assert isinstance(embedding_cache.from_env(print, {}), MemoryCache)
    assert isinstance(embedding_cache.from_env(print, redis_server.env()), TieredCache)
    assert embedding_cache.from_env(print, {"EMBEDDING_CACHE_BYTES": "1000"}).max_bytes == 1000

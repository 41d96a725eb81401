"""The tests' real redis-server (tools/redis_server.py); a missing binary fails the test loudly."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

import pytest

from tools import redis_server
from tools.redis_server import free_port

__all__ = ["RedisServer", "free_port", "hung_redis"]


class RedisServer(redis_server.RedisServer):
    def __init__(self, port: int | None = None):
        try:
            super().__init__(port)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))


@contextmanager
def hung_redis():
    """The Redis variables of a server that accepts connections and never answers (``_TIMEOUT`` 0.3 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        yield {"CVAT_FUNCTIONS_REDIS_HOST": "127.0.0.1", "CVAT_FUNCTIONS_REDIS_PORT": str(listener.getsockname()[1]),
               "CVAT_FUNCTIONS_REDIS_TIMEOUT": "0.3"}
    finally:
        listener.close()


class Clock:
    """A settable clock for expiry tests."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

"""Shared fixtures: the data/model folders (required, never skipped) and a running harness."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# tests/dataloop/ needs dtlpy, which has its own environment: `tools/fn test` runs the suite once in each
# (FN_TEST_ENV=main, then FN_TEST_ENV=dataloop) and each run collects only its own tests.
DATALOOP_TESTS = Path(__file__).resolve().parent / "dataloop"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    inside = collection_path == DATALOOP_TESTS or DATALOOP_TESTS in collection_path.parents
    if os.environ.get("FN_TEST_ENV") == "dataloop":
        if not inside and collection_path.is_file() and collection_path.name.startswith("test_"):
            return True
        return None
    return True if inside else None


def _required_dir(variable: str, probe: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"{variable} is not set: point it at the folder with {probe} (CI uses ../shared/...)")
    path = Path(value).resolve()
    if not (path / probe).exists():
        pytest.fail(f"{variable}={value} has no {probe}")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _required_dir("MODELS_DIR", "yolox_nano.onnx")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _required_dir("TEST_DATA_DIR", "images/dog.jpg")


@pytest.fixture(scope="session")
def reference_dir(data_dir) -> Path:
    """What original implementations compute (../shared/reference): REFERENCE_DIR, else beside TEST_DATA_DIR."""
    value = os.environ.get("REFERENCE_DIR")
    path = Path(value).resolve() if value else data_dir.parent / "reference"
    if not (path / "siammask" / "golden-tennis.json").exists():
        pytest.fail(f"no reference outputs at {path}: set REFERENCE_DIR (CI: ../shared/reference)")
    return path


@pytest.fixture(scope="session")
def dog(data_dir) -> str:
    """dog.jpg (768×576) as base64."""
    return b64_file(data_dir / "images" / "dog.jpg")


@pytest.fixture(scope="module")
def images_url(data_dir):
    """http://127.0.0.1:PORT serving the test images: a platform's file server, whose image URLs a door fetches."""
    from tools.harness import serving_files

    with serving_files(data_dir / "images") as url:
        yield url


def b64_file(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, parsed JSON or raw bytes) of a real HTTP call."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, reply_headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, reply_headers, payload = exc.code, dict(exc.headers), exc.read()
    try:
        return status, reply_headers, json.loads(payload)
    except ValueError:
        return status, reply_headers, payload


def raw_exchange(port: int, data: bytes, timeout: float = 10, half_close: bool = False) -> tuple[int, dict, object]:
    """Send raw bytes, read until the server closes: (status, headers, JSON body). Fails if it never closes
    or answers nothing. ``half_close`` ends the sending side first, so a body shorter than announced ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := connection.recv(65536):  # a timeout here means the server kept the connection open
            reply += chunk
    assert reply, f"the connection was closed without an answer to {data[:200]!r}"
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body[:int(headers["Content-Length"])])


@contextmanager
def running(*paths, timeout: float = 120):
    """A Harness over some function folders, ready, for a ``with`` block (module-scoped fixtures use it)."""
    from tools.config import find_configs
    from tools.harness import serving

    with serving(find_configs(list(paths)), timeout) as harness:
        yield harness


@pytest.fixture
def serve():
    """Start a Harness over some function folders; stopped at teardown."""
    from tools.config import find_configs
    from tools.harness import Harness

    started = []

    def start(*paths, ready: bool = True, timeout: float = 120) -> Harness:
        harness = Harness(find_configs(list(paths)), port=0)
        harness.start()
        started.append(harness)
        if ready:
            assert harness.wait_ready(timeout), {n: f.message for n, f in harness.functions.items()}
        return harness

    yield start
    for harness in started:
        harness.stop()


def function_url(harness, name: str | None = None) -> str:
    runtime = harness.functions[name] if name else next(iter(harness.functions.values()))
    return f"http://127.0.0.1:{runtime.http_port}/"


def detect(harness, image: str, **extra) -> list:
    """A detector request over HTTP that must answer 200; its reply."""
    status, _, reply = http("POST", function_url(harness), {"image": image, **extra})
    assert status == 200, reply
    return reply


def mask_iou(a, b) -> float:
    """Intersection over union of two boolean masks."""
    return float((a & b).sum() / (a | b).sum())


def box_iou(a, b) -> float:
    """Intersection over union of two (xtl, ytl, xbr, ybr) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def documented_variables() -> set[str]:
    """The variables in the README's "Environment variables" table."""
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Environment variables"):text.index("## Functions")]
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names = re.findall(r"`([A-Z_][A-Z0-9_]*)`", row.split("|")[1])
            for name in names:  # `CVAT_FUNCTIONS_REDIS_HOST`, `_PORT`: suffixes share the first name's prefix
                documented.add(names[0].rsplit("_", 1)[0] + name if name.startswith("_") else name)
    return documented


def dashboard_url(harness) -> str:
    return f"http://127.0.0.1:{harness.port}"


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server for the whole session (tests use distinct keys or flush it)."""
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sam_checkpoint(tmp_path_factory) -> Path:
    """A small randomly initialised Segment Anything checkpoint (reduced ViT encoder, real classes)."""
    from tools.random_weights import sam_checkpoint

    return sam_checkpoint(tmp_path_factory.mktemp("sam") / "sam_small.pth")


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """A small randomly initialised SAM 2.1 checkpoint (reduced Hiera trunk, real classes)."""
    from tools.random_weights import SMALL_SAM2_OVERRIDES, sam2_checkpoint

    return sam2_checkpoint(tmp_path_factory.mktemp("sam2") / "sam2_small.pt", overrides=SMALL_SAM2_OVERRIDES)

"""Bursts of clients against tools/fn serve: every connection is accepted and answered (200, or Nuclio's 503 with
a JSON error when no worker frees up in time), none reset, none left without an answer."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

from tests.conftest import FIXTURES, ROOT, dashboard_url, running
from tools.cli import main

GRABCUT = ROOT / "functions" / "opencv" / "opencv" / "grabcut" / "nuclio"
YOLOX = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"
ECHO = FIXTURES / "functions" / "echo"
CLIENTS = 200
BOUND = 120  # seconds for the whole burst to be answered


def grabcut_request() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    pixels[12:36, 16:48] = (220, 40, 40)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return json.dumps({"image": base64.b64encode(buffer.getvalue()).decode(),
                       "pos_points": [], "neg_points": [], "obj_bbox": [[14, 10], [50, 38]]}).encode()


def http_request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", f"Content-Length: {len(body)}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def burst(port: int, request: bytes, clients: int = CLIENTS) -> list:
    """``clients`` threads connect at the same moment and send ``request``: each one's (status, JSON body), or
    the name of the exception that ended it."""
    barrier, outcomes = threading.Barrier(clients), [None] * clients

    def client(index: int) -> None:
        barrier.wait()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as connection:
                connection.sendall(request)
                reply = b""
                while chunk := connection.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            outcomes[index] = (int(head.split()[1]), json.loads(body))
        except Exception as exc:  # a reset, a timeout, an empty answer
            outcomes[index] = type(exc).__name__

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND + 30)
    assert time.monotonic() - started < BOUND + 30, "the burst was not answered in time"
    return outcomes


def check(outcomes: list) -> None:
    failed = [o for o in outcomes if not (isinstance(o, tuple) and (o[0] == 200 or (o[0] == 503 and "error" in o[1])))]
    assert not failed, f"{len(failed)} of {len(outcomes)} clients: {sorted(map(str, failed))[:5]}"


def test_a_burst_of_connections_is_accepted_and_answered():
    with running(GRABCUT) as harness:
        runtime = next(iter(harness.functions.values()))
        check(burst(runtime.http_port, http_request("POST", "/", grabcut_request())))
        check(burst(harness.port, http_request("GET", "/api/functions")))
        invoke = http_request("POST", "/api/function_invocations", grabcut_request(),
                              {"x-nuclio-function-name": runtime.name, "x-nuclio-path": "/"})
        outcomes = burst(harness.port, invoke)
        check(outcomes)
        assert sum(o[0] == 200 for o in outcomes) > 0


def test_annotate_with_64_jobs_against_a_served_detector(data_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(96):  # more images than requests in flight
        shutil.copy(data_dir / "images" / "dog.jpg", images / f"dog_{i:03d}.jpg")
    with running(YOLOX) as harness:
        assert main(["annotate", "onnx-megvii-yolox", "--dashboard", dashboard_url(harness), "--jobs", "64",
                     "--images", str(images), "--out", str(tmp_path / "out"), "--format", "datumaro"]) == 0
    entries = [json.loads(line) for line in (tmp_path / "out" / "annotate-journal.jsonl").read_text().splitlines()]
    done = [e for e in entries[1:] if "detections" in e]
    assert len(done) == 96 and not [e for e in entries[1:] if "error" in e]
    assert all(e["detections"] == done[0]["detections"] for e in done)


SERVE_WITH_FEW_FILES = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
from tools.config import find_configs
from tools.harness import serving
with serving(find_configs([sys.argv[1]]), timeout=120) as harness:
    print(next(iter(harness.functions.values())).http_port, flush=True)
    time.sleep(600)
"""


def test_running_out_of_file_descriptors_is_logged_and_the_burst_still_answered(tmp_path):
    """With 48 descriptors, most of a burst's connections (each waiting for one of two workers) cannot be accepted
    at once: they wait in the kernel's queue, the log says why, and every one is answered as others close."""
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-c", SERVE_WITH_FEW_FILES, str(ECHO)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=log)
    try:
        port = int(server.stdout.readline())
        check(burst(port, http_request("POST", "/", b'{"sleep": 0.1}'), clients=150))
    finally:
        server.kill()
        server.wait()
    log.seek(0)
    assert "out of file descriptors" in log.read()

"""tools/fn as a user runs it: serve in a subprocess, invoke by name and by folder, --draw."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from common.runtime.state_store import state_key
from tests.conftest import ROOT, http

FN = [sys.executable, "-m", "tools.cli"]
YOLOX = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(tmp_path, *folders, env: dict | None = None):
    """``tools/fn serve`` in a subprocess until it prints its table; yields (port, log text). Stopped with ^C."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    server = subprocess.Popen(FN + ["serve", *map(str, folders), "--port", str(port)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        deadline = time.monotonic() + 120
        text = ""
        while "Try it" not in text and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
            text = (tmp_path / "serve.log").read_text()
        yield port, text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
        log.close()
    assert server.returncode == 0


def test_serve_prints_functions_and_curl_then_invoke_by_name(models_dir, data_dir, tmp_path):
    with serving(tmp_path, YOLOX) as (port, text):
        assert re.search(r"onnx-megvii-yolox\s+detector\s+ready\s+2\s+http://localhost:\d+/", text), text
        assert f"CVAT_NUCLIO_PORT={port}" in text and "curl -s" in text
        studio = re.search(r"Label Studio ML backend URLs.*\n\s+onnx-megvii-yolox\s+(http://localhost:\d+/)\n", text)
        assert studio, text  # the base URL Label Studio appends /health, /setup, /predict to
        assert http("GET", studio.group(1).replace("localhost", "127.0.0.1") + "health")[2]["status"] == "UP"
        status, _, functions = http("GET", f"http://127.0.0.1:{port}/api/functions")
        assert status == 200 and functions["onnx-megvii-yolox"]["status"]["state"] == "ready"

        out = tmp_path / "drawn.png"
        result = subprocess.run(FN + ["invoke", "onnx-megvii-yolox", "--dashboard", f"http://127.0.0.1:{port}",
                                      "--image", str(data_dir / "images" / "dog.jpg"), "--threshold", "0.6",
                                      "--draw", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        assert {s["label"] for s in reply} >= {"dog", "bicycle", "car"}
        drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
        original = np.asarray(Image.open(data_dir / "images" / "dog.jpg").convert("RGB")).astype(int)
        assert drawn.shape == original.shape
        changed = np.abs(drawn - original).sum(axis=2) > 60
        xtl, ytl, xbr, ybr = (int(v) for v in next(s for s in reply if s["label"] == "dog")["points"])
        assert changed[ytl + 20:ybr - 20, xtl].mean() > 0.8  # the dog's box edge is drawn


def test_invoke_a_folder_without_a_server(models_dir, data_dir):
    result = subprocess.run(FN + ["invoke", str(YOLOX), "--image", str(data_dir / "images" / "chelsea.png")],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert [s["label"] for s in json.loads(result.stdout)] == ["cat"]


def test_invoke_reports_http_errors(models_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    result = subprocess.run(FN + ["invoke", str(YOLOX), "--image", str(bad)], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 1
    assert "not an image" in json.loads(result.stdout)["error"] and "HTTP 400" in result.stderr


def test_draw_joins_skeleton_points_along_the_specs_edges():
    from common.doors.cvat import shapes
    from common.core.labels import Labels
    from tools.draw import draw_reply

    labels = Labels.from_function_yaml(ROOT / "functions" / "opencv" / "shiqiyu" / "yunet" / "nuclio" / "function.yaml")
    elements = [shapes.keypoint(name, xy) for name, xy in [("right eye", (40, 40)), ("left eye", (160, 40)),
                                                             ("nose tip", (100, 100)), ("right mouth corner", (60, 160)),
                                                             ("left mouth corner", (140, 160))]]
    reply = [shapes.skeleton("face landmarks", elements, 0.9)]
    black = np.zeros((200, 200, 3), np.uint8)
    with_edges = draw_reply(black, reply, labels).sum(axis=2) > 0
    without = draw_reply(black, reply).sum(axis=2) > 0
    assert with_edges[160, 100] and not without[160, 100]  # midpoint of the mouth-corner edge
    assert with_edges[70, 70] and not without[70, 70]  # on the right eye - nose edge


def test_draw_lists_recognised_text_beside_the_image():
    from common.doors.cvat import shapes
    from tools.draw import draw_reply

    reply = [shapes.polygon("text", [10, 10, 90, 10, 90, 30, 10, 30], 0.9, {"text": "hello"})]
    drawn = draw_reply(np.zeros((60, 100, 3), np.uint8), reply)
    assert drawn.shape[0] == 60 and drawn.shape[1] > 100
    panel = drawn[:, 100:]
    assert (panel < 128).any() and (panel == 255).mean() > 0.8  # dark writing on a white panel


def test_serve_starts_a_private_redis_for_tracker_state(models_dir, tmp_path):
    import redis

    nanotrack = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
    env = {"CVAT_FUNCTIONS_REDIS_HOST": ""}
    with serving(tmp_path, nanotrack, env=env) as (port, text):
        redis_port = int(re.search(r"private redis-server on 127.0.0.1:(\d+)", text).group(1))
        assert re.search(r"onnx-honglinchu-nanotrack\s+tracker\s+ready\s+2\s", text), text
        image = base64.b64encode(Image.new("RGB", (64, 48), (90, 120, 30)).tobytes("jpeg", "RGB")).decode()
        status, _, reply = http("POST", f"http://127.0.0.1:{port}/api/function_invocations",
                                {"image": image, "shapes": [[10, 10, 40, 30]], "states": []},
                                {"x-nuclio-function-name": "onnx-honglinchu-nanotrack"})
        assert status == 200, reply
        (state,) = reply["states"]
        token = state.removesuffix(":legacy")  # the CVAT door marks the states of legacy-form tracks
        assert redis.Redis(port=redis_port).exists(state_key("onnx-honglinchu-nanotrack", token))
    with pytest.raises(redis.ConnectionError):  # stopped with the harness
        redis.Redis(port=redis_port, socket_connect_timeout=1).ping()


def test_without_redis_server_trackers_run_one_worker_with_a_warning(monkeypatch, tmp_path, capsys):
    from tools.cli import embedded_redis
    from tools.config import find_configs

    monkeypatch.delenv("CVAT_FUNCTIONS_REDIS_HOST", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server binary to be found
    configs = find_configs([ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio", YOLOX])
    assert embedded_redis(configs) is None
    assert "redis-server is not installed" in capsys.readouterr().err
    assert {c.name: c.workers for c in configs} == {"onnx-honglinchu-nanotrack": 1, "onnx-megvii-yolox": 2}


def test_invoke_refuses_bad_arguments_without_a_traceback(tmp_path):
    for arguments, message in [(["--body", "[" * 5000], "--body is not JSON"), (["--body", "[1]"], "JSON object"),
                               (["--image", str(tmp_path / "missing.jpg")], "no such file")]:
        result = subprocess.run(FN + ["invoke", str(YOLOX), *arguments], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_test_paths_go_to_the_run_of_their_environment():
    """tools/fn test runs the suite in .venv and tests/dataloop/ in the Dataloop environment; other pytest
    arguments go to both runs."""
    from tools.cli import test_runs

    tests, dataloop = str(ROOT / "tests"), str(ROOT / "tests" / "dataloop" / "test_dataloop.py")
    assert test_runs(["-x", "-k", "yolox"]) == {"main": ["-x", "-k", "yolox"], "dataloop": ["-x", "-k", "yolox"]}
    assert test_runs([f"{tests}/test_image.py::test_x", "-q"]) == {"main": [f"{tests}/test_image.py::test_x", "-q"]}
    assert test_runs([dataloop + "::test_y", "-q"]) == {"dataloop": [dataloop + "::test_y", "-q"]}
    assert test_runs([tests]) == {"main": [tests], "dataloop": [tests]}
    assert test_runs([f"{tests}/test_v7.py", dataloop]) == {"main": [f"{tests}/test_v7.py"], "dataloop": [dataloop]}


def test_a_dataloop_app_of_a_text_prompted_detector_lists_its_vocabulary(tmp_path, capsys):
    from tools import dataloop_manifest

    owlv2 = ROOT / "functions" / "pytorch" / "google" / "owlv2" / "nuclio"
    assert dataloop_manifest.main([str(owlv2), "--labels", "car,bus"]) == 2  # the vocabulary lives in staged code
    assert "--labels needs --stage" in capsys.readouterr().err
    assert dataloop_manifest.main([str(owlv2), "--labels", "car,bus", "--stage", str(tmp_path / "app"),
                                   "-o", str(tmp_path / "app.json")]) == 0
    (model,) = json.loads((tmp_path / "app.json").read_text())["components"]["models"]
    assert model["labels"] == ["car", "bus"] and model["configuration"]["function"] == "."
    assert '"name": "bus"' in (tmp_path / "app" / "function.yaml").read_text()

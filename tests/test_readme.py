"""The README's two commands, exactly as written, and paths given in variables as a user's shell means them."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, documented_variables, http
from tests.test_cli import free_port

YOLOX = "functions/onnx/megvii/yolox/nuclio"


def readme_command(comment: str) -> str:
    """The README command line in "The two commands" whose trailing comment starts with ``comment``."""
    for line in (ROOT / "README.md").read_text().splitlines():
        command, _, note = line.partition("#")
        if note.strip().startswith(comment) and "tools/fn" in command:
            return command.strip()
    raise AssertionError(f"no README command commented {comment!r}")


def test_ci_runs_the_readme_test_command_as_written():
    command = readme_command("the whole test suite")
    assert "../shared/models" in command and "../shared/data" in command  # relative, as a user types it
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in lines, f".ci/run must run {command!r} verbatim"
    assert 'cd "$(dirname "$0")/.."' in lines  # from the repository root


def test_the_readme_serve_command_as_written_serves_a_function(data_dir, tmp_path):
    command = readme_command("serve every function")
    assert command.startswith("MODELS_DIR=../shared/models ")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MODELS_DIR", "MODEL_PATH", "FN_PORT")}
    env.update(FN_PORT=str(port), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "serve.log", "w+")
    server = subprocess.Popen(["bash", "-c", f"{command} {YOLOX}"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Try it" not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        text = (tmp_path / "serve.log").read_text()
        assert re.search(r"onnx-megvii-yolox\s+detector\s+ready", text), text
        image = (data_dir / "images" / "dog.jpg").read_bytes()
        status, _, reply = http("POST", f"http://127.0.0.1:{port}/api/function_invocations",
                                {"image": base64.b64encode(image).decode(), "threshold": 0.5},
                                {"x-nuclio-function-name": "onnx-megvii-yolox"})
        assert status == 200, reply
        assert {"dog", "bicycle"} <= {shape["label"] for shape in reply}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # ^C, as a user stops it
        server.wait(30)
        log.close()


def test_relative_paths_in_variables_mean_the_shells_directory(models_dir, data_dir, tmp_path):
    """``tools/fn invoke`` typed in another folder with MODELS_DIR relative to it: the workers, which run in
    the function's folder, still find the weights."""
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MODELS_DIR", "MODEL_PATH")}
    env.update(MODELS_DIR=os.path.relpath(models_dir, elsewhere), PYTHONPATH=str(ROOT))
    image = os.path.relpath(data_dir / "images" / "dog.jpg", elsewhere)
    result = subprocess.run([sys.executable, "-m", "tools.cli", "invoke", str(ROOT / YOLOX), "--image", image],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dog" in {shape["label"] for shape in json.loads(result.stdout)}


def test_which_variables_are_made_absolute(tmp_path):
    from tools.config import absolute_paths

    env = {"MODELS_DIR": "../shared/models", "MODEL_PATH": "w/x.onnx", "BACKBONE_PATH": "b.onnx",
           "TEST_DATA_DIR": "/already/absolute", "CVAT_FUNCTIONS_CACHE": "~/cache", "PYTHONPATH": "a:b",
           "LD_LIBRARY_PATH": "lib1:lib2", "NUM_THREADS": "2", "MODEL_TYPE": "vit_b", "XDG_CACHE_HOME": ""}
    assert absolute_paths(env, str(tmp_path / "here")) == {
        "MODELS_DIR": str(tmp_path / "shared" / "models"),
        "MODEL_PATH": str(tmp_path / "here" / "w" / "x.onnx"),
        "BACKBONE_PATH": str(tmp_path / "here" / "b.onnx"),
        "CVAT_FUNCTIONS_CACHE": os.path.expanduser("~/cache"),
    }


def prefixed_names(path) -> set[str]:
    """Variable names a file builds from a module constant, ``PREFIX + "HOST"``, where ``PREFIX`` is
    ``"CVAT_FUNCTIONS_REDIS_"`` (upper-case results only)."""
    import ast

    tree = ast.parse(path.read_text())
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for target in node.targets if isinstance(target, ast.Name)}
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.left, ast.Name)
                and node.left.id in constants and isinstance(node.right, ast.Constant)
                and isinstance(node.right.value, str)):
            name = constants[node.left.id] + node.right.value
            if re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                found.add(name)
    return found


def test_every_variable_the_code_reads_is_in_the_readmes_table():
    readers = re.compile(r'(?:environ\.get|env\.get|environ\[|env_(?:str|float|int|bool)|setting)\(?\s*"([A-Z][A-Z0-9_]+)"'
                         r'|"([A-Z][A-Z0-9_]*_PATH)"')
    read = set()
    for path in [path for folder in ("common", "functions", "tools") for path in (ROOT / folder).rglob("*.py")]:
        for match in readers.finditer(path.read_text()):
            read.add(match.group(1) or match.group(2))
        read |= prefixed_names(path)
    assert {"NMS_THRESHOLD", "MODELS_DIR", "IMAGE_MAX_MEMORY_MB", "BACKBONE_PATH", "FUNCTION_YAML"} <= read
    assert {"CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_PORT"} <= read  # built from a prefix
    assert read - documented_variables() == set(), "read by the code but missing from the README's table"


def test_empty_settings_mean_unset_and_bad_ones_name_the_variable():
    import pytest

    from common.core.settings import env_float, env_int

    assert env_float("X", 0.45, {"X": ""}) == 0.45 and env_float("X", 0.45, {"X": " 0.3 "}) == 0.3
    assert env_int("X", 7, {}) == 7 and env_int("X", 7, {"X": "8"}) == 8
    with pytest.raises(ValueError, match="X='a lot' is not a whole number"):
        env_int("X", 7, {"X": "a lot"})


def test_the_gpu_table_states_what_the_lock_pins():
    """The README's GPU table: the torch and onnxruntime-gpu versions the lock pins, the CUDA runtime they carry
    (the lock's nvidia-cuda-runtime) and the driver floor that follows."""
    from common.core.gpu import driver_floor

    pins = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith(("#", " ")))
    cuda = ".".join(pins["nvidia-cuda-runtime"].split(".")[:2])
    text = (ROOT / "README.md").read_text()
    for package in ("torch", "onnxruntime-gpu"):
        row = f"| {package} {pins[package]} | {cuda} | {driver_floor(cuda)} series or newer |"
        assert row in text, row

"""Every function folder, staged as the deploy scripts stage it and loaded as Nuclio's Python wrapper loads it
(tools/worker.py: a fresh process run from /, only the staged folder on the path, init_context looked up in the
handler's own module), answers a valid and an invalid request exactly as the harness serves the folder from the
repository: status, content type and body."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, http
from common.core.config import FunctionConfig
from tools.config import find_configs
from tools.harness import serving
from tools.replies import Tokens, cases_for, environment, random_weights

FUNCTIONS = ROOT / "functions"
FOLDERS = sorted(path.parent for path in FUNCTIONS.rglob("function.yaml"))
IDS = [folder.parent.name for folder in FOLDERS]
STAGED_SUFFIX = "-staged"


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """Every function folder staged by deploy_cpu.sh (a dry run: no nuctl, no Docker)."""
    stage = tmp_path_factory.mktemp("staged")
    result = subprocess.run(["bash", str(ROOT / "deploy_cpu.sh"), "--dry-run", "--stage-to", str(stage),
                             str(FUNCTIONS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return stage


def requests_for(config: FunctionConfig, data_dir) -> list[tuple[str, str, bytes, str]]:
    """(method, path, body, content type): the kind's first valid request of tools/fn replies, an invalid one,
    a body Nuclio leaves undecoded (a charset on the JSON content type), and V7's classes for a detector."""
    _, valid = next(iter(cases_for(config, data_dir)))
    cases = [("POST", "/", json.dumps(valid).encode(), "application/json"),
             ("POST", "/", b'{"image": 12}', "application/json"),
             ("POST", "/", b'{"image": "!!"}', "application/json; charset=utf-8")]
    if config.kind == "detector":
        cases.append(("GET", "/classes", b"", ""))
    return cases


def answers(harness, name: str, cases, tokens: Tokens) -> list[tuple[int, str, object]]:
    port = harness.functions[name].http_port
    out = []
    for method, path, body, content_type in cases:
        status, headers, reply = http(method, f"http://127.0.0.1:{port}{path}", body or None,
                                      {"Content-Type": content_type} if content_type else {}, timeout=300)
        if not isinstance(reply, bytes):  # tracker states are random tokens: named in order of appearance
            reply = json.loads(tokens.normalise(json.dumps(reply).encode()))
        out.append((status, headers.get("Content-Type"), reply))
    return out


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_a_staged_function_answers_under_the_wrapper_as_the_harness_serves_it(folder, staged, data_dir, models_dir,
                                                                              tmp_path_factory, monkeypatch):
    monkeypatch.delenv("CVAT_FUNCTIONS_REDIS_HOST", raising=False)  # each function its own caches and states
    [config] = find_configs([folder / "function.yaml"])
    assert config.handler == "main:handler"
    staged_yaml = staged / config.name / "function.yaml"
    assert (staged_yaml.parent / "common" / "doors" / "nuclio.py").is_file()
    [twin] = find_configs([staged_yaml])
    twin.config["metadata"]["name"] += STAGED_SUFFIX  # one harness serves both
    for each in (config, twin):
        each.worker_limit = 1
    env = {"MODELS_DIR": str(models_dir),
           **random_weights(folder, tmp_path_factory.mktemp("weights"))}
    with environment(env), serving([config, twin], timeout=600) as harness:
        cases = requests_for(config, data_dir)
        expected = answers(harness, config.name, cases, Tokens())
        got = answers(harness, twin.name, cases, Tokens())
    assert expected[0][:2] == (200, "application/json"), expected[0]
    assert [status for status, _, _ in expected[1:]] == [400, 400] + ([200] if config.kind == "detector" else [])
    assert got == expected


def test_the_worker_refuses_a_handler_whose_init_context_the_wrapper_would_miss(tmp_path):
    """load_handler, in a fresh interpreter: a main.py of plain functions loads, a factory-made handler fails."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "main.py").write_text("def init_context(context): pass\ndef handler(context, event): pass\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "factory.py").write_text(
        "def make():\n    def init_context(context): pass\n    def handler(context, event): pass\n"
        "    return init_context, handler\n")
    (tmp_path / "bad" / "main.py").write_text("from factory import make\ninit_context, handler = make()\n")
    check = ("import sys; sys.path.insert(0, sys.argv[1]); from tools.worker import load_handler; "
             "handler, init = load_handler('main:handler'); print(init.__module__)")
    for name, expected in [("good", "main"), ("bad", "would never run under Nuclio")]:
        ran = subprocess.run([sys.executable, "-c", check, str(tmp_path / name)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert expected in ran.stdout + ran.stderr, (name, ran.stdout, ran.stderr[-1000:])

"""tools/fn lint: clean on the repository's functions, one finding per broken rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tools.lint import lint_paths

YOLOX = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"


def test_repository_functions_are_clean():
    assert lint_paths([ROOT / "functions"]) == []


def test_cli_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "tools.cli", "lint", str(YOLOX)], cwd=ROOT, capture_output=True,
                        text=True)
    assert ok.returncode == 0 and ok.stdout == ""
    broken = _copy(tmp_path)
    _edit(broken / "function.yaml", lambda c: c["spec"].pop("description"))
    bad = subprocess.run([sys.executable, "-m", "tools.cli", "lint", str(broken)], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 1
    assert len(bad.stdout.strip().splitlines()) == 1 and "spec.description" in bad.stdout


def _copy(tmp_path):
    target = tmp_path / "fn"
    shutil.copytree(YOLOX, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _edit(path, change):
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _spec_edit(change):
    def edit(config):
        spec = json.loads(config["metadata"]["annotations"]["spec"])
        change(spec)
        config["metadata"]["annotations"]["spec"] = json.dumps(spec)
    return edit


def _set(path: str, value):
    def edit(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return edit


_DELETE = object()
TRIGGER = "spec.triggers.myHttpTrigger"

CASES = [
    ("function.yaml", _set("metadata.annotations.version", 2), "must be a string"),
    ("function.yaml", _set("metadata.annotations.type", "car-detector"), "type must be one of"),
    ("function.yaml", _set("metadata.annotations.type", _DELETE), "type must be one of"),
    ("function.yaml", _set("metadata.annotations.spec", "[{"), "not valid JSON"),
    ("function.yaml", _spec_edit(lambda s: s.append({"name": "car", "type": "rectangle"})), "duplicate label"),
    ("function.yaml", _spec_edit(lambda s: s.append({"type": "rectangle"})), "has no name"),
    ("function.yaml", _spec_edit(lambda s: s[0].update(type="blob")), "unknown type"),
    ("function.yaml", _spec_edit(lambda s: s[0].update(attributes=[{"name": "a", "input_type": "text"}])),
     "lacks values"),
    ("function.yaml", _spec_edit(lambda s: s[0].update(attributes=[
        {"name": "a", "input_type": "text", "values": []}, {"name": "a", "input_type": "text", "values": []}])),
     "duplicate attribute"),
    ("function.yaml", _spec_edit(lambda s: s[0].update(attributes=[{"name": "a", "input_type": "slider",
                                                                    "values": []}])), "unknown input_type"),
    ("function.yaml", _spec_edit(lambda s: s.append({"name": "face", "type": "skeleton"})), "needs sublabels"),
    ("function.yaml", _spec_edit(lambda s: s.append({"name": "face", "type": "skeleton",
                                                     "sublabels": [{"name": "eye", "type": "points"}]})),
     "needs an svg"),
    ("function.yaml", _spec_edit(lambda s: s.append({"name": "face", "type": "skeleton", "svg": "<line/>",
                                                     "sublabels": [{"name": "eye", "type": "rectangle"}]})),
     "sublabels must have type 'points'"),
    ("function.yaml", _set("metadata.annotations.min_pos_points", "one"), "min_pos_points must be an integer"),
    ("function.yaml", _set("metadata.annotations.startswith_box", "false"), "reads as True"),
    ("function.yaml", _set("spec.description", _DELETE), "spec.description is missing"),
    ("function.yaml", _set("spec.runtime", "python:2.7"), "spec.runtime must be one of"),
    ("function.yaml", _set("spec.handler", "main:nope"), "defines no 'nope'"),
    ("function.yaml", _set("spec.handler", "missing:handler"), "missing.py not found"),
    ("function.yaml", _set("spec.handler", "main"), "must be module:function"),
    ("function.yaml", _set("spec.eventTimeout", "thirty seconds"), "not a duration"),
    ("function.yaml", _set("spec.build.directives.postCopy", [
        {"kind": "RUN", "value": "pip install -c /opt/nuclio/requirements.lock numpy 'nuclio-sdk>=0.6'"}]),
     "installs nuclio-sdk"),
    ("function.yaml", _set("spec.build.directives.preCopy", [{"kind": "RUN", "value": "pip install numpy"}]),
     "must run in postCopy with -c /opt/nuclio/requirements.lock"),
    ("function.yaml", _set("spec.build.commands", ["pip install -c /opt/nuclio/requirements.lock numpy"]),
     "must run in postCopy"),
    ("function.yaml", _set("spec.build.directives.postCopy", [
        {"kind": "RUN", "value": "pip install -c /opt/nuclio/requirements.lock --no-cache-dir left-pad"}]),
     "installs left-pad, which requirements.lock does not pin"),
    ("function.yaml", _set("spec.build.directives.postCopy", [
        {"kind": "RUN", "value": "pip install -c /opt/nuclio/requirements.lock --no-cache-dir numpy"}]),
     "does not install label-studio-sdk"),
    ("function.yaml", _set("spec.triggers", {}), "exactly one trigger of kind http"),
    ("function.yaml", _set(f"{TRIGGER}.numWorkers", 0), "positive integer"),
    ("function.yaml", _set(f"{TRIGGER}.attributes.maxRequestBodySize", 1000), "maxRequestBodySize"),
    ("function.yaml", _set(f"{TRIGGER}.workerAvailabilityTimeoutMilliseconds", -5), "non-negative"),
    ("function-gpu.yaml", _set("spec.resources", _DELETE), "nvidia.com/gpu"),
    ("function-gpu.yaml", _set(f"{TRIGGER}.numWorkers", 2), "one worker"),
    ("function-gpu.yaml", _set("spec.env", []), "must declare the GPU it needs"),
    ("function-gpu.yaml", _set("metadata.name", "other-name"), "metadata.name differs"),
    ("function-gpu.yaml", _set("metadata.annotations.type", "interactor"), "annotations.type differs"),
    ("function-gpu.yaml", _spec_edit(lambda s: s.pop()), "labels) differs"),
]


@pytest.mark.parametrize("filename, change, fragment", CASES, ids=[c[2] + "/" + c[0] for c in CASES])
def test_each_rule(tmp_path, filename, change, fragment):
    folder = _copy(tmp_path)
    _edit(folder / filename, change)
    problems = lint_paths([folder])
    assert problems, "the broken file passed"
    assert any(fragment in p for p in problems), problems
    assert all(str(folder) in p for p in problems)


def test_tracker_shape_types(tmp_path):
    folder = _copy(tmp_path)
    for name in ("function.yaml", "function-gpu.yaml"):
        _edit(folder / name, _set("metadata.annotations.type", "tracker"))
        _edit(folder / name, _set("metadata.annotations.supported_shape_types", "mask, blob"))
    problems = lint_paths([folder])
    assert any("unknown shape type 'blob'" in p for p in problems)
    _edit(folder / "function-gpu.yaml", _set("metadata.annotations.supported_shape_types", "mask"))
    assert any("supported_shape_types differs from function.yaml" in p for p in lint_paths([folder]))


def test_not_yaml(tmp_path):
    folder = _copy(tmp_path)
    (folder / "function.yaml").write_text("metadata: [unclosed")
    assert any("not valid YAML" in p for p in lint_paths([folder]))


def test_handler_and_init_context_must_be_functions_of_the_handler_module(tmp_path):
    """Nuclio runs the init_context of the module that defines the handler: a factory-made pair fails there."""
    folder = _copy(tmp_path)
    (folder / "main.py").write_text("from factory import make_entry\ninit_context, handler = make_entry()\n")
    assert any("handler in main.py is not a function defined there" in p for p in lint_paths([folder]))
    (folder / "main.py").write_text("from factory import init_context\ndef handler(context, event): pass\n")
    assert any("init_context in main.py is not a function defined there" in p for p in lint_paths([folder]))
    (folder / "main.py").write_text("def init_context(context): pass\ndef handler(context, event): pass\n")
    assert lint_paths([folder]) == []

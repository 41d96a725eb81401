"""common.runtime.weights (real HTTP downloads with checksums), common.core.labels, common.runtime.backends, common.doors.nuclio."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from common.runtime import weights
from common.runtime.backends import load_onnx
from common.doors.cvat.door import Door, Reply
from common.doors.nuclio import decode_body, handle, init
from common.core.errors import RequestError
from common.core.labels import Labels, read_spec
from tests.conftest import ROOT

YOLOX_YAML = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio" / "function.yaml"
PAYLOAD = b"pretend these are weights" * 100


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on a free local port serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "model.onnx").write_bytes(PAYLOAD)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.delenv("MODELS_DIR", raising=False)
    monkeypatch.setenv("CVAT_FUNCTIONS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_model_path_wins(clean_env, monkeypatch):
    target = clean_env / "explicit.onnx"
    target.write_bytes(b"x")
    monkeypatch.setenv("MODEL_PATH", str(target))
    monkeypatch.setenv("MODELS_DIR", str(clean_env))
    assert weights.resolve(weights.Weights("model.onnx")) == target
    monkeypatch.setenv("MODEL_PATH", str(clean_env / "missing.onnx"))
    with pytest.raises(weights.WeightsError, match="MODEL_PATH=.*does not exist"):
        weights.resolve(weights.Weights("model.onnx"))


def test_models_dir(clean_env, monkeypatch):
    (clean_env / "model.onnx").write_bytes(b"x")
    monkeypatch.setenv("MODELS_DIR", str(clean_env))
    assert weights.resolve(weights.Weights("model.onnx")) == clean_env / "model.onnx"


def test_download_into_cache_with_checksum(clean_env, file_server):
    spec = weights.Weights("model.onnx", f"{file_server}/model.onnx", hashlib.sha256(PAYLOAD).hexdigest())
    path = weights.resolve(spec)
    assert path == clean_env / "cache" / "model.onnx" and path.read_bytes() == PAYLOAD
    assert weights.resolve(spec) == path  # second time from the cache


def test_bad_checksum_leaves_nothing(clean_env, file_server):
    spec = weights.Weights("model.onnx", f"{file_server}/model.onnx", "0" * 64)
    with pytest.raises(weights.WeightsError, match="checksum mismatch"):
        weights.resolve(spec)
    assert list((clean_env / "cache").iterdir()) == []


def test_offline_error_names_the_variables(clean_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    spec = weights.Weights("model.onnx", f"http://127.0.0.1:{port}/model.onnx", "0" * 64)
    with pytest.raises(weights.WeightsError) as info:
        weights.resolve(spec, timeout=5)
    assert "MODEL_PATH" in info.value.message and "MODELS_DIR" in info.value.message
    assert info.value.status == 503


def test_every_downloaded_checkpoint_is_pinned_by_its_sha256():
    """The official files a function downloads by itself are checked before use; SAM and SAM 2 included."""
    import re
    import sys

    from common.models import sam2_models
    from tests.segmenters import SAM

    sys.path.insert(0, str(SAM))
    try:
        sys.modules.pop("model_handler", None)
        import model_handler as sam
    finally:
        sys.path.remove(str(SAM))
        sys.modules.pop("model_handler", None)
    pins = [w.sha256 for w in sam.CHECKPOINTS.values()] + [sha for _, _, sha in sam2_models.SIZES.values()]
    assert len(pins) == 7 and all(re.fullmatch(r"[0-9a-f]{64}", pin or "") for pin in pins), pins
    assert len(set(pins)) == 7


def test_labels_from_function_yaml():
    labels = Labels.from_function_yaml(YOLOX_YAML)
    assert len(labels) == 80 and labels.name_of(0) == "person" and labels.name_of(79) == "toothbrush"
    assert all(label.type == "rectangle" for label in labels)
    assert [label.id for label in labels] == list(range(80))
    assert len(read_spec(YOLOX_YAML)) == 80


def test_labels_by_id_and_position():
    labels = Labels.from_spec([{"id": 7, "name": "car"}, {"name": "person", "attributes": [
        {"name": "age", "input_type": "number", "values": ["0", "150", "1"]}]}])
    assert labels.name_of(7) == "car" and labels.name_of(1) == "person"
    assert labels.by_name["person"].attributes[0].values == ("0", "150", "1")


def test_backends_agree_on_yolox(models_dir):
    path = models_dir / "yolox_nano.onnx"
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    ort_model, ov_model = load_onnx(path, "onnxruntime", threads=1), load_onnx(path, "openvino", threads=1)
    assert ort_model.input_names == ov_model.input_names == ["images"]
    assert ort_model.input_shapes[0] == ov_model.input_shapes[0] == [1, 3, 416, 416]
    a, b = ort_model({"images": x})[0], ov_model({"images": x})[0]
    assert a.shape == b.shape == (1, 3549, 85)
    assert np.abs(a - b).max() < 1e-2
    with pytest.raises(ValueError, match="INFERENCE_BACKEND"):
        load_onnx(path, "tensorflow")


def test_decode_body():
    assert decode_body(b'{"a": 1}') == {"a": 1}
    assert decode_body(bytearray(b'[1]')) == [1]
    assert decode_body({"a": 1}) == {"a": 1}  # decoded by Nuclio (exactly application/json): taken as it is
    assert decode_body('{"a": 1}') == '{"a": 1}'  # a JSON string Nuclio decoded is a string, not a request
    for bad, fragment in [(b"", "empty"), (None, "empty"), (b"\xff\xfe", "not UTF-8"), (b"{", "not valid JSON")]:
        with pytest.raises(RequestError, match=fragment):
            decode_body(bad)


def test_handle_event_maps_outcomes():
    class Logger:
        def __init__(self):
            self.records = []

        def error_with(self, message, **kw):
            self.records.append((message, kw))

    class Echo(Door):  # a door of no model: requests pass through as they are
        kind = "echo"

        def __init__(self):
            pass

        def parse(self, body):
            if body.get("boom"):
                raise ZeroDivisionError("secret detail")
            return body

        def check_memory(self, request):
            pass

        def answer(self, request):
            return Reply([request["x"]])

    context = SimpleNamespace(logger=Logger(), user_data=SimpleNamespace(doors=(Echo(), None, None)))
    ok = handle(context, SimpleNamespace(body={"x": 3}, path="/"))
    assert (ok.status_code, json.loads(ok.body), ok.content_type) == (200, [3], "application/json")
    bad = handle(context, SimpleNamespace(body=b"[1", path=b"/"))  # strings may arrive undecoded
    assert bad.status_code == 400 and "not valid JSON" in json.loads(bad.body)["error"]
    boom = handle(context, SimpleNamespace(body={"boom": True}, path="/"))
    assert boom.status_code == 500 and "secret detail" not in boom.body
    assert "ZeroDivisionError" in json.loads(boom.body)["error"]
    assert "secret detail" in context.logger.records[0][1]["traceback"]  # the log has the traceback
    v7 = handle(context, SimpleNamespace(body=b"{}", path="/infer", method="POST", headers={}))
    assert v7.status_code == 404 and json.loads(v7.body)["status"] == "failed"  # V7's form, no V7 door here
    studio = handle(context, SimpleNamespace(body=None, path="/health", method="GET", headers={}))
    assert studio.status_code == 404 and "detectors and interactors" in json.loads(studio.body)["error"]


def test_an_entry_without_init_answers_503_json():
    """A worker whose init_context never ran (or failed) answers JSON, never an exception for the wrapper."""
    context = SimpleNamespace(logger=None, user_data=SimpleNamespace())
    reply = handle(context, SimpleNamespace(body=b"{}", path="/"))
    assert reply.status_code == 503 and "never ran" in json.loads(reply.body)["error"]

    class Failing:
        def __init__(self, log):
            raise FileNotFoundError("no weights here")

    context.logger = SimpleNamespace(warn=print)
    with pytest.raises(FileNotFoundError):
        init(context, Failing)
    reply = handle(context, SimpleNamespace(body=b"{}", path="/classes", method="GET", headers={}))
    assert reply.status_code == 503 and "no weights here" in json.loads(reply.body)["error"]
    assert json.loads(reply.body)["status"] == "failed"

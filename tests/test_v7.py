"""V7 Darwin's "Bring Your Own Model" calls on every detector: /classes and /infer beside CVAT's calls, V7's
response schema, image URLs within the operator's limits, and authentication."""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest

from tests.conftest import ROOT, b64_file, function_url, http, running
from tests.segmenters import door_of

FUNCTIONS = ROOT / "functions"
YOLOX = FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio"

POINT = {"type": "object", "required": ["x", "y"], "properties": {"x": {"type": "number", "minimum": 0},
                                                                   "y": {"type": "number", "minimum": 0}}}
GEOMETRIES = {
    "bounding_box": {"type": "object", "required": ["x", "y", "w", "h"],
                     "properties": {k: {"type": "number", **({"minimum": 0} if k in "wh" else {})} for k in "xywh"}},
    "polygon": {"type": "object", "required": ["path"], "properties": {"path": {"type": "array", "items": POINT,
                                                                                "minItems": 3}}},
    "skeleton": {"type": "object", "required": ["nodes"], "properties": {"nodes": {"type": "array", "items": {
        "type": "object", "required": ["x", "y", "occluded"],
        "properties": {"x": {"type": "number", "minimum": 0}, "y": {"type": "number", "minimum": 0},
                       "occluded": {"type": "boolean"}, "name": {"type": "string"}}}}}},
    "keypoint": POINT, "tag": {"type": "object"},
}
# V7's inference response (inference-response.schema.json as ../shared/docs/other-platforms.md describes it)
RESPONSE = {
    "type": "object", "required": ["status", "results"],
    "properties": {
        "status": {"enum": ["succeeded", "failed"]},
        "results": {"type": "array", "items": {
            "type": "object", "required": ["name", "label", "confidence"],
            "properties": {"name": {"type": "string"}, "label": {"type": "string"},
                           "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                           "text": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                           "attributes": {"type": "array", "items": {"type": "string"}},
                           **GEOMETRIES},
            "oneOf": [{"required": [name]} for name in GEOMETRIES]}},
    },
}



def infer(url: str, body: dict, headers: dict | None = None, status: int = 200) -> dict:
    code, _, reply = http("POST", url + "infer", body, headers)
    assert code == status, reply
    jsonschema.validate(reply, RESPONSE)
    return reply


@pytest.mark.parametrize("path, image", [("onnx/megvii/yolox", "dog.jpg"), ("opencv/shiqiyu/yunet", "grace_hopper.png"),
                                         ("onnx/paddlepaddle/ppocr", "page.png")])
def test_infer_follows_v7s_schema_and_finds_what_cvat_gets(models_dir, data_dir, path, image):
    folder = FUNCTIONS / path / "nuclio"
    with running(folder) as harness:
        url = function_url(harness)
        reply = infer(url, {"image": {"base64": b64_file(data_dir / "images" / image)}, "model": "ignored"})
        code, _, listed = http("GET", url + "classes")
        assert code == 200 and http("GET", url + "api/classes")[2] == listed
        code, _, cvat = http("POST", url, {"image": b64_file(data_dir / "images" / image)})  # CVAT's call, unchanged
    assert code == 200 and reply["status"] == "succeeded"
    with door_of(folder) as door:
        assert [c["name"] for c in listed] == [label.name for label in door.model.labels]
    names = {c["name"] for c in listed}
    assert [r["name"] for r in reply["results"]] == [s["label"] for s in cvat] and reply["results"]
    for result, shape in zip(reply["results"], cvat):
        assert result["name"] in names and f"{result['confidence']:.4f}" == shape["confidence"]
        if "bounding_box" in result:
            box = result["bounding_box"]
            assert [box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]] == \
                   pytest.approx(shape["points"], abs=0.006)
        elif "skeleton" in result:
            assert [[n["x"], n["y"]] for n in result["skeleton"]["nodes"]] == \
                   [pytest.approx(e["points"], abs=0.006) for e in shape["elements"]]
        else:
            path_points = [v for p in result["polygon"]["path"] for v in (p["x"], p["y"])]
            assert path_points == pytest.approx(shape["points"], abs=0.006)
            assert result["text"]["text"] == shape["attributes"][0]["value"]


def test_masks_go_out_as_one_polygon_per_outer_contour():
    import numpy as np

    from common.core.labels import Labels
    from common.core.results import Detections, Mask
    from common.doors import v7

    pixels = np.zeros((20, 30), bool)
    pixels[2:8, 2:8] = pixels[10:18, 15:28] = True  # two parts of one instance
    found = Detections([[2, 2, 28, 18]], [0.8], [1], masks=[Mask(pixels, 100, 50)])
    (big, small) = v7.results(found, Labels.from_spec([{"id": 1, "name": "cat", "type": "mask"}]), 300, 200)
    jsonschema.validate({"status": "succeeded", "results": [big, small]}, RESPONSE)
    xs = [p["x"] for p in big["polygon"]["path"]]
    assert min(xs) == 115 and max(xs) == 127 and [p["x"] for p in small["polygon"]["path"]][0] >= 102
    assert v7.classes(Labels.from_spec([{"id": 1, "name": "cat", "type": "mask"}])) == [{"name": "cat",
                                                                                          "type": "polygon"}]


class Images(BaseHTTPRequestHandler):
    """A local image server: /dog.jpg, /big (over the limit), /slow, /away (a redirect to another host)."""

    data = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://localhost.localdomain.invalid/dog.jpg")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(3)
        body = self.data * (40 if self.path == "/big" else 1)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def image_server(data_dir):
    Images.data = (data_dir / "images" / "dog.jpg").read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    server.handle_error = lambda request, address: None  # a client that gave up on /slow is expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_urls_only_from_allowed_hosts_within_limits(models_dir, image_server, monkeypatch):
    url = f"{image_server}/dog.jpg"
    with running(YOLOX) as harness:  # no host allowed: the URL form is refused, naming the variable
        refused = infer(function_url(harness), {"image": {"url": url}}, status=400)
    assert refused["status"] == "failed" and "V7_ALLOWED_HOSTS" in refused["error"]
    monkeypatch.setenv("V7_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("V7_FETCH_TIMEOUT", "1")
    with running(YOLOX) as harness:
        assert "V7_ALLOW_HTTP" in infer(function_url(harness), {"image": {"url": url}}, status=400)["error"]
    monkeypatch.setenv("V7_ALLOW_HTTP", "1")
    with running(YOLOX) as harness:
        base = function_url(harness)
        assert infer(base, {"image": {"url": url}})["results"][0]["name"] == "dog"
        assert "not in V7_ALLOWED_HOSTS" in infer(base, {"image": {"url": f"{image_server}/away"}}, status=400)["error"]
        assert "could not be fetched within 1 s" in infer(base, {"image": {"url": f"{image_server}/slow"}},
                                                          status=400)["error"]
        assert "not in V7_ALLOWED_HOSTS" in infer(base, {"image": {"url": "http://example.com/dog.jpg"}},
                                                  status=400)["error"]


def test_an_oversized_image_url_is_cut_off(models_dir, image_server):
    from common.doors.v7 import V7Settings, fetcher

    fetch = fetcher(V7Settings(allowed_hosts="127.0.0.1", allow_http=True, fetch_timeout=5), limit=len(Images.data) * 2)
    assert fetch(f"{image_server}/dog.jpg") == Images.data
    with pytest.raises(Exception, match="more than"):
        fetch(f"{image_server}/big")


def test_authentication_when_configured(models_dir, data_dir, monkeypatch):
    body = {"image": {"base64": b64_file(data_dir / "images" / "dog.jpg")}}
    monkeypatch.setenv("V7_BASIC_AUTH", "v7:s3cret")
    monkeypatch.setenv("V7_SECRET_HEADER", "X-V7-Key")
    monkeypatch.setenv("V7_SECRET", "abc")
    good = {"Authorization": "Basic " + base64.b64encode(b"v7:s3cret").decode(), "X-V7-Key": "abc"}
    with running(YOLOX) as harness:
        url = function_url(harness)
        assert infer(url, body, good)["status"] == "succeeded"
        assert "basic authentication" in infer(url, body, {"X-V7-Key": "abc"}, status=401)["error"]
        assert "X-V7-Key" in infer(url, body, {**good, "X-V7-Key": "abd"}, status=401)["error"]
        assert http("GET", url + "classes")[0] == 401
        assert http("POST", url, {"image": body["image"]["base64"]})[0] == 200  # CVAT's calls are not V7's


@pytest.mark.parametrize("body, fragment", [
    ({}, '{"image": {"base64"'), ({"image": "abc"}, '{"image": {"base64"'), ({"image": {}}, "base64 or url"),
    ({"image": {"base64": "aGVsbG8="}}, "not an image"), ({"image": {"url": 5}}, "image.url"),
])
def test_malformed_v7_requests_fail_in_v7s_form(models_dir, body, fragment):
    with running(YOLOX) as harness:
        reply = infer(function_url(harness), body, status=400)
    assert reply["status"] == "failed" and reply["results"] == [] and fragment in reply["error"]


def test_other_kinds_have_no_v7_route():
    with running(FUNCTIONS / "opencv" / "opencv" / "grabcut" / "nuclio") as harness:
        code, _, reply = http("POST", function_url(harness) + "infer", {"image": {"base64": "x"}})
    assert code == 404 and reply["status"] == "failed" and "detectors only" in reply["error"]


def test_mask_rcnn_masks_through_infer(data_dir, tmp_path, monkeypatch):
    """Random weights, a low V7_THRESHOLD: every instance mask becomes polygons of its outer contours."""
    from tools.replies import random_weights

    folder = FUNCTIONS / "pytorch" / "torchvision" / "maskrcnn" / "nuclio"
    env = {**random_weights(folder, tmp_path), "V7_THRESHOLD": "0.05", "DETECTIONS_PER_IMAGE": "10"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    image = b64_file(data_dir / "images" / "person.jpg")
    with running(folder, timeout=300) as harness:
        url = function_url(harness)
        reply = infer(url, {"image": {"base64": image}})
        cvat = http("POST", url, {"image": image, "threshold": 0.05})[2]
    assert cvat and all(s["type"] == "mask" for s in cvat)
    assert all("polygon" in r for r in reply["results"])
    assert {r["name"] for r in reply["results"]} == {s["label"] for s in cvat}
    assert len(reply["results"]) >= len(cvat)  # one result per outer contour, at least one per instance

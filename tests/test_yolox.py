"""YOLOX end to end: real weights, real images, through the harness over HTTP."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import ROOT, b64_file, box_iou, dashboard_url, function_url, http

YOLOX = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"

# Boxes drawn by hand around the objects (xtl, ytl, xbr, ybr in image pixels).
EXPECTED = {
    "astronaut.png": [("person", (0, 15, 370, 512))],
    "dog.jpg": [("dog", (125, 210, 325, 545)), ("bicycle", (115, 120, 572, 420)), ("car", (465, 75, 692, 172))],
    "giraffe.jpg": [("giraffe", (165, 25, 450, 440)), ("zebra", (255, 195, 430, 445))],
    "chelsea.png": [("cat", (0, 0, 451, 300))],
}


@pytest.fixture(scope="module")
def yolox(models_dir, data_dir):
    from tools.config import find_configs
    from tools.harness import Harness

    harness = Harness(find_configs([YOLOX]), port=0)
    harness.start()
    assert harness.wait_ready(180), harness.functions["onnx-megvii-yolox"].message
    yield harness
    harness.stop()


def detect(harness, image: str, **extra):
    status, _, reply = http("POST", function_url(harness), {"image": image, **extra})
    assert status == 200, reply
    return reply


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_objects_found_at_the_right_place(yolox, data_dir, name):
    reply = detect(yolox, b64_file(data_dir / "images" / name))
    for expected_label, expected_box in EXPECTED[name]:
        matches = [s for s in reply if s["label"] == expected_label]
        assert matches, f"no {expected_label} in {name}: {reply}"
        best = max(box_iou(s["points"], expected_box) for s in matches)
        assert best >= 0.6, f"{expected_label} in {name}: best IoU {best:.2f}, reply {reply}"


def test_reply_format_matches_cvat_detector_protocol(yolox, data_dir):
    from common.core.labels import Labels

    names = {label.name for label in Labels.from_function_yaml(YOLOX / "function.yaml")}
    reply = detect(yolox, b64_file(data_dir / "images" / "dog.jpg"))
    assert isinstance(reply, list) and reply
    for shape in reply:
        assert shape["type"] == "rectangle" and shape["label"] in names
        assert len(shape["points"]) == 4
        assert all(type(v) in (int, float) for v in shape["points"])
        xtl, ytl, xbr, ybr = shape["points"]
        assert 0 <= xtl < xbr <= 768 and 0 <= ytl < ybr <= 576  # clipped to the image
        assert 0.0 < float(shape["confidence"]) <= 1.0 and isinstance(shape["confidence"], str)


def test_threshold_is_honoured(yolox, data_dir):
    image = b64_file(data_dir / "images" / "person.jpg")
    low = detect(yolox, image, threshold=0.1)
    default = detect(yolox, image)
    assert len(low) > len(default) >= 3
    assert all(float(s["confidence"]) >= 0.1 for s in low)
    assert all(float(s["confidence"]) >= 0.5 for s in default)
    scores = sorted(float(s["confidence"]) for s in default)
    cut = (scores[0] + scores[-1]) / 2
    high = detect(yolox, image, threshold=cut)
    assert 0 < len(high) < len(default)
    assert sorted(float(s["confidence"]) for s in high) == [v for v in scores if v >= cut]
    assert detect(yolox, image, threshold=1.0) == []


def test_same_result_through_the_dashboard(yolox, data_dir):
    image = b64_file(data_dir / "images" / "giraffe.jpg")
    headers = {"x-nuclio-function-name": "onnx-megvii-yolox", "x-nuclio-path": "/",
               "x-nuclio-project-name": "cvat"}
    status, _, via_dashboard = http("POST", dashboard_url(yolox) + "/api/function_invocations",
                                    {"image": image, "threshold": 0.5}, headers)
    assert status == 200
    assert via_dashboard == detect(yolox, image, threshold=0.5)


@pytest.mark.parametrize("body, status, fragment", [
    ({}, 400, "image is required"),
    ({"image": 12}, 400, "image must be a base64 string"),
    ({"image": "!!!not base64!!!"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"plain text, not an image").decode()}, 400, "not an image"),
    ({"image": "iVBORw0KGgo", "threshold": "high"}, 400, "threshold must be a number"),
    ({"image": "iVBORw0KGgo", "threshold": 7}, 400, "threshold must be between 0 and 1"),
    ([1, 2, 3], 400, "must be a JSON object"),
])
def test_malformed_requests_get_json_4xx(yolox, body, status, fragment):
    code, headers, reply = http("POST", function_url(yolox), body)
    assert code == status
    assert headers["Content-Type"] == "application/json"
    assert fragment in reply["error"]


def test_not_json_and_truncated_image(yolox, data_dir):
    code, _, reply = http("POST", function_url(yolox), b"{not json", {"Content-Type": "application/json"})
    assert code == 400 and "not valid JSON" in reply["error"]
    data = (data_dir / "images" / "dog.jpg").read_bytes()
    truncated = base64.b64encode(data[: len(data) // 3]).decode()
    code, _, reply = http("POST", function_url(yolox), {"image": truncated})
    assert code == 400 and "truncated or corrupt" in reply["error"]

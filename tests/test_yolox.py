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
    image = b64_file(data_dir / "images" / "dog.jpg")
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


# ------------------------------------------------------------------ equal to Megvii's ONNX Runtime demo

def demo(session, bgr, threshold: float, class_agnostic: bool = True):
    """What Megvii's demo (demo/ONNXRuntime/onnx_inference.py with yolox.data.data_augment.preproc,
    yolox.utils.demo_postprocess and multiclass_nms) draws at ``threshold``, written out here from their source:
    (xyxy, score, class) rows sorted by score."""
    import numpy as np
    import cv2

    size = 416
    ratio = min(size / bgr.shape[0], size / bgr.shape[1])
    width, height = int(bgr.shape[1] * ratio), int(bgr.shape[0] * ratio)  # truncated, as preproc does
    padded = np.full((size, size, 3), 114, np.uint8)
    padded[:height, :width] = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
    cells, strides = [], []
    for stride in (8, 16, 32):  # demo_postprocess: cells row by row, x before y
        xs, ys = np.meshgrid(np.arange(size // stride), np.arange(size // stride))
        cells.append(np.stack((xs, ys), 2).reshape(-1, 2))
        strides.append(np.full((cells[-1].shape[0], 1), stride))
    cells, strides = np.concatenate(cells), np.concatenate(strides)
    centre = (out[:, :2] + cells) * strides
    extent = np.exp(out[:, 2:4]) * strides
    boxes = np.concatenate([centre - extent / 2, centre + extent / 2], 1) / ratio
    scores = out[:, 4:5] * out[:, 5:]

    def nms(candidates, candidate_scores):  # the demo's numpy NMS: sizes are x2 - x1 + 1
        order, keep = list(np.argsort(candidate_scores)[::-1]), []
        area = (candidates[:, 2] - candidates[:, 0] + 1) * (candidates[:, 3] - candidates[:, 1] + 1)
        while order:
            best, order = order[0], order[1:]
            keep.append(best)
            rest = np.array(order, dtype=int)
            w = np.maximum(0.0, np.minimum(candidates[best, 2], candidates[rest, 2])
                           - np.maximum(candidates[best, 0], candidates[rest, 0]) + 1)
            h = np.maximum(0.0, np.minimum(candidates[best, 3], candidates[rest, 3])
                           - np.maximum(candidates[best, 1], candidates[rest, 1]) + 1)
            overlap = w * h / (area[best] + area[rest] - w * h)
            order = [i for i, o in zip(order, overlap) if o <= 0.45]
        return keep

    rows = []
    if class_agnostic:  # each box its best class, one NMS over all
        classes = scores.argmax(1)
        best = scores[np.arange(len(classes)), classes]
        valid = best > 0.1  # the demo's NMS score_thr; what it draws is then score >= threshold
        for i in nms(boxes[valid], best[valid]):
            rows.append((*boxes[valid][i], best[valid][i], classes[valid][i]))
    else:  # each class over every box that scores for it
        for label in range(scores.shape[1]):
            valid = scores[:, label] > 0.1
            for i in nms(boxes[valid], scores[valid, label]):
                rows.append((*boxes[valid][i], scores[valid, label][i], label))
    rows = [row for row in rows if row[4] >= threshold]
    return np.array(sorted(rows, key=lambda row: -row[4])).reshape(-1, 6)


def composed(data_dir, name: str):
    """Test images (BGR) whose sizes exercise the demo's truncation, and one object scored as two classes."""
    import cv2
    import numpy as np

    dog = cv2.imread(str(data_dir / "images" / "dog.jpg"))
    if name == "773x512":  # r·w = 415.99999999999994: the demo resizes to 415×275, rounding would give 416×276
        return cv2.resize(dog, (773, 512), interpolation=cv2.INTER_AREA)
    if name == "512x773":  # the same with the height the long side
        return cv2.resize(dog, (512, 773), interpolation=cv2.INTER_AREA)
    if name == "768x432":  # r·w = 416 exactly, r·h = 233.99999999999997: 233 rows
        return cv2.resize(dog, (768, 432), interpolation=cv2.INTER_AREA)
    # the dog of dog.jpg squeezed to half its width on grey: YOLOX nano scores it dog 0.44 and horse 0.43
    squeezed = cv2.resize(dog[200:550, 110:340], None, fx=0.5, fy=1.0)
    canvas = np.full((squeezed.shape[0] + 40, max(squeezed.shape[1], 100) + 40, 3), 128, np.uint8)
    canvas[20:20 + squeezed.shape[0], 20:20 + squeezed.shape[1]] = squeezed
    return canvas


@pytest.fixture(scope="module")
def onnx_session(models_dir):
    import onnxruntime

    return onnxruntime.InferenceSession(str(models_dir / "yolox_nano.onnx"), providers=["CPUExecutionProvider"])


def model_detections(bgr, threshold: float, class_agnostic: bool = True):
    import cv2
    import numpy as np

    from common.core.image import Image
    from common.models.folder import load_module

    module = load_module(YOLOX)
    model = module.ModelHandler(settings=module.YoloxSettings(nms_class_agnostic=class_agnostic))
    found = model.detect(Image.from_bytes(cv2.imencode(".png", bgr)[1].tobytes()), threshold)
    return np.column_stack([found.xyxy, found.score, found.class_id]).reshape(-1, 6)


@pytest.mark.parametrize("name", ["773x512", "512x773", "768x432", "dog-or-horse"])
@pytest.mark.parametrize("class_agnostic", [True, False], ids=["agnostic", "per-class"])
def test_detections_equal_megvii_demo(models_dir, data_dir, onnx_session, name, class_agnostic):
    import numpy as np

    bgr = composed(data_dir, name)
    expected = demo(onnx_session, bgr, 0.3, class_agnostic)
    got = model_detections(bgr, 0.3, class_agnostic)
    got = got[np.lexsort((got[:, 5], -got[:, 4]))]
    expected = expected[np.lexsort((expected[:, 5], -expected[:, 4]))]
    assert len(expected) > 0 and got.shape == expected.shape, (got, expected)
    clipped = expected.copy()  # the reply's boxes are clipped to the image, which the demo leaves to its drawing
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, bgr.shape[1])
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, bgr.shape[0])
    assert np.abs(got[:, :4] - clipped[:, :4]).max() < 0.01
    assert np.abs(got[:, 4] - expected[:, 4]).max() < 1e-5
    assert (got[:, 5] == expected[:, 5]).all()


def test_one_object_scored_as_two_classes_gets_one_box(models_dir, data_dir):
    """Class-agnostic NMS (the default) keeps one box on the dog that also scores as a horse; per class, two."""
    bgr = composed(data_dir, "dog-or-horse")
    agnostic, per_class = model_detections(bgr, 0.4, True), model_detections(bgr, 0.4, False)
    assert len(agnostic) == 1 and agnostic[0, 5] == 16  # dog
    assert sorted(per_class[:, 5]) == [16, 17]  # dog and horse (COCO ids 16, 17) on the same animal

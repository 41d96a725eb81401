"""YuNet faces over HTTP with the real weights, on real images (face boxes judged by eye)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.conftest import ROOT, b64_file, detect, box_iou, running

YUNET = ROOT / "functions" / "opencv" / "shiqiyu" / "yunet" / "nuclio"
FACES = {"astronaut.png": (175, 60, 275, 180), "grace_hopper.png": (175, 125, 355, 335)}  # xtl, ytl, xbr, ybr


@pytest.fixture(scope="module")
def yunet(models_dir):
    with running(YUNET) as harness:
        yield harness


@pytest.mark.parametrize("name", sorted(FACES))
def test_one_face_at_the_right_place_with_landmarks(yunet, data_dir, name):
    reply = detect(yunet, b64_file(data_dir / "images" / name))
    faces = [s for s in reply if s["label"] == "face"]
    (skeleton,) = [s for s in reply if s["label"] == "face landmarks"]
    assert len(faces) == 1 and faces[0]["type"] == "rectangle"
    box = faces[0]["points"]
    assert box_iou(box, FACES[name]) > 0.6, box
    assert 0.5 <= float(faces[0]["confidence"]) <= 1
    points = {e["label"]: e["points"] for e in skeleton["elements"]}
    assert list(points) == ["right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner"]
    assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in points.values())
    assert not any(e["outside"] for e in skeleton["elements"])
    assert points["right eye"][0] < points["left eye"][0]  # the subject's right eye is on the image's left
    assert max(points["right eye"][1], points["left eye"][1]) < points["nose tip"][1] < points["left mouth corner"][1]


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_no_face(yunet, data_dir, name):
    assert detect(yunet, b64_file(data_dir / "images" / name)) == []


def test_threshold_comes_from_the_request(yunet, data_dir):
    cat = b64_file(data_dir / "images" / "chelsea.png")  # YuNet scores the cat's face ~0.39
    assert [s["label"] for s in detect(yunet, cat, threshold=0.3)] == ["face", "face landmarks"]


@pytest.mark.parametrize("size", [(2600, 1000), (300, 700)])
def test_any_size_and_aspect_ratio(yunet, data_dir, size):
    """The astronaut pasted into a wide or tall canvas, scaled: the face is found where it was put."""
    face = Image.open(data_dir / "images" / "astronaut.png").convert("RGB")
    scale = min(size[0] / face.width, size[1] / face.height)
    face = face.resize((round(face.width * scale), round(face.height * scale)))
    canvas = Image.new("RGB", size, (90, 90, 90))
    offset = (size[0] - face.width, 0)
    canvas.paste(face, offset)
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=92)
    reply = detect(yunet, base64.b64encode(out.getvalue()).decode())
    (box,) = [s["points"] for s in reply if s["label"] == "face"]
    x0, y0, x1, y1 = FACES["astronaut.png"]
    truth = (offset[0] + x0 * scale, y0 * scale, offset[0] + x1 * scale, y1 * scale)
    assert box_iou(box, truth) > 0.6, (box, truth)


def test_faces_at_infinite_coordinates_are_dropped(models_dir):
    """OpenCV's YuNet can report a "face" at ±inf on degenerate frames (a 4000×1 image): it must not reach
    the reply, whose numbers must all be finite JSON."""
    import json

    import numpy as np

    from tests.segmenters import door_of

    real = np.array([[10, 5, 20, 20, *([15.0] * 10), 0.9]], np.float32)
    garbage = np.array([[-4e17, -np.inf, 0, np.inf, *([0.0] * 10), 1.0]], np.float32)

    class Reported:  # what FaceDetectorYN.detect reported on such a frame, beside a real face
        def setInputSize(self, size):
            pass

        def detect(self, image):
            return 1, np.concatenate([real, garbage])

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, format="PNG")
    with door_of(YUNET) as door:
        door.model.detector = Reported()
        reply = door({"image": base64.b64encode(buffer.getvalue()).decode()}).payload
    json.dumps(reply, allow_nan=False)
    assert [s["type"] for s in reply] == ["rectangle", "skeleton"] and reply[0]["points"] == [10.0, 5.0, 30.0, 25.0]


@pytest.mark.parametrize("name", sorted(FACES))
def test_faces_equal_opencvs_own_call_at_the_images_size(models_dir, data_dir, name):
    """As OpenCV Zoo's YuNet demo runs it: the input size is the image's own (no rounding of ours below
    YUNET_MAX_SIDE), the frame BGR; the function's faces are the bare call's."""
    import cv2
    import numpy as np

    from common.core.image import Image as Decoded
    from common.models.folder import load_module

    bgr = cv2.imread(str(data_dir / "images" / name))
    bare = cv2.FaceDetectorYN.create(str(models_dir / "yunet_n_640_640.onnx"), "", (320, 320), 0.6, 0.3, 5000)
    bare.setInputSize((bgr.shape[1], bgr.shape[0]))
    expected = bare.detect(bgr)[1]
    model = load_module(YUNET).ModelHandler()
    got = model.faces(Decoded.from_bytes((data_dir / "images" / name).read_bytes()).rgb, 0.6)
    assert expected is not None and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4

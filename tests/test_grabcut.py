"""GrabCut interactor over HTTP on synthetic images with a known object mask."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from common.core.rle import from_cvat_rle
from tests.conftest import ROOT, b64_file, function_url, http, mask_iou

GRABCUT = ROOT / "functions" / "opencv" / "opencv" / "grabcut" / "nuclio"


def scene(seed: int = 0, zoom: int = 1):
    """A textured green background with a textured red-ish ellipse; returns (png base64, truth mask)."""
    rng = np.random.default_rng(seed)
    width, height = 320 * zoom, 240 * zoom
    image = np.empty((height, width, 3), np.uint8)
    image[...] = rng.normal((60, 140, 70), 18, (height, width, 3)).clip(0, 255)
    truth = np.zeros((height, width), np.uint8)
    cv2.ellipse(truth, (170 * zoom, 120 * zoom), (70 * zoom, 45 * zoom), 20, 0, 360, 1, -1)
    fg = rng.normal((200, 60, 50), 18, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image[truth == 1] = fg[truth == 1]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode(), truth.astype(bool)


@pytest.fixture(scope="module")
def grabcut():
    from tools.config import find_configs
    from tools.harness import Harness

    harness = Harness(find_configs([GRABCUT]), port=0)
    harness.start()
    assert harness.wait_ready(120)
    yield harness
    harness.stop()


def segment(harness, body):
    status, _, reply = http("POST", function_url(harness), body)
    assert status == 200, reply
    return reply


def test_box_and_click_recover_the_object(grabcut):
    image, truth = scene()
    reply = segment(grabcut, {"image": image, "pos_points": [[170, 120]], "neg_points": [],
                              "obj_bbox": [[90, 60], [250, 180]]})
    (shape,) = reply["shapes"]
    assert shape["type"] == "mask"
    mask = from_cvat_rle(shape["points"], 320, 240)
    assert mask_iou(mask, truth) > 0.9


def test_large_frame_runs_on_a_reduced_region(grabcut):
    image, truth = scene(4, zoom=4)  # 1280×960: the 640×440 region is scaled down to GRABCUT_MAX_SIDE
    reply = segment(grabcut, {"image": image, "pos_points": [[680, 480]], "neg_points": [],
                              "obj_bbox": [[360, 240], [1000, 720]]})
    assert mask_iou(from_cvat_rle(reply["shapes"][0]["points"], 1280, 960), truth) > 0.9


def test_clicks_only(grabcut):
    image, truth = scene(1)
    reply = segment(grabcut, {"image": image, "pos_points": [[130, 110], [215, 135], [170, 95]],
                              "neg_points": [[20, 20]]})
    assert mask_iou(from_cvat_rle(reply["shapes"][0]["points"], 320, 240), truth) > 0.8


def test_full_mask_on_request(grabcut):
    image, truth = scene(2)
    reply = segment(grabcut, {"image": image, "pos_points": [[170, 120]], "neg_points": [],
                              "obj_bbox": [[90, 60], [250, 180]], "full_mask": True})
    mask = np.asarray(reply["mask"])
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
    assert mask_iou(mask > 0, truth) > 0.9


def test_negative_points_remove_a_region(grabcut):
    # Two separate red objects inside one box: a negative click on one leaves the other.
    rng = np.random.default_rng(3)
    image = rng.normal((60, 140, 70), 18, (200, 300, 3)).clip(0, 255).astype(np.uint8)
    left, right = np.zeros((200, 300), bool), np.zeros((200, 300), bool)
    left[60:140, 40:110], right[60:140, 180:260] = True, True
    image[left | right] = (210, 50, 40)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "pos_points": [[220, 100]],
            "neg_points": [[75, 100]], "obj_bbox": [[20, 40], [280, 160]]}
    mask = from_cvat_rle(segment(grabcut, body)["shapes"][0]["points"], 300, 200)
    assert mask_iou(mask, right) > 0.85 and not (mask & left).any()


@pytest.mark.parametrize("extra, fragment", [
    ({"pos_points": [], "neg_points": []}, "needs obj_bbox or at least one positive point"),
    ({"pos_points": [[400, 10]]}, "outside the 320x240 image"),
    ({"pos_points": [[10, 10]], "full_mask": "yes"}, "full_mask must be true or false"),
    ({"neg_points": []}, "pos_points is required"),
])
def test_bad_requests(grabcut, extra, fragment):
    image, _ = scene()
    status, _, reply = http("POST", function_url(grabcut), {"image": image, **extra})
    assert status == 400 and fragment in reply["error"]


def test_an_answer_does_not_depend_on_earlier_requests(data_dir):
    """OpenCV's random generator seeds GrabCut's colour models; each request starts it afresh."""
    from tests.segmenters import door_of

    image = b64_file(data_dir / "images" / "dog.jpg")
    asks = [{"image": image, "pos_points": [[380, 300]]},
            {"image": image, "pos_points": [[220, 400]], "neg_points": [[700, 80]]},
            {"image": image, "pos_points": [[220, 400]], "obj_bbox": [[120, 200], [330, 540]]}]
    with door_of(GRABCUT) as door:
        first = [door(ask).payload for ask in asks]
        assert [door(ask).payload for ask in asks] == first

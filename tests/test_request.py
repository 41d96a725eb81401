"""common.doors.cvat.request: one parser per kind, every validation error, the clipping rules."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from PIL import Image

from common.core.errors import RequestError
from common.doors.cvat.request import parse_detector, parse_interactor, parse_reid, parse_tracker


def png(w: int = 100, h: int = 80) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMAGE = png()


def error_of(parser, body) -> str:
    with pytest.raises(RequestError) as info:
        parser(body)
    assert info.value.status == 400
    return info.value.message


# ---------------------------------------------------------------- detector

def test_detector_defaults_and_threshold():
    request = parse_detector({"image": IMAGE})
    assert request.threshold is None and request.image.size == (100, 80)  # None: the model applies its default
    assert parse_detector({"image": IMAGE, "threshold": 0.25}).threshold == 0.25
    assert parse_detector({"image": IMAGE, "threshold": 1}).threshold == 1.0


@pytest.mark.parametrize("body, message", [
    (None, "the request body must be a JSON object, got null"),
    ("text", "the request body must be a JSON object, got a string"),
    ({}, "image is required"),
    ({"image": None}, "image is required"),
    ({"image": IMAGE, "threshold": True}, "threshold must be a number, got a boolean"),
    ({"image": IMAGE, "threshold": "0.5"}, "threshold must be a number, got a string"),
    ({"image": IMAGE, "threshold": math.nan}, "threshold must be finite"),
    ({"image": IMAGE, "threshold": -0.1}, "threshold must be between 0 and 1"),
])
def test_detector_errors(body, message):
    assert message in error_of(parse_detector, body)


# ---------------------------------------------------------------- interactor

def test_interactor_points_and_bbox():
    request = parse_interactor({"image": IMAGE, "pos_points": [[10, 20], [30.5, 40]], "neg_points": [[1, 2]],
                                "obj_bbox": [[90, 70], [10, 5]], "threshold": 0.8})
    assert request.prompt.positive.tolist() == [[10, 20], [30.5, 40]]
    assert request.prompt.negative.shape == (1, 2)
    assert request.prompt.box == (10, 5, 90, 70)  # corners ordered
    assert request.threshold == 0.8


def test_interactor_clipping_rules():
    request = parse_interactor({"image": IMAGE, "pos_points": [[-0.5, 80.9]], "neg_points": [],
                                "obj_bbox": [[-50, -50], [150, 40]]})
    assert request.prompt.positive.tolist() == [[0.0, 80.0]]  # within the 1-pixel tolerance: clipped
    assert request.prompt.box == (0, 0, 100, 40)  # boxes are clipped to the image
    for empty in (None, []):
        assert parse_interactor({"image": IMAGE, "pos_points": [], "neg_points": [],
                                 "obj_bbox": empty}).prompt.box is None
    assert parse_interactor({"image": IMAGE, "pos_points": []}).prompt.negative.shape == (0, 2)


@pytest.mark.parametrize("extra, message", [
    ({}, "pos_points is required"),
    ({"pos_points": "10,20"}, "pos_points must be a list of [x, y] points"),
    ({"pos_points": [[1, 2], [3]]}, "pos_points[1] must be [x, y]"),
    ({"pos_points": [[1, 2], [3, 4, 5]]}, "pos_points[1] must be [x, y]"),
    ({"pos_points": [["1", 2]]}, "pos_points[0][0] must be a number, got a string"),
    ({"pos_points": [[1, math.inf]]}, "pos_points[0][1] must be finite"),
    ({"pos_points": [[150, 10]]}, "pos_points[0] = [150, 10] is outside the 100x80 image"),
    ({"pos_points": [], "neg_points": [[5, -3]]}, "neg_points[0] = [5, -3] is outside the 100x80 image"),
    ({"pos_points": [], "obj_bbox": [[1, 2, 3, 4]]}, "obj_bbox must be [[x1, y1], [x2, y2]]"),
    ({"pos_points": [], "obj_bbox": [[1, 2], [3]]}, "obj_bbox[1] must be [x, y]"),
    ({"pos_points": [], "obj_bbox": [[200, 200], [300, 300]]}, "has no area inside the 100x80 image"),
    ({"pos_points": [], "obj_bbox": [[10, 10], [10, 50]]}, "has no area"),
])
def test_interactor_errors(extra, message):
    assert message in error_of(parse_interactor, {"image": IMAGE, **extra})


# ---------------------------------------------------------------- tracker

def test_tracker_legacy_start_and_continue():
    start = parse_tracker({"image": IMAGE, "shapes": [[10, 10, 50, 40], [0, 0, 500, 500]], "states": []})
    assert start.legacy and start.states == []
    assert [s.points for s in start.shapes] == [[10, 10, 50, 40], [0, 0, 100, 80]]
    cont = parse_tracker({"image": IMAGE, "shapes": [None, None], "states": ["t1", "t2"]})
    assert cont.shapes == [None, None] and cont.states == ["t1", "t2"]
    no_shapes = parse_tracker({"image": IMAGE, "states": ["t1"]})  # the UI stopped resending shapes
    assert no_shapes.shapes == [None]


def test_tracker_declared_shapes():
    request = parse_tracker({"image": IMAGE, "states": [], "shapes": [
        {"type": "polygon", "points": [1, 1, 20, 1, 20, 20]}]}, supported_shape_types=("polygon", "mask"))
    assert not request.legacy and request.shapes[0].type == "polygon"


@pytest.mark.parametrize("extra, message", [
    ({"shapes": {}, "states": []}, "shapes must be a list"),
    ({"shapes": [], "states": "x"}, "states must be a list"),
    ({"shapes": [None], "states": []}, "shapes[0] is null but there is no state"),
    ({"shapes": [[1, 2, 3]], "states": []}, "shapes[0] must have at least 4 numbers"),
    ({"shapes": [[1, 2, 3, 4, 5]], "states": []}, "shapes[0] must have an even number"),
    ({"shapes": [[1, 2, "a", 4]], "states": []}, "shapes[0][2] must be a number"),
    ({"shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}], "states": []}, "shapes[0].type must be one of"),
    ({"shapes": [[200, 200, 300, 300]], "states": []}, "has no area inside"),
])
def test_tracker_errors(extra, message):
    assert message in error_of(parse_tracker, {"image": IMAGE, **extra})


# ---------------------------------------------------------------- reid

def box(points, label_id=1):
    return {"points": points, "label_id": label_id, "type": "rectangle", "frame": 0, "id": 5}


def test_reid_defaults_and_boxes():
    request = parse_reid({"image0": IMAGE, "image1": png(50, 50), "boxes0": [box([1, 2, 30, 40])],
                          "boxes1": [box([10, 10, 80, 80], 2)]})
    assert request.threshold == 0.5 and request.max_distance == 50
    assert request.boxes0[0].box == (1, 2, 30, 40)
    assert request.boxes1[0].box == (10, 10, 50, 50) and request.boxes1[0].label_id == 2
    polygon = parse_reid({"image0": IMAGE, "image1": IMAGE, "boxes0": [box([1, 1, 20, 1, 20, 20])],
                          "boxes1": [], "max_distance": 55})
    assert polygon.boxes0[0].box == (1, 1, 20, 20) and polygon.max_distance == 55


@pytest.mark.parametrize("extra, message", [
    ({"image1": None}, "image1 is required"),
    ({"boxes0": None}, "boxes0 must be a list of shapes"),
    ({"boxes0": [[1, 2, 3, 4]]}, "boxes0[0] must be a shape object"),
    ({"boxes1": [{"points": [1, 2]}]}, "boxes1[0].points must have at least 4 numbers"),
    ({"max_distance": -1}, "max_distance must not be negative"),
    ({"max_distance": "far"}, "max_distance must be a number"),
])
def test_reid_errors(extra, message):
    body = {"image0": IMAGE, "image1": IMAGE, "boxes0": [], "boxes1": [], **extra}
    assert message in error_of(parse_reid, body)


def test_points_array_types():
    request = parse_interactor({"image": IMAGE, "pos_points": [[1, 2]]})
    assert request.prompt.positive.dtype == np.float64


# ---------------------------------------------------------------- hostile numbers and bodies

HUGE = 10 ** 400  # what JSON's "1" followed by 400 zeros decodes to: an int no float can hold


@pytest.mark.parametrize("parser, body, message", [
    (parse_detector, {"image": IMAGE, "threshold": HUGE}, "threshold is too large a number"),
    (parse_interactor, {"image": IMAGE, "pos_points": [[HUGE, 1]]}, "pos_points[0][0] is too large a number"),
    (parse_interactor, {"image": IMAGE, "pos_points": [], "obj_bbox": [[0, 0], [1, -HUGE]]},
     "obj_bbox[1][1] is too large a number"),
    (parse_tracker, {"image": IMAGE, "shapes": [[0, 0, HUGE, 5]], "states": []}, "shapes[0][2] is too large"),
    (parse_reid, {"image0": IMAGE, "image1": IMAGE, "boxes0": [{"points": [0, 0, 1, 1]}], "boxes1": [],
                  "max_distance": HUGE}, "max_distance is too large a number"),
    (parse_reid, {"image0": IMAGE, "image1": IMAGE, "boxes0": [{"points": [0, 0, 1, 1], "label_id": [[1]]}],
                  "boxes1": []}, "boxes0[0].label_id must be a label id"),
    (parse_tracker, {"image": IMAGE, "shapes": [{"type": "x" * 10_000, "points": [0, 0, 1, 1]}]},
     "shapes[0].type must be one of rectangle, got a string"),
])
def test_numbers_beyond_floats_and_odd_values_are_400s(parser, body, message):
    assert message in error_of(parser, body)


@pytest.mark.parametrize("counts, message", [
    ([1e300, 0], "whole numbers from 0 to"), ([-1, 101], "whole numbers"), ([2.5, 97.5], "whole numbers"),
    ([2**62, 2**62, 2**62, 2**62 + 100], "whole numbers"),  # sums to 100 in wrapped 64-bit arithmetic
    ([50, 49], "sum to 99, expected 100"),
])
def test_mask_counts_that_would_overflow_or_not_fit_are_400s(counts, message):
    body = {"image": IMAGE, "shapes": [{"type": "mask", "points": [*counts, 0, 0, 9, 9]}], "states": []}
    assert message in error_of(lambda b: parse_tracker(b, ("mask",)), body)


def test_requests_hold_a_bounded_number_of_clicks_objects_and_boxes():
    from common.core.prompts import MAX_POINTS
    from common.doors.cvat.request import MAX_OBJECTS

    many = [[1, 1]] * (MAX_POINTS + 1)
    assert parse_interactor({"image": IMAGE, "pos_points": many[:MAX_POINTS]}).prompt.positive.shape == (MAX_POINTS, 2)
    assert f"neg_points has {MAX_POINTS + 1} points; one request may hold at most {MAX_POINTS}" in error_of(
        parse_interactor, {"image": IMAGE, "pos_points": [], "neg_points": many})
    boxes = [[0, 0, 5, 5]] * (MAX_OBJECTS + 1)
    assert "shapes has 1001 objects" in error_of(parse_tracker, {"image": IMAGE, "shapes": boxes, "states": []})
    assert "states has 1001 objects" in error_of(parse_tracker, {"image": IMAGE, "states": ["A" * 22] * 1001})
    reid = {"image0": IMAGE, "image1": IMAGE, "boxes0": [], "boxes1": [{"points": [0, 0, 5, 5]}] * 1001}
    assert "boxes1 has 1001 boxes" in error_of(parse_reid, reid)


def test_undecodable_bodies_are_400s():
    from common.doors.nuclio import decode_body

    for body, message in [(b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
                          (b"1" * 4301, "too many digits"),
                          (b'{"threshold": ' + b"9" * 5000 + b"}", "too many digits"),
                          (b"\xff\xfe", "not UTF-8"), (b"   ", "empty"), (b"{", "not valid JSON")]:
        with pytest.raises(RequestError, match=message):
            decode_body(body)

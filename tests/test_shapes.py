"""common.doors.cvat.shapes: the CVAT mask layouts (round trips), RLE, mask → polygon, builders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.core.labels import Label
from common.core.results import Mask, Region, Shape
from common.core import rle
from common.doors.cvat import replies, shapes
from common.core.errors import RequestError
from tests.segmenters import rasterize

masks = hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20)))


@given(masks)
@settings(max_examples=300, deadline=None)
def test_detector_mask_layout_round_trip(mask):
    values = shapes.to_cvat_mask(mask)
    if not mask.any():
        assert values is None
        return
    xtl, ytl, xbr, ybr = values[-4:]
    assert len(values) - 4 == (xbr - xtl + 1) * (ybr - ytl + 1)  # inclusive bbox
    assert set(values[:-4]) <= {0, 255}
    assert all(type(v) is int for v in values)
    h, w = mask.shape
    assert (shapes.from_cvat_mask(values, w, h) == mask).all()


@given(masks)
@settings(max_examples=300, deadline=None)
def test_interactor_rle_round_trip(mask):
    values = rle.to_cvat_rle(mask)
    if not mask.any():
        assert values is None
        return
    xtl, ytl, xbr, ybr = values[-4:]
    assert sum(values[:-4]) == (xbr - xtl + 1) * (ybr - ytl + 1)
    h, w = mask.shape
    assert (rle.from_cvat_rle(values, w, h) == mask).all()


def test_cvat_fixture_mask():
    """The lambda-manager test fixture: this mask becomes RLE [0,2,2,2,2,2,2] with bbox (0,0)-(2,3)."""
    fixture = [255, 255, 0, 0, 255, 255, 0, 0, 255, 255, 0, 0, 0, 0, 2, 3]
    # CVAT's fixture bitmap holds 12 values for a 3×4 box; read it as the server does: flat RLE.
    assert rle.rle_encode(np.array(fixture[:-4])) == [0, 2, 2, 2, 2, 2, 2]
    mask = np.zeros((5, 5), bool)
    mask[0:4, 0:3] = [[1, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]]
    assert shapes.to_cvat_mask(mask)[-4:] == [0, 0, 2, 3]


def test_rle_starts_with_zero_run():
    assert rle.rle_encode(np.array([1, 1, 0])) == [0, 2, 1]
    assert rle.rle_encode(np.array([0, 1, 1])) == [1, 2]
    assert rle.rle_encode(np.array([0, 0])) == [2]
    with pytest.raises(RequestError):
        rle.rle_decode([1, 2], 4)


@pytest.mark.parametrize("values, message", [
    ([1, 2, 3], "pixels followed by"),
    ([255, 0, 0, 0, 5], "not inside"),
    ([255, 255, 0, 0, 1, 1], "mask has 2 pixels, its bbox needs 4"),
])
def test_bad_detector_masks(values, message):
    with pytest.raises(RequestError, match=message):
        shapes.from_cvat_mask(values, 4, 4)


def test_mask_to_polygon_of_known_shapes():
    rect = np.zeros((50, 60), np.uint8)
    rect[10:30, 5:45] = 1
    poly = shapes.mask_to_polygon(rect)
    assert sorted(map(tuple, poly.astype(int).tolist())) == [(5, 10), (5, 29), (44, 10), (44, 29)]

    disk = np.zeros((100, 100), np.uint8)
    cv2.circle(disk, (50, 50), 30, 1, -1)
    coarse, fine = shapes.mask_to_polygon(disk, epsilon=3.0), shapes.mask_to_polygon(disk, epsilon=0.0)
    assert 3 <= len(coarse) < len(fine)
    area = cv2.contourArea(fine.astype(np.float32))
    assert abs(area - np.pi * 30 ** 2) / (np.pi * 30 ** 2) < 0.05

    two = np.zeros((40, 40), np.uint8)
    two[1:5, 1:5] = 1
    two[10:35, 10:35] = 1
    largest = shapes.mask_to_polygon(two)
    assert largest[:, 0].min() == 10  # the largest component wins
    assert shapes.mask_to_polygon(np.zeros((5, 5))) is None


def test_polygon_epsilon_from_env(monkeypatch):
    disk = np.zeros((100, 100), np.uint8)
    cv2.circle(disk, (50, 50), 30, 1, -1)
    monkeypatch.setenv("POLYGON_EPSILON", "0")
    many = len(shapes.mask_to_polygon(disk))
    monkeypatch.setenv("POLYGON_EPSILON", "4")
    assert len(shapes.mask_to_polygon(disk)) < many


def test_builders_are_json_ready_and_typed():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 4:12] = True
    items = [
        shapes.rectangle("car", np.array([1.234, 2, 3, 4], dtype=np.float32), np.float32(0.91234)),
        shapes.polygon("road", np.array([[0, 0], [5, 0], [5, 5]])),
        shapes.polyline("lane", [0, 0, 5, 5]),
        shapes.points("corner", [1, 1]),
        shapes.tag("daytime", 0.7, {"sunny": True}),
        replies.mask_shape(Shape(0, Label("person"), "mask", 0.5, {"age": 37}, (4, 5, 12, 15),
                                 mask=Mask.from_full(mask))),
        shapes.skeleton("face", [shapes.keypoint("eye", [3, 4]), shapes.keypoint("nose", (5, 6), outside=True)]),
    ]
    text = json.dumps(items)  # would fail on NumPy scalars
    back = json.loads(text)
    assert back[0] == {"label": "car", "type": "rectangle", "points": [1.23, 2.0, 3.0, 4.0], "confidence": "0.9123"}
    assert back[4]["attributes"] == [{"name": "sunny", "value": "true"}]
    assert back[5]["attributes"] == [{"name": "age", "value": "37"}]
    assert back[5]["mask"][-4:] == [4, 5, 11, 14] and len(back[5]["points"]) >= 6
    assert back[6]["elements"][1] == {"label": "nose", "type": "points", "points": [5.0, 6.0], "outside": True}
    assert Mask.from_full(np.zeros((3, 3), bool)) is None


def test_interactor_mask_shape():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 3:7] = True
    (shape,) = replies.interactor_reply(Region.from_mask(mask, score=0.875), (10, 10), False)["shapes"]
    assert shape["type"] == "mask" and shape["points"][-4:] == [3, 2, 6, 3]
    assert shape["attributes"] == [{"spec_id": 0, "value": "0.8750"}]


def test_rasterize_rectangles_polygons_and_masks():
    box = rasterize("rectangle", [2, 1, 5, 4], 8, 6)
    assert box.sum() == 9 and box[1:4, 2:5].all()  # pixels whose centres are inside
    assert rasterize("rectangle", [2.4, 1.4, 4.6, 3.6], 8, 6).sum() == 9
    assert rasterize("rectangle", [2.6, 1.6, 4.4, 3.4], 8, 6).sum() == 1
    triangle = rasterize("polygon", [0, 0, 7, 0, 0, 5], 8, 6)
    assert triangle[0].all() and triangle[:, 0].all() and not triangle[5, 7]
    clipped = rasterize("polygon", [-10, -10, 20, -10, 20, 20, -10, 20], 8, 6)
    assert clipped.all()
    assert np.array_equal(rasterize("mask", rle.to_cvat_rle(triangle), 8, 6), triangle)
    with pytest.raises(ValueError, match="ellipse"):
        rasterize("ellipse", [1, 1, 2, 2], 8, 6)


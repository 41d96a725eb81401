"""ReID: Hungarian matching with label, distance and threshold limits on constructed embeddings, and the
function over HTTP with a random-weight ResNet-50 (the real class; no torchvision weights offline here)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from common.models.reid import cosine_distances, eligible_pairs, match
from common.core.prompts import ReidBox
from tests.conftest import ROOT, function_url, http

REID = ROOT / "functions" / "pytorch" / "torchvision" / "reid" / "nuclio"


def test_assignment_minimises_the_total_not_greedily():
    distances = np.array([[0.1, 0.2], [0.15, 0.9]])  # greedy would give row 0 column 0 and leave row 1 at 0.9
    assert match(distances, np.ones_like(distances, bool), 0.5) == [1, 0]


def test_threshold_ineligible_pairs_and_unused_rows():
    distances = np.array([[0.1, 0.05, 0.3], [0.2, 0.4, 0.6], [0.9, 0.95, 0.7]])
    eligible = np.array([[True, False, True], [True, True, True], [True, True, True]])
    result = match(distances, eligible, 0.5)
    assert result == [0, 1, -1]  # row 0 cannot take column 1; row 2's best is above the threshold
    assert len({c for c in result if c >= 0}) == len([c for c in result if c >= 0])
    assert match(np.zeros((0, 3)), np.zeros((0, 3), bool), 0.5) == []
    assert match(np.ones((2, 1)) * 0.1, np.ones((2, 1), bool), 0.5).count(0) == 1  # one column, used once


def test_eligibility_needs_the_same_label_and_nearby_centres():
    boxes0 = [ReidBox((0, 0, 10, 10), 1), ReidBox((100, 100, 120, 120), 2)]
    boxes1 = [ReidBox((20, 0, 30, 10), 1), ReidBox((100, 100, 120, 120), 1), ReidBox((105, 100, 125, 120), 2)]
    eligible = eligible_pairs(boxes0, boxes1, max_distance=25)
    assert eligible.tolist() == [[True, False, False], [False, False, True]]
    assert eligible_pairs(boxes0, boxes1, max_distance=15).tolist() == [[False, False, False], [False, False, True]]


def test_cosine_distances():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    assert np.allclose(cosine_distances(a, b), [[0, 2, 1 - 2 ** -0.5], [1, 1, 1 - 2 ** -0.5]])


# ---------------------------------------------------------------- the function over HTTP

@pytest.fixture(scope="module")
def reid(tmp_path_factory):
    import torch
    from torchvision.models import resnet50

    from tests.conftest import running

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("reid") / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(path))
        with running(REID) as harness:
            yield harness


def scene(shift: tuple[int, int] = (0, 0)) -> tuple[str, list[list[int]]]:
    """Three distinct textured people-shaped patches on a grey frame, moved by ``shift``; base64 PNG and boxes."""
    rng = np.random.default_rng(7)
    frame = np.full((240, 320, 3), 128, np.uint8)
    boxes = []
    for i, (x, y) in enumerate([(20, 40), (130, 60), (230, 30)]):
        x, y = x + shift[0], y + shift[1]
        frame[y:y + 100, x:x + 50] = rng.integers(0, 255, (100, 50, 3)) // (i + 1)
        boxes.append([x, y, x + 50, y + 100])
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode(), boxes


def shapes(boxes, label_ids) -> list[dict]:
    return [{"type": "rectangle", "points": b, "label_id": l, "frame": 0, "id": i, "attributes": []}
            for i, (b, l) in enumerate(zip(boxes, label_ids))]


def test_moved_objects_are_matched_in_any_order(reid):
    image0, boxes0 = scene()
    image1, boxes1 = scene(shift=(6, 4))
    order = [2, 0, 1]
    status, _, reply = http("POST", function_url(reid), {
        "image0": image0, "image1": image1, "boxes0": shapes(boxes0, [8, 8, 8]),
        "boxes1": shapes([boxes1[i] for i in order], [8, 8, 8]), "threshold": 0.5, "max_distance": 55})
    assert status == 200, reply
    assert reply == [order.index(i) for i in range(3)]


def test_limits_leave_boxes_unmatched(reid):
    image0, boxes0 = scene()
    image1, boxes1 = scene(shift=(6, 4))
    body = {"image0": image0, "image1": image1, "boxes0": shapes(boxes0, [8, 8, 9]), "boxes1": shapes(boxes1, [8, 8, 8])}
    status, _, reply = http("POST", function_url(reid), body)  # defaults: threshold 0.5, max_distance 50
    assert status == 200 and reply == [0, 1, -1]  # the third box has another label
    status, _, reply = http("POST", function_url(reid), {**body, "max_distance": 5})
    assert status == 200 and reply == [-1, -1, -1]  # the boxes moved ~7 px
    status, _, reply = http("POST", function_url(reid), {**body, "boxes1": []})
    assert status == 200 and reply == [-1, -1, -1]


@pytest.mark.parametrize("change, message", [
    ({"boxes0": None}, "boxes0 must be a list"),
    ({"boxes1": [{"points": [1, 2]}]}, "boxes1[0]"),
    ({"image1": "bm90IGFuIGltYWdl"}, "image1"),
    ({"max_distance": -3}, "max_distance"),
])
def test_bad_requests_get_clear_400s(reid, change, message):
    image0, boxes0 = scene()
    body = {"image0": image0, "image1": image0, "boxes0": shapes(boxes0, [1, 1, 1]), "boxes1": shapes(boxes0, [1, 1, 1]),
            **change}
    status, _, reply = http("POST", function_url(reid), body)
    assert status == 400 and message in reply["error"], reply

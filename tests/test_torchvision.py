"""torchvision detectors: the real model classes with random weights (no torchvision weights offline here).

Loading, request handling and reply format run the real models end to end over HTTP; the post-processing
(score filter, label mapping, mask threshold and polygon, keypoint visibility) is checked on constructed model
outputs whose answers are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from torchvision.models import detection

from common.core.labels import Labels
from common.doors.cvat.replies import detector_reply
from common.doors.cvat.shapes import from_cvat_mask
from common.models.torchvision import official_weights
from common.runtime.weights import Weights, WeightsError
from tests.conftest import ROOT, function_url, http
from tests.protocol import check_detector_reply
from tests.segmenters import door_of

TORCHVISION = ROOT / "functions" / "pytorch" / "torchvision"
MODELS = {  # folder: (builder, builder arguments, the shape type it returns)
    "fasterrcnn": (detection.fasterrcnn_resnet50_fpn_v2, {}, "rectangle"),
    "retinanet": (detection.retinanet_resnet50_fpn_v2, {}, "rectangle"),
    "maskrcnn": (detection.maskrcnn_resnet50_fpn_v2, {}, "mask"),
    "keypointrcnn": (detection.keypointrcnn_resnet50_fpn, {"num_classes": 2}, "skeleton"),
}
FAST = {"MIN_SCORE": "0", "MIN_SIZE": "320", "MAX_SIZE": "512"}  # random weights score low; small input


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    from tools.random_weights import torchvision_checkpoint

    folder = tmp_path_factory.mktemp("torchvision")
    return {name: torchvision_checkpoint(folder / f"{name}.pth", builder, **arguments)
            for name, (builder, arguments, _) in MODELS.items()}


def folder_of(name: str):
    return TORCHVISION / name / "nuclio"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_serves_valid_shapes_over_http(name, checkpoints, serve, dog, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(checkpoints[name]))
    for variable, value in FAST.items():
        monkeypatch.setenv(variable, value)
    harness = serve(folder_of(name))
    labels = Labels.from_function_yaml(folder_of(name) / "function.yaml")
    status, _, reply = http("POST", function_url(harness), {"image": dog, "threshold": 0.0})
    assert status == 200, reply
    assert reply, "random weights with MIN_SCORE=0 still give detections"
    assert {shape["type"] for shape in reply} == {MODELS[name][2]}
    check_detector_reply(reply, labels, 768, 576)
    scores = [float(shape["confidence"]) for shape in reply]
    assert scores == sorted(scores, reverse=True)

    threshold = float(np.median(scores))
    status, _, above = http("POST", function_url(harness), {"image": dog, "threshold": threshold})
    assert status == 200 and 0 < len(above) < len(reply)
    check_detector_reply(above, labels, 768, 576, threshold)

    status, _, error = http("POST", function_url(harness), {"image": "bm90IGFuIGltYWdl"})
    assert status == 400 and "image" in error["error"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_labels_are_torchvisions_coco_categories(name):
    labels = Labels.from_function_yaml(folder_of(name) / "function.yaml")
    gpu = Labels.from_function_yaml(folder_of(name) / "function-gpu.yaml")
    assert labels == gpu
    weights = getattr(detection, {"fasterrcnn": "FasterRCNN_ResNet50_FPN_V2_Weights",
                                  "retinanet": "RetinaNet_ResNet50_FPN_V2_Weights",
                                  "maskrcnn": "MaskRCNN_ResNet50_FPN_V2_Weights",
                                  "keypointrcnn": "KeypointRCNN_ResNet50_FPN_Weights"}[name]).COCO_V1
    categories = weights.meta["categories"]
    for label in labels:
        assert categories[label.id] == label.name
    named = [c for c in categories[1:] if c != "N/A"]
    assert len(labels) == len(named)
    if name == "keypointrcnn":
        (person,) = labels
        assert [s.name for s in person.sublabels] == [n.replace("_", " ") for n in weights.meta["keypoint_names"]]
        assert ("left shoulder", "right shoulder") in person.edges() and len(person.edges()) == 19


def test_official_weights_carry_torchvisions_hash_prefix():
    weights = official_weights(detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    assert weights.filename == "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
    assert weights.sha256 == "73cbd019" and weights.matches("73cbd019" + "0" * 56)
    assert not weights.matches("0" * 64)
    assert Weights("x").matches("anything")


def test_a_checkpoint_of_another_model_is_refused_clearly(checkpoints):
    with pytest.raises(WeightsError, match="retinanet_resnet50_fpn_v2_coco-5905b1c5.pth-compatible"):
        with door_of(folder_of("retinanet"), MODEL_PATH=str(checkpoints["fasterrcnn"])):
            pass


# ---------------------------------------------------------------- post-processing on constructed outputs

@pytest.fixture(scope="module")
def handlers(checkpoints):
    built = {}
    for name in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
        with door_of(folder_of(name), MODEL_PATH=str(checkpoints[name])) as handler:
            built[name] = handler
    return built


def to_shapes(door, output: dict, threshold: float, width: int, height: int) -> list[dict]:
    """What a detector door answers for the model output ``output`` (``predict`` keeps scores ≥ threshold)."""
    keep = output["scores"] >= threshold
    output = {key: value[keep] for key, value in output.items()}
    return detector_reply(door.model.detections(output, width, height), door.model.labels, width, height)


def outputs(**arrays) -> dict:
    return {key: np.asarray(value, dtype=np.float32 if key != "labels" else np.int64) for key, value in arrays.items()}


def test_score_filter_label_mapping_order_and_clipping(handlers):
    handler = handlers["fasterrcnn"]
    output = outputs(boxes=[[10, 20, 50, 60], [0, 0, 5, 5], [90, 80, 130, 120], [1, 1, 2, 2]],
                     labels=[18, 12, 1, 95],  # dog, N/A (not in the spec), person, out of range
                     scores=[0.3, 0.99, 0.9, 0.95])
    reply = to_shapes(handler, output, 0.5, width=100, height=100)
    assert reply == [{"label": "person", "type": "rectangle", "points": [90.0, 80.0, 100.0, 100.0],
                      "confidence": "0.9000"}]
    reply = to_shapes(handler, output, 0.2, width=100, height=100)
    assert [(s["label"], s["confidence"]) for s in reply] == [("person", "0.9000"), ("dog", "0.3000")]
    assert reply[1]["points"] == [10.0, 20.0, 50.0, 60.0]


def test_mask_threshold_layout_and_polygon(handlers):
    """Each returned detection's 28×28 mask is pasted as torchvision itself pastes all of them."""
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    handler = handlers["maskrcnn"]
    probabilities = np.zeros((3, 1, 28, 28), np.float32)
    probabilities[0, 0, 4:20, 2:26] = 0.8  # the object, inside its box
    probabilities[0, 0, 22:26, 2:6] = 0.4  # below MASK_THRESHOLD: not part of the mask
    probabilities[1, 0] = 0.2  # a detection whose mask is empty: dropped
    output = outputs(boxes=[[5, 10, 35, 30], [0, 0, 60, 40], [0, 0, 1, 1]], labels=[17, 17, 1],
                     scores=[0.9, 0.8, 0.1], mask_probs=probabilities)
    (shape,) = to_shapes(handler, output, 0.5, width=60, height=40)
    assert shape["label"] == "cat" and shape["type"] == "mask" and shape["confidence"] == "0.9000"
    pasted = paste_masks_in_image(torch.from_numpy(probabilities), torch.from_numpy(output["boxes"]), (40, 60))
    expected = pasted[0, 0].numpy() >= 0.5  # what torchvision's own post-processing gives, thresholded
    assert 100 < expected.sum() < 30 * 20 and not (pasted[1, 0].numpy() >= 0.5).any()
    assert (from_cvat_mask(shape["mask"], 60, 40) == expected).all()
    rows, columns = np.nonzero(expected)
    assert shape["mask"][-4:] == [columns.min(), rows.min(), columns.max(), rows.max()]
    xs, ys = shape["points"][0::2], shape["points"][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (columns.min(), rows.min(), columns.max(), rows.max())


def test_keypoint_visibility_becomes_outside(handlers):
    handler = handlers["keypointrcnn"]
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :, 0] = np.arange(17) * 5 + 10
    keypoints[0, :, 1] = 50
    keypoints[0, :, 2] = 1
    keypoints[0, 3] = (250, 50, 1)  # left ear beyond the right edge
    keypoints[0, 5, 2] = 0  # left shoulder: the model says invisible
    scores = np.full((1, 17), 8.0, np.float32)
    scores[0, 9] = 0.5  # left wrist: below KEYPOINT_THRESHOLD (2.0)
    output = outputs(boxes=[[0, 0, 100, 100]], labels=[1], scores=[0.97], keypoints=keypoints,
                     keypoints_scores=scores)
    (shape,) = to_shapes(handler, output, 0.5, width=200, height=100)
    assert shape["label"] == "person" and shape["type"] == "skeleton" and shape["confidence"] == "0.9700"
    elements = {e["label"]: e for e in shape["elements"]}
    assert [name for name, e in elements.items() if e["outside"]] == ["left ear", "left shoulder", "left wrist"]
    assert elements["left ear"]["points"] == [200.0, 50.0]  # clamped into the image
    assert elements["nose"]["points"] == [10.0, 50.0] and elements["right ankle"]["points"] == [90.0, 50.0]
    assert json.loads(json.dumps(shape)) == shape


@pytest.mark.parametrize("name", ["fasterrcnn", "maskrcnn", "keypointrcnn"])
def test_images_of_extreme_aspect_ratio_are_padded_for_the_models_resize(handlers, name):
    from tests.test_odd_images import answer_all

    answer_all(handlers[name])

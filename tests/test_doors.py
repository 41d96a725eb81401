"""Every door over every function folder of the kinds it serves, one model per folder: on an image that has
objects, each door answers non-empty, and the detector doors (CVAT's, V7's, the CVAT SDK's, the dataset's, Label
Studio's) write the same detections, Label Studio's valid for the labeling config made for the function. The
Dataloop door has its own environment (tests/dataloop)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from cvat_cli._internal.agent_driver_interaction import _InteractionPromptsImpl
from cvat_sdk.auto_annotation import TrackableShape
from cvat_sdk.auto_annotation.driver import _DetectionFunctionContextImpl
from label_studio_sdk.converter.brush import decode_rle

from common.core.image import Image
from common.core.labels import read_config
from common.core.rle import from_cvat_rle
from common.doors import dataset
from common.doors.cvat.door import door_for
from common.doors.cvat_sdk import for_model
from common.doors.label_studio import LabelStudioDoor, LabelStudioSettings, labeling_config
from common.doors.v7 import V7Door, V7Settings
from common.models.folder import load_model
from tests.conftest import ROOT

FOLDERS = sorted(path.parent for path in (ROOT / "functions").rglob("function.yaml"))
IMAGES = {"opencv-shiqiyu-yunet": "grace_hopper.png", "onnx-paddlepaddle-ppocr": "page.png",
          "pth-torchvision-keypointrcnn": "person.jpg"}


def kind_and_name(folder: Path) -> tuple[str, str]:
    metadata = read_config(folder / "function.yaml")["metadata"]
    return metadata["annotations"]["type"], metadata["name"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("door-weights")


def label_studio(model, url: str, image: str, threshold: float = -1.0, context: dict | None = None) -> list[dict]:
    """The regions Label Studio gets for one task, checked against the labeling config made for the function."""
    from label_studio_sdk.label_interface import LabelInterface

    config = labeling_config(model.labels, model.kind == "interactor")
    door = LabelStudioDoor(model, LabelStudioSettings(url=url, threshold=threshold))
    request = {"tasks": [{"id": 1, "data": {"image": f"/{image}"}}], "label_config": config,
               **({"params": {"context": context}} if context else {})}
    reply, _ = door.call("predict", "POST", lambda: request)
    (prediction,) = reply["results"]
    assert LabelInterface(config).validate_prediction(prediction, return_errors=True) == []
    return prediction["result"]


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.parent.name for f in FOLDERS])
def test_every_door_answers_every_folder_of_its_kinds(folder, scratch, models_dir, data_dir, images_url):
    import os

    from tools.replies import random_weights

    kind, name = kind_and_name(folder)
    env = {k: v for k, v in os.environ.items() if k != "CVAT_FUNCTIONS_REDIS_HOST"}
    model = load_model(folder, env={**env, "MODELS_DIR": str(models_dir), **random_weights(folder, scratch)})
    cvat = door_for(model)
    if kind == "detector":
        path = data_dir / "images" / IMAGES.get(name, "dog.jpg")
        data = path.read_bytes()
        threshold = 0.3 if model.env.get("MODEL_PATH") is None else 0.0  # random weights score low
        encoded = base64.b64encode(data).decode()
        replies = cvat({"image": encoded, "threshold": threshold}).payload
        v7 = V7Door(model, V7Settings(threshold=threshold)).infer({"image": {"base64": encoded}})
        context = _DetectionFunctionContextImpl(frame_name=path.name, conf_threshold=threshold, conv_mask_to_poly=False)
        sdk = for_model(model).detect(context, PIL.Image.open(path))
        image = Image.from_bytes(data)
        annotations, left_out = dataset.annotations(model.run(image, threshold), model.labels, *image.size)
        studio = label_studio(model, images_url, path.name, threshold)
        objects = {r["id"] for r in studio if r["type"] != "keypointlabels"}  # a text shares its region's id
        assert replies and v7["results"] and sdk and annotations, name
        assert len(replies) == len(sdk) == len(annotations) == len(objects) <= len(v7["results"])  # V7: a polygon
        # per mask part
        assert left_out == 0
    elif kind == "interactor":
        dog = data_dir / "images" / "dog.jpg"
        reply = cvat({"image": base64.b64encode(dog.read_bytes()).decode(), "pos_points": [[220, 400]],
                      "neg_points": [], "obj_bbox": [[120, 200], [330, 540]]}).payload
        function = for_model(model)
        prompts = _InteractionPromptsImpl(pos_points=((220.0, 400.0),), neg_points=(),
                                          bounding_box=((120.0, 200.0), (330.0, 540.0)))
        shapes = function.detect(None, function.preprocess_image(None, PIL.Image.open(dog)), prompts)
        assert reply["shapes"] and shapes and reply["shapes"][0]["points"] == shapes[0].points
        size = {"original_width": 768, "original_height": 576}
        studio = label_studio(model, images_url, "dog.jpg", context={"result": [
            {"type": "keypointlabels", **size, "value": {"x": 100 * 220 / 768, "y": 100 * 400 / 576, "width": 0.5,
                                                         "keypointlabels": ["object"]}},
            {"type": "rectanglelabels", **size, "value": {"x": 100 * 120 / 768, "y": 100 * 200 / 576, "width": 100 * 210 / 768,
                                                          "height": 100 * 340 / 576, "rectanglelabels": ["object"]}}]})
        (brush,) = [r for r in studio if r["type"] == "brushlabels"]
        pixels = decode_rle(brush["value"]["rle"]).reshape(576, 768, 4)[:, :, 3] > 0
        assert np.array_equal(pixels, from_cvat_rle(reply["shapes"][0]["points"], 768, 576))
    elif kind == "tracker":
        frames = [data_dir / "video" / "tennis" / f"{i:05d}.jpg" for i in (0, 1)]
        box = [280.0, 160.0, 420.0, 330.0]
        started = cvat({"image": base64.b64encode(frames[0].read_bytes()).decode(),
                        "shapes": [{"type": "rectangle", "points": box}], "states": []}).payload
        stepped = cvat({"image": base64.b64encode(frames[1].read_bytes()).decode(), "shapes": [None],
                        "states": started["states"]}).payload
        function = for_model(model)
        state = function.init_tracking_state(None, function.preprocess_image(None, PIL.Image.open(frames[0])),
                                             TrackableShape(type="rectangle", points=box))
        shape = function.track(None, function.preprocess_image(None, PIL.Image.open(frames[1])), state)
        assert stepped["shapes"][0] and shape is not None
        assert (shape.type, shape.points) == (stepped["shapes"][0]["type"], stepped["shapes"][0]["points"])
    else:  # ReID: CVAT's door only
        dog = base64.b64encode((data_dir / "images" / "dog.jpg").read_bytes()).decode()
        boxes = [{"type": "rectangle", "points": [120, 200, 330, 540], "label_id": 1}]
        reply = cvat({"image0": dog, "image1": dog, "boxes0": boxes, "boxes1": boxes}).payload
        assert reply == [0]  # the same box in the same image: itself

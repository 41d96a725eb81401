"""Every door over every function folder of the kinds it serves, one model per folder: on an image that has
objects, each door answers non-empty, and the detector doors (CVAT's, V7's, the CVAT SDK's, the dataset's)
write the same detections. The Dataloop door has its own environment (tests/dataloop)."""

from __future__ import annotations

import base64
from pathlib import Path

import PIL.Image
import pytest
from cvat_cli._internal.agent_driver_interaction import _InteractionPromptsImpl
from cvat_sdk.auto_annotation import TrackableShape
from cvat_sdk.auto_annotation.driver import _DetectionFunctionContextImpl

from common.core.image import Image
from common.core.labels import read_config
from common.doors import dataset
from common.doors.cvat.door import door_for
from common.doors.cvat_sdk import for_model
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


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.parent.name for f in FOLDERS])
def test_every_door_answers_every_folder_of_its_kinds(folder, scratch, models_dir, data_dir):
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
        assert replies and v7["results"] and sdk and annotations, name
        assert len(replies) == len(sdk) == len(annotations) <= len(v7["results"])  # V7: a polygon per mask part
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

"""Function folders as CVAT SDK auto-annotation functions, checked by the SDK's and cvat-cli's own code: the
loader ``cvat-cli`` runs, the spec validation, the driver's annotation mapper (what ``task auto-annotate`` and
the agent run before anything reaches a server), and the agent's prompt checks; the same image gives the same
shapes as the Nuclio door."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import PIL.Image
import pytest
from cvat_cli._internal.agent_driver_detection import AgentDetectionFunctionDriver
from cvat_cli._internal.agent_driver_interaction import _InteractionPromptsImpl
from cvat_cli._internal.common import FunctionLoader
from cvat_sdk import models
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask, encode_mask

from common.doors.cvat.shapes import from_cvat_mask
from common.core.rle import from_cvat_rle
from common.doors.cvat_sdk import create
from tests.conftest import ROOT, b64_file
from tests.segmenters import door_of

FUNCTIONS = ROOT / "functions"
YOLOX = "functions/onnx/megvii/yolox/nuclio"


def folder(path: str) -> Path:
    return FUNCTIONS / path / "nuclio"


def task_labels(spec_labels, masks_as: str = "mask") -> list[models.Label]:
    """The labels of a CVAT task with the function's label names and types (mask labels as ``masks_as``), under
    the task's own ids."""
    def attributes(items, base):
        return [models.Attribute._from_openapi_data(name=a.name, mutable=False, input_type=a.input_type.value,
                                                    values=list(a.values), default_value="", id=base + a.id)
                for a in getattr(items, "attributes", [])]

    return [models.Label._from_openapi_data(
        name=label.name, id=1000 + label.id, type=masks_as if label.type == "mask" else getattr(label, "type", "any"),
        attributes=attributes(label, 2000),
        sublabels=[models.Sublabel._from_openapi_data(name=s.name, id=3000 + s.id, type="points", attributes=[])
                   for s in getattr(label, "sublabels", [])])
        for label in spec_labels]


def mapped(function, shapes, conv_mask_to_poly: bool = False) -> list:
    """Copies of the shapes after the SDK driver's validation and remapping (in place) onto a task's labels;
    nothing is dropped."""
    shapes = copy.deepcopy(shapes)
    mapper = _AnnotationMapper(logging.getLogger("test"), function.spec.labels, task_labels(function.spec.labels, "polygon" if conv_mask_to_poly else "mask"),
                               allow_unmatched_labels=False, conv_mask_to_poly=conv_mask_to_poly)
    _, remapped = mapper.validate_and_remap(shapes, 7)
    assert len(remapped) == len(shapes)
    return remapped



def detect(function, image: Path, threshold: float | None = None, to_polygons: bool = False) -> list:
    context = _DetectionFunctionContextImpl(frame_name=image.name, conf_threshold=threshold,
                                            conv_mask_to_poly=to_polygons)
    return function.detect(context, PIL.Image.open(image))


def test_cvat_cli_loads_our_module_with_a_folder_parameter(models_dir):
    function = FunctionLoader("common.doors.cvat_sdk", None, {"function": YOLOX}).load()
    assert len(function.spec.labels) == 80 and function.spec.labels[16].name == "dog"
    fields = AgentDetectionFunctionDriver.get_remote_function_fields(function.spec)  # what create-native sends
    assert [label["name"] for label in fields["labels_v2"]][:2] == ["person", "bicycle"]
    with pytest.raises(ValueError, match="not a function folder"):
        create(function="functions/nowhere")
    with pytest.raises(ValueError, match="upper case"):
        create(function=YOLOX, threshold=0.3)


@pytest.mark.parametrize("path, image, threshold", [("onnx/megvii/yolox", "dog.jpg", 0.3),
                                                    ("opencv/shiqiyu/yunet", "grace_hopper.png", None),
                                                    ("onnx/paddlepaddle/ppocr", "page.png", None)])
def test_detectors_with_real_weights_give_the_nuclio_doors_shapes(models_dir, data_dir, path, image, threshold):
    function = create(function=str(folder(path)))
    shapes = detect(function, data_dir / "images" / image, threshold)
    remapped = mapped(function, shapes)
    with door_of(folder(path)) as door:
        body = {"image": b64_file(data_dir / "images" / image)}
        cvat = door({**body, "threshold": threshold} if threshold else body).payload
    names = {label.id: label.name for label in function.spec.labels}
    assert [names[s.label_id] for s in shapes] == [s["label"] for s in cvat] and shapes
    assert all(s.label_id >= 1000 for s in remapped)  # the task's ids, by name
    for ours, theirs in zip(shapes, cvat):
        assert ours.type.value == theirs["type"]
        if theirs["type"] == "skeleton":
            assert [e.points for e in ours.elements] == [pytest.approx(e["points"], abs=0.006) for e in theirs["elements"]]
            assert [e.outside for e in ours.elements] == [e["outside"] for e in theirs["elements"]]
        else:
            assert ours.points == pytest.approx(theirs["points"], abs=0.006)
        texts = {a["name"]: a["value"] for a in theirs.get("attributes", [])}
        assert [a.value for a in getattr(ours, "attributes", [])] == list(texts.values())


@pytest.fixture(scope="module")
def random_env(tmp_path_factory):
    from tools.replies import random_weights

    scratch = tmp_path_factory.mktemp("weights")
    return lambda path: random_weights(folder(path), scratch)


@pytest.mark.parametrize("path", ["pytorch/torchvision/maskrcnn", "pytorch/torchvision/keypointrcnn",
                                  "pytorch/torchvision/fasterrcnn", "pytorch/torchvision/retinanet"])
def test_torchvision_detectors_with_random_weights(data_dir, random_env, monkeypatch, path):
    env = random_env(path)
    image = data_dir / "images" / "person.jpg"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    function = create(function=str(folder(path)))
    shapes = detect(function, image, 0.05)
    mapped(function, shapes)
    with door_of(folder(path), **env) as door:
        cvat = door({"image": b64_file(image), "threshold": 0.05}).payload
    assert len(shapes) == len(cvat) > 0
    width, height = PIL.Image.open(image).size
    for ours, theirs in zip(shapes, cvat):
        if theirs["type"] == "mask":  # CVAT's RLE, as the SDK's own encoder writes it
            full = decode_mask(ours.points, image_width=width, image_height=height)
            assert (full == from_cvat_mask(theirs["mask"], width, height)).all()
            assert ours.points == encode_mask(full)
        elif theirs["type"] == "skeleton":
            assert len(ours.elements) == 17
    if "maskrcnn" in path:
        polygons = detect(function, image, 0.05, to_polygons=True)
        assert {s.type.value for s in mapped(function, polygons, conv_mask_to_poly=True)} == {"polygon"}


def prompts(pos=(), neg=(), box=None) -> _InteractionPromptsImpl:
    return _InteractionPromptsImpl(pos_points=tuple(pos), neg_points=tuple(neg), bounding_box=box)


@pytest.mark.parametrize("path", ["opencv/opencv/grabcut", "pytorch/facebookresearch/sam",
                                  "pytorch/facebookresearch/sam2"])
def test_interactors_give_the_nuclio_doors_mask_and_encode_once(data_dir, random_env, monkeypatch, path):
    env = random_env(path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    function = create(function=str(folder(path)))
    image = data_dir / "images" / "dog.jpg"
    spec = function.spec
    assert spec.min_neg_points == 0 and spec.min_bounding_boxes == 0  # boxes are optional, as the yaml says
    encoder = getattr(getattr(function.model, "predictor", None), "model", None)
    runs = []
    if encoder is not None:
        encoder.image_encoder.register_forward_hook(lambda *a: runs.append(1))
    pp = function.preprocess_image(None, PIL.Image.open(image))
    asks = [prompts([(380.0, 300.0)]), prompts([(220.0, 400.0)], [(700.0, 80.0)]),
            prompts([(220.0, 400.0)], box=((120.0, 200.0), (330.0, 540.0)))]
    results = [function.detect(None, pp, ask) for ask in asks]
    if encoder is not None:
        assert len(runs) == 1, "clicks after preprocess_image cost only the decoder"
    with door_of(folder(path), **env) as door:
        for ask, shapes in zip(asks, results):
            body = {"image": b64_file(image), "pos_points": [list(p) for p in ask.pos_points],
                    "neg_points": [list(p) for p in ask.neg_points],
                    "obj_bbox": [list(c) for c in ask.bounding_box] if ask.bounding_box else None}
            (theirs,) = door(body).payload["shapes"]
            (ours,) = shapes
            assert ours.type == "mask" and ours.points == theirs["points"]
            assert [(a.spec_id, a.value) for a in ours.attributes] == \
                   [(a["spec_id"], a["value"]) for a in theirs.get("attributes", [])]
            assert from_cvat_rle(ours.points, 768, 576).any()


def tennis(data_dir: Path, i: int) -> Path:
    return data_dir / "video" / "tennis" / f"{i:05d}.jpg"


@pytest.mark.parametrize("path", ["onnx/honglinchu/nanotrack", "pytorch/facebookresearch/sam2-tracker"])
def test_trackers_follow_as_the_nuclio_door_does(models_dir, data_dir, random_env, monkeypatch, path):
    from cvat_sdk.auto_annotation import TrackableShape

    env = random_env(path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CVAT_FUNCTIONS_REDIS_HOST", raising=False)  # the agent's own memory holds the states
    function = create(function=str(folder(path)))
    assert "rectangle" in function.spec.supported_shape_types
    box = [280.0, 160.0, 420.0, 330.0]
    state = function.init_tracking_state(None, function.preprocess_image(None, PIL.Image.open(tennis(data_dir, 0))),
                                         TrackableShape(type="rectangle", points=box))
    ours = [function.track(None, function.preprocess_image(None, PIL.Image.open(tennis(data_dir, i))), state)
            for i in (1, 2, 3)]
    with door_of(folder(path), **env) as door:
        reply = door({"image": b64_file(tennis(data_dir, 0)), "shapes": [{"type": "rectangle", "points": box}],
                      "states": []}).payload
        theirs = []
        for i in (1, 2, 3):
            reply = door({"image": b64_file(tennis(data_dir, i)), "shapes": [None], "states": reply["states"]}).payload
            theirs.append(reply["shapes"][0])
    assert [(s.type, s.points) for s in ours] == [(s["type"], s["points"]) for s in theirs]


def test_reid_has_no_auto_annotation_protocol(tmp_path, monkeypatch):
    import torch
    from torchvision.models import resnet50

    torch.save(resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "resnet50.pth"))
    with pytest.raises(Exception, match="no auto-annotation protocol"):
        create(function=str(folder("pytorch/torchvision/reid")))


def test_the_readmes_cvat_cli_commands_load_their_functions(models_dir, monkeypatch):
    """The module and parameters of each cvat-cli command in the README, through cvat-cli's own parsers."""
    import re
    import shlex

    from cvat_cli._internal.parsers import parse_function_parameter

    text = (ROOT / "README.md").read_text().split("## CVAT Online and agents", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(c.replace("\\\n", " ")) for c in re.findall(r"^cvat-cli .*?(?<!\\)$", text, re.M | re.S)]
    assert len(commands) == 3 and {c[4] for c in commands} == {"create-native", "run-agent", "auto-annotate"}
    for words in commands:
        module = words[words.index("--function-module") + 1]
        parameters = dict(parse_function_parameter(words[i + 1]) for i, w in enumerate(words) if w == "-p")
        function = FunctionLoader(module, None, parameters).load()
        assert function.model.kind == "detector" and function.model.name == "onnx-megvii-yolox"


def test_parameters_set_the_models_settings_without_writing_the_environment(models_dir, data_dir):
    """-p NMS_THRESHOLD=... and -p IMAGE_MAX_MEMORY_MB=... hold for this function, in its calls too; the process
    environment (and so the next function built in it) never sees them."""
    import os

    strict = create(str(YOLOX), NMS_THRESHOLD="0.2", IMAGE_MAX_MEMORY_MB="1")
    assert strict.model.settings.nms_threshold == 0.2
    assert "NMS_THRESHOLD" not in os.environ and "IMAGE_MAX_MEMORY_MB" not in os.environ
    context = _DetectionFunctionContextImpl(frame_name="dog.jpg", conf_threshold=None, conv_mask_to_poly=False)
    dog = PIL.Image.open(data_dir / "images" / "dog.jpg")
    with pytest.raises(Exception, match="IMAGE_MAX_MEMORY_MB"):  # 768x576 needs more than 1 MB
        strict.detect(context, dog)
    assert create(str(YOLOX)).model.settings.nms_threshold == 0.45
    assert create(str(YOLOX)).detect(context, dog)

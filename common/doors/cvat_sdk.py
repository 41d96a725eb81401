"""The CVAT SDK door: any function folder as an auto-annotation function of ``cvat_sdk.auto_annotation``.

Detectors become a ``DetectionFunction``, interactors an ``InteractionFunction`` and trackers a
``TrackingFunction``, built from the folder's own ``function.yaml`` and model with no code per function, so
``cvat-cli`` can register them with a CVAT server (CVAT Online included), serve its UI's AI tools from this
machine (``cvat-cli function run-agent``) and annotate whole tasks (``cvat-cli task auto-annotate``)::

    PYTHONPATH=. cvat-cli function create-native "YOLOX" --function-module common.doors.cvat_sdk \\
        -p function=str:functions/onnx/megvii/yolox/nuclio

``-p labels=str:car,person`` (or a vocabulary file) gives a text-prompted detector its own labels; other
parameters set the function's settings by their variable names (``-p MODEL_SIZE=str:large``), as the
environment does for Nuclio. ReID has no auto-annotation protocol.
Conversions start from our own :class:`~common.core.results.Detections` and
:class:`~common.core.results.Region`, never from CVAT's JSON replies.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import PIL.Image
from cvat_sdk import auto_annotation as cvataa
from cvat_sdk import models

from common.core import vocabulary
from common.core.errors import RequestError
from common.core.image import Image
from common.core.labels import Attribute, Label, attribute_text
from common.core.results import Shape
from common.core.settings import polygon_epsilon
from common.core.rle import region_points, rle_points
from common.core.prompts import Prompt, clip_box, points_array, region_of
from common.models.base import Detector, Interactor, Model, in_model_env
from common.models.folder import find_folder, load_model

# ---------------------------------------------------------------- specs

def attribute_spec(attribute: Attribute, index: int) -> models.AttributeRequest:
    if attribute.input_type == "text":
        return cvataa.text_attribute_spec(attribute.name, index)
    return cvataa.attribute_spec(attribute.name, index, attribute.input_type, list(attribute.values))


def label_spec(label: Label, label_id: int) -> models.PatchedLabelRequest:
    """A spec label with its attributes (ids: their positions) and a skeleton's keypoints."""
    attributes = [attribute_spec(a, i) for i, a in enumerate(label.attributes)]
    if label.type == "skeleton":
        keypoints = [cvataa.keypoint_spec(s.name, i if s.id is None else s.id) for i, s in enumerate(label.sublabels)]
        return cvataa.skeleton_label_spec(label.name, label_id, keypoints, attributes=attributes)
    return cvataa.label_spec(label.name, label_id, type=label.type, attributes=attributes)


# ---------------------------------------------------------------- detectors

class DetectionFunction:
    """A detector as ``cvat_sdk.auto_annotation.DetectionFunction``."""

    def __init__(self, model: Detector):
        self.model = model
        self.spec = cvataa.DetectionFunctionSpec(labels=[label_spec(l, model.labels.id_of(l)) for l in model.labels])

    @in_model_env
    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
        picture = Image.from_pil(image)
        found = self.model.run(picture, context.conf_threshold)
        shapes = [self.shape(shape, context.conv_mask_to_poly) for shape in found.shapes(self.model.labels, *picture.size)]
        return [shape for shape in shapes if shape is not None]

    def shape(self, shape: Shape, mask_to_polygon: bool) -> models.LabeledShapeRequest | None:
        """A detection as the SDK's shape of its label's type, with the spec's ids."""
        label_id = self.model.labels.id_of(shape.label)
        ids = {a.name: n for n, a in enumerate(shape.label.attributes)}
        extra: dict[str, Any] = {}
        if shape.attributes:
            extra["attributes"] = [models.AttributeValRequest(spec_id=ids[name], value=attribute_text(value))
                                   for name, value in shape.attributes.items() if name in ids]
        if shape.geometry == "mask" and mask_to_polygon:
            polygon = shape.mask.polygon(polygon_epsilon())
            return None if polygon is None else cvataa.polygon(label_id, polygon.ravel().tolist(), **extra)
        return SDK_SHAPES[shape.geometry](label_id, shape, extra)


def _skeleton(label_id: int, shape: Shape, extra: dict) -> models.LabeledShapeRequest:
    elements = [cvataa.keypoint(n if sublabel.id is None else sublabel.id, [x, y], outside=outside)
                for n, (sublabel, (x, y, outside)) in enumerate(zip(shape.label.sublabels, shape.keypoints))]
    return cvataa.skeleton(label_id, elements, **extra)


# each geometry as the SDK's shape (masks as polygons when the caller asks for them: DetectionFunction.shape)
SDK_SHAPES = {
    "skeleton": _skeleton,
    "mask": lambda label_id, s, extra: cvataa.mask(label_id, rle_points(s.mask), **extra),
    "polygon": lambda label_id, s, extra: cvataa.polygon(label_id, s.polygon.ravel().tolist(), **extra),
    "box": lambda label_id, s, extra: cvataa.rectangle(label_id, list(s.box), **extra),
}


# ---------------------------------------------------------------- interactors

class InteractionFunction:
    """An interactor as ``cvat_sdk.auto_annotation.InteractionFunction``; ``preprocess_image`` computes what
    the model's embedding cache holds, so that the agent's repeated clicks on an image cost only the decoder."""

    def __init__(self, model: Interactor):
        self.model = model
        annotations = model.config["metadata"].get("annotations") or {}
        boxes = str(annotations.get("startswith_box", "")).lower() == "true"
        optional = str(annotations.get("startswith_box_optional", "")).lower() == "true"
        self.spec = cvataa.InteractionFunctionSpec(
            min_pos_points=int(annotations.get("min_pos_points") or 0),
            min_neg_points=int(annotations.get("min_neg_points") or 0),
            min_bounding_boxes=1 if boxes else 0 if optional else None,
        )

    @in_model_env
    def preprocess_image(self, context: cvataa.InteractionFunctionContext, image: PIL.Image.Image) -> Image:
        picture = Image.from_pil(image)
        self.model.admit(picture)
        self.model.prepare(picture)
        return picture

    @in_model_env
    def detect(self, context: cvataa.InteractionFunctionContext, pp_image: Image,
               prompts: cvataa.InteractionPrompts) -> list[cvataa.InteractionResultShape]:
        size = pp_image.size
        box = None
        if prompts.bounding_box is not None:
            (x1, y1), (x2, y2) = prompts.bounding_box
            box = clip_box((x1, y1, x2, y2), "bounding_box", size)
        prompt = Prompt(points_array(list(prompts.pos_points), "pos_points", size),
                        points_array(list(prompts.neg_points), "neg_points", size), box)
        region = self.model.segment(pp_image, prompt)
        if region is None or region.mask is None:
            return []
        attributes = [] if region.score is None else [models.AttributeValRequest(
            spec_id=cvataa.InteractionResultAttributes.CONFIDENCE, value=f"{float(region.score):.4f}")]
        return [cvataa.InteractionResultShape(type="mask", points=rle_points(region.mask), attributes=attributes)]


# ---------------------------------------------------------------- trackers

@attrs.define
class TrackingState:
    """What the agent keeps per tracked shape: the token of its newest state in the model's store."""

    token: str


class TrackingFunction:
    """A tracker as ``cvat_sdk.auto_annotation.TrackingFunction``; its states stay in the model's store (the
    agent's memory, or Redis when ``CVAT_FUNCTIONS_REDIS_HOST`` is set) and the agent holds only tokens."""

    def __init__(self, model):
        self.model = model
        self.spec = cvataa.TrackingFunctionSpec(supported_shape_types=model.supported_shape_types)

    @in_model_env
    def preprocess_image(self, context: cvataa.TrackingFunctionContext, image: PIL.Image.Image) -> Image:
        picture = Image.from_pil(image)
        self.model.admit(picture)
        return picture

    @in_model_env
    def init_tracking_state(self, context: cvataa.TrackingFunctionShapeContext, pp_image: Image,
                            shape: cvataa.TrackableShape) -> TrackingState:
        _, region = region_of(shape.type, list(shape.points), "shape", pp_image.size)
        return TrackingState(self.model.start(pp_image, region))

    @in_model_env
    def track(self, context: cvataa.TrackingFunctionShapeContext, pp_image: Image,
              state: TrackingState) -> cvataa.TrackableShape | None:
        region, state.token = self.model.step(pp_image, state.token, "tracking state")
        return cvataa.TrackableShape(type=region.type, points=region_points(region))


FUNCTIONS = {"detector": DetectionFunction, "interactor": InteractionFunction, "tracker": TrackingFunction}


def for_model(model: Model):
    """The auto-annotation function of ``model``'s kind."""
    if model.kind not in FUNCTIONS:
        raise RequestError(f"{model.name} is a {model.kind}: CVAT's SDK has no auto-annotation protocol for it")
    return FUNCTIONS[model.kind](model)


def create(function: str, labels: str | None = None, **settings: Any):
    """``cvat-cli``'s factory: ``function`` is a function folder (relative to the working directory or to this
    repository); ``labels`` gives a text-prompted detector its vocabulary (names, or a JSON/YAML file of names
    with prompts: :mod:`common.core.vocabulary`); other parameters are settings variables of that name, over
    the process environment, for this model only (os.environ is not written)."""
    folder = find_folder(function)
    if labels:
        folder = vocabulary.staged(folder, vocabulary.parse(labels), Path(tempfile.mkdtemp(prefix="cvat-aa-")) / "f")
    for name in settings:
        if not name.isupper():
            raise ValueError(f"-p {name}=...: parameters other than function are settings variables (upper case)")
    return for_model(load_model(folder, env={**os.environ, **{k: str(v) for k, v in settings.items()}}))

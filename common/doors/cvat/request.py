"""CVAT's requests for the four function kinds, validated into typed requests (../shared/docs/cvat-protocol.md,
section 4) that hold our own :class:`~common.core.image.Image`, :class:`~common.core.prompts.Prompt` and
:class:`~common.core.results.Region` values. Points, boxes and shapes follow the rules of
:mod:`common.core.prompts`; at most ``MAX_OBJECTS`` tracked shapes or boxes per image in one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from common.core.errors import RequestError
from common.core.image import Image
from common.core.prompts import (Prompt, ReidBox, at_most, brief, clip_box, flat_numbers, json_type, number, point,
                                 points_array, points_bbox, region_of)
from common.core.results import Region

# Most tracked objects and re-identified boxes one request may hold (clicks: MAX_POINTS). Annotators use a
# handful; the models' cost grows with each (ReID compares all pairs of boxes), so a request holding millions
# of them within the body limit must not reach a model.
MAX_OBJECTS = 1000
SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")


# ---------------------------------------------------------------- field helpers

def require_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")
    return body


def optional_threshold(body: Mapping[str, Any], default: float | None, name: str = "threshold") -> float | None:
    value = body.get(name)
    if value is None:
        return default
    value = number(value, name)
    if not 0.0 <= value <= 1.0:
        raise RequestError(f"{name} must be between 0 and 1, got {value}")
    return value


def image_field(body: Mapping[str, Any], name: str = "image") -> Image:
    if name not in body or body[name] is None:
        raise RequestError(f"{name} is required")
    return Image.from_base64(body[name], name)


def points_list(body: Mapping[str, Any], name: str, size: tuple[int, int], required: bool) -> np.ndarray:
    """The field ``name`` of ``body``: a list of [x, y] points as an (N, 2) float array (:func:`points_array`)."""
    return points_array(body.get(name), name, size, required)


# ---------------------------------------------------------------- detector

@dataclass
class DetectorRequest:
    image: Image
    threshold: float | None  # None: the model's default
    labels: tuple[str, ...] | None = None  # only these spec labels (our extension; CVAT sends none)
    prompts: tuple[str, ...] | None = None  # text-prompted detectors: these phrases, each its own label (ours too)


def label_names(body: Mapping[str, Any], name: str = "labels") -> tuple[str, ...] | None:
    """An optional list of label names (strings), at most ``MAX_OBJECTS``."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{name} must be a list of label names (strings)")
    at_most(value, MAX_OBJECTS, name, "names")
    return tuple(value)


MAX_PROMPT = 200  # characters of one text prompt


def parse_detector(body: object, default_threshold: float | None = None) -> DetectorRequest:
    """``{"image": b64, "threshold"?: 0..1, "labels"?: [name, ...], "prompts"?: [phrase, ...]}``. CVAT never
    sends a threshold of 0 (it drops falsy values), labels or prompts."""
    body = require_object(body)
    threshold = optional_threshold(body, default_threshold)
    labels, prompts = label_names(body), label_names(body, "prompts")
    if labels is not None and prompts is not None:
        raise RequestError("send labels (names of the function's labels) or prompts (phrases to look for), not both")
    if prompts is not None:
        prompts = tuple(dict.fromkeys(p.strip() for p in prompts))
        if not prompts or not all(0 < len(p) <= MAX_PROMPT for p in prompts):
            raise RequestError(f"prompts must be phrases of 1 to {MAX_PROMPT} characters")
    return DetectorRequest(image=image_field(body), threshold=threshold, labels=labels, prompts=prompts)


# ---------------------------------------------------------------- interactor

@dataclass
class InteractorRequest:
    image: Image
    prompt: Prompt
    threshold: float | None
    full_mask: bool = False  # the legacy full-frame reply
    blob: bool = False  # the embedding itself, for CVAT's SAM plugin


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false")
    return value


def parse_interactor(body: object, points_optional: bool = False) -> InteractorRequest:
    """``pos_points``/``neg_points`` lists of [x, y]; ``obj_bbox`` [[x1, y1], [x2, y2]], [] or null.

    With ``points_optional`` (models that prepare an image ahead of clicks) ``pos_points`` may be left out."""
    body = require_object(body)
    if points_optional and "pos_points" not in body:
        body = {**body, "pos_points": []}  # a precompute or blob request needs no points
    threshold = optional_threshold(body, None)
    image = image_field(body)
    size = image.size
    pos = points_list(body, "pos_points", size, required=True)
    neg = points_list(body, "neg_points", size, required=False)
    bbox_value = body.get("obj_bbox")
    bbox = None
    if bbox_value not in (None, []):
        if not isinstance(bbox_value, (list, tuple)) or len(bbox_value) != 2:
            raise RequestError("obj_bbox must be [[x1, y1], [x2, y2]]")
        (x1, y1), (x2, y2) = (point(p, f"obj_bbox[{i}]") for i, p in enumerate(bbox_value))
        bbox = clip_box((x1, y1, x2, y2), "obj_bbox", size)
    return InteractorRequest(image, Prompt(pos, neg, bbox), threshold, flag(body, "full_mask"), flag(body, "blob"))


# ---------------------------------------------------------------- tracker

@dataclass
class TrackedShape:
    """A shape a track starts from: its points as the client sent them (echoed back) and as a :class:`Region`."""

    type: str
    points: list[float]
    region: Region


@dataclass
class TrackerRequest:
    image: Image
    shapes: list[TrackedShape | None]
    states: list[Any]
    legacy: bool  # shapes came as bare point lists (trackers without supported_shape_types)


def parse_tracker(body: object, supported_shape_types: tuple[str, ...] = ("rectangle",)) -> TrackerRequest:
    """``shapes`` (bare point lists or ``{"type", "points"}``, null when continuing) and ``states``.

    ``states`` is ``[]`` when tracking starts; shapes pair with states by position (4.5.1).
    """
    body = require_object(body)
    image = image_field(body)
    size = image.size
    states = body.get("states")
    states = [] if states is None else states
    if not isinstance(states, list):
        raise RequestError("states must be a list")
    at_most(states, MAX_OBJECTS, "states", "objects")
    shapes_value = body.get("shapes")
    if shapes_value is None:
        shapes_value = [None] * len(states)
    if not isinstance(shapes_value, list):
        raise RequestError("shapes must be a list")
    at_most(shapes_value, MAX_OBJECTS, "shapes", "objects")
    if len(states) > len(shapes_value):
        shapes_value = list(shapes_value) + [None] * (len(states) - len(shapes_value))
    shapes: list[TrackedShape | None] = []
    legacy = False
    for i, raw in enumerate(shapes_value):
        name = f"shapes[{i}]"
        if raw is None:
            if i >= len(states) or states[i] is None:
                raise RequestError(f"{name} is null but there is no state to continue from")
            shapes.append(None)
            continue
        if isinstance(raw, Mapping):
            shape_type = raw.get("type")
            if shape_type not in supported_shape_types:
                raise RequestError(
                    f"{name}.type must be one of {', '.join(supported_shape_types)}, got {brief(shape_type)}"
                )
            shapes.append(tracked_shape(shape_type, raw.get("points"), f"{name}.points", size))
        else:
            legacy = True
            shapes.append(tracked_shape("rectangle", raw, name, size))
    return TrackerRequest(image, shapes, states, legacy)


def tracked_shape(shape_type: str, value: object, name: str, size: tuple[int, int]) -> TrackedShape:
    """A tracker's prompt shape, checked (:func:`~common.core.prompts.region_of`)."""
    points, region = region_of(shape_type, value, name, size)
    return TrackedShape(shape_type, points, region)


# ---------------------------------------------------------------- reid

@dataclass
class ReidRequest:
    image0: Image
    image1: Image
    boxes0: list[ReidBox]
    boxes1: list[ReidBox]
    threshold: float
    max_distance: float


def _reid_boxes(body: Mapping[str, Any], name: str, size: tuple[int, int]) -> list[ReidBox]:
    value = body.get(name)
    if not isinstance(value, list):
        raise RequestError(f"{name} must be a list of shapes")
    at_most(value, MAX_OBJECTS, name, "boxes")
    boxes = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise RequestError(f"{name}[{i}] must be a shape object with points")
        pts = flat_numbers(item.get("points"), f"{name}[{i}].points", min_len=4, even=True)
        box = points_bbox(pts, f"{name}[{i}]", size)
        label_id = item.get("label_id")
        if label_id is not None and (isinstance(label_id, bool) or not isinstance(label_id, (int, str))):
            raise RequestError(f"{name}[{i}].label_id must be a label id (an integer or a string), "
                               f"got {json_type(label_id)}")
        boxes.append(ReidBox(box, label_id))
    return boxes


def parse_reid(body: object, default_threshold: float = 0.5, default_max_distance: float = 50) -> ReidRequest:
    body = require_object(body)
    image0, image1 = image_field(body, "image0"), image_field(body, "image1")
    threshold = optional_threshold(body, default_threshold)
    max_distance = body.get("max_distance")
    max_distance = default_max_distance if max_distance is None else number(max_distance, "max_distance")
    if max_distance < 0:
        raise RequestError(f"max_distance must not be negative, got {max_distance:g}")
    return ReidRequest(
        image0, image1, _reid_boxes(body, "boxes0", image0.size), _reid_boxes(body, "boxes1", image1.size),
        threshold, max_distance,
    )

"""CVAT's requests for the four function kinds, validated into typed requests (../shared/docs/cvat-protocol.md,
section 4) that hold our own :class:`~common.core.image.Image`, :class:`~common.models.base.Prompt` and
:class:`~common.core.results.Region` values.

Coordinate rules (CVAT uses continuous pixel coordinates, 0..width and 0..height):

- A point (``pos_points``, ``neg_points``) must lie inside the image extended by ``POINT_TOLERANCE``
  pixels on each side; it is then clipped to ``[0, width] × [0, height]``. Further out is a 400.
- A box (``obj_bbox``, tracker rectangles, reid boxes) is clipped to the image; a box that has no area
  left after clipping is a 400.
- Every number must be a finite int or float (not a bool, not a string).
- At most ``MAX_POINTS`` clicks, ``MAX_OBJECTS`` tracked shapes or boxes per image in one request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Mask, Region
from common.doors.cvat.shapes import from_cvat_rle
from common.models.base import Prompt, ReidBox

POINT_TOLERANCE = 1.0
# Most clicks, tracked objects and re-identified boxes one request may hold. Annotators use a handful; the
# models' cost grows with each (SAM attends from every click to the whole image, ReID compares all pairs of
# boxes), so a request holding millions of them within the body limit must not reach a model.
MAX_POINTS = 1000
MAX_OBJECTS = 1000
SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")


# ---------------------------------------------------------------- field helpers

def require_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}")
    return body


def number(value: object, name: str) -> float:
    """A finite int or float; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number, got {_json_type(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        raise RequestError(f"{name} is too large a number") from None
    if not math.isfinite(value):
        raise RequestError(f"{name} must be finite, got {value}")
    return value


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


def point(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RequestError(f"{name} must be [x, y]")
    return number(value[0], f"{name}[0]"), number(value[1], f"{name}[1]")


def point_in_image(value: object, name: str, size: tuple[int, int]) -> tuple[float, float]:
    x, y = point(value, name)
    width, height = size
    tol = POINT_TOLERANCE
    if not (-tol <= x <= width + tol and -tol <= y <= height + tol):
        raise RequestError(f"{name} = [{x:g}, {y:g}] is outside the {width}x{height} image")
    return min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))


def points_list(body: Mapping[str, Any], name: str, size: tuple[int, int], required: bool) -> np.ndarray:
    """A list of [x, y] points as an (N, 2) float array, validated and clipped to the image."""
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"{name} is required (a list of [x, y] points, possibly empty)")
        value = []
    if not isinstance(value, (list, tuple)):
        raise RequestError(f"{name} must be a list of [x, y] points")
    at_most(value, MAX_POINTS, name, "points")
    pts = [point_in_image(p, f"{name}[{i}]", size) for i, p in enumerate(value)]
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def at_most(items: list, limit: int, name: str, what: str) -> None:
    if len(items) > limit:
        raise RequestError(f"{name} has {len(items)} {what}; one request may hold at most {limit}")


def clip_box(box: tuple[float, float, float, float], name: str, size: tuple[int, int]) -> tuple[float, ...]:
    """Order the corners, clip to the image, refuse a box with no area left."""
    x1, y1, x2, y2 = box
    width, height = size
    xtl, xbr = sorted((x1, x2))
    ytl, ybr = sorted((y1, y2))
    xtl, xbr = min(max(xtl, 0.0), width), min(max(xbr, 0.0), width)
    ytl, ybr = min(max(ytl, 0.0), height), min(max(ybr, 0.0), height)
    if xbr <= xtl or ybr <= ytl:
        raise RequestError(f"{name} = [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has no area inside the {width}x{height} image")
    return xtl, ytl, xbr, ybr


def points_bbox(points: list[float], name: str, size: tuple[int, int]) -> tuple[float, ...]:
    """The clipped bounding box of flat [x0, y0, x1, y1, ...] points (a rectangle, polygon, ...)."""
    xs, ys = points[0::2], points[1::2]
    return clip_box((min(xs), min(ys), max(xs), max(ys)), name, size)


def flat_numbers(value: object, name: str, min_len: int = 0, even: bool = False) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise RequestError(f"{name} must be a list of numbers")
    nums = [number(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if len(nums) < min_len:
        raise RequestError(f"{name} must have at least {min_len} numbers, got {len(nums)}")
    if even and len(nums) % 2:
        raise RequestError(f"{name} must have an even number of values (x, y pairs), got {len(nums)}")
    return nums


def _brief(value: object) -> str:
    """A client's value for an error message: a short string quoted, anything else by its type."""
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    return _json_type(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


# ---------------------------------------------------------------- detector

@dataclass
class DetectorRequest:
    image: Image
    threshold: float
    labels: tuple[str, ...] | None = None  # only these spec labels (our extension; CVAT sends none)


def label_names(body: Mapping[str, Any], name: str = "labels") -> tuple[str, ...] | None:
    """An optional list of label names (strings), at most ``MAX_OBJECTS``."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{name} must be a list of label names (strings)")
    at_most(value, MAX_OBJECTS, name, "names")
    return tuple(value)


def parse_detector(body: object, default_threshold: float = 0.5) -> DetectorRequest:
    """``{"image": b64, "threshold"?: 0..1, "labels"?: [name, ...]}``. CVAT never sends a threshold of 0 (it
    drops falsy values) nor labels."""
    body = require_object(body)
    threshold = optional_threshold(body, default_threshold)
    return DetectorRequest(image=image_field(body), threshold=threshold, labels=label_names(body))


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
                    f"{name}.type must be one of {', '.join(supported_shape_types)}, got {_brief(shape_type)}"
                )
            shapes.append(tracked_shape(shape_type, raw.get("points"), f"{name}.points", size))
        else:
            legacy = True
            shapes.append(tracked_shape("rectangle", raw, name, size))
    return TrackerRequest(image, shapes, states, legacy)


def tracked_shape(shape_type: str, value: object, name: str, size: tuple[int, int]) -> TrackedShape:
    """A tracker's prompt shape, checked: rectangles clipped, polygons with 3+ points over the image, masks
    decodable (CVAT's RLE + bbox)."""
    if shape_type == "mask":
        pts = flat_numbers(value, name, min_len=5)
        return TrackedShape(shape_type, pts, Region("mask", mask=Mask.from_full(from_cvat_rle(pts, *size))))
    pts = flat_numbers(value, name, min_len=6 if shape_type == "polygon" else 4, even=True)
    box = points_bbox(pts, name, size)  # a shape wholly outside the image is refused
    if shape_type == "rectangle":
        return TrackedShape(shape_type, list(box), Region("rectangle", box=box))
    return TrackedShape(shape_type, pts, Region("polygon", polygon=np.asarray(pts, np.float64).reshape(-1, 2)))


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
                               f"got {_json_type(label_id)}")
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

"""Prompts as annotators give them (clicks, boxes, shapes to track), checked against the image: shared by every
door that takes them, whatever its platform's wire format.

Coordinate rules (continuous pixel coordinates, 0..width and 0..height, as CVAT's):

- A point must lie inside the image extended by ``POINT_TOLERANCE`` pixels on each side; it is then clipped to
  ``[0, width] × [0, height]``. Further out is a 400.
- A box is clipped to the image; a box that has no area left after clipping is a 400.
- Every number must be a finite int or float (not a bool, not a string).
- At most ``MAX_POINTS`` clicks in one request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from common.core.errors import RequestError
from common.core.results import Mask, Region
from common.core.rle import from_cvat_rle

POINT_TOLERANCE = 1.0
# Most clicks one request may hold. Annotators use a handful; a model's cost grows with each (SAM attends from
# every click to the whole image), so a request holding millions of them within the body limit must not reach
# a model.
MAX_POINTS = 1000


@dataclass
class Prompt:
    """What an annotator gave an interactor: clicks on the object and on the background ((N, 2) floats in image
    pixels, inside the image) and an optional box (xtl, ytl, xbr, ybr)."""

    positive: np.ndarray
    negative: np.ndarray
    box: tuple[float, float, float, float] | None = None

    @property
    def empty(self) -> bool:
        return len(self.positive) == 0 and len(self.negative) == 0 and self.box is None


@dataclass
class ReidBox:
    """A box to re-identify: xtl, ytl, xbr, ybr inside its image, and the label a match must share."""

    box: tuple[float, float, float, float]
    label_id: int | str | None


def number(value: object, name: str) -> float:
    """A finite int or float; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number, got {json_type(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        raise RequestError(f"{name} is too large a number") from None
    if not math.isfinite(value):
        raise RequestError(f"{name} must be finite, got {value}")
    return value


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


def points_array(value: object, name: str, size: tuple[int, int], required: bool = True) -> np.ndarray:
    """A list of [x, y] points as an (N, 2) float array, validated and clipped to the image."""
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


def brief(value: object) -> str:
    """A client's value for an error message: a short string quoted, anything else by its type."""
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    return json_type(value)


def json_type(value: object) -> str:
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


def region_of(shape_type: str, value: object, name: str, size: tuple[int, int]) -> tuple[list[float], Region]:
    """A shape to track (its flat points in CVAT's layout) as the points kept and its :class:`Region`, checked:
    rectangles clipped, polygons with 3+ points over the image, masks decodable (CVAT's RLE + bbox)."""
    if shape_type == "mask":
        pts = flat_numbers(value, name, min_len=5)
        return pts, Region("mask", mask=Mask.from_full(from_cvat_rle(pts, *size)))
    pts = flat_numbers(value, name, min_len=6 if shape_type == "polygon" else 4, even=True)
    box = points_bbox(pts, name, size)  # a shape wholly outside the image is refused
    if shape_type == "rectangle":
        return list(box), Region("rectangle", box=box)
    return pts, Region("polygon", polygon=np.asarray(pts, np.float64).reshape(-1, 2))

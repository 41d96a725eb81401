"""Builders for the shapes CVAT accepts from functions (../shared/docs/cvat-protocol.md 4.2 and 4.3), and CVAT's
mask layouts.

Each builder returns a plain JSON-ready dict. Numbers are Python floats/ints (never NumPy scalars or
bools), confidence is a string as in CVAT's reference handlers, attribute values are strings.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from common.core.errors import RequestError
from common.core.labels import attribute_text
from common.core.results import Mask, keypoint_in_image
from common.core.rle import paste, trailing_bbox
from common.core.settings import polygon_epsilon


def coords(values: Iterable[float], ndigits: int = 2) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def confidence_field(score: float | None) -> dict:
    return {} if score is None else {"confidence": f"{float(score):.4f}"}


def attributes_field(attributes: Mapping[str, object] | None) -> dict:
    if not attributes:
        return {}
    return {"attributes": [{"name": k, "value": attribute_text(v)} for k, v in attributes.items()]}


def _shape(shape_type: str, label: str, points: list, confidence, attributes) -> dict:
    return {"label": label, "type": shape_type, "points": points, **confidence_field(confidence), **attributes_field(attributes)}


def rectangle(label: str, box: Sequence[float], confidence: float | None = None,
              attributes: Mapping[str, object] | None = None) -> dict:
    """``box`` is [xtl, ytl, xbr, ybr]."""
    return _shape("rectangle", label, coords(box[:4]), confidence, attributes)


def polygon(label: str, points: Sequence[float] | np.ndarray, confidence: float | None = None,
            attributes: Mapping[str, object] | None = None) -> dict:
    """``points`` is flat [x0, y0, x1, y1, ...] or an (N, 2) array; at least 3 points."""
    return _shape("polygon", label, coords(np.asarray(points, dtype=float).ravel()), confidence, attributes)


def polyline(label: str, points: Sequence[float] | np.ndarray, confidence: float | None = None,
             attributes: Mapping[str, object] | None = None) -> dict:
    return _shape("polyline", label, coords(np.asarray(points, dtype=float).ravel()), confidence, attributes)


def points(label: str, points: Sequence[float] | np.ndarray, confidence: float | None = None,
           attributes: Mapping[str, object] | None = None) -> dict:
    return _shape("points", label, coords(np.asarray(points, dtype=float).ravel()), confidence, attributes)


def tag(label: str, confidence: float | None = None, attributes: Mapping[str, object] | None = None) -> dict:
    return {"label": label, "type": "tag", **confidence_field(confidence), **attributes_field(attributes)}


def keypoint(label: str, xy: Sequence[float], outside: bool = False,
             attributes: Mapping[str, object] | None = None) -> dict:
    """One skeleton element; ``outside`` marks an invisible point (CVAT keeps its position)."""
    return {"label": label, "type": "points", "points": coords(xy[:2]), "outside": bool(outside),
            **attributes_field(attributes)}


def image_keypoint(label: str, xy: Sequence[float], width: int, height: int, visible: bool = True) -> dict:
    """A skeleton element for a predicted point: clamped into the image, ``outside`` when off it or not visible."""
    x, y, outside = keypoint_in_image(xy[0], xy[1], width, height, visible)
    return keypoint(label, (x, y), outside=outside)


def skeleton(label: str, elements: list[dict], confidence: float | None = None,
             attributes: Mapping[str, object] | None = None) -> dict:
    """``elements`` are :func:`keypoint` dicts, one per sublabel of the skeleton label."""
    return {"label": label, "type": "skeleton", "elements": elements, **confidence_field(confidence),
            **attributes_field(attributes)}


# ---------------------------------------------------------------- masks

def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive bounding box (xtl, ytl, xbr, ybr) of the non-zero pixels, None when empty."""
    found = Mask.from_full(mask)
    return None if found is None else found.bbox


def detector_mask(mask: Mask) -> list[int]:
    """Detector mask layout: the box's pixels (0/255) row-major, then [xtl, ytl, xbr, ybr] inclusive."""
    return (mask.pixels.astype(np.uint8) * 255).ravel().tolist() + list(mask.bbox)


def to_cvat_mask(mask: np.ndarray) -> list[int] | None:
    """:func:`detector_mask` of an image-sized mask; None when it is empty."""
    found = Mask.from_full(mask)
    return None if found is None else detector_mask(found)


def from_cvat_mask(values: Sequence[float], width: int, height: int) -> np.ndarray:
    """Inverse of :func:`to_cvat_mask`: a full-size boolean mask. Validates the layout."""
    xtl, ytl, xbr, ybr = bbox = trailing_bbox(values, width, height, "pixels")
    needed = (xbr - xtl + 1) * (ybr - ytl + 1)
    if len(values) - 4 != needed:
        raise RequestError(f"mask has {len(values) - 4} pixels, its bbox needs {needed}")
    return paste(np.asarray(values[:-4]), bbox, width, height)


def mask_to_polygon(mask: np.ndarray, epsilon: float | None = None) -> np.ndarray | None:
    """The largest outer contour of an image-sized binary mask as an (N, 2) float array, simplified with
    ``epsilon`` (default :func:`polygon_epsilon`); None when the mask is empty or the contour has < 3 points."""
    found = Mask.from_full(mask)
    return None if found is None else found.polygon(polygon_epsilon() if epsilon is None else epsilon)

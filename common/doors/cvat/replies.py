"""Our results in CVAT's reply formats (../shared/docs/cvat-protocol.md, sections 4.2 to 4.5).

Here, and nowhere below the door: label names, confidences as strings, coordinates rounded to 2 decimals,
masks in CVAT's two layouts (detectors: the box's pixels; interactors and trackers: RLE), a mask's polygon in
its ``points``, skeleton elements, the interactor's compact, ``full_mask`` and ``blob`` forms, and the
tracker's legacy form.
"""

from __future__ import annotations

import base64

import numpy as np

from common.core.errors import RequestError
from common.core.image import max_memory
from common.core import rle
from common.core.labels import Label, Labels
from common.core.results import Detections, Mask, Region
from common.core.settings import polygon_epsilon
from common.doors.cvat import shapes

# What a full-mask reply costs per pixel: a Python list entry (8 bytes) and its JSON text ("255," or "0,").
FULL_MASK_BYTES_PER_PIXEL = 12


def detection_shape(detections: Detections, i: int, label: Label, width: int, height: int) -> dict:
    """Detection ``i`` as the shape its label declares: a skeleton from its keypoints, a mask (with its polygon
    in ``points``), a polygon, or else a rectangle."""
    score = float(detections.score[i])
    attributes = detections.attributes[i] if detections.attributes is not None else None
    geometry = detections.geometry(i, label)
    if geometry == "skeleton":
        elements = [shapes.keypoint(sublabel.name, (x, y), outside=outside) for sublabel, (x, y, outside)
                    in zip(label.sublabels, detections.keypoints_in_image(i, width, height))]
        return shapes.skeleton(label.name, elements, score, attributes)
    if geometry == "mask":
        return mask_shape(label.name, detections.masks[i], score, attributes)
    if geometry == "polygon":
        return shapes.polygon(label.name, detections.polygons[i], score, attributes)
    return shapes.rectangle(label.name, detections.xyxy[i], score, attributes)


def mask_shape(label: str, mask: Mask, score: float, attributes: dict | None) -> dict:
    """A detector's ``mask`` shape: the box's pixels (0/255) and its inclusive box; ``points`` hold its polygon
    so that CVAT's "convert masks to polygons" works."""
    shape = {"label": label, "type": "mask", "mask": shapes.detector_mask(mask),
             **shapes.confidence_field(score), **shapes.attributes_field(attributes)}
    polygon = mask.polygon(polygon_epsilon())
    if polygon is not None:
        shape["points"] = shapes.coords(polygon.ravel())
    return shape


def detector_reply(detections: Detections, labels: Labels, width: int, height: int) -> list[dict]:
    """One shape per detection whose class id is a label of the spec, in the detections' order."""
    return [detection_shape(detections, i, label, width, height) for i, label in detections.labelled(labels)]


def interactor_reply(region: Region | None, size: tuple[int, int], full_mask: bool) -> dict:
    """The compact ``{"shapes": [{"type": "mask", "points": RLE + box}]}`` (with the score as the ``spec_id`` 0
    confidence attribute CVAT's UI reads), or, when asked, the legacy full-frame ``{"mask": [[0|255, ...]]}``."""
    mask = None if region is None else region.mask
    if full_mask:
        width, height = size
        need, limit = width * height * FULL_MASK_BYTES_PER_PIXEL, max_memory()
        if need > limit:
            raise RequestError(f"full_mask for a {width}x{height} image would take about {need / 2**20:.0f} MB, over "
                               f"the limit of {limit / 2**20:.0f} MB (IMAGE_MAX_MEMORY_MB); leave full_mask out "
                               "for the compact reply")
        full = np.zeros((height, width), bool) if mask is None else mask.full(width, height)
        return {"mask": (full.astype(np.uint8) * 255).tolist()}
    if mask is None:
        return {"shapes": []}
    shape: dict = {"type": "mask", "points": rle.rle_points(mask)}
    if region.score is not None:
        shape["attributes"] = [{"spec_id": 0, "value": f"{float(region.score):.4f}"}]
    return {"shapes": [shape]}


def blob_reply(embedding: np.ndarray) -> dict:
    """The embedding for CVAT's SAM plugin: little-endian float32 bytes in base64."""
    data = np.ascontiguousarray(embedding.astype("<f4", copy=False)).tobytes()
    return {"blob": base64.b64encode(data).decode("ascii")}


def tracker_points(region: Region) -> list:
    """A tracked region as the points of its CVAT shape."""
    if region.type == "rectangle":
        return shapes.coords(region.box)
    if region.type == "polygon":
        return shapes.coords(region.polygon.ravel())
    return rle.rle_points(region.mask)

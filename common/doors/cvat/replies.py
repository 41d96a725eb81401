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
from common.core.labels import Labels
from common.core.results import Detections, Region, Shape
from common.core.settings import polygon_epsilon
from common.doors.cvat import shapes

# What a full-mask reply costs per pixel: a Python list entry (8 bytes) and its JSON text ("255," or "0,").
FULL_MASK_BYTES_PER_PIXEL = 12


def skeleton_shape(shape: Shape) -> dict:
    elements = [shapes.keypoint(sublabel.name, (x, y), outside=outside)
                for sublabel, (x, y, outside) in zip(shape.label.sublabels, shape.keypoints)]
    return shapes.skeleton(shape.label.name, elements, shape.score, shape.attributes)


def mask_shape(shape: Shape) -> dict:
    """A detector's ``mask`` shape: the box's pixels (0/255) and its inclusive box; ``points`` hold its polygon
    so that CVAT's "convert masks to polygons" works."""
    out = {"label": shape.label.name, "type": "mask", "mask": shapes.detector_mask(shape.mask),
           **shapes.confidence_field(shape.score), **shapes.attributes_field(shape.attributes)}
    polygon = shape.mask.polygon(polygon_epsilon())
    if polygon is not None:
        out["points"] = shapes.coords(polygon.ravel())
    return out


# each geometry as the shape its label declares
BUILDERS = {
    "skeleton": skeleton_shape,
    "mask": mask_shape,
    "polygon": lambda s: shapes.polygon(s.label.name, s.polygon, s.score, s.attributes),
    "box": lambda s: shapes.rectangle(s.label.name, s.box, s.score, s.attributes),
}


def detector_reply(detections: Detections, labels: Labels, width: int, height: int) -> list[dict]:
    """One shape per detection whose class id is a label of the spec, in the detections' order."""
    return [BUILDERS[shape.geometry](shape) for shape in detections.shapes(labels, width, height)]


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


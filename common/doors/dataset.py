"""The dataset door: a detector's :class:`~common.core.results.Detections` as Datumaro annotations, so that
``datumaro`` (CVAT's own dataset library) writes them in the formats annotation tools import (CVAT for images,
COCO instances and keypoints, YOLO, Datumaro).

Labels are the function spec's, in spec order; a skeleton label becomes a Datumaro points category with its
keypoint names and the edges of its ``svg``; scores are kept as the ``score`` attribute; recognised text and
other attributes as they are. Detections also round-trip through JSON (:func:`to_json`, :func:`from_json`) for
a run's journal.
"""

from __future__ import annotations

from typing import Any

import datumaro as dm
import numpy as np

from common.core.labels import Labels
from common.core.results import Detections, Mask, Shape
from common.core.rle import rle_decode, rle_encode

Visibility = dm.Points.Visibility
SCORE = "score"  # the attribute that keeps a detection's score


def categories(labels: Labels) -> dict:
    """Datumaro categories of the spec's labels (skeletons with their keypoints and joints)."""
    names = dm.LabelCategories()
    points = dm.PointsCategories()
    for index, label in enumerate(labels):
        names.add(label.name, attributes={SCORE, *(attribute.name for attribute in label.attributes)})
        if label.type == "skeleton":
            keypoints = [sublabel.name for sublabel in label.sublabels]
            joints = {(keypoints.index(a), keypoints.index(b)) for a, b in label.edges()}
            points.add(index, keypoints, joints)
    found = {dm.AnnotationType.label: names}
    if len(points.items):
        found[dm.AnnotationType.points] = points
    return found


def _points(shape: Shape, index: int, attributes: dict, width: int, height: int) -> dm.Points:
    xy = [v for x, y, _ in shape.keypoints for v in (x, y)]
    visibility = [Visibility.absent if outside else Visibility.visible for _, _, outside in shape.keypoints]
    return dm.Points(xy, visibility, label=index, attributes=attributes, group=shape.index + 1)


def _bbox(shape: Shape, index: int, attributes: dict, width: int, height: int) -> dm.Bbox:
    x1, y1, x2, y2 = shape.box
    return dm.Bbox(x1, y1, x2 - x1, y2 - y1, label=index, attributes=attributes, group=shape.index + 1)


# each geometry as Datumaro's annotation
BUILDERS = {
    "skeleton": _points,
    "mask": lambda s, index, a, w, h: dm.Mask(lambda mask=s.mask: mask.full(w, h), label=index, attributes=a,
                                              group=s.index + 1),
    "polygon": lambda s, index, a, w, h: dm.Polygon(s.polygon.ravel().tolist(), label=index, attributes=a,
                                                    group=s.index + 1),
    "box": _bbox,
}


def annotations(detections: Detections, labels: Labels, width: int, height: int) -> tuple[list, int]:
    """Datumaro annotations of the detections whose label is in the spec, and how many were not."""
    positions = {label.name: index for index, label in enumerate(labels)}
    shapes = detections.shapes(labels, width, height)
    found = [BUILDERS[shape.geometry](shape, positions[shape.label.name],
                                      {SCORE: shape.score, **shape.attributes}, width, height) for shape in shapes]
    return found, len(detections) - len(shapes)


def to_json(detections: Detections) -> dict:
    """Detections as JSON (masks as run-length counts over their box)."""
    out: dict[str, Any] = {"xyxy": detections.xyxy.tolist(), "score": detections.score.tolist(),
                           "class_id": detections.class_id.tolist()}
    if detections.masks is not None:
        out["masks"] = [None if m is None else {"x": m.x, "y": m.y, "shape": list(m.pixels.shape),
                                                "rle": rle_encode(m.pixels)} for m in detections.masks]
    if detections.polygons is not None:
        out["polygons"] = [None if p is None else np.asarray(p, np.float64).tolist() for p in detections.polygons]
    if detections.keypoints is not None:
        out["keypoints"] = detections.keypoints.tolist()
    if detections.attributes is not None:
        out["attributes"] = detections.attributes
    return out


def from_json(data: dict) -> Detections:
    """The inverse of :func:`to_json`."""
    masks = None
    if "masks" in data:
        masks = [None if m is None else Mask(rle_decode(m["rle"], m["shape"][0] * m["shape"][1]).reshape(m["shape"]),
                                              m["x"], m["y"]) for m in data["masks"]]
    polygons = None
    if "polygons" in data:
        polygons = [None if p is None else np.asarray(p, np.float64) for p in data["polygons"]]
    keypoints = np.asarray(data["keypoints"], np.float64) if "keypoints" in data else None
    return Detections(np.asarray(data["xyxy"]).reshape(-1, 4), data["score"], data["class_id"], masks, polygons,
                      keypoints, data.get("attributes"))

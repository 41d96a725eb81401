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
from common.core.results import Detections, Mask
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


def annotations(detections: Detections, labels: Labels, width: int, height: int) -> tuple[list, int]:
    """Datumaro annotations of the detections whose label is in the spec, and how many were not."""
    found = []
    positions = {label.name: index for index, label in enumerate(labels)}
    labelled = detections.labelled(labels)
    for i, label in labelled:
        index = positions[label.name]
        attributes: dict[str, Any] = {SCORE: float(detections.score[i])}
        if detections.attributes is not None:
            attributes.update(detections.attributes[i])
        geometry = detections.geometry(i, label)
        if geometry == "skeleton":
            xy, visibility = [], []
            for x, y, outside in detections.keypoints_in_image(i, width, height):
                xy += [x, y]
                visibility.append(Visibility.absent if outside else Visibility.visible)
            found.append(dm.Points(xy, visibility, label=index, attributes=attributes, group=i + 1))
        elif geometry == "mask":
            mask = detections.masks[i]
            found.append(dm.Mask(lambda mask=mask: mask.full(width, height), label=index, attributes=attributes,
                                 group=i + 1))
        elif geometry == "polygon":
            points = np.asarray(detections.polygons[i], np.float64).ravel().tolist()
            found.append(dm.Polygon(points, label=index, attributes=attributes, group=i + 1))
        else:
            x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
            found.append(dm.Bbox(x1, y1, x2 - x1, y2 - y1, label=index, attributes=attributes, group=i + 1))
    return found, len(detections) - len(labelled)


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

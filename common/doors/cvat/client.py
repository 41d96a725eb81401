"""The client side of CVAT's detector protocol: a served function's reply read back into :class:`Detections`.

For tools that call a function over HTTP as CVAT does (``tools/fn annotate`` with a served function): label
names become spec ids, string confidences scores, rectangles, polygons, detector masks and skeletons their
boxes, polygons, :class:`~common.core.results.Mask` objects and keypoints. Coordinates come back as the reply
rounded them (2 decimals).
"""

from __future__ import annotations

import numpy as np

from common.core.labels import Labels
from common.core.results import Detections, Mask
from common.doors.cvat.shapes import from_cvat_mask


def detections_from_reply(reply: list[dict], labels: Labels, width: int, height: int) -> tuple[Detections, int]:
    """The reply's shapes whose label is in the spec as Detections, and how many were not."""
    rows, unknown = [], 0
    for shape in reply:
        label = labels.by_name.get(shape.get("label"))
        if label is None:
            unknown += 1
            continue
        row = {"class_id": labels.id_of(label), "score": float(shape.get("confidence", 1.0)),
               "attributes": {a["name"]: a["value"] for a in shape.get("attributes", []) if "name" in a}}
        kind = shape["type"]
        if kind == "mask":
            row["mask"] = Mask.from_full(from_cvat_mask(shape["mask"], width, height))
            if row["mask"] is None:
                continue
            xtl, ytl, xbr, ybr = row["mask"].bbox
            row["box"] = [xtl, ytl, xbr + 1, ybr + 1]
        elif kind == "skeleton":
            points = np.array([[*e["points"][:2], 0.0 if e.get("outside") else 1.0] for e in shape["elements"]])
            row["keypoints"], row["box"] = points, [*points[:, :2].min(axis=0), *points[:, :2].max(axis=0)]
        else:
            points = np.asarray(shape["points"], np.float64).reshape(-1, 2)
            row["box"] = [*points.min(axis=0), *points.max(axis=0)]
            if kind != "rectangle":
                row["polygon"] = points
        rows.append(row)
    if not rows:
        return Detections.empty(), unknown

    def column(name):
        return [row.get(name) for row in rows] if any(name in row for row in rows) else None

    keypoints = None
    if any("keypoints" in row for row in rows):
        most = max(len(row["keypoints"]) for row in rows if "keypoints" in row)
        keypoints = np.zeros((len(rows), most, 3))
        for i, row in enumerate(rows):
            if "keypoints" in row:
                keypoints[i, :len(row["keypoints"])] = row["keypoints"]
    found = Detections([row["box"] for row in rows], [row["score"] for row in rows],
                       [row["class_id"] for row in rows], masks=column("mask"), polygons=column("polygon"),
                       keypoints=keypoints, attributes=[row["attributes"] for row in rows])
    return found, unknown

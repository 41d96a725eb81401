"""What models return, before any platform's wire format: :class:`Detections` and :class:`Region`.

Numbers stay floats and labels stay spec ids in here; rounding, string confidences, run-length encoding and
label names are the business of the doors (:mod:`common.doors`). Masks are :class:`Mask` objects: an object's
pixels inside its tight box and where that box lies, so that a hundred instance masks of a 4K frame cost
what their objects cover, not a hundred frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:
    from common.core.labels import Label, Labels


@dataclass(frozen=True)
class Mask:
    """One object's pixels: ``pixels`` (h×w bool) over its tight box, whose top-left pixel is (``x``, ``y``)."""

    pixels: np.ndarray
    x: int
    y: int

    @classmethod
    def from_full(cls, mask: np.ndarray) -> "Mask | None":
        """The non-zero pixels of an image-sized mask; None when there are none."""
        mask = np.asarray(mask) != 0
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            return None
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])
        return cls(mask[y0:y1 + 1, x0:x1 + 1], x0, y0)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive pixel box (xtl, ytl, xbr, ybr)."""
        height, width = self.pixels.shape
        return self.x, self.y, self.x + width - 1, self.y + height - 1

    def full(self, width: int, height: int) -> np.ndarray:
        """The mask at the size of its image (height×width bool)."""
        out = np.zeros((height, width), dtype=bool)
        xtl, ytl, xbr, ybr = self.bbox
        out[ytl:ybr + 1, xtl:xbr + 1] = self.pixels
        return out

    def _contours(self) -> list[np.ndarray]:
        padded = cv2.copyMakeBorder(self.pixels.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(self.x - 1, self.y - 1))
        return list(contours)

    @staticmethod
    def _simplified(contour: np.ndarray, epsilon: float) -> np.ndarray | None:
        if epsilon > 0:
            contour = cv2.approxPolyDP(contour, epsilon, True)
        contour = contour.reshape(-1, 2).astype(np.float64)
        return contour if len(contour) >= 3 else None

    def polygon(self, epsilon: float) -> np.ndarray | None:
        """The largest outer contour in image pixels as (N, 2) floats, simplified by ``epsilon`` pixels
        (Douglas-Peucker; 0 keeps every vertex); None when it has fewer than 3 points."""
        contours = self._contours()
        return self._simplified(max(contours, key=cv2.contourArea), epsilon) if contours else None

    def polygons(self, epsilon: float) -> list[np.ndarray]:
        """Every outer contour (largest first) with at least 3 points after simplification, for formats that
        have polygons but no masks."""
        found = (self._simplified(c, epsilon) for c in sorted(self._contours(), key=cv2.contourArea, reverse=True))
        return [polygon for polygon in found if polygon is not None]


def keypoint_in_image(x: float, y: float, width: int, height: int, visible: bool = True) -> tuple[float, float, bool]:
    """A predicted keypoint clamped into the image, and whether it is outside (off the image or not visible)."""
    x, y = float(x), float(y)
    inside = 0 <= x <= width and 0 <= y <= height
    return min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height)), not (inside and visible)


def _rows(values: Sequence | None, keep: np.ndarray) -> list | None:
    return None if values is None else [values[i] for i in keep]


@dataclass
class Detections:
    """N detections of one image: ``xyxy`` (N, 4) float boxes in image pixels, ``score`` (N,), ``class_id`` (N,)
    ids of the function's spec labels, and optionally per detection a :class:`Mask`, a polygon ((K, 2) floats),
    keypoints (``keypoints`` (N, K, 3): x, y, visible) and ``attributes`` (name → value, e.g. recognised text).
    A mask or polygon list may hold None for detections that are boxes only.

    The order is the model's (best first, as detectors answer); filtering keeps it.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    masks: list[Mask] | None = None
    polygons: list[np.ndarray] | None = None
    keypoints: np.ndarray | None = None
    attributes: list[dict[str, Any]] | None = None

    def __post_init__(self):
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        n = len(self.xyxy)
        for name in ("score", "class_id", "masks", "polygons", "keypoints", "attributes"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Detections: {len(value)} {name} for {n} boxes")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence["Detections"]) -> "Detections":
        """The detections of all parts, in order (a part without masks or polygons gives None rows there when
        another part has them; without attributes, empty ones)."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty()

        def rows(name: str, fill: Any = None) -> list | None:
            if all(getattr(part, name) is None for part in parts):
                return None
            return [row for part in parts for row in (getattr(part, name) or [fill] * len(part))]

        keypoints = None if any(part.keypoints is None for part in parts) else np.concatenate(
            [part.keypoints for part in parts])
        attributes = rows("attributes", {})
        return cls(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.score for p in parts]),
                   np.concatenate([p.class_id for p in parts]), rows("masks"), rows("polygons"), keypoints,
                   None if attributes is None else [dict(row) for row in attributes])

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """The detections an index array, a boolean array or a slice selects, in that order."""
        keep = np.arange(len(self))[index].reshape(-1)
        return Detections(
            self.xyxy[keep], self.score[keep], self.class_id[keep], _rows(self.masks, keep),
            _rows(self.polygons, keep), None if self.keypoints is None else self.keypoints[keep],
            _rows(self.attributes, keep),
        )

    def with_score(self, threshold: float) -> "Detections":
        """Those scoring at least ``threshold``."""
        return self[self.score >= threshold]

    def best_first(self) -> "Detections":
        """Sorted by score, highest first (ties keep their order)."""
        return self[np.argsort(-self.score, kind="stable")]

    def labelled(self, labels: "Labels") -> list[tuple[int, "Label"]]:
        """(index, spec label) of the detections whose class id is a label of the spec, in order."""
        found = ((i, labels.label_of(int(class_id))) for i, class_id in enumerate(self.class_id))
        return [(i, label) for i, label in found if label is not None]

    def geometry(self, i: int, label: "Label") -> str:
        """What detection ``i`` is for a door: ``skeleton`` (a skeleton label with keypoints), ``mask``,
        ``polygon`` or ``box``."""
        if label.type == "skeleton" and self.keypoints is not None:
            return "skeleton"
        if self.masks is not None and self.masks[i] is not None:
            return "mask"
        if self.polygons is not None and self.polygons[i] is not None:
            return "polygon"
        return "box"

    def shapes(self, labels: "Labels", width: int, height: int) -> list["Shape"]:
        """The detections whose class id is a label of the spec, in order, each as one typed :class:`Shape`:
        what every door walks, mapping each ``geometry`` to its own builder."""
        out = []
        for i, label in self.labelled(labels):
            geometry = self.geometry(i, label)
            out.append(Shape(
                index=i, label=label, geometry=geometry, score=float(self.score[i]),
                attributes=dict(self.attributes[i]) if self.attributes is not None and self.attributes[i] else {},
                box=tuple(float(v) for v in self.xyxy[i]),
                polygon=np.asarray(self.polygons[i], np.float64).reshape(-1, 2) if geometry == "polygon" else None,
                mask=self.masks[i] if geometry == "mask" else None,
                keypoints=self.keypoints_in_image(i, width, height) if geometry == "skeleton" else None,
            ))
        return out

    def keypoints_in_image(self, i: int, width: int, height: int) -> list[tuple[float, float, bool]]:
        """Detection ``i``'s keypoints clamped into the image, each with whether it is outside (off the image or
        not visible)."""
        return [keypoint_in_image(x, y, width, height, bool(visible > 0)) for x, y, visible in self.keypoints[i]]

    def clip(self, width: int, height: int) -> "Detections":
        """Boxes clipped to the image ``[0, width] × [0, height]``."""
        xyxy = self.xyxy.copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        return replace(self, xyxy=xyxy)

    def nms(self, iou_threshold: float, score_threshold: float = 0.0, class_agnostic: bool = False,
            pixel: float = 0.0) -> "Detections":
        """Non-maximum suppression (OpenCV's), best first: per class, or over all boxes with ``class_agnostic``.
        A box goes when its IoU with a better one is over ``iou_threshold``; ``pixel=1`` measures sizes as
        ``x2 - x1 + 1``, the convention of older detectors' NMS (YOLOX's demo, py-faster-rcnn)."""
        if len(self) == 0:
            return self
        xywh = np.column_stack([self.xyxy[:, :2], self.xyxy[:, 2:] - self.xyxy[:, :2] + pixel])
        classes = np.zeros(len(self), np.int32) if class_agnostic else self.class_id.astype(np.int32)
        keep = cv2.dnn.NMSBoxesBatched(
            xywh.astype(np.float32).tolist(), self.score.astype(np.float32).tolist(), classes.tolist(),
            float(score_threshold), float(iou_threshold),
        )
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        return self[keep[np.argsort(-self.score[keep], kind="stable")]]


@dataclass(frozen=True)
class Shape:
    """One detection as doors write it (:meth:`Detections.shapes`): its spec ``label``, its ``geometry``
    (``skeleton``, ``mask``, ``polygon`` or ``box``), score and attributes, its ``box`` (xtl, ytl, xbr, ybr
    floats) and the geometry itself: ``polygon`` ((N, 2) floats), ``mask`` or ``keypoints`` (one
    ``(x, y, outside)`` per sublabel of the skeleton, clamped into the image)."""

    index: int
    label: "Label"
    geometry: str
    score: float
    attributes: dict[str, Any]
    box: tuple[float, float, float, float]
    polygon: np.ndarray | None = None
    mask: Mask | None = None
    keypoints: list[tuple[float, float, bool]] | None = None


@dataclass
class Region:
    """One object, as an interactor or a tracker sees it: a ``box`` (xtl, ytl, xbr, ybr floats), a ``polygon``
    ((K, 2) floats) or a :class:`Mask`, whichever ``type`` says, with an optional ``score``."""

    type: str  # "rectangle", "polygon" or "mask"
    box: tuple[float, float, float, float] | None = None
    polygon: np.ndarray | None = None
    mask: Mask | None = None
    score: float | None = None

    def to_mask(self, width: int, height: int) -> np.ndarray:
        """The region's pixels in a width × height image (bool): a box's pixels are those whose centres lie in
        it (coordinates rounded), a polygon is filled as OpenCV fills it."""
        if self.type == "mask":
            return np.zeros((height, width), bool) if self.mask is None else self.mask.full(width, height)
        canvas = np.zeros((height, width), np.uint8)
        if self.type == "rectangle":
            x1, y1, x2, y2 = self.box
            canvas[max(round(y1), 0):max(round(y2), 0), max(round(x1), 0):max(round(x2), 0)] = 1
        elif self.type == "polygon":
            cv2.fillPoly(canvas, [np.round(self.polygon).astype(np.int32)], 1)
        else:
            raise ValueError(f"cannot rasterize a {self.type}")
        return canvas.astype(bool)

    @classmethod
    def from_mask(cls, mask: np.ndarray, shape_type: str = "mask", epsilon: float = 1.0,
                  score: float | None = None) -> "Region | None":
        """An image-sized mask as a region of ``shape_type``: its pixels' box, its largest outer contour, or the
        mask itself; None when nothing of it is left to show."""
        found = mask if isinstance(mask, Mask) else Mask.from_full(mask)
        if found is None:
            return None
        if shape_type == "rectangle":
            xtl, ytl, xbr, ybr = found.bbox
            return cls("rectangle", box=(float(xtl), float(ytl), float(xbr + 1), float(ybr + 1)), score=score)
        if shape_type == "polygon":
            polygon = found.polygon(epsilon)
            return None if polygon is None else cls("polygon", polygon=polygon, score=score)
        return cls("mask", mask=found, score=score)

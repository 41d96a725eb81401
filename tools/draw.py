"""Render a function's reply on its input image (``tools/fn invoke --draw``)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from common.core.labels import Labels
from common.doors.cvat.shapes import from_cvat_mask
from common.core.rle import from_cvat_rle


def color_for(label: str) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per label."""
    hue = int(hashlib.md5(label.encode()).hexdigest()[:2], 16) * 180 // 256
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def _caption(canvas: np.ndarray, text: str, xy: tuple[float, float], color) -> None:
    x, y = int(xy[0]), int(xy[1])
    scale = max(0.4, min(canvas.shape[:2]) / 900)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, h + base + 2)
    cv2.rectangle(canvas, (x, y - h - base - 2), (x + w + 4, y), color, -1)
    cv2.putText(canvas, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _blend_mask(canvas: np.ndarray, mask: np.ndarray, color) -> None:
    canvas[mask] = (0.5 * canvas[mask] + 0.5 * np.array(color)).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, color, 2)


def _points(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _draw_edges(canvas: np.ndarray, elements: list[dict], edges: list[tuple[str, str]], color) -> None:
    visible = {e.get("label"): e["points"][:2] for e in elements if not e.get("outside")}
    for a, b in edges:
        if a in visible and b in visible:
            (x1, y1), (x2, y2) = visible[a], visible[b]
            cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), color, 2, cv2.LINE_AA)


def describe(shape: dict) -> str:
    """Label, confidence and attributes as one line."""
    text = str(shape.get("label", "")) + (f" {float(shape['confidence']):.2f}" if "confidence" in shape else "")
    for attr in shape.get("attributes") or []:
        if "name" in attr:
            text += f" {attr['name']}={attr.get('value')}"
    return text


def draw_shape(canvas: np.ndarray, shape: dict, tag_row: int = 0, labels: Labels | None = None,
               caption: str | None = None) -> None:
    """Draw one shape; ``caption`` replaces the default label/confidence/attributes caption."""
    label = str(shape.get("label", ""))
    color = color_for(label or shape.get("type", ""))
    kind = shape.get("type", "rectangle")
    text = describe(shape) if caption is None else caption
    height, width = canvas.shape[:2]
    pts = _points(shape.get("points") or []) if kind not in ("mask", "skeleton", "tag") else None
    if kind == "rectangle":
        (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
        anchor = (x1, y1)
    elif kind in ("polygon", "polyline"):
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], kind == "polygon", color, 2, cv2.LINE_AA)
        anchor = tuple(pts.min(axis=0))
    elif kind == "points":
        for x, y in pts:
            cv2.circle(canvas, (int(x), int(y)), 4, color, -1, cv2.LINE_AA)
        anchor = tuple(pts.min(axis=0))
    elif kind == "mask":
        if "mask" in shape:
            mask = from_cvat_mask(shape["mask"], width, height)
        else:
            mask = from_cvat_rle(shape["points"], width, height)
        _blend_mask(canvas, mask, color)
        ys, xs = np.nonzero(mask)
        anchor = (xs.min(), ys.min()) if len(xs) else (0, 0)
    elif kind == "skeleton":
        elements = shape.get("elements") or []
        visible = [e for e in elements if not e.get("outside")]
        spec_label = labels.by_name.get(label) if labels is not None else None
        if spec_label is not None:
            _draw_edges(canvas, elements, spec_label.edges(), color)
        for e in visible:
            x, y = e["points"][:2]
            cv2.circle(canvas, (int(x), int(y)), 4, color_for(e.get("label", "")), -1, cv2.LINE_AA)
        anchor = tuple(_points([e["points"][:2] for e in visible]).min(axis=0)) if visible else (0, 0)
    elif kind == "tag":
        anchor = (4, 24 * tag_row + 24)
    else:
        return
    if text:
        _caption(canvas, text, anchor, color)


def draw_reply(rgb: np.ndarray, reply, labels: Labels | None = None) -> np.ndarray:
    """A BGR image with the reply drawn: detector lists, interactor/tracker ``shapes``, full ``mask``.

    With the function's ``labels``, skeletons are drawn with the edges of their spec's svg.
    """
    canvas = np.ascontiguousarray(rgb[:, :, ::-1]).copy()
    if isinstance(reply, list):
        shapes = reply
    elif isinstance(reply, dict) and isinstance(reply.get("mask"), list):
        mask = np.asarray(reply["mask"]) != 0
        _blend_mask(canvas, mask, color_for("mask"))
        shapes = []
    elif isinstance(reply, dict):
        shapes = reply.get("shapes") or []
    else:
        shapes = []
    tags, notes = 0, []
    for shape in shapes:
        if isinstance(shape, dict):
            caption = None
            if any(a.get("name") == "text" for a in shape.get("attributes") or []):
                notes.append(f"{len(notes) + 1}: {describe(shape)}")  # recognised text goes beside the image
                caption = str(len(notes))
            draw_shape(canvas, shape, tags, labels, caption)
            tags += shape.get("type") == "tag"
        elif isinstance(shape, list) and len(shape) >= 4:  # legacy tracker: bare points
            draw_shape(canvas, {"type": "rectangle" if len(shape) == 4 else "polygon", "points": shape})
    return _with_notes(canvas, notes) if notes else canvas


def _with_notes(canvas: np.ndarray, notes: list[str]) -> np.ndarray:
    """The canvas with a white panel on its right listing ``notes`` one per line."""
    scale, row = 0.5, 20
    width = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in notes) + 16
    height = max(canvas.shape[0], row * len(notes) + 10)
    panel = np.full((height, width, 3), 255, np.uint8)
    for i, note in enumerate(notes):
        cv2.putText(panel, note, (8, row * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    padded = np.zeros((height,) + canvas.shape[1:], np.uint8)
    padded[:canvas.shape[0]] = canvas
    return np.hstack([padded, panel])

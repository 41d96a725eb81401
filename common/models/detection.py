"""Pre- and post-processing shared by box detectors: letterboxing, class-aware NMS, clipping."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.core.image import scaled_size


@dataclass
class Letterbox:
    """A resized, padded copy of an image and the scale that maps its coordinates back."""

    image: np.ndarray  # H×W×C, same dtype as the input
    scale: float  # model-input pixels per original pixel


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 114) -> Letterbox:
    """Resize ``image`` to fit ``size`` = (height, width) keeping its aspect ratio; pad right and bottom."""
    height, width = size
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = scaled_size(w, h, scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.full((height, width) + image.shape[2:], pad_value, dtype=image.dtype)
    out[:new_h, :new_w] = resized
    return Letterbox(out, scale)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                score_threshold: float, iou_threshold: float) -> np.ndarray:
    """Indices kept by class-aware NMS (boxes as xtl, ytl, xbr, ybr), highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.astype(np.float32).tolist(), scores.astype(np.float32).tolist(), classes.astype(np.int32).tolist(),
        float(score_threshold), float(iou_threshold),
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip xtl, ytl, xbr, ybr boxes to the image ``[0, width] × [0, height]``."""
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out

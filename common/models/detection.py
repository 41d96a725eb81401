"""Pre-processing shared by box detectors: letterboxing (NMS and clipping are methods of
:class:`~common.core.results.Detections`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Letterbox:
    """A resized, padded copy of an image and the scale that maps its coordinates back."""

    image: np.ndarray  # H×W×C, same dtype as the input
    scale: float  # model-input pixels per original pixel


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 114) -> Letterbox:
    """Resize ``image`` to fit ``size`` = (height, width) keeping its aspect ratio; pad right and bottom.

    The resized sides are ``int(side * scale)``, truncated as YOLOX's ``preproc`` does (773 wide at a scale of
    416/773 is 415, not 416), and at least one pixel each for images of extreme aspect ratio."""
    height, width = size
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.full((height, width) + image.shape[2:], pad_value, dtype=image.dtype)
    out[:new_h, :new_w] = resized
    return Letterbox(out, scale)

"""Pre-processing shared by box detectors: letterboxing (NMS and clipping are methods of
:class:`~common.core.results.Detections`)."""

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

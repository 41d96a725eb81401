"""What Siamese single-object trackers of the SiamFC family (SiamRPN++, NanoTrack, SiamMask) share.

The exemplar and search crops around the object with their context margin, padded with the image's mean
colour beyond its edges, and the penalty on changes of size and aspect ratio between the previous box and
each candidate, which the trackers multiply into their scores before the cosine window.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def subwindow(rgb: np.ndarray, center: tuple[float, float], side: int, out: int, fill: np.ndarray,
              half_to_even: bool = False) -> np.ndarray:
    """The ``side``×``side`` square around ``center`` (padded with ``fill`` beyond the image), resized to ``out``.
    Its corner is rounded half up (OpenCV's trackers) or, with ``half_to_even``, as Python rounds (SiamMask's
    original code)."""
    height, width = rgb.shape[:2]
    if half_to_even:
        x0, y0 = round(center[0] - (side + 1) / 2), round(center[1] - (side + 1) / 2)
    else:
        x0 = int(math.floor(center[0] - (side + 1) / 2 + 0.5))
        y0 = int(math.floor(center[1] - (side + 1) / 2 + 0.5))
    crop = np.empty((side, side, 3), np.uint8)
    crop[:] = fill
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if sx0 < sx1 and sy0 < sy1:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return cv2.resize(crop, (out, out), interpolation=cv2.INTER_LINEAR) if side != out else crop


def context_side(size: np.ndarray, context_amount: float) -> float:
    """Side of the square that holds the box (width, height) plus its context."""
    pad = context_amount * (size[0] + size[1])
    return math.sqrt((size[0] + pad) * (size[1] + pad))


def penalised_size(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The box's size with half its perimeter as context, as the size penalty compares it."""
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


def change(ratio: np.ndarray) -> np.ndarray:
    """How far a ratio is from 1, in either direction (always ≥ 1)."""
    return np.maximum(ratio, 1.0 / ratio)


def size_penalty(w: np.ndarray, h: np.ndarray, previous: np.ndarray, penalty_k: float) -> np.ndarray:
    """exp(-(k·(ratio change × scale change − 1))) of candidate boxes ``w``×``h`` against the previous box
    (width, height), all in the crop's pixels."""
    scale_change = change(penalised_size(w, h) / penalised_size(previous[0], previous[1]))
    ratio_change = change((previous[0] / previous[1]) / (w / h))
    return np.exp(-(ratio_change * scale_change - 1) * penalty_k)

"""Synthetic tracking sequences with exact ground truth: a textured object moving over another texture."""

from __future__ import annotations

import cv2
import numpy as np


def texture(rng: np.random.Generator, height: int, width: int, blur: int, palette: np.ndarray) -> np.ndarray:
    """Smoothed random noise mapped onto a colour palette (uint8 RGB)."""
    noise = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), blur)
    noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-6)
    index = np.clip((noise * (len(palette) - 1)).round().astype(int), 0, len(palette) - 1)
    return palette[index].astype(np.uint8)


def moving_object(frames: int = 40, size: tuple[int, int] = (640, 480), box: tuple[int, int] = (90, 60),
                  scale_to: float = 1.6, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames and the (frames, 4) ground-truth boxes [x1, y1, x2, y2] of an object that moves along a curve
    and grows from its first size to ``scale_to`` times it."""
    rng = np.random.default_rng(seed)
    width, height = size
    background = texture(rng, height, width, 6, rng.integers(60, 200, (8, 3)))
    obj = texture(rng, box[1] * 4, box[0] * 4, 3, np.array([[200, 30, 30], [250, 220, 40], [20, 20, 120], [240, 240, 240]]))
    images, boxes = [], []
    for t in range(frames):
        s = 1 + (scale_to - 1) * t / max(frames - 1, 1)
        w, h = int(round(box[0] * s)), int(round(box[1] * s))
        cx = width * (0.25 + 0.5 * t / max(frames - 1, 1))
        cy = height * (0.5 + 0.2 * np.sin(2 * np.pi * t / frames))
        x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
        frame = background.copy()
        frame[y1:y1 + h, x1:x1 + w] = cv2.resize(obj, (w, h), interpolation=cv2.INTER_AREA)
        images.append(frame)
        boxes.append([x1, y1, x1 + w, y1 + h])
    return images, np.array(boxes, dtype=np.float64)

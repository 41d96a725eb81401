"""GrabCut (OpenCV): a classical interactor that needs no weights.

A rectangle (``obj_bbox``, else the bounding box of the positive points with a margin) initialises the
segmentation; positive and negative points are painted as sure foreground and background; the largest
connected component of the result is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.core.errors import RequestError
from common.core.image import Image, scaled_size
from common.core.results import Region
from common.core.settings import Settings, setting
from common.core.prompts import Prompt
from common.models.base import Interactor


@dataclass(frozen=True)
class GrabcutSettings(Settings):
    iterations: int = setting("GRABCUT_ITERATIONS", 5)
    max_side: int = setting("GRABCUT_MAX_SIDE", 256)


def initial_rect(prompt: Prompt, width: int, height: int) -> tuple[int, int, int, int]:
    """(xtl, ytl, xbr, ybr) in whole pixels: the box, or the positive points' box grown by a margin."""
    if prompt.box is not None:
        xtl, ytl, xbr, ybr = prompt.box
    else:
        xs, ys = prompt.positive[:, 0], prompt.positive[:, 1]
        margin = max(0.15 * max(xs.max() - xs.min(), ys.max() - ys.min()), 0.1 * min(width, height))
        xtl, ytl, xbr, ybr = xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin
    return (int(max(0, np.floor(xtl))), int(max(0, np.floor(ytl))),
            int(min(width, np.ceil(xbr))), int(min(height, np.ceil(ybr))))


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


class ModelHandler(Interactor):
    settings: GrabcutSettings
    work_bytes_per_pixel = 3  # the object mask at the image's size, and the reply's copy of it

    def segment(self, image: Image, prompt: Prompt) -> Region | None:
        return Region.from_mask(self.mask(image.rgb, prompt))

    def mask(self, rgb: np.ndarray, prompt: Prompt) -> np.ndarray:
        """The object mask (H×W bool) for the prompt's box and clicks."""
        height, width = rgb.shape[:2]
        if prompt.box is None and len(prompt.positive) == 0:
            raise RequestError("GrabCut needs obj_bbox or at least one positive point")
        xtl, ytl, xbr, ybr = initial_rect(prompt, width, height)
        # Work on the box plus a band of surrounding background: GrabCut learns both colour models there.
        pad = max(8, (xbr - xtl + ybr - ytl) // 10)
        x0, y0, x1, y1 = max(0, xtl - pad), max(0, ytl - pad), min(width, xbr + pad), min(height, ybr + pad)
        # GrabCut's cost grows fast with pixels: run it on the region scaled to at most MAX_SIDE pixels
        # (each side at least one pixel, whatever the aspect ratio); only the result is scaled back.
        region_w, region_h = x1 - x0, y1 - y0
        small_w, small_h = scaled_size(region_w, region_h, min(1.0, self.settings.max_side / max(region_w, region_h)))
        sx, sy = small_w / region_w, small_h / region_h
        roi = cv2.cvtColor(cv2.resize(rgb[y0:y1, x0:x1], (small_w, small_h), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_RGB2BGR)
        mask = np.full((small_h, small_w), cv2.GC_BGD, np.uint8)
        rx0, ry0 = int((xtl - x0) * sx), int((ytl - y0) * sy)
        rx1, ry1 = int(np.ceil((xbr - x0) * sx)), int(np.ceil((ybr - y0) * sy))
        mask[ry0:ry1, rx0:rx1] = cv2.GC_PR_FGD
        radius = max(2, int(min(width * sx, height * sy)) // 150)
        for points, value in ((prompt.negative, cv2.GC_BGD), (prompt.positive, cv2.GC_FGD)):
            for x, y in points:
                cv2.circle(mask, (int((x - x0) * sx), int((y - y0) * sy)), radius, int(value), -1)
        if (mask == cv2.GC_BGD).all():
            return np.zeros((height, width), dtype=bool)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut's k-means starts from OpenCV's random generator: seed it (0 is its initial state) so that a
        # request's answer does not depend on what the worker answered before
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(roi, mask, None, bgd, fgd, self.settings.iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # too few background or foreground pixels to fit the colour models
            pass
        found = largest_component((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8) * 255
        if (small_w, small_h) != (region_w, region_h):  # one byte per pixel of the region, no more
            found = cv2.resize(found, (region_w, region_h), interpolation=cv2.INTER_LINEAR)
        full = np.zeros((height, width), dtype=bool)
        np.greater(found, 127, out=full[y0:y1, x0:x1])
        return full

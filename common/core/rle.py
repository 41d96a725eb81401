"""CVAT's run-length encoding of masks, which several doors and the dataset journal share.

Counts alternate runs of zeros and ones over a flat mask, starting with zeros; an interactor's or tracker's
mask is the counts over its box's pixels followed by the inclusive box ``[xtl, ytl, xbr, ybr]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from common.core.errors import RequestError
from common.core.results import Mask, Region


def rle_encode(flat: np.ndarray) -> list[int]:
    """CVAT run-length counts over a flat 0/1 sequence: alternating runs starting with zeros."""
    flat = np.asarray(flat).ravel() != 0
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def rle_decode(counts: Sequence[int], size: int) -> np.ndarray:
    """Inverse of :func:`rle_encode` into a flat boolean array of ``size`` values."""
    counts = np.asarray(counts, dtype=np.float64)  # any size of number, checked before it becomes an int
    if (counts < 0).any() or (counts > size).any() or (counts != np.floor(counts)).any():
        raise RequestError(f"RLE counts must be whole numbers from 0 to the mask's {size} pixels")
    counts = counts.astype(np.int64)
    if counts.sum() != size:
        raise RequestError(f"RLE counts sum to {int(counts.sum())}, expected {size}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts)


def rle_points(mask: Mask) -> list[int]:
    """Interactor/tracker mask points: RLE of the box's pixels followed by [xtl, ytl, xbr, ybr] inclusive."""
    return rle_encode(mask.pixels) + list(mask.bbox)


def region_points(region: Region) -> list:
    """A tracked or segmented region as the points of CVAT's shape of its type (both CVAT doors answer so):
    a box's corners or a polygon's vertices rounded to 2 decimals, a mask's :func:`rle_points`."""
    if region.type == "mask":
        return rle_points(region.mask)
    values = region.box if region.type == "rectangle" else region.polygon.ravel()
    return [round(float(v), 2) for v in values]


def to_cvat_rle(mask: np.ndarray) -> list[int] | None:
    """:func:`rle_points` of an image-sized mask; None when it is empty."""
    found = Mask.from_full(mask)
    return None if found is None else rle_points(found)


def from_cvat_rle(values: Sequence[float], width: int, height: int) -> np.ndarray:
    """Inverse of :func:`to_cvat_rle`: a full-size boolean mask."""
    xtl, ytl, xbr, ybr = bbox = trailing_bbox(values, width, height, "RLE counts")
    region = rle_decode(values[:-4], (xbr - xtl + 1) * (ybr - ytl + 1))
    return paste(region, bbox, width, height)


def trailing_bbox(values: Sequence[float], width: int, height: int, what: str) -> tuple[int, int, int, int]:
    """The inclusive [xtl, ytl, xbr, ybr] that ends a CVAT mask, checked against the image."""
    if len(values) < 5:
        raise RequestError(f"a mask needs its {what} followed by [xtl, ytl, xbr, ybr]")
    xtl, ytl, xbr, ybr = (int(v) for v in values[-4:])
    if not (0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height):
        raise RequestError(f"mask bbox {[xtl, ytl, xbr, ybr]} is not inside the {width}x{height} image")
    return xtl, ytl, xbr, ybr


def paste(region: np.ndarray, bbox: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    xtl, ytl, xbr, ybr = bbox
    full = np.zeros((height, width), dtype=bool)
    full[ytl:ybr + 1, xtl:xbr + 1] = region.reshape(ybr - ytl + 1, xbr - xtl + 1) != 0
    return full

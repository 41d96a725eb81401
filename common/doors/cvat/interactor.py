"""Replies of interactive segmenters in the forms CVAT's UI accepts (cvat-protocol.md 4.3).

By default the compact ``{"shapes": [{"type": "mask", "points": <RLE>..., xtl, ytl, xbr, ybr]}]}``.
A request with ``"full_mask": true`` gets the legacy full-frame ``{"mask": [[0|255, ...], ...]}`` instead,
which is H×W numbers (tens of MB of JSON for a 1080p frame), so only clients that need it should ask.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from common.core.errors import RequestError
from common.core.image import max_memory
from common.doors.cvat.shapes import interactor_mask


def wants_full_mask(body: Mapping[str, Any]) -> bool:
    value = body.get("full_mask", False)
    if not isinstance(value, bool):
        raise RequestError("full_mask must be true or false")
    return value


# What a full-mask reply costs per pixel: a Python list entry (8 bytes) and its JSON text ("255," or "0,").
FULL_MASK_BYTES_PER_PIXEL = 12


def interactor_reply(mask: np.ndarray, body: Mapping[str, Any], confidence: float | None = None) -> dict:
    """The reply for one object mask (H×W, non-zero = object) in the form the request asked for."""
    mask = np.asarray(mask) != 0
    if wants_full_mask(body):
        height, width = mask.shape
        need, limit = mask.size * FULL_MASK_BYTES_PER_PIXEL, max_memory()
        if need > limit:
            raise RequestError(f"full_mask for a {width}x{height} image would take about {need / 2**20:.0f} MB, over "
                               f"the limit of {limit / 2**20:.0f} MB (IMAGE_MAX_MEMORY_MB); leave full_mask out "
                               "for the compact reply")
        return {"mask": (mask.astype(np.uint8) * 255).tolist()}
    shape = interactor_mask(mask, confidence)
    return {"shapes": [shape] if shape is not None else []}

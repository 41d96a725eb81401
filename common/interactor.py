"""Replies of interactive segmenters in the forms CVAT's UI accepts (cvat-protocol.md 4.3).

By default the compact ``{"shapes": [{"type": "mask", "points": <RLE>..., xtl, ytl, xbr, ybr]}]}``.
A request with ``"full_mask": true`` gets the legacy full-frame ``{"mask": [[0|255, ...], ...]}`` instead,
which is H×W numbers (tens of MB of JSON for a 1080p frame), so only clients that need it should ask.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import RequestError
from .shapes import interactor_mask


def wants_full_mask(body: Mapping[str, Any]) -> bool:
    value = body.get("full_mask", False)
    if not isinstance(value, bool):
        raise RequestError("full_mask must be true or false")
    return value


def interactor_reply(mask: np.ndarray, body: Mapping[str, Any], confidence: float | None = None) -> dict:
    """The reply for one object mask (H×W, non-zero = object) in the form the request asked for."""
    mask = np.asarray(mask) != 0
    if wants_full_mask(body):
        return {"mask": (mask.astype(np.uint8) * 255).tolist()}
    shape = interactor_mask(mask, confidence)
    return {"shapes": [shape] if shape is not None else []}

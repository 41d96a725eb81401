"""The tracker protocol on top of :mod:`common.runtime.state_store`: a function implements ``start`` and ``step``.

Requests come in both of CVAT's forms (cvat-protocol.md 4.5): legacy trackers get shapes as bare point
lists, declared trackers (``supported_shape_types``) get ``{"type", "points"}`` dicts; when continuing, shapes
are ``null`` and only ``states`` matter. The reply pairs ``shapes`` and ``states`` with the request's
objects, in order. Each state is a token; the form the client used when the track started is remembered in
the state, so a continuing request (shapes all ``null``) is answered in that same form.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from common.doors.cvat.nuclio import ModelHandler
from common.core.errors import RequestError
from common.core.image import RequestImage
from common.doors.cvat.request import TrackedShape, TrackerRequest, parse_tracker
from common.doors.cvat.shapes import mask_bbox, mask_to_polygon, to_cvat_rle
from common.runtime.state_store import StateStore, from_env


class TrackerHandler(ModelHandler):
    """Base for tracker functions. Subclasses implement :meth:`start` and :meth:`step`."""

    kind = "tracker"

    def __init__(self, context=None, store: StateStore | None = None):
        super().__init__(context)
        # the function's name keeps the keys of different functions apart in a shared Redis
        self.store = store or from_env(self.config["metadata"]["name"], self.warn)

    @cached_property
    def supported_shape_types(self) -> tuple[str, ...]:
        """From the yaml's ``supported_shape_types`` annotation; rectangles when absent (a legacy tracker)."""
        value = str((self.config["metadata"].get("annotations") or {}).get("supported_shape_types") or "rectangle")
        return tuple(t.strip() for t in value.split(",") if t.strip())

    def parse(self, body) -> TrackerRequest:
        return parse_tracker(body, self.supported_shape_types)

    def start(self, image: RequestImage, shape: TrackedShape, legacy: bool) -> str:
        """Begin a track at ``shape``; the token of its first state (``legacy`` goes into the state)."""
        raise NotImplementedError

    def step(self, image: RequestImage, token: str, what: str) -> tuple[TrackedShape, str, bool]:
        """Continue from the state ``token`` names: the new shape, the new state's token, the legacy flag."""
        raise NotImplementedError

    def load_step(self, token: str, what: str, kind: str, image: RequestImage) -> tuple[dict[str, np.ndarray],
                                                                                         dict[str, Any]]:
        """The step state ``token`` names, checked to be of ``kind`` and for a frame of ``image``'s size.

        Step states must hold ``kind`` and ``image_size`` in their metadata.
        """
        arrays, state = self.store.get(token, what)
        if state.get("kind") != kind:
            raise RequestError(f"{what} is not a state of this tracker; start the track again")
        if list(image.size) != state.get("image_size"):
            width, height = state.get("image_size") or ("?", "?")
            raise RequestError(f"{what}: this frame is {image.size[0]}x{image.size[1]} but the track started on a "
                               f"{width}x{height} frame")
        return arrays, state

    def __call__(self, request: TrackerRequest) -> dict:
        shapes, states = [], []
        for i, shape in enumerate(request.shapes):
            state = request.states[i] if i < len(request.states) else None
            if state is None:  # a new track: CVAT echoes the shape it sent (as SiamMask does)
                token, legacy = self.start(request.image, shape, request.legacy), request.legacy
            else:  # continue; an old UI may resend the shape, which the state supersedes
                shape, token, legacy = self.step(request.image, state, f"states[{i}]")
            shapes.append(shape.points if legacy else {"type": shape.type, "points": shape.points})
            states.append(token)
        return {"shapes": shapes, "states": states}


def shape_from_mask(mask: np.ndarray, shape_type: str) -> TrackedShape | None:
    """A tracked object's mask as the shape type its track started with; None when there is nothing to show.

    Rectangles cover the mask's pixels, polygons follow its largest outer contour, masks are CVAT's RLE + bbox.
    """
    if shape_type == "rectangle":
        bbox = mask_bbox(mask)
        return None if bbox is None else TrackedShape("rectangle", [bbox[0], bbox[1], bbox[2] + 1, bbox[3] + 1])
    if shape_type == "polygon":
        polygon = mask_to_polygon(mask)
        return None if polygon is None else TrackedShape("polygon", [round(float(v), 2) for v in polygon.ravel()])
    points = to_cvat_rle(mask)
    return None if points is None else TrackedShape("mask", points)

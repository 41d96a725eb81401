"""The tracker kind: a model that starts a track on a region and steps it frame by frame, with every state in
the state store (:mod:`common.runtime.state_store`) and only an opaque token in the client's hands.

A function implements :meth:`Tracker.start` and :meth:`Tracker.step` (and :meth:`Tracker.step_many` when it can
step several objects of one frame together). States are immutable: each step stores
a new state under a new token, so a client that goes back to an earlier frame continues from exactly there.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable

import numpy as np

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Mask, Region
from common.core.settings import Settings
from common.models.base import Model
from common.runtime.state_store import StateStore, from_env


class Tracker(Model):
    """Base of tracker functions."""

    kind = "tracker"

    def __init__(self, settings: Settings | None = None, log: Callable[[str], None] | None = None,
                 store: StateStore | None = None):
        super().__init__(settings, log)
        # the function's name keeps the keys of different functions apart in a shared Redis
        self.store = store or from_env(self.name, self.warn)

    @cached_property
    def supported_shape_types(self) -> tuple[str, ...]:
        """From the yaml's ``supported_shape_types`` annotation; rectangles when absent (a legacy tracker)."""
        value = str((self.config["metadata"].get("annotations") or {}).get("supported_shape_types") or "rectangle")
        return tuple(t.strip() for t in value.split(",") if t.strip())

    def start(self, image: Image, region: Region) -> str:
        """Begin a track at ``region`` (of one of :attr:`supported_shape_types`); the token of its first state."""
        raise NotImplementedError

    def step(self, image: Image, token: str, what: str) -> tuple[Region, str]:
        """Continue from the state ``token`` names (``what`` names it in errors): the object's region in
        ``image``, in the type its track started with, and the new state's token."""
        raise NotImplementedError

    def step_many(self, image: Image, tokens: list[str], whats: list[str]) -> list[tuple[Region, str]]:
        """:meth:`step` for several tracks on one frame; a model that can run them together overrides this."""
        return [self.step(image, token, what) for token, what in zip(tokens, whats)]

    def load_steps(self, tokens: list[str], whats: list[str], kind: str, image: Image) -> list[tuple[
            dict[str, np.ndarray], dict[str, Any]]]:
        """The step states ``tokens`` name (in one round trip to the store), each checked to be of ``kind`` and
        for a frame of ``image``'s size. Step states must hold ``kind`` and ``image_size`` in their metadata."""
        found = self.store.get_many(tokens, whats)
        for (_, state), what in zip(found, whats):
            if state.get("kind") != kind:
                raise RequestError(f"{what} is not a state of this tracker; start the track again")
            if list(image.size) != state.get("image_size"):
                width, height = state.get("image_size") or ("?", "?")
                raise RequestError(f"{what}: this frame is {image.size[0]}x{image.size[1]} but the track started on "
                                   f"a {width}x{height} frame")
        return found

    def load_step(self, token: str, what: str, kind: str, image: Image) -> tuple[dict[str, np.ndarray],
                                                                                dict[str, Any]]:
        """:meth:`load_steps` of one state."""
        return self.load_steps([token], [what], kind, image)[0]


def remember(region: Region) -> tuple[dict[str, np.ndarray], list]:
    """A region as state: arrays for the store and a JSON value (see :func:`recall`)."""
    if region.type == "rectangle":
        return {}, [float(v) for v in region.box]
    if region.type == "polygon":
        return {}, [float(v) for v in region.polygon.ravel()]
    return {"last_mask": region.mask.pixels.astype(np.uint8)}, [region.mask.x, region.mask.y]


def recall(shape_type: str, value: list, arrays: dict[str, np.ndarray]) -> Region:
    """The region :func:`remember` stored."""
    if shape_type == "rectangle":
        return Region("rectangle", box=tuple(value))
    if shape_type == "polygon":
        return Region("polygon", polygon=np.asarray(value, np.float64).reshape(-1, 2))
    return Region("mask", mask=Mask(arrays["last_mask"] != 0, int(value[0]), int(value[1])))

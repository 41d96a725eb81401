"""CVAT's door to a model: a CVAT request body in, a JSON-ready reply out, one class per kind.

A door parses the body (:mod:`~common.doors.cvat.request`), checks the memory its images would cost, calls the
model's typed method and encodes the result (:mod:`~common.doors.cvat.replies`). The Nuclio entry
(:mod:`~common.doors.nuclio`) and every in-process caller go through the same doors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from common.core.errors import RequestError
from common.core.image import Image
from common.core.rle import region_points
from common.core.settings import env_bool
from common.doors.cvat import replies
from common.doors.cvat.request import (DetectorRequest, InteractorRequest, ReidRequest, TrackerRequest, parse_detector,
                                       parse_interactor, parse_reid, parse_tracker)
from common.models.base import Detector, Interactor, Model

if TYPE_CHECKING:  # importing them would import Redis and SciPy into every function
    from common.models.reid import Reidentifier
    from common.models.tracking import Tracker

LEGACY = ":legacy"  # ends the state of a track whose client speaks the legacy form (bare point lists)


@dataclass
class Reply:
    """A JSON-ready reply and its response headers (e.g. whether an embedding cache was hit)."""

    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class Door:
    kind: ClassVar[str]

    def __init__(self, model: Model):
        self.model = model
        model.config  # reads the yaml and checks its kind now, when the worker starts

    def parse(self, body: object) -> Any:
        raise NotImplementedError

    def answer(self, request: Any) -> Reply:
        raise NotImplementedError

    def check_memory(self, request: Any) -> None:
        """The model's memory guard (:meth:`~common.models.base.Model.admit`) over the request's images."""
        self.model.admit(*(value for value in (getattr(request, f.name) for f in dataclasses.fields(request))
                           if isinstance(value, Image)))

    def __call__(self, body: object) -> Reply:
        request = self.parse(body)
        self.check_memory(request)
        return self.answer(request)


class DetectorDoor(Door):
    kind = "detector"
    model: Detector

    def parse(self, body: object) -> DetectorRequest:
        return parse_detector(body)

    def answer(self, request: DetectorRequest) -> Reply:
        if request.prompts is None:
            detections = self.model.run(request.image, request.threshold, request.labels)
            return Reply(replies.detector_reply(detections, self.model.labels, *request.image.size))
        if not self.model.open_vocabulary:
            raise RequestError("prompts: this function finds a fixed list of labels; name some of them in labels")
        vocabulary = self.model.vocabulary(request.prompts)  # each phrase its own label, named by it
        detections = self.model.run(request.image, request.threshold, request.prompts, vocabulary)
        return Reply(replies.detector_reply(detections, vocabulary, *request.image.size))


class InteractorDoor(Door):
    kind = "interactor"
    model: Interactor

    def __init__(self, model: Interactor):
        super().__init__(model)
        # models that prepare images (an embedding) answer requests without clicks, and the SAM plugin's form
        self.prepares = type(model).prepare is not Interactor.prepare
        self.plugin_mode = self.prepares and env_bool("SAM_PLUGIN_MODE", False)

    def parse(self, body: object) -> InteractorRequest:
        return parse_interactor(body, points_optional=self.prepares)

    def answer(self, request: InteractorRequest) -> Reply:
        image, prompt = request.image, request.prompt
        blob = request.blob or self.plugin_mode
        precompute = self.prepares and prompt.empty and not blob  # nobody waits on it: it waits for the upload
        hit = self.model.prepare(image, shared=precompute)
        headers = {} if hit is None else {"X-Embedding-Cache": "hit" if hit else "miss"}
        if blob:
            embedding = self.model.browser_embedding(image)
            if embedding is None:
                raise RequestError("this function has no embedding for a browser-side decoder (blob); "
                                   "CVAT's SAM plugin needs SAM")
            return Reply(replies.blob_reply(embedding), headers)
        if precompute:
            return Reply({"shapes": [], "precomputed": True}, headers)
        region = self.model.segment(image, prompt)
        return Reply(replies.interactor_reply(region, image.size, request.full_mask), headers)


class TrackerDoor(Door):
    """Both of CVAT's tracker forms (../shared/docs/cvat-protocol.md 4.5): shapes as bare point lists (legacy) or as
    ``{"type", "points"}``. A new track echoes the shape it was sent; the form its client used is kept in the
    state the client holds (a suffix of the model's token), so that continuing requests, whose shapes are
    null, are answered in that form."""

    kind = "tracker"
    model: Tracker

    def parse(self, body: object) -> TrackerRequest:
        return parse_tracker(body, self.model.supported_shape_types)

    def answer(self, request: TrackerRequest) -> Reply:
        """The shapes and states; the header ``X-Tracker-State-Bytes`` says what the request stored on the server
        (all its objects' states, in bytes), where CVAT's own trackers would send it through the browser."""
        stored = self.model.store.stored_bytes()
        answers: dict[int, tuple[str, list, str, bool]] = {}  # shape index → (type, points, token, legacy)
        continuing: list[tuple[int, str, bool]] = []
        for i, shape in enumerate(request.shapes):
            state = request.states[i] if i < len(request.states) else None
            if state is None:  # a new track: CVAT echoes the shape it sent (as SiamMask does)
                token = self.model.start(request.image, shape.region)
                answers[i] = (shape.type, shape.points, token, request.legacy)
            else:  # continue; an old UI may resend the shape, which the state supersedes
                legacy = isinstance(state, str) and state.endswith(LEGACY)
                continuing.append((i, state[:-len(LEGACY)] if legacy else state, legacy))
        if continuing:  # all continuing tracks in one call: a model may step them together
            stepped = self.model.step_many(request.image, [token for _, token, _ in continuing],
                                           [f"states[{i}]" for i, _, _ in continuing])
            for (i, _, legacy), (region, token) in zip(continuing, stepped):
                answers[i] = (region.type, region_points(region), token, legacy)
        shapes, states = [], []
        for i in range(len(request.shapes)):
            shape_type, points, token, legacy = answers[i]
            shapes.append(points if legacy else {"type": shape_type, "points": points})
            states.append(token + LEGACY if legacy else token)
        return Reply({"shapes": shapes, "states": states},
                     {"X-Tracker-State-Bytes": str(self.model.store.stored_bytes() - stored)})


class ReidDoor(Door):
    kind = "reid"
    model: Reidentifier

    def parse(self, body: object) -> ReidRequest:
        return parse_reid(body)

    def answer(self, request: ReidRequest) -> Reply:
        return Reply(self.model.reidentify(request.image0, request.boxes0, request.image1, request.boxes1,
                                           request.threshold, request.max_distance))


DOORS: dict[str, type[Door]] = {door.kind: door for door in (DetectorDoor, InteractorDoor, TrackerDoor, ReidDoor)}


def door_for(model: Model) -> Door:
    """The CVAT door of ``model``'s kind."""
    return DOORS[model.kind](model)


def cvat_door(folder: str | Path, **arguments: Any) -> Door:
    """The CVAT door of a function folder's model, built in this process (``arguments`` go to the model)."""
    from common.models.folder import load_model

    return door_for(load_model(folder, **arguments))

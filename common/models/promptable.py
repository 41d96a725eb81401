"""What promptable segmenters (SAM, SAM 2) share: the embedding cache, prompts, and the reply.

A function subclasses :class:`PromptableSegmenter` and implements three things: ``model_id`` (which model
produced an embedding: part of the cache key), ``encode`` (image → :class:`~common.runtime.embedding_cache.Entry`)
and ``decode`` (entry + prompts → candidate masks and scores). Everything else lives here:

- the cache key is ``model_id`` plus the SHA-256 of the image bytes as sent, so a warm click neither runs
  the image encoder nor decodes the image;
- a request with an image and no points and no box only computes and caches the embedding
  (``{"shapes": [], "precomputed": true}``), so a client can warm frames ahead of the annotator;
- ``"blob": true`` in a request (or ``SAM_PLUGIN_MODE=1`` for every request) answers with the embedding
  itself, for CVAT's SAM UI plugin that decodes in the browser (functions that support it);
- one click with no box is ambiguous, so the model proposes several masks and the best-scoring one is
  returned; with more prompts the model gives one mask. Its score is the shape's confidence.

The response header ``X-Embedding-Cache`` says ``hit`` or ``miss``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from common.runtime import embedding_cache
from common.runtime.embedding_cache import Entry
from common.doors.cvat.nuclio import ModelHandler, Reply
from common.core.errors import RequestError
from common.core.image import RequestImage, pad_to_aspect
from common.doors.cvat.interactor import interactor_reply
from common.doors.cvat.request import InteractorRequest, parse_interactor

TRUE = ("1", "true", "yes", "on")


def predict_arguments(points: np.ndarray, labels: np.ndarray, box: np.ndarray | None, multimask: bool) -> dict:
    """Keyword arguments of ``SamPredictor.predict`` and ``SAM2ImagePredictor.predict`` for these prompts."""
    some = len(points) > 0
    return {"point_coords": points if some else None, "point_labels": labels if some else None,
            "box": box, "multimask_output": multimask}


class PromptableSegmenter(ModelHandler):
    kind: ClassVar[str] = "interactor"

    def __init__(self, context=None):
        super().__init__(context)
        self.cache = embedding_cache.from_env(self.warn)
        self.plugin_mode = os.environ.get("SAM_PLUGIN_MODE", "").strip().lower() in TRUE

    # ---- what a model implements

    model_id: str  # set in __init__: weights and pre-processing; embeddings are shared only between equal ids

    def encode(self, rgb: np.ndarray) -> Entry:
        """Run the image encoder on an H×W×3 RGB uint8 image."""
        raise NotImplementedError

    def decode(self, entry: Entry, points: np.ndarray, labels: np.ndarray, box: np.ndarray | None,
               multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """Masks (K×H×W bool, image size) and scores (K) for points (N×2, image pixels, labels 1 = object,
        0 = background) and an optional box (xtl, ytl, xbr, ybr)."""
        raise NotImplementedError

    def blob(self, entry: Entry) -> str:
        """The embedding as base64 for a browser-side decoder."""
        raise RequestError("this function has no embedding for a browser-side decoder (blob); CVAT's SAM plugin needs SAM")

    # ---- shared behaviour

    def parse(self, body: Any) -> InteractorRequest:
        if isinstance(body, dict) and "pos_points" not in body:
            body = {**body, "pos_points": []}  # a precompute or blob request needs no points
        return parse_interactor(body)

    def embedding(self, image: RequestImage) -> tuple[Entry, bool]:
        """The image's embedding and whether it came from the cache."""
        key = f"{self.model_id}:{image.digest}"
        entry = self.cache.get(key)
        if entry is not None:
            return entry, True
        rgb = image.rgb if self.max_aspect is None else pad_to_aspect(image.rgb, self.max_aspect)
        entry = self.encode(rgb)
        self.cache.put(key, entry)
        return entry, False

    def __call__(self, request: InteractorRequest) -> Reply:
        want_blob = request.body.get("blob", False)
        if not isinstance(want_blob, bool):
            raise RequestError("blob must be true or false")
        entry, hit = self.embedding(request.image)
        headers = {"X-Embedding-Cache": "hit" if hit else "miss"}
        if want_blob or self.plugin_mode:
            return Reply({"blob": self.blob(entry)}, headers)
        points = np.concatenate([request.pos_points, request.neg_points]).astype(np.float32).reshape(-1, 2)
        labels = np.concatenate([np.ones(len(request.pos_points)), np.zeros(len(request.neg_points))]).astype(np.int32)
        box = None if request.obj_bbox is None else np.asarray(request.obj_bbox, dtype=np.float32)
        if len(points) == 0 and box is None:
            return Reply({"shapes": [], "precomputed": True}, headers)
        masks, scores = self.decode(entry, points, labels, box, multimask=len(points) == 1 and box is None)
        best = int(np.argmax(scores))
        width, height = request.image.size
        mask = masks[best][:height, :width]  # without the padding of an image beyond max_aspect
        return Reply(interactor_reply(mask, request.body, float(scores[best])), headers)

"""What promptable segmenters (SAM, SAM 2) share: the embedding cache and turning prompts into one mask.

A function subclasses :class:`PromptableSegmenter` and implements three things: ``model_id`` (which model
produced an embedding: part of the cache key), ``encode`` (image → :class:`~common.runtime.embedding_cache.Entry`)
and ``decode`` (entry + prompts → candidate masks' logits on the model's device, and scores); a model whose embedding a browser-side decoder
can use (SAM, for CVAT's SAM plugin) also implements ``embedding_array``. Everything else lives here:

- the cache key is ``model_id`` plus the image's digest (the SHA-256 of its bytes as sent), so a warm click
  neither runs the image encoder nor decodes the image; :meth:`PromptableSegmenter.prepare` fills the cache
  ahead of clicks;
- one click with no box is ambiguous, so the model proposes several masks and the best-scoring one is
  returned; with more prompts the model gives one mask. Its score is the region's. The mask is cut to its
  box on the device: only the box's pixels come back to the CPU.
"""

from __future__ import annotations


import numpy as np
import torch

from common.core.image import Image, pad_to_aspect
from common.core.results import Region
from common.core.prompts import Prompt
from common.models.base import Interactor
from common.models.torch_frames import masks_of
from common.runtime import embedding_cache
from common.runtime.embedding_cache import Entry


class PromptableSegmenter(Interactor):
    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.cache = embedding_cache.from_env(self.warn)
        self._last: tuple[Image, Entry] | None = None  # one request's image and its entry (prepare, then segment)
        self._on_device: tuple[Entry, dict[str, torch.Tensor]] | None = None  # the last entry's tensors

    # ---- what a model implements

    model_id: str  # set in __init__: weights and pre-processing; embeddings are shared only between equal ids

    def encode(self, rgb: np.ndarray) -> Entry:
        """Run the image encoder on an H×W×3 RGB uint8 image."""
        raise NotImplementedError

    def decode(self, entry: Entry, points: np.ndarray, labels: np.ndarray, box: np.ndarray | None,
               multimask: bool) -> tuple[torch.Tensor, np.ndarray]:
        """Mask logits (K×H×W at the image's size, on the model's device; the mask is where they are > 0) and
        scores (K) for points (N×2, image pixels, labels 1 = object, 0 = background) and an optional box
        (xtl, ytl, xbr, ybr)."""
        raise NotImplementedError

    def embedding_array(self, entry: Entry) -> np.ndarray | None:
        """The embedding a browser-side decoder reads, from a cache entry; None when the model has none."""
        return None

    # ---- shared behaviour

    def tensors(self, entry: Entry, device: torch.device) -> dict[str, torch.Tensor]:
        """The entry's arrays as tensors on ``device``; the last entry's are kept, so that further clicks on
        the same image do not copy its embedding to the device again."""
        if self._on_device is None or self._on_device[0] is not entry:
            self._on_device = (entry, {name: torch.from_numpy(array).to(device)
                                       for name, array in entry.arrays.items()})
        return self._on_device[1]

    def embedding(self, image: Image) -> tuple[Entry, bool]:
        """The image's embedding and whether it came from the cache."""
        if self._last is not None and self._last[0] is image:
            return self._last[1], True
        key = f"{self.model_id}:{image.digest}"
        entry = self.cache.get(key)
        hit = entry is not None
        if not hit:
            rgb = image.rgb if self.max_aspect is None else pad_to_aspect(image.rgb, self.max_aspect)
            entry = self.encode(rgb)
            self.cache.put(key, entry)
        self._last = (image, entry)
        return entry, hit

    def prepare(self, image: Image, shared: bool = False) -> bool:
        hit = self.embedding(image)[1]
        if shared and not hit:
            self.cache.flush()
        return hit

    def browser_embedding(self, image: Image) -> np.ndarray | None:
        return self.embedding_array(self.embedding(image)[0])

    def segment(self, image: Image, prompt: Prompt) -> Region | None:
        entry, _ = self.embedding(image)
        points = np.concatenate([prompt.positive, prompt.negative]).astype(np.float32).reshape(-1, 2)
        labels = np.concatenate([np.ones(len(prompt.positive)), np.zeros(len(prompt.negative))]).astype(np.int32)
        box = None if prompt.box is None else np.asarray(prompt.box, dtype=np.float32)
        logits, scores = self.decode(entry, points, labels, box, multimask=len(points) == 1 and box is None)
        best = int(np.argmax(scores))
        width, height = image.size
        mask = masks_of(logits[best:best + 1, :height, :width])[0]  # without the padding beyond max_aspect
        return None if mask is None else Region.from_mask(mask, "mask", score=float(scores[best]))

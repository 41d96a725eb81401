"""torchvision's COCO detectors (Faster R-CNN, RetinaNet, Mask R-CNN, Keypoint R-CNN) behind one handler.

A function subclasses :class:`TorchvisionDetector`, names the torchvision builder and its official weights,
and overrides :meth:`TorchvisionDetector.detections` when a detection is more than a box. The model is built with
``weights=None`` (no download inside torchvision) and then loads the checkpoint found by
:func:`common.runtime.weights.resolve`, with ``torch.load(weights_only=True)``.

Environment:

- ``MIN_SCORE``: the model's own score floor (default 0.05, torchvision's); a request threshold below it
  acts as this value.
- ``DETECTIONS_PER_IMAGE``: at most this many detections (default 100).
- ``MIN_SIZE`` / ``MAX_SIZE``: the model's internal resize (defaults 800 / 1333, torchvision's); smaller is
  faster on a CPU and less accurate for small objects.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from common.core.image import Image, pad_to_aspect
from common.core.results import Detections
from common.core.settings import Settings, setting
from common.models.base import Detector
from common.runtime import weights
from common.runtime.backends import load_torch_checkpoint, torch_device

Output = dict[str, np.ndarray]  # one image's detections: boxes (N, 4), labels (N,), scores (N,), ...


def official_weights(entry: Any) -> weights.Weights:
    """A torchvision weights enum member as :class:`~common.runtime.weights.Weights`.

    torchvision's file names end with the first hex digits of the file's SHA-256, which the download checks.
    """
    filename = posixpath.basename(entry.url)
    digest = filename.rsplit(".", 1)[0].rsplit("-", 1)[-1]
    return weights.Weights(filename, url=entry.url, sha256=digest)


@dataclass(frozen=True)
class TorchvisionSettings(Settings):
    min_score: float = setting("MIN_SCORE", 0.05)
    detections_per_image: int = setting("DETECTIONS_PER_IMAGE", 100)
    min_size: int = setting("MIN_SIZE", 800)
    max_size: int = setting("MAX_SIZE", 1333)


class TorchvisionDetector(Detector):
    """A torchvision detection model: image in, its detections above the request's threshold, best first."""

    settings: TorchvisionSettings
    builder: ClassVar[Callable[..., torch.nn.Module]]
    checkpoint: ClassVar[weights.Weights]
    num_classes: ClassVar[int] = 91
    score_argument: ClassVar[str] = "box_score_thresh"  # RetinaNet calls it score_thresh
    detections_argument: ClassVar[str] = "box_detections_per_img"  # RetinaNet: detections_per_img
    work_bytes_per_pixel: ClassVar[float] = 38  # measured: the image as float tensors (and normalised)
    # the model scales by min(MIN_SIZE / short side, MAX_SIZE / long side): keep the short side some rows
    max_aspect: ClassVar[float | None] = 32.0

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.device = torch_device()
        self.model = self.load(weights.resolve(self.checkpoint))

    def model_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``builder`` besides the weights (override to add model-specific ones)."""
        return {
            "num_classes": self.num_classes,
            self.score_argument: self.settings.min_score,
            self.detections_argument: self.settings.detections_per_image,
            "min_size": self.settings.min_size,
            "max_size": self.settings.max_size,
        }

    def load(self, path) -> torch.nn.Module:
        model = type(self).builder(weights=None, weights_backbone=None, **self.model_arguments())
        load_torch_checkpoint(model, path, f"{self.checkpoint.filename}-compatible")
        return model.eval().to(self.device)

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, threshold: float = 0.0) -> Output:
        """The model's detections scoring ≥ ``threshold`` for one H×W×3 uint8 RGB image, as NumPy arrays in
        image pixels (filtered on the device: Mask R-CNN's full-image masks are large)."""
        padded = pad_to_aspect(rgb, self.max_aspect)  # detections lie in the image: the padding is below or right
        tensor = torch.from_numpy(np.ascontiguousarray(padded)).to(self.device).permute(2, 0, 1).float().div_(255)
        output = self.model([tensor])[0]
        keep = output["scores"] >= threshold
        return {key: value[keep].cpu().numpy() for key, value in output.items()}

    def detections(self, output: Output, width: int, height: int) -> Detections:
        """The model's output as :class:`Detections` (boxes clipped to the image), best first; override to add
        what a detection holds beyond its box."""
        return Detections(output["boxes"], output["scores"], output["labels"]).best_first().clip(width, height)

    def detect(self, image: Image, threshold: float) -> Detections:
        width, height = image.size
        return self.detections(self.predict(image.rgb, threshold), width, height)

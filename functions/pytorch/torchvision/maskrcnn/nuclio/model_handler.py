"""Mask R-CNN ResNet-50 FPN v2 (torchvision, COCO): one mask per instance, with its polygon.

``MASK_THRESHOLD`` (default 0.5) turns the model's per-pixel probabilities into the instance mask.

torchvision pastes every detection's 28×28 mask into a float image of the full size (4 bytes per pixel per
detection, up to ``DETECTIONS_PER_IMAGE``); here the small masks are kept and each detection that is
returned is pasted alone, with the same torchvision function, and kept as the pixels of its box, so memory
grows with one full-size mask at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models import detection
from torchvision.models.detection.roi_heads import paste_masks_in_image

from common.core.results import Detections, Mask
from common.core.settings import setting
from common.models.torchvision import Output, TorchvisionDetector, TorchvisionSettings, official_weights


@dataclass(frozen=True)
class MaskSettings(TorchvisionSettings):
    mask_threshold: float = setting("MASK_THRESHOLD", 0.5)


class ModelHandler(TorchvisionDetector):
    settings: MaskSettings
    builder = staticmethod(detection.maskrcnn_resnet50_fpn_v2)
    checkpoint = official_weights(detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    work_bytes_per_pixel = TorchvisionDetector.work_bytes_per_pixel + 6  # one pasted mask and its polygon

    def load(self, path) -> torch.nn.Module:
        model = super().load(path)
        postprocess = model.transform.postprocess

        def without_pasting(result, image_shapes, original_sizes):
            small = [prediction.pop("masks") for prediction in result]
            result = postprocess(result, image_shapes, original_sizes)  # boxes into image pixels
            for prediction, masks in zip(result, small):
                prediction["mask_probs"] = masks  # (N, 1, 28, 28), each over its box
            return result

        model.transform.postprocess = without_pasting
        return model

    def mask(self, output: Output, index: int, width: int, height: int) -> Mask | None:
        """Detection ``index``'s mask pasted into the image and thresholded; None if no pixel is left."""
        one = slice(index, index + 1)
        probabilities = paste_masks_in_image(torch.from_numpy(output["mask_probs"][one]),
                                             torch.from_numpy(output["boxes"][one]), (height, width))
        return Mask.from_full(probabilities[0, 0].numpy() >= self.settings.mask_threshold)

    def detections(self, output: Output, width: int, height: int) -> Detections:
        """Detections of the spec's labels with their masks, best first; those whose mask is empty are dropped."""
        order = [int(i) for i in np.argsort(-output["scores"], kind="stable")
                 if self.labels.label_of(int(output["labels"][i])) is not None]
        masks = {i: self.mask(output, i, width, height) for i in order}
        kept = np.array([i for i in order if masks[i] is not None], dtype=np.int64)
        found = Detections(output["boxes"][kept], output["scores"][kept], output["labels"][kept],
                           masks=[masks[i] for i in kept])
        return found.clip(width, height)

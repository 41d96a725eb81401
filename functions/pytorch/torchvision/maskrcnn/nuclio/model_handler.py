"""Mask R-CNN ResNet-50 FPN v2 (torchvision, COCO): one mask per instance, with its polygon.

``MASK_THRESHOLD`` (default 0.5) turns the model's per-pixel probabilities into the instance mask.

torchvision pastes every detection's 28×28 mask into a float image of the full size (4 bytes per pixel per
detection, up to ``DETECTIONS_PER_IMAGE``); here the small masks are kept and each detection that is
returned is pasted alone, with the same torchvision function, so memory grows with one mask at a time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import detection
from torchvision.models.detection.roi_heads import paste_masks_in_image

from common.doors.cvat import shapes
from common.core.settings import env_float
from common.models.torchvision import Output, TorchvisionDetector, official_weights


class ModelHandler(TorchvisionDetector):
    function_dir = Path(__file__).resolve().parent
    builder = staticmethod(detection.maskrcnn_resnet50_fpn_v2)
    checkpoint = official_weights(detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    mask_threshold = env_float("MASK_THRESHOLD", 0.5)
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

    def shape(self, label: str, output: Output, index: int, width: int, height: int) -> dict | None:
        """A ``mask`` shape (CVAT's detector layout) whose ``points`` hold the mask's polygon; None if empty."""
        one = slice(index, index + 1)
        probabilities = paste_masks_in_image(torch.from_numpy(output["mask_probs"][one]),
                                             torch.from_numpy(output["boxes"][one]), (height, width))
        mask = probabilities[0, 0].numpy() >= self.mask_threshold
        return shapes.mask(label, mask, float(output["scores"][index]))

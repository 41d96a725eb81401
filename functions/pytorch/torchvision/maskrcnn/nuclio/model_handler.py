"""Mask R-CNN ResNet-50 FPN v2 (torchvision, COCO): one mask per instance, with its polygon.

``MASK_THRESHOLD`` (default 0.5) turns the model's per-pixel probabilities into the instance mask.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.models import detection

from common import shapes
from common.torchvision_detection import Output, TorchvisionDetector, official_weights


class ModelHandler(TorchvisionDetector):
    function_dir = Path(__file__).resolve().parent
    builder = staticmethod(detection.maskrcnn_resnet50_fpn_v2)
    checkpoint = official_weights(detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    mask_threshold = float(os.environ.get("MASK_THRESHOLD", "0.5"))

    def shape(self, label: str, output: Output, index: int, width: int, height: int) -> dict | None:
        """A ``mask`` shape (CVAT's detector layout) whose ``points`` hold the mask's polygon; None if empty."""
        mask = output["masks"][index, 0] >= self.mask_threshold
        return shapes.mask(label, mask, float(output["scores"][index]))

"""Keypoint R-CNN ResNet-50 FPN (torchvision, COCO): one ``person`` skeleton of 17 keypoints per person.

A keypoint whose score (the heatmap logit) is below ``KEYPOINT_THRESHOLD`` (default 2.0), or that lies
outside the image, is returned with ``outside: true``: CVAT keeps its position but hides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torchvision.models import detection

from common.core.results import Detections
from common.core.settings import setting
from common.models.torchvision import Output, TorchvisionDetector, TorchvisionSettings, official_weights


@dataclass(frozen=True)
class KeypointSettings(TorchvisionSettings):
    keypoint_threshold: float = setting("KEYPOINT_THRESHOLD", 2.0)


class ModelHandler(TorchvisionDetector):
    settings: KeypointSettings
    builder = staticmethod(detection.keypointrcnn_resnet50_fpn)
    checkpoint = official_weights(detection.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)
    num_classes = 2  # background, person

    def model_arguments(self) -> dict:
        return {**super().model_arguments(), "num_keypoints": 17}

    def detections(self, output: Output, width: int, height: int) -> Detections:
        """Each person's keypoints, visible where the model sees them and scores them high enough."""
        keypoints = output["keypoints"].astype(np.float64)
        keypoints[..., 2] = (keypoints[..., 2] > 0) & (output["keypoints_scores"] >= self.settings.keypoint_threshold)
        found = Detections(output["boxes"], output["scores"], output["labels"], keypoints=keypoints)
        return found.best_first().clip(width, height)

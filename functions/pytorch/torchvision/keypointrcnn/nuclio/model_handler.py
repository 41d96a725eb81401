"""Keypoint R-CNN ResNet-50 FPN (torchvision, COCO): one ``person`` skeleton of 17 keypoints per person.

A keypoint whose score (the heatmap logit) is below ``KEYPOINT_THRESHOLD`` (default 2.0), or that lies
outside the image, is returned with ``outside: true``: CVAT keeps its position but hides it.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.models import detection

from common.doors.cvat import shapes
from common.core.settings import env_float
from common.models.torchvision import Output, TorchvisionDetector, official_weights


class ModelHandler(TorchvisionDetector):
    function_dir = Path(__file__).resolve().parent
    builder = staticmethod(detection.keypointrcnn_resnet50_fpn)
    checkpoint = official_weights(detection.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)
    num_classes = 2  # background, person
    keypoint_threshold = env_float("KEYPOINT_THRESHOLD", 2.0)

    def model_arguments(self) -> dict:
        return {**super().model_arguments(), "num_keypoints": 17}

    def shape(self, label: str, output: Output, index: int, width: int, height: int) -> dict | None:
        sublabels = self.labels.by_name[label].sublabels
        elements = [
            shapes.image_keypoint(sublabel.name, (x, y), width, height,
                                  visible=bool(visible > 0 and score >= self.keypoint_threshold))
            for sublabel, (x, y, visible), score in zip(sublabels, output["keypoints"][index],
                                                        output["keypoints_scores"][index])
        ]
        return shapes.skeleton(label, elements, float(output["scores"][index]))

"""RetinaNet ResNet-50 FPN v2 (torchvision, COCO): one rectangle per detection."""

from __future__ import annotations

from torchvision.models import detection

from common.models.torchvision import TorchvisionDetector, official_weights


class ModelHandler(TorchvisionDetector):
    builder = staticmethod(detection.retinanet_resnet50_fpn_v2)
    checkpoint = official_weights(detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1)
    score_argument = "score_thresh"
    detections_argument = "detections_per_img"

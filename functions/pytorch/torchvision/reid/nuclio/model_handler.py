"""Appearance embeddings for re-identification: torchvision's ResNet-50 (ImageNet) pooled features.

Each box is cropped, resized to ``REID_CROP`` (default 128x256, width x height: the person shape), normalised
with ImageNet's statistics, and embedded as the network's 2048 pooled features. These are generic image
features, not trained for person re-identification; with CVAT's ``max_distance`` they associate boxes
between consecutive frames well. Matching is in :mod:`common.models.reid`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.models import ResNet50_Weights, resnet50

from common.core.settings import Settings, setting
from common.core.prompts import ReidBox
from common.models.reid import Reidentifier
from common.models.torchvision import official_weights
from common.runtime import weights
from common.runtime.backends import load_torch_checkpoint, torch_device

CHECKPOINT = official_weights(ResNet50_Weights.IMAGENET1K_V2)
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass(frozen=True)
class ReidSettings(Settings):
    crop: str = setting("REID_CROP", "128x256")  # width x height


def crop_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"REID_CROP={value!r} is not WIDTHxHEIGHT") from None
    return width, height


class ModelHandler(Reidentifier):
    settings: ReidSettings

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.device = torch_device()
        model = load_torch_checkpoint(resnet50(weights=None), weights.resolve(CHECKPOINT), "ResNet-50")
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(self.device)
        self.crop_size = crop_size(self.settings.crop)

    def crops(self, rgb: np.ndarray, boxes: list[ReidBox]) -> np.ndarray:
        """(N, 3, H, W) normalised float32 crops of the boxes (at least one pixel each)."""
        out = []
        height, width = rgb.shape[:2]
        for box in boxes:
            x1, y1 = min(int(box.box[0]), width - 1), min(int(box.box[1]), height - 1)
            x2, y2 = max(int(np.ceil(box.box[2])), x1 + 1), max(int(np.ceil(box.box[3])), y1 + 1)
            crop = cv2.resize(rgb[y1:y2, x1:x2], self.crop_size, interpolation=cv2.INTER_LINEAR)
            out.append(((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1))
        return np.stack(out)

    @torch.inference_mode()
    def embed(self, rgb: np.ndarray, boxes: list[ReidBox]) -> np.ndarray:
        batch = torch.from_numpy(self.crops(rgb, boxes)).to(self.device)
        return self.model(batch).float().cpu().numpy()

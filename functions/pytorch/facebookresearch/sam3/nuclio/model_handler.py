"""SAM 3 (Meta, ``Sam3Model`` in Hugging Face ``transformers``): every instance of each spec label, found by its
phrases, as a mask with SAM 3's score.

The image is encoded once per request (``get_vision_features``); each phrase then runs SAM 3's text encoder,
DETR encoder and decoder and mask decoder on those vision features, and the package's own
``post_process_instance_segmentation`` gives its instances at the image's size. Instances of one label found
by several of its phrases are merged (the best of those overlapping by more than ``MERGE_IOU`` in their boxes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import Sam3Model, Sam3Processor

from common.core.image import Image
from common.core.labels import Label
from common.core.results import Detections, Mask
from common.core.settings import Settings, setting
from common.models.text_prompts import TextPromptedDetector, phrase_table
from common.runtime.backends import torch_device


@dataclass(frozen=True)
class Sam3Settings(Settings):
    mask_threshold: float = setting("MASK_THRESHOLD", 0.5)
    merge_iou: float = setting("MERGE_IOU", 0.7)


class ModelHandler(TextPromptedDetector):
    settings: Sam3Settings
    hub_name = "facebook/sam3"
    licence_page = "https://huggingface.co/facebook/sam3"
    default_threshold = 0.5
    work_bytes_per_pixel = 40  # per instance mask at the image's size (float logits, then bool), a few at once

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.device = torch_device()
        self.processor = self.from_pretrained(Sam3Processor.from_pretrained)
        self.model = self.from_pretrained(Sam3Model.from_pretrained).eval().to(self.device)

    @torch.inference_mode()
    def detect_prompts(self, image: Image, threshold: float, labels: Sequence[Label]) -> Detections:
        image.require_memory(self.work_bytes_per_pixel)
        width, height = image.size
        phrases, owners = phrase_table(labels)
        pixels = self.processor(images=image.rgb, return_tensors="pt")["pixel_values"].to(self.device)
        vision = self.model.get_vision_features(pixel_values=pixels)  # once per request
        texts = self.processor(text=phrases, return_tensors="pt").to(self.device)
        rows: list[Detections] = []
        for n, owner in enumerate(owners):
            outputs = self.model(vision_embeds=vision, input_ids=texts["input_ids"][n:n + 1],
                                 attention_mask=texts["attention_mask"][n:n + 1])
            (found,) = self.processor.post_process_instance_segmentation(
                outputs, threshold=threshold, mask_threshold=self.settings.mask_threshold,
                target_sizes=[(height, width)])
            rows.append(self.instances(found, self.class_id(owner)))
        found = Detections.concatenate(rows) if rows else Detections.empty()
        if len(found) and any(len(label.phrases) > 1 for label in labels):
            found = found.nms(self.settings.merge_iou)  # class-aware: one label's phrases, never two labels
        return found.best_first()

    @staticmethod
    def instances(found: dict, class_id: int) -> Detections:
        masks = [Mask.from_full(m) for m in found["masks"].cpu().numpy().astype(bool)]
        keep = [i for i, m in enumerate(masks) if m is not None]  # a mask with no pixel has nothing to show
        if not keep:
            return Detections.empty()
        return Detections(found["boxes"].float().cpu().numpy()[keep].astype(np.float64),
                          found["scores"].float().cpu().numpy()[keep].astype(np.float64),
                          [class_id] * len(keep), masks=[masks[i] for i in keep])

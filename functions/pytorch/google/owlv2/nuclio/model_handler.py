"""OWLv2 (Google, ``Owlv2ForObjectDetection`` in Hugging Face ``transformers``): open-vocabulary boxes for the
spec's labels, each looked for under its phrases.

One forward pass per request encodes the image once with every phrase as a query; the package's own
processor pads the image to a square (below and right) before resizing it, so its post-processing scales
boxes to the padded square, and they are then clipped to the image (a box wholly in the padding is dropped). Every box goes to the phrase it scores
best on (the package's post-processing), so a label's phrases never give the same box twice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import Owlv2ForObjectDetection, Owlv2Processor

from common.core.image import Image
from common.core.labels import Label
from common.core.results import Detections
from common.models.text_prompts import TextPromptedDetector, phrase_table
from common.runtime.backends import torch_device


class ModelHandler(TextPromptedDetector):
    hub_name = "google/owlv2-base-patch16-ensemble"
    default_threshold = 0.2
    work_bytes_per_pixel = 16  # the float32 image, padded to a square, before it is resized

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.device = torch_device()
        self.processor = self.from_pretrained(Owlv2Processor.from_pretrained)
        self.model = self.from_pretrained(Owlv2ForObjectDetection.from_pretrained).eval().to(self.device)

    @torch.inference_mode()
    def detect_prompts(self, image: Image, threshold: float, labels: Sequence[Label]) -> Detections:
        image.require_memory(self.work_bytes_per_pixel, max_aspect=1.0)
        phrases, owners = phrase_table(labels)
        inputs = self.processor(text=[phrases], images=image.rgb, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        side = max(image.size)
        (found,) = self.processor.post_process_grounded_object_detection(outputs, threshold=threshold,
                                                                          target_sizes=[(side, side)])
        if len(found["scores"]) == 0:
            return Detections.empty()
        class_ids = [self.class_id(owners[int(i)]) for i in found["labels"]]
        detections = Detections(found["boxes"].float().cpu().numpy().astype(np.float64),
                                found["scores"].float().cpu().numpy().astype(np.float64), class_ids)
        clipped = detections.clip(*image.size)
        inside = (clipped.xyxy[:, 2] > clipped.xyxy[:, 0]) & (clipped.xyxy[:, 3] > clipped.xyxy[:, 1])
        return clipped[inside].best_first()  # a box wholly in the padding has nothing left to show

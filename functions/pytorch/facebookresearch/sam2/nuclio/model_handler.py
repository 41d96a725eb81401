"""SAM 2.1 (image mode) through the ``sam2`` package, with the shared embedding cache.

Model size, checkpoint and config overrides come from the environment (see :mod:`common.models.sam2_models`).
With ``PREPROCESS=device`` (the default) the image goes to the model's device as uint8 and the predictor's
own resize and normalisation run there; ``TORCH_AUTOCAST=bfloat16`` runs encoder and decoder under autocast.
"""

from __future__ import annotations

import numpy as np
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from common.models import sam2_models, torch_frames
from common.models.promptable import PromptableSegmenter
from common.runtime.backends import torch_device
from common.runtime.embedding_cache import Entry

HIGH_RES = ("high_res_0", "high_res_1")


class ModelHandler(PromptableSegmenter):
    settings: sam2_models.Sam2Settings
    work_bytes_per_pixel = 38  # measured: the predicted masks' logits and masks at the image's size

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.device = torch_device()
        model, model_id = sam2_models.load(build_sam2, self.device, self.settings)
        self.model_id = f"{model_id}:{self.settings.preprocess}:{self.settings.autocast}"
        self.predictor = SAM2ImagePredictor(model)
        if self.settings.on_device:  # the predictor's Resize and Normalize then run where the pixels are
            self.predictor._transforms.to_tensor = self.device_tensor

    def device_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """What torchvision's ToTensor makes of an H×W×3 uint8 image (3×H×W float in 0..1), on the device."""
        return torch_frames.pixels(rgb, self.device)[0].float().div(255)

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> Entry:
        with self.settings.autocasting(self.device):
            self.predictor.set_image(rgb)
        features = self.predictor._features
        arrays = {"image_embed": features["image_embed"].float().cpu().numpy()}
        for name, level in zip(HIGH_RES, features["high_res_feats"]):
            arrays[name] = level.float().cpu().numpy()
        meta = {"orig_hw": list(self.predictor._orig_hw[0])}
        self.predictor.reset_predictor()
        return Entry(arrays, meta)

    @torch.inference_mode()
    def decode(self, entry, points, labels, box, multimask):
        predictor = self.predictor
        tensors = self.tensors(entry, self.device)
        predictor._features = {"image_embed": tensors["image_embed"],
                               "high_res_feats": [tensors[name] for name in HIGH_RES]}
        predictor._orig_hw = [tuple(entry.meta["orig_hw"])]
        predictor._is_image_set, predictor._is_batch = True, False
        some = len(points) > 0
        try:  # SAM2ImagePredictor.predict's two halves, without taking every mask to the CPU
            with self.settings.autocasting(self.device):
                _, coords, labels_t, box_t = predictor._prep_prompts(points if some else None,
                                                                     labels if some else None, box, None, True)
                logits, scores, _ = predictor._predict(coords, labels_t, box_t, None, multimask, return_logits=True)
        finally:
            predictor.reset_predictor()
        return logits[0], scores[0].float().cpu().numpy()

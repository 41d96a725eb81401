"""SAM 2.1 (image mode) through the ``sam2`` package, with the shared embedding cache.

``MODEL_SIZE`` (tiny, small, base_plus, large) picks the SAM 2.1 config and official checkpoint;
``MODEL_PATH`` may point to a checkpoint of that config instead. ``SAM2_OVERRIDES`` (space-separated Hydra
overrides, e.g. ``++model.image_size=512``) adjusts the config, an operator's setting, never a client's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from common import weights
from common.backends import torch_device
from common.embedding_cache import Entry
from common.promptable import PromptableSegmenter, predict_arguments

URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
SIZES = {  # MODEL_SIZE: (config inside the sam2 package, checkpoint file)
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}
HIGH_RES = ("high_res_0", "high_res_1")


def load_sam2(size: str, overrides: list[str], device: torch.device):
    """The SAM 2.1 model of ``size`` (weights from MODEL_PATH, MODELS_DIR or the official download)."""
    if size not in SIZES:
        raise ValueError(f"MODEL_SIZE={size!r}: expected one of {', '.join(SIZES)}")
    config, filename = SIZES[size]
    path = weights.resolve(weights.Weights(filename, URL + filename))
    model = build_sam2(config, str(path), device=str(device), mode="eval", hydra_overrides_extra=overrides)
    return model, path


class ModelHandler(PromptableSegmenter):
    function_dir = Path(__file__).resolve().parent

    def __init__(self, context=None):
        super().__init__(context)
        size = os.environ.get("MODEL_SIZE", "tiny")
        overrides = os.environ.get("SAM2_OVERRIDES", "").split()
        self.device = torch_device()
        model, path = load_sam2(size, overrides, self.device)
        self.predictor = SAM2ImagePredictor(model)
        tweak = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:12] if overrides else "-"
        self.model_id = f"sam2.1:{size}:{tweak}:{path.name}:{path.stat().st_size}"

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> Entry:
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
        predictor._features = {
            "image_embed": torch.from_numpy(entry.arrays["image_embed"]).to(self.device),
            "high_res_feats": [torch.from_numpy(entry.arrays[name]).to(self.device) for name in HIGH_RES],
        }
        predictor._orig_hw = [tuple(entry.meta["orig_hw"])]
        predictor._is_image_set, predictor._is_batch = True, False
        try:
            masks, scores, _ = predictor.predict(**predict_arguments(points, labels, box, multimask))
        finally:
            predictor.reset_predictor()
        return masks > 0, scores

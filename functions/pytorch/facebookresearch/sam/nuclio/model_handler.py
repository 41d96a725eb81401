"""Segment Anything (SAM) through the ``segment-anything`` package, with the shared embedding cache.

``MODEL_TYPE`` (vit_b, vit_l, vit_h) names the official checkpoint to use; ``MODEL_PATH`` may point to any
SAM checkpoint instead, and the image encoder's size is read from the checkpoint itself, so a vit_h file
works whatever MODEL_TYPE says. The model is then built by the package's own builder.

With ``PREPROCESS=device`` (the default) the image is resized on the model's device, in place of the
package's Pillow resize (see :mod:`common.models.torch_frames`); the encoder then runs as the package runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.build_sam import _build_sam

from common.core.settings import setting
from common.models import torch_frames
from common.models.promptable import PromptableSegmenter
from common.runtime import weights
from common.runtime.backends import torch_device
from common.runtime.embedding_cache import Entry

URL = "https://dl.fbaipublicfiles.com/segment_anything/"
CHECKPOINTS = {  # the official files and their SHA-256 (a download is checked before it is used)
    "vit_b": weights.Weights("sam_vit_b_01ec64.pth", URL + "sam_vit_b_01ec64.pth",
                             "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": weights.Weights("sam_vit_l_0b3195.pth", URL + "sam_vit_l_0b3195.pth",
                             "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": weights.Weights("sam_vit_h_4b8939.pth", URL + "sam_vit_h_4b8939.pth",
                             "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}
# encoder (embed dim, depth, heads, global attention blocks) of the official models
ARCHITECTURES = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def encoder_architecture(state_dict: dict) -> tuple[int, int, int, tuple[int, ...]]:
    """The ViT image encoder's (embed dim, depth, heads, global attention blocks) from its weights.

    Windowed blocks have relative position tables for 14×14 windows (27 rows); global blocks for the whole
    64×64 grid.
    """
    prefix = "image_encoder.blocks."
    blocks = sorted({int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    if not blocks or "image_encoder.patch_embed.proj.weight" not in state_dict:
        raise ValueError("not a Segment Anything checkpoint (no image_encoder ViT weights)")
    embed_dim = int(state_dict["image_encoder.patch_embed.proj.weight"].shape[0])
    head_dim = int(state_dict[f"{prefix}0.attn.rel_pos_h"].shape[1])
    windowed_rows = 2 * 14 - 1
    global_blocks = tuple(i for i in blocks if state_dict[f"{prefix}{i}.attn.rel_pos_h"].shape[0] != windowed_rows)
    return embed_dim, len(blocks), embed_dim // head_dim, global_blocks


@dataclass(frozen=True)
class SamSettings(torch_frames.TorchSettings):
    model_type: str = setting("MODEL_TYPE", "vit_b")


class ModelHandler(PromptableSegmenter):
    settings: SamSettings
    work_bytes_per_pixel = 45  # measured: the predicted masks' logits and masks at the image's size
    max_aspect = 512.0  # SAM scales the long side to 1024 pixels; the short side keeps at least two

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        model_type = self.settings.model_type
        if model_type not in CHECKPOINTS:
            raise ValueError(f"MODEL_TYPE={model_type!r}: expected one of {', '.join(CHECKPOINTS)}")
        path = weights.resolve(CHECKPOINTS[model_type])
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        architecture = encoder_architecture(state_dict)
        found = next((name for name, arch in ARCHITECTURES.items() if arch == architecture), None)
        if found != model_type:
            self.warn(f"MODEL_TYPE={model_type} but {path.name} holds a {found or architecture} encoder; using that")
        embed_dim, depth, heads, global_blocks = architecture
        sam = _build_sam(embed_dim, depth, heads, list(global_blocks), checkpoint=None)
        sam.load_state_dict(state_dict)
        self.device = torch_device()
        self.predictor = SamPredictor(sam.to(self.device).eval())
        self.model_id = (f"sam:{found or 'vit-%d-%d-%d' % architecture[:3]}:{path.name}:{path.stat().st_size}:"
                         f"{self.settings.preprocess}")

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> Entry:
        if self.settings.on_device:  # what set_image does, with the resize on the device
            height, width = rgb.shape[:2]
            size = self.predictor.transform.get_preprocess_shape(height, width, self.predictor.transform.target_length)
            frame = torch_frames.resized(torch_frames.pixels(rgb, self.device), size, "bilinear")
            self.predictor.set_torch_image(frame, (height, width))
        else:
            self.predictor.set_image(rgb, image_format="RGB")
        features = self.predictor.features.float().cpu().numpy()
        meta = {"original_size": list(self.predictor.original_size), "input_size": list(self.predictor.input_size)}
        self.predictor.reset_image()
        return Entry({"features": features}, meta)

    @torch.inference_mode()
    def decode(self, entry, points, labels, box, multimask):
        predictor = self.predictor
        predictor.features = self.tensors(entry, self.device)["features"]
        predictor.original_size = tuple(entry.meta["original_size"])
        predictor.input_size = tuple(entry.meta["input_size"])
        predictor.is_image_set = True
        size = predictor.original_size
        coords = labels_t = box_t = None
        if len(points):  # as SamPredictor.predict, without taking every mask to the CPU
            coords = torch.as_tensor(predictor.transform.apply_coords(points, size), dtype=torch.float,
                                     device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box_t = torch.as_tensor(predictor.transform.apply_boxes(box, size), dtype=torch.float,
                                    device=self.device)[None]
        try:
            logits, scores, _ = predictor.predict_torch(coords, labels_t, box_t, multimask_output=multimask,
                                                        return_logits=True)
        finally:
            predictor.reset_image()
        return logits[0], scores[0].float().cpu().numpy()

    def embedding_array(self, entry: Entry) -> np.ndarray:
        return entry.arrays["features"]

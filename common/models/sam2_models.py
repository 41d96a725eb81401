"""SAM 2.1 model sizes, official checkpoints and loading, shared by the image and the video functions.

``MODEL_SIZE`` (tiny, small, base_plus, large) picks the SAM 2.1 config and its official checkpoint;
``MODEL_PATH`` may point to a checkpoint of that config instead. ``SAM2_OVERRIDES`` (space-separated Hydra
overrides, e.g. ``++model.image_size=512``) adjusts the config, an operator's setting, never a client's.
``PREPROCESS`` and ``TORCH_AUTOCAST``: see :mod:`common.models.torch_frames`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from common.core.settings import setting
from common.models import torch_frames
from common.runtime import weights

URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
SIZES = {  # MODEL_SIZE: (config inside the sam2 package, official checkpoint file, its SHA-256)
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt",
             "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt",
              "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt",
                  "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt",
              "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
}


@dataclass(frozen=True)
class Sam2Settings(torch_frames.TorchSettings):
    model_size: str = setting("MODEL_SIZE", "tiny")
    overrides: str = setting("SAM2_OVERRIDES", "")
    autocast: str = setting("TORCH_AUTOCAST", "off")

    def __post_init__(self):
        super().__post_init__()
        torch_frames.autocast_dtype(self.autocast)

    def autocasting(self, device: torch.device):
        """The autocast context ``TORCH_AUTOCAST`` asks for (``bfloat16``, as sam2's examples on CUDA; a
        no-op when ``off``)."""
        return torch_frames.autocasting(torch_frames.autocast_dtype(self.autocast), device)


def checkpoint(size: str) -> tuple[str, Path]:
    """The SAM 2.1 config of ``size`` and its checkpoint (``MODEL_PATH``, else the official file)."""
    if size not in SIZES:
        raise ValueError(f"MODEL_SIZE={size!r}: expected one of {', '.join(SIZES)}")
    config, filename, sha256 = SIZES[size]
    return config, Path(weights.resolve(weights.Weights(filename, URL + filename, sha256)))


def load(builder: Callable, device: torch.device, settings: Sam2Settings) -> tuple[object, str]:
    """The model ``builder`` (``build_sam2`` or ``build_sam2_video_predictor``) makes from the settings' size,
    the checkpoint and the overrides, and an id naming exactly that model (for caches)."""
    size = settings.model_size
    overrides = settings.overrides.split()
    config, path = checkpoint(size)
    model = builder(config, str(path), device=str(device), mode="eval", hydra_overrides_extra=overrides)
    tweak = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:12] if overrides else "-"
    return model, f"sam2.1:{size}:{tweak}:{path.name}:{path.stat().st_size}"

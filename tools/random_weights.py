"""Randomly initialised checkpoints of the real SAM, SAM 2 and torchvision detection architectures.

For tests and benchmarks: no SAM-family or torchvision weights can be downloaded here, but the functions' loading code, request handling and
timings do not depend on the weights' values. These builders use the packages' own model classes and save
checkpoints in the official layouts, which the functions then load through ``MODEL_PATH``.

``SMALL_SAM`` and ``SMALL_SAM2_OVERRIDES`` are reduced encoders of the same classes, fast enough for tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

SMALL_SAM = (64, 2, 2, (1,))  # ViT encoder: embed dim, depth, heads, global attention blocks
SMALL_SAM2_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=1",
]


def sam_checkpoint(path: Path, model_type: str | None = None, seed: int = 0) -> Path:
    """A Segment Anything checkpoint (a plain state dict, as the official files) with random weights:
    of ``model_type`` (vit_b, vit_l, vit_h) or, by default, the small ``SMALL_SAM`` encoder."""
    from segment_anything.build_sam import _build_sam, sam_model_registry

    torch.manual_seed(seed)
    if model_type:
        model = sam_model_registry[model_type](checkpoint=None)
    else:
        embed_dim, depth, heads, global_blocks = SMALL_SAM
        model = _build_sam(embed_dim, depth, heads, list(global_blocks), checkpoint=None)
    torch.save(model.state_dict(), path)
    return Path(path)


def sam2_checkpoint(path: Path, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml",
                    overrides: list[str] | None = None, seed: int = 0) -> Path:
    """A SAM 2.1 checkpoint (``{"model": state_dict}``, as the official files) with random weights."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=list(overrides or []))
    torch.save({"model": model.state_dict()}, path)
    return Path(path)


def torchvision_checkpoint(path: Path, builder, seed: int = 0, **arguments) -> Path:
    """A torchvision detection model's state dict (the official files' layout) with random weights.

    ``builder`` is e.g. ``torchvision.models.detection.maskrcnn_resnet50_fpn_v2``; ``arguments`` such as
    ``num_classes`` go to it.
    """
    torch.manual_seed(seed)
    model = builder(weights=None, weights_backbone=None, **arguments)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def siammask_checkpoint(path: Path, seed: int = 0) -> Path:
    """A SiamMask-sharp checkpoint in the official ``SiamMask_DAVIS.pth`` layout (a plain state dict) with random
    weights; batch-norm statistics are randomised too, so that every branch sees non-trivial inputs."""
    from common.models.folder import load_module

    from .config import ROOT

    net = load_module(ROOT / "functions" / "pytorch" / "foolwood" / "siammask" / "nuclio", "siammask_net")
    torch.manual_seed(seed)
    model = net.SiamMask()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path

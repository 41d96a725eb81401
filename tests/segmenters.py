"""Helpers for tests of models in this process: their CVAT doors, and hooks into SAM-family models."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, mask_iou

SAM = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam" / "nuclio"
SAM2 = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam2" / "nuclio"
DOG = (768, 576)  # dog.jpg (the ``dog`` fixture), width × height
REDIS_VARS = ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_PORT", "CVAT_FUNCTIONS_REDIS_PASSWORD")


@contextmanager
def door_of(folder: Path, **env: str):
    """The CVAT door of the folder's model, built in this process with ``env`` set (and no Redis unless given).
    ``door(body)`` answers a request body with its Reply (payload and headers); ``door.model`` is the model."""
    from common.doors.cvat.door import cvat_door

    with pytest.MonkeyPatch.context() as patch:
        for name in REDIS_VARS:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield cvat_door(folder)


@contextmanager
def recorded_prompts(module: torch.nn.Module):
    """Record the keyword arguments the prompt encoder is called with."""
    calls: list[dict] = []
    handle = module.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def decoder_answers(module: torch.nn.Module, low_res: np.ndarray):
    """Make the mask decoder's low-resolution logits ``low_res`` (256×256) for every candidate mask."""
    def replace(m, args, output):
        masks = torch.from_numpy(low_res).to(output[0]).expand_as(output[0]).clone()
        return (masks, *output[1:])

    handle = module.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def box_logits(box: tuple[float, float, float, float], scale_x: float, scale_y: float) -> np.ndarray:
    """256×256 logits, +10 inside ``box`` (image pixels) mapped to the low-res grid, −10 outside."""
    logits = np.full((256, 256), -10.0, np.float32)
    x0, y0, x1, y1 = box
    logits[int(round(y0 * scale_y)):int(round(y1 * scale_y)), int(round(x0 * scale_x)):int(round(x1 * scale_x))] = 10
    return logits


def mask_box_iou(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Intersection over union of a boolean mask and the pixels of a whole-pixel box."""
    truth = np.zeros_like(mask, dtype=bool)
    x0, y0, x1, y1 = box
    truth[y0:y1, x0:x1] = True
    return mask_iou(mask, truth)


def rasterize(shape_type: str, points, width: int, height: int) -> np.ndarray:
    """A CVAT shape's pixels (rectangle [x1, y1, x2, y2], flat polygon, or RLE mask) through :class:`Region`."""
    from common.core.results import Mask, Region
    from common.core.rle import from_cvat_rle

    if shape_type == "mask":
        region = Region("mask", mask=Mask.from_full(from_cvat_rle(points, width, height)))
    elif shape_type == "rectangle":
        region = Region("rectangle", box=tuple(points))
    else:
        region = Region(shape_type, polygon=np.asarray(points, np.float64).reshape(-1, 2))
    return region.to_mask(width, height)


def encoder_input(door, image_encoder: torch.nn.Module, rgb: np.ndarray) -> torch.Tensor:
    """The tensor the image encoder receives when the door's model encodes ``rgb``."""
    seen: list[torch.Tensor] = []
    handle = image_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        door.model.encode(rgb)
    finally:
        handle.remove()
    return seen[0]

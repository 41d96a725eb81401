"""Helpers for the SAM-family tests: random-weight checkpoints, in-process handlers, and model hooks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

SAM = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam" / "nuclio"
SAM2 = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam2" / "nuclio"
DOG = (768, 576)  # dog.jpg (the ``dog`` fixture), width × height
REDIS_VARS = ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_PORT", "CVAT_FUNCTIONS_REDIS_PASSWORD")


@contextmanager
def handler_of(folder: Path, **env: str):
    """The folder's ModelHandler built in this process with ``env`` set (and no Redis unless given)."""
    from tools.bench import load_handler

    with pytest.MonkeyPatch.context() as patch:
        for name in REDIS_VARS:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield load_handler(folder)


def click(handler, body: dict):
    """One request through an in-process handler (its Reply, with headers)."""
    return handler(handler.parse(body))


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


def box_iou(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    truth = np.zeros_like(mask, dtype=bool)
    x0, y0, x1, y1 = box
    truth[y0:y1, x0:x1] = True
    return (mask & truth).sum() / (mask | truth).sum()

"""Frames for PyTorch models prepared on the model's device, and two settings of how SAM-family functions run.

- ``PREPROCESS``: ``device`` (default) sends a frame's decoded uint8 pixels to the model's device once and
  resizes and normalises them there; ``package`` keeps the package's own path (for SAM and SAM 2's video
  predictor a Pillow resize on the CPU, then NumPy), bit for bit what the package computes. The README gives
  the measured difference between the two.
- ``TORCH_AUTOCAST`` (SAM 2 functions): ``off`` (default) or ``bfloat16``, the autocast sam2's own examples
  run under on CUDA.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from common.core.results import Mask
from common.core.settings import Settings, setting

PREPROCESS = ("device", "package")
AUTOCAST = {"off": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TorchSettings(Settings):
    preprocess: str = setting("PREPROCESS", "device")

    def __post_init__(self):
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"PREPROCESS={self.preprocess!r}: expected one of {', '.join(PREPROCESS)}")

    @property
    def on_device(self) -> bool:
        return self.preprocess == "device"


def autocast_dtype(value: str) -> torch.dtype | None:
    """The dtype a ``TORCH_AUTOCAST`` value names (None: off)."""
    if value not in AUTOCAST:
        raise ValueError(f"TORCH_AUTOCAST={value!r}: expected one of {', '.join(AUTOCAST)}")
    return AUTOCAST[value]


def autocasting(dtype: torch.dtype | None, device: torch.device):
    """An autocast context to ``dtype`` on ``device``; a no-op for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def pixels(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """An H×W×3 uint8 image as a 1×3×H×W uint8 tensor on ``device`` (one host-to-device copy of uint8)."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None]


def resized(frame: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """A 1×3×H×W uint8 frame resized to ``size`` (height, width) with Pillow's antialiased ``mode`` filter
    (bilinear, bicubic), as uint8 values in a float32 tensor: :func:`uint8_resized` on the CPU,
    :func:`two_pass_resized` elsewhere."""
    return (uint8_resized if frame.device.type == "cpu" else two_pass_resized)(frame, size, mode)


def uint8_resized(frame: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """PyTorch's uint8 kernel (CPU only), which follows Pillow's fixed-point arithmetic: at most one level
    off, on under 1 % of the values."""
    frame = frame.contiguous(memory_format=torch.channels_last)  # the layout of the fast uint8 kernel
    return F.interpolate(frame, size=size, mode=mode, antialias=True, align_corners=False).float()


def two_pass_resized(frame: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resized in float, in Pillow's two passes (width, then height) with its rounding and clipping to 0..255
    between them, which bicubic overshoot needs (PyTorch's antialiased filters are Pillow's, cubic
    coefficient -0.5 included): at most two levels off, on a few percent of the values."""
    out = frame.float()
    for step in ((out.shape[-2], size[1]), size):
        out = F.interpolate(out, size=step, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return out


def normalized(frame: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(frame - mean) / std`` per channel of a float32 N×C×H×W frame on the 0..1 scale."""
    mean_t = torch.tensor(mean, device=frame.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=frame.device).view(1, -1, 1, 1)
    return (frame - mean_t) / std_t


def masks_of(logits: torch.Tensor) -> list[Mask | None]:
    """The masks (logits > 0) of N×H×W logits, each cut to its box on the device: only the boxes' pixels and
    their row and column profiles leave it. None for an empty mask."""
    positive = logits > 0
    rows = positive.any(dim=2).cpu().numpy()
    masks: list[Mask | None] = []
    for i in range(len(positive)):
        ys = np.flatnonzero(rows[i])
        if len(ys) == 0:
            masks.append(None)
            continue
        y0, y1 = int(ys[0]), int(ys[-1])
        band = positive[i, y0:y1 + 1]  # the columns are looked for only in the mask's rows
        xs = np.flatnonzero(band.any(dim=0).cpu().numpy())
        x0, x1 = int(xs[0]), int(xs[-1])
        masks.append(Mask(band[:, x0:x1 + 1].cpu().numpy(), x0, y0))
    return masks

"""YOLOX (Megvii) on ONNX, as Megvii's ONNX Runtime demo runs it (``preproc``, ``demo_postprocess``,
``multiclass_nms``): letterbox with truncated sides, decode the raw grid output, class-agnostic NMS (each box keeps
its best class, then one NMS over all boxes, sizes measured ``x2 - x1 + 1``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.core.image import Image
from common.core.results import Detections
from common.core.settings import Settings, setting
from common.models.base import Detector
from common.models.detection import letterbox
from common.runtime import weights
from common.runtime.backends import load_onnx

WEIGHTS = weights.Weights(
    "yolox_nano.onnx",
    url="https://github.com/Kazuhito00/YOLOX-ONNX-TFLite-Sample/raw/3d4f1119/model/yolox_nano.onnx",
    sha256="695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
)
STRIDES = (8, 16, 32)


def make_grid(input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (N, 2) and strides (N, 1) of YOLOX's three output grids, in output order."""
    grids, strides = [], []
    height, width = input_size
    for stride in STRIDES:
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def grid_decode(raw: np.ndarray, grid: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """YOLOX raw predictions (N, 5 + C) → centre boxes in input pixels: (p + grid) * stride, exp(p) * stride."""
    out = raw.astype(np.float32, copy=True)
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


@dataclass(frozen=True)
class YoloxSettings(Settings):
    nms_threshold: float = setting("NMS_THRESHOLD", 0.45)
    nms_class_agnostic: bool = setting("NMS_CLASS_AGNOSTIC", True)


class ModelHandler(Detector):
    settings: YoloxSettings

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.model = load_onnx(weights.resolve(WEIGHTS))
        _, _, height, width = self.model.input_shapes[0]
        self.input_size = (int(height or 640), int(width or 640))
        self.grid, self.stride = make_grid(self.input_size)
        if len(self.labels) == 0:
            raise RuntimeError("function.yaml declares no labels")

    def detect(self, image: Image, threshold: float) -> Detections:
        boxed = letterbox(image.bgr, self.input_size)  # YOLOX reads BGR, as OpenCV decodes
        blob = np.ascontiguousarray(boxed.image.transpose(2, 0, 1)[None], dtype=np.float32)
        raw = self.model({self.model.input_names[0]: blob})[0][0]
        class_scores = raw[:, 5:] * raw[:, 4:5]
        if self.settings.nms_class_agnostic:  # each cell its best class
            classes = class_scores.argmax(axis=1)
            cells = np.flatnonzero(class_scores[np.arange(len(classes)), classes] >= threshold)
            classes = classes[cells]
        else:  # each class every cell that scores for it, as the demo's class-aware NMS
            cells, classes = np.nonzero(class_scores >= threshold)
        scores = class_scores[cells, classes]
        pred = grid_decode(raw[cells], self.grid[cells], self.stride[cells])  # only these cells' boxes
        boxes = np.column_stack([
            pred[:, 0] - pred[:, 2] / 2, pred[:, 1] - pred[:, 3] / 2,
            pred[:, 0] + pred[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2,
        ]) / boxed.scale
        found = Detections(boxes, scores, classes).nms(self.settings.nms_threshold, class_agnostic=
                                                       self.settings.nms_class_agnostic, pixel=1.0)
        return found.clip(*image.size)

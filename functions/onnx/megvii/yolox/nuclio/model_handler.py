"""YOLOX (Megvii) on ONNX: letterbox to the model input, decode the raw grid output, class-aware NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.doors.cvat import shapes

from common.runtime import weights
from common.runtime.backends import load_onnx
from common.models.detection import batched_nms, clip_boxes, letterbox
from common.doors.cvat.nuclio import ModelHandler as BaseHandler
from common.doors.cvat.request import DetectorRequest
from common.core.settings import env_float

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


class ModelHandler(BaseHandler):
    kind = "detector"
    function_dir = Path(__file__).resolve().parent

    def __init__(self, context=None):
        super().__init__(context)
        self.model = load_onnx(weights.resolve(WEIGHTS))
        _, _, height, width = self.model.input_shapes[0]
        self.input_size = (int(height or 640), int(width or 640))
        self.grid, self.stride = make_grid(self.input_size)
        self.nms_threshold = env_float("NMS_THRESHOLD", 0.45)
        if len(self.labels) == 0:
            raise RuntimeError("function.yaml declares no labels")

    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (xtl, ytl, xbr, ybr in image pixels), scores and class ids above ``threshold``."""
        boxed = letterbox(np.ascontiguousarray(rgb[:, :, ::-1]), self.input_size)  # the model expects BGR
        blob = np.ascontiguousarray(boxed.image.transpose(2, 0, 1)[None], dtype=np.float32)
        raw = self.model({self.model.input_names[0]: blob})[0][0]
        pred = grid_decode(raw, self.grid, self.stride)
        class_scores = pred[:, 5:] * pred[:, 4:5]
        classes = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(classes)), classes]
        mask = scores >= threshold
        pred, scores, classes = pred[mask], scores[mask], classes[mask]
        boxes = np.column_stack([
            pred[:, 0] - pred[:, 2] / 2, pred[:, 1] - pred[:, 3] / 2,
            pred[:, 0] + pred[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2,
        ]) / boxed.scale
        keep = batched_nms(boxes, scores, classes, threshold, self.nms_threshold)
        height, width = rgb.shape[:2]
        return clip_boxes(boxes[keep], width, height), scores[keep], classes[keep]

    def __call__(self, request: DetectorRequest) -> list[dict]:
        boxes, scores, classes = self.detect(request.image.rgb, request.threshold)
        return [
            shapes.rectangle(self.labels.name_of(int(c)), box, float(s))
            for box, s, c in zip(boxes, scores, classes)
            if int(c) < len(self.labels)
        ]

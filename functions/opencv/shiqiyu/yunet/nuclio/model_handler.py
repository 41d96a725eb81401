"""YuNet face detector (OpenCV's FaceDetectorYN): a box per face plus its five landmarks as a skeleton.

Any image size and aspect ratio: the detector runs at the image's own size, scaled down first when the longer
side exceeds ``YUNET_MAX_SIDE`` (default 1920) so that huge frames stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.core.image import Image, scaled_size
from common.core.results import Detections
from common.core.settings import Settings, setting
from common.models.base import Detector
from common.runtime import weights

WEIGHTS = weights.Weights(
    "yunet_n_640_640.onnx",
    url="https://github.com/ShiqiYu/libfacedetection.train/raw/0047ac24/onnx/yunet_n_640_640.onnx",
    sha256="25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31",
)
FACE, LANDMARKS = "face", "face landmarks"
DEFAULT_THRESHOLD = 0.6  # YuNet scores a cat's face 0.39 in chelsea.png; real faces score 0.5 and up


@dataclass(frozen=True)
class YunetSettings(Settings):
    nms_threshold: float = setting("NMS_THRESHOLD", 0.3)
    max_side: int = setting("YUNET_MAX_SIDE", 1920)


class ModelHandler(Detector):
    settings: YunetSettings
    default_threshold = DEFAULT_THRESHOLD
    work_bytes_per_pixel = 1  # measured: a BGR copy of the image, partly within the decoding peak

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        self.detector = cv2.FaceDetectorYN.create(str(weights.resolve(WEIGHTS)), "", (320, 320),
                                                  0.01, self.settings.nms_threshold, 5000)
        self.face, self.landmarks = (self.labels.by_name[name].id for name in (FACE, LANDMARKS))

    def faces(self, rgb: np.ndarray, threshold: float) -> np.ndarray:
        """Rows of (x, y, w, h, 5 × (x, y) landmarks, score) in image pixels, score ≥ threshold."""
        height, width = rgb.shape[:2]
        size = scaled_size(width, height, min(1.0, self.settings.max_side / max(width, height)))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if size != (width, height):
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self.detector.setInputSize(size)
        _, faces = self.detector.detect(bgr)
        if faces is None:
            return np.zeros((0, 15), np.float32)
        # on degenerate inputs (a 4000×1 image) YuNet can report a face at infinite coordinates: not a face
        faces = faces[np.isfinite(faces).all(axis=1) & (faces[:, 14] >= threshold)]
        faces[:, 0:14:2] *= width / size[0]  # x, w and the landmarks' x
        faces[:, 1:14:2] *= height / size[1]  # y, h and the landmarks' y
        return faces

    def detect(self, image: Image, threshold: float) -> Detections:
        """Per face two detections: its box (``face``) and its five landmarks (``face landmarks``)."""
        faces = self.faces(image.rgb, threshold)
        boxes = np.column_stack([faces[:, :2], faces[:, :2] + faces[:, 2:4]])  # x + w in float32, as YuNet's
        landmarks = np.concatenate([faces[:, 4:14].reshape(-1, 5, 2), np.ones((len(faces), 5, 1))], axis=2)
        found = Detections(np.repeat(boxes, 2, axis=0), np.repeat(faces[:, 14], 2),
                           np.tile([self.face, self.landmarks], len(faces)), keypoints=np.repeat(landmarks, 2, axis=0))
        return found.clip(*image.size)

"""YuNet face detector (OpenCV's FaceDetectorYN): a box per face plus its five landmarks as a skeleton.

Any image size and aspect ratio: the detector runs at the image's own size, scaled down first when the longer
side exceeds ``YUNET_MAX_SIDE`` (default 1920) so that huge frames stay fast.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.doors.cvat import shapes

from common.runtime import weights
from common.doors.cvat.nuclio import ModelHandler as BaseHandler
from common.core.image import scaled_size
from common.doors.cvat.request import DetectorRequest, parse_detector
from common.core.settings import env_float, env_int

WEIGHTS = weights.Weights(
    "yunet_n_640_640.onnx",
    url="https://github.com/ShiqiYu/libfacedetection.train/raw/0047ac24/onnx/yunet_n_640_640.onnx",
    sha256="25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31",
)
FACE, LANDMARKS = "face", "face landmarks"
DEFAULT_THRESHOLD = 0.6  # YuNet scores a cat's face 0.39 in chelsea.png; real faces score 0.5 and up


class ModelHandler(BaseHandler):
    kind = "detector"
    function_dir = Path(__file__).resolve().parent
    work_bytes_per_pixel = 1  # measured: a BGR copy of the image, partly within the decoding peak

    def __init__(self, context=None):
        super().__init__(context)
        self.detector = cv2.FaceDetectorYN.create(str(weights.resolve(WEIGHTS)), "", (320, 320),
                                                  0.01, env_float("NMS_THRESHOLD", 0.3), 5000)
        self.max_side = env_int("YUNET_MAX_SIDE", 1920)
        skeleton = self.labels.by_name[LANDMARKS]
        self.landmark_names = [sublabel.name for sublabel in skeleton.sublabels]

    def parse(self, body) -> DetectorRequest:
        return parse_detector(body, default_threshold=DEFAULT_THRESHOLD)

    def detect(self, rgb: np.ndarray, threshold: float) -> np.ndarray:
        """Rows of (x, y, w, h, 5 × (x, y) landmarks, score) in image pixels, score ≥ threshold."""
        height, width = rgb.shape[:2]
        size = scaled_size(width, height, min(1.0, self.max_side / max(width, height)))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if size != (width, height):
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self.detector.setInputSize(size)
        _, faces = self.detector.detect(bgr)
        if faces is None:
            return np.zeros((0, 15), np.float32)
        faces = faces[faces[:, 14] >= threshold]
        faces[:, 0:14:2] *= width / size[0]  # x, w and the landmarks' x
        faces[:, 1:14:2] *= height / size[1]  # y, h and the landmarks' y
        return faces

    def __call__(self, request: DetectorRequest) -> list[dict]:
        width, height = request.image.size
        results = []
        for face in self.detect(request.image.rgb, request.threshold):
            x, y, w, h, score = *face[:4], float(face[14])
            box = np.clip([x, y, x + w, y + h], 0, [width, height, width, height])
            results.append(shapes.rectangle(FACE, box, score))
            elements = [shapes.image_keypoint(name, xy, width, height)
                        for name, xy in zip(self.landmark_names, face[4:14].reshape(5, 2))]
            results.append(shapes.skeleton(LANDMARKS, elements, score))
        return results

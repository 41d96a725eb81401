"""PP-OCR text detection and recognition (RapidOCR's ONNX export of PaddleOCR's PP-OCRv4 models).

One 4-point ``text`` polygon per detected text line, with the recognised string in its ``text`` attribute
and the recognition confidence. The request's threshold is the minimum recognition confidence; boxes the
detector itself is unsure of are dropped below ``BOX_THRESHOLD`` (default 0.5).

The ``rapidocr-onnxruntime`` wheel ships the three ONNX models (detector, direction classifier,
recogniser), so nothing is downloaded. It runs on ONNX Runtime's CUDA provider when ``ORT_PROVIDERS``
(or the installed onnxruntime) offers it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.core.image import Image, pad_to_aspect
from common.core.results import Detections
from common.core.settings import Settings, setting
from common.models.base import Detector
from common.runtime.backends import num_threads, ort_providers

TEXT = "text"
DEFAULT_THRESHOLD = 0.5  # RapidOCR's own default text score


@dataclass(frozen=True)
class OcrSettings(Settings):
    box_threshold: float = setting("BOX_THRESHOLD", 0.5)
    unclip_ratio: float = setting("UNCLIP_RATIO", 1.6)


class ModelHandler(Detector):
    settings: OcrSettings
    default_threshold = DEFAULT_THRESHOLD
    work_bytes_per_pixel = 17  # measured: RapidOCR's copies of the image before it scales it down
    # RapidOCR scales an image's short side up to its detector's 736 pixels and the long side with it: a 3×2000
    # image would become a detector input of hundreds of megapixels
    max_aspect = 8.0

    def __init__(self, settings=None, log=None):
        super().__init__(settings, log)
        from rapidocr_onnxruntime import RapidOCR

        cuda = "CUDAExecutionProvider" in ort_providers()
        self.engine = RapidOCR(det_use_cuda=cuda, cls_use_cuda=cuda, rec_use_cuda=cuda,
                               intra_op_num_threads=num_threads() or -1)
        self.text = self.labels.by_name[TEXT].id

    def read(self, rgb: np.ndarray, threshold: float) -> list[tuple[np.ndarray, str, float]]:
        """(4×2 corners in image pixels, text, confidence) per text line, top to bottom."""
        bgr = pad_to_aspect(np.ascontiguousarray(rgb[:, :, ::-1]), self.max_aspect)
        lines, _ = self.engine(bgr, box_thresh=self.settings.box_threshold, unclip_ratio=self.settings.unclip_ratio,
                               text_score=threshold)
        return [(np.asarray(box, dtype=np.float64), str(text), float(score)) for box, text, score in lines or []]

    def detect(self, image: Image, threshold: float) -> Detections:
        """A ``text`` polygon per line that holds text, its string in the ``text`` attribute."""
        lines = [line for line in self.read(image.rgb, threshold) if line[1].strip()]
        polygons = [box for box, _, _ in lines]
        boxes = [np.concatenate([box.min(axis=0), box.max(axis=0)]) for box in polygons]
        return Detections(np.array(boxes).reshape(-1, 4), [score for _, _, score in lines], [self.text] * len(lines),
                          polygons=polygons, attributes=[{TEXT: text} for _, text, _ in lines])

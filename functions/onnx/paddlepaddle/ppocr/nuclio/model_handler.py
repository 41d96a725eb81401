"""PP-OCR text detection and recognition (RapidOCR's ONNX export of PaddleOCR's PP-OCRv4 models).

One 4-point ``text`` polygon per detected text line, with the recognised string in its ``text`` attribute
and the recognition confidence. The request's threshold is the minimum recognition confidence; boxes the
detector itself is unsure of are dropped below ``BOX_THRESHOLD`` (default 0.5).

The ``rapidocr-onnxruntime`` wheel ships the three ONNX models (detector, direction classifier,
recogniser), so nothing is downloaded. It runs on ONNX Runtime's CUDA provider when ``ORT_PROVIDERS``
(or the installed onnxruntime) offers it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.doors.cvat import shapes
from common.runtime.backends import num_threads, ort_providers
from common.doors.cvat.nuclio import ModelHandler as BaseHandler
from common.core.image import pad_to_aspect
from common.doors.cvat.request import DetectorRequest, parse_detector
from common.core.settings import env_float

TEXT = "text"
DEFAULT_THRESHOLD = 0.5  # RapidOCR's own default text score



class ModelHandler(BaseHandler):
    kind = "detector"
    function_dir = Path(__file__).resolve().parent
    work_bytes_per_pixel = 17  # measured: RapidOCR's copies of the image before it scales it down
    # RapidOCR scales an image's short side up to its detector's 736 pixels and the long side with it: a 3×2000
    # image would become a detector input of hundreds of megapixels
    max_aspect = 8.0

    def __init__(self, context=None):
        super().__init__(context)
        from rapidocr_onnxruntime import RapidOCR

        cuda = "CUDAExecutionProvider" in ort_providers()
        self.engine = RapidOCR(det_use_cuda=cuda, cls_use_cuda=cuda, rec_use_cuda=cuda,
                               intra_op_num_threads=num_threads() or -1)
        self.box_threshold = env_float("BOX_THRESHOLD", 0.5)
        self.unclip_ratio = env_float("UNCLIP_RATIO", 1.6)

    def parse(self, body) -> DetectorRequest:
        return parse_detector(body, default_threshold=DEFAULT_THRESHOLD)

    def read(self, rgb: np.ndarray, threshold: float) -> list[tuple[np.ndarray, str, float]]:
        """(4×2 corners in image pixels, text, confidence) per text line, top to bottom."""
        bgr = pad_to_aspect(np.ascontiguousarray(rgb[:, :, ::-1]), self.max_aspect)
        lines, _ = self.engine(bgr, box_thresh=self.box_threshold, unclip_ratio=self.unclip_ratio,
                               text_score=threshold)
        return [(np.asarray(box, dtype=np.float64), str(text), float(score)) for box, text, score in lines or []]

    def __call__(self, request: DetectorRequest) -> list[dict]:
        return [shapes.polygon(TEXT, box, score, attributes={TEXT: text})
                for box, text, score in self.read(request.image.rgb, request.threshold) if text.strip()]

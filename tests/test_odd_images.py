"""Images of extreme aspect ratio and of one or two pixels: every function answers them with a result.

Models that scale an image keep its aspect ratio, so a 1×4000 image loses its short side (OpenCV's and
PyTorch's resizes refuse a zero size; RapidOCR scales a 3×2000 image to hundreds of megapixels). Each function
either keeps a pixel on every side or pads the image first; prompts lie inside each image.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.segmenters import door_of

FUNCTIONS = ROOT / "functions"
SIZES = [(1, 4000), (3, 2000), (4000, 1), (2000, 3), (1, 1), (2, 2), (5, 700)]


def png(width: int, height: int) -> str:
    pixels = np.random.default_rng(width + 7 * height).integers(0, 255, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def bodies(kind: str, width: int, height: int) -> list[dict]:
    """Requests of ``kind`` whose prompts cover or sit in the middle of a width × height image."""
    image = png(width, height)
    box = [0, 0, width, height]
    if kind == "detector":
        return [{"image": image, "threshold": 0.3}]
    if kind == "interactor":
        return [{"image": image, "pos_points": [[width / 2, height / 2]], "neg_points": []},
                {"image": image, "pos_points": [], "obj_bbox": [[0, 0], [width, height]]}]
    if kind == "tracker":
        return [{"image": image, "shapes": [{"type": "rectangle", "points": box}], "states": []}]
    shape = {"type": "rectangle", "points": box, "label_id": 1}
    return [{"image0": image, "image1": image, "boxes0": [shape], "boxes1": [shape]}]


def answer_all(door) -> None:
    for width, height in SIZES:
        for body in bodies(door.kind, width, height):
            reply = door(body)
            assert reply.payload is not None, (width, height)
            json.dumps(reply.payload, allow_nan=False)  # finite numbers only: NaN is not JSON


@pytest.mark.parametrize("folder", ["onnx/megvii/yolox", "opencv/shiqiyu/yunet", "opencv/opencv/grabcut",
                                    "onnx/paddlepaddle/ppocr", "onnx/honglinchu/nanotrack"])
def test_functions_without_torch(folder, models_dir, redis_server):
    with door_of(FUNCTIONS / folder / "nuclio", **redis_server.env()) as door:
        answer_all(door)


def test_segment_anything(sam_checkpoint):
    with door_of(FUNCTIONS / "pytorch" / "facebookresearch" / "sam" / "nuclio",
                    MODEL_PATH=str(sam_checkpoint)) as door:
        answer_all(door)


@pytest.mark.parametrize("folder", ["sam2", "sam2-tracker"])
def test_sam2_image_and_video(folder, sam2_checkpoint, redis_server):
    from tools.random_weights import SMALL_SAM2_OVERRIDES

    # a smaller input keeps the tracker quick (the image predictor's feature sizes are fixed for 1024)
    overrides = " ".join([*SMALL_SAM2_OVERRIDES, *(["++model.image_size=512"] if folder == "sam2-tracker" else [])])
    with door_of(FUNCTIONS / "pytorch" / "facebookresearch" / folder / "nuclio", MODEL_PATH=str(sam2_checkpoint),
                    SAM2_OVERRIDES=overrides, **redis_server.env()) as door:
        answer_all(door)


def test_reid(tmp_path):
    import torch
    from torchvision.models import resnet50

    torch.save(resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    with door_of(FUNCTIONS / "pytorch" / "torchvision" / "reid" / "nuclio",
                    MODEL_PATH=str(tmp_path / "resnet50.pth")) as door:
        answer_all(door)

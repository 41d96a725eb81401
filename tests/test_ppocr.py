"""PP-OCR (RapidOCR's ONNX models, shipped in its wheel) over HTTP: text lines where they are, words read."""

from __future__ import annotations

import base64
import importlib.metadata
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from common.core.labels import Labels
from tests.conftest import ROOT, b64_file, detect, box_iou, running
from tests.protocol import check_detector_reply

PPOCR = ROOT / "functions" / "onnx" / "paddlepaddle" / "ppocr" / "nuclio"
LABELS = Labels.from_function_yaml(PPOCR / "function.yaml")
WORDS = {"Annotation": (60, 60), "serverless": (480, 140), "Nuclio 1.13": (120, 300), "tracker": (600, 380)}


@pytest.fixture(scope="module")
def ppocr():
    with running(PPOCR) as harness:
        yield harness


def encode(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def bounds(shape: dict) -> tuple[float, float, float, float]:
    xs, ys = shape["points"][0::2], shape["points"][1::2]
    return min(xs), min(ys), max(xs), max(ys)


def text_of(shape: dict) -> str:
    (attribute,) = shape["attributes"]
    assert attribute["name"] == "text"
    return attribute["value"]


def test_generated_words_are_found_where_they_were_written_and_read(ppocr):
    image = Image.new("RGB", (900, 500), (235, 230, 220))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    truth = {}
    for word, xy in WORDS.items():
        draw.text(xy, word, fill=(20, 20, 60), font=font)
        truth[word] = draw.textbbox(xy, word, font=font)
    reply = detect(ppocr, encode(image))
    check_detector_reply(reply, LABELS, 900, 500, threshold=0.5)
    assert sorted(text_of(s) for s in reply) == sorted(WORDS)
    for shape in reply:
        assert shape["type"] == "polygon" and len(shape["points"]) == 8
        assert box_iou(bounds(shape), truth[text_of(shape)]) > 0.7, (text_of(shape), bounds(shape))


def test_page_lines_are_read_in_reading_order(ppocr, data_dir):
    reply = detect(ppocr, b64_file(data_dir / "images" / "page.png"))
    check_detector_reply(reply, LABELS, 384, 191, threshold=0.5)
    texts = [text_of(s).replace(" ", "").lower() for s in reply]
    assert len(reply) >= 4
    assert texts[0] == "region-basedsegmentation"
    assert box_iou(bounds(reply[0]), (7, 12, 292, 33)) > 0.7  # the heading, by eye
    assert "letusfirstdeterminemarkersofthecoinsandthe" in texts
    tops = [bounds(s)[1] for s in reply]
    assert tops == sorted(tops)


def test_threshold_is_the_minimum_recognition_confidence(ppocr, data_dir):
    page = b64_file(data_dir / "images" / "page.png")
    everything = detect(ppocr, page, threshold=0.1)
    confident = detect(ppocr, page, threshold=0.95)
    assert 0 < len(confident) < len(everything)
    assert all(float(s["confidence"]) >= 0.95 for s in confident)


@pytest.mark.parametrize("size", [(640, 480), (12, 9)])
def test_no_text_gives_an_empty_list(ppocr, size):
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random(size[::-1]) * 40 + 100).astype(np.uint8)).convert("RGB")
    assert detect(ppocr, encode(image)) == []


def test_a_single_opencv_distribution_the_headless_one():
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert {n for n in installed if n.startswith("opencv")} == {"opencv-python-headless"}
    assert "rapidocr-onnxruntime" in installed

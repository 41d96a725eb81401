"""Property-based fuzzing through the harness: one function of every kind gets generated malformed requests.

Bodies nested thousands of levels deep, numbers of hundreds or thousands of digits, numbers beyond floats,
odd JSON values in every field of a valid request, images of extreme aspect ratio, broken images and
broken base64, garbage bytes, each with JSON and non-JSON content types; and broken HTTP framing. Every
answer must be a 4xx (or a 2xx) with a JSON body, and no worker process may die or be replaced.

``FUZZ_EXAMPLES`` sets the generated requests per function (default 150).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import ROOT, function_url, http, raw_exchange, running

FUNCTIONS = ROOT / "functions"
FOLDERS = {  # one function of every kind, ONNX, OpenCV and PyTorch alike
    "detector": FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio",
    "interactor": FUNCTIONS / "opencv" / "opencv" / "grabcut" / "nuclio",
    "interactor-torch": FUNCTIONS / "pytorch" / "facebookresearch" / "sam" / "nuclio",
    "tracker": FUNCTIONS / "onnx" / "honglinchu" / "nanotrack" / "nuclio",
    "tracker-torch": FUNCTIONS / "pytorch" / "facebookresearch" / "sam2-tracker" / "nuclio",  # masks, polygons
    "reid": FUNCTIONS / "pytorch" / "torchvision" / "reid" / "nuclio",
}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SENT = {"requests": 0}
RAW = "\x00raw\x00"  # stands for a raw JSON token in a body before it is serialised


def encode(image: Image.Image, fmt: str = "PNG", **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(width * height).integers(0, 255, (height, width, 3), np.uint8))


VALID = encode(noise(64, 48))
IMAGES = [VALID] + [encode(noise(w, h)) for w, h in [(1, 4000), (3, 2000), (4000, 1), (2000, 3), (1, 1), (2, 2)]] + [
    encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)), "PNG"),  # 16-bit grey
    encode(noise(64, 48).convert("P"), "PNG", transparency=0),  # palette with a transparent colour
    encode(noise(64, 48).convert("CMYK"), "JPEG"),
    encode(Image.new("1", (20000, 20000))),  # 60 KB of PNG for 400 megapixels: over IMAGE_MAX_PIXELS
    encode(Image.new("1", (10000, 10000))),  # 100 megapixels: within IMAGE_MAX_PIXELS, over the memory bound
    VALID[: len(VALID) // 2],  # truncated
    base64.b64encode(b"not an image at all").decode(),
    "data:image/png;base64," + VALID, "!!!!", "", "A",
]


def raw_numbers() -> st.SearchStrategy[str]:
    """JSON number tokens no float holds, or that Python refuses to convert, or that are just very long."""
    digits = st.integers(300, 5000)
    return st.one_of(
        digits.map(lambda n: "9" * n), digits.map(lambda n: "-1" + "0" * n),
        st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "1" + "0" * 400]),
        st.integers(300, 330).map(lambda n: "0." + "0" * n + "1"),
    )


def deep(depth: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.one_of(depth.map(lambda n: "[" * n + "]" * n), depth.map(lambda n: '{"a":' * n + "1" + "}" * n))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=30)),
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(st.text(max_size=8), children,
                                                                               max_size=6)),
    max_leaves=25,
).map(lambda value: json.dumps(value))

HOSTILE = st.one_of(JSON_VALUES, raw_numbers(), deep(st.integers(50, 3000)),
                    st.integers(0, 100_000).map(lambda n: json.dumps("x" * n)),
                    st.sampled_from(IMAGES).map(json.dumps))


def first(options: list):
    return options[0]


def template(kind: str, pick=first) -> dict:
    """A valid request of ``kind`` on the 64×48 image; ``pick`` chooses among variants of some fields."""
    if kind == "detector":
        return {"image": VALID, "threshold": 0.5}
    if kind == "interactor":
        return {"image": VALID, "pos_points": [[20, 20]], "neg_points": [[5, 5]], "obj_bbox": [[10, 10], [40, 30]]}
    if kind == "tracker":
        shape = pick([[10, 10, 40, 30], {"type": "rectangle", "points": [10, 10, 40, 30]},
                      {"type": "polygon", "points": [10, 10, 40, 10, 25, 30]},
                      {"type": "mask", "points": [0, 50, 50, 10, 10, 19, 19]}])
        return {"image": VALID, "shapes": [shape], "states": [pick([None, "A" * 22])]}
    box = {"type": "rectangle", "points": [10, 10, 40, 30], "label_id": 1}
    return {"image0": VALID, "image1": VALID, "boxes0": [box], "boxes1": [dict(box)], "threshold": 0.5,
            "max_distance": 50}


def paths(value, prefix=()) -> list[tuple]:
    """Every place in a JSON value (dict keys and list indices), the value itself first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, prefix + (index,))
    return found


def with_raw(body, path: tuple, token: str) -> str:
    """``body`` as JSON text with the value at ``path`` replaced by the raw JSON ``token``."""
    if not path:
        return token
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = RAW
    return json.dumps(body).replace(json.dumps(RAW), token, 1)


@st.composite
def requests(draw, kind: str) -> tuple[bytes, str]:
    """(body, content type): a malformed request for a function of ``kind``."""
    family = draw(st.sampled_from(["field", "field", "field", "deep", "digits", "garbage", "image"]))
    body = template(kind.split("-")[0], lambda options: draw(st.sampled_from(options)))
    if family == "deep":
        text = draw(deep(st.integers(500, 5000)))
    elif family == "digits":
        text = draw(raw_numbers())
    elif family == "garbage":
        return draw(st.binary(max_size=300)), draw(st.sampled_from(["application/json", "text/plain", ""]))
    elif family == "image":
        name = "image0" if "image0" in body else "image"
        text = with_raw(body, (name,), json.dumps(draw(st.sampled_from(IMAGES))))
    else:  # one place of a valid request (a field, a point, a coordinate) holds something else
        text = with_raw(body, draw(st.sampled_from(paths(body)[1:])), draw(HOSTILE))
    content_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]))
    return text.encode(), content_type


def worker_pids(harness) -> dict:
    return {(runtime.name, worker_id): worker.process.pid
            for runtime in harness.functions.values() for worker_id, worker in runtime._workers.items()}


@pytest.fixture(scope="module")
def served(sam_checkpoint, sam2_checkpoint, redis_server, tmp_path_factory):
    """A harness per function (each with its own MODEL_PATH), trackers and caches on the test Redis."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    resnet = tmp_path_factory.mktemp("fuzz") / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), resnet)
    from tools.random_weights import SMALL_SAM2_OVERRIDES

    model_paths = {"interactor-torch": str(sam_checkpoint), "tracker-torch": str(sam2_checkpoint), "reid": str(resnet)}
    with contextlib.ExitStack() as stack:
        harnesses = {}
        for kind, folder in FOLDERS.items():
            with pytest.MonkeyPatch.context() as patch:  # read by the workers as they start
                for name, value in redis_server.env().items():
                    patch.setenv(name, value)
                patch.delenv("MODEL_PATH", raising=False)
                if kind in model_paths:
                    patch.setenv("MODEL_PATH", model_paths[kind])
                if kind == "tracker-torch":  # a small SAM 2.1 on a small input keeps a step quick on a CPU
                    patch.setenv("SAM2_OVERRIDES", " ".join([*SMALL_SAM2_OVERRIDES, "++model.image_size=512"]))
                harnesses[kind] = stack.enter_context(running(folder, timeout=300))
        started = time.monotonic()
        yield harnesses
        print(f"\nfuzz: {SENT['requests']} requests in {time.monotonic() - started:.0f} s")


def check_reply(status: int, headers: dict, reply, what) -> None:
    assert status < 500, (what, status, reply)
    assert headers.get("Content-Type", "").startswith("application/json"), (what, status, headers)
    assert not isinstance(reply, bytes), (what, status, reply[:200])  # http() parsed it as JSON


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_malformed_requests_get_json_4xx_and_leave_workers_alive(served, kind):
    harness = served[kind]
    pids = worker_pids(harness)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=requests(kind))
    def fuzz(request):
        body, content_type = request
        status, headers, reply = http("POST", function_url(harness), body, {"Content-Type": content_type},
                                      timeout=120)
        SENT["requests"] += 1
        check_reply(status, headers, reply, body[:120])
        assert worker_pids(harness) == pids, f"a worker was replaced after {body[:120]!r}"

    fuzz()
    status, _, reply = http("POST", function_url(harness), template(kind.split("-")[0]))
    assert status == 200, reply  # and still serving valid requests


HEADERS = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(
        lambda value: f"Content-Length: {value}"),
    st.integers(-2**40, 2**40).map(lambda value: f"Content-Length: {value}"),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(
        lambda size: f"Transfer-Encoding: chunked\r\n\r\n{size}"),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(header=HEADERS, body=st.binary(max_size=64), dashboard=st.booleans())
def test_broken_http_framing_gets_json_answers(served, header, body, dashboard):
    harness = served["detector"]
    port = harness.port if dashboard else harness.functions["onnx-megvii-yolox"].http_port
    target = b"/api/function_invocations" if dashboard else b"/"
    head = (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"x-nuclio-function-name: onnx-megvii-yolox\r\n" + header.encode())
    message = head + (b"\r\n" if "chunked" in header else b"\r\n\r\n") + body
    pids = worker_pids(harness)
    status, headers, reply = raw_exchange(port, message, timeout=60, half_close=True)
    SENT["requests"] += 1
    check_reply(status, headers, reply, message[:200])
    assert worker_pids(harness) == pids

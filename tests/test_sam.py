"""Segment Anything on a small random-weight model of the real architecture, loaded via MODEL_PATH.

Random weights make the masks meaningless, so what the model sees and what comes back is checked with
hooks on the real modules: prompts must reach the prompt encoder in the 1024-pixel input frame, and a
known low-resolution decoder output must come back at the right place in the original image.
"""

from __future__ import annotations

import base64
import concurrent.futures

import numpy as np
import pytest
import torch

from common.core.image import Image
from common.core.rle import from_cvat_rle
from common.models.folder import load_module
from tests.conftest import b64_file, function_url, http
from tests.segmenters import (DOG, SAM, box_logits, decoder_answers, door_of, encoder_input, mask_box_iou,
                              recorded_prompts)



@pytest.fixture(scope="module")
def sam(sam_checkpoint):
    with door_of(SAM, MODEL_PATH=str(sam_checkpoint), MODEL_TYPE="vit_b") as handler:
        yield handler


def test_encoder_size_is_read_from_the_checkpoint():
    from segment_anything import sam_model_registry

    model_handler = load_module(SAM)
    for name, builder in sam_model_registry.items():
        if name == "default":
            continue
        with torch.device("meta"):  # shapes only: the official architectures without allocating them
            state_dict = builder(checkpoint=None).state_dict()
        assert model_handler.encoder_architecture(state_dict) == model_handler.ARCHITECTURES[name]


def test_points_and_box_reach_the_model_in_its_input_frame(sam, dog):
    scale = 1024 / max(DOG)
    with recorded_prompts(sam.model.predictor.model.prompt_encoder) as calls:
        sam({"image": dog, "pos_points": [[300, 200]], "neg_points": [[700.5, 10]],
                    "obj_bbox": [[100, 50], [500, 400]]})
    coords, labels = calls[-1]["points"]
    np.testing.assert_allclose(coords[0].cpu().numpy(), [[300 * scale, 200 * scale], [700.5 * scale, 10 * scale]], rtol=1e-5)
    assert labels[0].tolist() == [1, 0]
    np.testing.assert_allclose(calls[-1]["boxes"].cpu().numpy().reshape(4), [100 * scale, 50 * scale, 500 * scale, 400 * scale],
                               rtol=1e-5)


def test_decoder_output_comes_back_at_the_right_place(sam, dog):
    box = (201, 99, 399, 300)
    scale = 1024 / max(DOG) / 4  # image → 1024 input → 256 low-res grid
    with decoder_answers(sam.model.predictor.model.mask_decoder, box_logits(box, scale, scale)):
        reply = sam({"image": dog, "pos_points": [[300, 200]], "neg_points": []}).payload
    (shape,) = reply["shapes"]
    mask = from_cvat_rle(shape["points"], *DOG)
    assert mask.shape == (DOG[1], DOG[0])
    assert mask_box_iou(mask, box) > 0.95
    assert shape["attributes"][0]["spec_id"] == 0 and 0 <= float(shape["attributes"][0]["value"]) <= 1.5


def test_encoder_runs_once_for_many_clicks(sam, dog):
    runs = []
    handle = sam.model.predictor.model.image_encoder.register_forward_hook(lambda *a: runs.append(1))
    try:
        other = base64.b64encode(base64.b64decode(dog) + b"\0").decode()  # same pixels, other bytes: other key
        replies = [sam({"image": other, "pos_points": [[100 + 20 * i, 300]], "neg_points": []})
                   for i in range(5)]
    finally:
        handle.remove()
    assert len(runs) == 1
    assert [r.headers["X-Embedding-Cache"] for r in replies] == ["miss"] + ["hit"] * 4


def test_precompute_request_then_warm_click(sam, data_dir):
    image = b64_file(data_dir / "images" / "chelsea.png")
    first = sam({"image": image})
    assert first.payload == {"shapes": [], "precomputed": True} and first.headers["X-Embedding-Cache"] == "miss"
    second = sam({"image": image, "pos_points": [[100, 100]], "neg_points": []})
    assert second.headers["X-Embedding-Cache"] == "hit" and len(second.payload["shapes"]) <= 1


def test_blob_is_the_float32_embedding(sam, dog):
    reply = sam({"image": dog, "pos_points": [], "neg_points": [], "blob": True})
    raw = base64.b64decode(reply.payload["blob"])
    assert len(raw) == 4 * 256 * 64 * 64
    embedding = np.frombuffer(raw, dtype="<f4").reshape(1, 256, 64, 64)
    rgb = Image.from_bytes(base64.b64decode(dog)).rgb
    np.testing.assert_allclose(embedding, sam.model.encode(rgb).arrays["features"], rtol=1e-5, atol=1e-5)


def test_eviction_by_bytes(sam_checkpoint, data_dir):
    images = [b64_file(data_dir / "images" / name) for name in ("chelsea.png", "coffee.png")]
    # one SAM embedding is 4 MiB: a 6 MiB cache holds one
    with door_of(SAM, MODEL_PATH=str(sam_checkpoint), EMBEDDING_CACHE_BYTES=str(6 * 2**20)) as handler:
        states = [handler({"image": images[i]}).headers["X-Embedding-Cache"] for i in (0, 0, 1, 0)]
    assert states == ["miss", "hit", "miss", "miss"]


# ---------------------------------------------------------------- over HTTP

@pytest.fixture(scope="module")
def sam_over_redis(sam_checkpoint, redis_server):
    from tools.config import find_configs
    from tools.harness import Harness

    env = {"MODEL_PATH": str(sam_checkpoint), **redis_server.env()}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        harnesses = [Harness(find_configs([SAM]), port=0) for _ in range(2)]  # two replicas, two workers each
        for harness in harnesses:
            harness.start()
        for harness in harnesses:
            assert harness.wait_ready(300), {n: f.message for n, f in harness.functions.items()}
    yield harnesses
    for harness in harnesses:
        harness.stop()


def test_workers_and_replicas_share_embeddings_through_redis(sam_over_redis, data_dir):
    replica_a, replica_b = (function_url(h) for h in sam_over_redis)
    image = b64_file(data_dir / "images" / "astronaut.png")
    status, headers, reply = http("POST", replica_a, {"image": image})
    assert status == 200 and headers["X-Embedding-Cache"] == "miss", reply
    bodies = [{"image": image, "pos_points": [[50 + 40 * i, 200]], "neg_points": []} for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # concurrent, so both workers of each replica serve
        results = list(pool.map(lambda ab: http("POST", ab[0], ab[1]),
                                [(replica_a if i % 2 else replica_b, body) for i, body in enumerate(bodies)]))
    assert [status for status, _, _ in results] == [200] * 6
    assert [headers["X-Embedding-Cache"] for _, headers, _ in results] == ["hit"] * 6
    for _, _, reply in results:
        for shape in reply["shapes"]:
            assert from_cvat_rle(shape["points"], 512, 512).shape == (512, 512)


def test_full_mask_reply_is_the_frame_size(sam_over_redis, data_dir):
    image = b64_file(data_dir / "images" / "astronaut.png")
    status, _, reply = http("POST", function_url(sam_over_redis[0]),
                            {"image": image, "pos_points": [[256, 256]], "neg_points": [], "full_mask": True})
    assert status == 200
    mask = np.asarray(reply["mask"])
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize("body, message", [
    ({"pos_points": [[1, 1]], "neg_points": []}, "image"),
    ({"image": "aGVsbG8=", "pos_points": [[1, 1]]}, "not an image"),
    ({"pos_points": [[900, 10]], "neg_points": []}, "outside"),
    ({"pos_points": [[10, 10]], "neg_points": [], "blob": "yes"}, "blob"),
    ({"pos_points": [[10, 10]], "neg_points": [], "obj_bbox": [[1, 2, 3]]}, "obj_bbox"),
])
def test_bad_requests_get_clear_400s(sam_over_redis, data_dir, body, message):
    if "image" not in body and message != "image":
        body = {"image": b64_file(data_dir / "images" / "astronaut.png"), **body}
    status, _, reply = http("POST", function_url(sam_over_redis[0]), body)
    assert status == 400 and message in reply["error"], reply


def test_answers_without_the_cache_when_redis_is_down(sam_checkpoint, serve, data_dir, monkeypatch):
    from tests.redis_server import free_port

    monkeypatch.setenv("MODEL_PATH", str(sam_checkpoint))
    monkeypatch.setenv("CVAT_FUNCTIONS_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("CVAT_FUNCTIONS_REDIS_PORT", str(free_port()))
    harness = serve(SAM, timeout=300)
    image = b64_file(data_dir / "images" / "coffee.png")
    for _ in range(2):
        status, _, reply = http("POST", function_url(harness), {"image": image, "pos_points": [[200, 200]],
                                                                 "neg_points": []})
        assert status == 200 and "shapes" in reply, reply


def test_plugin_mode_answers_every_request_with_the_blob(sam_checkpoint, dog):
    with door_of(SAM, MODEL_PATH=str(sam_checkpoint), SAM_PLUGIN_MODE="1") as handler:
        reply = handler({"image": dog, "pos_points": [[10, 10]], "neg_points": []})
    assert len(base64.b64decode(reply.payload["blob"])) == 4 * 256 * 64 * 64


def test_resizing_on_the_device_feeds_the_encoder_what_the_packages_resize_does(sam_checkpoint, data_dir):
    """PREPROCESS=device (the default) resizes on the model's device in place of the package's Pillow resize:
    the encoder's input differs by at most one grey level (two off the CPU), on few values."""
    rgb = Image.from_bytes((data_dir / "images" / "giraffe.jpg").read_bytes()).rgb
    inputs = {}
    for mode in ("package", "device"):
        with door_of(SAM, MODEL_PATH=str(sam_checkpoint), PREPROCESS=mode) as door:
            assert door.model.settings.preprocess == mode and mode in door.model.model_id
            encoder = door.model.predictor.model.image_encoder
            grey_level = float(door.model.predictor.model.pixel_std.min()) ** -1  # one level, normalised
            inputs[mode] = encoder_input(door, encoder, rgb).cpu()
    assert inputs["device"].shape == inputs["package"].shape == (1, 3, 1024, 1024)
    levels = (inputs["device"] - inputs["package"]).abs() / grey_level
    on_cpu = door.model.device.type == "cpu"
    assert levels.max() <= (1.01 if on_cpu else 2.01)
    assert (levels > 0.01).float().mean() < (0.01 if on_cpu else 0.1)

"""SAM 2.1 (image) on a small random-weight model of the real architecture, loaded via MODEL_PATH.

Same approach as test_sam.py: hooks on the real modules check the coordinate frames; the cache and reply
code is shared with SAM (common/models/promptable.py), so here it is checked once end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.core.errors import RequestError
from common.core.image import Image
from common.core.rle import from_cvat_rle
from tests.conftest import b64_file, function_url, http
from tests.segmenters import (DOG, SAM2, box_logits, decoder_answers, door_of, encoder_input, mask_box_iou,
                              recorded_prompts)



@pytest.fixture(scope="module")
def overrides():
    from tools.random_weights import SMALL_SAM2_OVERRIDES

    return " ".join(SMALL_SAM2_OVERRIDES)


@pytest.fixture(scope="module")
def sam2(sam2_checkpoint, overrides):
    with door_of(SAM2, MODEL_PATH=str(sam2_checkpoint), MODEL_SIZE="tiny", SAM2_OVERRIDES=overrides) as handler:
        yield handler


def test_box_corners_and_points_reach_the_model_in_its_input_frame(sam2, dog):
    sx, sy = 1024 / DOG[0], 1024 / DOG[1]  # SAM 2 resizes to 1024×1024 without keeping the aspect ratio
    with recorded_prompts(sam2.model.predictor.model.sam_prompt_encoder) as calls:
        sam2({"image": dog, "pos_points": [[300, 200]], "neg_points": [[700, 10]],
                     "obj_bbox": [[100, 50], [500, 400]]})
    coords, labels = calls[-1]["points"]
    expected = [[100 * sx, 50 * sy], [500 * sx, 400 * sy], [300 * sx, 200 * sy], [700 * sx, 10 * sy]]
    np.testing.assert_allclose(coords[0].cpu().numpy(), expected, rtol=1e-5)
    assert labels[0].tolist() == [2, 3, 1, 0]  # box corners, then object and background clicks


def test_decoder_output_comes_back_at_the_right_place(sam2, dog):
    box = (200, 99, 400, 300)
    with decoder_answers(sam2.model.predictor.model.sam_mask_decoder, box_logits(box, 256 / DOG[0], 256 / DOG[1])):
        reply = sam2({"image": dog, "pos_points": [[300, 200]], "neg_points": []})
    (shape,) = reply.payload["shapes"]
    assert mask_box_iou(from_cvat_rle(shape["points"], *DOG), box) > 0.95


def test_warm_clicks_reuse_all_three_feature_levels(sam2, dog):
    runs = []
    handle = sam2.model.predictor.model.image_encoder.register_forward_hook(lambda *a: runs.append(1))
    try:
        first = sam2({"image": dog, "pos_points": [[10, 10]], "neg_points": []})
        again = sam2({"image": dog, "pos_points": [[10, 10]], "neg_points": []})
    finally:
        handle.remove()
    assert runs == [] and first.headers["X-Embedding-Cache"] == "hit"  # cached by the tests above
    assert first.payload == again.payload
    entry, _ = sam2.model.embedding(sam2.parse({"image": dog}).image)
    assert {name: a.shape for name, a in entry.arrays.items()} == {
        "image_embed": (1, 256, 64, 64), "high_res_0": (1, 32, 256, 256), "high_res_1": (1, 64, 128, 128)}


def test_cached_embedding_gives_the_same_mask_as_a_fresh_one(sam2, sam2_checkpoint, overrides, dog):
    body = {"image": dog, "pos_points": [[300, 200], [350, 260]], "neg_points": [[50, 50]]}
    warm = sam2(body)
    with door_of(SAM2, MODEL_PATH=str(sam2_checkpoint), SAM2_OVERRIDES=overrides) as fresh:
        cold = fresh(body)
    assert (warm.headers["X-Embedding-Cache"], cold.headers["X-Embedding-Cache"]) == ("hit", "miss")
    assert warm.payload == cold.payload


def test_blob_is_refused_with_a_clear_error(sam2, dog):
    with pytest.raises(RequestError, match="SAM plugin"):
        sam2({"image": dog, "blob": True})


def test_unknown_model_size_fails_at_start(sam2_checkpoint):
    with pytest.raises(ValueError, match="MODEL_SIZE"):
        with door_of(SAM2, MODEL_PATH=str(sam2_checkpoint), MODEL_SIZE="huge"):
            pass


def test_over_http_with_redis(sam2_checkpoint, overrides, redis_server, serve, data_dir, monkeypatch):
    for name, value in {"MODEL_PATH": str(sam2_checkpoint), "SAM2_OVERRIDES": overrides, **redis_server.env()}.items():
        monkeypatch.setenv(name, value)
    harness = serve(SAM2, timeout=300)
    image = b64_file(data_dir / "images" / "grace_hopper.png")
    states = []
    for points in ([], [[100, 100]], [[150, 200], [160, 210]]):
        status, headers, reply = http("POST", function_url(harness), {"image": image, "pos_points": points,
                                                                       "neg_points": []})
        assert status == 200, reply
        states.append(headers["X-Embedding-Cache"])
    assert states == ["miss", "hit", "hit"]
    status, _, reply = http("POST", function_url(harness), {"image": image, "pos_points": [[10, 10000]],
                                                             "neg_points": []})
    assert status == 400 and "outside" in reply["error"]


def test_preparing_the_image_on_the_device_runs_the_predictors_own_transforms(sam2_checkpoint, overrides, data_dir):
    """PREPROCESS=device (the default) only moves where sam2's ToTensor, Resize and Normalize run: on the CPU
    the encoder's input is the package's bit for bit, on a GPU within float rounding."""
    rgb = Image.from_bytes((data_dir / "images" / "giraffe.jpg").read_bytes()).rgb
    inputs = {}
    for mode in ("package", "device"):
        with door_of(SAM2, MODEL_PATH=str(sam2_checkpoint), SAM2_OVERRIDES=overrides, PREPROCESS=mode) as door:
            assert mode in door.model.model_id
            inputs[mode] = encoder_input(door, door.model.predictor.model.image_encoder, rgb).cpu()
            device = door.model.device
    if device.type == "cpu":
        assert torch.equal(inputs["device"], inputs["package"])
    else:
        torch.testing.assert_close(inputs["device"], inputs["package"], atol=1e-4, rtol=0)

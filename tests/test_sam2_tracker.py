"""SAM 2 video tracker on a small random-weight SAM 2.1 (real classes, loaded via MODEL_PATH), state in a real
redis-server: a track continued through the store matches sam2's own in-memory video predictor exactly, the
memory bank stays bounded, replies come in the shape type asked, and bad requests get clear errors."""

from __future__ import annotations

import base64
import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import PIL.Image

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Region
from common.core.rle import region_points as tracker_points
from common.doors.cvat.request import tracked_shape
from common.core.rle import from_cvat_rle, to_cvat_rle
from common.runtime.state_store import StateGone, state_key
from tests.conftest import ROOT, function_url, http, running
from tests.segmenters import mask_box_iou, door_of, rasterize
from tests.sequences import moving_object

TRACKER = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam2-tracker" / "nuclio"
SIZE = (320, 240)
FRAMES = 18  # more than SAM 2 reads back (6 memories, 15 object pointers), so the bounds are exercised


@pytest.fixture(scope="module")
def overrides():
    from tools.random_weights import SMALL_SAM2_OVERRIDES

    return [*SMALL_SAM2_OVERRIDES, "++model.image_size=512"]  # a smaller input keeps the tests quick on a CPU


@pytest.fixture(scope="module")
def env(sam2_checkpoint, overrides, redis_server):
    return {"MODEL_PATH": str(sam2_checkpoint), "SAM2_OVERRIDES": " ".join(overrides), **redis_server.env()}


@pytest.fixture(scope="module")
def tracker(env):
    with door_of(TRACKER, **env) as door:
        yield door.model


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A JPEG folder as sam2's video predictor reads it, and the ground-truth boxes."""
    frames, truth = moving_object(frames=FRAMES, size=SIZE, box=(60, 40), seed=4)
    folder = tmp_path_factory.mktemp("video")
    for i, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / f"{i}.jpg", quality=95)
    return folder, truth


def frame(folder: Path, i: int) -> Image:
    return Image.from_bytes((folder / f"{i}.jpg").read_bytes())


def b64(folder: Path, i: int) -> str:
    return base64.b64encode((folder / f"{i}.jpg").read_bytes()).decode()


def triangle(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y2, (x1 + x2) / 2, y1, x2, y2]


def prompt_of(shape_type: str, points: list) -> Region:
    """A CVAT shape as the door hands it to the tracker."""
    return tracked_shape(shape_type, points, "shape", SIZE).region


def reference_logits(sam2_checkpoint, overrides, folder: Path, prompt: Region, device) -> dict[int, np.ndarray]:
    """Mask logits of sam2's SAM2VideoPredictor, which keeps the whole video and its memory in memory."""
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(sam2_checkpoint),
                                           device=str(device), hydra_overrides_extra=overrides)
    state = predictor.init_state(str(folder))
    if prompt.type == "rectangle":
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=list(prompt.box))
    else:
        predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=prompt.to_mask(*SIZE))
    return {i: masks[0, 0].cpu().numpy() for i, _, masks in predictor.propagate_in_video(state)}


def tracked_logits(workers, folder: Path, prompt: Region, frames: int = FRAMES) -> dict[int, np.ndarray]:
    """A track's logits per frame, its steps alternating between the workers (each reads the last's state)."""
    token = workers[0].start(frame(folder, 0), prompt)
    logits = {}
    for i in range(1, frames):
        logits[i], _, token = workers[i % len(workers)].advance(frame(folder, i), token, "states[0]")
    return logits


@contextmanager
def deterministic():
    """CUDA kernels chosen for reproducibility (cuDNN's autotuner off), as the comparison with sam2 needs."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.filterwarnings("ignore:cannot import name '_C'")  # the reference has no hole filling here either
@pytest.mark.parametrize("prompt_type", ["rectangle", "polygon"])
def test_a_track_through_the_store_matches_sam2s_in_memory_video_predictor(
        env, sam2_checkpoint, overrides, video, prompt_type):
    """With sam2's own frame preprocessing (PREPROCESS=package), on the device the tracker runs on, every frame's
    logits equal the package's bit for bit: the store's round trip loses nothing."""
    folder, truth = video
    box = list(truth[0])
    prompt = prompt_of(prompt_type, box if prompt_type == "rectangle" else triangle(box))
    with door_of(TRACKER, **env, PREPROCESS="package") as one, door_of(TRACKER, **env, PREPROCESS="package") as two:
        with deterministic():
            expected = reference_logits(sam2_checkpoint, overrides, folder, prompt, one.model.device)
            found = tracked_logits([one.model, two.model], folder, prompt)  # two workers, alternating
    for i in range(1, FRAMES):
        assert np.array_equal(found[i], expected[i]), f"frame {i}"


def test_stored_memory_comes_back_bit_for_bit(tracker, video):
    """What SAM 2 wrote (bfloat16 memory features, float32 object pointer) is what the next step reads, on
    the model's device."""
    folder, truth = video
    with deterministic():
        arrays, state = tracker.store.get(tracker.start(frame(folder, 0), prompt_of("rectangle", list(truth[0]))), "s")
        session = tracker.session(frame(folder, 0), 0)
        tracker.predictor.add_new_points_or_box(session, frame_idx=0, obj_id=0, box=list(truth[0]))
        tracker.predictor.propagate_in_video_preflight(session)
    written = session["output_dict_per_obj"][0]["cond_frame_outputs"][0]
    read = tracker.memory(tracker.load_memories([state["track"]], ["prompt"]))
    assert read["maskmem_features"].dtype == torch.bfloat16 and read["maskmem_features"].device == tracker.device
    assert torch.equal(read["maskmem_features"], written["maskmem_features"])
    assert torch.equal(read["obj_ptr"], written["obj_ptr"])
    assert torch.equal(read["maskmem_pos_enc"][0], written["maskmem_pos_enc"][0])


def test_frames_prepared_on_the_device_track_as_sams_own_frames_do(env, video):
    """PREPROCESS=device (the default) resizes on the model's device; a track then stays within a hair of
    the package's path (Pillow's resize) on the same frames."""
    folder, truth = video
    prompt = prompt_of("rectangle", list(truth[0]))
    with door_of(TRACKER, **env, PREPROCESS="package") as package, \
            door_of(TRACKER, **env, PREPROCESS="device") as device:
        assert device.model.settings.on_device and not package.model.settings.on_device
        expected = tracked_logits([package.model], folder, prompt, 8)
        found = tracked_logits([device.model], folder, prompt, 8)
    for i in expected:
        agree = ((found[i] > 0) == (expected[i] > 0)).mean()
        assert agree > 0.99 and np.abs(found[i] - expected[i]).max() < 0.05, (i, agree)


def test_the_memory_bank_is_bounded_and_earlier_states_stay_usable(tracker, video, redis_server):
    folder, truth = video
    token = tracker.start(frame(folder, 0), prompt_of("rectangle", list(truth[0])))
    tokens, outputs = [token], []
    for i in range(1, FRAMES):
        logits, _, token = tracker.advance(frame(folder, i), token, "s")
        tokens.append(token)
        outputs.append(logits)
    arrays, state = tracker.store.get(token, "s")
    assert [f for f, _ in state["memory"]] == list(range(FRAMES - 6, FRAMES))  # num_maskmem - 1 recent frames
    assert state["pointer_frames"] == list(range(FRAMES - 15, FRAMES)) and arrays["pointers"].shape == (15, 256)
    memory = tracker.store.get(state["memory"][-1][1], "m")[0]
    assert memory["features"].dtype == np.int16 and memory["features"].shape == (1, 64, 32, 32)  # bfloat16 bits
    # re-tracking from an earlier frame gives what it gave the first time (states are immutable)
    again, _, _ = tracker.advance(frame(folder, 5), tokens[4], "s")
    assert np.array_equal(again, outputs[4])


@contextmanager
def decoder_says(tracker, box, present: bool = True):
    """Make the mask decoder answer ``box`` (image pixels) with an object score for present or absent."""
    decoder = tracker.predictor.sam_mask_decoder

    def replace(module, args, output):
        masks, ious, tokens, scores = output
        side = masks.shape[-1]  # low-res masks cover the whole image, side×side
        logits = torch.full_like(masks, -10.0)
        x1, y1, x2, y2 = (round(v * side / s) for v, s in zip(box, (*SIZE, *SIZE)))
        logits[..., y1:y2, x1:x2] = 10.0
        return logits, ious, tokens, torch.full_like(scores, 10.0 if present else -10.0)

    handle = decoder.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("shape_type", ["rectangle", "polygon", "mask"])
def test_replies_come_in_the_type_the_track_started_with(tracker, video, shape_type):
    folder, truth = video
    box = [int(v) for v in truth[0]]
    start = {"rectangle": box, "polygon": triangle(box),
             "mask": to_cvat_rle(rasterize("rectangle", box, *SIZE))}[shape_type]
    token = tracker.start(frame(folder, 0), prompt_of(shape_type, start))
    moved = (160, 75, 240, 165)  # edges on the low-res grid (128×128 over 320×240)
    with decoder_says(tracker, moved):
        region, token = tracker.step(frame(folder, 1), token, "s")
    points = tracker_points(region)
    assert region.type == shape_type
    if shape_type == "rectangle":
        assert points == list(moved)
    elif shape_type == "polygon":
        xs, ys = points[0::2], points[1::2]
        assert (min(xs), min(ys), max(xs), max(ys)) == (160, 75, 239, 164)  # the mask's outer pixels
    else:
        assert mask_box_iou(from_cvat_rle(points, *SIZE), moved) == 1.0


def test_a_lost_object_keeps_its_last_shape(tracker, video):
    folder, truth = video
    token = tracker.start(frame(folder, 0), prompt_of("rectangle", list(truth[0])))
    with decoder_says(tracker, (100, 60, 180, 120)):
        seen, token = tracker.step(frame(folder, 1), token, "s")
    with decoder_says(tracker, (0, 0, 320, 240), present=False):
        lost, token = tracker.step(frame(folder, 2), token, "s")
        still_lost, token = tracker.step(frame(folder, 3), token, "s")
    assert [(r.type, tracker_points(r)) for r in (seen, lost, still_lost)] == [("rectangle", [100, 60, 180, 120])] * 3


def test_states_of_another_model_or_tracker_are_refused(tracker, video):
    folder, truth = video
    token = tracker.start(frame(folder, 0), prompt_of("rectangle", list(truth[0])))
    arrays, state = tracker.store.get(token, "s")
    forged = tracker.store.put(arrays, {**state, "model": "sam2.1:large:-:other.pt:1"})
    with pytest.raises(StateGone, match="another model"):
        tracker.step(frame(folder, 1), forged, "states[0]")
    nanotrack_like = tracker.store.put({}, {"kind": "nanotrack-step", "image_size": list(SIZE)})
    with pytest.raises(RequestError, match="not a state of this tracker"):
        tracker.step(frame(folder, 1), nanotrack_like, "states[0]")


def test_a_prompt_covering_no_pixel_is_refused(tracker, video):
    folder, _ = video
    with pytest.raises(RequestError, match="covers no pixel"):
        tracker.start(frame(folder, 0), prompt_of("mask", [121, 10, 10, 20, 20]))  # 11×11 zeros


# ---------------------------------------------------------------- protocol over HTTP

@pytest.fixture(scope="module")
def served(env):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with running(TRACKER, timeout=300) as harness:
            yield harness


def call(harness, body, status: int = 200):
    code, _, reply = http("POST", function_url(harness), body, timeout=120)
    assert code == status, reply
    return reply


def test_several_objects_of_several_types_over_http(served, video):
    folder, truth = video
    box = [float(v) for v in truth[0]]
    shapes = [{"type": "rectangle", "points": box}, {"type": "polygon", "points": triangle(box)},
              {"type": "mask", "points": to_cvat_rle(rasterize("rectangle", [20, 20, 60, 50], *SIZE))}]
    reply = call(served, {"image": b64(folder, 0), "shapes": shapes, "states": []})
    assert reply["shapes"] == shapes and all(isinstance(s, str) and len(s) == 22 for s in reply["states"])
    for i in (1, 2):
        reply = call(served, {"image": b64(folder, i), "shapes": [None] * 3, "states": reply["states"]})
        assert [s["type"] for s in reply["shapes"]] == ["rectangle", "polygon", "mask"]
        rectangle, polygon, mask = (s["points"] for s in reply["shapes"])
        assert len(rectangle) == 4 and len(polygon) >= 6 and len(polygon) % 2 == 0
        assert from_cvat_rle(mask, *SIZE).any()
    continued = call(served, {"image": b64(folder, 2), "states": reply["states"][:1]})  # newest UI: no shapes
    assert len(continued["shapes"]) == 1 and continued["states"][0] != reply["states"][0]


def test_state_keys_carry_the_functions_name(served, video, redis_server):
    folder, truth = video
    (token,) = call(served, {"image": b64(folder, 0), "shapes": [{"type": "rectangle", "points": list(truth[0])}],
                             "states": []})["states"]
    assert redis_server.client().exists(state_key("pth-facebookresearch-sam2-tracker", token))


def bad_mask() -> list[int]:
    points = to_cvat_rle(rasterize("rectangle", [10, 10, 20, 20], *SIZE))
    return [points[0] + 1, *points[1:]]


@pytest.mark.parametrize("shapes, states, message", [
    ([{"type": "points", "points": [1, 1]}], [], "shapes[0].type must be one of mask, polygon, rectangle"),
    ([{"type": "mask", "points": bad_mask()}], [], "RLE counts"),
    ([{"type": "mask", "points": [5, 1, 1, 400, 2]}], [], "not inside the 320x240 image"),
    ([{"type": "polygon", "points": [1, 1, 5, 5]}], [], "at least 6 numbers"),
    ([{"type": "polygon", "points": [400, 300, 500, 300, 450, 350]}], [], "shapes[0].points"),
    ([{"type": "mask", "points": [121, 10, 10, 20, 20]}], [], "covers no pixel"),
    ([None], ["B" * 22], "start the track again"),
    ([None], [{"net.zf": "jsonpickle"}], "not a tracker state"),
])
def test_bad_requests_get_clear_errors(served, video, shapes, states, message):
    folder, _ = video
    status = 410 if states and states[0] == "B" * 22 else 400
    reply = call(served, {"image": b64(folder, 0), "shapes": shapes, "states": states}, status)
    assert message in reply["error"]


def test_a_frame_of_another_size_is_refused(served, video):
    folder, truth = video
    states = call(served, {"image": b64(folder, 0), "shapes": [{"type": "rectangle", "points": list(truth[0])}],
                           "states": []})["states"]
    data = io.BytesIO()
    PIL.Image.new("RGB", (100, 80)).save(data, format="PNG")
    small = base64.b64encode(data.getvalue()).decode()
    assert "100x80" in call(served, {"image": small, "shapes": [None], "states": states}, 400)["error"]


def test_objects_of_one_request_are_stepped_together(tracker, video):
    """Objects at the same point of their tracks go through SAM 2 as one batch (one memory-attention pass per
    frame; an object started later makes its own batch) and get what they get stepped one by one."""
    folder, truth = video
    prompts = [prompt_of("rectangle", list(truth[0])), prompt_of("rectangle", [200, 20, 300, 120]),
               prompt_of("polygon", triangle([20, 150, 120, 230]))]
    tokens = [tracker.start(frame(folder, 0), prompt) for prompt in prompts]
    late = None
    passes = []
    handle = tracker.predictor.memory_attention.register_forward_hook(lambda *a: passes.append(1))
    try:
        for i in range(1, 5):
            if i == 2:
                late = tracker.start(frame(folder, 1), prompts[0])
            image = frame(folder, i)
            together = tracker.advance_many(image, tokens + ([late] if late else []), ["s"] * (3 + bool(late)))
            assert len(passes) == (1 if late is None else 2)
            passes.clear()
            for (logits, region, _), token in zip(together, tokens + ([late] if late else [])):
                alone, alone_region, _ = tracker.advance(image, token, "s")  # states are immutable: same input
                passes.clear()
                assert region.type == alone_region.type
                np.testing.assert_allclose(logits.cpu().numpy(), alone, atol=1e-3)
                assert ((logits.cpu().numpy() > 0) == (alone > 0)).mean() > 0.999
            tokens = [token for _, _, token in together[:3]]
            late = together[3][2] if late else None
    finally:
        handle.remove()

"""NanoTrack with the real weights: accuracy against OpenCV's TrackerNano, the tracker protocol over HTTP,
state in a real redis-server (shared by processes, killed and restarted, expired, damaged)."""

from __future__ import annotations

import base64
import concurrent.futures
import time

import cv2
import numpy as np
import pytest

from common.core.image import Image
from common.core.results import Region
from common.core.rle import region_points as tracker_points
from common.runtime.state_store import state_key
from tests.conftest import ROOT, box_iou, function_url, http, running
from tests.redis_server import RedisServer
from tests.segmenters import door_of
from tests.sequences import moving_object

NANOTRACK = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
SIAMMASK = ROOT / "functions" / "pytorch" / "foolwood" / "siammask" / "nuclio"
# the store's failure modes, for every tracker that keeps its state in it (SiamMask with random weights)
STORE_TRACKERS = pytest.mark.parametrize("folder", [NANOTRACK, SIAMMASK], ids=["nanotrack", "siammask"])


def tracker_env(folder, scratch) -> dict[str, str]:
    from tools.replies import random_weights

    return {**random_weights(folder, scratch), "TORCH_DEVICE": "cpu"}


def png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return data.tobytes()


def b64(rgb: np.ndarray) -> str:
    return base64.b64encode(png(rgb)).decode()


def opencv_nano(models_dir, frames: list[np.ndarray], box) -> list[list[float]]:
    params = cv2.TrackerNano_Params()
    params.backbone = str(models_dir / "nanotrack_v2_backbone.onnx")
    params.neckhead = str(models_dir / "nanotrack_v2_head.onnx")
    tracker = cv2.TrackerNano_create(params)
    x1, y1, x2, y2 = box
    tracker.init(np.ascontiguousarray(frames[0][:, :, ::-1]), (int(x1), int(y1), int(x2 - x1), int(y2 - y1)))
    boxes = []
    for frame in frames[1:]:
        _, (x, y, w, h) = tracker.update(np.ascontiguousarray(frame[:, :, ::-1]))
        boxes.append([x, y, x + w, y + h])
    return boxes


def track_in_process(model, frames: list[np.ndarray], box) -> list[list[float]]:
    token = model.start(Image.from_bytes(png(frames[0])), Region("rectangle", box=tuple(float(v) for v in box)))
    boxes = []
    for frame in frames[1:]:
        region, token = model.step(Image.from_bytes(png(frame)), token, "state")
        boxes.append(tracker_points(region))  # as the door sends it
    return boxes


@pytest.fixture(scope="module")
def nanotrack(models_dir, redis_server):
    with door_of(NANOTRACK, **redis_server.env()) as door:
        yield door.model


@pytest.mark.parametrize("seed, scale", [(0, 1.6), (1, 0.6), (2, 1.0)])
def test_at_least_as_accurate_as_opencv_tracker_nano(nanotrack, models_dir, seed, scale):
    frames, truth = moving_object(seed=seed, scale_to=scale)
    ours = track_in_process(nanotrack, frames, truth[0])
    reference = opencv_nano(models_dir, frames, truth[0])
    ours_iou = np.mean([box_iou(a, b) for a, b in zip(ours, truth[1:])])
    reference_iou = np.mean([box_iou(a, b) for a, b in zip(reference, truth[1:])])
    assert ours_iou >= reference_iou and ours_iou > 0.75, (ours_iou, reference_iou)


def test_smoke_on_vtest_video(nanotrack, models_dir, data_dir):
    capture = cv2.VideoCapture(str(data_dir / "video" / "vtest.avi"))
    frames = []
    while len(frames) < 30:
        ok, bgr = capture.read()
        assert ok, "vtest.avi has fewer than 30 frames"
        frames.append(bgr[:, :, ::-1])
    person = (253, 220, 284, 308)  # the man on the left of the first frame, by eye
    ours = np.array(track_in_process(nanotrack, frames, person))
    reference = opencv_nano(models_dir, frames, person)
    assert ((ours[:, 2:] - ours[:, :2]) >= 10).all() and (ours[:, [0, 2]] <= 768).all() and (ours[:, [1, 3]] <= 576).all()
    centres = np.vstack([[(person[0] + person[2]) / 2, (person[1] + person[3]) / 2], (ours[:, :2] + ours[:, 2:]) / 2])
    assert np.abs(np.diff(centres, axis=0)).max() < 40  # no jumps between frames at 10 fps
    assert np.mean([box_iou(a, b) for a, b in zip(ours, reference)]) > 0.5


# ---------------------------------------------------------------- protocol over HTTP

@pytest.fixture(scope="module")
def scene():
    frames, truth = moving_object(frames=24, seed=3, scale_to=1.2)
    return [b64(f) for f in frames[:6]], truth[:6]


@pytest.fixture(scope="module")
def served(models_dir, redis_server):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in redis_server.env().items():
            patch.setenv(name, value)
        with running(NANOTRACK) as harness:
            yield harness


def call(harness, body, status: int = 200):
    code, _, reply = http("POST", function_url(harness), body)
    assert code == status, reply
    return reply


def test_declared_form_starts_and_continues_several_objects(served, scene):
    images, truth = scene
    boxes = [list(truth[0]), [20.0, 30.0, 120.0, 100.0]]
    reply = call(served, {"image": images[0], "shapes": [{"type": "rectangle", "points": b} for b in boxes],
                          "states": []})
    assert reply["shapes"] == [{"type": "rectangle", "points": b} for b in boxes]
    states = reply["states"]
    assert len(states) == 2 and all(isinstance(s, str) and len(s) == 22 for s in states)
    reply = call(served, {"image": images[1], "shapes": [None, None], "states": states})
    assert [s["type"] for s in reply["shapes"]] == ["rectangle", "rectangle"]
    assert box_iou(reply["shapes"][0]["points"], truth[1]) > 0.7
    assert set(reply["states"]).isdisjoint(states)  # a new token per step; the old ones stay valid
    again = call(served, {"image": images[1], "states": states})  # newest UI: no shapes at all
    assert again["shapes"] == reply["shapes"]


def test_the_reply_says_what_the_state_cost_the_store(served, scene, redis_server):
    """``X-Tracker-State-Bytes``: the bytes the request stored in Redis (what the playground shows per object)."""
    from common.runtime.state_store import KEY_PREFIX, state_key

    images, truth = scene
    client, name = redis_server.client(), "onnx-honglinchu-nanotrack"
    before = set(client.scan_iter(match=f"{KEY_PREFIX}{name}:*"))
    code, headers, reply = http("POST", function_url(served), {
        "image": images[0], "shapes": [{"type": "rectangle", "points": list(truth[0])}], "states": []})
    assert code == 200
    new = set(client.scan_iter(match=f"{KEY_PREFIX}{name}:*")) - before  # the template and the first step
    assert len(new) == 2 and int(headers["X-Tracker-State-Bytes"]) == sum(client.strlen(k) for k in new)
    code, headers, step = http("POST", function_url(served), {"image": images[1], "shapes": [None],
                                                               "states": reply["states"]})
    assert code == 200
    assert int(headers["X-Tracker-State-Bytes"]) == client.strlen(state_key(name, step["states"][0])) > 0


def test_legacy_form_is_answered_with_bare_point_lists(served, scene):
    images, truth = scene
    reply = call(served, {"image": images[0], "shapes": [list(truth[0])], "states": []})
    assert reply["shapes"] == [list(truth[0])]
    reply = call(served, {"image": images[1], "shapes": [None], "states": reply["states"]})
    (points,) = reply["shapes"]
    assert isinstance(points, list) and len(points) == 4 and box_iou(points, truth[1]) > 0.7


def test_an_old_ui_resending_the_shape_continues_from_the_state(served, scene):
    images, truth = scene
    start = call(served, {"image": images[0], "shapes": [list(truth[0])], "states": []})
    plain = call(served, {"image": images[1], "shapes": [None], "states": start["states"]})
    resent = call(served, {"image": images[1], "shapes": [[1, 1, 50, 50]], "states": start["states"]})
    assert resent["shapes"] == plain["shapes"]


def test_tracks_continued_alternately_by_two_processes_match_one_process(models_dir, redis_server, scene, nanotrack):
    images, truth = scene
    frames = [Image.from_bytes(base64.b64decode(i)).rgb for i in images]
    expected = track_in_process(nanotrack, frames, truth[0])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in redis_server.env().items():
            patch.setenv(name, value)
        with running(NANOTRACK) as first, running(NANOTRACK) as second:
            states = call(first, {"image": images[0], "shapes": [list(truth[0])], "states": []})["states"]
            got = []
            for i, image in enumerate(images[1:]):
                reply = call((second, first)[i % 2], {"image": image, "shapes": [None], "states": states})
                got.append(reply["shapes"][0])
                states = reply["states"]
    assert got == expected


def test_fifty_concurrent_tracks_do_not_cross_talk(served, scene):
    images, _ = scene
    rng = np.random.default_rng(5)
    starts = [[float(x), float(y), float(x + w), float(y + h)]
              for x, y, w, h in zip(rng.integers(0, 500, 50), rng.integers(0, 380, 50),
                                    rng.integers(30, 120, 50), rng.integers(30, 90, 50))]

    def run(box):
        states = call(served, {"image": images[0], "shapes": [box], "states": []})["states"]
        path = []
        for image in images[1:4]:
            reply = call(served, {"image": image, "shapes": [None], "states": states})
            path.append(reply["shapes"][0])
            states = reply["states"]
        return path

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        concurrent_paths = list(pool.map(run, starts))
    for box, path in zip(starts[:5], concurrent_paths[:5]):
        assert run(box) == path  # the same track alone gives the same boxes
    batch = call(served, {"image": images[0], "shapes": starts, "states": []})
    states = batch["states"]
    for image in images[1:4]:
        batch = call(served, {"image": image, "shapes": [None] * 50, "states": states})
        states = batch["states"]
    assert batch["shapes"] == [path[-1] for path in concurrent_paths]  # one request with 50 objects agrees


@pytest.mark.parametrize("body, status, message", [
    ({"shapes": [None], "states": ["A" * 22]}, 410, "start the track again"),
    ({"shapes": [None], "states": ["not-a-token"]}, 400, "not a tracker state"),
    ({"shapes": [None], "states": [{"net.zf": "jsonpickle"}]}, 400, "not a tracker state"),
    ({"shapes": [None], "states": []}, 400, "no state to continue from"),
    ({"shapes": [{"type": "polygon", "points": [1, 1, 9, 1, 9, 9]}], "states": []}, 400, "rectangle"),
    ({"shapes": [[1, 2, 3]], "states": []}, 400, "shapes[0]"),
    ({"shapes": "all", "states": []}, 400, "shapes must be a list"),
])
def test_bad_requests_get_clear_errors(served, scene, body, status, message):
    reply = call(served, {"image": scene[0][0], **body}, status)
    assert message in reply["error"]


def test_a_frame_of_another_size_is_refused(served, scene):
    images, truth = scene
    states = call(served, {"image": images[0], "shapes": [list(truth[0])], "states": []})["states"]
    small = b64(np.zeros((100, 120, 3), np.uint8))
    assert "120x100" in call(served, {"image": small, "shapes": [None], "states": states}, 400)["error"]


def test_a_damaged_stored_state_is_410(served, scene, redis_server):
    images, truth = scene
    (state,) = call(served, {"image": images[0], "shapes": [list(truth[0])], "states": []})["states"]
    assert state.endswith(":legacy")  # the CVAT door marks the states of legacy-form tracks
    token = state.removesuffix(":legacy")
    redis_server.client().set(state_key("onnx-honglinchu-nanotrack", token), b"\x80\x04garbage")
    reply = call(served, {"image": images[1], "shapes": [None], "states": [state]}, 410)
    assert "damaged" in reply["error"]


@STORE_TRACKERS
def test_expired_states_are_410(models_dir, serve, scene, redis_server, monkeypatch, folder, tmp_path):
    for name, value in {**redis_server.env(), **tracker_env(folder, tmp_path), "TRACKER_STATE_TTL": "1"}.items():
        monkeypatch.setenv(name, value)
    harness = serve(folder)
    images, truth = scene
    states = call(harness, {"image": images[0], "shapes": [list(truth[0])], "states": []})["states"]
    time.sleep(2.1)
    assert "expired" in call(harness, {"image": images[1], "shapes": [None], "states": states}, 410)["error"]


@STORE_TRACKERS
def test_redis_killed_and_restarted_mid_sequence(models_dir, serve, scene, monkeypatch, folder, tmp_path):
    server = RedisServer().start()
    try:
        for name, value in {**server.env(), **tracker_env(folder, tmp_path)}.items():
            monkeypatch.setenv(name, value)
        harness = serve(folder)
        images, truth = scene
        states = call(harness, {"image": images[0], "shapes": [list(truth[0])], "states": []})["states"]
        states = call(harness, {"image": images[1], "shapes": [None], "states": states})["states"]
        server.stop()
        reply = call(harness, {"image": images[2], "shapes": [None], "states": states}, 503)
        assert "unreachable" in reply["error"]
        server.start()  # same port; an empty Redis: the track restarts, no function restart needed
        assert "start the track again" in call(harness, {"image": images[2], "shapes": [None], "states": states},
                                               410)["error"]
        states = call(harness, {"image": images[2], "shapes": [list(truth[2])], "states": []})["states"]
        reply = call(harness, {"image": images[3], "shapes": [None], "states": states})
        assert len(reply["shapes"][0]) == 4
        if folder == NANOTRACK:  # real weights
            assert box_iou(reply["shapes"][0], truth[3]) > 0.7
    finally:
        server.stop()

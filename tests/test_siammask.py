"""SiamMask-sharp proven equal to the original (foolwood/SiamMask) on ../shared/reference/siammask: its stand-in
weights in the official layout, and what the original computes with them on the tennis frames, two objects,
two runs (chained, and every frame from the first state)."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.core.results import Mask
from common.doors.cvat.request import tracked_shape
from common.core.rle import rle_points
from common.models.folder import load_module
from common.runtime.state_store import from_env
from tests.conftest import ROOT, function_url, http, running

SIAMMASK = ROOT / "functions" / "pytorch" / "foolwood" / "siammask" / "nuclio"
FRAMES = 20
# Tolerances (float32 on a CPU, another OpenCV): centre, size and score to 1e-4 relative, the refinement output
# to 1e-4; mask pixels differ only along the boundary (the paste-back magnifies the 127×127 output up to 10×):
# at most 0.5% of the object's pixels outside a one-pixel band around the original's boundary, 2% in all;
# rotated-box corners (min-area rectangles of those masks) to 5 px.
RELATIVE, REFINE, OFF_BAND, ALL_PIXELS, CORNERS = 1e-4, 1e-4, 0.005, 0.02, 5.0


@pytest.fixture(scope="module")
def reference(reference_dir):
    folder = reference_dir / "siammask"
    spec = importlib.util.spec_from_file_location("siammask_make_weights", folder / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    golden = json.loads((folder / "golden-tennis.json").read_text())
    return make_weights, golden, np.load(folder / "golden-tennis.npz"), folder


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("siammask") / "SiamMask_DAVIS.pth"
    torch.save(reference[0].siammask_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def frames(data_dir, reference) -> list[np.ndarray]:
    """The tennis frames as the original reads them (cv2.imread: BGR)."""
    golden = reference[1]
    files = sorted((data_dir / "video" / "tennis").iterdir())[golden["first_frame"]:golden["frames"]]
    return [cv2.imread(str(f)) for f in files]


@pytest.fixture(scope="module")
def handler(checkpoint):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(checkpoint))
        patch.setenv("TORCH_DEVICE", "cpu")
        return load_module(SIAMMASK).ModelHandler()


def golden_mask(npz, name: str, run: str, frame: int, width: int) -> np.ndarray:
    return np.unpackbits(npz[f"{name}_{run}_mask_{frame:03d}"], axis=1)[:, :width].astype(bool)


def assert_mask_close(ours: np.ndarray, golden: np.ndarray, what: str) -> None:
    kernel = np.ones((3, 3), np.uint8)
    g = golden.astype(np.uint8)
    band = cv2.dilate(g, kernel) != cv2.erode(g, kernel)
    differ = ours != golden
    assert (differ & ~band).sum() <= OFF_BAND * golden.sum(), f"{what}: mask pixels differ off its boundary"
    assert differ.sum() <= ALL_PIXELS * golden.sum(), f"{what}: {differ.sum()} of {golden.sum()} pixels differ"


def assert_close(value, expected, what: str) -> None:
    expected = np.asarray(expected, np.float64)
    assert np.abs(np.asarray(value) - expected).max() <= RELATIVE * max(1.0, np.abs(expected).max()), what


# ---------------------------------------------------------------- the checkpoint


def test_the_reference_weights_load_with_every_key_and_we_save_the_official_layout(reference, tmp_path):
    make_weights, _, _, folder = reference
    module = load_module(SIAMMASK)
    net = load_module(SIAMMASK, "siammask_net").SiamMask()
    official = make_weights.siammask_state_dict()
    layout = json.loads((folder / "state_dict.json").read_text())
    saved = net.state_dict()
    assert [(k, list(v.shape)) for k, v in saved.items()] == [(e["name"], e["shape"]) for e in layout]
    assert sum(v.numel() for v in saved.values() if v.is_floating_point()) == 21_517_764

    variants = {"plain.pth": official, "prefixed.pth": {"module." + k: v for k, v in official.items()},
                "wrapped.pth": {"state_dict": {"module." + k: v for k, v in official.items()}, "epoch": 20}}
    for name, value in variants.items():
        torch.save(value, tmp_path / name)
        module.load_checkpoint(net, tmp_path / name)
        assert all(torch.equal(net.state_dict()[k], official[k]) for k in official), name

    torch.save(net.state_dict(), tmp_path / "ours.pth")  # what we save loads by the same rules, in the same layout
    again = load_module(SIAMMASK, "siammask_net").SiamMask()
    module.load_checkpoint(again, tmp_path / "ours.pth")
    assert list(torch.load(tmp_path / "ours.pth", weights_only=True)) == [e["name"] for e in layout]
    assert all(torch.equal(again.state_dict()[k], official[k]) for k in official)

    logged = []
    torch.save({**official, "extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    module.load_checkpoint(net, tmp_path / "extra.pth", logged.append)
    assert "extra.weight" in logged[0]
    torch.save({k: v for k, v in official.items() if k != "refine_model.post2.bias"}, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match="refine_model.post2.bias"):
        module.load_checkpoint(net, tmp_path / "missing.pth")
    torch.save({**official, "rpn_model.cls.head.3.bias": torch.zeros(12)}, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match=r"rpn_model.cls.head.3.bias is \(12,\)"):
        module.load_checkpoint(net, tmp_path / "shape.pth")


def test_a_pinned_digest_is_enforced(checkpoint, monkeypatch):
    module = load_module(SIAMMASK)
    monkeypatch.setenv("MODEL_PATH", str(checkpoint))
    monkeypatch.setenv("SIAMMASK_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="SIAMMASK_SHA256"):
        module.ModelHandler()


# ---------------------------------------------------------------- tracking, in-process


def test_every_step_of_the_original_in_process(handler, reference, frames):
    """The original's two calls, step by step, for both objects and both runs (refinement output included)."""
    _, golden, npz, _ = reference
    width = golden["image_size"][0]
    for name, obj in golden["objects"].items():
        x1, y1, x2, y2 = obj["init_box"]
        center, size = np.array([(x1 + x2) / 2, (y1 + y2) / 2]), np.array([x2 - x1, y2 - y1], np.float64)
        fill = frames[0].mean(axis=(0, 1))
        assert_close(fill, obj["avg_chans_bgr"], f"{name} average colour")
        template = handler.template(frames[0], center, size, fill)
        for run in ("chained", "from_init"):
            state = (center, size)
            for step in obj[run]:
                f, what = step["frame"], f"{name} {run} frame {step['frame']}"
                if run == "from_init":
                    state = (center, size)
                assert_close(state[0], step["in"]["centre"], what)
                found = handler.track(frames[f], template, fill, *state)
                assert_close(found.center, step["centre"], what)
                assert_close(found.size, step["size"], what)
                assert abs(found.score - step["score"]) <= RELATIVE * step["score"], what
                refined = npz[f"{name}_{run}_refine_{f:03d}"].reshape(found.refined.shape)
                assert np.abs(found.refined - refined).max() <= REFINE, what
                assert_mask_close(found.mask, golden_mask(npz, name, run, f, width), what)
                assert np.abs(found.corners - np.asarray(step["rotated_box"])).max() <= CORNERS, what
                state = (found.center, found.size)


@pytest.mark.parametrize("constant, value", [("WINDOW_INFLUENCE", 0.6), ("PENALTY_K", 0.05), ("CONTEXT", 0.55),
                                             ("SEG_THRESHOLD", 0.3)])
def test_the_comparison_fails_when_one_hyper_parameter_changes(handler, reference, frames, constant, value,
                                                                monkeypatch):
    _, golden, npz, _ = reference
    obj = golden["objects"]["player"]
    x1, y1, x2, y2 = obj["init_box"]
    center, size = np.array([(x1 + x2) / 2, (y1 + y2) / 2]), np.array([x2 - x1, y2 - y1], np.float64)
    fill = frames[0].mean(axis=(0, 1))
    template = handler.template(frames[0], center, size, fill)
    monkeypatch.setitem(type(handler).__init__.__globals__, constant, value)  # the model module's constant
    failures = 0
    for step in obj["from_init"][:3]:
        found = handler.track(frames[step["frame"]], template, fill, center, size)
        try:
            assert_close(found.center, step["centre"], "centre")
            assert_close(found.size, step["size"], "size")
            assert_mask_close(found.mask, golden_mask(npz, "player", "from_init", step["frame"], 854), "mask")
        except AssertionError:
            failures += 1
    assert failures >= 1, "a changed hyper-parameter must be caught"


# ---------------------------------------------------------------- through the harness and the store


def png(bgr: np.ndarray) -> str:
    """A frame as PNG of exactly the pixels the original reads (lossless: no second JPEG decoder involved)."""
    return base64.b64encode(cv2.imencode(".png", bgr)[1]).decode()


def test_every_step_through_two_workers_and_the_store(checkpoint, reference, frames, redis_server, monkeypatch):
    """One request tracks both objects as a rectangle and as a mask; steps alternate between two harnesses
    (two processes); the chained run continues each reply's tokens, the other replays the first ones."""
    _, golden, npz, _ = reference
    width, height = golden["image_size"]
    for name, value in {**redis_server.env(), "MODEL_PATH": str(checkpoint), "TORCH_DEVICE": "cpu"}.items():
        monkeypatch.setenv(name, value)
    store = from_env("pth-foolwood-siammask", print, redis_server.env())
    names = list(golden["objects"])
    shapes = []
    for name in names:
        x1, y1, x2, y2 = golden["objects"][name]["init_box"]
        shapes += [{"type": "rectangle", "points": [x1, y1, x2, y2]},
                   {"type": "mask", "points": rle_points(Mask(np.ones((y2 - y1, x2 - x1), bool), x1, y1))}]
    images = [png(f) for f in frames]
    with running(SIAMMASK, timeout=300) as first, running(SIAMMASK, timeout=300) as second:
        def call(i, body):
            code, _, reply = http("POST", function_url((first, second)[i % 2]), body, timeout=120)
            assert code == 200, reply
            return reply

        start = call(0, {"image": images[0], "shapes": shapes, "states": []})
        assert [s["type"] for s in start["shapes"]] == ["rectangle", "mask"] * len(names)
        for run in ("chained", "from_init"):
            states = start["states"]
            for i in range(1, FRAMES):
                reply = call(i, {"image": images[i], "shapes": [None] * len(shapes), "states": states})
                for n, name in enumerate(names):
                    step = golden["objects"][name][run][i - 1]
                    what = f"{name} {run} frame {i}"
                    _, rect_state = store.get(reply["states"][2 * n].removesuffix(":legacy"))
                    _, mask_state = store.get(reply["states"][2 * n + 1])
                    for state in (rect_state, mask_state):
                        assert_close(state["center"], step["centre"], what)
                        assert_close(state["size"], step["size"], what)
                        assert abs(state["score"] - step["score"]) <= RELATIVE * step["score"], what
                    corners = np.clip(np.asarray(step["rotated_box"]), 0, [width, height])
                    rect, mask = reply["shapes"][2 * n], reply["shapes"][2 * n + 1]
                    assert rect["type"] == "rectangle" and mask["type"] == "mask"
                    assert np.abs(np.asarray(rect["points"]) - [*corners.min(axis=0), *corners.max(axis=0)]).max() \
                        <= CORNERS, what
                    ours = tracked_shape("mask", mask["points"], "mask", (width, height)).region.mask
                    assert_mask_close(ours.full(width, height), golden_mask(npz, name, run, i, width), what)
                if run == "chained":
                    states = reply["states"]


# ---------------------------------------------------------------- the tracker protocol


def test_shape_types_legacy_clients_and_errors(checkpoint, frames, redis_server):
    """Polygons and masks start on their bounding box and are answered in their own type; legacy clients get
    bare point lists; unknown states, frames of another size and shapes without pixels get clear errors."""
    from common.core.errors import FunctionError
    from tests.segmenters import door_of

    first, second = png(frames[0]), png(frames[1])
    polygon = [305, 110, 470, 110, 470, 360, 305, 360]
    with door_of(SIAMMASK, MODEL_PATH=str(checkpoint), TORCH_DEVICE="cpu", **redis_server.env()) as door:
        start = door({"image": first, "shapes": [{"type": "polygon", "points": polygon}], "states": []}).payload
        legacy = door({"image": first, "shapes": [[305, 110, 470, 360]], "states": []}).payload
        assert legacy["shapes"] == [[305, 110, 470, 360]] and legacy["states"][0].endswith(":legacy")
        reply = door({"image": second, "shapes": [None], "states": start["states"]}).payload
        assert reply["shapes"][0]["type"] == "polygon" and len(reply["shapes"][0]["points"]) >= 6
        (points,) = door({"image": second, "shapes": [None], "states": legacy["states"]}).payload["shapes"]
        assert isinstance(points, list) and len(points) == 4
        again = door({"image": second, "shapes": [None], "states": start["states"]}).payload
        assert again["shapes"] == reply["shapes"]  # replaying a token gives the same answer
        small = base64.b64encode(cv2.imencode(".png", frames[1][:100, :120])[1]).decode()
        for body, status, message in [
            ({"image": second, "shapes": [None], "states": ["A" * 22]}, 410, "start the track again"),
            ({"image": small, "shapes": [None], "states": start["states"][:1]}, 400, "120x100"),
            ({"image": first, "shapes": [{"type": "polygon", "points": [-50, -50, -10, -50, -10, -10]}],
              "states": []}, 400, ""),
        ]:
            with pytest.raises(FunctionError) as error:
                door(body)
            assert error.value.status == status and message in str(error.value)

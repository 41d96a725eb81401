"""``tools/fn bench-exactness``: how much the runtime's faster paths change a SAM-family function's masks.

Each variant is the function's own model, built in this process with its settings:

- ``package``: ``PREPROCESS=package``, float32: the package's own frame path, the reference;
- ``device``: ``PREPROCESS=device`` (the default): the frame resized and normalised on the model's device;
- ``device+bfloat16``: and ``TORCH_AUTOCAST=bfloat16`` (SAM 2 functions only).

For an interactor (SAM, SAM 2), random single clicks on one image: per click, the IoU of the best mask with
the reference's and the largest difference of their logits. For the SAM 2 tracker, one object through the
first frames of a video: the same per frame. With ``--random-weights`` the masks are noise, which magnifies
any difference (an upper bound of what real weights show). ``--device`` sets ``TORCH_DEVICE``.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from common.core.image import Image
from common.core.results import Region
from common.doors.cvat.door import cvat_door
from .bench_clicks import frame_bytes, random_checkpoint
from .bench_tracker import grid_boxes, read_frames
from .replies import environment

VARIANTS = {"package": {"PREPROCESS": "package", "TORCH_AUTOCAST": "off"},
            "device": {"PREPROCESS": "device", "TORCH_AUTOCAST": "off"},
            "device+bfloat16": {"PREPROCESS": "device", "TORCH_AUTOCAST": "bfloat16"}}


def click_logits(model, image: Image, clicks: list[list[float]]) -> list[np.ndarray]:
    """The best mask's logits (H×W) for each single click."""
    entry, _ = model.embedding(image)
    found = []
    for point in clicks:
        logits, scores = model.decode(entry, np.array([point], np.float32), np.array([1], np.int32), None, True)
        found.append(logits[int(np.argmax(scores))].float().cpu().numpy())
    return found


def track_logits(model, frames: list[Image], box: list[float]) -> list[np.ndarray]:
    """Per continuing frame, the logits of one object started on the first frame's ``box``."""
    token = model.start(frames[0], Region("rectangle", box=tuple(box)))
    found = []
    for frame in frames[1:]:
        logits, _, token = model.advance(frame, token, "state")
        found.append(logits)
    return found


def compare(reference: list[np.ndarray], other: list[np.ndarray]) -> tuple[list[float], list[float]]:
    ious, deltas = [], []
    for a, b in zip(reference, other):
        ma, mb = a > 0, b > 0
        union = np.logical_or(ma, mb).sum()
        ious.append(float(np.logical_and(ma, mb).sum() / union) if union else 1.0)
        deltas.append(float(np.abs(a - b).max()))
    return ious, deltas


def cmd_bench_exactness(args) -> int:
    folder = Path(args.path).resolve()
    if args.device:
        os.environ["TORCH_DEVICE"] = args.device
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_weights:
            os.environ["MODEL_PATH"] = str(random_checkpoint(folder, {}, Path(scratch)))
        results, what = {}, ""
        for name, values in VARIANTS.items():
            with environment(values):
                door = cvat_door(folder)
                model = door.model
                if values["TORCH_AUTOCAST"] != "off" and not hasattr(model.settings, "autocast"):
                    continue  # SAM: the package runs in float32 only
                if model.kind == "tracker":
                    video = Path(args.video or Path(os.environ.get("TEST_DATA_DIR", "")) / "video" / "vtest.avi")
                    frames = [Image.from_bytes(f) for f in read_frames(video, args.frames + 1)]
                    box = grid_boxes(*frames[0].size, 1, side=args.box)[0]
                    results[name] = track_logits(model, frames, box)
                    what = f"{video.name}, one object on a {args.box}-pixel box, {args.frames} continuing frames"
                else:
                    frame = frame_bytes(Path(args.image), args.size)
                    image = Image.from_bytes(frame)
                    width, height = PILImage.open(io.BytesIO(frame)).size
                    rng = np.random.default_rng(0)
                    clicks = [[float(rng.uniform(0, width)), float(rng.uniform(0, height))] for _ in range(args.clicks)]
                    results[name] = click_logits(model, image, clicks)
                    what = f"{Path(args.image).name} at {width}x{height}, {args.clicks} single clicks"
                device = getattr(model, "device", "cpu")
                del door, model
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; device {device}; "
          f"{folder.parent.name}; {what}{'; random weights' if args.random_weights else ''}")
    for name, found in results.items():
        if name == "package":
            continue
        ious, deltas = compare(results["package"], found)
        print(f"{name:16} vs package: mask IoU median {statistics.median(ious):.5f}, lowest {min(ious):.5f}; "
              f"largest logit difference median {statistics.median(deltas):.4f}, largest {max(deltas):.4f}")
    return 0

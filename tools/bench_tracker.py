"""``tools/fn bench-tracker``: a tracker's per-frame latency with its state in Redis vs in process memory,
for each object count asked (``--objects 1,10``), next to the bare package call where there is one, and the
bytes of state per object (in the request and reply, and in Redis).

The handler runs in this process (no HTTP), on the first frames of a video, with N objects placed on a grid
and continued together, one request per frame as CVAT sends them. Redis is a private redis-server on a free
loopback port. ``--device`` picks the PyTorch device (``TORCH_DEVICE``). For SAM 2 the bare call is the
package's own ``SAM2VideoPredictor.propagate_in_video`` on the same frames held in memory (its per-frame
time: image encoder plus track step, objects one after another as the package runs them), with the same
checkpoint and config. Run it on an idle machine; figures go in issue notes, not in tests.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from common.runtime import arrays
from common.runtime.state_store import KEY_PREFIX, MemoryBackend, StateStore
from common.doors.cvat.door import cvat_door
from .bench_clicks import random_checkpoint
from .redis_server import RedisServer


def read_frames(video: Path, count: int) -> list[bytes]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    if not frames:
        raise SystemExit(f"cannot read frames from {video}")
    return frames


def grid_boxes(width: int, height: int, count: int, side: int = 64) -> list[list[float]]:
    columns = max(1, int(count ** 0.5 + 0.999))
    boxes = []
    for i in range(count):
        x = (i % columns + 0.5) * width / columns - side / 2
        y = (i // columns + 0.5) * height / ((count + columns - 1) // columns) - side / 2
        boxes.append([max(0.0, x), max(0.0, y), min(width, x + side), min(height, y + side)])
    return boxes


def run(door, frames: list[bytes], objects: int) -> tuple[list[float], int]:
    """Per-frame seconds of the continuing requests, and the size of the last reply's ``states`` as JSON."""
    images = [base64.b64encode(f).decode() for f in frames]
    first = door.parse({"image": images[0], "shapes": [], "states": []}).image
    boxes = grid_boxes(*first.size, objects)
    states = door({"image": images[0], "shapes": boxes, "states": []}).payload["states"]
    samples = []
    for image in images[1:]:
        started = time.perf_counter()
        states = door({"image": image, "shapes": [None] * objects, "states": states}).payload["states"]
        samples.append(time.perf_counter() - started)
    return samples, len(json.dumps(states))


def sam2_package(door, frames: list[bytes], objects: int, scratch: Path) -> list[float]:
    """Per-frame seconds of sam2's own video predictor tracking ``objects`` boxes through ``frames`` (all
    frames loaded and normalised before the clock starts, as ``init_state`` does)."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from common.models import sam2_models

    settings = door.model.settings
    config, checkpoint = sam2_models.checkpoint(settings.model_size)
    predictor = build_sam2_video_predictor(config, str(checkpoint), device=str(door.model.device),
                                           hydra_overrides_extra=settings.overrides.split())
    folder = scratch / "frames"
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(frames):
        (folder / f"{i:05d}.jpg").write_bytes(frame)
    with torch.inference_mode(), settings.autocasting(door.model.device):
        state = predictor.init_state(str(folder))
        for k, box in enumerate(grid_boxes(state["video_width"], state["video_height"], objects)):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k, box=box)
        samples, started = [], None
        for frame_idx, _, masks in predictor.propagate_in_video(state):
            masks.cpu()  # the predictor hands back device tensors: wait for them
            if started is not None:
                samples.append(time.perf_counter() - started)
            started = time.perf_counter()
    return samples


PACKAGE_CALLS = {"pth-facebookresearch-sam2-tracker": ("sam2 SAM2VideoPredictor.propagate_in_video", sam2_package)}


def stored_sizes(server) -> dict[str, list[int]]:
    client = server.client()
    kinds: dict[str, list[int]] = {}
    for key in client.scan_iter(f"{KEY_PREFIX}*"):
        value = client.get(key)
        kinds.setdefault(str(arrays.unpack(value)[1].get("kind")), []).append(len(value))
    return kinds


def line(label: str, samples: list[float], objects: int, base: float | None = None) -> str:
    ms = [s * 1000 for s in samples]
    ratio = "" if base is None else f"  = {statistics.median(ms) / base:.2f}x the 1-object package call"
    return (f"  {label:42} median {statistics.median(ms):8.2f} ms per frame ({statistics.median(ms) / objects:7.2f} "
            f"ms per object){ratio}")


def cmd_bench_tracker(args) -> int:
    folder = Path(args.path).resolve()
    video = Path(args.video or Path(os.environ.get("TEST_DATA_DIR", "")) / "video" / "vtest.avi")
    frames = read_frames(video, args.frames + 1)
    counts = [int(v) for v in str(args.objects).split(",")]
    if args.device:
        os.environ["TORCH_DEVICE"] = args.device
    server = RedisServer().start()
    scratch = tempfile.TemporaryDirectory()
    try:
        for name, value in server.env().items():
            os.environ[name] = value
        if args.random_weights:  # SAM 2, SiamMask: timings do not depend on the weights' values
            os.environ["MODEL_PATH"] = str(random_checkpoint(folder, {}, Path(scratch.name)))
        door = cvat_door(folder)
        device = getattr(door.model, "device", "cpu")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; device {device}; "
              f"{video.name}, {len(frames) - 1} continuing frames; objects per request: {args.objects}"
              f"{'; random weights' if args.random_weights else ''}"
              f"{'; SAM2_OVERRIDES=' + os.environ['SAM2_OVERRIDES'] if os.environ.get('SAM2_OVERRIDES') else ''}")
        package = PACKAGE_CALLS.get(door.model.name)
        redis_store = door.model.store
        base = None
        for objects in counts:
            print(f"{objects} object{'s' * (objects > 1)}:")
            if package is not None:
                samples = package[1](door, frames, objects, Path(scratch.name))
                if objects == 1:
                    base = statistics.median(samples) * 1000
                print(line(package[0], samples, objects, base))
            server.client().flushall()
            door.model.store = redis_store
            redis_samples, request_bytes = run(door, frames, objects)
            kinds = stored_sizes(server)
            door.model.store = StateStore(MemoryBackend(), "bench", redis_store.ttl)
            memory_samples, _ = run(door, frames, objects)
            print(line("ours, state in Redis", redis_samples, objects, base))
            print(line("ours, state in process memory", memory_samples, objects, base))
        door.model.store = redis_store
    finally:
        server.stop()
        scratch.cleanup()
    stored = sum(sum(sizes) for sizes in kinds.values())
    steps = len(frames)  # the first frame's state, then one per continuing frame
    print(f"state in the request/reply: {request_bytes / objects:.0f} bytes per object (JSON list of tokens)")
    print(f"state in Redis ({objects} objects): {stored} bytes in {sum(map(len, kinds.values()))} keys after {steps} "
          f"frames = {stored / objects / steps:.0f} bytes per object per frame on average (values only, without "
          "Redis' own per-key overhead)")
    for kind, sizes in sorted(kinds.items()):
        print(f"  {kind:20} {len(sizes):5} values, median {statistics.median(sizes):9.0f} bytes, "
              f"largest {max(sizes)} bytes")
    return 0

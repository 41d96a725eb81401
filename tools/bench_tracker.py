"""``tools/fn bench-tracker``: a tracker's per-frame latency with its state in Redis vs in process memory,
and the bytes of state per object (in the request and reply, and in Redis).

The handler runs in this process (no HTTP), on the first frames of a video, with N objects placed on a grid
and continued together, one request per frame as CVAT sends them. Redis is a private redis-server on a free
loopback port. Run it on an idle machine; figures go in issue notes, not in tests.
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


def cmd_bench_tracker(args) -> int:
    folder = Path(args.path).resolve()
    video = Path(args.video or Path(os.environ.get("TEST_DATA_DIR", "")) / "video" / "vtest.avi")
    frames = read_frames(video, args.frames + 1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; {video.name}, "
          f"{len(frames) - 1} continuing frames, {args.objects} objects per request"
          f"{'; random weights' if args.random_weights else ''}")
    server = RedisServer().start()
    scratch = tempfile.TemporaryDirectory()
    try:
        for name, value in server.env().items():
            os.environ[name] = value
        if args.random_weights:  # SAM 2, SiamMask: timings do not depend on the weights' values
            os.environ["MODEL_PATH"] = str(random_checkpoint(folder, {}, Path(scratch.name)))
        door = cvat_door(folder)
        redis_samples, request_bytes = run(door, frames, args.objects)
        client = server.client()
        keys = list(client.scan_iter(f"{KEY_PREFIX}*"))
        kinds: dict[str, list[int]] = {}
        for key in keys:
            value = client.get(key)
            kinds.setdefault(str(arrays.unpack(value)[1].get("kind")), []).append(len(value))
        stored = sum(sum(sizes) for sizes in kinds.values())
        steps = len(frames)  # the first frame's state, then one per continuing frame
        door.model.store = StateStore(MemoryBackend(), "bench", door.model.store.ttl)
        memory_samples, _ = run(door, frames, args.objects)
    finally:
        server.stop()
        scratch.cleanup()
    for label, samples in (("redis", redis_samples), ("in-process", memory_samples)):
        ms = [s * 1000 for s in samples]
        print(f"{label:10} per frame: median {statistics.median(ms):7.2f} ms, mean {statistics.mean(ms):7.2f} ms "
              f"({statistics.median(ms) / args.objects:.2f} ms per object)")
    print(f"state in the request/reply: {request_bytes / args.objects:.0f} bytes per object (JSON list of tokens)")
    print(f"state in Redis: {stored} bytes in {len(keys)} keys after {steps} frames = "
          f"{stored / args.objects / steps:.0f} bytes per object per frame on average (values only, "
          "without Redis' own per-key overhead)")
    for kind, sizes in sorted(kinds.items()):
        print(f"  {kind:20} {len(sizes):5} values, median {statistics.median(sizes):9.0f} bytes, "
              f"largest {max(sizes)} bytes")
    return 0

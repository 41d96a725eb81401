"""``tools/fn bench-clicks``: what an annotator feels with an interactive segmenter.

Through the local harness over HTTP (one worker, so warm clicks find that worker's cache), on one image
scaled to ``--size``:

- cold click: the first click on an image the function has not seen (image decode + encoder + decoder);
- warm click: further clicks on the same image (prompt encoder + mask decoder only);
- reply size of one click in the compact form (CVAT mask RLE) and the full-frame ``{"mask": ...}`` form.

``--random-weights`` builds a randomly initialised checkpoint of the architecture the function's
MODEL_TYPE/MODEL_SIZE names (from the environment or the yaml), for machines without the real weights:
the timings are the same. Mask sizes with random weights are not representative (noisy masks); measure
reply sizes with real weights or with a weight-free interactor such as opencv-grabcut.
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from common.models.folder import load_module
from .config import find_configs
from .harness import serving


def frame_bytes(image: Path, size: str | None) -> bytes:
    picture = Image.open(image).convert("RGB")
    if size:
        width, height = (int(v) for v in size.lower().split("x"))
        picture = picture.resize((width, height), Image.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def random_checkpoint(folder: Path, env: dict[str, str], target: Path) -> Path:
    from . import random_weights

    if (folder / "siammask_net.py").is_file():  # SiamMask
        return random_weights.siammask_checkpoint(target / "random_SiamMask_DAVIS.pth")
    module = load_module(folder)
    if hasattr(module, "sam2_models"):  # SAM 2
        size = os.environ.get("MODEL_SIZE") or env.get("MODEL_SIZE", "tiny")
        return random_weights.sam2_checkpoint(target / f"random_{size}.pt", module.sam2_models.SIZES[size][0])
    model_type = os.environ.get("MODEL_TYPE") or env.get("MODEL_TYPE", "vit_b")
    return random_weights.sam_checkpoint(target / f"random_{model_type}.pth", model_type)


def post(url: str, body: dict) -> tuple[float, int, dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        payload = response.read()
        elapsed = time.perf_counter() - started
        return elapsed, len(payload), dict(response.headers)


def cmd_bench_clicks(args) -> int:
    folder = Path(args.path).resolve()
    (config,) = find_configs([folder], gpu=args.gpu)
    config.http_trigger["numWorkers"] = 1
    frame = frame_bytes(Path(args.image), args.size)
    width, height = Image.open(io.BytesIO(frame)).size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_weights:
            os.environ["MODEL_PATH"] = str(random_checkpoint(folder, config.env, Path(scratch)))
        with serving([config], timeout=900) as harness:
            runtime = next(iter(harness.functions.values()))
            url = f"http://127.0.0.1:{runtime.http_port}/"
            cold, warm = [], []
            for round_ in range(args.rounds + 1):  # round 0 warms the process up and is not counted
                image = base64.b64encode(frame + bytes(round_ + 1)).decode()  # new bytes: a cache miss
                for i in range(args.clicks + 1):
                    point = [float(rng.uniform(0, width)), float(rng.uniform(0, height))]
                    elapsed, _, headers = post(url, {"image": image, "pos_points": [point], "neg_points": []})
                    if round_:
                        (warm if i else cold).append(elapsed)
                        if "X-Embedding-Cache" in headers:  # functions with an embedding cache
                            assert (headers["X-Embedding-Cache"] == "hit") == bool(i), headers
            point = [[width / 2, height / 2]]
            sizes = {form: post(url, {"image": image, "pos_points": point, "neg_points": [], "full_mask": full})[1]
                     for form, full in (("compact", False), ("full_mask", True))}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; {config.name} "
          f"({config.path.name}); frame {width}x{height}, {len(frame)} bytes JPEG; "
          f"{args.rounds} images x {args.clicks} warm clicks{'; random weights' if args.random_weights else ''}")
    for name, samples in (("cold click", cold), ("warm click", warm)):
        ms = [s * 1000 for s in samples]
        print(f"{name:11} median {statistics.median(ms):8.1f} ms  min {min(ms):8.1f} ms  max {max(ms):8.1f} ms")
    for form, size in sizes.items():
        print(f"reply {form:9} {size:>12,} bytes")
    return 0

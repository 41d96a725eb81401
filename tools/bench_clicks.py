"""``tools/fn bench-clicks``: what an annotator feels with an interactive segmenter.

Through the local harness over HTTP (one worker, so warm clicks find that worker's cache), on one image
scaled to ``--size``:

- cold click: the first click on an image the function has not seen (image decode + encoder + decoder);
- warm click: further clicks on the same image (prompt encoder + mask decoder only);
- reply size of one click in the compact form (CVAT mask RLE) and the full-frame ``{"mask": ...}`` form;
- next to them, for SAM and SAM 2, the bare package calls on the same frame and clicks, in this process
  after the harness has stopped: the predictor's ``set_image`` (what a cold click cannot avoid) and
  ``predict`` (what a warm click cannot avoid), built by the package from the same checkpoint and config.

``--device`` picks the PyTorch device (``TORCH_DEVICE``) for both.

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


def sam_predictor(folder: Path, env: dict[str, str], device: str):
    """The segment-anything package's own predictor of the function's checkpoint."""
    from segment_anything import SamPredictor, sam_model_registry

    from common.runtime import weights

    module = load_module(folder)
    model_type = os.environ.get("MODEL_TYPE") or env.get("MODEL_TYPE", "vit_b")
    sam = sam_model_registry[model_type](checkpoint=str(weights.resolve(module.CHECKPOINTS[model_type])))
    return SamPredictor(sam.to(device).eval())


def sam2_predictor(folder: Path, env: dict[str, str], device: str):
    """The sam2 package's own image predictor of the function's checkpoint and config."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from common.models import sam2_models

    settings = sam2_models.Sam2Settings.from_env({**env, **os.environ})
    config, checkpoint = sam2_models.checkpoint(settings.model_size)
    return SAM2ImagePredictor(build_sam2(config, str(checkpoint), device=device,
                                         hydra_overrides_extra=settings.overrides.split()))


PREDICTORS = {"pth-facebookresearch-sam": ("SamPredictor", sam_predictor),
              "pth-facebookresearch-sam2": ("SAM2ImagePredictor", sam2_predictor)}


def package_clicks(name: str, folder: Path, env: dict[str, str], frame: bytes, clicks: list[list[list[float]]],
                   device: str) -> tuple[str, list[float], list[float]]:
    """The package predictor's name, and its set_image and predict seconds on ``frame`` and the same clicks."""
    import torch

    label, build = PREDICTORS[name]
    predictor = build(folder, env, device)
    rgb = np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))  # decoded before the clock starts
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    cold, warm = [], []
    with torch.inference_mode():
        for round_, points in enumerate(clicks):
            started = time.perf_counter()
            predictor.set_image(rgb)
            sync()
            if round_:
                cold.append(time.perf_counter() - started)
            for point in points:
                started = time.perf_counter()
                predictor.predict(point_coords=np.array([point], np.float32), point_labels=np.array([1]),
                                  multimask_output=True)
                if round_:
                    warm.append(time.perf_counter() - started)
    return label, cold, warm


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
    if args.device:
        os.environ["TORCH_DEVICE"] = args.device
    clicks = []  # per round, the warm clicks' points (the cold click's is the first)
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_weights:
            os.environ["MODEL_PATH"] = str(random_checkpoint(folder, config.env, Path(scratch)))
        with serving([config], timeout=900) as harness:
            runtime = next(iter(harness.functions.values()))
            url = f"http://127.0.0.1:{runtime.http_port}/"
            cold, warm = [], []
            for round_ in range(args.rounds + 1):  # round 0 warms the process up and is not counted
                image = base64.b64encode(frame + bytes(round_ + 1)).decode()  # new bytes: a cache miss
                clicks.append([])
                for i in range(args.clicks + 1):
                    point = [float(rng.uniform(0, width)), float(rng.uniform(0, height))]
                    clicks[-1].append(point)
                    elapsed, _, headers = post(url, {"image": image, "pos_points": [point], "neg_points": []})
                    if round_:
                        (warm if i else cold).append(elapsed)
                        if "X-Embedding-Cache" in headers:  # functions with an embedding cache
                            assert (headers["X-Embedding-Cache"] == "hit") == bool(i), headers
            point = [[width / 2, height / 2]]
            sizes = {form: post(url, {"image": image, "pos_points": point, "neg_points": [], "full_mask": full})[1]
                     for form, full in (("compact", False), ("full_mask", True))}
        package = None
        if config.name in PREDICTORS:
            import torch

            device = os.environ.get("TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
            package = package_clicks(config.name, folder, config.env, frame, clicks, device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; {config.name} "
          f"({config.path.name}); frame {width}x{height}, {len(frame)} bytes JPEG; "
          f"{args.rounds} images x {args.clicks} warm clicks{'; random weights' if args.random_weights else ''}")
    figures = [("cold click", cold), ("warm click", warm)]
    if package is not None:
        figures += [(f"{package[0]}.set_image", package[1]), (f"{package[0]}.predict", package[2])]
    for name, samples in figures:
        ms = [s * 1000 for s in samples]
        print(f"{name:30} median {statistics.median(ms):8.1f} ms  min {min(ms):8.1f} ms  max {max(ms):8.1f} ms")
    if package is not None:
        medians = [statistics.median(samples) * 1000 for _, samples in figures]
        print(f"cold click / set_image = {medians[0] / medians[2]:.2f}; "
              f"warm click - predict = {medians[1] - medians[3]:+.1f} ms (over HTTP, with the frame's base64 sent)")
    for form, size in sizes.items():
        print(f"reply {form:9} {size:>12,} bytes")
    return 0

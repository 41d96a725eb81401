"""``tools/fn bench``: where the time of one request goes, per backend.

For one function folder and one image it measures, with N sequential requests each:

- ``http``: the whole request through the harness over HTTP (what CVAT sees, minus CVAT itself);
- ``handler``: the handler in-process (parse + decode + pre-processing + inference + post-processing);
- ``backend``: the bare backend call on an input of the model's shape (ONNX functions with a ``model``),
  alternated call by call with the handler's, so that both see the same machine, and their ratio.

``--label-studio`` measures instead Label Studio's ``POST /predict`` (a task whose image a local file server
stands in for Label Studio's, fetched by the function as from ``LABEL_STUDIO_URL``) alternated with CVAT's call
on the same image over HTTP, in one harness, and their ratio.

``--device`` sets ``TORCH_DEVICE`` for PyTorch functions. Run it on an idle machine; figures go in issue
notes, not in tests.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from common.doors.cvat.door import cvat_door

from .config import find_configs


def summarise(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):7.2f} ms  p90 {p90:7.2f} ms  mean {statistics.mean(ms):7.2f} ms"


def timed(call, n: int, warmup: int = 3) -> list[float]:
    return timed_together({"call": call}, n, warmup)["call"]


def timed_together(calls: dict, n: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of each call over ``n`` rounds, the calls alternating within each round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + n):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - started)
    return samples


def bench_http(folder: Path, body: bytes, n: int) -> list[float]:
    import urllib.request

    from .harness import serving

    with serving(find_configs([folder])) as harness:
        runtime = next(iter(harness.functions.values()))
        url = f"http://127.0.0.1:{runtime.http_port}/"

        def call():
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()

        return timed(call, n)


def bench_label_studio(folder: Path, image: Path, body: bytes, n: int) -> dict[str, list[float]]:
    """CVAT's call and Label Studio's /predict on the same image, alternated, over HTTP."""
    import urllib.request

    from common.core.labels import Labels
    from common.doors.label_studio import labeling_config

    from .harness import serving, serving_files

    config = labeling_config(Labels.from_function_yaml(folder / "function.yaml"))
    task = {"tasks": [{"id": 1, "data": {"image": f"/{image.name}"}}], "label_config": config}
    predict = json.dumps(task).encode()
    with serving_files(image.parent) as files:
        os.environ["LABEL_STUDIO_URL"] = files  # read by the functions the harness starts
        with serving(find_configs([folder])) as harness:
            url = f"http://127.0.0.1:{next(iter(harness.functions.values())).http_port}/"

            def post(path: str, data: bytes):
                request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.read()

            assert json.loads(post("predict", predict))["results"][0] != [], "Label Studio's call failed"
            return timed_together({"cvat": lambda: post("", body), "label-studio": lambda: post("predict", predict)}, n)


def cmd_bench(args) -> int:
    folder = Path(args.path).resolve()
    image = Path(args.image).read_bytes()
    body_dict = {"image": base64.b64encode(image).decode(), **(json.loads(args.body) if args.body else {})}
    body = json.dumps(body_dict).encode()
    if args.device:
        os.environ["TORCH_DEVICE"] = args.device
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"image {args.image} ({len(image)} bytes); {args.n} requests each")
    if args.label_studio:
        results = bench_label_studio(folder, Path(args.image).resolve(), body, args.n)
        for stage, samples in results.items():
            print(f"{stage:13} {summarise(samples)}")
        ratio = statistics.median(results["label-studio"]) / statistics.median(results["cvat"])
        print(f"Label Studio /predict / CVAT call = {ratio:.2f}")
        return 0
    (config,) = find_configs([folder])
    onnx = "INFERENCE_BACKEND" in config.env  # ONNX functions pick a backend; others have one way to run
    for backend in args.backends.split(",") if onnx else ["default"]:
        if onnx:
            os.environ["INFERENCE_BACKEND"] = backend
        door = cvat_door(folder)
        results = {"http": bench_http(folder, body, args.n)}
        calls = {"handler": lambda: door(json.loads(body))}
        model = getattr(door.model, "model", None)
        if model is not None and hasattr(model, "input_shapes"):
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in model.input_shapes[0]]
            x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
            calls["backend"] = lambda: model({model.input_names[0]: x})
        results.update(timed_together(calls, args.n))
        for stage, samples in results.items():
            print(f"{backend:12} {stage:8} {summarise(samples)}")
        if "backend" in results:
            ratio = statistics.median(results["handler"]) / statistics.median(results["backend"])
            print(f"{backend:12} handler / bare backend call = {ratio:.2f}")
    return 0

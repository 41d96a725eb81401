"""``tools/fn replies``: record every function's replies on fixed requests, and compare two recordings.

A refactor must not change CVAT's wire format. Record before (``tools/fn replies record before.json``), change
the code, record again, and ``tools/fn replies compare before.json after.json`` lists every case whose status,
JSON content type, ``X-*`` headers or body bytes differ. Requests go over real HTTP through the harness, one
function at a time, each kind in each of its forms (detector thresholds, interactor point / box / negative
clicks / full mask / blob / precompute, tracker starts and continuations in the legacy and the declared form,
ReID, and a few malformed requests for the error bodies).

Weights: the offline ones from ``MODELS_DIR``; models without them (SAM, SAM 2, torchvision's) get seeded
random weights of their real architecture (``tools/random_weights.py``), so a recording is the same on every
run of one machine. Tracker state tokens are random; they are replaced by ``<state N>`` in order of first
appearance before bodies are compared. Bodies over 64 KB are kept as their length and SHA-256.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

from .config import ROOT, find_configs

FUNCTIONS = ROOT / "functions"
SMALL_BODY = 64 * 1024
KEPT_HEADERS = ("content-type",)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(port: int, body: dict) -> tuple[int, dict, bytes]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- the cases

def detector_cases(image: str) -> Iterator[tuple[str, dict]]:
    yield "default threshold", {"image": image}
    yield "threshold 0.3", {"image": image, "threshold": 0.3}
    yield "threshold 0.9", {"image": image, "threshold": 0.9}
    yield "threshold 0.05", {"image": image, "threshold": 0.05}  # random-weight models score low
    yield "no image", {"threshold": 0.5}
    yield "threshold out of range", {"image": image, "threshold": 2}


def interactor_cases(image: str) -> Iterator[tuple[str, dict]]:
    yield "one click", {"image": image, "pos_points": [[380, 300]], "neg_points": []}
    yield "clicks", {"image": image, "pos_points": [[380, 300], [200, 350]], "neg_points": [[700, 80]]}
    yield "box", {"image": image, "pos_points": [], "neg_points": [], "obj_bbox": [[120, 200], [330, 540]]}
    yield "box and click", {"image": image, "pos_points": [[220, 400]], "obj_bbox": [[120, 200], [330, 540]]}
    yield "full mask", {"image": image, "pos_points": [[380, 300]], "full_mask": True}
    yield "precompute", {"image": image}
    yield "blob", {"image": image, "blob": True}
    yield "point outside", {"image": image, "pos_points": [[5000, 10]]}


def tracker_cases(frames: list[str], shape_types: tuple[str, ...]) -> Iterator[tuple[str, dict | Callable]]:
    box = [280.0, 160.0, 420.0, 330.0]
    starts = [("legacy", box), ("rectangle", {"type": "rectangle", "points": box})]
    if "polygon" in shape_types:
        starts.append(("polygon", {"type": "polygon", "points": [290, 170, 410, 180, 400, 320, 300, 310]}))
    if "mask" in shape_types:
        # a 20×10 block of ones at (300, 200) in CVAT's RLE + inclusive bbox
        starts.append(("mask", {"type": "mask", "points": [0, 200, 300, 200, 319, 209]}))
    for name, shape in starts:
        yield f"{name}: start", {"image": frames[0], "shapes": [shape], "states": []}
        for i, frame in enumerate(frames[1:], 1):
            yield f"{name}: frame {i}", lambda previous, frame=frame: {"image": frame, "shapes": [None],
                                                                      "states": previous["states"]}
    yield "two objects: start", {"image": frames[0], "shapes": [box, [100, 100, 180, 220]], "states": []}
    yield "two objects: frame 1", lambda previous: {"image": frames[1], "states": previous["states"],
                                                    "shapes": [None, None]}
    yield "unknown state", {"image": frames[0], "shapes": [None], "states": ["A" * 22]}


def reid_cases(image0: str, image1: str) -> Iterator[tuple[str, dict]]:
    boxes0 = [{"type": "rectangle", "points": [120, 200, 330, 540], "label_id": 1},
              {"type": "rectangle", "points": [460, 70, 690, 170], "label_id": 2}]
    boxes1 = [{"type": "rectangle", "points": [455, 75, 690, 175], "label_id": 2},
              {"type": "rectangle", "points": [125, 205, 335, 545], "label_id": 1}]
    yield "two pairs", {"image0": image0, "image1": image1, "boxes0": boxes0, "boxes1": boxes1}
    yield "tight threshold", {"image0": image0, "image1": image1, "boxes0": boxes0, "boxes1": boxes1,
                              "threshold": 0.01, "max_distance": 20}
    yield "no boxes1", {"image0": image0, "image1": image1, "boxes0": boxes0, "boxes1": []}


# ---------------------------------------------------------------- recording

class Tokens:
    """Random state tokens replaced by ``<state N>`` in order of first appearance."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def normalise(self, body: bytes) -> bytes:
        try:
            reply = json.loads(body)
        except ValueError:
            return body
        states = reply.get("states") if isinstance(reply, dict) else None
        for token in states or []:
            if isinstance(token, str) and token not in self.names:
                self.names[token] = f"<state {len(self.names)}>"
        for token, name in self.names.items():
            body = body.replace(json.dumps(token).encode(), json.dumps(name).encode())
        return body


def entry(status: int, headers: dict, body: bytes, tokens: Tokens) -> dict:
    body = tokens.normalise(body)
    kept = {k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS or k.lower().startswith("x-")}
    record = {"status": status, "headers": dict(sorted(kept.items()))}
    if len(body) <= SMALL_BODY:
        record["body"] = body.decode("utf-8", "replace")
    else:
        record["body_bytes"], record["body_sha256"] = len(body), hashlib.sha256(body).hexdigest()
    return record


def cases_for(config, data: Path) -> Iterator[tuple[str, dict | Callable]]:
    images = data / "images"
    name = config.name
    if config.kind == "detector":
        image = {"onnx-paddlepaddle-ppocr": "page.png", "opencv-shiqiyu-yunet": "grace_hopper.png"}.get(name, "dog.jpg")
        yield from detector_cases(b64(images / image))
        if name == "pth-torchvision-keypointrcnn":
            yield from (("person: " + n, c) for n, c in detector_cases(b64(images / "person.jpg")))
    elif config.kind == "interactor":
        yield from interactor_cases(b64(images / "dog.jpg"))
    elif config.kind == "tracker":
        frames = [b64(data / "video" / "tennis" / f"{i:05d}.jpg") for i in range(4)]
        types = tuple(t.strip() for t in str(config.annotations.get("supported_shape_types") or "").split(","))
        yield from tracker_cases(frames, types)
    else:
        yield from reid_cases(b64(images / "dog.jpg"), b64(images / "dog.jpg"))


def random_weights(folder: Path, scratch: Path) -> dict[str, str]:
    """Environment for a function whose weights are not offline: seeded random weights of its architecture."""
    from . import random_weights as rw

    rel = folder.relative_to(FUNCTIONS).as_posix()
    if rel.startswith("pytorch/facebookresearch/sam/"):
        return {"MODEL_PATH": str(rw.sam_checkpoint(scratch / "sam.pth"))}
    if rel.startswith("pytorch/facebookresearch/sam2"):
        path = scratch / "sam2.pt"
        if not path.exists():
            rw.sam2_checkpoint(path, overrides=rw.SMALL_SAM2_OVERRIDES)
        overrides = rw.SMALL_SAM2_OVERRIDES + (["++model.image_size=512"] if "tracker" in rel else [])
        return {"MODEL_PATH": str(path), "SAM2_OVERRIDES": " ".join(overrides)}
    if rel.startswith("pytorch/google/owlv2/"):
        path = scratch / "owlv2"
        return {"MODEL_PATH": str(path if path.exists() else rw.owlv2_folder(path))}
    if rel.startswith("pytorch/facebookresearch/sam3/"):
        path = scratch / "sam3"
        return {"MODEL_PATH": str(path if path.exists() else rw.sam3_folder(path))}
    if rel.startswith("pytorch/foolwood/siammask/"):
        return {"MODEL_PATH": str(rw.siammask_checkpoint(scratch / "siammask.pth"))}
    if rel.startswith("pytorch/torchvision/reid/"):
        import torch
        from torchvision.models import resnet50

        torch.manual_seed(0)
        torch.save(resnet50(weights=None).state_dict(), scratch / "resnet50.pth")
        return {"MODEL_PATH": str(scratch / "resnet50.pth")}
    if rel.startswith("pytorch/torchvision/"):
        from torchvision.models import detection

        model = rel.split("/")[2]
        builder = {"fasterrcnn": detection.fasterrcnn_resnet50_fpn_v2, "retinanet": detection.retinanet_resnet50_fpn_v2,
                   "maskrcnn": detection.maskrcnn_resnet50_fpn_v2, "keypointrcnn": detection.keypointrcnn_resnet50_fpn}
        arguments = {"num_classes": 2, "num_keypoints": 17} if model == "keypointrcnn" else {}
        path = rw.torchvision_checkpoint(scratch / f"{model}.pth", builder[model], **arguments)
        # small inputs keep random-weight R-CNNs quick; their many random detections still cover every branch
        return {"MODEL_PATH": str(path), "MIN_SIZE": "320", "MAX_SIZE": "480", "MIN_SCORE": "0.0"}
    return {}


@contextlib.contextmanager
def environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def record(out: Path, paths: list[str], data: Path) -> dict:
    from .harness import serving
    from .redis_server import RedisServer

    configs = find_configs(paths or [str(FUNCTIONS)])
    recording: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        for config in configs:
            env = {**redis.env(), **random_weights(config.directory, Path(scratch))}
            with environment(env), serving([config], timeout=600) as harness:
                runtime = harness.functions[config.name]
                tokens, previous, cases = Tokens(), {}, {}
                for case, body in cases_for(config, data):
                    body = body(previous) if callable(body) else body
                    status, headers, reply = post(runtime.http_port, body)
                    with contextlib.suppress(ValueError):
                        previous = json.loads(reply)
                    cases[case] = entry(status, headers, reply, tokens)
                recording[config.name] = cases
                print(f"{config.name}: {len(cases)} cases", file=sys.stderr, flush=True)
    out.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
    return recording


def compare(before: dict, after: dict) -> list[str]:
    """One line per case that differs (or is in one recording only)."""
    lines = []
    for function in sorted(set(before) | set(after)):
        a, b = before.get(function, {}), after.get(function, {})
        for case in sorted(set(a) | set(b)):
            if a.get(case) != b.get(case):
                lines.append(f"{function} / {case}:\n  before {json.dumps(a.get(case))[:600]}\n"
                             f"  after  {json.dumps(b.get(case))[:600]}")
    return lines


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tools/fn replies", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record replies into a JSON file")
    rec.add_argument("out", type=Path)
    rec.add_argument("paths", nargs="*", help="function folders (default: all)")
    cmp_ = sub.add_parser("compare", help="list the cases two recordings differ in")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        data = Path(os.environ.get("TEST_DATA_DIR") or "")
        if not (data / "images" / "dog.jpg").is_file():
            print("set TEST_DATA_DIR to the folder of test images and video (../shared/data)", file=sys.stderr)
            return 2
        record(args.out, args.paths, data)
        return 0
    differences = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    print("\n".join(differences) or "the recordings are the same")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

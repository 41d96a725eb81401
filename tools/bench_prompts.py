"""``tools/fn bench-prompts FOLDER``: a text-prompted detector's latency for 1, 10 and 50 labels per image,
next to the bare package calls of the same model in the same process.

- ``function``: the request through the CVAT door in-process (decode, prompts, model, post-processing, reply);
- ``package``: what a user of ``transformers`` writes for the same labels: OWLv2's processor, model and
  post-processing with every phrase at once; SAM 3's ``processor(images=..., text=phrase)`` and model per
  phrase (the image encoded again for each), and, as ``package, image once``, ``get_vision_features`` once
  and the model per phrase on those features (what the function does).

``--random-weights`` builds the real architectures with random weights (timings do not depend on them).
"""

from __future__ import annotations

import base64
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from common.core import vocabulary
from common.core.image import Image
from common.doors.cvat.door import cvat_door

from .bench import timed
from .random_weights import owlv2_folder, sam3_folder

NAMES = ["person", "car", "dog", "cat", "bicycle", "bus", "truck", "bird", "horse", "boat", "chair", "bottle",
         "cup", "laptop", "book", "clock", "tree", "house", "road", "sky", "shoe", "hat", "bag", "phone", "window",
         "door", "table", "lamp", "plant", "flower", "fence", "sign", "pole", "bench", "kite", "ball", "umbrella",
         "train", "plane", "motorcycle", "cow", "sheep", "elephant", "bear", "zebra", "giraffe", "pizza", "cake",
         "banana", "apple"]


def median_ms(call, n: int) -> float:
    return statistics.median(timed(call, n, warmup=1)) * 1000


def package_calls(door, rgb: np.ndarray, phrases: list[str], threshold: float) -> dict:
    """The bare package calls for these phrases, on the function's own processor and model objects."""
    model, processor, device = door.model.model, door.model.processor, door.model.device
    height, width = rgb.shape[:2]
    if type(model).__name__.startswith("Owlv2"):
        def owlv2():
            with torch.inference_mode():
                outputs = model(**processor(text=[phrases], images=rgb, return_tensors="pt").to(device))
            side = max(height, width)
            processor.post_process_grounded_object_detection(outputs, threshold=threshold,
                                                             target_sizes=[(side, side)])
        return {"package": owlv2}

    def post(outputs):
        processor.post_process_instance_segmentation(outputs, threshold=threshold, target_sizes=[(height, width)])

    def per_phrase():
        with torch.inference_mode():
            for phrase in phrases:
                post(model(**processor(images=rgb, text=phrase, return_tensors="pt").to(device)))

    def image_once():
        with torch.inference_mode():
            pixels = processor(images=rgb, return_tensors="pt")["pixel_values"].to(device)
            vision = model.get_vision_features(pixel_values=pixels)
            texts = processor(text=phrases, return_tensors="pt").to(device)
            for n in range(len(phrases)):
                post(model(vision_embeds=vision, input_ids=texts["input_ids"][n:n + 1],
                           attention_mask=texts["attention_mask"][n:n + 1]))
    return {"package": per_phrase, "package, image once": image_once}


def cmd_bench_prompts(args) -> int:
    folder = Path(args.path).resolve()
    data = Path(args.image).read_bytes()
    rgb = Image.from_bytes(data).rgb
    body = {"image": base64.b64encode(data).decode(), "threshold": args.threshold}
    scratch = tempfile.TemporaryDirectory()
    if args.random_weights:
        build = owlv2_folder if "owlv2" in folder.as_posix() else sam3_folder
        os.environ["MODEL_PATH"] = str(build(Path(scratch.name) / "model", full=True))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch on "
          f"{os.environ.get('TORCH_DEVICE') or ('cuda' if torch.cuda.is_available() else 'cpu')}; image "
          f"{args.image} ({rgb.shape[1]}x{rgb.shape[0]}); median of {args.n}"
          f"{'; random weights' if args.random_weights else ''}")
    for count in [int(c) for c in args.labels.split(",")]:
        names = NAMES[:count]
        staged = vocabulary.staged(folder, {name: [name] for name in names}, Path(scratch.name) / f"f{count}")
        door = cvat_door(staged)
        figures = {"function": median_ms(lambda: door(dict(body)), args.n)}
        for name, call in package_calls(door, rgb, names, args.threshold).items():
            figures[name] = median_ms(call, args.n)
        bare = figures.get("package, image once", figures["package"])
        print(f"{count:3} labels: " + ", ".join(f"{k} {v:9.1f} ms" for k, v in figures.items())
              + f"  (function / bare: {figures['function'] / bare:.2f})")
    scratch.cleanup()
    return 0

"""``tools/fn annotate``: run a detector over a folder of images (or a video's frames) and write a dataset.

The detector runs in this process, its :class:`~common.core.results.Detections` go through the dataset door
(:mod:`common.doors.dataset`) and ``datumaro`` writes them: CVAT for images, COCO (instances, and keypoints
for skeleton labels), YOLO or Datumaro. Every image's result is appended to ``OUT/annotate-journal.jsonl`` as
soon as it is known, so an interrupted run (Ctrl-C, a crash) keeps what it did: the same command resumes with
the images not done yet (unreadable ones are tried again) and writes the dataset of all of them. Unreadable
images and detections of labels the spec does not have are reported, never fatal.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


JOURNAL = "annotate-journal.jsonl"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
FORMATS = {"cvat": ["cvat"], "coco": ["coco_instances", "coco_person_keypoints"], "yolo": ["yolo"],
           "datumaro": ["datumaro"]}
WITH_MEDIA = ("cvat", "datumaro")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def video_frames(video: Path, target: Path) -> list[Path]:
    """The video's frames as JPEG files in ``target`` (kept, so a resumed run and the dataset find them)."""
    import cv2

    target.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    frames, index = [], 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            path = target / f"frame_{index:06d}.jpg"
            if not path.exists():
                cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            frames.append(path)
            index += 1
    finally:
        capture.release()
    if not frames:
        raise SystemExit(f"{video}: no frames could be read")
    return frames


def read_journal(path: Path, header: dict) -> dict[str, dict]:
    """The entries of an earlier run with the same function and threshold, by image; the last entry wins."""
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if lines and lines[0] != header:
        raise SystemExit(f"{path} was written by another run ({lines[0]}); use another --out or delete it")
    return {entry["image"]: entry for entry in lines[1:]}


def cmd_annotate(args) -> int:
    import datumaro as dm
    from tqdm import tqdm

    from common.core.errors import FunctionError
    from common.core.image import Image
    from common.doors import dataset
    from common.doors.cvat.replies import detector_reply
    from common.models.folder import load_model

    from .draw import draw_reply

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.video:
        files, base = video_frames(Path(args.video), out / "frames"), out / "frames"
    else:
        base = Path(args.images)
        files = image_files(base)
    if not files:
        print(f"{base}: no images", file=sys.stderr)
        return 2
    model = load_model(Path(args.function))
    if model.kind != "detector":
        print(f"{model.name} is a {model.kind}; annotate runs detectors", file=sys.stderr)
        return 2
    threshold = model.default_threshold if args.threshold is None else args.threshold
    header = {"function": model.name, "threshold": threshold}
    journal = out / JOURNAL
    entries = read_journal(journal, header)
    todo = [p for p in files if "detections" not in entries.get(p.relative_to(base).as_posix(), {})]
    preview = Path(args.preview) if args.preview else None
    if preview:
        preview.mkdir(parents=True, exist_ok=True)
    if todo and len(todo) < len(files):
        print(f"resuming: {len(files) - len(todo)} of {len(files)} images are done", file=sys.stderr)
    interrupted, started = False, time.perf_counter()
    with journal.open("a") as log, tqdm(total=len(files), initial=len(files) - len(todo), unit="image") as bar:
        if journal.stat().st_size == 0:
            log.write(json.dumps(header) + "\n")
        try:
            for path in todo:
                name = path.relative_to(base).as_posix()
                try:
                    image = Image.from_bytes(path.read_bytes(), name)
                    found = model.detect(image, threshold)
                    entry = {"image": name, "size": list(image.size), "detections": dataset.to_json(found)}
                    if preview:
                        reply = detector_reply(found, model.labels, *image.size)
                        import cv2

                        cv2.imwrite(str(preview / (path.stem + ".jpg")), draw_reply(image.rgb, reply, model.labels))
                except (FunctionError, OSError) as exc:
                    entry = {"image": name, "error": getattr(exc, "message", str(exc))}
                entries[name] = entry
                log.write(json.dumps(entry) + "\n")
                log.flush()
                bar.update()
        except KeyboardInterrupt:
            interrupted = True
    elapsed = time.perf_counter() - started

    items, unknown, count = [], 0, 0
    for path in files:
        entry = entries.get(path.relative_to(base).as_posix(), {})
        if "detections" not in entry:
            continue
        width, height = entry["size"]
        found, skipped = dataset.annotations(dataset.from_json(entry["detections"]), model.labels, width, height)
        unknown, count = unknown + skipped, count + len(found)
        media = dm.Image.from_file(str(path), size=(height, width))
        items.append(dm.DatasetItem(id=Path(entry["image"]).with_suffix("").as_posix(), media=media,
                                    annotations=found))
    data = dm.Dataset.from_iterable(items, categories=dataset.categories(model.labels))
    kinds = FORMATS[args.format]
    if args.format == "coco" and not any(label.type == "skeleton" for label in model.labels):
        kinds = kinds[:1]
    for kind in kinds:
        # CVAT-for-images and Datumaro datasets are read back with their images (datumaro refuses media paths
        # outside the dataset)
        data.export(str(out / args.format), kind, save_media=args.save_media or args.format in WITH_MEDIA)

    failed = [name for name, entry in entries.items() if "error" in entry]
    print(f"{len(items)} images, {count} annotations written to {out / args.format} ({args.format}); "
          f"{len(todo)} run now in {elapsed:.1f} s", file=sys.stderr)
    if unknown:
        print(f"{unknown} detections had labels the spec does not declare and were left out", file=sys.stderr)
    for name in failed:
        print(f"unreadable: {name}: {entries[name]['error']}", file=sys.stderr)
    if interrupted:
        print(f"interrupted: {len(files) - len(items) - len(failed)} images are not done; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    return 1 if failed else 0


def add_parser(sub) -> None:
    parser = sub.add_parser("annotate", help="run a detector over a folder of images or a video; write a dataset")
    parser.add_argument("function", help="a detector's function folder, e.g. functions/onnx/megvii/yolox/nuclio")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="a folder of images (searched recursively)")
    source.add_argument("--video", help="a video file; its frames are written to OUT/frames first")
    parser.add_argument("--out", required=True, help="output folder (its journal lets an interrupted run resume)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="cvat",
                        help="cvat (CVAT for images), coco (instances; keypoints for skeletons), yolo, datumaro")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the function's)")
    parser.add_argument("--preview", metavar="DIR", help="also save every image with its detections drawn")
    parser.add_argument("--save-media", action="store_true",
                        help="copy the images into a coco or yolo dataset too (cvat and datumaro always have them)")
    parser.set_defaults(func=cmd_annotate)


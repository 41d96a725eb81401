"""``tools/fn annotate``: run a detector over a folder of images (or a video's frames) and write a dataset.

The detector runs in this process (a function folder) or is called over HTTP as CVAT calls it (a function
name at a dashboard, several requests in flight); its :class:`~common.core.results.Detections` go through the dataset door
(:mod:`common.doors.dataset`) and ``datumaro`` writes them: CVAT for images, COCO (instances, and keypoints
for skeleton labels), YOLO or Datumaro. Every image's result is appended to ``OUT/annotate-journal.jsonl`` as
soon as it is known, so an interrupted run (Ctrl-C, a crash) keeps what it did: the same command resumes with
the images not done yet (unreadable ones are tried again) and writes the dataset of all of them. Unreadable
images and detections of labels the spec does not have are reported, never fatal.
"""

from __future__ import annotations

import json
import os
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


def fingerprint(path: Path) -> list[int]:
    """Size and modification time: a file replaced at the same name is annotated again."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def done(entry: dict, path: Path) -> bool:
    """Whether a journal entry holds the detections of the file as it is now."""
    return "detections" in entry and entry.get("file", fingerprint(path)) == fingerprint(path)


def read_journal(path: Path, header: dict | None) -> dict[str, dict]:
    """The entries of an earlier run with the same function and threshold (any, for ``None``), by image; the
    last entry wins."""
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if lines and header is not None and lines[0] != header:
        raise SystemExit(f"{path} was written by another run ({lines[0]}); use another --out or delete it")
    return {entry["image"]: entry for entry in lines[1:]}


def rewrite_journal(path: Path, header: dict, entries: dict[str, dict]) -> None:
    """The journal with only ``entries`` (one line each), replaced in one step."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text("".join(json.dumps(line) + "\n" for line in [header, *entries.values()]))
    fresh.replace(path)


class LocalDetector:
    """A function folder's detector, run in this process."""

    jobs = 1  # one model, one image at a time

    def __init__(self, folder: Path, threshold: float | None):
        from common.models.folder import load_model

        self.model = load_model(folder)
        if self.model.kind != "detector":
            raise SystemExit(f"{self.model.name} is a {self.model.kind}; annotate runs detectors")
        self.name, self.labels = self.model.name, self.model.labels
        self.threshold = self.model.default_threshold if threshold is None else threshold

    def __call__(self, data: bytes, name: str):
        from common.core.image import Image

        image = Image.from_bytes(data, name)
        return image, self.model.run(image, self.threshold)


class ServedDetector:
    """A detector served at a Nuclio-style dashboard (``tools/fn serve``, Nuclio), called as CVAT calls it, with
    ``jobs`` requests in flight; its replies are read back into Detections by the CVAT client door."""

    def __init__(self, name: str, dashboard: str, threshold: float | None, jobs: int, timeout: float):
        import urllib.error
        import urllib.request

        from common.core.labels import Labels

        self.dashboard, self.name, self.threshold, self.jobs, self.timeout = dashboard.rstrip("/"), name, threshold, \
            jobs, timeout
        try:
            with urllib.request.urlopen(f"{self.dashboard}/api/functions/{name}", timeout=10) as response:
                annotations = json.load(response)["metadata"]["annotations"]
        except (urllib.error.URLError, KeyError, ValueError) as exc:
            raise SystemExit(f"cannot describe {name} at {self.dashboard}: {exc}") from None
        if annotations.get("type") != "detector":
            raise SystemExit(f"{name} is a {annotations.get('type')}; annotate runs detectors")
        self.labels = Labels.from_spec(json.loads(annotations.get("spec") or "[]"))

    def __call__(self, data: bytes, name: str):
        import base64
        import urllib.error
        import urllib.request

        from common.core.errors import FunctionError
        from common.core.image import Image
        from common.doors.cvat.client import detections_from_reply

        image = Image.from_bytes(data, name)  # the header only: the size, and a clear error for a broken file
        body = {"image": base64.b64encode(data).decode()}
        if self.threshold is not None:
            body["threshold"] = self.threshold
        request = urllib.request.Request(
            f"{self.dashboard}/api/function_invocations", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "x-nuclio-function-name": self.name, "x-nuclio-path": "/"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as exc:
            raise FunctionError(f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FunctionError(f"{self.dashboard} did not answer: {exc}") from None
        found, _ = detections_from_reply(reply, self.labels, *image.size)
        return image, found


def cmd_annotate(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import datumaro as dm
    from tqdm import tqdm

    from common.core.errors import FunctionError
    from common.doors import dataset
    from common.doors.cvat.replies import detector_reply

    from .draw import draw_reply

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.video:
        files, base = video_frames(Path(args.video), out / "frames"), out / "frames"
    else:
        base = Path(args.images)
        files = image_files(base)
    journal = out / JOURNAL
    if not files:
        known = len(read_journal(journal, None)) if journal.exists() else 0
        gone = f"; the {known} images {journal} lists are all gone, so no dataset was written" if known else ""
        print(f"{base}: no images{gone}", file=sys.stderr)
        return 2
    if Path(args.function).is_dir():
        detector = LocalDetector(Path(args.function), args.threshold)
    else:
        detector = ServedDetector(args.function, args.dashboard, args.threshold, args.jobs, args.timeout)
    header = {"function": detector.name, "threshold": detector.threshold}
    entries = read_journal(journal, header)
    present = {p.relative_to(base).as_posix(): p for p in files}
    gone = sorted(set(entries) - set(present))
    for name in gone:  # deleted since: neither done nor failing any more
        del entries[name]
    if gone:
        print(f"{len(gone)} images of the journal are no longer in {base} and are left out: "
              f"{', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}", file=sys.stderr)
        rewrite_journal(journal, header, entries)
    todo = [p for name, p in present.items() if not done(entries.get(name, {}), p)]
    preview = Path(args.preview) if args.preview else None
    if preview:
        preview.mkdir(parents=True, exist_ok=True)
    if todo and len(todo) < len(files):
        print(f"resuming: {len(files) - len(todo)} of {len(files)} images are done", file=sys.stderr)

    def run(path: Path) -> dict:
        name = path.relative_to(base).as_posix()
        try:
            image, found = detector(path.read_bytes(), name)
        except (FunctionError, OSError) as exc:
            return {"image": name, "file": fingerprint(path), "error": getattr(exc, "message", str(exc))}
        if preview:
            reply = detector_reply(found, detector.labels, *image.size)
            cv2.imwrite(str(preview / (path.stem + ".jpg")), draw_reply(image.rgb, reply, detector.labels))
        return {"image": name, "file": fingerprint(path), "size": list(image.size),
                "detections": dataset.to_json(found)}

    interrupted, started = False, time.perf_counter()
    with journal.open("a") as log, tqdm(total=len(files), initial=len(files) - len(todo), unit="image") as bar, \
            ThreadPoolExecutor(max(1, detector.jobs)) as pool:
        if journal.stat().st_size == 0:
            log.write(json.dumps(header) + "\n")
        try:
            for entry in pool.map(run, todo):  # in order; up to `jobs` images in flight
                entries[entry["image"]] = entry
                log.write(json.dumps(entry) + "\n")
                log.flush()
                bar.update()
        except KeyboardInterrupt:
            interrupted = True
            pool.shutdown(wait=False, cancel_futures=True)
    elapsed = time.perf_counter() - started

    items, unknown, count = [], 0, 0
    for path in files:
        entry = entries.get(path.relative_to(base).as_posix(), {})
        if not done(entry, path):
            continue
        width, height = entry["size"]
        found, skipped = dataset.annotations(dataset.from_json(entry["detections"]), detector.labels, width,
                                              height)
        unknown, count = unknown + skipped, count + len(found)
        media = dm.Image.from_file(str(path), size=(height, width))
        items.append(dm.DatasetItem(id=Path(entry["image"]).with_suffix("").as_posix(), media=media,
                                    annotations=found))
    data = dm.Dataset.from_iterable(items, categories=dataset.categories(detector.labels))
    kinds = FORMATS[args.format]
    if args.format == "coco" and not any(label.type == "skeleton" for label in detector.labels):
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
    parser.add_argument("function", help="a detector's function folder (run here, e.g. functions/onnx/megvii/yolox/"
                                         "nuclio) or the name of a function served at --dashboard")
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
    parser.add_argument("--dashboard", default=os.environ.get("NUCLIO_DASHBOARD_URL", "http://localhost:8070"),
                        help="where a function given by name is served (tools/fn serve, Nuclio)")
    parser.add_argument("--jobs", type=int, default=4, help="requests in flight to a served function (4)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per request to a served function")
    parser.set_defaults(func=cmd_annotate)


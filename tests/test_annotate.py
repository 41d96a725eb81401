"""``tools/fn annotate``: a detector over a folder of images, written as a dataset that other tools read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datumaro as dm
import pytest

from tests.conftest import ROOT, b64_file
from tests.segmenters import door_of
from tools.cli import main

FUNCTIONS = ROOT / "functions"
YOLOX = FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio"
YUNET = FUNCTIONS / "opencv" / "shiqiyu" / "yunet" / "nuclio"
PPOCR = FUNCTIONS / "onnx" / "paddlepaddle" / "ppocr" / "nuclio"


def annotate(function: Path, images: Path, out: Path, fmt: str, *extra: str) -> int:
    return main(["annotate", str(function), "--images", str(images), "--out", str(out), "--format", fmt, *extra])


def test_coco_output_loads_in_pycocotools_with_the_doors_boxes(models_dir, data_dir, tmp_path):
    from pycocotools.coco import COCO

    assert annotate(YOLOX, data_dir / "images", tmp_path / "out", "coco", "--threshold", "0.3",
                    "--preview", str(tmp_path / "preview")) == 0
    coco = COCO(str(tmp_path / "out" / "coco" / "annotations" / "instances_default.json"))
    names = [coco.cats[i]["name"] for i in sorted(coco.cats)]
    with door_of(YOLOX) as door:
        assert names == [label.name for label in door.model.labels]
        dog = b64_file(data_dir / "images" / "dog.jpg")
        expected = door({"image": dog, "threshold": 0.3}).payload
    (image_id,) = [i for i, image in coco.imgs.items() if image["file_name"] == "dog.jpg"]
    found = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    assert [coco.cats[a["category_id"]]["name"] for a in found] == [s["label"] for s in expected]
    for annotation, shape in zip(found, expected):
        x, y, w, h = annotation["bbox"]
        assert [x, y, x + w, y + h] == pytest.approx(shape["points"], abs=0.01)
    assert len(coco.imgs) == len(list((data_dir / "images").iterdir()))
    assert sorted(p.name for p in (tmp_path / "preview").iterdir())[:2] == ["astronaut.jpg", "chelsea.jpg"]


@pytest.mark.parametrize("fmt", ["cvat", "datumaro"])
def test_skeletons_and_attributes_import_back_with_nothing_lost(models_dir, data_dir, tmp_path, fmt):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("grace_hopper.png", "page.png"):
        shutil.copy(data_dir / "images" / name, images / name)
    for function, name in ((YUNET, "faces"), (PPOCR, "text")):
        assert annotate(function, images, tmp_path / name, fmt) == 0
        journal = [json.loads(line) for line in (tmp_path / name / "annotate-journal.jsonl").read_text().splitlines()]
        written = {e["image"]: len(e["detections"]["class_id"]) for e in journal[1:]}
        back = dm.Dataset.import_from(str(tmp_path / name / fmt), fmt)
        labels = back.categories()[dm.AnnotationType.label]
        counts = {Path(item.id).name: len(item.annotations) for item in back}
        assert counts == {Path(k).stem: v for k, v in written.items()}
        annotations = [a for item in back for a in item.annotations]
        if function is YUNET:
            (face,) = [a for a in annotations if labels[a.label].name == "face"]
            (landmarks,) = [a for a in annotations if labels[a.label].name == "face landmarks"]
            assert face.type == dm.AnnotationType.bbox and landmarks.type == dm.AnnotationType.points
            assert len(landmarks.points) == 10 and all(v == dm.Points.Visibility.visible for v in landmarks.visibility)
            assert float(face.attributes["score"]) > 0.9
        else:
            texts = sorted(a.attributes["text"] for a in annotations)
            assert texts == sorted(line["text"] for e in journal[1:] for line in e["detections"]["attributes"])
            assert "Region-basedsegmentation" in texts
            assert all(a.type == dm.AnnotationType.polygon and len(a.points) == 8 for a in annotations)


@pytest.mark.parametrize("fmt", ["cvat", "datumaro"])
def test_masks_import_back(data_dir, tmp_path, monkeypatch, fmt):
    from tools.replies import random_weights

    folder = FUNCTIONS / "pytorch" / "torchvision" / "maskrcnn" / "nuclio"
    for name, value in random_weights(folder, tmp_path).items():
        monkeypatch.setenv(name, value)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(data_dir / "images" / "person.jpg", images / "person.jpg")
    assert annotate(folder, images, tmp_path / "out", fmt, "--threshold", "0.05") == 0
    journal = [json.loads(line) for line in (tmp_path / "out" / "annotate-journal.jsonl").read_text().splitlines()]
    masks = journal[1]["detections"]["masks"]
    (item,) = dm.Dataset.import_from(str(tmp_path / "out" / fmt), fmt)
    assert len(item.annotations) == len(masks) > 0
    assert all(a.type == dm.AnnotationType.mask for a in item.annotations)
    assert sum(int(a.image.sum()) for a in item.annotations) == sum(sum(m["rle"][1::2]) for m in masks)


def test_unreadable_images_are_reported_and_retried_when_resumed(models_dir, data_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(data_dir / "images" / "dog.jpg", images / "dog.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    assert annotate(YOLOX, images, tmp_path / "out", "cvat") == 1
    err = capsys.readouterr().err
    assert "unreadable: broken.jpg" in err and "1 images" in err
    shutil.copy(data_dir / "images" / "giraffe.jpg", images / "broken.jpg")  # fixed
    assert annotate(YOLOX, images, tmp_path / "out", "cvat") == 0
    err = capsys.readouterr().err
    assert "resuming: 1 of 2 images are done" in err and "2 images" in err and "1 run now" in err


def test_an_interrupted_run_keeps_its_work_and_resumes(models_dir, data_dir, tmp_path, monkeypatch, capsys):
    from common.models import folder as loading

    calls = []
    real = loading.load_model

    def interrupting(path, **arguments):
        model = real(path, **arguments)
        detect = model.detect

        def counted(image, threshold):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return detect(image, threshold)

        model.detect = counted
        return model

    monkeypatch.setattr(loading, "load_model", interrupting)
    assert annotate(YOLOX, data_dir / "images", tmp_path / "out", "datumaro") == 130
    assert "interrupted: 6 images are not done" in capsys.readouterr().err
    assert len(dm.Dataset.import_from(str(tmp_path / "out" / "datumaro"), "datumaro")) == 2
    monkeypatch.setattr(loading, "load_model", real)
    assert annotate(YOLOX, data_dir / "images", tmp_path / "out", "datumaro") == 0
    assert "resuming: 2 of 8 images are done" in capsys.readouterr().err
    assert len(dm.Dataset.import_from(str(tmp_path / "out" / "datumaro"), "datumaro")) == 8
    with pytest.raises(SystemExit, match="another run"):
        annotate(YOLOX, data_dir / "images", tmp_path / "out", "datumaro", "--threshold", "0.2")


def test_a_video_is_annotated_frame_by_frame(models_dir, data_dir, tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for i in range(3):
        frame = cv2.imread(str(data_dir / "video" / "tennis" / f"{i:05d}.jpg"))
        writer.write(cv2.resize(frame, (320, 240)))
    writer.release()
    assert main(["annotate", str(YOLOX), "--video", str(video), "--out", str(tmp_path / "out"),
                 "--format", "yolo"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == [f"frame_{i:06d}.jpg" for i in range(3)]
    assert (tmp_path / "out" / "yolo" / "obj.names").read_text().splitlines()[0] == "person"


def test_a_served_function_is_called_with_requests_in_flight(models_dir, data_dir, tmp_path):
    """By name, through the dashboard API as CVAT calls it: the same annotations as the function run here."""
    from tests.conftest import dashboard_url, running

    with running(YOLOX) as harness:
        assert main(["annotate", "onnx-megvii-yolox", "--dashboard", dashboard_url(harness), "--jobs", "3",
                     "--images", str(data_dir / "images"), "--out", str(tmp_path / "served"),
                     "--format", "datumaro"]) == 0
    assert annotate(YOLOX, data_dir / "images", tmp_path / "local", "datumaro") == 0
    served, local = (dm.Dataset.import_from(str(tmp_path / name / "datumaro"), "datumaro") for name in ("served", "local"))
    assert sorted(item.id for item in served) == sorted(item.id for item in local)
    for item in local:
        other = served.get(item.id)
        assert [a.label for a in other.annotations] == [a.label for a in item.annotations]
        for a, b in zip(other.annotations, item.annotations):
            assert a.points == pytest.approx(b.points, abs=0.01)
            assert float(a.attributes["score"]) == pytest.approx(float(b.attributes["score"]), abs=1e-4)


def test_cvat_replies_read_back_into_detections_encode_to_the_same_reply(models_dir, data_dir):
    from common.doors.cvat.client import detections_from_reply
    from common.doors.cvat.replies import detector_reply

    for function, image in ((YUNET, "grace_hopper.png"), (PPOCR, "page.png"), (YOLOX, "dog.jpg")):
        with door_of(function) as door:
            size = image_size(data_dir / "images" / image)
            reply = door({"image": b64_file(data_dir / "images" / image)}).payload
            found, unknown = detections_from_reply(reply + [{"label": "unicorn", "type": "rectangle",
                                                             "points": [1, 1, 2, 2]}], door.model.labels, *size)
            assert unknown == 1 and detector_reply(found, door.model.labels, *size) == reply


def image_size(path: Path) -> tuple[int, int]:
    import PIL.Image

    with PIL.Image.open(path) as image:
        return image.size


def test_a_removed_or_replaced_file_and_an_emptied_folder(models_dir, data_dir, tmp_path, capsys):
    """Deleting the unreadable file ends its report (exit 0); a file replaced at the same name is annotated
    again; an image added later is picked up; a folder whose images all went says so and writes nothing."""
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    shutil.copy(data_dir / "images" / "dog.jpg", images / "a.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    assert annotate(YOLOX, images, out, "datumaro") == 1
    capsys.readouterr()
    (images / "broken.jpg").unlink()
    assert annotate(YOLOX, images, out, "datumaro") == 0
    err = capsys.readouterr().err
    assert "1 images of the journal are no longer in" in err and "broken.jpg" in err and "unreadable" not in err
    assert annotate(YOLOX, images, out, "datumaro") == 0  # and stays so
    assert "no longer" not in capsys.readouterr().err

    shutil.copy(data_dir / "images" / "giraffe.jpg", images / "a.jpg")  # another picture at the same name
    shutil.copy(data_dir / "images" / "person.jpg", images / "b.jpg")  # added
    assert annotate(YOLOX, images, out, "datumaro") == 0
    assert "2 run now" in capsys.readouterr().err
    labels = {item.id: sorted(a.label for a in item.annotations)
              for item in dm.Dataset.import_from(str(out / "datumaro"), "datumaro")}
    giraffe = dm.Dataset.import_from(str(out / "datumaro"), "datumaro").categories()[dm.AnnotationType.label]
    assert giraffe.find("giraffe")[0] in labels["a"] and set(labels) == {"a", "b"}

    for path in images.iterdir():
        path.unlink()
    assert annotate(YOLOX, images, out, "datumaro") == 2
    assert "are all gone, so no dataset was written" in capsys.readouterr().err

"""Dataloop's door, offline with the real dtlpy: the adapter's predict gives the Nuclio handler's shapes, its
collections survive to_json/from_json, items are decoded as our decoder does, and the manifest publishes an
importable adapter with the function's labels. Only what needs the platform is replaced: the model entity's
update call (configuration changes are saved on the platform), item downloads and annotation uploads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dtlpy as dl
import numpy as np
import PIL.Image
import pytest

from common.core.labels import Labels
from common.doors.cvat.shapes import from_cvat_mask
from common.doors.dataloop import Adapter
from tests.conftest import ROOT, b64_file, box_iou, function_url, http, running
from tools import dataloop_manifest

FUNCTIONS = ROOT / "functions"
YOLOX = FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio"


def model_entity(configuration: dict, name: str = "test-model") -> dl.Model:
    """A real dl.Model entity built from JSON, as the platform sends it; saving its configuration is a no-op."""
    model = dl.Model.from_json(_json={"id": "model-1", "name": name, "configuration": configuration,
                                      "inputType": "image", "outputType": "box"},
                               client_api=dl.client_api, project=None, package=None)
    model.update = lambda *args, **kwargs: model
    return model


def adapter_for(folder: Path, artifacts: Path | None = None, **configuration) -> Adapter:
    adapter = Adapter()
    adapter.model_entity = model_entity({"function": str(folder), **configuration})
    adapter.load(str(artifacts) if artifacts else "")
    return adapter


def item(data: bytes, name: str, mimetype: str) -> dl.Item:
    """A real dl.Item entity whose download (a platform call) returns ``data``."""
    entity = dl.Item.from_json(_json={"id": "item-" + name, "name": name, "filename": "/" + name,
                                      "metadata": {"system": {"mimetype": mimetype}}},
                               client_api=dl.client_api, dataset=None, project=None)
    entity.download = lambda save_locally=True, **kwargs: io.BytesIO(data)
    return entity


def round_trip(collection: dl.AnnotationCollection) -> list[dl.Annotation]:
    text = json.dumps(collection.to_json())
    return list(dl.AnnotationCollection.from_json(json.loads(text), is_video=False).annotations)


def confidence(annotation: dl.Annotation) -> str:
    return f"{annotation.metadata['user']['model']['confidence']:.4f}"


def from_dataloop(annotations: list[dl.Annotation]) -> list[tuple]:
    """(kind, label, confidence, geometry) per object; a skeleton's points (grouped by object id) as
    (keypoint name, x, y)."""
    found, objects = [], {}
    for a in annotations:
        if a.type == "point":
            if a.object_id not in objects:
                objects[a.object_id] = ("points", a.label, confidence(a), [])
                found.append(objects[a.object_id])
            objects[a.object_id][3].append((a.description, a.x, a.y))
        elif a.type == "box":
            found.append(("box", a.label, confidence(a), [a.left, a.top, a.right, a.bottom]))
        elif a.type == "segment":
            found.append(("polygon", a.label, confidence(a), np.asarray(a.geo).ravel().tolist(), a.attributes))
        else:
            assert a.type == "binary"
            found.append(("mask", a.label, confidence(a), np.asarray(a.geo, bool)))
    return found


def from_cvat(reply: list[dict], width: int, height: int) -> list[tuple]:
    found = []
    for shape in reply:
        if shape["type"] == "rectangle":
            found.append(("box", shape["label"], shape["confidence"], shape["points"]))
        elif shape["type"] == "polygon":
            found.append(("polygon", shape["label"], shape["confidence"], shape["points"],
                          {a["name"]: a["value"] for a in shape.get("attributes", [])}))
        elif shape["type"] == "mask":
            found.append(("mask", shape["label"], shape["confidence"], from_cvat_mask(shape["mask"], width, height)))
        else:
            assert shape["type"] == "skeleton"
            found.append(("points", shape["label"], shape["confidence"],
                          [(e["label"], *e["points"]) for e in shape["elements"] if not e.get("outside")]))
    return found


def _order(shape: tuple) -> tuple:
    geometry = shape[3]
    where = float(geometry.sum()) if shape[0] == "mask" else round(float(np.ravel(
        [p[1:] for p in geometry] if shape[0] == "points" else geometry)[0]), 1)
    return shape[1], shape[2], shape[0], where


def assert_same(ours: list[tuple], cvat: list[tuple]) -> None:
    """The same shapes, in any order (from_json does not keep the collection's order)."""
    ours, cvat = sorted(ours, key=_order), sorted(cvat, key=_order)
    assert [o[:3] for o in ours] == [c[:3] for c in cvat]
    for o, c in zip(ours, cvat):
        if o[0] == "mask":
            assert o[3].shape == c[3].shape and np.array_equal(o[3], c[3])
        elif o[0] == "points":
            assert [p[0] for p in o[3]] == [p[0] for p in c[3]]
            assert [p[1:] for p in o[3]] == [pytest.approx(p[1:], abs=0.006) for p in c[3]]
        else:  # the CVAT reply rounds coordinates to 2 decimals
            assert o[3] == pytest.approx(c[3], abs=0.006)
        assert o[4:] == c[4:]  # attributes (recognised text)


@pytest.mark.parametrize("path, image", [("onnx/megvii/yolox", "dog.jpg"), ("opencv/shiqiyu/yunet", "grace_hopper.png"),
                                         ("onnx/paddlepaddle/ppocr", "page.png")])
def test_predict_gives_the_nuclio_handlers_shapes(models_dir, data_dir, path, image):
    folder = FUNCTIONS / path / "nuclio"
    file = data_dir / "images" / image
    adapter = adapter_for(folder)
    batch = [np.asarray(PIL.Image.open(file)), None]  # what dtlpy's own item loader gives, and a failed item
    collections = adapter.predict(batch)
    assert len(collections) == 2 and len(collections[1]) == 0
    width, height = PIL.Image.open(file).size
    with running(folder) as harness:
        code, _, reply = http("POST", function_url(harness),
                              {"image": b64_file(file),
                               "threshold": adapter.threshold()})
    assert code == 200 and reply
    ours = from_dataloop(round_trip(collections[0]))
    assert_same(ours, from_cvat(reply, width, height))
    assert [a.label for a in collections[0]] == [s["label"] for s in reply for _ in  # predict's own order is CVAT's
                                                 ([e for e in s["elements"] if not e["outside"]] if "elements" in s
                                                  else [s])]
    names = {label.name for label in Labels.from_function_yaml(folder / "function.yaml")}
    assert {o[1] for o in ours} <= names
    if "yunet" in path:  # the five landmarks of each face, named
        assert any(o[0] == "points" and len(o[3]) == 5 for o in ours)
    if "ppocr" in path:
        assert all(o[4].get("text") for o in ours)


def test_mask_rcnn_masks_are_segmentations(data_dir, tmp_path, monkeypatch):
    """Random weights (set through the model's configuration, in upper case, as settings variables)."""
    from tools.replies import random_weights

    folder = FUNCTIONS / "pytorch" / "torchvision" / "maskrcnn" / "nuclio"
    env = {**random_weights(folder, tmp_path), "DETECTIONS_PER_IMAGE": "6"}
    file = data_dir / "images" / "person.jpg"
    adapter = adapter_for(folder, confidence_threshold=0.05, **env)
    (collection,) = adapter.predict([np.asarray(PIL.Image.open(file))])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with running(folder, timeout=300) as harness:
        code, _, reply = http("POST", function_url(harness),
                              {"image": b64_file(file), "threshold": 0.05})
    assert code == 200 and reply and all(s["type"] == "mask" for s in reply)
    ours = from_dataloop(round_trip(collection))
    assert_same(ours, from_cvat(reply, *PIL.Image.open(file).size))


def test_threshold_and_settings_come_from_the_configuration(models_dir, data_dir):
    image = np.asarray(PIL.Image.open(data_dir / "images" / "dog.jpg"))
    default = adapter_for(YOLOX)
    assert default.threshold() is None  # the model's default, which run applies
    many = adapter_for(YOLOX, confidence_threshold=0.1).predict([image])[0]
    few = adapter_for(YOLOX, threshold="0.8").predict([image])[0]
    assert len(many) > len(few) > 0
    assert all(a.metadata["user"]["model"]["confidence"] >= 0.8 for a in few)
    assert all(a.metadata["user"]["model"]["name"] == "test-model" for a in few)
    with pytest.raises(ValueError, match="confidence_threshold='high' is not a number"):
        adapter_for(YOLOX, confidence_threshold="high").predict([image])
    with pytest.raises(ValueError, match="NMS_THRESHOLD"):  # a bad setting names its variable
        adapter_for(YOLOX, NMS_THRESHOLD="lots")


def test_weights_from_the_model_artifacts(models_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELS_DIR")
    monkeypatch.setenv("CVAT_FUNCTIONS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "yolox_nano.onnx").write_bytes((models_dir / "yolox_nano.onnx").read_bytes())
    adapter = adapter_for(YOLOX, artifacts)
    assert adapter.detector is not None and adapter.detector.env["MODELS_DIR"] == str(artifacts)
    assert "MODELS_DIR" not in os.environ  # the model's settings, not the process's


def test_items_are_decoded_as_our_decoder_does(models_dir, data_dir):
    """EXIF orientation applied and palettes resolved (numpy.asarray(PIL.Image.open()) does neither); an item
    that is not an image, or over the limits, gets an empty collection."""
    adapter = adapter_for(YOLOX)
    dog = PIL.Image.open(data_dir / "images" / "dog.jpg")
    turned = io.BytesIO()
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # stored on its side: shown rotated 90° clockwise
    dog.rotate(90, expand=True).save(turned, "JPEG", quality=95, exif=exif)
    upright = adapter.prepare_item_func(item(turned.getvalue(), "turned.jpg", "image/jpeg"))
    assert upright.size == dog.size
    (found,) = adapter.predict([upright])
    (plain,) = adapter.predict([np.asarray(dog)])
    assert sorted(a.label for a in found) == sorted(a.label for a in plain) and "dog" in [a.label for a in found]
    (dog_found,), (dog_plain,) = ([[a.left, a.top, a.right, a.bottom] for a in c if a.label == "dog"]
                                  for c in (found, plain))
    assert box_iou(dog_found, dog_plain) > 0.95  # the same dog, upright (re-encoding moved it a little)

    palette = io.BytesIO()
    dog.convert("P", palette=PIL.Image.Palette.ADAPTIVE).save(palette, "PNG")
    decoded = adapter.prepare_item_func(item(palette.getvalue(), "palette.png", "image/png"))
    assert decoded.rgb.shape == (576, 768, 3)
    assert np.abs(decoded.rgb.astype(int) - np.asarray(dog, int)).mean() < 12

    broken = adapter.prepare_item_func(item(b"not an image", "broken.jpg", "image/jpeg"))
    truncated = adapter.prepare_item_func(item(turned.getvalue()[:2000], "truncated.jpg", "image/jpeg"))
    huge = io.BytesIO()
    PIL.Image.new("L", (20000, 20000)).save(huge, "PNG")
    too_big = adapter.prepare_item_func(item(huge.getvalue(), "huge.png", "image/png"))
    assert broken is None
    collections = adapter.predict([broken, truncated, too_big, np.zeros((4, 4, 7), np.uint8), np.asarray(dog)])
    assert [len(c) for c in collections[:4]] == [0, 0, 0, 0] and len(collections[4]) > 0


def test_predict_items_stamps_the_model_on_every_annotation(models_dir, data_dir, monkeypatch):
    """dtlpy's own entry point, with the platform's upload replaced."""
    adapter = adapter_for(YOLOX)
    monkeypatch.setattr(adapter, "_upload_model_annotations", lambda item, collection: collection)
    data = (data_dir / "images" / "dog.jpg").read_bytes()
    items, annotations = adapter.predict_items([item(data, "dog.jpg", "image/jpeg"),
                                                item(b"junk", "junk.jpg", "image/jpeg")])
    assert len(items) == 2 and annotations
    for annotation in annotations:
        assert annotation.item_id == "item-dog.jpg"
        assert annotation.metadata["system"]["model"]["model_id"] == "model-1"
        assert 0 < annotation.metadata["system"]["model"]["confidence"] <= 1


def test_only_detectors_have_an_adapter():
    folder = FUNCTIONS / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
    with pytest.raises(ValueError, match="tracker"):
        dataloop_manifest.manifest(folder)


@pytest.mark.parametrize("path, device, output_type", [("onnx/megvii/yolox", "gpu", "box"),
                                                       ("opencv/shiqiyu/yunet", "cpu", "box"),
                                                       ("pytorch/torchvision/maskrcnn", "gpu", "binary")])
def test_the_manifest_names_the_functions_labels_and_pod(path, device, output_type):
    folder = FUNCTIONS / path / "nuclio"
    app = dataloop_manifest.manifest(folder)
    dpk = dl.Dpk.from_json(_json=app, client_api=dl.client_api, project=None)  # dtlpy's own reading of it
    (model,) = app["components"]["models"]
    assert model["labels"] == [label.name for label in Labels.from_function_yaml(folder / "function.yaml")]
    assert model["outputType"] == output_type and model["configuration"]["function"] == f"functions/{path}/nuclio"
    (compute,) = app["components"]["computeConfigs"]
    assert compute["runtime"]["podType"].startswith("gpu" if device == "gpu" else "regular")
    assert (model["configuration"].get("FUNCTION_YAML") == "function-gpu.yaml") == (device == "gpu")
    (module,) = dpk.components.modules
    assert (module.entry_point, module.class_name) == ("common/doors/dataloop.py", "Adapter")
    assert dataloop_manifest.manifest(folder, device="cpu")["components"]["computeConfigs"][0]["runtime"][
        "podType"] == "regular-m"


def test_staged_code_loads_the_way_dataloop_loads_it(models_dir, data_dir, tmp_path):
    """``tools/fn dataloop-manifest --stage DIR``, then, from another directory and with nothing on the path,
    the entry point loaded by its file path (as dtlpy does), built from the manifest's model and run."""
    staged = tmp_path / "app"
    out = tmp_path / "printed.json"
    code = subprocess.run([str(ROOT / "tools" / "fn"), "dataloop-manifest", str(YOLOX), "--stage", str(staged),
                           "--cpu", "-o", str(out)], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    app = json.loads((staged / "dataloop.json").read_text())
    assert json.loads(out.read_text()) == app
    assert sorted(p.name for p in staged.iterdir()) == ["common", "dataloop.json", "function-gpu.yaml",
                                                         "function.yaml", "main.py", "model_handler.py",
                                                         "requirements.txt"]
    assert "onnxruntime" in (staged / "requirements.txt").read_text().split()
    assert "/opt/nuclio" not in (staged / "requirements.txt").read_text()  # the yaml's -c file is the image's
    (module,) = app["components"]["modules"]
    (model,) = app["components"]["models"]
    script = f"""
import importlib.util, json, sys
import dtlpy as dl, numpy as np, PIL.Image
spec = importlib.util.spec_from_file_location({module['className']!r}, {str(staged / module['entryPoint'])!r})
code = importlib.util.module_from_spec(spec)
spec.loader.exec_module(code)
model = dl.Model.from_json(_json={{"id": "m", "name": {model['name']!r}, "configuration": {model['configuration']!r}}},
                           client_api=dl.client_api, project=None, package=None)
model.update = lambda *a, **k: model
adapter = getattr(code, {module['className']!r})()
adapter.model_entity = model
adapter.load("")
(found,) = adapter.predict([np.asarray(PIL.Image.open({str(data_dir / 'images' / 'dog.jpg')!r}))])
print(json.dumps([sys.modules["common"].__file__, sorted({{a.label for a in found}})]))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    common_file, labels = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(common_file).is_relative_to(staged) and "dog" in labels
    assert set(labels) <= set(model["labels"])

"""Text-prompted detectors (OWLv2, SAM 3) find the spec's own labels by name, and equal what the package's own
processor, model and post-processing give for the same image, phrases and threshold. Small configurations of
both architectures with random weights, built at test time with the real CLIP vocabulary and saved with
save_pretrained, are loaded through the functions' own loading code."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import PIL.Image
import pytest
import torch

from common.core import vocabulary
from common.core.errors import RequestError
from common.core.image import Image
from common.doors.cvat.shapes import from_cvat_mask
from tests.conftest import ROOT, b64_file, box_iou, function_url, http
from tests.segmenters import door_of

OWLV2 = ROOT / "functions" / "pytorch" / "google" / "owlv2" / "nuclio"
SAM3 = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam3" / "nuclio"


@pytest.fixture(scope="module")
def owlv2(tmp_path_factory):
    from tools.random_weights import owlv2_folder

    return owlv2_folder(tmp_path_factory.mktemp("owlv2") / "owlv2")


@pytest.fixture(scope="module")
def sam3(tmp_path_factory):
    from tools.random_weights import sam3_folder

    return sam3_folder(tmp_path_factory.mktemp("sam3") / "sam3")


@pytest.fixture(scope="module")
def dog(data_dir):
    path = data_dir / "images" / "dog.jpg"
    return path, np.asarray(PIL.Image.open(path).convert("RGB"))


def owlv2_package(folder, rgb: np.ndarray, phrases: list[str], threshold: float) -> list[tuple]:
    """What the package computes: (phrase index, score, clipped box), best first, boxes left in the image."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    processor = Owlv2Processor.from_pretrained(folder)
    model = Owlv2ForObjectDetection.from_pretrained(folder).eval()
    with torch.no_grad():
        outputs = model(**processor(text=[phrases], images=rgb, return_tensors="pt"))
    height, width = rgb.shape[:2]
    side = max(height, width)
    (found,) = processor.post_process_grounded_object_detection(outputs, threshold=threshold,
                                                                 target_sizes=[(side, side)])
    rows = []
    for index, score, box in zip(found["labels"].tolist(), found["scores"].tolist(), found["boxes"].tolist()):
        x1, y1, x2, y2 = np.clip(box, 0, [width, height, width, height])
        if x2 > x1 and y2 > y1:
            rows.append((index, score, [x1, y1, x2, y2]))
    return sorted(rows, key=lambda r: -r[1])


def assert_boxes_equal(reply: list[dict], expected: list[tuple], names: list[str]) -> None:
    assert [s["label"] for s in reply] == [names[i] for i, _, _ in expected]
    assert [s["confidence"] for s in reply] == [f"{score:.4f}" for _, score, _ in expected]
    for shape, (_, _, box) in zip(reply, expected):
        assert shape["type"] == "rectangle" and shape["points"] == pytest.approx(box, abs=0.006)


def test_owlv2_equals_the_package_for_every_label_of_its_spec(owlv2, dog):
    path, rgb = dog
    with door_of(OWLV2, MODEL_PATH=str(owlv2), TORCH_DEVICE="cpu") as door:
        names = [label.name for label in door.model.labels]
        assert len(names) == 80 and names[0] == "person"
        reply = door({"image": b64_file(path), "threshold": 0.05}).payload
    expected = owlv2_package(owlv2, rgb, names, 0.05)
    assert expected, "the random model finds something at this threshold"
    assert_boxes_equal(reply, expected, names)


def test_owlv2_prompts_per_label_and_the_restriction_list(owlv2, dog, tmp_path):
    path, rgb = dog
    words = {"vehicle": ["car", "pickup truck", "bicycle"], "animal": "dog"}
    folder = vocabulary.staged(OWLV2, vocabulary.parse(write(tmp_path / "words.json", words)), tmp_path / "f")
    with door_of(folder, MODEL_PATH=str(owlv2), TORCH_DEVICE="cpu") as door:
        assert [(label.id, label.name, label.phrases) for label in door.model.labels] == \
               [(0, "vehicle", ("car", "pickup truck", "bicycle")), (1, "animal", ("dog",))]
        image = b64_file(path)
        every = door({"image": image, "threshold": 0.05}).payload
        animals = door({"image": image, "threshold": 0.05, "labels": ["animal"]}).payload
        for body in ({"labels": ["unicorn"]}, {"labels": "animal"}, {"labels": [1]}):
            with pytest.raises(RequestError, match="labels"):
                door({"image": image, **body})
    owners = ["vehicle"] * 3 + ["animal"]
    assert_boxes_equal(every, owlv2_package(owlv2, rgb, ["car", "pickup truck", "bicycle", "dog"], 0.05), owners)
    assert_boxes_equal(animals, owlv2_package(owlv2, rgb, ["dog"], 0.05), ["animal"])


def test_owlv2_takes_prompts_of_the_requests_own(owlv2, dog):
    """The CVAT door's ``prompts`` (our extension, the playground's text prompts): each phrase a label named by
    it, spec name or not, equal to the package's own call for those phrases."""
    path, rgb = dog
    with door_of(OWLV2, MODEL_PATH=str(owlv2), TORCH_DEVICE="cpu") as door:
        image = b64_file(path)
        reply = door({"image": image, "threshold": 0.05, "prompts": ["dog", " zebra crossing ", "dog"]}).payload
        for body, message in (({"prompts": []}, "prompts"), ({"prompts": [""]}, "prompts"),
                              ({"prompts": ["x" * 201]}, "prompts"), ({"prompts": "dog"}, "prompts"),
                              ({"prompts": ["dog"], "labels": ["dog"]}, "not both")):
            with pytest.raises(RequestError, match=message):
                door({"image": image, **body})
    expected = owlv2_package(owlv2, rgb, ["dog", "zebra crossing"], 0.05)
    assert expected, "the random model finds something at this threshold"
    assert_boxes_equal(reply, expected, ["dog", "zebra crossing"])


def test_a_fixed_class_detector_refuses_prompts(models_dir, dog):
    path, _ = dog
    with door_of(ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio", MODELS_DIR=str(models_dir)) as door:
        with pytest.raises(RequestError, match="fixed list of labels"):
            door({"image": b64_file(path), "prompts": ["dog"]})


def sam3_package(folder, rgb: np.ndarray, phrase: str, threshold: float) -> dict:
    """The package's own path for one phrase: processor, model, post-processing at the image's size."""
    from transformers import Sam3Model, Sam3Processor

    processor = Sam3Processor.from_pretrained(folder)
    model = Sam3Model.from_pretrained(folder).eval()
    with torch.no_grad():
        outputs = model(**processor(images=rgb, text=phrase, return_tensors="pt"))
    (found,) = processor.post_process_instance_segmentation(outputs, threshold=threshold, mask_threshold=0.5,
                                                            target_sizes=[rgb.shape[:2]])
    return found


def test_sam3_equals_the_package_one_phrase_at_a_time(sam3, dog, tmp_path):
    """The image encoded once for all phrases gives each phrase's instances as the package's own call does."""
    path, rgb = dog
    height, width = rgb.shape[:2]
    folder = vocabulary.staged(SAM3, vocabulary.parse("dog,car,person"), tmp_path / "f")
    with door_of(folder, MODEL_PATH=str(sam3), TORCH_DEVICE="cpu") as door:
        reply = door({"image": b64_file(path), "threshold": 0.1}).payload
    expected = []
    for name in ("dog", "car", "person"):
        found = sam3_package(sam3, rgb, name, 0.1)
        expected += [(name, float(s), m) for s, m in zip(found["scores"], found["masks"].numpy().astype(bool))
                     if m.any()]
    expected.sort(key=lambda e: -e[1])
    assert expected and len(reply) == len(expected)
    got = sorted(reply, key=lambda s: -float(s["confidence"]))
    for shape, (name, score, mask) in zip(got, expected):
        assert shape["type"] == "mask" and shape["label"] == name and shape["confidence"] == f"{score:.4f}"
        assert np.array_equal(from_cvat_mask(shape["mask"], width, height), mask)


def test_sam3_merges_one_labels_phrases_and_never_two_labels(sam3, dog, tmp_path):
    path, _ = dog
    words = {"pet": ["dog", "puppy"], "dog": ["dog"]}  # the same phrase under two labels stays twice
    folder = vocabulary.staged(SAM3, vocabulary.parse(write(tmp_path / "words.json", words)), tmp_path / "f")
    with door_of(folder, MODEL_PATH=str(sam3), TORCH_DEVICE="cpu") as door:
        found = door.model.detect(Image.from_bytes(path.read_bytes()), 0.1)
        ids = {label.name: door.model.labels.id_of(label) for label in door.model.labels}
        pets, dogs = found[found.class_id == ids["pet"]], found[found.class_id == ids["dog"]]
    assert len(dogs) > 0 and len(pets) > 0
    # within "pet", no two instances overlap by more than MERGE_IOU (0.7) in their boxes
    for i in range(len(pets)):
        for j in range(i + 1, len(pets)):
            assert box_iou(list(pets.xyxy[i]), list(pets.xyxy[j])) <= 0.7


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


# ---------------------------------------------------------------- the vocabulary


def test_a_vocabulary_from_names_or_files(tmp_path):
    assert vocabulary.parse(" car, traffic light ,") == {"car": ["car"], "traffic light": ["traffic light"]}
    assert vocabulary.parse(write(tmp_path / "v.json", ["a", "b"])) == {"a": ["a"], "b": ["b"]}
    (tmp_path / "v.yaml").write_text("car: [car, van]\nperson: person\n")
    assert vocabulary.parse(str(tmp_path / "v.yaml")) == {"car": ["car", "van"], "person": ["person"]}
    for bad in (",", write(tmp_path / "bad.json", {"car": []}), write(tmp_path / "bad2.json", 3)):
        with pytest.raises(vocabulary.VocabularyError):
            vocabulary.parse(bad)
    yolox = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"
    with pytest.raises(vocabulary.VocabularyError, match="fixed"):
        vocabulary.staged(yolox, {"car": ["car"]}, tmp_path / "y")
    text = (OWLV2 / "function.yaml").read_text()
    rewritten = vocabulary.rewrite(text, {"car": ["car", "van"], "person": ["person"]})
    import yaml

    before, after = yaml.safe_load(text), yaml.safe_load(rewritten)
    assert json.loads(after["metadata"]["annotations"]["spec"]) == [
        {"id": 0, "name": "car", "type": "rectangle", "prompts": ["car", "van"]},
        {"id": 1, "name": "person", "type": "rectangle"}]
    del before["metadata"]["annotations"]["spec"], after["metadata"]["annotations"]["spec"]
    assert before == after  # nothing else changes


def test_serve_lists_the_vocabulary_and_the_deploy_scripts_stage_it(owlv2, dog, tmp_path, monkeypatch):
    from tools.cli import with_vocabulary
    from tools.config import find_configs

    monkeypatch.setenv("MODEL_PATH", str(owlv2))
    monkeypatch.setenv("TORCH_DEVICE", "cpu")
    configs = with_vocabulary(find_configs([OWLV2]), "bus,giraffe", tmp_path)
    from tools.harness import serving

    with serving(configs, 120) as harness:
        code, _, listed = http("GET", f"http://127.0.0.1:{harness.port}/api/functions")
        reply = http("POST", function_url(harness), {"image": b64_file(dog[0]), "threshold": 0.05})[2]
    (function,) = listed.values()
    assert [label["name"] for label in json.loads(function["metadata"]["annotations"]["spec"])] == ["bus", "giraffe"]
    assert reply and {s["label"] for s in reply} <= {"bus", "giraffe"}

    stage = tmp_path / "staged"
    result = subprocess.run([str(ROOT / "deploy_cpu.sh"), "--dry-run", "--stage-to", str(stage), "--labels",
                             "bus,giraffe", str(OWLV2.parent), str(ROOT / "functions" / "onnx" / "megvii")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import yaml

    def labels_of(name):
        config = yaml.safe_load((stage / name / "function.yaml").read_text())
        return [label["name"] for label in json.loads(config["metadata"]["annotations"]["spec"])]

    assert labels_of("pth-google-owlv2") == ["bus", "giraffe"]
    assert len(labels_of("onnx-megvii-yolox")) == 80  # a fixed-label detector keeps its spec


def test_the_auto_annotation_function_takes_the_vocabulary(owlv2, monkeypatch):
    from common.doors import cvat_sdk

    monkeypatch.setenv("TORCH_DEVICE", "cpu")
    monkeypatch.setenv("MODEL_PATH", str(owlv2))  # create() sets -p settings for good; the test's end undoes this
    function = cvat_sdk.create(function=str(OWLV2), labels="bus,giraffe")
    assert [label.name for label in function.spec.labels] == ["bus", "giraffe"]


def test_a_refused_download_says_what_to_do(monkeypatch, tmp_path):
    """The hub's answer for a gated checkpoint without an accepted licence (transformers raises OSError) becomes
    a 503 that names the licence page and HF_TOKEN; MODEL_PATH and MODELS_DIR/<name> folders come first."""
    from common.models.text_prompts import WeightsRefused, pretrained

    def gated(source, **kwargs):
        raise OSError(f"You are trying to access a gated repo. 401 Client Error for {source}")

    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsRefused, match="accept its licence on https://huggingface.co/facebook/sam3") as error:
        pretrained(gated, "facebook/sam3", "https://huggingface.co/facebook/sam3")
    assert error.value.status == 503 and "HF_TOKEN" in str(error.value)
    seen = []
    (tmp_path / "sam3").mkdir()
    pretrained(lambda source, **kwargs: seen.append(source), "facebook/sam3")
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    pretrained(lambda source, **kwargs: seen.append((source, kwargs)), "facebook/sam3")
    assert seen == [str(tmp_path / "sam3"), (str(tmp_path / "elsewhere"), {"token": "hf_x"})]

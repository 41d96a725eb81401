"""The Label Studio door against a real Label Studio 1.23 server (tests/label_studio.py): projects with real
labeling configs, tasks uploaded to Label Studio, our served function connected as the project's ML backend, and
what Label Studio stored read back and compared with what the model finds in the same image."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from common.core.image import Image
from common.core.prompts import Prompt
from common.models.folder import load_model
from tests.conftest import ROOT, function_url, http, running
from tests.label_studio import LabelStudio

FUNCTIONS = ROOT / "functions"
YOLOX = FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio"
YUNET = FUNCTIONS / "opencv" / "shiqiyu" / "yunet" / "nuclio"
PPOCR = FUNCTIONS / "onnx" / "paddlepaddle" / "ppocr" / "nuclio"
MASK_RCNN = FUNCTIONS / "pytorch" / "torchvision" / "maskrcnn" / "nuclio"
GRABCUT = FUNCTIONS / "opencv" / "opencv" / "grabcut" / "nuclio"

BOXES = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="dog"/><Label value="Vehicle" predicted_values="car,truck"/>
<Label value="unicorn"/></RectangleLabels></View>"""
FACES = """<View><Image name="image" value="$image"/>
<RectangleLabels name="face" toName="image"><Label value="face"/></RectangleLabels>
<KeyPointLabels name="points" toName="image"><Label value="right eye"/><Label value="left eye"/><Label value="nose tip"/>
<Label value="right mouth corner"/><Label value="left mouth corner"/></KeyPointLabels></View>"""
TEXT = """<View><Image name="image" value="$image"/>
<PolygonLabels name="line" toName="image"><Label value="text"/></PolygonLabels>
<TextArea name="transcription" toName="image" perRegion="true" editable="true"/></View>"""
BRUSH = """<View><Image name="image" value="$image"/>
<BrushLabels name="mask" toName="image">{labels}</BrushLabels></View>"""
SMART = """<View><Image name="image" value="$image"/>
<BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
<PolygonLabels name="outline" toName="image"><Label value="object"/></PolygonLabels>
<KeyPointLabels name="click" toName="image" smart="true"><Label value="object"/></KeyPointLabels>
<RectangleLabels name="box" toName="image" smart="true"><Label value="object"/></RectangleLabels></View>"""

# what a hostile client might send as a config: an external entity (a file of the function's machine) and
# entities that expand exponentially
XXE = ('<?xml version="1.0"?><!DOCTYPE View [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
       '<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image">'
       '<Label value="&secret;"/><Label value="dog"/></RectangleLabels></View>')
LAUGHS = ('<!doctype View [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><View><Image name="image" value="$image"/>'
          '<RectangleLabels name="l" toName="image"><Label value="&c;"/></RectangleLabels></View>')


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    server = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


@pytest.fixture
def studio_env(studio, monkeypatch):
    """The variables a function needs to fetch Label Studio's uploaded images."""
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.token)
    return studio


def stored(studio: LabelStudio, config: str, folder: Path, images: list[Path]) -> tuple[list[list[dict]], list[int]]:
    """A project with ``config``, the images uploaded as tasks, the function at ``folder`` connected, its
    predictions retrieved through the Data Manager action: the predictions Label Studio stored per task."""
    project = studio.project(config)
    tasks = studio.upload(project, *images)
    with running(folder, timeout=300) as harness:
        studio.connect(project, function_url(harness))
        studio.retrieve(project, tasks)
    return [studio.predictions(task) for task in tasks], tasks


def only_prediction(found: list[dict], config: str) -> dict:
    assert len(found) == 1, found
    prediction = found[0]
    assert prediction["model_version"] and prediction["result"], prediction
    assert LabelInterface(config).validate_prediction(prediction, return_errors=True) == []
    return prediction


def stored_and_found(studio: LabelStudio, config: str, folder: Path, path: Path) -> tuple[dict, list, Image]:
    """What Label Studio stored for one image (:func:`stored`, :func:`only_prediction`), and what the model
    finds in the same bytes in this process: its shapes and the image."""
    found, _ = stored(studio, config, folder, [path])
    model = load_model(folder)
    image = Image.from_bytes(path.read_bytes())
    return only_prediction(found[0], config), model.run(image).shapes(model.labels, *image.size), image


def test_yolox_boxes_are_stored_as_our_detections(studio_env, data_dir, models_dir):
    prediction, shapes, image = stored_and_found(studio_env, BOXES, YOLOX, data_dir / "images" / "dog.jpg")
    expected = [s for s in shapes if s.label.name in ("dog", "car", "truck")]
    regions = prediction["result"]
    assert len(regions) == len(expected) >= 2
    width, height = image.size
    for region, shape in zip(regions, expected):
        x1, y1, x2, y2 = shape.box
        value = region["value"]
        assert value["rectanglelabels"] == ["dog" if shape.label.name == "dog" else "Vehicle"]
        assert np.allclose([value["x"], value["y"], value["width"], value["height"]],
                           [100 * x1 / width, 100 * y1 / height, 100 * (x2 - x1) / width, 100 * (y2 - y1) / height],
                           atol=0.01)
        assert region["score"] == pytest.approx(shape.score, abs=1e-6)
        assert (region["original_width"], region["original_height"]) == (width, height)
    assert prediction["score"] == pytest.approx(np.mean([s.score for s in expected]), abs=1e-6)


def test_yunet_faces_with_named_keypoints(studio_env, data_dir, models_dir):
    prediction, shapes, image = stored_and_found(studio_env, FACES, YUNET, data_dir / "images" / "grace_hopper.png")
    skeleton = next(s for s in shapes if s.geometry == "skeleton")
    points = {r["value"]["keypointlabels"][0]: r["value"] for r in prediction["result"] if r["type"] == "keypointlabels"}
    assert set(points) == {s.name for s in skeleton.label.sublabels}
    for sublabel, (x, y, _) in zip(skeleton.label.sublabels, skeleton.keypoints):
        assert points[sublabel.name]["x"] == pytest.approx(100 * x / image.size[0], abs=0.01)
        assert points[sublabel.name]["y"] == pytest.approx(100 * y / image.size[1], abs=0.01)
    faces = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
    assert [r["value"]["rectanglelabels"] for r in faces] == [["face"]] * sum(s.label.name == "face" for s in shapes)


def test_ppocr_text_in_a_per_region_textarea(studio_env, data_dir, models_dir):
    prediction, shapes, _ = stored_and_found(studio_env, TEXT, PPOCR, data_dir / "images" / "page.png")
    lines = {r["id"]: r for r in prediction["result"] if r["type"] == "polygonlabels"}
    texts = {r["id"]: r["value"]["text"][0] for r in prediction["result"] if r["type"] == "textarea"}
    assert len(lines) == len(texts) == len(shapes) > 0
    assert sorted(texts.values()) == sorted(str(s.attributes["text"]) for s in shapes)
    assert set(texts) == set(lines)


def test_mask_rcnn_brush_masks_pixel_for_pixel(studio_env, data_dir, tmp_path, monkeypatch):
    from tools.replies import random_weights

    env = {**random_weights(MASK_RCNN, tmp_path), "LABEL_STUDIO_THRESHOLD": "0.05", "DETECTIONS_PER_IMAGE": "5"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    person = data_dir / "images" / "person.jpg"
    model = load_model(MASK_RCNN)
    image = Image.from_bytes(person.read_bytes())
    shapes = [s for s in model.run(image, 0.05).shapes(model.labels, *image.size) if s.geometry == "mask"]
    assert shapes, "random weights found nothing to compare"
    names = sorted({s.label.name for s in shapes})
    config = BRUSH.format(labels="".join(f'<Label value="{name}"/>' for name in names))
    found, _ = stored(studio_env, config, MASK_RCNN, [person])
    prediction = only_prediction(found[0], config)
    regions = prediction["result"]
    assert len(regions) == len(shapes)
    width, height = image.size
    for region, shape in zip(regions, shapes):
        assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == [shape.label.name]
        pixels = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
        assert np.array_equal(pixels, shape.mask.full(width, height))


def test_grabcut_answers_the_smart_tools(studio_env, data_dir):
    """Label Studio's interactive-annotating call: a box and a negative click become a brush mask and its
    outline, equal to GrabCut's own answer to the same prompt."""
    dog = data_dir / "images" / "dog.jpg"
    project = studio_env.project(SMART)
    (task,) = studio_env.upload(project, dog)
    image = Image.from_bytes(dog.read_bytes())
    width, height = image.size
    box = {"x": 100 * 130 / width, "y": 200 / height * 100, "width": 100 * 200 / width, "height": 100 * 340 / height}
    context = {"result": [
        {"id": "b", "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": width,
         "original_height": height, "image_rotation": 0, "value": {**box, "rotation": 0, "rectanglelabels": ["object"]}},
        {"id": "k", "type": "keypointlabels", "from_name": "click", "to_name": "image", "original_width": width,
         "original_height": height, "image_rotation": 0, "is_positive": False,
         "value": {"x": 100 * 320 / width, "y": 100 * 230 / height, "width": 0.5, "keypointlabels": ["object"]}},
    ]}
    with running(GRABCUT) as harness:
        backend = studio_env.connect(project, function_url(harness), interactive=True)
        answer = studio_env.interactive(backend, task, context)
    assert "errors" not in answer, answer
    regions = answer["data"]["result"]
    brush = [r for r in regions if r["type"] == "brushlabels"]
    outline = [r for r in regions if r["type"] == "polygonlabels"]
    assert len(brush) == 1 and outline and brush[0]["value"]["brushlabels"] == ["object"]
    x, y = box["x"] * width / 100, box["y"] * height / 100
    prompt = Prompt(np.zeros((0, 2)), np.array([[320 * 1.0, 230 * 1.0]]),
                    (x, y, x + box["width"] * width / 100, y + box["height"] * height / 100))
    expected = load_model(GRABCUT).segment(image, prompt).to_mask(width, height)
    pixels = decode_rle(brush[0]["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
    assert pixels.any() and np.array_equal(pixels, expected)


def test_basic_auth_is_honoured(studio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_BASIC_AUTH", "studio:s3cret")
    project = studio.project(BOXES)
    with running(YOLOX) as harness:
        url = function_url(harness)
        refused = studio.api("POST", "/api/ml", {"project": project, "url": url, "title": "fn"}, status=400)
        assert "auth" in str(refused).lower()
        studio.connect(project, url, auth=("studio", "s3cret"))
        assert http("GET", url + "health")[0] == 401
        assert http("POST", url + "webhook", {"action": "TASKS_CREATED"})[0] == 200  # Label Studio sends none there
        token = base64.b64encode(b"studio:s3cret").decode()
        assert http("GET", url + "health", headers={"Authorization": f"Basic {token}"})[0] == 200


def test_a_config_with_nothing_to_fill_is_refused_at_connect(studio):
    project = studio.project(BOXES.replace('<Label value="dog"/><Label value="Vehicle" predicted_values="car,truck"/>',
                                           ""))
    with running(YOLOX) as harness:
        refused = studio.api("POST", "/api/ml", {"project": project, "url": function_url(harness), "title": "fn"},
                             status=400)
    assert refused


def predict(url: str, tasks: list, config: str = BOXES, status: int = 200, **extra) -> dict:
    code, _, reply = http("POST", url + "predict", {"tasks": tasks, "label_config": config, **extra})
    assert code == status, reply
    return reply


def test_bad_input_is_a_clear_error_and_the_worker_lives(data_dir, monkeypatch):
    """Without Label Studio: the calls it makes, with what a broken project or a hostile client sends."""
    monkeypatch.setenv("LABEL_STUDIO_ALLOWED_HOSTS", "images.example.com,127.0.0.1")
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "1000")
    with running(YOLOX) as harness:
        url = function_url(harness)
        reply = predict(url, [{"id": 1, "data": {"picture": "x"}}, {"id": 2, "data": {"image": "/data/upload/1/a.jpg"}},
                              {"id": 3, "data": {"image": "https://elsewhere.example.org/a.jpg"}},
                              {"id": 4, "data": {"image": "http://images.example.com/a.jpg"}},
                              {"id": 5, "data": {"image": 12}}, {"id": 6},
                              {"id": 7, "data": {"image": "https://127.0.0.1:1/a.jpg"}}])
        assert reply["results"] == [[]] * 7
        errors = {e["task"]: e["error"] for e in reply["errors"]}
        assert "has no 'image'" in errors[1] and "'picture'" in errors[1]
        assert "LABEL_STUDIO_URL" in errors[2]
        assert "not in LABEL_STUDIO_ALLOWED_HOSTS" in errors[3]
        assert "LABEL_STUDIO_ALLOW_HTTP" in errors[4]
        assert "URL string" in errors[5] and "no data" in errors[6] and "could not be fetched" in errors[7]
        for body, fragment in [({"tasks": []}, "tasks"), ({"tasks": [{}], "label_config": "<View"}, "cannot be read"),
                               ({"tasks": [{}], "label_config": BRUSH.format(labels="<Label value='x'/>")},
                                "no control this function can fill"),
                               ({"tasks": [{}], "label_config": XXE}, "DOCTYPE"),
                               ({"tasks": [{}], "label_config": LAUGHS}, "DOCTYPE")]:
            code, _, answer = http("POST", url + "predict", body)
            assert code == 400 and fragment in answer["error"], answer
        code, _, answer = http("POST", url + "setup", {"schema": "<View><Text name='t' value='$t'/></View>"})
        assert code == 400 and "no control" in answer["error"]
        assert http("POST", url + "predict", b"[" * 100000)[0] == 400
        assert http("GET", url + "predict")[0] == 405
        assert http("GET", url + "versions")[2] == {"versions": ["onnx-megvii-yolox"]}
        assert http("GET", url + "health")[2]["status"] == "UP"


def test_an_oversized_image_is_that_tasks_error(studio_env, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "100000")  # dog.jpg has 442368
    project = studio_env.project(BOXES)
    tasks = studio_env.upload(project, data_dir / "images" / "dog.jpg")
    task = {"id": tasks[0], "data": studio_env.client.tasks.get(tasks[0]).data}
    with running(YOLOX) as harness:
        reply = predict(function_url(harness), [task])
    assert reply["results"] == [[]] and "pixels" in reply["errors"][0]["error"]


def test_a_personal_access_token_is_exchanged_for_access(studio, data_dir, monkeypatch):
    """Label Studio's newer API keys: the function trades the personal access token for a Bearer access token."""
    project = studio.project(BOXES)
    (task,) = studio.upload(project, data_dir / "images" / "dog.jpg")
    data = studio.client.tasks.get(task).data
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.personal_token())
    with running(YOLOX) as harness:
        reply = predict(function_url(harness), [{"id": task, "data": data}])
    assert "errors" not in reply and reply["results"][0]["result"], reply
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "a.b.c")  # shaped like one, refused by the server
    with running(YOLOX) as harness:
        code, _, refused = http("POST", function_url(harness) + "predict",
                                {"tasks": [{"id": task, "data": data}], "label_config": BOXES})
    assert code == 502 and "LABEL_STUDIO_API_KEY was refused" in refused["error"]


def test_the_key_goes_to_label_studio_only_never_on_to_a_redirect(tmp_path):
    """A URL on Label Studio's own server gets the key; a redirect elsewhere (an allowed host) does not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from common.runtime.fetch import Fetcher

    seen = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.server.server_port, self.path, self.headers.get("Authorization")))
            if self.path == "/data/upload/1/a.png":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{other.server_port}/b.png")
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"image bytes")

        def log_message(self, *args):
            pass

    studio_side, other = (ThreadingHTTPServer(("127.0.0.1", 0), Recorder) for _ in range(2))
    for server in (studio_side, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{studio_side.server_port}/"
        fetch = Fetcher(["localhost"], True, 5, 1000, variable="LABEL_STUDIO", trusted=base)
        assert fetch(base + "data/upload/1/a.png", {"Authorization": "Token secret"}) == b"image bytes"
    finally:
        studio_side.shutdown()
        other.shutdown()
    assert seen == [(studio_side.server_port, "/data/upload/1/a.png", "Token secret"),
                    (other.server_port, "/b.png", None)]


def test_other_kinds_have_no_label_studio_route():
    with running(FUNCTIONS / "onnx" / "honglinchu" / "nanotrack" / "nuclio") as harness:
        code, _, reply = http("GET", function_url(harness) + "health")
    assert code == 404 and "detectors and interactors" in reply["error"]


# ---------------------------------------------------------------- in this process, beside a local image server

def studio_door(folder: Path, base: str, env: dict[str, str] | None = None, threshold: float = -1.0):
    from common.doors.label_studio import LabelStudioDoor, LabelStudioSettings

    model = load_model(folder, env={"TORCH_DEVICE": "cpu", **(env or {})})
    return LabelStudioDoor(model, LabelStudioSettings(url=base, threshold=threshold))


@pytest.mark.parametrize("folder", [FUNCTIONS / "pytorch" / "facebookresearch" / "sam" / "nuclio",
                                    FUNCTIONS / "pytorch" / "facebookresearch" / "sam2" / "nuclio"],
                         ids=["sam", "sam2"])
def test_sam_clicks_reuse_the_embedding(folder, images_url, data_dir, tmp_path):
    """Random weights of the real architecture: a positive click, then one more on the same image; the second
    runs only the decoder (a cache hit), and each answer is the model's own mask for that prompt."""
    from tools.replies import random_weights

    door = studio_door(folder, images_url, random_weights(folder, tmp_path))
    image = Image.from_bytes((data_dir / "images" / "dog.jpg").read_bytes())
    width, height = image.size
    clicks = [(300.0, 350.0, True), (200.0, 300.0, False)]
    cached = []
    for n in (1, 2):
        context = {"result": [{"type": "keypointlabels", "is_positive": positive, "original_width": width,
                               "original_height": height, "value": {"x": 100 * x / width, "y": 100 * y / height,
                                                                    "width": 0.5, "keypointlabels": ["object"]}}
                              for x, y, positive in clicks[:n]]}
        reply, headers = door.call("predict", "POST", lambda: {"tasks": [{"id": 1, "data": {"image": "/dog.jpg"}}],
                                                               "label_config": SMART, "params": {"context": context}})
        cached.append(headers["X-Embedding-Cache"])
        prompt = Prompt(np.array([[x, y] for x, y, p in clicks[:n] if p]).reshape(-1, 2),
                        np.array([[x, y] for x, y, p in clicks[:n] if not p]).reshape(-1, 2))
        region = door.model.segment(image, prompt)
        brush = [r for r in reply["results"][0]["result"] if r["type"] == "brushlabels"]
        if region is None or not region.to_mask(width, height).any():
            assert brush == [] or not (decode_rle(brush[0]["value"]["rle"]) > 0).any()
            continue
        pixels = decode_rle(brush[0]["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
        assert np.array_equal(pixels, region.to_mask(width, height))
    assert cached == ["miss", "hit"]


def test_owlv2_looks_for_the_configs_own_label_names(images_url, data_dir, tmp_path):
    """A text-prompted detector takes the config's labels as its vocabulary, names its spec lacks included."""
    from tests.test_text_prompts import OWLV2, owlv2_package
    from tools.random_weights import owlv2_folder

    folder = owlv2_folder(tmp_path / "owlv2")
    door = studio_door(OWLV2, images_url, {"MODEL_PATH": str(folder)}, threshold=0.05)
    config = BOXES.replace('<Label value="unicorn"/>', '<Label value="zebra crossing"/>')
    reply, _ = door.call("predict", "POST", lambda: {"tasks": [{"id": 1, "data": {"image": "/dog.jpg"}}],
                                                     "label_config": config})
    rgb = Image.from_bytes((data_dir / "images" / "dog.jpg").read_bytes()).rgb
    phrases = ["dog", "car", "truck", "zebra crossing"]  # the config's names, predicted_values expanded
    expected = owlv2_package(folder, rgb, phrases, 0.05)
    assert expected, "the random model finds something at this threshold"
    regions = reply["results"][0]["result"]
    shown = {"dog": "dog", "car": "Vehicle", "truck": "Vehicle", "zebra crossing": "zebra crossing"}
    assert [r["value"]["rectanglelabels"][0] for r in regions] == [shown[phrases[i]] for i, _, _ in expected]
    height, width = rgb.shape[:2]
    for region, (_, score, (x1, y1, x2, y2)) in zip(regions, expected):
        assert region["score"] == pytest.approx(score, abs=1e-5)
        assert region["value"]["x"] == pytest.approx(100 * x1 / width, abs=0.01)
        assert region["value"]["width"] == pytest.approx(100 * (x2 - x1) / width, abs=0.01)


@pytest.mark.parametrize("context, fragment", [
    ({"result": "click"}, "must be a list"), ({"result": []}, "must be a list"), ({"result": [5]}, "must be a region"),
    ({"result": [{"type": "keypointlabels", "value": {"x": 250.0, "y": 10}}]}, "outside"),
    ({"result": [{"type": "keypointlabels", "value": {"x": "1", "y": 10}}]}, "must be a number"),
    ({"result": [{"type": "keypointlabels", "value": {"x": 1e400, "y": 10}}]}, "finite"),
    ({"result": [{"type": "rectanglelabels", "value": {"x": 120, "y": 10, "width": 5, "height": 5}}]}, "no area"),
    ({"result": [{"type": "polygonlabels", "value": {"x": 1, "y": 1}}]}, "not a prompt"),
])
def test_a_bad_smart_tool_context_is_a_400(images_url, context, fragment):
    from common.core.errors import RequestError

    door = studio_door(GRABCUT, images_url)
    with pytest.raises(RequestError, match=fragment):
        door.call("predict", "POST", lambda: {"tasks": [{"id": 1, "data": {"image": "/dog.jpg"}}], "label_config": SMART,
                                             "params": {"context": context}})

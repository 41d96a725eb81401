"""The playground page of ``tools/fn serve`` in a real browser: Debian's chromium driven by selenium through
chromium-driver (both installed by ``tools/fn test``; these tests fail, never skip, without them).

One harness serves a function of every kind: YOLOX, YuNet, PP-OCR, GrabCut and NanoTrack with their real weights,
SAM, OWLv2 and ReID with small random models. Each test uses the page as a person would (file inputs, clicks,
drags, sliders) and checks that what it draws is what the function answers: the SVG shapes' coordinates and
their place on the screen against the reply of the same request sent directly, masks pixel for pixel.
``PLAYGROUND_SCREENSHOTS=DIR`` keeps a screenshot per kind there (the README's come from such a run).
"""

from __future__ import annotations

import base64
import copy
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, b64_file, http

FUNCTIONS = ROOT / "functions"
FOLDERS = {
    "yolox": FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio",
    "yunet": FUNCTIONS / "opencv" / "shiqiyu" / "yunet" / "nuclio",
    "ppocr": FUNCTIONS / "onnx" / "paddlepaddle" / "ppocr" / "nuclio",
    "grabcut": FUNCTIONS / "opencv" / "opencv" / "grabcut" / "nuclio",
    "nanotrack": FUNCTIONS / "onnx" / "honglinchu" / "nanotrack" / "nuclio",
    "sam": FUNCTIONS / "pytorch" / "facebookresearch" / "sam" / "nuclio",
    "owlv2": FUNCTIONS / "pytorch" / "google" / "owlv2" / "nuclio",
    "reid": FUNCTIONS / "pytorch" / "torchvision" / "reid" / "nuclio",
    "maskrcnn": FUNCTIONS / "pytorch" / "torchvision" / "maskrcnn" / "nuclio",
}
RANDOM = ("sam", "owlv2", "reid", "maskrcnn")  # no offline weights: small random models of the same classes
WAIT = 120  # seconds a call may take on the 2-core CI machine (SAM's first embedding with random ViT-B weights)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def served(models_dir, redis_server, tmp_path_factory):
    """One harness over every folder above; {key: (function name, direct URL)} and the dashboard's URL."""
    from tools.config import find_configs
    from tools.harness import serving
    from tools.replies import random_weights

    scratch = tmp_path_factory.mktemp("playground-weights")
    configs = []
    for key, folder in FOLDERS.items():
        config = find_configs([folder])[0]
        if key in RANDOM:  # each its own MODEL_PATH, in its own spec.env (the shell's variables would win)
            config = type(config)(config.path, copy.deepcopy(config.config))
            env = config.config.setdefault("spec", {}).setdefault("env", [])
            weights = random_weights(folder, scratch)
            if key == "maskrcnn":  # a few of its random detections, quickly
                weights["DETECTIONS_PER_IMAGE"] = "4"
            env += [{"name": k, "value": v} for k, v in weights.items()]
        configs.append(config)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**redis_server.env(), "TORCH_DEVICE": "cpu"}.items():
            patch.setenv(name, value)
        with serving(configs, 300) as harness:
            names = {key: config.name for key, config in zip(FOLDERS, configs)}
            yield {"names": names, "dashboard": f"http://127.0.0.1:{harness.port}",
                   "urls": {key: f"http://127.0.0.1:{harness.functions[name].http_port}/"
                            for key, name in names.items()},
                   "harness": harness}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed ({exc}); tools/fn installs requirements-dev.txt")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed (tools/fn test installs the Debian packages chromium and "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1600", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    try:
        session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except Exception as exc:  # noqa: BLE001 - any failure to start is the same failure here
        pytest.fail(f"chromium did not start under chromedriver: {exc}")
    session.set_script_timeout(WAIT)
    yield session
    session.quit()


def screenshot(browser, name: str) -> None:
    """With ``PLAYGROUND_SCREENSHOTS=DIR``: DIR/NAME.jpg, the workspace (or the function list before one is
    open) as the browser drew it."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    folder = os.environ.get("PLAYGROUND_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    workspace = browser.find_element(By.ID, "workspace")
    part = workspace if workspace.is_displayed() else browser.find_element(By.ID, "functions")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", part)
    picture = Image.open(io.BytesIO(part.screenshot_as_png)).convert("RGB")
    picture.save(Path(folder) / f"{name}.jpg", quality=80, optimize=True)


# ---------------------------------------------------------------- page helpers

def open_function(browser, served, key: str) -> None:
    """The page, then the function's Try button (a fresh page each time: no state carried between tests)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served["dashboard"] + "/")
    name = served["names"][key]
    button = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-try="{name}"]'))
    WebDriverWait(browser, 30).until(lambda d: button.is_enabled())
    button.click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "workspace").is_displayed())


def calls(browser) -> int:
    return int(browser.execute_script('return document.getElementById("call-status").dataset.calls || "0"'))


def wait_reply(browser, before: int, count: int = 1) -> dict:
    """Until the page has shown ``count`` more replies than ``before``; the last call's status and latency."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(lambda d: calls(d) >= before + count)
    return browser.execute_script('const s = document.getElementById("call-status"); '
                                  'return {status: Number(s.dataset.status), ms: Number(s.dataset.ms), text: s.textContent,'
                                  ' error: document.getElementById("call-error").hidden ? null : '
                                  'document.getElementById("call-error").textContent}')


def upload(browser, input_id: str, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, input_id).send_keys("\n".join(str(p) for p in paths))


SHAPES = """
const stage = document.querySelector(arguments[0]);
const image = stage.querySelector("img").getBoundingClientRect();
const natural = stage.querySelector("svg").viewBox.baseVal;
return {scale: image.width / natural.width, image: [image.left, image.top, image.width, image.height],
  shapes: [...stage.querySelectorAll(".shapes .shape-group")].map((g) => {
    const el = g.querySelector(".shape");
    const box = el.getBoundingClientRect();
    const number = (name) => Number(el.getAttribute(name));
    return {type: g.dataset.type, label: g.dataset.label, tip: g.dataset.tip, tag: el.tagName,
      rect: el.tagName === "rect" ? [number("x"), number("y"), number("width"), number("height")] : null,
      points: el.getAttribute("points"), href: el.getAttribute("href"),
      image: el.tagName === "image" ? [number("x"), number("y"), number("width"), number("height")] : null,
      keypoints: [...g.querySelectorAll(".keypoint")].map((k) => [k.dataset.label, Number(k.getAttribute("cx")),
        Number(k.getAttribute("cy"))]),
      texts: [...g.querySelectorAll("text.recognised")].map((t) => t.textContent),
      edges: [...g.querySelectorAll("line.edge")].map((l) => [l.dataset.from, l.dataset.to,
        ...["x1", "y1", "x2", "y2"].map((name) => Number(l.getAttribute(name)))]),
      screen: [box.left, box.top, box.width, box.height]};
  })};
"""


def drawn(browser, stage: str = "#stage0") -> dict:
    return browser.execute_script(SHAPES, stage)


def assert_on_screen(page: dict, shape: dict, box: list[float]) -> None:
    """The shape's rendered box is ``box`` (image pixels: x1, y1, x2, y2) scaled onto the shown image."""
    left, top, _, _ = page["image"]
    scale = page["scale"]
    want = [left + box[0] * scale, top + box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale]
    assert np.allclose(shape["screen"], want, atol=1.5), (shape["screen"], want)


def polygon_points(text: str) -> list[float]:
    return [float(v) for pair in text.split() for v in pair.split(",")]


def mask_pixels(href: str) -> np.ndarray:
    """The set pixels of a drawn mask (its PNG data URL)."""
    from PIL import Image

    data = base64.b64decode(href.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., 3] > 0


def rle_pixels(points: list[int]) -> np.ndarray:
    from common.core.rle import rle_decode

    xtl, ytl, xbr, ybr = points[-4:]
    return rle_decode(points[:-4], (xbr - xtl + 1) * (ybr - ytl + 1)).reshape(ybr - ytl + 1, xbr - xtl + 1)


def in_view(browser, stage: str):
    """The stage's SVG, scrolled so that the whole image is on the screen (a pointer lands where it is sent)."""
    from selenium.webdriver.common.by import By

    svg = browser.find_element(By.CSS_SELECTOR, f"{stage} svg")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", svg)
    top, bottom, height = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom, window.innerHeight]", svg)
    assert top >= 0 and bottom <= height, "the window is too small for the image"
    return svg


def pointer_at(browser, stage: str, x: float, y: float):
    """Actions with the pointer on image pixel (x, y) of ``stage`` (offsets count from the SVG's centre), and
    the image's scale on the screen."""
    from selenium.webdriver.common.action_chains import ActionChains

    svg = in_view(browser, stage)
    page = drawn(browser, stage)
    width, height, scale = page["image"][2], page["image"][3], page["scale"]
    return ActionChains(browser).move_to_element_with_offset(svg, round(x * scale - width / 2),
                                                             round(y * scale - height / 2)), scale


def click_at(browser, stage: str, x: float, y: float, shift: bool = False) -> None:
    from selenium.webdriver.common.keys import Keys

    chain, _ = pointer_at(browser, stage, x, y)
    (chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT) if shift else chain.click()).perform()


def drag(browser, stage: str, box: list[float]) -> None:
    """A drag over image pixels (x1, y1) to (x2, y2) of ``stage``."""
    chain, scale = pointer_at(browser, stage, box[0], box[1])
    chain.click_and_hold().move_by_offset(round((box[2] - box[0]) * scale), round((box[3] - box[1]) * scale)) \
        .release().perform()


def pick(browser, served, key: str, input_id: str, *paths: Path, stage: str = "#stage0") -> None:
    """The function's workspace with ``paths`` given to the file input ``input_id``, shown on ``stage``."""
    from selenium.webdriver.support.ui import WebDriverWait

    open_function(browser, served, key)
    upload(browser, input_id, *paths)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(f'return !!document.querySelector("{stage} svg")'))


def detect(browser, served, key: str, image: Path, prepare=None, **extra) -> tuple[dict, list]:
    """The page's detector run on ``image`` (after ``prepare(browser)``), and the function's own reply to the
    same request sent directly (threshold 0.5 unless ``extra`` says otherwise)."""
    open_function(browser, served, key)
    if prepare:
        prepare(browser)
    before = calls(browser)
    upload(browser, "det-image", image)
    assert wait_reply(browser, before)["status"] == 200
    code, _, expected = http("POST", served["urls"][key], {"image": b64_file(image), "threshold": 0.5, **extra})
    assert code == 200 and expected, f"{key} finds something in {image.name}"
    return drawn(browser), expected


# ---------------------------------------------------------------- the list

def test_the_page_lists_every_function_with_its_doors(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served["dashboard"] + "/")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#functions tbody tr")) == len(FOLDERS))
    rows = browser.execute_script("""
        return [...document.querySelectorAll("#functions tbody tr")].map((row) => ({
          name: row.dataset.function, kind: row.dataset.kind, state: row.dataset.state,
          cells: [...row.cells].map((c) => c.textContent.trim()),
          doors: Object.fromEntries([...row.querySelectorAll("a[data-door]")].map((a) => [a.dataset.door, a.href]))}));
    """)
    harness = served["harness"]
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == set(served["names"].values())
    for key, name in served["names"].items():
        row, runtime = by_name[name], harness.functions[name]
        assert row["kind"] == runtime.config.kind and row["state"] == "ready"
        assert row["cells"][3] == str(runtime.config.workers)
        port = runtime.http_port
        assert row["doors"]["CVAT / Nuclio"] == f"http://127.0.0.1:{port}/"
        assert ("V7 Darwin" in row["doors"]) == (row["kind"] == "detector")
        assert ("Label Studio" in row["doors"]) == (row["kind"] in ("detector", "interactor"))
    yolox = by_name[served["names"]["yolox"]]["cells"]
    assert yolox[4] in ("cpu", "cuda") and yolox[5].startswith("ONNX Runtime ") and "dog" in yolox[6]
    sam = by_name[served["names"]["sam"]]["cells"]
    assert sam[4] == "cpu" and sam[5].startswith("PyTorch ")  # TORCH_DEVICE=cpu here
    assert by_name[served["names"]["grabcut"]]["cells"][5].startswith("OpenCV ")
    assert "open vocabulary" in by_name[served["names"]["owlv2"]]["cells"][6]
    assert "face landmarks (" in by_name[served["names"]["yunet"]]["cells"][6]  # a skeleton's points
    # everything the page loaded came from this server: it works offline
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).origin)")
    assert set(origins) <= {served["dashboard"]}
    # the API paths answer as before
    status, _, functions = http("GET", served["dashboard"] + "/api/functions")
    assert status == 200 and set(functions) == set(by_name)
    screenshot(browser, "functions")


def test_a_function_that_failed_to_start_shows_why(browser, tmp_path):
    """A worker whose init fails: the function is listed in state error with the message, and cannot be tried."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tools.config import find_configs
    from tools.harness import Harness

    config = find_configs([FOLDERS["grabcut"]])[0]
    broken = copy.deepcopy(config.config)
    broken["metadata"]["name"] = "broken-grabcut"
    broken["spec"]["handler"] = "main:no_such_handler"
    harness = Harness([type(config)(config.path, broken)], port=0)
    harness.start()
    try:
        harness.wait_ready(60)
        browser.get(f"http://127.0.0.1:{harness.port}/")
        row = WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-function="broken-grabcut"][data-state="error"]'))
        assert "no_such_handler" in row.text
        assert not row.find_element(By.CSS_SELECTOR, "button[data-try]").is_enabled()
    finally:
        harness.stop()


def test_the_page_and_its_files_only(served):
    status, headers, body = http("GET", served["dashboard"] + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"playground.js" in body
    for path in ("/playground/playground.js", "/playground/playground.css"):
        status, _, _ = http("GET", served["dashboard"] + path)
        assert status == 200
    for path in ("/playground/__init__.py", "/playground/../harness.py", "/playground/%2e%2e/harness.py",
                 "/playground/", "/playground/nothing.js"):
        status, _, reply = http("GET", served["dashboard"] + path)
        assert status == 404 and "error" in reply, path


# ---------------------------------------------------------------- detectors

def test_detector_boxes_threshold_and_labels(browser, served, data_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    image = data_dir / "images" / "dog.jpg"
    page, expected = detect(browser, served, "yolox", image)
    assert len(expected) >= 3 and len(page["shapes"]) == len(expected)
    for shape, reply in zip(page["shapes"], expected):
        x1, y1, x2, y2 = reply["points"]
        assert shape["label"] == reply["label"] and shape["type"] == "rectangle"
        assert np.allclose(shape["rect"], [x1, y1, x2 - x1, y2 - y1], atol=1e-6)
        assert_on_screen(page, shape, reply["points"])
        assert shape["tip"] == f"{reply['label']} · {float(reply['confidence']):.3f}"
    # hovering a box shows its label and score (the last one drawn: nothing lies over it)
    from selenium.webdriver.common.action_chains import ActionChains

    last = browser.find_elements(By.CSS_SELECTOR, "#stage0 .shape-group rect")[-1]
    ActionChains(browser).move_to_element(last).perform()
    assert browser.find_element(By.ID, "tooltip").text == page["shapes"][-1]["tip"]
    screenshot(browser, "detector")

    # the threshold slider asks again
    before = calls(browser)
    browser.execute_script('const s = document.getElementById("det-threshold"); s.value = "0.2"; '
                           's.dispatchEvent(new Event("input")); s.dispatchEvent(new Event("change"));')
    wait_reply(browser, before)
    _, _, lower = http("POST", served["urls"]["yolox"], {"image": b64_file(image), "threshold": 0.2})
    assert len(lower) > len(expected) and [s["label"] for s in drawn(browser)["shapes"]] == [s["label"] for s in lower]

    # only the labels chosen
    Select(browser.find_element(By.ID, "det-labels")).select_by_value("dog")
    before = calls(browser)
    browser.find_element(By.ID, "det-run").click()
    wait_reply(browser, before)
    labels = [s["label"] for s in drawn(browser)["shapes"]]
    assert labels and set(labels) == {"dog"}


def test_detector_skeletons_with_named_points(browser, served, data_dir):
    page, expected = detect(browser, served, "yunet", data_dir / "images" / "astronaut.png")
    skeletons = [s for s in expected if s["type"] == "skeleton"]
    assert skeletons, "YuNet finds the face"
    drawn_skeletons = [s for s in page["shapes"] if s["type"] == "skeleton"]
    assert len(drawn_skeletons) == len(skeletons)
    for shape, reply in zip(drawn_skeletons, skeletons):
        visible = [(e["label"], *e["points"]) for e in reply["elements"] if not e["outside"]]
        assert [tuple(k) for k in shape["keypoints"]] == visible and len(visible) == 5
        # the spec's edges join them: eyes to the nose tip, the mouth corners
        points = {name: [x, y] for name, x, y in visible}
        assert shape["edges"] == [[a, b, *points[a], *points[b]] for a, b in (
            ("right eye", "nose tip"), ("left eye", "nose tip"), ("right mouth corner", "left mouth corner"))]
    for shape, reply in zip((s for s in page["shapes"] if s["type"] == "rectangle"),
                            (s for s in expected if s["type"] == "rectangle")):
        assert_on_screen(page, shape, reply["points"])
    screenshot(browser, "detector-skeleton")


def test_detector_recognised_text(browser, served, data_dir):
    page, expected = detect(browser, served, "ppocr", data_dir / "images" / "page.png")
    assert len(page["shapes"]) == len(expected)
    for shape, reply in zip(page["shapes"], expected):
        text = next(a["value"] for a in reply["attributes"] if a["name"] == "text")
        assert shape["type"] == "polygon" and polygon_points(shape["points"]) == pytest.approx(reply["points"])
        assert shape["texts"] == [text]
    screenshot(browser, "detector-text")


def test_detector_masks_pixel_for_pixel(browser, served, data_dir):
    """Mask R-CNN (random weights): each drawn mask is the reply's mask layout (the box's pixels), with its
    polygon as the outline."""
    def low_threshold(browser):
        browser.execute_script('const s = document.getElementById("det-threshold"); s.value = "0.05"; '
                               's.dispatchEvent(new Event("input"));')

    page, expected = detect(browser, served, "maskrcnn", data_dir / "images" / "person.jpg", low_threshold,
                            threshold=0.05)
    masks = [s for s in expected if s["type"] == "mask"]
    assert masks and len(page["shapes"]) == len(expected)
    for shape, reply in zip(page["shapes"], expected):
        if reply["type"] != "mask":
            continue
        xtl, ytl, xbr, ybr = reply["mask"][-4:]
        pixels = np.asarray(reply["mask"][:-4]).reshape(ybr - ytl + 1, xbr - xtl + 1) > 0
        assert shape["image"] == [xtl, ytl, xbr - xtl + 1, ybr - ytl + 1]
        assert np.array_equal(mask_pixels(shape["href"]), pixels)
        assert_on_screen(page, shape, [xtl, ytl, xbr + 1, ybr + 1])


def test_open_vocabulary_prompts(browser, served, data_dir):
    from selenium.webdriver.common.by import By

    def prompts(browser):
        assert browser.find_element(By.ID, "det-prompts").is_displayed()
        browser.find_element(By.ID, "det-prompts").send_keys("dog, zebra crossing")
        browser.execute_script('const s = document.getElementById("det-threshold"); s.value = "0.05"; '
                               's.dispatchEvent(new Event("input"));')

    page, expected = detect(browser, served, "owlv2", data_dir / "images" / "dog.jpg", prompts, threshold=0.05,
                            prompts=["dog", "zebra crossing"])
    assert {s["label"] for s in expected} <= {"dog", "zebra crossing"}
    assert [(s["label"], s["rect"]) for s in page["shapes"]] == [
        (r["label"], pytest.approx([r["points"][0], r["points"][1], r["points"][2] - r["points"][0],
                                    r["points"][3] - r["points"][1]])) for r in expected]


def test_a_functions_own_error_is_shown(browser, served, tmp_path):
    """An image the browser shows but the function cannot read (SVG): the page shows the function's 400."""
    picture = tmp_path / "drawing.svg"
    picture.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><rect width="40" height="30"/>'
                       '</svg>')
    open_function(browser, served, "yolox")
    before = calls(browser)
    upload(browser, "det-image", picture)
    state = wait_reply(browser, before)
    _, _, expected = http("POST", served["urls"]["yolox"],
                          {"image": base64.b64encode(picture.read_bytes()).decode(), "threshold": 0.5})
    assert state["status"] == 400 and state["error"] == f"400: {expected['error']}"
    assert drawn(browser)["shapes"] == []


# ---------------------------------------------------------------- interactors

def test_interactor_clicks_redraw_the_mask(browser, served, data_dir):
    image = data_dir / "images" / "dog.jpg"
    pick(browser, served, "grabcut", "int-image", image)
    before = calls(browser)
    drag(browser, "#stage0", [110, 190, 340, 560])  # a box around the dog
    assert wait_reply(browser, before)["status"] == 200
    click_at(browser, "#stage0", 300, 230, shift=True)  # a negative click on the bicycle behind it
    wait_reply(browser, before, 2)
    clicks = browser.execute_script("""return [...document.querySelectorAll("#stage0 .click")].map((g) => ({
        positive: g.classList.contains("positive"), x: Number(g.querySelector("circle").getAttribute("cx")),
        y: Number(g.querySelector("circle").getAttribute("cy"))}));""")
    box = browser.execute_script("""const r = document.querySelector("#stage0 .draft.box");
        return ["x", "y", "width", "height"].map((name) => Number(r.getAttribute(name)));""")
    assert [c["positive"] for c in clicks] == [False]
    assert abs(clicks[0]["x"] - 300) < 2 and abs(clicks[0]["y"] - 230) < 2
    scale = drawn(browser)["scale"]
    assert np.allclose(box, [110, 190, 230, 370], atol=2.5 / scale)  # where the mouse went
    body = {"image": b64_file(image), "pos_points": [], "neg_points": [[clicks[0]["x"], clicks[0]["y"]]],
            "obj_bbox": [box[:2], [box[0] + box[2], box[1] + box[3]]]}
    code, _, expected = http("POST", served["urls"]["grabcut"], body)
    assert code == 200 and expected["shapes"]
    page = drawn(browser)
    (shape,) = page["shapes"]
    points = expected["shapes"][0]["points"]
    assert shape["image"][:2] == points[-4:-2]
    assert np.array_equal(mask_pixels(shape["href"]), rle_pixels(points))  # pixel for pixel
    assert rle_pixels(points).sum() > 5000  # the dog, not a speck
    log = browser.execute_script('return [...document.querySelectorAll("#int-log li")].map((li) => li.textContent)')
    assert len(log) == 2 and "a box" in log[0] and "1 negative" in log[1]
    screenshot(browser, "interactor")


def test_interactor_shows_the_embedding_cache(browser, served, data_dir, tmp_path):
    from PIL import Image

    # an image no earlier test has sent: the suite's Redis may hold dog.jpg's embedding for these random weights
    pixels = np.asarray(Image.open(data_dir / "images" / "dog.jpg")).copy()
    pixels[0, 0] = np.random.default_rng().integers(0, 256, 3)
    image = tmp_path / "dog.png"
    Image.fromarray(pixels).save(image)
    pick(browser, served, "sam", "int-image", image)
    before = calls(browser)
    click_at(browser, "#stage0", 250, 380)
    wait_reply(browser, before)
    click_at(browser, "#stage0", 300, 420)
    wait_reply(browser, before, 2)
    log = browser.execute_script("""return [...document.querySelectorAll("#int-log li")].map((li) =>
        ({cache: li.dataset.cache, ms: Number(li.dataset.ms), text: li.textContent}));""")
    assert [entry["cache"] for entry in log] == ["miss", "hit"], log
    assert all("ms" in entry["text"] for entry in log)
    shapes = drawn(browser)["shapes"]
    assert len(shapes) == 1 and shapes[0]["type"] == "mask"


# ---------------------------------------------------------------- trackers

def test_tracker_frames_step_and_play(browser, served, data_dir):
    from selenium.webdriver.common.by import By

    frames = sorted((data_dir / "video" / "tennis").iterdir())[:6]
    pick(browser, served, "nanotrack", "trk-frames", *reversed(frames))  # the page orders them by name
    box = [250, 160, 420, 330]
    for field, value in zip(("box-x1", "box-y1", "box-x2", "box-y2"), box):  # the keyboard way
        browser.find_element(By.ID, field).send_keys(str(value))
    browser.find_element(By.ID, "trk-add-box").click()
    before = calls(browser)
    browser.find_element(By.ID, "trk-step").click()  # starts the track on frame 1
    assert wait_reply(browser, before)["status"] == 200
    browser.find_element(By.ID, "trk-play").click()  # then every other frame
    wait_reply(browser, before, len(frames))

    # the same track, requested directly
    code, _, reply = http("POST", served["urls"]["nanotrack"],
                          {"image": b64_file(frames[0]), "shapes": [{"type": "rectangle", "points": box}], "states": []})
    expected, state = [reply["shapes"][0]["points"]], reply["states"]
    for frame in frames[1:]:
        code, _, reply = http("POST", served["urls"]["nanotrack"], {"image": b64_file(frame), "shapes": [None],
                                                                     "states": state})
        assert code == 200
        expected.append(reply["shapes"][0]["points"])
        state = reply["states"]
    for index, points in enumerate(expected):
        browser.execute_script('const s = document.getElementById("trk-frame"); s.value = arguments[0]; '
                               's.dispatchEvent(new Event("input"));', index)
        page = drawn(browser)
        (shape,) = page["shapes"]
        x1, y1, x2, y2 = points
        assert shape["rect"] == pytest.approx([x1, y1, x2 - x1, y2 - y1]), index
        assert_on_screen(page, shape, points)
        info = browser.find_element(By.ID, "trk-info")
        assert int(info.get_attribute("data-bytes")) > 0 and "of state per object stored on the server" in info.text
    screenshot(browser, "tracker")


def test_tracker_takes_a_short_video(browser, served, data_dir, tmp_path):
    """A WebM of 10 frames at 5 fps: the page samples it at 5 frames per second and tracks over those frames."""
    import cv2
    from selenium.webdriver.common.by import By

    frames = sorted((data_dir / "video" / "tennis").iterdir())[:10]
    first = cv2.imread(str(frames[0]))
    video = tmp_path / "tennis.webm"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"VP80"), 5, (first.shape[1], first.shape[0]))
    assert writer.isOpened(), "OpenCV writes VP8 WebM"
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    pick(browser, served, "nanotrack", "trk-frames", video)
    count = browser.execute_script("return tracker.frames.length")
    sizes = browser.execute_script("return tracker.frames.map((f) => [f.width, f.height])")
    assert count in (10, 11) and all(size == [first.shape[1], first.shape[0]] for size in sizes)
    for field, value in zip(("box-x1", "box-y1", "box-x2", "box-y2"), (250, 160, 420, 330)):
        browser.find_element(By.ID, field).send_keys(str(value))
    browser.find_element(By.ID, "trk-add-box").click()
    before = calls(browser)
    for _ in range(4):
        browser.find_element(By.ID, "trk-step").click()
        before += 1
        assert wait_reply(browser, before - 1)["status"] == 200
    replies = browser.execute_script("return tracker.results.map((r) => r.shapes[0].points)")
    assert len(replies) == 4
    x1, y1, x2, y2 = replies[3]
    assert drawn(browser)["shapes"][0]["rect"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])


# ---------------------------------------------------------------- ReID

def test_reid_matches_drawn(browser, served, data_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = data_dir / "images" / "dog.jpg"
    pick(browser, served, "reid", "reid-image0", image)
    upload(browser, "reid-image1", image)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script('return !!document.querySelector("#stage1 svg")'))
    boxes = [[120, 200, 330, 540], [460, 70, 700, 170]]
    for box in boxes:
        drag(browser, "#stage0", box)
    # the other order in the second frame: the first box typed (the keyboard way), the second dragged
    for field, value in zip(("box-x1", "box-y1", "box-x2", "box-y2"), boxes[1]):
        browser.find_element(By.ID, field).send_keys(str(value))
    browser.find_element(By.ID, "reid-add1").click()
    drag(browser, "#stage1", boxes[0])
    before = calls(browser)
    browser.find_element(By.ID, "reid-run").click()
    assert wait_reply(browser, before)["status"] == 200
    first, second = drawn(browser, "#stage0")["shapes"], drawn(browser, "#stage1")["shapes"]
    as_box = lambda shape: [shape["rect"][0], shape["rect"][1], shape["rect"][0] + shape["rect"][2],
                            shape["rect"][1] + shape["rect"][3]]
    body = {"image0": b64_file(image), "image1": b64_file(image), "threshold": 0.5, "max_distance": 50,
            "boxes0": [{"points": as_box(s), "label_id": 0} for s in first],
            "boxes1": [{"points": as_box(s), "label_id": 0} for s in second]}
    code, _, matches = http("POST", served["urls"]["reid"], body)
    assert code == 200 and matches == [1, 0]  # the same crops: each box finds itself
    assert [s["label"] for s in first] == ["A1 = B2", "A2 = B1"]
    assert [s["label"] for s in second] == ["B1 = A2", "B2 = A1"]
    for shape, box in zip(first, boxes):
        assert np.allclose(as_box(shape), box, atol=2.5 / drawn(browser)["scale"])  # where the mouse went (whole
        # screen pixels: half of one lost at each end of the drag, the centre's offset one more)
    screenshot(browser, "reid")

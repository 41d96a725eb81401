"""Label Studio's door: every detector and interactor as a Label Studio ML backend
(../shared/docs/other-platforms.md).

Label Studio calls the backend's base URL with ``GET /health``, ``POST /setup``, ``POST /predict`` (pre-annotation
batches, and the smart tools' interactive calls, whose ``params.context`` holds the annotator's clicks and
box), ``POST /webhook`` (accepted and ignored: nothing here trains) and ``GET /versions``. The project's
labeling config, read with label-studio-sdk's label interface, says what to fill: the first ``<Image>`` that a
control can label, and its RectangleLabels, PolygonLabels, BrushLabels (Label Studio's brush RLE, written by the
SDK's own encoder), KeyPointLabels (a skeleton's points, by their names) and TextArea (recognised text) controls.
A config label is matched by name to the function's label of that name, or to those its ``predicted_values``
attribute lists; text-prompted detectors (OWLv2, SAM 3) look for every config label by its name.

Per-task failures (an image that cannot be fetched or decoded) leave that task without a prediction (an empty
list, which Label Studio skips, so that a later retrieval tries again), are logged, and are listed in the reply's
``errors``; the batch still answers 200.

Operator settings: ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` (Label Studio's own names) to fetch its
``/data/...`` images (a legacy token, sent as ``Token``, or a personal access token, exchanged for a ``Bearer``
access token); ``LABEL_STUDIO_ALLOWED_HOSTS`` and ``LABEL_STUDIO_ALLOW_HTTP`` for other image URLs, within
``LABEL_STUDIO_FETCH_TIMEOUT`` seconds and the function's body limit; ``LABEL_STUDIO_BASIC_AUTH``
(``user:password``), required on every call but the webhook, which Label Studio sends without credentials;
``LABEL_STUDIO_THRESHOLD`` (the function's default threshold otherwise).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from common.core.auth import require_basic_auth
from common.core.errors import FunctionError, RequestError
from common.core.image import Image
from common.core.prompts import Prompt, clip_box, json_type, number, point_in_image
from common.core.results import Mask, Region, Shape
from common.core.settings import Settings, polygon_epsilon, setting
from common.models.base import Detector, Interactor, Model, in_model_env
from common.runtime.fetch import Fetcher, host_list

PATHS = {"/health": "health", "/setup": "setup", "/predict": "predict", "/webhook": "webhook", "/versions": "versions"}
RECTANGLE, POLYGON, BRUSH, KEYPOINT, TEXT = "rectanglelabels", "polygonlabels", "brushlabels", "keypointlabels", "textarea"
GEOMETRY_CONTROLS = (RECTANGLE, POLYGON, BRUSH, KEYPOINT)
KEYPOINT_WIDTH = 0.5  # a keypoint's drawn size, percent of the image width (Label Studio's own default size)
CONFIG_CACHE = 32  # parsed labeling configs kept per worker
DECLARATIONS = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class LabelStudioSettings(Settings):
    url: str = setting("LABEL_STUDIO_URL", "")
    api_key: str = setting("LABEL_STUDIO_API_KEY", "")
    basic_auth: str = setting("LABEL_STUDIO_BASIC_AUTH", "")
    allowed_hosts: str = setting("LABEL_STUDIO_ALLOWED_HOSTS", "")
    allow_http: bool = setting("LABEL_STUDIO_ALLOW_HTTP", False)
    fetch_timeout: float = setting("LABEL_STUDIO_FETCH_TIMEOUT", 10.0)
    threshold: float = setting("LABEL_STUDIO_THRESHOLD", -1.0)  # negative: the function's default


def route(path: str) -> str | None:
    """The Label Studio call a path is (``health``, ``setup``, ``predict``, ``webhook``, ``versions``), or None."""
    return PATHS.get("/" + (path or "").strip("/"))


# ---------------------------------------------------------------- the labeling config

@dataclass
class Control:
    """One control tag of the config over the chosen image: its ``name`` and ``type`` (the tag in lower case)
    and, for a labels control, each function label name it fills mapped to the config label it writes."""

    name: str
    type: str
    labels: dict[str, str] = field(default_factory=dict)
    config_labels: tuple[str, ...] = ()


@dataclass
class Target:
    """What a labeling config asks of this function: the image object (``to_name``, the task data key holding
    its URL) and the controls that can be filled, by type."""

    to_name: str
    data_key: str
    controls: dict[str, Control]
    names: tuple[str, ...]  # every label name of the geometry controls (a text-prompted detector's vocabulary)


def parse_config(config: object, accepts: Callable[[Control], bool], needs: str) -> Target:
    """The config's first image with a control that ``accepts``, and its controls; a 400 saying what is needed
    (``needs``) when there is none."""
    from label_studio_sdk.label_interface import LabelInterface  # the door's own dependency, loaded on first use

    if not isinstance(config, str) or not config.strip():
        raise RequestError("the labeling config (label_config, or schema at /setup) must be a non-empty XML string")
    if DECLARATIONS.search(config):  # no entity a client declares is ever expanded or fetched
        raise RequestError("the labeling config declares a DOCTYPE or an entity; Label Studio configs have neither")
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises its own XML and validation errors
        raise RequestError(f"the labeling config cannot be read: {str(exc).splitlines()[0][:300]}") from None
    images: dict[str, Target] = {}
    for tag in interface.controls:
        kind = str(tag.tag).lower()
        if kind not in GEOMETRY_CONTROLS + (TEXT,):
            continue
        for obj in tag.objects or ():
            if str(obj.tag).lower() != "image" or not obj.value_is_variable:
                continue
            target = images.setdefault(obj.name, Target(obj.name, obj.value_name, {}, ()))
            config_labels = tuple(tag.labels or ())
            mapping = {}
            for value in config_labels:
                attrs = getattr((tag.labels_attrs or {}).get(value), "attr", {}) or {}
                for name in str(attrs.get("predicted_values") or value).split(","):
                    mapping.setdefault(name.strip(), value)
            target.controls.setdefault(kind, Control(tag.name, kind, mapping, config_labels))
    for target in images.values():
        target.names = tuple(dict.fromkeys(name for c in target.controls.values() if c.type != TEXT for name in c.labels))
        usable = [c for c in target.controls.values() if accepts(c)]
        if usable:
            return target
    raise RequestError(f"the labeling config has no control this function can fill: it needs {needs}")


def labeling_config(labels, interactor: bool = False) -> str:
    """A labeling config for a function's labels, one control per kind of geometry they have: rectangles,
    polygons (with a per-region TextArea when a label has a ``text`` attribute), masks as brushes, and a
    skeleton's points as keypoints beside its box. An interactor's: a brush and a polygon with the smart tools'
    keypoints and rectangle, all labelled ``object``."""
    from xml.sax.saxutils import quoteattr

    if interactor:
        groups = {"BrushLabels": ["object"], "PolygonLabels": ["object"]}
        smart = {"KeyPointLabels": ["object"], "RectangleLabels": ["object"]}
    else:
        tags = {"mask": "BrushLabels", "polygon": "PolygonLabels"}
        groups, smart = {}, {}
        for label in labels:
            groups.setdefault(tags.get(label.type, "RectangleLabels"), []).append(label.name)
            if label.type == "skeleton":
                groups.setdefault("KeyPointLabels", []).extend(s.name for s in label.sublabels)
    lines = ['<View>', '  <Image name="image" value="$image" zoom="true"/>']
    for tags_, extra in ((groups, ""), (smart, ' smart="true"')):
        for tag, names in tags_.items():
            values = "".join(f"<Label value={quoteattr(name)}/>" for name in dict.fromkeys(names))
            lines.append(f'  <{tag} name="{tag.lower()}" toName="image"{extra}>{values}</{tag}>')
    if any(attribute.name == "text" for label in labels for attribute in label.attributes) and not interactor:
        lines.append('  <TextArea name="text" toName="image" perRegion="true" editable="true"/>')
    return "\n".join(lines + ["</View>"]) + "\n"


# ---------------------------------------------------------------- results

def percent(x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    return 100.0 * float(x) / size[0], 100.0 * float(y) / size[1]


def rectangle_value(box: tuple[float, ...], size: tuple[int, int]) -> dict:
    x1, y1, x2, y2 = box
    (x, y), (x_end, y_end) = percent(x1, y1, size), percent(x2, y2, size)
    return {"x": x, "y": y, "width": x_end - x, "height": y_end - y, "rotation": 0}


def polygon_value(points: np.ndarray, size: tuple[int, int]) -> dict:
    return {"points": [list(percent(x, y, size)) for x, y in points], "closed": True}


def brush_value(mask: np.ndarray) -> dict:
    """A full-image boolean mask in Label Studio's brush RLE (the SDK's encoder, over RGBA values)."""
    from label_studio_sdk.converter.brush import mask2rle

    return {"format": "rle", "rle": [int(v) for v in mask2rle(mask.astype(np.uint8) * 255)]}


def keypoint_value(x: float, y: float, size: tuple[int, int]) -> dict:
    px, py = percent(x, y, size)
    return {"x": px, "y": py, "width": KEYPOINT_WIDTH}


class Results:
    """The regions of one prediction, in Label Studio's form, over one image."""

    def __init__(self, target: Target, size: tuple[int, int]):
        self.target, self.size, self.regions, self.scores = target, size, [], []

    def add(self, control: Control, label: str, value: dict, score: float, rid: str, **extra: Any) -> dict:
        region = {"id": rid, "from_name": control.name, "to_name": self.target.to_name, "type": control.type,
                  "original_width": self.size[0], "original_height": self.size[1], "image_rotation": 0,
                  "value": {**value, control.type: [label]}, "score": score, **extra}
        self.regions.append(region)
        return region

    def text(self, region: dict, text: str) -> None:
        """A recognised text, in the TextArea control, tied to ``region`` (the same id and geometry)."""
        control = self.target.controls.get(TEXT)
        if control is not None:
            value = {k: v for k, v in region["value"].items() if k != region["type"]}
            self.regions.append({**region, "from_name": control.name, "type": TEXT,
                                 "value": {**value, "text": [text]}})

    def mask(self, controls: list[tuple[Control, str]], pixels: np.ndarray, score: float, rid: str) -> None:
        """A mask in every brush and polygon control given (polygons: one region per outer contour)."""
        for control, label in controls:
            if control.type == BRUSH:
                self.add(control, label, brush_value(pixels), score, rid)
            else:
                mask = Mask.from_full(pixels)
                polygons = mask.polygons(polygon_epsilon()) if mask is not None else []
                for k, polygon in enumerate(polygons):
                    self.add(control, label, polygon_value(polygon, self.size), score, f"{rid}-{k}" if k else rid)

    def prediction(self, version: str) -> dict:
        score = float(np.mean(self.scores)) if self.scores else 0.0
        return {"result": self.regions, "score": score, "model_version": version}


def score_of(value: float | None) -> float:
    return min(max(float(value if value is not None else 1.0), 0.0), 1.0)


def shape_regions(out: Results, shape: Shape) -> bool:
    """``shape`` as the regions the config can hold (False when none of its controls has its label): a mask in
    the brush and polygon controls (else its box), a polygon as a polygon (else a box), a box as a rectangle
    (else a polygon), a skeleton as its box and one keypoint per named point; recognised text beside it."""
    controls = out.target.controls
    name, score, rid, size = shape.label.name, score_of(shape.score), f"fn{shape.index}", out.size
    has = {kind: controls[kind].labels[name] for kind in GEOMETRY_CONTROLS
           if kind in controls and name in controls[kind].labels}
    before = len(out.regions)
    if shape.geometry == "skeleton":
        if RECTANGLE in has:
            out.add(controls[RECTANGLE], has[RECTANGLE], rectangle_value(shape.box, size), score, rid)
        points, parent = controls.get(KEYPOINT), ({"parentID": rid} if RECTANGLE in has else {})
        for k, (sublabel, (x, y, outside)) in enumerate(zip(shape.label.sublabels, shape.keypoints)):
            label = points.labels.get(sublabel.name, has.get(KEYPOINT)) if points else None
            if label is not None and not outside:
                out.add(points, label, keypoint_value(x, y, size), score, f"{rid}-{k}", **parent)
    elif shape.geometry == "mask" and (BRUSH in has or POLYGON in has):
        out.mask([(controls[k], has[k]) for k in (BRUSH, POLYGON) if k in has], shape.mask.full(*size), score, rid)
    elif shape.geometry == "polygon" and POLYGON in has:
        out.add(controls[POLYGON], has[POLYGON], polygon_value(shape.polygon, size), score, rid)
    elif RECTANGLE in has:
        out.add(controls[RECTANGLE], has[RECTANGLE], rectangle_value(shape.box, size), score, rid)
    elif POLYGON in has:
        x1, y1, x2, y2 = shape.box
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        out.add(controls[POLYGON], has[POLYGON], polygon_value(corners, size), score, rid)
    if len(out.regions) == before:
        return False
    if "text" in shape.attributes:
        out.text(out.regions[before], str(shape.attributes["text"]))
    out.scores.append(score)
    return True


# ---------------------------------------------------------------- interactive context

def prompt_of(context: object, size: tuple[int, int]) -> tuple[Prompt, str | None]:
    """The smart tools' regions (``params.context.result``) as a :class:`Prompt` (keypoints: clicks, positive
    unless ``is_positive`` is false; a rectangle: the box) and the label the annotator chose, if any."""
    regions = context.get("result") if isinstance(context, Mapping) else None
    if not isinstance(regions, list) or not regions:
        raise RequestError("params.context.result must be a list of the smart tools' regions (keypoints, a rectangle)")
    positive, negative, box, label = [], [], None, None
    for i, region in enumerate(regions[:1000]):
        where = f"params.context.result[{i}]"
        if not isinstance(region, Mapping) or not isinstance(region.get("value"), Mapping):
            raise RequestError(f"{where} must be a region with a value, got {json_type(region)}")
        kind, value = str(region.get("type", "")).lower(), region["value"]
        for key in (RECTANGLE, KEYPOINT, "labels"):
            if isinstance(value.get(key), list) and value[key] and isinstance(value[key][0], str):
                label = label or value[key][0]
        x, y = number(value.get("x"), f"{where}.value.x"), number(value.get("y"), f"{where}.value.y")
        px, py = x * size[0] / 100.0, y * size[1] / 100.0
        if kind in (RECTANGLE, "rectangle"):
            width = number(value.get("width"), f"{where}.value.width") * size[0] / 100.0
            height = number(value.get("height"), f"{where}.value.height") * size[1] / 100.0
            box = clip_box((px, py, px + width, py + height), f"{where} (rectangle)", size)
        elif kind in (KEYPOINT, "keypoint"):
            click = point_in_image([px, py], f"{where} (keypoint)", size)
            (negative if region.get("is_positive") is False else positive).append(click)
        else:
            raise RequestError(f"{where}: a {kind or 'region'} is not a prompt; send keypoints or a rectangle")
    return Prompt(np.asarray(positive, np.float64).reshape(-1, 2), np.asarray(negative, np.float64).reshape(-1, 2),
                  box), label


# ---------------------------------------------------------------- images

class Images:
    """Task images: Label Studio's own paths (``/data/upload/...``, ``/data/local-files/?d=...``) from
    ``LABEL_STUDIO_URL`` with its API key, other URLs from the allowed hosts."""

    def __init__(self, settings: LabelStudioSettings, limit: int):
        self.settings = settings
        base = settings.url.rstrip("/") + "/" if settings.url else None
        self.base = base
        self.fetch = Fetcher(host_list(settings.allowed_hosts), settings.allow_http, settings.fetch_timeout, limit,
                             name="the task's image URL", variable="LABEL_STUDIO", trusted=base)
        self.lock = threading.Lock()
        self.access: tuple[str, float] | None = None  # a personal access token's current access token, expiry

    def url_of(self, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"the task's image must be a URL string, got {json_type(value)}")
        if urllib.parse.urlsplit(value).scheme:
            return value
        if self.base is None:
            raise RequestError(f"the task's image {value[:100]!r} is a path on the Label Studio server: set "
                               "LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) for the function")
        return urllib.parse.urljoin(self.base, value.lstrip("/"))

    def __call__(self, value: object) -> Image:
        url = self.url_of(value)
        credentials = self.credentials() if self.fetch.is_trusted(url) else {}
        return Image.from_bytes(self.fetch(url, credentials), "the task's image")

    def credentials(self) -> dict[str, str]:
        key = self.settings.api_key
        if not key:
            return {}
        if key.count(".") != 2:  # a legacy token (40 hex digits); a personal access token is a JWT
            return {"Authorization": f"Token {key}"}
        with self.lock:
            if self.access is None or self.access[1] < time.time() + 30:
                self.access = self.refresh(key)
            return {"Authorization": f"Bearer {self.access[0]}"}

    def refresh(self, key: str) -> tuple[str, float]:
        """A personal access token exchanged for a short-lived access token (``POST /api/token/refresh/``)."""
        request = urllib.request.Request(urllib.parse.urljoin(self.base, "api/token/refresh/"),
                                         data=json.dumps({"refresh": key}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.fetch_timeout) as got:
                access = json.loads(got.read(65536))["access"]
        except Exception as exc:
            raise FunctionError(f"LABEL_STUDIO_API_KEY was refused by {self.base}api/token/refresh/ ({exc}); "
                                "use a personal access token or a legacy token of that server", 502) from None
        try:
            payload = access.split(".")[1]
            expires = float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
        except Exception:
            expires = time.time() + 60
        return access, expires


# ---------------------------------------------------------------- the door

class LabelStudioDoor:
    """Label Studio's calls to one detector or interactor."""

    def __init__(self, model: Model, settings: LabelStudioSettings | None = None):
        if model.kind not in ("detector", "interactor"):
            raise ValueError("Label Studio calls detectors and interactors")
        self.model = model
        self.settings = settings if settings is not None else LabelStudioSettings.from_env()
        self.images = Images(self.settings, model.function.body_limit)
        self.threshold = self.settings.threshold if self.settings.threshold >= 0 else None
        self.version = model.name
        self.configs: OrderedDict[str, Target] = OrderedDict()
        self.dropped: set[str] = set()  # function labels already logged as missing from a config

    def authorize(self, call: str, headers: Mapping[str, str] | None) -> None:
        """401 unless the configured basic auth is sent (not asked of the webhook: Label Studio sends none)."""
        if self.settings.basic_auth and call != "webhook":
            require_basic_auth(headers, self.settings.basic_auth, "Label Studio ML backend")

    @in_model_env
    def call(self, call: str, method: str, body: Callable[[], object]) -> tuple[object, dict[str, str]]:
        """One call: the reply and its headers. ``body`` decodes the request body (GET calls have none)."""
        if call in ("health", "versions"):
            if call == "health":
                return {"status": "UP", "model_class": type(self.model).__module__, "model_version": self.version,
                        "kind": self.model.kind}, {}
            return {"versions": [self.version]}, {}
        if method != "POST":
            raise FunctionError(f"Label Studio's /{call} takes POST", 405)
        if call == "webhook":
            body()  # a body that is not JSON is still a 400
            return {"status": "ok", "trained": False}, {}
        request = body()
        if not isinstance(request, Mapping):
            raise RequestError(f"the request must be a JSON object, got {json_type(request)}")
        if call == "setup":
            self.target(request.get("schema"))
            return {"model_version": self.version}, {}
        return self.predict(request)

    # ------------------------------------------------------------ config

    def target(self, config: object) -> Target:
        """The parsed labeling config (the last few are kept: every request of a project sends the same one)."""
        key = config if isinstance(config, str) else None
        if key is not None and key in self.configs:
            self.configs.move_to_end(key)
            return self.configs[key]
        if self.model.kind == "interactor":
            target = parse_config(config, lambda c: c.type in (BRUSH, POLYGON) and bool(c.config_labels),
                                  "BrushLabels or PolygonLabels (with at least one Label) over an <Image>")
        else:
            known = self.model.labels
            names = set(known.by_name) | {s.name for label in known for s in label.sublabels}
            target = parse_config(
                config, lambda c: c.type in GEOMETRY_CONTROLS and bool(c.labels) and (
                    self.model.open_vocabulary or bool(names & set(c.labels))),
                "RectangleLabels, PolygonLabels, BrushLabels or KeyPointLabels over an <Image> with at least one "
                f"Label among this function's labels ({', '.join(l.name for l in list(known)[:10])}"
                f"{', ...' if len(known) > 10 else ''}), or naming one in its predicted_values")
        self.configs[key] = target
        while len(self.configs) > CONFIG_CACHE:
            self.configs.popitem(last=False)
        return target

    # ------------------------------------------------------------ predict

    def predict(self, request: Mapping[str, Any]) -> tuple[dict, dict[str, str]]:
        tasks = request.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("tasks must be a non-empty list of Label Studio tasks")
        target = self.target(request.get("label_config"))
        params = request.get("params") if isinstance(request.get("params"), Mapping) else {}
        context = params.get("context")
        if context:
            if len(tasks) != 1:
                raise RequestError("an interactive request (params.context) holds exactly one task")
            return self.interactive(target, tasks[0], context)
        if self.model.kind == "interactor":
            self.model.warn("Label Studio asked an interactor for predictions without a prompt: it answers only the "
                            "smart tools' interactive calls (turn on 'Interactive preannotations')")
            return {"results": [[] for _ in tasks], "errors": [
                {"task": _task_id(t), "error": "an interactor needs the smart tools' clicks or box"} for t in tasks]}, {}
        results, errors = [], []
        for i, task in enumerate(tasks):
            try:
                results.append(self.detect(target, self.image(target, task, i)))
            except FunctionError as exc:
                if exc.status >= 500:
                    raise
                self.model.warn(f"Label Studio task {_task_id(task)}: no prediction: {exc.message}")
                errors.append({"task": _task_id(task), "error": exc.message})
                results.append([])
        return {"results": results, **({"errors": errors} if errors else {})}, {}

    def image(self, target: Target, task: object, i: int) -> Image:
        data = task.get("data") if isinstance(task, Mapping) else None
        if not isinstance(data, Mapping):
            raise RequestError(f"tasks[{i}] has no data object")
        if target.data_key not in data:
            keys = ", ".join(map(repr, list(data)[:10])) or "none"
            raise RequestError(f"tasks[{i}].data has no {target.data_key!r} (the config's <Image value="
                               f"\"${target.data_key}\">); it has {keys}")
        return self.images(data[target.data_key])

    def detect(self, target: Target, image: Image) -> dict:
        """A fixed-class detector runs on every label, a text-prompted one on the config's label names; the
        function's labels that the config lacks are left out (and logged once)."""
        vocabulary = self.model.vocabulary(target.names)
        wanted = [name for name in target.names if name in vocabulary.by_name] if self.model.open_vocabulary else None
        found = self.model.run(image, self.threshold, wanted, vocabulary)
        out = Results(target, image.size)
        for shape in found.shapes(vocabulary, *image.size):
            if not shape_regions(out, shape) and shape.label.name not in self.dropped:
                self.dropped.add(shape.label.name)
                self.model.warn(f"Label Studio: the labeling config has no label for this function's "
                                f"{shape.label.name!r}: its detections are left out")
        return out.prediction(self.version)

    def interactive(self, target: Target, task: object, context: object) -> tuple[dict, dict[str, str]]:
        image = self.image(target, task, 0)
        self.model.admit(image)
        if self.model.kind == "detector":  # a detector answers the smart tools with its predictions
            return {"results": [self.detect(target, image)]}, {}
        prompt, label = prompt_of(context, image.size)
        hit = self.model.prepare(image)
        headers = {} if hit is None else {"X-Embedding-Cache": "hit" if hit else "miss"}
        region: Region | None = self.model.segment(image, prompt)
        out = Results(target, image.size)
        if region is not None:
            pixels = region.to_mask(*image.size)
            controls = [(target.controls[k], _label_for(target.controls[k], label))
                        for k in (BRUSH, POLYGON) if k in target.controls and target.controls[k].config_labels]
            out.mask(controls, pixels, score_of(region.score), "fn0")
            out.scores.append(score_of(region.score))
        return {"results": [out.prediction(self.version)]}, headers


def _label_for(control: Control, label: str | None) -> str:
    """The annotator's label where the control has it, else the control's first."""
    return label if label in control.config_labels else control.config_labels[0]


def _task_id(task: object) -> object:
    return task.get("id") if isinstance(task, Mapping) else None


def door_for(model: Model) -> LabelStudioDoor | None:
    """The Label Studio door of a detector or interactor; None for other kinds."""
    return LabelStudioDoor(model) if isinstance(model, (Detector, Interactor)) else None


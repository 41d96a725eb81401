"""V7 Darwin's door: every detector as a "Bring Your Own Model" endpoint (../shared/docs/other-platforms.md).

``GET /classes`` (and ``/api/classes``) lists the spec's labels with V7's types; ``POST /infer`` takes
``{"image": {"base64": ...}}`` or ``{"image": {"url": ...}}`` and answers ``{"status": "succeeded",
"results": [...]}`` with one V7 geometry per result (masks as one polygon per outer contour). Failures answer
a 4xx or 5xx status with ``{"status": "failed", "results": [], "error": ...}``. The same deployed function
serves CVAT on every other path; the Nuclio entry tells them apart by method and path.

Operator settings (V7 sends no options): ``V7_THRESHOLD`` (the function's default threshold otherwise);
``V7_ALLOWED_HOSTS`` (comma-separated host names, ``.example.com`` for a domain and its subdomains) before any
image URL is fetched, https only unless ``V7_ALLOW_HTTP=1``, within ``V7_FETCH_TIMEOUT`` seconds (10) and the
function's body limit, redirects only to allowed hosts; authentication by ``V7_BASIC_AUTH`` (``user:password``)
or by a secret header (``V7_SECRET_HEADER`` names it, ``V7_SECRET`` is its value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from common.core.auth import require_basic_auth, require_header
from common.core.errors import RequestError
from common.core.image import Image
from common.core.labels import Labels
from common.core.results import Detections, Shape
from common.core.settings import Settings, polygon_epsilon, setting
from common.models.base import Detector
from common.runtime.fetch import Fetcher, host_list

PATHS = {"/classes": "classes", "/api/classes": "classes", "/infer": "infer", "/api/infer": "infer"}
TYPES = {"rectangle": "bounding_box", "polygon": "polygon", "mask": "polygon", "points": "keypoint",
         "skeleton": "skeleton", "tag": "tag", "ellipse": "ellipse", "polyline": "line", "cuboid": "cuboid",
         "any": "bounding_box"}


@dataclass(frozen=True)
class V7Settings(Settings):
    threshold: float = setting("V7_THRESHOLD", -1.0)  # negative: the function's default
    allowed_hosts: str = setting("V7_ALLOWED_HOSTS", "")
    allow_http: bool = setting("V7_ALLOW_HTTP", False)
    fetch_timeout: float = setting("V7_FETCH_TIMEOUT", 10.0)
    basic_auth: str = setting("V7_BASIC_AUTH", "")
    secret_header: str = setting("V7_SECRET_HEADER", "")
    secret: str = setting("V7_SECRET", "")


def fetcher(settings: V7Settings, limit: int) -> Fetcher:
    """The image URL fetcher of V7's settings, within ``limit`` bytes."""
    return Fetcher(host_list(settings.allowed_hosts), settings.allow_http, settings.fetch_timeout, limit,
                   hint="send image.base64")


def route(path: str) -> str | None:
    """``classes`` or ``infer`` for V7's paths, None for everything else (CVAT's)."""
    return PATHS.get("/" + (path or "").strip("/"))


def classes(labels: Labels) -> list[dict]:
    return [{"name": label.name, "type": TYPES.get(label.type, "bounding_box")} for label in labels]


def failed(message: str) -> dict:
    return {"status": "failed", "results": [], "error": message}


def _path(points) -> dict:
    return {"polygon": {"path": [{"x": float(x), "y": float(y)} for x, y in points]}}


def _box(shape: Shape) -> dict:
    x1, y1, x2, y2 = shape.box
    return {"bounding_box": {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1}}


def _skeleton(shape: Shape) -> dict:
    return {"skeleton": {"nodes": [{"name": sublabel.name, "x": x, "y": y, "occluded": outside}
                                   for sublabel, (x, y, outside) in zip(shape.label.sublabels, shape.keypoints)]}}


# each geometry as V7's geometries: a mask as one polygon per outer contour (V7 has no masks)
GEOMETRIES = {
    "skeleton": lambda s: [_skeleton(s)],
    "mask": lambda s: [_path(polygon) for polygon in s.mask.polygons(polygon_epsilon())],
    "polygon": lambda s: [_path(s.polygon)],
    "box": lambda s: [_box(s)],
}


def results(detections: Detections, labels: Labels, width: int, height: int) -> list[dict]:
    """V7 results of the detections whose label is in the spec, in the detections' order."""
    found = []
    for shape in detections.shapes(labels, width, height):
        extras: dict[str, Any] = {}
        for name, value in shape.attributes.items():
            if name == "text":
                extras["text"] = {"text": str(value)}
            else:
                extras.setdefault("attributes", []).append(str(value))
        common = {"name": shape.label.name, "label": shape.label.name, "confidence": min(max(shape.score, 0.0), 1.0)}
        found += [{**common, **geometry, **extras} for geometry in GEOMETRIES[shape.geometry](shape)]
    return found


# ---------------------------------------------------------------- the door

class V7Door:
    """V7's calls to one detector."""

    def __init__(self, model: Detector, settings: V7Settings | None = None):
        self.model = model
        self.settings = settings if settings is not None else V7Settings.from_env()
        self.fetch = fetcher(self.settings, model.function.body_limit)  # the same limit as a request body
        self.threshold = self.settings.threshold if self.settings.threshold >= 0 else None  # None: the model's

    def authorize(self, headers: Mapping[str, str]) -> None:
        """401 unless the request carries the configured basic auth or secret header (none configured: open)."""
        if self.settings.basic_auth:
            require_basic_auth(headers, self.settings.basic_auth, "V7 endpoint")
        if self.settings.secret_header:
            require_header(headers, self.settings.secret_header, self.settings.secret, "V7 endpoint")

    def image(self, body: object) -> Image:
        if not isinstance(body, Mapping) or not isinstance(body.get("image"), Mapping):
            raise RequestError('the request must be {"image": {"base64": ...}} or {"image": {"url": ...}}')
        image = body["image"]
        if image.get("base64") is not None:
            return Image.from_base64(image["base64"], "image.base64")
        if "url" in image:
            return Image.from_bytes(self.fetch(image["url"]), "image.url")
        raise RequestError("image must hold base64 or url")

    def infer(self, body: object) -> dict:
        picture = self.image(body)
        found = self.model.run(picture, self.threshold)
        return {"status": "succeeded", "results": results(found, self.model.labels, *picture.size)}

    def classes(self) -> list[dict]:
        return classes(self.model.labels)

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

import base64
import hmac
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

from common.core.errors import FunctionError, RequestError
from common.core.image import Image
from common.core.labels import Labels
from common.core.results import Detections, Shape
from common.core.settings import Settings, polygon_epsilon, setting
from common.models.base import Detector

PATHS = {"/classes": "classes", "/api/classes": "classes", "/infer": "infer", "/api/infer": "infer"}
TYPES = {"rectangle": "bounding_box", "polygon": "polygon", "mask": "polygon", "points": "keypoint",
         "skeleton": "skeleton", "tag": "tag", "ellipse": "ellipse", "polyline": "line", "cuboid": "cuboid",
         "any": "bounding_box"}


class Unauthorized(FunctionError):
    status = 401


@dataclass(frozen=True)
class V7Settings(Settings):
    threshold: float = setting("V7_THRESHOLD", -1.0)  # negative: the function's default
    allowed_hosts: str = setting("V7_ALLOWED_HOSTS", "")
    allow_http: bool = setting("V7_ALLOW_HTTP", False)
    fetch_timeout: float = setting("V7_FETCH_TIMEOUT", 10.0)
    basic_auth: str = setting("V7_BASIC_AUTH", "")
    secret_header: str = setting("V7_SECRET_HEADER", "")
    secret: str = setting("V7_SECRET", "")


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


# ---------------------------------------------------------------- image URLs

def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and (host.endswith(entry) or host == entry[1:]))
               for entry in allowed)


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, check):
        self.check = check

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Fetcher:
    """Fetches an image URL on V7's behalf, within the operator's limits."""

    def __init__(self, settings: V7Settings, limit: int):
        self.allowed = [h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()]
        self.allow_http, self.timeout, self.limit = settings.allow_http, settings.fetch_timeout, limit

    def check(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes:
            raise RequestError(f"image.url must be {' or '.join(schemes)} (V7_ALLOW_HTTP allows http)")
        if not host_allowed(parts.hostname or "", self.allowed):
            raise RequestError(f"image.url: host {parts.hostname!r} is not in V7_ALLOWED_HOSTS")

    def __call__(self, url: object) -> bytes:
        if not isinstance(url, str) or not url:
            raise RequestError("image.url must be a URL string")
        if not self.allowed:
            raise RequestError("image.url is refused: no host is allowed (set V7_ALLOWED_HOSTS), send image.base64")
        self.check(url)
        opener = urllib.request.build_opener(_Redirects(self.check))
        try:
            with opener.open(urllib.request.Request(url, headers={"Accept": "image/*"}), timeout=self.timeout) as got:
                data = got.read(self.limit + 1)
        except RequestError:
            raise
        except urllib.error.HTTPError as exc:
            raise RequestError(f"image.url answered HTTP {exc.code}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
            raise RequestError(f"image.url could not be fetched within {self.timeout:g} s: "
                               f"{getattr(exc, 'reason', exc)}") from None
        if len(data) > self.limit:
            raise RequestError(f"image.url holds more than {self.limit} bytes (the function's body limit)")
        return data


# ---------------------------------------------------------------- the door

class V7Door:
    """V7's calls to one detector."""

    def __init__(self, model: Detector, settings: V7Settings | None = None):
        self.model = model
        self.settings = settings if settings is not None else V7Settings.from_env()
        self.fetch = Fetcher(self.settings, model.function.body_limit)  # the same limit as a request body
        self.threshold = self.settings.threshold if self.settings.threshold >= 0 else None  # None: the model's

    def authorize(self, headers: Mapping[str, str]) -> None:
        """401 unless the request carries the configured basic auth or secret header (none configured: open)."""
        lowered = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        if self.settings.basic_auth:
            expected = "Basic " + base64.b64encode(self.settings.basic_auth.encode()).decode()
            if not hmac.compare_digest(lowered.get("authorization", ""), expected):
                raise Unauthorized("V7 endpoint: wrong or missing basic authentication")
        if self.settings.secret_header:
            if not hmac.compare_digest(lowered.get(self.settings.secret_header.lower(), ""), self.settings.secret):
                raise Unauthorized(f"V7 endpoint: wrong or missing {self.settings.secret_header} header")

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

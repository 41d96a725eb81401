"""Dataloop's door: any detector folder as a Dataloop model adapter (a ``dtlpy.BaseModelAdapter``).

The model's configuration says what to serve: ``function`` names the folder (relative to this repository, or
``.`` in a copy staged by ``tools/fn dataloop-manifest --stage``, which is the function itself),
``confidence_threshold`` (or ``threshold``) the threshold (the function's default otherwise), and keys in upper
case are the function's settings variables (``MIN_SIZE``, ``FUNCTION_YAML``...), as the environment is under
Nuclio; the pod's environment and then the yaml's ``spec.env`` fill in the rest. Weights are found as
everywhere (``MODEL_PATH``, ``MODELS_DIR``, the download cache); ``MODELS_DIR`` defaults to the model's artifacts
folder, so weights uploaded as artifacts are used.

Items are decoded by our own decoder (RGB, EXIF-oriented); an item that cannot be read, or that is over the
image limits, gets an empty collection and a line in the log. Conversions start from our
:class:`~common.core.results.Detections`: rectangles as ``dl.Box``, polygons as ``dl.Polygon``, masks as
``dl.Segmentation``, a skeleton as one ``dl.Point`` per visible keypoint (the keypoint's name as its
description) sharing one ``object_id``; attributes (recognised ``text``) as the annotation's attributes; the
score as ``model_info["confidence"]``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import dtlpy as dl
import numpy as np
import PIL.Image

# Dataloop loads a module's entry point by its file path: the code's root must be importable for common.*
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from common.core.errors import RequestError
from common.core.image import Image
from common.core.config import FunctionConfig
from common.core.labels import Labels
from common.core.results import Detections, Shape
from common.models.base import Detector, in_model_env
from common.models.folder import find_folder, load_model

log = logging.getLogger(__name__)
THRESHOLD_KEYS = ("confidence_threshold", "threshold")
# the yaml's MODELS_DIR is a path inside the Nuclio image; on Dataloop the artifacts folder takes its place
NUCLIO_ONLY = {"MODELS_DIR"}


def environment_of(folder: Path, configuration: Mapping[str, Any], artifacts: str | None) -> dict[str, str]:
    """The function's settings in this pod: the configuration's upper-case keys, over the pod's environment,
    over the yaml's ``spec.env``; ``MODELS_DIR`` defaults to the artifacts folder. os.environ is not written."""
    settings = {k: str(v) for k, v in configuration.items() if isinstance(k, str) and k.isupper() and v is not None}
    yaml_name = settings.get("FUNCTION_YAML", os.environ.get("FUNCTION_YAML", "function.yaml"))
    spec_env = {k: v for k, v in FunctionConfig.read(folder / yaml_name).env.items() if k not in NUCLIO_ONLY}
    env = {**spec_env, **os.environ, **settings}
    if artifacts and os.path.isdir(artifacts) and not env.get("MODELS_DIR"):
        env["MODELS_DIR"] = str(artifacts)
    return env


def image_of(element: Any, field: str = "item") -> Image | None:
    """A batch element as an image: ours (from :meth:`Adapter.prepare_item_func`), or an array as
    ``numpy.asarray(PIL.Image.open(...))`` gives it (gray, RGBA, 16-bit...); None for a failed item."""
    if element is None or isinstance(element, Image):
        return element
    try:
        return Image.from_pil(PIL.Image.fromarray(np.asarray(element)), field)
    except (TypeError, ValueError) as exc:  # Pillow has no mode for this array
        log.error("%s is not an image array (%s): it gets no annotations", field, exc)
        return None


def _value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _points(shape: Shape, attributes: dict | None) -> list:
    """A skeleton as one ``dl.Point`` per keypoint seen (Dataloop's points have no visibility flag)."""
    return [dl.Point(x, y, shape.label.name, attributes=attributes, description=sublabel.name)
            for sublabel, (x, y, outside) in zip(shape.label.sublabels, shape.keypoints) if not outside]


def _box(shape: Shape, attributes: dict | None) -> list:
    x1, y1, x2, y2 = shape.box
    return [dl.Box(left=x1, top=y1, right=x2, bottom=y2, label=shape.label.name, attributes=attributes)]


def builders(width: int, height: int) -> dict:
    """Each geometry as Dataloop's annotation definitions."""
    return {
        "skeleton": _points,
        "mask": lambda s, a: [dl.Segmentation(geo=s.mask.full(width, height), label=s.label.name, attributes=a)],
        "polygon": lambda s, a: [dl.Polygon(geo=s.polygon, label=s.label.name, attributes=a)],
        "box": _box,
    }


def collection(detections: Detections, labels: Labels, width: int, height: int,
               model_name: str) -> dl.AnnotationCollection:
    """Dataloop annotations of the detections whose label is in the spec, in the detections' order (a
    skeleton's points share one ``object_id``)."""
    out, build = dl.AnnotationCollection(), builders(width, height)
    for shape in detections.shapes(labels, width, height):
        info = {"name": model_name, "confidence": min(max(shape.score, 0.0), 1.0)}
        attributes = {name: _value(value) for name, value in shape.attributes.items()} or None
        extra = {"object_id": shape.index + 1} if shape.geometry == "skeleton" else {}
        for definition in build[shape.geometry](shape, attributes):
            out.add(definition, model_info=info, **extra)
    return out


class Adapter(dl.BaseModelAdapter):
    """Any detector folder of this repository as a Dataloop model (``load`` builds it, ``predict`` runs it)."""

    detector: Detector

    def load(self, local_path: str, **kwargs) -> None:
        configuration = dict(self.configuration)
        folder = find_folder(str(configuration.get("function") or "."))
        model = load_model(folder, env=environment_of(folder, configuration, local_path))
        if model.kind != "detector":
            raise ValueError(f"{model.name} is a {model.kind}: Dataloop's model adapters serve detectors only")
        self.detector = self.model = model

    @property
    def model_name(self) -> str:
        return self._model_entity.name if self._model_entity is not None else self.detector.name

    def threshold(self) -> float | None:
        """The configuration's threshold; None: the model's default."""
        configuration = self.configuration
        for key in THRESHOLD_KEYS:
            value = configuration[key] if key in configuration else None  # .get() would write the key back
            if value is not None:
                try:
                    return float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"configuration {key}={value!r} is not a number") from None
        return None

    def prepare_item_func(self, item: dl.Item) -> Any:
        """An image item decoded by our decoder (RGB, EXIF-oriented), None when it cannot be read."""
        if "image" not in (item.mimetype or ""):
            return super().prepare_item_func(item)
        try:
            data = item.download(save_locally=False).getvalue()
        except Exception as exc:  # the platform's download: anything can go wrong there
            log.error("item %s could not be downloaded (%s): it gets no annotations", item.id, exc)
            return None
        try:
            return Image.from_bytes(data, f"item {item.id}")
        except RequestError as exc:
            log.error("%s: it gets no annotations", exc)
            return None

    def predict(self, batch: list, **kwargs) -> list[dl.AnnotationCollection]:
        threshold = self.threshold()
        return [self.annotate(image_of(element, f"batch item {n}"), threshold) for n, element in enumerate(batch)]

    @in_model_env
    def annotate(self, image: Image | None, threshold: float | None) -> dl.AnnotationCollection:
        if image is None:
            return dl.AnnotationCollection()
        try:
            found = self.detector.run(image, threshold)
        except RequestError as exc:  # not readable after all, or over the image limits
            log.error("%s: it gets no annotations", exc)
            return dl.AnnotationCollection()
        return collection(found, self.detector.labels, *image.size, self.model_name)

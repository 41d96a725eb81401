"""What every model has, and the base classes of the kinds that need no extra packages: detectors and interactors.

A function's ``model_handler.py`` defines ``ModelHandler`` as a subclass of one kind's base class:
:class:`Detector`, :class:`Interactor`, :class:`~common.models.tracking.Tracker` or
:class:`~common.models.reid.Reidentifier`. It loads its model in ``__init__`` and implements the kind's typed
methods on :class:`~common.core.image.Image` in and :mod:`~common.core.results` out. It knows nothing of any
platform's wire format: the doors (:mod:`common.doors`) parse requests and encode replies.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from common.core.image import Image
from common.core.errors import RequestError
from common.core.config import FunctionConfig
from common.core.labels import Label, Labels, spec_of
from common.core.prompts import Prompt
from common.core.results import Detections, Region
from common.core.settings import Settings, current_env, env_str, environment
from common.runtime.backends import require_gpu

KINDS = ("detector", "interactor", "tracker", "reid")


def function_yaml() -> str:
    """The yaml file the function is served from: ``FUNCTION_YAML`` (set by ``tools/fn serve --gpu`` and
    ``deploy_gpu.sh``), else ``function.yaml``."""
    return os.path.basename(env_str("FUNCTION_YAML", "function.yaml"))


class Model:
    """A function's model: its folder's yaml, its labels, its settings and a log.

    A function's ``ModelHandler`` (in its folder's ``model_handler.py``) gets ``function_dir``, the folder of
    its ``function.yaml``, from that file; a class that declares ``settings: SomeSettings`` gets that
    ``settings_class``: its settings are read from the environment once, when the model is built, unless given.
    """

    kind: ClassVar[str]
    function_dir: ClassVar[Path | None] = None
    settings_class: ClassVar[type[Settings]] = Settings
    # Bytes the model allocates per pixel of a request image beyond decoding it (measured; 0 for models that
    # work on a resized copy of fixed size). With decoding, this bounds a request image by IMAGE_MAX_MEMORY_MB.
    work_bytes_per_pixel: ClassVar[float] = 0
    # Models whose own resize keeps the aspect ratio (and would leave a 1×4000 image no rows) get images further
    # from square than this padded first (:func:`~common.core.image.pad_to_aspect`); None: no padding.
    max_aspect: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        module = sys.modules.get(cls.__module__)
        source = getattr(module, "__file__", None)
        if "function_dir" not in vars(cls) and source and Path(source).name == "model_handler.py":
            cls.function_dir = Path(source).resolve().parent
        declared = vars(cls).get("__annotations__", {}).get("settings")
        if "settings_class" not in vars(cls) and declared is not None:
            cls.settings_class = _resolve(declared, module)

    def __init__(self, settings: Settings | None = None, log: Callable[[str], None] | None = None):
        self.env = current_env()  # where its settings came from: os.environ, or a door's environment(...)
        self.settings = settings if settings is not None else self.settings_class.from_env(self.env)
        self._log = log
        require_gpu(self.warn)  # a GPU yaml's function on a worker without its GPU: refused, not silently slow

    @cached_property
    def function(self) -> FunctionConfig:
        """The yaml the function is served from (what CVAT and Nuclio read too), parsed once; its kind must be
        this model's."""
        if self.function_dir is None:
            raise RuntimeError(f"{type(self).__name__}.function_dir is not set")
        function = FunctionConfig.read(Path(self.function_dir) / function_yaml())
        if function.kind != self.kind:
            raise RuntimeError(f"{function.path} declares annotations.type {function.kind!r} but "
                               f"{type(self).__name__} is a {self.kind}")
        return function

    @property
    def config(self) -> dict:
        """The yaml as a mapping."""
        return self.function.config

    @property
    def name(self) -> str:
        return self.function.name

    @cached_property
    def labels(self) -> Labels:
        return Labels.from_spec(spec_of(self.config))

    def admit(self, *images: Image) -> None:
        """Refuse (400) images whose decoding plus this model's work on them would take more than
        ``IMAGE_MAX_MEMORY_MB``, from their headers alone: every door calls it before the model runs."""
        for image in images:
            image.require_memory(self.work_bytes_per_pixel, self.max_aspect)

    def warn(self, message: str) -> None:
        """A warning in the function's log (Nuclio's logger when running under it)."""
        if self._log is not None:
            self._log(message)
        else:
            logging.getLogger(type(self).__module__).warning(message)


def _resolve(annotation: object, module) -> type[Settings]:
    """A class annotation (a string under ``from __future__ import annotations``: ``X`` or ``module.X``) as the
    class it names in the defining module."""
    if not isinstance(annotation, str):
        return annotation
    found = module
    for part in annotation.split("."):
        found = vars(found)[part] if found is module else getattr(found, part)
    return found


def in_model_env(method: Callable) -> Callable:
    """For a door method of an object with a ``model``: run it with the settings the model was built with
    (:func:`~common.core.settings.environment`), for what is read per call (image limits, polygon epsilon)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with environment(self.model.env):
            return method(self, *args, **kwargs)
    return run


class Detector(Model):
    """Finds every object of the spec's labels: :meth:`detect` returns :class:`Detections` whose class ids are
    the spec's label ids, best first, scoring at least the threshold."""

    kind: ClassVar[str] = "detector"
    default_threshold: ClassVar[float] = 0.5  # when a request names none
    open_vocabulary: ClassVar[bool] = False  # whether it finds labels by name beyond its spec (:meth:`vocabulary`)

    def run(self, image: Image, threshold: float | None = None, labels: Sequence[str] | None = None,
            vocabulary: Labels | None = None) -> Detections:
        """What every door calls: the memory guard, the model's default threshold when the request names none,
        and, when ``labels`` are given, only those labels of ``vocabulary`` (default: the spec's labels; see
        :meth:`vocabulary`), whose ids the detections' class ids then are (:meth:`detect_labels`)."""
        self.admit(image)
        threshold = self.default_threshold if threshold is None else threshold
        if labels is None:
            return self.detect(image, threshold)
        return self.detect_labels(image, threshold, labels, vocabulary)

    def vocabulary(self, names: Sequence[str]) -> Labels:
        """The labels a request naming ``names`` can get: the spec's, for a model with a fixed class list."""
        return self.labels

    def detect(self, image: Image, threshold: float) -> Detections:
        raise NotImplementedError

    def detect_labels(self, image: Image, threshold: float, names: Sequence[str],
                      vocabulary: Labels | None = None) -> Detections:
        """Only the detections of the labels ``names`` of ``vocabulary`` (default: the spec's; unknown names are
        a 400). Text-prompted models override :meth:`detect_prompts` and prompt for those labels alone."""
        vocabulary = self.labels if vocabulary is None else vocabulary
        unknown = [name for name in names if name not in vocabulary.by_name]
        if unknown:
            names = [label.name for label in vocabulary]
            listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise RequestError(f"labels: {', '.join(map(repr, unknown[:5]))} not among this function's labels "
                               f"({listed})")
        labels = [vocabulary.by_name[name] for name in dict.fromkeys(names)]
        found = self.detect_prompts(image, threshold, labels)
        ids = [vocabulary.id_of(label) for label in labels]
        return found[np.isin(found.class_id, ids)]

    def detect_prompts(self, image: Image, threshold: float, labels: Sequence[Label]) -> Detections:
        """Detections of (at least) ``labels``: every label for models with a fixed class list."""
        return self.detect(image, threshold)


class Interactor(Model):
    """Segments one object from a :class:`Prompt`: :meth:`segment` returns its mask as a :class:`Region`."""

    kind: ClassVar[str] = "interactor"

    def prepare(self, image: Image, shared: bool = False) -> bool | None:
        """Compute what prompts on ``image`` need (an image embedding), ahead of them; whether it was cached
        already. None for a model that has nothing to prepare. ``shared``: return only once other workers can
        find it too (a precompute request, which no one waits on)."""
        return None

    def segment(self, image: Image, prompt: Prompt) -> Region | None:
        """The object's mask (None when nothing was found)."""
        raise NotImplementedError

    def browser_embedding(self, image: Image) -> np.ndarray | None:
        """The image embedding a decoder running in a browser needs (float32), or None when the model has none."""
        return None

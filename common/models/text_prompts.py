"""Detectors that find the spec's own labels by name: open-vocabulary models prompted with text (OWLv2, SAM 3).

Each spec label is looked for under its phrases (:attr:`~common.core.labels.Label.phrases`: its ``prompts``
in the spec, else its name); a request may restrict the labels (:meth:`Detector.detect_labels`). The model is
loaded with Hugging Face ``from_pretrained`` from a folder as ``save_pretrained`` (or ``snapshot_download``)
writes it: ``MODEL_PATH``, else ``$MODELS_DIR/<the hub name's last part>`` when it exists (where the function
images download it at build), else the hub name itself, downloaded into Hugging Face's cache (with ``HF_TOKEN``
for gated checkpoints).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from common.core.errors import UnavailableError
from common.core.image import Image
from common.core.labels import Label, Labels
from common.core.results import Detections
from common.core.settings import env_str
from common.models.base import Detector


class WeightsRefused(UnavailableError):
    """The hub refused the checkpoint (gated, or no token)."""


def phrase_table(labels: Sequence[Label]) -> tuple[list[str], list[Label]]:
    """Every phrase of the labels, and the label each one belongs to (in the same order)."""
    phrases, owners = [], []
    for label in labels:
        for phrase in label.phrases:
            phrases.append(phrase)
            owners.append(label)
    return phrases, owners


def pretrained(loader: Callable[..., Any], hub_name: str, licence_page: str | None = None, **kwargs) -> Any:
    """``loader(MODEL_PATH, else $MODELS_DIR/<name>, else hub_name)``; a refused download says what to do."""
    local = Path(env_str("MODELS_DIR") or "/nonexistent") / hub_name.split("/")[-1]
    source = env_str("MODEL_PATH") or (str(local) if local.is_dir() else hub_name)
    token = env_str("HF_TOKEN")
    try:
        return loader(source, **({"token": token} if token else {}), **kwargs)
    except OSError as exc:  # transformers raises OSError for missing files, refused and failed downloads
        text = str(exc)
        if licence_page and ("gated" in text or "401" in text or "403" in text or "restricted" in text):
            raise WeightsRefused(
                f"{hub_name} is gated: accept its licence on {licence_page} with your Hugging Face account, then "
                f"set HF_TOKEN to a token of that account (or MODEL_PATH to a folder holding the checkpoint)"
            ) from None
        raise WeightsRefused(f"cannot load {source}: {text.splitlines()[0] if text else exc!r} (set MODEL_PATH to a "
                             "folder as save_pretrained writes it, or allow the download)") from None


class TextPromptedDetector(Detector):
    """A detector whose classes are the spec's labels, found by their phrases. Subclasses implement
    :meth:`detect_prompts`; every spec label is prompted for unless a request names some."""

    hub_name: ClassVar[str]
    open_vocabulary: ClassVar[bool] = True
    licence_page: ClassVar[str | None] = None  # for gated checkpoints: where the licence is accepted

    def from_pretrained(self, loader: Callable[..., Any]) -> Any:
        """``loader`` (a ``from_pretrained``) on this function's checkpoint (see :func:`pretrained`)."""
        return pretrained(loader, self.hub_name, self.licence_page)

    def detect(self, image: Image, threshold: float) -> Detections:
        return self.detect_prompts(image, threshold, list(self.labels))

    def vocabulary(self, names: Sequence[str]) -> Labels:
        """The spec's labels and one more for each name the spec lacks, looked for under that name (a
        platform's own label names as the vocabulary), each with an explicit id, new ones after the spec's."""
        ids = [self.labels.id_of(label) for label in self.labels]
        extra = [name for name in dict.fromkeys(names) if name not in self.labels.by_name]
        kind = self.labels.items[0].type if len(self.labels) else "any"
        first = max(ids, default=-1) + 1
        return Labels.of([replace(label, id=i) for label, i in zip(self.labels, ids)]
                         + [Label(name, kind, first + k) for k, name in enumerate(extra)])

    def class_id(self, label: Label) -> int:
        """The class id of a label this model was prompted with (a spec label or one of :meth:`vocabulary`)."""
        return label.id if label.id is not None else self.labels.id_of(label)

    def detect_prompts(self, image: Image, threshold: float, labels: Sequence[Label]) -> Detections:
        raise NotImplementedError

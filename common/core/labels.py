"""A function's labels, read from its own ``function.yaml`` (``metadata.annotations.spec``).

What the model emits and what CVAT sees come from the same file, so they cannot drift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def attribute_text(value: object) -> str:
    """An attribute value as annotation tools store it: a string; booleans as "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Attribute:
    name: str
    input_type: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Label:
    name: str
    type: str = "any"
    id: int | None = None
    attributes: tuple[Attribute, ...] = ()
    sublabels: tuple["Label", ...] = ()
    svg: str | None = None
    prompts: tuple[str, ...] = ()  # a text-prompted detector's phrases for it (default: its name)

    @property
    def phrases(self) -> tuple[str, ...]:
        """What a text-prompted detector looks for under this label: its ``prompts``, else its name."""
        return self.prompts or (self.name,)

    @classmethod
    def from_spec(cls, item: dict) -> "Label":
        prompts = item.get("prompts", ())
        return cls(
            name=item["name"],
            type=item.get("type", "any"),
            id=item.get("id"),
            attributes=tuple(
                Attribute(a["name"], a["input_type"], tuple(a.get("values", ()))) for a in item.get("attributes", ())
            ),
            sublabels=tuple(cls.from_spec(s) for s in item.get("sublabels", ())),
            svg=item.get("svg"),
            prompts=(prompts,) if isinstance(prompts, str) else tuple(str(p) for p in prompts),
        )

    def edges(self) -> list[tuple[str, str]]:
        """A skeleton's edges from its ``svg``, as pairs of sublabel names (CVAT's node ids → label names)."""
        if not self.svg:
            return []
        names = {}
        for circle in re.findall(r"<circle[^>]*>", self.svg):
            node = re.search(r'data-node-id="(\d+)"', circle)
            name = re.search(r'data-label-name="([^"]*)"', circle)
            if node and name:
                names[node.group(1)] = name.group(1)
        pairs = re.findall(r'data-node-from="(\d+)"[^>]*data-node-to="(\d+)"', self.svg)
        return [(names[a], names[b]) for a, b in pairs if a in names and b in names]


@dataclass(frozen=True)
class Labels:
    """The spec's labels, looked up by position, by ``id`` and by name."""

    items: tuple[Label, ...]
    by_id: dict = field(compare=False, repr=False)
    by_name: dict = field(compare=False, repr=False)

    @classmethod
    def from_spec(cls, spec: list[dict]) -> "Labels":
        return cls.of(Label.from_spec(item) for item in spec)

    @classmethod
    def of(cls, labels) -> "Labels":
        items = tuple(labels)
        return cls(items, {label.id: label for label in items if label.id is not None},
                   {label.name: label for label in items})

    @classmethod
    def from_function_yaml(cls, path: str | Path) -> "Labels":
        return cls.from_spec(read_spec(path))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def label_of(self, class_id: int) -> Label | None:
        """The spec's label for a class id: the item with that ``id`` (specs whose items have ids), else the
        item at that position; None when there is none."""
        if self.by_id:
            return self.by_id.get(int(class_id))
        return self.items[class_id] if 0 <= class_id < len(self.items) else None

    def id_of(self, label: Label) -> int:
        """The class id of a spec label: its ``id``, else its position (the inverse of :meth:`label_of`)."""
        return label.id if label.id is not None else self.items.index(label)

    def name_of(self, class_id: int) -> str:
        """The label name for a model class index: the spec item with that ``id``, else by position."""
        label = self.by_id.get(class_id)
        if label is None:
            label = self.items[class_id]
        return label.name


def read_config(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return config


def spec_of(config: dict, where: str | Path = "function.yaml") -> list[dict]:
    """``metadata.annotations.spec`` of a parsed config, as JSON; empty or missing means no labels (as CVAT reads it)."""
    annotations = (config.get("metadata") or {}).get("annotations") or {}
    text = annotations.get("spec")
    if not text:
        return []
    spec = json.loads(text)
    if not isinstance(spec, list):
        raise ValueError(f"{where}: metadata.annotations.spec must be a JSON list")
    return spec


def read_spec(path: str | Path) -> list[dict]:
    """:func:`spec_of` the yaml file at ``path``."""
    return spec_of(read_config(path), path)

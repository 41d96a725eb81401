"""An operator's own vocabulary for a text-prompted detector: the labels CVAT lists, each with its prompts.

A vocabulary is given as label names (``car,person,traffic light``) or as a file: a JSON or YAML mapping of
names to one or more phrases (``{"car": ["car", "van", "pickup truck"], "person": "person"}``), or a list of
names. It replaces the spec of a function's yaml (``metadata.annotations.spec``), keeping the type of the
spec's labels, so that CVAT lists exactly those labels and maps them to a task's labels by name.

Only text-prompted detectors take one: their yamls say ``open_vocabulary: "true"`` in
``metadata.annotations``. Run as a script (standard library only, for the deploy scripts)::

    python3 common/core/vocabulary.py VOCABULARY YAML [YAML ...]   # rewrites each yaml's spec in place
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

SPEC_LINE = re.compile(r"^(?P<indent>[ ]*)spec:[ ]*(?:\|[-+]?|>[-+]?)?[ ]*(?P<inline>.*)$")


class VocabularyError(ValueError):
    pass


def _phrases(name: str, value: object) -> list[str]:
    phrases = [value] if isinstance(value, str) else value
    if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise VocabularyError(f"label {name!r}: prompts must be a phrase or a non-empty list of phrases")
    return [p.strip() for p in phrases]


def parse(value: str) -> dict[str, list[str]]:
    """Label names → prompts, from comma-separated names or a JSON/YAML file of names (with prompts)."""
    if os.path.isfile(value):
        text = Path(value).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError:
            try:
                import yaml
            except ImportError:
                raise VocabularyError(f"{value}: not JSON (a YAML vocabulary needs PyYAML)") from None
            data = yaml.safe_load(text)
        if isinstance(data, list):
            data = {str(name): str(name) for name in data}
        if not isinstance(data, dict):
            raise VocabularyError(f"{value}: a vocabulary file holds a mapping of names to prompts, or a list of names")
        found = {str(name).strip(): _phrases(str(name), prompts) for name, prompts in data.items()}
    else:
        found = {name.strip(): [name.strip()] for name in value.split(",") if name.strip()}
    if not found or any(not name for name in found):
        raise VocabularyError(f"no label names in {value!r}")
    return found


def spec(vocabulary: dict[str, list[str]], shape_type: str) -> list[dict]:
    """Spec labels with ids 0..N-1; prompts are kept when they are more than the name itself."""
    return [{"id": i, "name": name, "type": shape_type, **({} if prompts == [name] else {"prompts": prompts})}
            for i, (name, prompts) in enumerate(vocabulary.items())]


def rewrite(yaml_text: str, vocabulary: dict[str, list[str]]) -> str:
    """The yaml with its ``metadata.annotations.spec`` block replaced (the labels' type is kept)."""
    lines = yaml_text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        match = SPEC_LINE.match(line.rstrip("\n"))
        if match and len(match["indent"]) >= 4:  # metadata.annotations.spec, not the top-level spec:
            break
    else:
        raise VocabularyError("the yaml has no metadata.annotations.spec")
    indent = len(match["indent"])
    end = n + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > indent):
        end += 1
    old = match["inline"].strip().strip("'\"") or "".join(lines[n + 1:end])
    types = re.findall(r'"type"\s*:\s*"([a-z]+)"', old)
    block = json.dumps(spec(vocabulary, types[0] if types else "rectangle"), indent=2)
    body = "".join(" " * (indent + 2) + row + "\n" for row in block.splitlines())
    trailing = "\n" if end < len(lines) and lines[end - 1].strip() == "" else ""
    return "".join(lines[:n]) + " " * indent + "spec: |\n" + body + trailing + "".join(lines[end:])


def is_open(yaml_text: str) -> bool:
    """Whether the yaml is a text-prompted detector's (``metadata.annotations.open_vocabulary: "true"``)."""
    return re.search(r'^\s+open_vocabulary:\s*["\']?true["\']?\s*$', yaml_text, re.M) is not None


def staged(folder: Path, vocabulary: dict[str, list[str]], target: Path) -> Path:
    """A copy of a text-prompted detector's folder in ``target`` whose yamls list ``vocabulary``."""
    if not is_open((folder / "function.yaml").read_text(encoding="utf-8")):
        raise VocabularyError(f"{folder} is not a text-prompted detector (open_vocabulary): its labels are fixed")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in target.glob("function*.yaml"):
        path.write_text(rewrite(path.read_text(encoding="utf-8"), vocabulary), encoding="utf-8")
    return target


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        vocabulary = parse(argv[0])
        for path in map(Path, argv[1:]):
            text = path.read_text(encoding="utf-8")
            if not is_open(text):
                raise VocabularyError(f"{path} is not a text-prompted detector's yaml (open_vocabulary): its labels "
                                      "are fixed")
            path.write_text(rewrite(text, vocabulary), encoding="utf-8")
    except (VocabularyError, OSError) as exc:
        print(f"vocabulary: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

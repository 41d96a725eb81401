"""The playground page that ``tools/fn serve`` answers at its dashboard port's ``/``: plain HTML, CSS and
JavaScript from this folder (no build step, nothing fetched from elsewhere), and the listing it reads.

The page is one more client of the dashboard's API: it lists the functions from ``/api/playground/functions``
and calls them through ``/api/function_invocations`` exactly as CVAT does, so every request it sends meets the
same validation as any other client's.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree
from typing import TYPE_CHECKING

from common.core.labels import spec_of

if TYPE_CHECKING:
    from tools.harness import FunctionRuntime

FOLDER = Path(__file__).parent
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
PREFIX = "/playground/"
LISTING = "/api/playground/functions"


# the page's files by name, read when asked for (an edited file is served as it is now)
FILES = {f.name: f for f in FOLDER.iterdir() if f.suffix in TYPES and f.is_file()}


def static(path: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of the page's file at URL ``path`` (``/`` is the page itself); None for any other
    path. Only the files of this folder with the types above are served, looked up by name, never by a path a
    client could steer elsewhere."""
    name = "index.html" if path in ("", "/") else path[len(PREFIX):] if path.startswith(PREFIX) else None
    found = FILES.get(name or "")
    return None if found is None else (TYPES[found.suffix], found.read_bytes())


def edges(svg: str) -> list[list[str]]:
    """A skeleton's edges as pairs of point names, read from the spec's ``svg`` (CVAT's skeleton drawing: circles
    naming their ``data-node-id`` and ``data-label-name``, lines joining ``data-node-from`` to ``data-node-to``)."""
    try:
        drawing = ElementTree.fromstring(f"<svg>{svg}</svg>")
    except ElementTree.ParseError:
        return []
    names = {node.get("data-node-id"): node.get("data-label-name") for node in drawing.iter("circle")}
    return [[names[line.get("data-node-from")], names[line.get("data-node-to")]] for line in drawing.iter("line")
            if line.get("data-node-from") in names and line.get("data-node-to") in names]


def labels_of(config) -> list[dict]:
    """The spec's labels, as the page shows and uses them: name, type, sublabels' names and a skeleton's edges,
    attributes' names."""
    try:
        spec = spec_of(config.config, config.path)
    except ValueError:  # the function's own loading says what is wrong; the page shows no labels
        return []
    return [{"name": str(label.get("name")), "type": label.get("type", "any"),
             "sublabels": [str(s.get("name")) for s in label.get("sublabels") or []],
             "edges": edges(str(label.get("svg") or "")),
             "attributes": [str(a.get("name")) for a in label.get("attributes") or []]}
            for label in spec if isinstance(label, dict)]


def describe(runtime: "FunctionRuntime") -> dict:
    """One function for the page: what the dashboard knows of it, the backend and device its workers reported,
    and the doors it answers (paths on its own port)."""
    config = runtime.config
    annotations = config.annotations
    kind = config.kind
    doors = {"CVAT / Nuclio": "/"}
    if kind == "detector":
        doors["V7 Darwin"] = "/infer"
    if kind in ("detector", "interactor"):
        doors["Label Studio"] = "/"
    return {
        "name": runtime.name, "title": annotations.get("name", runtime.name), "kind": kind, "state": runtime.state,
        "message": runtime.message, "workers": config.workers, "port": runtime.http_port,
        "framework": annotations.get("framework", ""), "backend": runtime.runtime.get("backend", ""),
        "device": runtime.runtime.get("device", ""), "labels": labels_of(config),
        "open_vocabulary": str(annotations.get("open_vocabulary", "")).lower() == "true",
        "shape_types": [t.strip() for t in str(annotations.get("supported_shape_types", "")).split(",")
                        if t.strip()],
        "doors": doors,
    }


def listing(functions: dict[str, "FunctionRuntime"]) -> list[dict]:
    return [describe(runtime) for runtime in functions.values()]

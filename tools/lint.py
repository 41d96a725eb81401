"""``tools/fn lint``: check function.yaml / function-gpu.yaml against what CVAT and Nuclio require.

Each problem is one line ``<file>: <problem>``; the command exits non-zero when there is any.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
from pathlib import Path

import yaml

from common.doors.cvat.request import SHAPE_TYPES

from common.core.config import parse_duration

from .config import CONFIG_NAMES, ROOT, find_yaml_files

KINDS = ("detector", "interactor", "tracker", "reid")
LABEL_TYPES = SHAPE_TYPES + ("tag", "any")
INPUT_TYPES = ("checkbox", "radio", "number", "text", "select")
RUNTIMES = ("python:3.9", "python:3.10", "python:3.11", "python:3.12")
INT_ANNOTATIONS = ("version", "min_pos_points", "min_neg_points")
BOOL_ANNOTATIONS = ("startswith_box", "startswith_box_optional")
FALSY_LOOKING = ("false", "0", "no", "off", "none", "null")
LOCK = ROOT / "requirements.lock"
LOCK_FLAG = "-c /opt/nuclio/requirements.lock"


def named_items(items: object, where: str, what: str, problems: list[str]):
    """Yield (location, item) for each object of a list, reporting non-objects and duplicate names."""
    if not isinstance(items, list):
        problems.append(f"{where} must be a list of {what}s")
        return
    names: set[str] = set()
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at} must be an object")
            continue
        name = item.get("name")
        if isinstance(name, str) and name:
            if name in names:
                problems.append(f"{at}: duplicate {what} name {name!r}")
            names.add(name)
        yield at, item


def lint_labels(labels: object, where: str, problems: list[str], sublabels: bool = False) -> None:
    for at, label in named_items(labels, where, "label", problems):
        name = label.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{at} has no name")
        at = f"{where}[{name!r}]" if isinstance(name, str) and name else at
        label_type = label.get("type", "any")
        if label_type not in LABEL_TYPES:
            problems.append(f"{at}: unknown type {label_type!r}")
        if sublabels and label_type != "points":
            problems.append(f"{at}: skeleton sublabels must have type 'points'")
        lint_attributes(label.get("attributes", []), at, problems)
        if label_type == "skeleton":
            if not label.get("sublabels"):
                problems.append(f"{at}: a skeleton needs sublabels")
            else:
                lint_labels(label["sublabels"], f"{at}.sublabels", problems, sublabels=True)
            if not isinstance(label.get("svg"), str) or not label.get("svg"):
                problems.append(f"{at}: a skeleton needs an svg")
        elif "sublabels" in label:
            problems.append(f"{at}: only skeleton labels have sublabels")


def lint_attributes(attributes: object, where: str, problems: list[str]) -> None:
    for at, attr in named_items(attributes, f"{where}.attributes", "attribute", problems):
        missing = [k for k in ("name", "input_type", "values") if k not in attr]
        if missing:
            problems.append(f"{at} lacks {', '.join(missing)}")
        if "input_type" in attr and attr["input_type"] not in INPUT_TYPES:
            problems.append(f"{at}: unknown input_type {attr['input_type']!r}")
        if "values" in attr and not (isinstance(attr["values"], list)
                                     and all(isinstance(v, str) for v in attr["values"])):
            problems.append(f"{at}: values must be a list of strings")


def handler_defined(directory: Path, handler: str) -> str | None:
    """None when ``module:function`` is a function defined in ``directory``'s module, else the problem.

    Nuclio's wrapper runs the ``init_context`` of the module that *defines* the handler
    (``sys.modules[handler.__module__]``): a handler imported or made by a factory elsewhere leaves the module's
    ``init_context`` unrun, so both must be ``def`` statements of the module itself.
    """
    if handler.count(":") != 1:
        return f"spec.handler {handler!r} must be module:function"
    module, function = handler.split(":")
    source = directory / (module.replace(".", "/") + ".py")
    if not source.is_file():
        return f"spec.handler: {source.name} not found beside the yaml"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    defined, bound = set(), set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    for name in (function, "init_context"):
        if name in bound - defined:
            return (f"spec.handler: {name} in {source.name} is not a function defined there; Nuclio runs the "
                    f"init_context of the module that defines the handler, so define both with def in {source.name}")
    if function not in defined:
        return f"spec.handler: {source.name} defines no {function!r}"
    return None


def pip_installs(command: str) -> list[tuple[list[str], list[str]]]:
    """Each ``pip install`` of a shell command (``&&`` chains, ``VAR=x pip install``): the requirements as
    written and the index URLs it names; other options and the files of ``-c``/``-r`` left out."""
    found = []
    for part in command.split("&&"):
        words = shlex.split(part)
        if "pip" not in words or "install" not in words[words.index("pip"):]:
            continue
        words = words[words.index("install", words.index("pip")) + 1:]
        requirements, indexes, skip = [], [], False
        for n, word in enumerate(words):
            if skip:
                skip = False
            elif word in ("--index-url", "--extra-index-url", "-i"):
                indexes.append(words[n + 1])
                skip = True
            elif word in ("-c", "--constraint", "-r", "--requirement"):
                skip = True
            elif not word.startswith("-"):
                requirements.append(word)
        found.append((requirements, indexes))
    return found


def installed_packages(command: str) -> list[str]:
    """The distributions (canonical names) a command's ``pip install`` s name."""
    return [canonical(re.split(r"[\[<>=!~;]", word, maxsplit=1)[0])
            for requirements, _ in pip_installs(command) for word in requirements]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=4)
def locked(lock: Path) -> set[str]:
    return {canonical(line.split("==")[0]) for line in lock.read_text().splitlines() if "==" in line
            and not line.startswith(("#", " "))} if lock.is_file() else set()


def build_packages(spec: dict) -> set[str]:
    """Every distribution a build's commands install."""
    directives = (spec.get("build") or {}).get("directives") or {}
    return {name for items in directives.values() if isinstance(items, list) for item in items
            if isinstance(item, dict) for name in installed_packages(str(item.get("value", "")))}


def lint_build(spec: dict, lock: Path = LOCK) -> list[str]:
    """Build commands leave nuclio-sdk to Nuclio (whose build installs the version its wrapper pins); every
    ``pip install`` runs after the function's files are in the image (postCopy) with requirements.lock as
    constraints, and installs only what the lock pins: an image runs what the tests ran."""
    build = spec.get("build") or {}
    directives = build.get("directives") or {}
    problems, pinned = [], locked(lock)
    steps = {**directives, "commands": [{"value": c} for c in build.get("commands") or []]}
    for step, items in steps.items():
        for item in items if isinstance(items, list) else []:
            command = str(item.get("value", "")) if isinstance(item, dict) else ""
            if "pip install" not in command:
                continue
            brief = command.strip()[:50]
            installed = installed_packages(command)
            if "nuclio-sdk" in installed:
                problems.append(f"spec.build installs nuclio-sdk ({brief}...); leave it to Nuclio, which installs the "
                                "version its Python wrapper pins")
            if step != "postCopy" or LOCK_FLAG not in command:
                problems.append(f"spec.build: {brief}... must run in postCopy with {LOCK_FLAG}, so that the image "
                                "gets the versions the tests ran with")
            unpinned = [name for name in installed if name not in pinned]
            if unpinned:
                problems.append(f"spec.build installs {', '.join(unpinned)}, which requirements.lock does not pin "
                                "(add it to a requirements file, then tools/fn lock)")
    return problems


def lint_config(path: Path, config: object) -> list[str]:
    problems: list[str] = []
    if not isinstance(config, dict):
        return ["not a YAML mapping"]
    metadata = config.get("metadata") or {}
    spec = config.get("spec") or {}
    if not metadata.get("name"):
        problems.append("metadata.name is missing")
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        problems.append("metadata.annotations is missing")
        annotations = {}
    for key, value in annotations.items():
        if not isinstance(value, str):
            problems.append(f"metadata.annotations.{key} must be a string (quote it), got {type(value).__name__}")
    kind = annotations.get("type")
    if kind not in KINDS:
        problems.append(f"metadata.annotations.type must be one of {', '.join(KINDS)}, got {kind!r}")
    text = annotations.get("spec")
    if isinstance(text, str) and text.strip():
        try:
            lint_labels(json.loads(text), "spec", problems)
        except json.JSONDecodeError as exc:
            problems.append(f"metadata.annotations.spec is not valid JSON: {exc}")
    for key in INT_ANNOTATIONS:
        if key in annotations:
            try:
                int(str(annotations[key]))
            except ValueError:
                problems.append(f"metadata.annotations.{key} must be an integer string")
    for key in BOOL_ANNOTATIONS:
        if str(annotations.get(key, "")).strip().lower() in FALSY_LOOKING:
            problems.append(f"metadata.annotations.{key} is {annotations[key]!r}, which CVAT reads as True "
                            "(any non-empty string); remove the key instead")
    if kind == "tracker" and "supported_shape_types" in annotations:
        types = [t.strip() for t in str(annotations["supported_shape_types"]).split(",") if t.strip()]
        if not types:
            problems.append("metadata.annotations.supported_shape_types is empty")
        for t in types:
            if t not in SHAPE_TYPES:
                problems.append(f"metadata.annotations.supported_shape_types: unknown shape type {t!r}")
    if not isinstance(spec.get("description"), str) or not spec.get("description", "").strip():
        problems.append("spec.description is missing (CVAT fails with 500 without it)")
    runtime = spec.get("runtime")
    if runtime not in RUNTIMES:
        problems.append(f"spec.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    problem = handler_defined(path.parent, str(spec.get("handler") or ""))
    if problem:
        problems.append(problem)
    try:
        parse_duration(spec.get("eventTimeout"))
    except ValueError as exc:
        problems.append(f"spec.eventTimeout: {exc}")
    problems.extend(lint_trigger(spec))
    problems.extend(lint_build(spec))
    if kind in ("detector", "interactor") and "label-studio-sdk" not in build_packages(spec):
        problems.append("spec.build does not install label-studio-sdk, which the Label Studio door of a "
                        f"{kind} needs (see the other {kind}s' postCopy)")
    if path.name == "function-gpu.yaml":
        problems.extend(lint_gpu(spec))
    return problems


def _workers(trigger: dict) -> object:
    return trigger.get("numWorkers", trigger.get("maxWorkers"))


def lint_trigger(spec: dict) -> list[str]:
    triggers = spec.get("triggers") or {}
    http = [t for t in triggers.values() if isinstance(t, dict) and t.get("kind") == "http"]
    if len(http) != 1:
        return [f"spec.triggers must hold exactly one trigger of kind http, found {len(http)}"]
    trigger, problems = http[0], []
    workers = _workers(trigger)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        problems.append(f"http trigger: numWorkers (or maxWorkers) must be a positive integer, got {workers!r}")
    attributes = trigger.get("attributes") or {}
    size = attributes.get("maxRequestBodySize")
    if not isinstance(size, int) or size < 1024 * 1024:
        problems.append(f"http trigger: attributes.maxRequestBodySize must be an integer of at least 1 MiB "
                        f"(base64 images are large), got {size!r}")
    timeout = trigger.get("workerAvailabilityTimeoutMilliseconds")
    if timeout is not None and (not isinstance(timeout, int) or timeout < 0):
        problems.append("http trigger: workerAvailabilityTimeoutMilliseconds must be a non-negative integer")
    return problems


def lint_gpu(spec: dict) -> list[str]:
    problems = []
    limits = ((spec.get("resources") or {}).get("limits") or {})
    gpus = limits.get("nvidia.com/gpu")
    if not gpus or int(gpus) < 1:
        problems.append("GPU yaml must request resources.limits nvidia.com/gpu: 1")
    for trigger in (spec.get("triggers") or {}).values():
        if isinstance(trigger, dict) and trigger.get("kind") == "http" and _workers(trigger) != 1:
            problems.append(f"GPU yaml must run one worker, got {_workers(trigger)!r}")
    env = {str(i.get("name")): str(i.get("value")) for i in spec.get("env") or [] if isinstance(i, dict)}
    if not (env.get("TORCH_DEVICE", "").startswith("cuda") or "CUDAExecutionProvider" in env.get("ORT_PROVIDERS", "")):
        problems.append("GPU yaml must declare the GPU it needs in spec.env (TORCH_DEVICE=cuda, or ORT_PROVIDERS "
                        "naming CUDAExecutionProvider), so that a worker without it refuses to start")
    return problems


def lint_pair(cpu: dict, gpu: dict) -> list[str]:
    """Name, kind, labels and tracked shape types must be identical in function.yaml and function-gpu.yaml."""
    def facts(config):
        metadata = config.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        try:
            labels = json.loads(annotations.get("spec") or "[]")
        except json.JSONDecodeError:
            labels = None
        return {"metadata.name": metadata.get("name"), "annotations.type": annotations.get("type"),
                "annotations.name": annotations.get("name"), "annotations.spec (labels)": labels,
                "annotations.supported_shape_types": sorted(
                    t.strip() for t in str(annotations.get("supported_shape_types") or "").split(",") if t.strip())}

    a, b = facts(cpu), facts(gpu)
    return [f"{key} differs from function.yaml" for key in a if a[key] != b[key]]


def lint_paths(paths: list[str | Path] | None = None) -> list[str]:
    try:
        files = find_yaml_files(paths, CONFIG_NAMES)
    except FileNotFoundError as exc:
        return [str(exc)]
    problems: list[str] = []
    loaded: dict[Path, dict] = {}
    for path in files:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {str(exc).splitlines()[0]}")
            continue
        problems.extend(f"{path}: {p}" for p in lint_config(path, config))
        if isinstance(config, dict):
            loaded[path] = config
    for path, config in list(loaded.items()):
        if path.name == "function-gpu.yaml":
            cpu = path.with_name("function.yaml")
            if cpu not in loaded and cpu.is_file() and cpu not in files:
                try:
                    loaded_cpu = yaml.safe_load(cpu.read_text(encoding="utf-8"))
                except yaml.YAMLError:
                    loaded_cpu = None  # reported when function.yaml itself is linted
            else:
                loaded_cpu = loaded.get(cpu)
            if isinstance(loaded_cpu, dict):
                problems.extend(f"{path}: {p}" for p in lint_pair(loaded_cpu, config))
    return problems

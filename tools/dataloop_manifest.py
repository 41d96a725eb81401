"""``tools/fn dataloop-manifest FOLDER [-o FILE] [--stage DIR]``: the ``dataloop.json`` that publishes a detector
folder as a Dataloop app with one model, served by the adapter of :mod:`common.doors.dataloop`.

The model gets the function's labels and output type from its ``function.yaml``; the app a GPU pod when the
function has a ``function-gpu.yaml`` (its settings then come from that yaml), a CPU pod otherwise.
``--stage DIR`` also writes the code as the deploy scripts stage it (the function's files with ``common/``
beside them) with the manifest and a ``requirements.txt`` of the packages the yaml's build installs, ready
for ``dl.dpks.publish()`` from DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common.core import vocabulary
from common.core.labels import Labels, read_config, spec_of
from common.models.folder import find_folder, load_module

from .config import ROOT
from .lint import pip_installs

ADAPTER = {"entryPoint": "common/doors/dataloop.py", "className": "Adapter"}
OUTPUT_TYPES = {"rectangle": "box", "polygon": "segment", "mask": "binary", "points": "point", "skeleton": "point"}
# Dataloop's runner images with Python 3.10 and PyTorch 2 (the platform's own model apps use these lines)
RUNNER_IMAGES = {"cpu": "dataloopai/dtlpy-agent:cpu.py3.10.pytorch2",
                 "gpu": "dataloopai/dtlpy-agent:gpu.cuda.11.8.py3.10.pytorch2"}
POD_TYPES = {"cpu": "regular-m", "gpu": "gpu-t4"}


def pip_packages(config: dict) -> list[str]:
    """requirements.txt lines for what the yaml's build directives ``pip install`` (an index URL they name
    becomes ``--extra-index-url``; per-package flags such as ``--no-deps`` have no requirements.txt form)."""
    directives = ((config.get("spec") or {}).get("build") or {}).get("directives") or {}
    lines: list[str] = []
    for directive in [d for group in directives.values() for d in (group or [])]:
        if not isinstance(directive, dict) or directive.get("kind") != "RUN":
            continue
        for requirements, indexes in pip_installs(str(directive.get("value", ""))):
            for line in [f"--extra-index-url {url}" for url in indexes] + requirements:
                if line not in lines:
                    lines.append(line)
    return lines


def manifest(folder: Path, version: str = "1.0.0", device: str | None = None, staged: bool = False,
             runner_image: str | None = None) -> dict:
    """The app manifest of a detector folder (``device``: ``cpu`` or ``gpu``, by default ``gpu`` when the
    function has a GPU yaml)."""
    config = read_config(folder / "function.yaml")
    metadata = config.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if annotations.get("type") != "detector":
        raise ValueError(f"{folder}: a {annotations.get('type')}; Dataloop's model adapters serve detectors only")
    gpu_yaml = folder / "function-gpu.yaml"
    device = device or ("gpu" if gpu_yaml.is_file() else "cpu")
    if device == "gpu" and not gpu_yaml.is_file():
        raise ValueError(f"{folder} has no function-gpu.yaml")
    served = read_config(gpu_yaml) if device == "gpu" else config
    labels = Labels.from_spec(spec_of(config, folder / "function.yaml"))
    name = str(metadata["name"])
    threshold = load_module(folder).ModelHandler.default_threshold
    if not staged and ROOT not in folder.resolve().parents:
        raise ValueError(f"{folder} is outside this repository: stage it with its code (--stage DIR)")
    function = "." if staged else folder.resolve().relative_to(ROOT).as_posix()
    configuration = {"function": function, "confidence_threshold": threshold, "batch_size": 4,
                     **({"FUNCTION_YAML": gpu_yaml.name} if device == "gpu" else {})}
    timeout = 3600
    return {
        "name": name,
        "displayName": str(annotations.get("name") or name),
        "version": version,
        "scope": "project",
        "description": str((served.get("spec") or {}).get("description") or ""),
        "attributes": {"Category": "Model", "Computer Vision": "Object Detection", "Media Type": ["Image"],
                       "Deployed By": "cvat-functions"},
        "components": {
            "computeConfigs": [{
                "name": f"{name}-deploy",
                "runtime": {"podType": POD_TYPES[device], "concurrency": 1,
                            "runnerImage": runner_image or RUNNER_IMAGES[device],
                            "autoscaler": {"type": "rabbitmq", "minReplicas": 0, "maxReplicas": 1,
                                           "queueLength": 100}},
                "executionTimeout": timeout,
            }],
            "modules": [{
                "name": f"{name}-module", **ADAPTER, "computeConfig": f"{name}-deploy",
                "description": f"{annotations.get('name') or name} through common/doors/dataloop.py",
                "initInputs": [{"type": "Model", "name": "model_entity"}],
                "functions": [
                    {"name": "predict_items", "displayName": "Predict Items",
                     "input": [{"type": "Item[]", "name": "items"}],
                     "output": [{"type": "Item[]", "name": "items"}, {"type": "Annotation[]", "name": "annotations"}]},
                    {"name": "predict_dataset", "displayName": "Predict Dataset",
                     "input": [{"type": "Dataset", "name": "dataset"}, {"type": "Json", "name": "filters"}],
                     "output": []},
                ],
            }],
            "models": [{
                "name": name, "moduleName": f"{name}-module", "scope": "project", "status": "pre-trained",
                "inputType": "image",
                "outputType": OUTPUT_TYPES.get(next(iter(labels)).type, "box") if len(labels) else "box",
                "labels": [label.name for label in labels],
                "configuration": configuration,
                "supportedMethods": {"load": True, "predict": True, "train": False, "evaluate": False},
                "description": str((served.get("spec") or {}).get("description") or ""),
            }],
        },
    }


def stage(folder: Path, target: Path, app: dict, requirements: list[str]) -> None:
    """The function's files with ``common/`` beside them (as the deploy scripts stage a function), the
    manifest and the requirements, in ``target``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target, ignore=ignore)
    shutil.rmtree(target / "common", ignore_errors=True)
    shutil.copytree(ROOT / "common", target / "common", ignore=ignore)
    (target / "dataloop.json").write_text(json.dumps(app, indent=2) + "\n")
    (target / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fn dataloop-manifest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a detector's function folder")
    parser.add_argument("-o", "--output", help="write the manifest to this file (default: standard output)")
    parser.add_argument("--stage", metavar="DIR", help="also stage the code with the manifest in DIR (replaced)")
    parser.add_argument("--cpu", action="store_true", help="a CPU pod even when the function has a GPU yaml")
    parser.add_argument("--version", default="1.0.0", help="the app's version (publishing again needs a new one)")
    parser.add_argument("--runner-image", help="the pod's image (default: Dataloop's Python 3.10 runner)")
    parser.add_argument("--labels", help="a text-prompted detector's vocabulary (names or a file; needs --stage)")
    args = parser.parse_args(argv)
    scratch = tempfile.TemporaryDirectory()
    try:
        folder = find_folder(args.folder)
        if args.labels:
            if not args.stage:
                raise ValueError("--labels needs --stage: the staged code is what lists the vocabulary")
            folder = vocabulary.staged(folder, vocabulary.parse(args.labels), Path(scratch.name) / "function")
        app = manifest(folder, args.version, "cpu" if args.cpu else None, staged=bool(args.stage),
                       runner_image=args.runner_image)
    except (ValueError, OSError) as exc:
        print(f"tools/fn dataloop-manifest: {exc}", file=sys.stderr)
        scratch.cleanup()
        return 2
    text = json.dumps(app, indent=2) + "\n"
    if args.stage:
        yaml = folder / app["components"]["models"][0]["configuration"].get("FUNCTION_YAML", "function.yaml")
        stage(folder, Path(args.stage), app, pip_packages(read_config(yaml)))
        print(f"staged {args.folder} for Dataloop in {args.stage}", file=sys.stderr)
    scratch.cleanup()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0

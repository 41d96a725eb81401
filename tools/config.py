"""Reading function folders and their Nuclio configuration (function.yaml / function-gpu.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

from common.core.config import FunctionConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_NAMES = ("function.yaml", "function-gpu.yaml")
# Variables that hold one file or folder; so do all names ending in _PATH (MODEL_PATH, BACKBONE_PATH, ...).
PATH_VARIABLES = ("MODELS_DIR", "TEST_DATA_DIR", "CVAT_FUNCTIONS_CACHE", "XDG_CACHE_HOME", "DEPLOY_STAGE_DIR")


def absolute_paths(env: dict[str, str], cwd: str | None = None) -> dict[str, str]:
    """The path variables of ``env`` that are relative, made absolute against ``cwd`` (default: here).

    A path typed in a shell means what it means there; worker processes run from / (as under Nuclio), so
    the variables they inherit must not depend on the directory. Lists (``PYTHONPATH``-like values with the
    path separator) and empty values are left alone.
    """
    base = cwd or os.getcwd()
    out = {}
    for name, value in env.items():
        if not value or os.pathsep in value or not (name in PATH_VARIABLES or name.endswith("_PATH")):
            continue
        expanded = os.path.expanduser(value)
        if not os.path.isabs(expanded):
            out[name] = os.path.normpath(os.path.join(base, expanded))
        elif expanded != value:
            out[name] = expanded
    return out


def find_yaml_files(paths: list[str | Path] | None, names: tuple[str, ...]) -> list[Path]:
    """Files called one of ``names`` under ``paths`` (default: functions/); a path may name a file itself."""
    found: list[Path] = []
    for raw in paths or [ROOT / "functions"]:
        path = Path(raw)
        if path.is_file():
            found.append(path.resolve())
        elif path.is_dir():
            found.extend(p.resolve() for name in names for p in path.rglob(name) if ".venv" not in p.parts)
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")
    return sorted(set(found))


def find_configs(paths: list[str | Path] | None = None, gpu: bool = False) -> list[FunctionConfig]:
    """Every function.yaml (or function-gpu.yaml with ``gpu``) under ``paths`` (default: functions/)."""
    wanted = ("function-gpu.yaml",) if gpu else ("function.yaml",)
    return [FunctionConfig.read(p) for p in find_yaml_files(paths, wanted)]

"""A function folder's model, imported the way a Nuclio worker imports it, for doors that run in-process."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from common.core.settings import environment
from common.models.base import Model

ROOT = Path(__file__).resolve().parents[2]


def find_folder(function: str | Path) -> Path:
    """A function folder named relative to the working directory or to this repository (where a staged copy
    has the function's files beside ``common/``, ``.`` names that copy itself)."""
    folder = Path(function)
    if not (folder / "function.yaml").is_file() and (ROOT / folder / "function.yaml").is_file():
        folder = ROOT / folder
    if not (folder / "function.yaml").is_file():
        raise ValueError(f"function={function}: not a function folder (no function.yaml)")
    return folder


def load_module(folder: str | Path, name: str = "model_handler") -> ModuleType:
    """Import ``name`` from the folder (as ``model_handler``, the way a worker does), without building anything."""
    folder = str(Path(folder).resolve())
    for stale in (name, "main"):
        sys.modules.pop(stale, None)
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)
        sys.modules.pop(name, None)


def load_model(folder: str | Path, env: Mapping[str, str] | None = None, **arguments: Any) -> Model:
    """The folder's ``ModelHandler``, built (its model loaded) with ``arguments`` (settings, log, store); with
    ``env``, every setting it reads while it is built comes from that mapping instead of os.environ (the model
    keeps it as ``model.env``, for :func:`~common.core.settings.environment` around its calls)."""
    if env is None:
        return load_module(folder).ModelHandler(**arguments)
    with environment(env):
        return load_module(folder).ModelHandler(**arguments)

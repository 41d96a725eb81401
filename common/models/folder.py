"""A function folder's model, imported the way a Nuclio worker imports it, for doors that run in-process."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from common.models.base import Model


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


def load_model(folder: str | Path, **arguments: Any) -> Model:
    """The folder's ``ModelHandler``, built (its model loaded) with ``arguments`` (settings, log, store)."""
    return load_module(folder).ModelHandler(**arguments)

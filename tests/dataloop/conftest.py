"""The Dataloop door's tests run in its own environment (tools/fn test sets it up; see tests/conftest.py)."""

from __future__ import annotations

import os
import tempfile

import pytest

# dtlpy writes its settings under DATALOOP_PATH (~/.dataloop otherwise) when it is first imported
os.environ.setdefault("DATALOOP_PATH", tempfile.mkdtemp(prefix="dataloop-home-"))
try:
    import dtlpy  # noqa: F401
except ImportError:  # not a skip: these tests must run, in the environment made for them
    raise pytest.UsageError("tests/dataloop/ needs dtlpy: run them with tools/fn test (the Dataloop environment)")


@pytest.fixture(autouse=True)
def environment():
    """The adapter sets the function's settings in os.environ, as a pod's process would: undone after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)

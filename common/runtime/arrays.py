"""Serialising named NumPy arrays plus a little JSON metadata, without pickle.

The format is ``MAGIC`` + one version byte + an ``.npz`` archive (NumPy's own format, read back with
``allow_pickle=False``) whose member ``__meta__`` holds the JSON metadata as UTF-8 bytes. It is used for
everything a function keeps outside its process (embedding caches, tracker state), so what is read back can
only ever be plain arrays and JSON values, never code.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Mapping

import numpy as np

MAGIC = b"CVFA"
VERSION = 1
META = "__meta__"


class PayloadError(ValueError):
    """A stored payload is corrupt, of another version, or not in this format."""


def pack(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """``arrays`` and the JSON-ready ``meta`` as bytes."""
    if META in arrays:
        raise ValueError(f"{META} is a reserved array name")
    members = {name: np.asarray(value, order="C") for name, value in arrays.items()}
    for name, value in members.items():
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object, which cannot be stored without pickle")
    members[META] = np.frombuffer(json.dumps(dict(meta or {})).encode("utf-8"), dtype=np.uint8)
    out = io.BytesIO()
    out.write(MAGIC + bytes([VERSION]))
    np.savez(out, **members)
    return out.getvalue()


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)`` from :func:`pack`'s bytes; :class:`PayloadError` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:4]) != MAGIC:
        raise PayloadError("not a stored array payload")
    if len(data) < 5 or data[4] != VERSION:
        raise PayloadError(f"stored payload version {data[4] if len(data) > 4 else None} is not {VERSION}")
    try:
        with np.load(io.BytesIO(bytes(data[5:])), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop(META).tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise PayloadError(f"corrupt stored payload ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise PayloadError("corrupt stored payload (metadata is not an object)")
    return arrays, meta

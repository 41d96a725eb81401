"""Serialising named NumPy arrays plus a little JSON metadata, without pickle.

The format is ``MAGIC`` + one version byte + a little-endian uint32 header length + a JSON header
``{"meta": {...}, "arrays": [[name, dtype, shape], ...]}`` + the arrays' raw bytes, one after another in
header order (C order). Reading it is a JSON parse and one copy: no archive, no checksums, no per-array
files, so a tracker's state costs next to nothing to read back. Version 1 (an ``.npz`` archive with the
metadata in its ``__meta__`` member, read with ``allow_pickle=False``) is still read, for entries written
before an upgrade. Dtypes are restricted to plain numbers and booleans: what is read back can only ever be
plain arrays and JSON values, never code.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from typing import Any, Mapping

import numpy as np

MAGIC = b"CVFA"
VERSION = 2
META = "__meta__"
KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


class PayloadError(ValueError):
    """A stored payload is corrupt, of another version, or not in this format."""


def pack(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """``arrays`` and the JSON-ready ``meta`` as bytes."""
    if META in arrays:
        raise ValueError(f"{META} is a reserved array name")
    members = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in members.items():
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object, which cannot be stored without pickle")
        if value.dtype.kind not in KINDS or value.dtype.fields is not None:
            raise ValueError(f"array {name!r} has dtype {value.dtype}: only plain numbers and booleans are stored")
    header = json.dumps({"meta": dict(meta or {}),
                         "arrays": [[name, value.dtype.str, list(value.shape)] for name, value in members.items()]})
    encoded = header.encode("utf-8")
    return b"".join([MAGIC, bytes([VERSION]), struct.pack("<I", len(encoded)), encoded,
                     *(value.tobytes(order="C") for value in members.values())])


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)`` from :func:`pack`'s bytes; :class:`PayloadError` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:4]) != MAGIC:
        raise PayloadError("not a stored array payload")
    version = data[4] if len(data) > 4 else None
    if version not in (1, VERSION):
        raise PayloadError(f"stored payload version {version} is not {VERSION}")
    arrays, meta = _unpack_npz(data) if version == 1 else _unpack_raw(data)
    if not isinstance(meta, dict):
        raise PayloadError("corrupt stored payload (metadata is not an object)")
    return arrays, meta


def _unpack_raw(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    """Version 2: the JSON header, then the arrays' bytes."""
    try:
        (length,) = struct.unpack_from("<I", data, 5)
        header = json.loads(bytes(data[9:9 + length]).decode("utf-8"))
        meta, entries = header["meta"], header["arrays"]
        body = bytearray(data[9 + length:])  # one copy: the arrays are writable, and independent of ``data``
        arrays, offset = {}, 0
        for name, dtype_text, shape in entries:
            dtype = np.dtype(dtype_text)
            if dtype.kind not in KINDS or dtype.fields is not None or not all(
                    isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"array {name!r}: dtype {dtype_text} shape {shape}")
            size = math.prod(shape) * dtype.itemsize
            if offset + size > len(body):
                raise ValueError(f"array {name!r} runs past the payload's end")
            arrays[str(name)] = np.frombuffer(body, dtype, math.prod(shape), offset).reshape(tuple(shape))
            offset += size
        if offset != len(body):
            raise ValueError(f"{len(body) - offset} bytes after the last array")
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"corrupt stored payload ({type(exc).__name__}: {exc})") from None
    return arrays, meta


def _unpack_npz(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    """Version 1: an ``.npz`` archive, its metadata in ``__meta__``."""
    try:
        with np.load(io.BytesIO(bytes(data[5:])), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop(META).tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise PayloadError(f"corrupt stored payload ({type(exc).__name__}: {exc})") from None
    return arrays, meta

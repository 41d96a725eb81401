"""Finding model weights: ``MODEL_PATH``, then ``$MODELS_DIR/<file>``, then a per-user download cache.

The cache is ``$CVAT_FUNCTIONS_CACHE`` or ``$XDG_CACHE_HOME/cvat-functions`` (``~/.cache/cvat-functions``).
A download is checked against its SHA-256 before it is moved into place, so a partial or altered file is
never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.core.errors import UnavailableError
from common.core.settings import env_str


class WeightsError(UnavailableError):
    """The weights could not be found or fetched."""


@dataclass(frozen=True)
class Weights:
    filename: str
    url: str | None = None
    sha256: str | None = None  # the full digest, or a prefix of at least 8 hex digits (torch.hub's file names)

    def matches(self, digest: str) -> bool:
        return self.sha256 is None or digest.startswith(self.sha256.lower())


def cache_dir() -> Path:
    explicit = env_str("CVAT_FUNCTIONS_CACHE")
    if explicit:
        return Path(explicit)
    base = env_str("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cvat-functions"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(weights: Weights, env_var: str = "MODEL_PATH", timeout: float = 60.0) -> Path:
    """The local path of ``weights``, downloading it into the cache if needed."""
    explicit = env_str(env_var)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"{env_var}={explicit} does not exist or is not a file")
        return path
    models_dir = env_str("MODELS_DIR")
    if models_dir:
        path = Path(models_dir).expanduser() / weights.filename
        if path.is_file():
            return path
    cached = cache_dir() / weights.filename
    if cached.is_file() and weights.matches(sha256_of(cached)):
        return cached
    where = f"set {env_var} to the file, or MODELS_DIR to a folder that holds {weights.filename}"
    if not weights.url:
        raise WeightsError(f"{weights.filename} not found: {where}")
    try:
        return download(weights, cached, timeout)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{weights.filename} not found and its download from {weights.url} failed ({exc}): {where}")


def download(weights: Weights, target: Path, timeout: float) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{weights.filename}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(weights.url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if not weights.matches(digest.hexdigest()):
            raise ValueError(f"checksum mismatch: got sha256 {digest.hexdigest()}, expected {weights.sha256}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target

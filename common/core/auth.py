"""Checking the credentials a platform sends with its calls (basic authentication, a secret header)."""

from __future__ import annotations

import base64
import hmac
from typing import Mapping

from common.core.errors import FunctionError


class Unauthorized(FunctionError):
    status = 401


def lowered(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Header names in lower case (HTTP's are case-insensitive)."""
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def require_basic_auth(headers: Mapping[str, str] | None, credentials: str, what: str) -> None:
    """401 unless ``headers`` carry ``Authorization: Basic`` of ``credentials`` (``user:password``); compared in
    constant time. ``what`` names the endpoint in the message."""
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    if not hmac.compare_digest(lowered(headers).get("authorization", "").encode(), expected.encode()):
        raise Unauthorized(f"{what}: wrong or missing basic authentication")


def require_header(headers: Mapping[str, str] | None, name: str, secret: str, what: str) -> None:
    """401 unless header ``name`` holds ``secret``."""
    if not hmac.compare_digest(lowered(headers).get(name.lower(), "").encode(), secret.encode()):
        raise Unauthorized(f"{what}: wrong or missing {name} header")

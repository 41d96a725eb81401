"""Fetching an image URL that a platform sent instead of the image itself (V7's ``image.url``, Label Studio's task
data), within an operator's limits.

A URL is fetched only from an allowed host (``host`` exactly, or ``.example.com`` for a domain and its
subdomains), over https unless http is allowed, within a time limit and a byte limit; every redirect is checked
again. A ``trusted`` origin (Label Studio's own server) is allowed as its URL says, scheme included, and only
requests to it carry the credentials given: they are never sent on to a redirect's target.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Mapping

from common.core.errors import RequestError


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and (host.endswith(entry) or host == entry[1:]))
               for entry in allowed)


def host_list(text: str) -> list[str]:
    """A comma-separated host list from a setting."""
    return [host.strip().lower() for host in text.split(",") if host.strip()]


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass
class Fetcher:
    """``fetcher(url)``: the bytes at ``url``, or a :class:`RequestError` saying why not. ``name`` is how
    messages call the URL (``image.url``); ``variable`` the settings' prefix (``V7`` for ``V7_ALLOWED_HOSTS``
    and ``V7_ALLOW_HTTP``); ``hint`` what to do when no host is allowed."""

    allowed: list[str]
    allow_http: bool
    timeout: float
    limit: int
    name: str = "image.url"
    variable: str = "V7"
    hint: str = ""
    trusted: str | None = None  # a base URL whose origin is allowed and gets the call's ``credentials``

    def is_trusted(self, url: str) -> bool:
        return self.trusted is not None and origin(url) == origin(self.trusted)

    def check(self, url: str) -> None:
        if self.is_trusted(url):
            return
        parts = urllib.parse.urlsplit(url)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes:
            raise RequestError(f"{self.name} must be {' or '.join(schemes)} ({self.variable}_ALLOW_HTTP allows http)")
        if not host_allowed(parts.hostname or "", self.allowed):
            raise RequestError(f"{self.name}: host {parts.hostname!r} is not in {self.variable}_ALLOWED_HOSTS")

    def __call__(self, url: object, credentials: Mapping[str, str] | None = None) -> bytes:
        if not isinstance(url, str) or not url:
            raise RequestError(f"{self.name} must be a URL string")
        if not self.allowed and not self.is_trusted(url):
            raise RequestError(f"{self.name} is refused: no host is allowed (set {self.variable}_ALLOWED_HOSTS)"
                               + (f", {self.hint}" if self.hint else ""))
        self.check(url)
        request = urllib.request.Request(url, headers={"Accept": "image/*, */*;q=0.8"})
        if self.is_trusted(url):
            for key, value in (credentials or {}).items():
                request.add_unredirected_header(key, value)  # urllib copies only the other headers to a redirect
        opener = urllib.request.build_opener(_Redirects(self.check))
        try:
            with opener.open(request, timeout=self.timeout) as got:
                data = got.read(self.limit + 1)
        except RequestError:
            raise
        except urllib.error.HTTPError as exc:
            raise RequestError(f"{self.name} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as exc:
            raise RequestError(f"{self.name} could not be fetched within {self.timeout:g} s: "
                               f"{getattr(exc, 'reason', exc)}") from None
        if len(data) > self.limit:
            raise RequestError(f"{self.name} holds more than {self.limit} bytes (the function's body limit)")
        return data


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, check):
        self.check = check

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)

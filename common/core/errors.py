"""Errors that reach the client as JSON with an HTTP status instead of a traceback."""

from __future__ import annotations


class FunctionError(Exception):
    """An error the client should see: ``{"error": message}`` with ``status``."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class RequestError(FunctionError):
    """The request is malformed (HTTP 400). The message names the offending field."""

    status = 400


class UnavailableError(FunctionError):
    """A dependency of the function (weights, a store) cannot be reached right now (HTTP 503)."""

    status = 503

"""Turning a model handler class into Nuclio's ``init_context`` and ``handler``.

A function's ``main.py`` is then::

    from common.doors.cvat.nuclio import make_entry
    from model_handler import ModelHandler

    init_context, handler = make_entry(ModelHandler)

``init_context`` builds the handler once per worker (loading the model); ``handler`` parses the event body
with the parser of the handler's kind, calls the handler, and answers JSON: 200 with the result, the
:class:`~common.core.errors.FunctionError` status with ``{"error": message}``, or 500 with
``{"error": "internal error (...)"}`` while the traceback goes to the log only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ClassVar

import nuclio_sdk

from common.core.errors import FunctionError, RequestError
from common.core.image import RequestImage
from common.core.labels import Labels, read_config, spec_of
from common.doors.cvat.request import PARSERS

JSON = "application/json"


@dataclass
class Reply:
    """A handler result with response headers (e.g. whether a cache was hit); plain values need no wrapper."""

    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class ModelHandler:
    """Base class for a function's model handler.

    Subclasses set ``kind`` (detector, interactor, tracker, reid), load their model in ``__init__`` and
    implement ``__call__(request)`` returning a JSON-ready value. ``labels`` reads the function's own
    ``function.yaml`` when the handler module sets ``function_dir``.
    """

    kind: ClassVar[str] = "detector"
    function_dir: ClassVar[Path | None] = None
    # Bytes the model allocates per pixel of a request image beyond decoding it (measured; 0 for models that
    # work on a resized copy of fixed size). With decoding, this bounds a request image by IMAGE_MAX_MEMORY_MB.
    work_bytes_per_pixel: ClassVar[float] = 0
    # Models whose own resize keeps the aspect ratio (and would leave a 1×4000 image no rows) get images further
    # from square than this padded first (:func:`~common.core.image.pad_to_aspect`); None: no padding.
    max_aspect: ClassVar[float | None] = None

    def __init__(self, context: nuclio_sdk.Context | None = None):
        self.context = context

    @cached_property
    def config(self) -> dict:
        """The function's own ``function.yaml`` (what CVAT and Nuclio read too)."""
        if self.function_dir is None:
            raise RuntimeError(f"{type(self).__name__}.function_dir is not set")
        return read_config(Path(self.function_dir) / "function.yaml")

    @cached_property
    def labels(self) -> Labels:
        return Labels.from_spec(spec_of(self.config))

    def warn(self, message: str) -> None:
        """A warning in the function's log (Nuclio's logger when running under it)."""
        if self.context is not None:
            self.context.logger.warn(message)
        else:
            logging.getLogger(type(self).__module__).warning(message)

    def parse(self, body: Any) -> Any:
        """Turn the decoded JSON body into a typed request (override for kind-specific options)."""
        return PARSERS[self.kind](body)

    def check_memory(self, request: Any) -> None:
        """Refuse a request whose images would cost more memory than ``IMAGE_MAX_MEMORY_MB`` to decode and work
        on (the request's fields that are :class:`~common.core.image.RequestImage`, header facts only)."""
        if dataclasses.is_dataclass(request):
            for item in dataclasses.fields(request):
                value = getattr(request, item.name)
                if isinstance(value, RequestImage):
                    value.require_memory(self.work_bytes_per_pixel, self.max_aspect)

    def __call__(self, request: Any) -> Any:
        raise NotImplementedError


def decode_body(body: Any) -> Any:
    """Nuclio hands JSON bodies over decoded; anything else arrives as bytes or str."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body)
        if not body.strip():
            raise RequestError("the request body is empty; send a JSON object")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the request body is not UTF-8 JSON") from None
    if isinstance(body, str):
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestError(f"the request body is not valid JSON ({exc})") from None
        except RecursionError:
            raise RequestError("the request body is nested too deeply to be a request") from None
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise RequestError("the request body holds a number with too many digits") from None
    return body


def json_response(context: Any, payload: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> nuclio_sdk.Response:
    body = json.dumps(payload, separators=(",", ":"))
    return nuclio_sdk.Response(body=body, headers=dict(headers or {}), content_type=JSON, status_code=status)


def handle_event(context: Any, model: ModelHandler, event: Any) -> nuclio_sdk.Response:
    """Run one event through ``model`` and map every outcome to a JSON response."""
    try:
        request = model.parse(decode_body(event.body))
        model.check_memory(request)
        result = model(request)
        if isinstance(result, Reply):
            return json_response(context, result.payload, headers=result.headers)
        return json_response(context, result)
    except FunctionError as exc:
        return json_response(context, {"error": exc.message}, exc.status)
    except Exception as exc:  # never send a traceback to the client
        context.logger.error_with("unhandled error in handler", error=repr(exc), traceback=traceback.format_exc())
        return json_response(context, {"error": f"internal error ({type(exc).__name__}); see the function log"}, 500)


def make_entry(handler_cls: type[ModelHandler]) -> tuple[Callable, Callable]:
    """Nuclio's ``(init_context, handler)`` pair for ``handler_cls``."""

    def init_context(context):
        context.user_data.model = handler_cls(context)

    def handler(context, event):
        return handle_event(context, context.user_data.model, event)

    return init_context, handler

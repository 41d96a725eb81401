"""The Nuclio entry: ``init_context`` and ``handler`` for a function's model, through CVAT's door.

A function's ``main.py`` is then::

    from common.doors.cvat.nuclio import make_entry
    from model_handler import ModelHandler

    init_context, handler = make_entry(ModelHandler)

``init_context`` builds the model once per worker (loading it) and its CVAT door; ``handler`` decodes the
event body, runs it through the door, and answers JSON: 200 with the reply, the
:class:`~common.core.errors.FunctionError` status with ``{"error": message}``, or 500 with
``{"error": "internal error (...)"}`` while the traceback goes to the log only. This is the only module that
imports ``nuclio_sdk``.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Callable

import nuclio_sdk

from common.core.errors import FunctionError, RequestError
from common.doors import v7
from common.doors.cvat.door import Door, door_for
from common.doors.v7 import V7Door
from common.models.base import Model

JSON = "application/json"
INTERNAL_ERROR = "internal error ({}); see the function log"


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


def handle_event(context: Any, door: Door, event: Any) -> nuclio_sdk.Response:
    """Run one event through ``door`` and map every outcome to a JSON response."""
    try:
        reply = door(decode_body(event.body))
        return json_response(context, reply.payload, headers=reply.headers)
    except FunctionError as exc:
        return json_response(context, {"error": exc.message}, exc.status)
    except Exception as exc:  # never send a traceback to the client
        context.logger.error_with("unhandled error in handler", error=repr(exc), traceback=traceback.format_exc())
        return json_response(context, {"error": INTERNAL_ERROR.format(type(exc).__name__)}, 500)


def handle_v7(context: Any, door: V7Door | None, call: str, event: Any) -> nuclio_sdk.Response:
    """A V7 Darwin call (``GET /classes``, ``POST /infer``): V7's replies and V7's failure form."""
    try:
        if door is None:
            raise FunctionError("V7 calls detectors only; this function is not one", 404)
        door.authorize(getattr(event, "headers", None) or {})
        method = str(getattr(event, "method", "POST") or "POST").upper()
        if call == "classes":
            return json_response(context, door.classes())
        if method != "POST":
            raise FunctionError("V7's /infer takes POST", 405)
        return json_response(context, door.infer(decode_body(event.body)))
    except FunctionError as exc:
        return json_response(context, v7.failed(exc.message), exc.status)
    except Exception as exc:  # never send a traceback to the client
        context.logger.error_with("unhandled error in V7 call", error=repr(exc), traceback=traceback.format_exc())
        return json_response(context, v7.failed(INTERNAL_ERROR.format(type(exc).__name__)), 500)


def make_entry(model_cls: type[Model]) -> tuple[Callable, Callable]:
    """Nuclio's ``(init_context, handler)`` pair for ``model_cls``: V7's paths go to the V7 door (detectors),
    every other call to CVAT's."""

    def init_context(context):
        model = model_cls(log=context.logger.warn)
        context.user_data.door = door_for(model)
        context.user_data.v7 = V7Door(model) if model.kind == "detector" else None

    def handler(context, event):
        call = v7.route(getattr(event, "path", "/"))
        if call is not None:
            return handle_v7(context, context.user_data.v7, call, event)
        return handle_event(context, context.user_data.door, event)

    return init_context, handler

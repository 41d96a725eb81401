"""The Nuclio entry of every function: what its ``main.py`` calls, and the only module importing ``nuclio_sdk``.

A function's ``main.py`` is::

    from common.doors.nuclio import handle, init
    from model_handler import ModelHandler
    def init_context(context): init(context, ModelHandler)
    def handler(context, event): return handle(context, event)

Both must be plain functions of ``main.py`` itself: Nuclio's Python wrapper imports the module that
``spec.handler`` names, takes ``handler`` from it and then runs the ``init_context`` of
``sys.modules[handler.__module__]``, so a handler defined in another module would never be initialised.

``init`` builds the model once per worker (loading it) with its doors; when it fails, the exception ends the
worker as Nuclio intends (the function never reports ready). ``handle`` answers every event with JSON and lets
nothing escape, since the wrapper turns an escaping exception into a ``500 text/plain`` holding the traceback.
Calls are told apart by path: V7's (``/infer``, ``/classes``), Label Studio's (``/health``, ``/setup``,
``/predict``, ``/webhook``, ``/versions``), and every other path is CVAT's. The answer is 200 with the reply, the :class:`~common.core.errors.FunctionError` status with ``{"error": message}`` (V7's
failure form on V7's paths), 503 when ``init`` never ran or failed in this worker, 500 with ``{"error":
"internal error (...)"}`` while the traceback goes to the log only.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Callable

import nuclio_sdk

from common.core.errors import FunctionError, RequestError
from common.doors import label_studio, v7
from common.doors.cvat.door import door_for
from common.doors.label_studio import LabelStudioDoor
from common.doors.v7 import V7Door
from common.models.base import Model

JSON = "application/json"
INTERNAL_ERROR = "internal error ({}); see the function log"


def decode_body(body: Any) -> Any:
    """The request from an event body. Raw bodies arrive as bytes (parsed here as JSON whatever the content
    type); ``None`` when the request had no body; for exactly ``application/json`` Nuclio hands over what it
    decoded (any JSON value, a string included), taken as it is, so every content type gives one answer."""
    if body is None:
        raise RequestError("the request body is empty; send a JSON object")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        return body
    body = bytes(body)
    if not body.strip():
        raise RequestError("the request body is empty; send a JSON object")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply to be a request") from None
    except ValueError:  # Python refuses to convert integers of more than 4300 digits
        raise RequestError("the request body holds a number with too many digits") from None


def text(value: Any) -> str:
    """An event string (path, method), which Nuclio hands over as bytes when it does not decode strings."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value or "")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> nuclio_sdk.Response:
    body = json.dumps(payload, separators=(",", ":"))
    return nuclio_sdk.Response(body=body, headers=dict(headers or {}), content_type=JSON, status_code=status)


def init(context: Any, model_cls: type[Model]) -> None:
    """``init_context``: the model and its doors in ``context.user_data``; a failure is kept for the handler's
    503, then raised so that the worker never serves."""
    try:
        model = model_cls(log=context.logger.warn)
        context.user_data.doors = (door_for(model), V7Door(model) if model.kind == "detector" else None,
                                   label_studio.door_for(model))
    except BaseException as exc:
        context.user_data.init_error = f"{type(exc).__name__}: {exc}"
        raise


def handle(context: Any, event: Any) -> nuclio_sdk.Response:
    """``handler``: V7's paths go to the V7 door (detectors only), Label Studio's to its door (detectors and
    interactors), every other call to CVAT's."""
    path = text(getattr(event, "path", "/"))
    call, studio = v7.route(path), label_studio.route(path)
    failed: Callable[[str], Any] = v7.failed if call else (lambda message: {"error": message})
    try:
        cvat, v7door, studio_door = _doors(context)
        if studio is not None:
            payload, headers = _label_studio_call(studio_door, studio, event)
            return json_response(payload, headers=headers)
        if call is None:
            reply = cvat(decode_body(event.body))
            return json_response(reply.payload, headers=reply.headers)
        return json_response(_v7_call(v7door, call, event))
    except FunctionError as exc:
        return json_response(failed(exc.message), exc.status)
    except Exception as exc:  # never send a traceback to the client
        context.logger.error_with("unhandled error in handler", error=repr(exc), traceback=traceback.format_exc())
        return json_response(failed(INTERNAL_ERROR.format(type(exc).__name__)), 500)


def _doors(context: Any) -> tuple:
    doors = getattr(context.user_data, "doors", None)
    if doors is None:
        error = getattr(context.user_data, "init_error", None)
        reason = f"its init_context failed ({error})" if error else "its init_context never ran in this worker"
        raise FunctionError(f"the function is not initialised: {reason}; see the function log", 503)
    return doors


def _v7_call(door: V7Door | None, call: str, event: Any) -> Any:
    """A V7 Darwin call (``GET /classes``, ``POST /infer``)."""
    if door is None:
        raise FunctionError("V7 calls detectors only; this function is not one", 404)
    door.authorize(getattr(event, "headers", None) or {})
    if call == "classes":
        return door.classes()
    if text(getattr(event, "method", "POST") or "POST").upper() != "POST":
        raise FunctionError("V7's /infer takes POST", 405)
    return door.infer(decode_body(event.body))


def _label_studio_call(door: LabelStudioDoor | None, call: str, event: Any) -> tuple[Any, dict[str, str]]:
    """A Label Studio ML backend call (``/health``, ``/setup``, ``/predict``, ``/webhook``, ``/versions``)."""
    if door is None:
        raise FunctionError("Label Studio calls detectors and interactors; this function is neither", 404)
    door.authorize(call, getattr(event, "headers", None) or {})
    method = text(getattr(event, "method", "POST") or "POST").upper()
    return door.call(call, method, lambda: decode_body(event.body))

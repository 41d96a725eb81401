"""One worker process that loads and runs a function exactly as Nuclio's Python wrapper does.

What the wrapper does (``pkg/processor/runtime/python/py/_nuclio_wrapper.py`` with ``wrapper_common.py``,
Nuclio 1.13 and 1.14), and so what this module does:

- the function folder is the only thing on ``PYTHONPATH`` (``/opt/nuclio``; a folder staged by the deploy
  scripts holds ``common/`` beside ``main.py``) and the process runs from ``/``;
- ``spec.handler`` (``module.sub:name``) is imported and the handler taken from it; ``init_context`` is looked
  up in ``sys.modules[handler.__module__]``, the module the handler was *defined* in, and run once with a
  ``nuclio_sdk.Context(logger, platform, worker_id, TriggerInfo(kind, name))``; an exception there ends the
  worker (the function never becomes ready);
- each event is built by ``nuclio_sdk.Event.deserialize`` from the processor's message: the body is bytes
  (``None`` when the request had none) and is JSON-decoded only when the content type is exactly
  ``application/json``; strings that are not UTF-8 fail before the handler, as the wrapper's msgpack decoding
  fails;
- what the handler returns is encoded by ``nuclio_sdk.Response.from_entrypoint_output``; an exception that
  escapes it becomes ``500 text/plain`` with the traceback in the body.

Where ``init_context`` is defined in the handler's module named by ``spec.handler`` but the wrapper would look
elsewhere (a handler made in another module), the worker refuses to start: under Nuclio that function would
answer every event with a 500. It talks to the harness over a multiprocessing pipe. Messages to the worker:
``("event", dict)``; from it: ``("ready", {"backend", "device"})``, ``("init_failed", message)`` and ``("response", dict)``.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

TRIGGER = ("http", "myHttpTrigger")  # the trigger kind and name of every function yaml here


def load_handler(spec: str) -> tuple[Callable, ModuleType | None]:
    """The handler ``spec`` names and the ``init_context`` the wrapper would run (None: it runs none).

    Raises when ``spec`` is malformed, or when the module ``spec`` names defines an ``init_context`` that the
    wrapper would never find because the handler was defined in another module.
    """
    match = re.fullmatch(r"([\w-]+(?:\.[\w-]+)*):(\w+)", spec)
    if not match:
        raise ValueError(f"malformed handler {spec!r}: use module.sub:function")
    module = importlib.import_module(match.group(1))
    handler = getattr(module, match.group(2))
    home = sys.modules[handler.__module__]  # where the wrapper looks for init_context
    init = getattr(home, "init_context", None)
    if init is None and hasattr(module, "init_context"):
        raise LookupError(f"{module.__name__}.init_context would never run under Nuclio: its wrapper looks for "
                          f"init_context in {home.__name__}, the module that defines the handler; define "
                          f"handler as a function of {module.__name__}")
    return handler, init


def event_from(message: dict) -> Any:
    """A ``nuclio_sdk.Event`` from the harness's message, decoded as the wrapper decodes the processor's."""
    import nuclio_sdk

    def utf8(value: str) -> str:  # the harness reads header and path bytes as Latin-1, as http.server does
        return value.encode("latin-1").decode("utf-8")

    parsed = {
        "body": message["body"], "content_type": utf8(message["content_type"]),
        "trigger": {"kind": TRIGGER[0], "name": TRIGGER[1]}, "fields": message.get("fields") or {},
        "headers": {utf8(k): utf8(v) for k, v in message["headers"].items()}, "id": message.get("id"),
        "method": utf8(message["method"]), "path": utf8(message["path"]), "size": len(message["body"] or b""),
        "timestamp": time.time(), "url": utf8(message.get("url") or ""), "shard_id": 0, "num_shards": 0,
        "type": "", "type_version": "", "version": "",
    }
    return nuclio_sdk.Event.deserialize(parsed, kind=nuclio_sdk.event.EventDeserializerKinds.msgpack)


def to_wire(output: Any) -> dict:
    """What the processor receives from the wrapper for ``output``: status, headers, content type, body bytes."""
    import nuclio_sdk
    import nuclio_sdk.json_encoder

    encoded = nuclio_sdk.Response.from_entrypoint_output(nuclio_sdk.json_encoder.Encoder().encode, output)
    response = json.loads(nuclio_sdk.json_encoder.Encoder().encode(encoded))  # what crosses the socket
    body = response.get("body") or ""
    body = base64.b64decode(body) if response.get("body_encoding") == "base64" else str(body).encode("utf-8")
    return {"status": int(response.get("status_code") or 200),
            "headers": {str(k): str(v) for k, v in (response.get("headers") or {}).items()},
            "content_type": response.get("content_type") or "text/plain", "body": body}


def failure(where: str, exc: BaseException) -> dict:
    """The wrapper's answer when an exception escapes: 500 text/plain with the traceback."""
    text = f'Exception caught {where} - "{exc}": {traceback.format_exc()}'
    return {"status": 500, "headers": {}, "content_type": "text/plain", "body": text.encode("utf-8")}


def serve_one(handler: Callable, context: Any, message: dict) -> dict:
    try:
        event = event_from(message)
    except Exception as exc:
        context.logger.warn(f"event could not be decoded: {exc!r}")
        return failure("while serving", exc)
    try:
        return to_wire(handler(context, event))
    except Exception as exc:
        context.logger.error_with("Exception caught in handler", exc=str(exc), traceback=traceback.format_exc())
        return failure("in handler", exc)


def runtime_of(framework: str) -> dict[str, str]:
    """The backend and device the loaded model runs on (:func:`common.runtime.backends.describe`), for the
    playground page; "unknown" when they cannot be told (a function without our ``common`` package)."""
    try:
        from common.runtime.backends import describe
        return describe(framework)
    except Exception as exc:  # information only: it never stops a worker
        return {"backend": f"unknown ({type(exc).__name__})", "device": "unknown"}


def worker_main(conn, function_dir: str, root: str, handler_spec: str, env: dict, name: str, worker_id: int,
                framework: str = "") -> None:
    import nuclio_sdk

    os.environ.update(env)
    staged = (Path(function_dir) / "common").is_dir()  # staged by the deploy scripts: imported as in the image
    sys.path[:0] = [function_dir] if staged else [function_dir, root]
    os.chdir("/")
    logger = nuclio_sdk.Logger(logging.DEBUG, name=f"{name}.{worker_id}")
    formatter = logging.Formatter(f"%(asctime)s {name}[{worker_id}] %(levelname)s %(message)s %(with)s")
    logger.set_handler("default", sys.stderr, _WithFormatter(formatter))
    context = nuclio_sdk.Context(logger, nuclio_sdk.Platform("local", namespace="nuclio"), str(worker_id),
                                 nuclio_sdk.TriggerInfo(*TRIGGER))
    try:
        handler, init = load_handler(handler_spec)
        common = sys.modules.get("common")
        if staged and common is not None and not str(common.__file__).startswith(function_dir):
            raise ImportError(f"common/ came from {common.__file__}, not from the staged folder {function_dir}")
        if init is not None:
            init(context)
    except BaseException as exc:  # report, then exit, as the wrapper exits: the harness decides what to do
        logger.error_with("init_context failed", traceback=traceback.format_exc())
        conn.send(("init_failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", runtime_of(framework)))
    while True:
        try:
            kind, message = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "event":
            conn.send(("response", serve_one(handler, context, message)))


class _WithFormatter(logging.Formatter):
    """Renders nuclio_sdk's structured ``with`` fields after the message."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "with", None) or {}
        tb = extra.pop("traceback", None) if isinstance(extra, dict) else None
        record.__dict__["with"] = json.dumps(extra, default=str) if extra else ""
        text = self.inner.format(record)
        return f"{text}\n{tb.rstrip()}" if tb else text

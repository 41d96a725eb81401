"""One Nuclio-style worker process: imports the handler, runs ``init_context`` once, then serves events.

It talks to the harness over a multiprocessing pipe. Messages to the worker: ``("event", dict)``;
from it: ``("ready", None)``, ``("init_failed", message)`` and ``("response", dict)``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback

WIRE_FIELDS = ("status", "headers", "content_type", "body")


def response_to_wire(output) -> dict:
    """Normalise what a Nuclio handler may return (Response, str, bytes, dict/list, (status, body))."""
    import nuclio_sdk

    status, headers, content_type, body = 200, {}, "text/plain", output
    if isinstance(output, nuclio_sdk.Response):
        status, headers, content_type, body = output.status_code, output.headers, output.content_type, output.body
    elif isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], int):
        status, body = output
    if isinstance(body, (dict, list)):
        body, content_type = json.dumps(body), "application/json"
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {"status": int(status), "headers": {str(k): str(v) for k, v in (headers or {}).items()},
            "content_type": content_type or "text/plain", "body": bytes(body)}


def decode_event_body(body: bytes, content_type: str):
    """Like Nuclio's Python wrapper: a JSON content type gives the decoded object, else the raw bytes.

    A body that does not decode (not UTF-8, not JSON, nested deeper than Python's recursion limit, an integer
    of more digits than Python converts) stays bytes, for the handler to refuse with a clear error.
    """
    if (content_type or "").split(";")[0].strip().lower() == "application/json":
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return body
    return body


def worker_main(conn, function_dir: str, root: str, handler: str, env: dict, name: str, worker_id: int) -> None:
    import nuclio_sdk

    os.environ.update(env)
    sys.path[:0] = [function_dir, root]
    os.chdir(function_dir)
    logger = nuclio_sdk.Logger(logging.DEBUG, name=f"{name}.{worker_id}")
    formatter = logging.Formatter(f"%(asctime)s {name}[{worker_id}] %(levelname)s %(message)s %(with)s")
    logger.set_handler("stderr", sys.stderr, _WithFormatter(formatter))
    context = nuclio_sdk.Context(logger=logger, worker_id=worker_id,
                                 trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"))
    try:
        module_name, func_name = handler.split(":", 1)
        module = importlib.import_module(module_name)
        entry = getattr(module, func_name)
        init = getattr(module, "init_context", None)
        if init is not None:
            init(context)
    except BaseException as exc:  # report, then exit: the harness decides what to do
        logger.error_with("init_context failed", traceback=traceback.format_exc())
        conn.send(("init_failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            kind, message = conn.recv()
        except (EOFError, OSError):
            return
        if kind != "event":
            continue
        try:  # nothing a request holds may end the worker: every failure becomes a reply
            event = nuclio_sdk.Event(
                body=decode_event_body(message["body"], message["content_type"]),
                content_type=message["content_type"], headers=message["headers"], method=message["method"],
                path=message["path"], size=len(message["body"]), _id=message.get("id"),
                trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
            )
            wire = response_to_wire(entry(context, event))
        except Exception as exc:
            logger.error_with("handler raised", traceback=traceback.format_exc())
            wire = response_to_wire(nuclio_sdk.Response(
                body=json.dumps({"error": f"internal error ({type(exc).__name__}); see the function log"}),
                content_type="application/json", status_code=500))
        conn.send(("response", wire))


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

"""A local stand-in for Nuclio: worker processes per function, one HTTP port per function, and a
dashboard-compatible API, so that CVAT (or curl) can use the functions without Nuclio or Docker.

Emulated Nuclio semantics:

- ``init_context`` runs once in each worker process; ``numWorkers`` (or ``maxWorkers``) processes per function.
- A function answers only when every worker has finished ``init_context`` (before that: 503).
- ``eventTimeout``: the client gets 408 and the worker process is replaced by a fresh one.
- ``maxRequestBodySize``: larger bodies get 413 before they are read.
- ``workerAvailabilityTimeoutMilliseconds``: no free worker within it gives 503.
- ``spec.env`` is applied to the workers; variables already set in the shell that runs the harness win,
  so that local paths (``MODELS_DIR``, ``MODEL_PATH``) replace the image paths of the yaml.
- Each worker loads the function as Nuclio's Python wrapper does (:mod:`tools.worker`); events reach it as
  Nuclio's HTTP trigger passes them: every method, the path percent-decoded and normalised, query arguments
  in ``event.fields``, header names canonicalised (the last of repeated headers wins), the body as bytes
  (``None`` without Content-Length or Transfer-Encoding), JSON-decoded only for exactly ``application/json``.
- The dashboard's port also answers ``/`` with the playground page (:mod:`tools.playground`), a client of the
  same API.
- The dashboard's ``/api/function_invocations`` forwards GET, POST, PUT, DELETE, PATCH and OPTIONS with every
  header (``x-nuclio-*`` included) to the path in ``x-nuclio-path``, and drops ``x-nuclio*`` reply headers.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import itertools
import json
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qsl, unquote, unquote_to_bytes, urlparse

from common.core.config import DEFAULT_BODY_LIMIT, FunctionConfig

from . import playground
from .config import ROOT, absolute_paths
from .worker import worker_main

_MP = multiprocessing.get_context("spawn")
_EVENT_IDS = itertools.count(1)
DRAIN_LIMIT = 512 * 1024 * 1024  # an oversized body up to this size is read and dropped before the 413


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def error_reply(status: int, message: str) -> dict:
    return {"status": status, "headers": {}, "content_type": "application/json",
            "body": json.dumps({"error": message}).encode()}


class Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, function: "FunctionRuntime", worker_id: int):
        self.id = worker_id
        self.conn, child = _MP.Pipe()
        # the shell wins over spec.env; its relative paths mean what they mean here, not in the function folder
        env = {**function.config.env, **os.environ, **absolute_paths(dict(os.environ)),
               "FUNCTION_YAML": function.config.path.name}  # the model reads the yaml it is served from
        self.process = _MP.Process(
            target=worker_main, daemon=True,
            args=(child, str(function.config.directory), str(ROOT), function.config.handler, env,
                  function.name, worker_id, function.config.annotations.get("framework", "")),
        )
        self.runtime: dict[str, str] = {}  # the backend and device it reported when ready
        self.process.start()
        child.close()

    def wait_ready(self) -> str | None:
        """Block until init_context is done; None when ready, else the failure message."""
        try:
            kind, message = self.conn.recv()
        except (EOFError, OSError):
            return f"worker process exited with code {self.process.exitcode} during init_context"
        if kind == "ready":
            self.runtime = message or {}
            return None
        return str(message)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class FunctionRuntime:
    """The worker pool of one function and the invocation logic shared by its port and the dashboard."""

    def __init__(self, config: FunctionConfig):
        self.config = config
        self.name = config.name
        self.idle: queue.Queue[Worker] = queue.Queue()
        self.state = "building"
        self.message = ""
        self.http_port: int | None = None
        self.runtime: dict[str, str] = {}  # the backend and device its first ready worker reported
        self._ready_count = 0
        self._lock = threading.Lock()
        self._all_ready = threading.Event()
        self._stopped = False
        self._workers: dict[int, Worker] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for worker_id in range(self.config.workers):
            self._spawn(worker_id)

    def _spawn(self, worker_id: int) -> None:
        worker = Worker(self, worker_id)
        with self._lock:
            self._workers[worker_id] = worker
        threading.Thread(target=self._await_init, args=(worker,), daemon=True).start()

    def _await_init(self, worker: Worker) -> None:
        failure = worker.wait_ready()
        if self._stopped:
            worker.kill()
            return
        if failure is not None:
            with self._lock:
                self.state, self.message = "error", f"worker {worker.id}: {failure}"
            log(f"{self.name}: worker {worker.id} failed in init_context: {failure}")
            self._all_ready.set()  # nothing more to wait for
            return
        with self._lock:
            self.runtime = self.runtime or worker.runtime
            self._ready_count += 1
            if self._ready_count >= self.config.workers and self.state == "building":
                self.state = "ready"
                self._all_ready.set()
        self.idle.put(worker)

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._all_ready.wait(timeout)
        return self.state == "ready"

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.kill()

    # ------------------------------------------------------------ invocation

    def invoke(self, body: bytes | None, content_type: str, headers: dict, method: str = "POST", path: str = "/",
               fields: dict | None = None) -> dict:
        if self.state != "ready":
            detail = f": {self.message}" if self.message else " (workers are still running init_context)"
            return error_reply(503, f"function {self.name} is not ready{detail}")
        try:
            worker = self.idle.get(timeout=self.config.availability_timeout)
        except queue.Empty:
            return error_reply(503, f"no worker of {self.name} became available within "
                                    f"{self.config.availability_timeout:g}s")
        event = {"body": body, "content_type": content_type, "headers": headers, "method": method,
                 "path": path, "fields": fields or {}, "id": str(next(_EVENT_IDS))}
        timeout = self.config.event_timeout
        try:
            worker.conn.send(("event", event))
            if worker.conn.poll(timeout):
                kind, reply = worker.conn.recv()
                self.idle.put(worker)
                return reply
        except (EOFError, OSError, BrokenPipeError):
            log(f"{self.name}: worker {worker.id} died while handling an event; restarting it")
            self._replace(worker)
            return error_reply(500, f"the worker of {self.name} crashed while handling the request")
        log(f"{self.name}: event exceeded eventTimeout {timeout:g}s; restarting worker {worker.id}")
        self._replace(worker)
        return error_reply(408, f"{self.name} did not answer within its eventTimeout of {timeout:g}s")

    def _replace(self, worker: Worker) -> None:
        worker.kill()
        if not self._stopped:
            self._spawn(worker.id)

    def description(self) -> dict:
        """The function as Nuclio's dashboard describes it (metadata, spec, status)."""
        config = copy.deepcopy(self.config.config)
        metadata = config.setdefault("metadata", {})
        labels = metadata.get("labels") or {}
        labels.setdefault("nuclio.io/project-name", "cvat")
        metadata["labels"] = labels
        metadata.setdefault("namespace", "nuclio")
        config.setdefault("spec", {})
        config["status"] = {"state": self.state, "httpPort": self.http_port}
        if self.message:
            config["status"]["message"] = self.message
        return config


# ---------------------------------------------------------------- HTTP

def canonical_headers(items) -> dict[str, str]:
    """Header names as Go canonicalises them (``content-type`` -> ``Content-Type``), values trimmed, the last of
    repeated headers kept."""
    return {"-".join(part[:1].upper() + part[1:].lower() for part in key.split("-")): value.strip()
            for key, value in items}


def trigger_path(raw: str) -> str:
    """A request path as Nuclio's HTTP trigger (fasthttp) hands it over: percent-decoded, then ``//``, ``/./``
    and ``/x/../`` removed; Latin-1 text of the bytes, as http.server reads the request line."""
    decoded = unquote_to_bytes(urlparse(raw).path or "/").decode("latin-1")
    parts: list[str] = []
    for part in decoded.split("/")[1:]:
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    trailing = decoded.endswith("/") or decoded.endswith("/.") or decoded.endswith("/..")
    return "/" + "/".join(parts) + ("/" if trailing and parts else "")


def invocation_path(path: str) -> bool:
    """Whether a dashboard path is ``/api/function_invocations`` (or below it, as Nuclio's router takes it)."""
    return (path.rstrip("/") + "/").startswith("/api/function_invocations/")


def query_fields(raw: str) -> dict[str, str]:
    return dict(parse_qsl(urlparse(raw).query, keep_blank_values=True))


class BadRequest(Exception):
    """The request's framing is broken (length, chunks): answered with 400 and the connection closed."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cvat-functions-harness"
    # TCP_NODELAY: a reply is written as headers, then body; with Nagle's algorithm the body would wait for
    # the client's delayed ACK of the headers (40 ms per request on a kept-alive connection)
    disable_nagle_algorithm = True
    timeout = 120  # seconds a client may leave the connection silent (mid-request or idle between requests)

    def log_message(self, format, *args):  # requests are logged by _reply
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The http.server answers to broken requests (400, 414, 431, 501, 505, ...) as JSON, then close."""
        self.close_connection = True
        if getattr(self, "request_version", None) not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.1"  # answer with a status line and headers even to garbage
        self.command, self.path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
        reply = error_reply(code, message or self.responses.get(code, ("error",))[0])
        reply["headers"]["Connection"] = "close"
        self._reply(reply, time.perf_counter(), getattr(self.server, "label", "harness"))

    def handle_one_request(self) -> None:
        """One request; a broken body framing gets a 400 JSON answer instead of a dropped connection."""
        try:
            super().handle_one_request()
        except BadRequest as exc:
            self.send_error(400, str(exc))

    def _reply(self, reply: dict, started: float, name: str) -> None:
        body = reply["body"]
        self.send_response(reply["status"])
        self.send_header("Content-Type", reply["content_type"])
        self.send_header("Content-Length", str(len(body)))
        for key, value in reply["headers"].items():
            if key.lower() not in ("content-length", "content-type"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log(f"{name} {self.command} {self.path} -> {reply['status']} "
            f"{len(body)} B in {(time.perf_counter() - started) * 1000:.1f} ms")

    def _read_body(self, limit: int | None) -> bytes | None | bool:
        """The request body (None when the request has no Content-Length and no Transfer-Encoding, as Nuclio
        hands it over), or False after answering 413 when it is over ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024).split(b";")[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    raise BadRequest(f"bad chunk size {line[:40].decode('latin-1')!r}") from None
                if size < 0:
                    raise BadRequest("bad chunk size (negative)")
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                total += size
                if limit is not None and total > limit:
                    self._too_large(limit)
                    return False
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        if self.headers.get("Content-Length") is None:
            return None
        value = self.headers.get("Content-Length").strip()
        if not value.isdigit() or not value.isascii():
            raise BadRequest(f"Content-Length must be a non-negative integer, got {value[:40]!r}")
        length = int(value)
        if limit is not None and length > limit:
            if length <= DRAIN_LIMIT:  # read it away so that the client sees the 413, not a broken pipe
                for _ in range(0, length, 1 << 20):
                    self.rfile.read(min(1 << 20, length))
                    length -= 1 << 20
            self._too_large(limit)
            return False
        return self.rfile.read(length) if length else b""

    def _too_large(self, limit: int) -> None:
        self.close_connection = True
        reply = error_reply(413, f"request body is larger than maxRequestBodySize ({limit} bytes)")
        reply["headers"]["Connection"] = "close"
        self._reply(reply, time.perf_counter(), self.server.label)


class _FunctionHandler(_Handler):
    """Every method and path goes to the function, as with a Nuclio HTTP trigger."""

    def _invoke(self):
        started = time.perf_counter()
        runtime: FunctionRuntime = self.server.runtime
        body = self._read_body(runtime.config.body_limit)
        if body is False:
            return
        headers = canonical_headers(self.headers.items())
        reply = runtime.invoke(body, headers.get("Content-Type", ""), headers, self.command,
                               trigger_path(self.path), query_fields(self.path))
        self._reply(reply, started, runtime.name)

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # any method, as fasthttp passes any to the function
            return self._invoke
        raise AttributeError(name)


class _DashboardHandler(_Handler):
    """The parts of Nuclio's dashboard API that CVAT uses."""

    def _json(self, status: int, payload, started: float) -> None:
        self._reply({"status": status, "headers": {}, "content_type": "application/json",
                     "body": json.dumps(payload).encode()}, started, "dashboard")

    def _describe(self, path: str) -> None:
        started = time.perf_counter()
        functions: dict[str, FunctionRuntime] = self.server.functions
        page = playground.static(path)
        if page is not None:  # the playground page and its files
            self._reply({"status": 200, "headers": {"Cache-Control": "no-cache"}, "content_type": page[0],
                         "body": page[1]}, started, "dashboard")
        elif path == playground.LISTING:
            self._json(200, playground.listing(functions), started)
        elif path == "/api/functions":
            self._json(200, {name: f.description() for name, f in functions.items()}, started)
        elif path.startswith("/api/functions/"):
            name = unquote(path[len("/api/functions/"):])
            if name in functions:
                self._json(200, functions[name].description(), started)
            else:
                self._json(404, {"error": f"function {name} not found"}, started)
        elif path in ("/api/healthz", "/api/versions"):
            self._json(200, {"dashboard": {"label": "cvat-functions-harness"}}, started)
        else:
            self._json(404, {"error": f"no such endpoint: {path}"}, started)

    def _invoke(self):
        """``/api/function_invocations``: the function named by ``x-nuclio-function-name``, at ``x-nuclio-path``,
        with the request's method and every header; ``x-nuclio*`` headers of the reply are dropped."""
        started = time.perf_counter()
        functions: dict[str, FunctionRuntime] = self.server.functions
        if not invocation_path(urlparse(self.path).path):
            self._json(404 if self.command in ("GET", "POST") else 405, {"error": f"no such endpoint: {self.path}"},
                       started)
            return
        name = self.headers.get("x-nuclio-function-name")
        runtime = functions.get(name or "")
        limit = runtime.config.body_limit if runtime else DEFAULT_BODY_LIMIT
        body = self._read_body(limit)
        if body is False:
            return
        if not name:
            self._json(400, {"error": "the x-nuclio-function-name header is required"}, started)
            return
        if runtime is None:
            self._json(404, {"error": f"function {name} not found"}, started)
            return
        headers = canonical_headers(self.headers.items())
        target = "/" + (self.headers.get("x-nuclio-path") or "").lstrip("/")
        reply = runtime.invoke(body, headers.get("Content-Type", ""), headers, self.command,
                               trigger_path(target), query_fields(target))
        reply["headers"] = {k: v for k, v in reply["headers"].items() if not k.lower().startswith("x-nuclio")}
        self._reply(reply, started, name)

    def do_GET(self):
        path = urlparse(self.path).path
        if invocation_path(path):
            self._invoke()
        else:
            self._describe(path.rstrip("/"))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _invoke


class _Server(ThreadingHTTPServer):
    """One listening port: a thread per connection, as many pending connections as the kernel allows."""

    daemon_threads = True
    allow_reuse_address = True
    # the standard library's default of 5 resets a burst of clients; Nuclio's trigger takes what the kernel
    # allows and queues events for a free worker (503 after workerAvailabilityTimeoutMilliseconds)
    request_queue_size = socket.SOMAXCONN
    _complained = 0.0

    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # the connection waits in the backlog meanwhile
                self._complain(f"cannot accept connections: out of file descriptors ({exc}); raise the limit "
                               "(ulimit -n) or lower the number of clients")
                time.sleep(0.05)
            raise

    def process_request(self, request, client_address):
        try:
            super().process_request(request, client_address)
        except RuntimeError as exc:  # no thread could be started for the connection
            self._complain(f"cannot serve a connection: {exc}")
            self.shutdown_request(request)

    def _complain(self, message: str) -> None:
        if time.monotonic() - self._complained > 5:  # once per burst, not once per connection
            self._complained = time.monotonic()
            log(f"{getattr(self, 'label', 'harness')}: {message}")


def raise_file_limit() -> None:
    """The soft limit on open files up to the hard one: each connection is a descriptor."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep the limit
        pass


class Harness:
    """Serve ``configs``: a port per function and the dashboard API on ``port``."""

    def __init__(self, configs: list[FunctionConfig], host: str = "127.0.0.1", port: int = 8070):
        names = [c.name for c in configs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"two functions share a name: {', '.join(sorted(duplicates))}")
        self.host = host
        raise_file_limit()
        self.functions = {c.name: FunctionRuntime(c) for c in configs}
        self.dashboard = _Server((host, port), _DashboardHandler)
        self.dashboard.functions = self.functions
        self.dashboard.label = "dashboard"
        self.servers = [self.dashboard]
        for runtime in self.functions.values():
            server = _Server((host, runtime.config.port or 0), _FunctionHandler)
            server.runtime, server.label = runtime, runtime.name
            runtime.http_port = server.server_address[1]
            self.servers.append(server)

    @property
    def port(self) -> int:
        return self.dashboard.server_address[1]

    def start(self) -> None:
        for runtime in self.functions.values():
            runtime.start()
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for runtime in self.functions.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = runtime.wait_ready(left) and ok
        return ok

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for runtime in self.functions.values():
            runtime.stop()

    def __enter__(self) -> "Harness":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class NotReady(RuntimeError):
    """Functions of a harness did not become ready in time."""


@contextlib.contextmanager
def serving(configs: list[FunctionConfig], timeout: float = 300, port: int = 0) -> Iterator[Harness]:
    """A started harness on ``configs`` whose functions are all ready, stopped afterwards; :class:`NotReady`
    names those that did not start and why."""
    harness = Harness(configs, port=port)
    harness.start()
    try:
        if not harness.wait_ready(timeout):
            raise NotReady("; ".join(f"{name} did not start: {runtime.message}"
                                     for name, runtime in harness.functions.items() if runtime.state != "ready"))
        yield harness
    finally:
        harness.stop()


@contextlib.contextmanager
def serving_files(folder: str | os.PathLike) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving a folder's files (standing in for a platform's file server, whose
    image URLs a function fetches), quietly, until the block ends."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()

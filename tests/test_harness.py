"""Nuclio semantics of the local harness and the dashboard API as CVAT calls it, over real HTTP."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

from tests.conftest import FIXTURES, dashboard_url, function_url, http, raw_exchange

ECHO = FIXTURES / "functions" / "echo"
BROKEN = FIXTURES / "functions" / "broken"
CRASHY = FIXTURES / "functions" / "crashy"
MISPLACED = FIXTURES / "functions" / "misplaced"

# What CVAT's LambdaGateway sends (../shared/docs/cvat-protocol.md 1.2 and 1.4).
CVAT_HEADERS = {
    "x-nuclio-project-name": "cvat",
    "x-nuclio-function-namespace": "nuclio",
    "x-nuclio-invoke-via": "domain-name",
    "X-Nuclio-Invoke-Timeout": "120s",
    "User-Agent": "CVAT/2.40 python-requests/2.32",
}


def test_dashboard_lists_functions_like_nuclio(serve):
    harness = serve(ECHO, CRASHY)
    status, _, functions = http("GET", dashboard_url(harness) + "/api/functions", headers=CVAT_HEADERS)
    assert status == 200
    assert isinstance(functions, dict) and set(functions) == {"test-echo", "test-crashy"}
    echo = functions["test-echo"]
    assert echo["metadata"]["name"] == "test-echo"
    assert echo["metadata"]["annotations"]["type"] == "detector"
    assert json.loads(echo["metadata"]["annotations"]["spec"])[0]["name"] == "thing"
    assert echo["spec"]["description"]
    assert echo["status"]["state"] == "ready"
    assert echo["status"]["httpPort"] == harness.functions["test-echo"].http_port

    status, _, one = http("GET", dashboard_url(harness) + "/api/functions/test-echo", headers=CVAT_HEADERS)
    assert status == 200 and one["metadata"]["name"] == "test-echo"
    status, _, missing = http("GET", dashboard_url(harness) + "/api/functions/nope", headers=CVAT_HEADERS)
    assert status == 404 and "error" in missing


def test_dashboard_invocation_routes_by_header(serve):
    harness = serve(ECHO, CRASHY)
    headers = {**CVAT_HEADERS, "x-nuclio-function-name": "test-echo", "x-nuclio-path": "/"}
    status, reply_headers, reply = http("POST", dashboard_url(harness) + "/api/function_invocations",
                                        {"image": "abc", "threshold": 0.3}, headers)
    assert status == 200
    assert reply_headers["Content-Type"] == "application/json"
    assert reply["body"] == {"image": "abc", "threshold": 0.3}
    assert reply["body_type"] == "dict"  # JSON content type → decoded body, as in Nuclio
    assert reply["path"] == "/"

    no_name = {k: v for k, v in headers.items() if k != "x-nuclio-function-name"}
    status, _, reply = http("POST", dashboard_url(harness) + "/api/function_invocations", {}, no_name)
    assert status == 400 and "x-nuclio-function-name" in reply["error"]
    unknown = {**headers, "x-nuclio-function-name": "nope"}
    status, _, reply = http("POST", dashboard_url(harness) + "/api/function_invocations", {}, unknown)
    assert status == 404


def test_direct_invocation_and_body_decoding(serve):
    harness = serve(ECHO)
    status, _, reply = http("POST", function_url(harness), {"a": 1}, {"User-Agent": CVAT_HEADERS["User-Agent"]})
    assert status == 200 and reply["body"] == {"a": 1} and reply["body_type"] == "dict"
    status, _, reply = http("POST", function_url(harness), b"raw bytes", {"Content-Type": "text/plain"})
    assert status == 200 and reply["body_type"] == "bytes"
    assert reply["greeting"] == "hello from spec.env"  # spec.env applied
    assert reply["cwd"] == "/"  # Nuclio's wrapper runs from /, the function folder only on PYTHONPATH
    assert reply["trigger"] == ["http", "myHttpTrigger"] and reply["has_user_data"]


def test_one_process_per_worker_and_init_once_each(serve):
    harness = serve(ECHO)
    results = []

    def call():
        results.append(http("POST", function_url(harness), {"sleep": 0.8})[2])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = {r["pid"] for r in results}
    assert len(pids) == 2  # numWorkers: 2
    assert {r["worker_id"] for r in results} == {"0", "1"}  # the wrapper's --worker-id, a string
    assert all(r["init_calls"] == 1 for r in results)


def test_workers_run_concurrently(serve):
    harness = serve(ECHO)
    started = time.perf_counter()
    threads = [threading.Thread(target=http, args=("POST", function_url(harness), {"sleep": 1.0}))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - started < 1.9  # two workers: the two sleeps overlap


def test_event_timeout_gives_408_and_a_fresh_worker(serve):
    harness = serve(ECHO)
    status, _, reply = http("POST", function_url(harness), {"sleep": 5})
    assert status == 408 and "eventTimeout" in reply["error"]
    pids = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:  # both workers answer again, one of them new
        barrier = []
        threads = [threading.Thread(target=lambda: barrier.append(http("POST", function_url(harness),
                                                                       {"sleep": 0.3})))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for status, _, reply in barrier:
            assert status == 200
            pids.add(reply["pid"])
    assert len(pids) == 2


def test_body_limit_gives_413(serve):
    harness = serve(ECHO)
    big = {"image": "A" * (1024 * 1024 + 10)}
    status, _, reply = http("POST", function_url(harness), big)
    assert status == 413 and "maxRequestBodySize" in reply["error"]
    headers = {**CVAT_HEADERS, "x-nuclio-function-name": "test-echo"}
    status, _, _ = http("POST", dashboard_url(harness) + "/api/function_invocations", big, headers)
    assert status == 413
    status, _, _ = http("POST", function_url(harness), {"image": "A" * 1000})
    assert status == 200


def test_chunked_body_is_read_and_limited(serve):
    harness = serve(ECHO)
    port = harness.functions["test-echo"].http_port

    def chunked(payload: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 65536]), payload[i:i + 65536])
                              for i in range(0, len(payload), 65536))
            s.sendall(head + chunks + b"0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    assert chunked(b'{"x": 1}').split(b"\r\n")[0].endswith(b"200 OK")
    assert b" 413 " in chunked(json.dumps({"image": "A" * (1024 * 1024 + 10)}).encode()).split(b"\r\n")[0]


def test_not_ready_until_every_worker_finished_init(serve):
    harness = serve(ECHO, ready=False)  # init_context sleeps 1 s in each worker
    status, _, reply = http("POST", function_url(harness), {})
    assert status == 503 and "not ready" in reply["error"]
    _, _, functions = http("GET", dashboard_url(harness) + "/api/functions")
    assert functions["test-echo"]["status"]["state"] != "ready"
    assert harness.wait_ready(60)
    status, _, _ = http("POST", function_url(harness), {})
    assert status == 200
    _, _, functions = http("GET", dashboard_url(harness) + "/api/functions")
    assert functions["test-echo"]["status"]["state"] == "ready"


def test_failed_init_is_reported_not_served(serve):
    harness = serve(BROKEN, ready=False)
    assert not harness.wait_ready(60)
    _, _, described = http("GET", dashboard_url(harness) + "/api/functions/test-broken")
    assert described["status"]["state"] == "error"
    assert "weights missing on purpose" in described["status"]["message"]
    status, _, reply = http("POST", function_url(harness), {})
    assert status == 503 and "weights missing on purpose" in reply["error"]


def test_unexpected_errors_are_json_500_without_traceback(serve):
    harness = serve(CRASHY)
    image = base64.b64encode(_tiny_png()).decode()
    status, headers, reply = http("POST", function_url(harness), {"image": image, "threshold": 0.5})
    assert status == 500
    assert headers["Content-Type"] == "application/json"
    assert "KeyError" in reply["error"]
    assert "Traceback" not in json.dumps(reply) and "hunter2" not in json.dumps(reply)
    status, _, reply = http("POST", function_url(harness), {"image": image, "threshold": 0.95})
    assert status == 503 and reply == {"error": "store is down"}


def test_worker_crash_gives_500_then_recovers(serve):
    harness = serve(CRASHY)
    image = base64.b64encode(_tiny_png()).decode()
    status, _, reply = http("POST", function_url(harness), {"image": image, "threshold": 0.85})
    assert status == 500 and "crashed" in reply["error"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, reply = http("POST", function_url(harness), {"image": image, "threshold": 0.95})
        if status == 503 and reply == {"error": "store is down"}:
            break
        time.sleep(0.2)
    assert reply == {"error": "store is down"}  # a fresh worker answers through the handler again


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_malformed_http_gets_json_4xx_and_the_connection_closed(serve):
    harness = serve(ECHO)
    pids_before = {w.process.pid for w in harness.functions["test-echo"]._workers.values()}
    cases = {
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}": 400,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}": 400,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n{}": 400,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n": 400,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n": 400,
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n": 431,
        b"POST / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n": 431,
        b"POST / HTTP/3.0\r\nHost: x\r\n\r\n": 505,
        b"hello there\r\n\r\n": 400,
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n": 414,
    }
    for port in (harness.functions["test-echo"].http_port, harness.port):
        for request, expected in cases.items():
            if port == harness.port and request.startswith(b"POST / "):  # the dashboard's POST endpoint
                request = request.replace(b"POST / ", b"POST /api/function_invocations ", 1).replace(
                    b"Host: x\r\n", b"Host: x\r\nx-nuclio-function-name: test-echo\r\n", 1)
            status, headers, body = raw_exchange(port, request)
            assert (status, headers["Content-Type"], headers["Connection"]) == (expected, "application/json", "close"), \
                (request[:80], status)
            assert isinstance(body["error"], str) and body["error"]
    deep = b"[" * 5000 + b"]" * 5000
    for content_type in ("application/json", "text/plain"):  # Python's JSON decoder gives up: the body stays bytes
        status, _, reply = http("POST", function_url(harness), deep, {"Content-Type": content_type})
        assert status == 200 and reply["body_type"] == "bytes"
    status, _, reply = http("POST", function_url(harness), b"1" * 5000, {"Content-Type": "application/json"})
    assert status == 200 and reply["body_type"] == "bytes"
    assert {w.process.pid for w in harness.functions["test-echo"]._workers.values()} == pids_before
    assert http("POST", function_url(harness), {"a": 1})[0] == 200


def test_events_reach_the_function_as_nuclio_passes_them(serve):
    """Every method, the path percent-decoded and normalised, query arguments in fields, canonical header
    names, no body without framing, JSON decoded only for exactly application/json (Nuclio's HTTP trigger and
    nuclio_sdk)."""
    harness = serve(ECHO)
    url = function_url(harness).rstrip("/")
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "post"):
        status, _, reply = http(method, url + "/a//b/./c/../%64?x=1&y=", b"{}",
                                {"Content-Type": "text/plain", "x-custom-THING": "  v  "})
        assert status == 200 and reply["method"] == method
        assert (reply["path"], reply["fields"]) == ("/a/b/d", {"x": "1", "y": ""})
        assert reply["headers"]["X-Custom-Thing"] == "v" and reply["body_type"] == "bytes"
    status, _, reply = http("GET", url + "/")
    assert status == 200 and reply["body_type"] == "NoneType"  # no Content-Length, no Transfer-Encoding
    for content_type, body_type in [("application/json", "dict"), ("application/json; charset=utf-8", "bytes"),
                                    ("APPLICATION/JSON", "bytes"), ("text/plain", "bytes")]:
        status, _, reply = http("POST", url + "/", {"a": 1}, {"Content-Type": content_type})
        assert (status, reply["body_type"], reply["content_type"]) == (200, body_type, content_type)
    status, headers, body = http("HEAD", url + "/")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_the_dashboard_forwards_method_path_and_every_header(serve):
    harness = serve(ECHO)
    headers = {**CVAT_HEADERS, "x-nuclio-function-name": "test-echo", "x-nuclio-path": "v1//things?q=2"}
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"):
        status, reply_headers, reply = http(method, dashboard_url(harness) + "/api/function_invocations",
                                            {"a": 1}, headers)
        assert status == 200 and reply["method"] == method
        assert (reply["path"], reply["fields"], reply["body"]) == ("/v1/things", {"q": "2"}, {"a": 1})
        assert reply["headers"]["X-Nuclio-Function-Name"] == "test-echo"
        assert reply["headers"]["X-Nuclio-Invoke-Timeout"] == "120s"


def test_an_escaping_exception_is_the_wrappers_500_text(serve):
    """Nuclio's wrapper answers an exception that escapes the handler with 500 text/plain and the traceback;
    so does the harness, so that a function which lets one escape fails here as it would there."""
    harness = serve(ECHO)
    status, headers, body = http("POST", function_url(harness), {"raise": "boom"})
    assert (status, headers["Content-Type"]) == (500, "text/plain")
    assert body.startswith(b'Exception caught in handler - "boom"') and b"Traceback" in body
    status, headers, body = http("POST", function_url(harness) + "%ff", {"a": 1})  # not UTF-8: before the handler
    assert (status, headers["Content-Type"]) == (500, "text/plain") and b"while serving" in body
    assert http("POST", function_url(harness), {"a": 1})[0] == 200  # and the worker goes on


def test_a_handler_whose_init_context_nuclio_would_not_find_is_not_served(serve):
    """The wrapper runs the init_context of the module that defines the handler; a handler made in another
    module leaves main.init_context unrun under Nuclio, so the harness refuses to report it ready."""
    harness = serve(MISPLACED, ready=False)
    assert not harness.wait_ready(60)
    _, _, described = http("GET", dashboard_url(harness) + "/api/functions/test-misplaced")
    assert described["status"]["state"] == "error"
    assert "main.init_context would never run under Nuclio" in described["status"]["message"]
    assert "factory" in described["status"]["message"]

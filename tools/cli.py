"""``tools/fn``: serve, invoke, lint and test the functions of this repository."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from common.core.labels import read_config

from . import annotate
from .config import ROOT, absolute_paths, find_configs
from .harness import Harness, NotReady, serving

if TYPE_CHECKING:
    from .redis_server import RedisServer

DEFAULT_DASHBOARD = "http://localhost:8070"


# ---------------------------------------------------------------- serve

def embedded_redis(configs) -> RedisServer | None:
    """Unless a Redis is configured, a private redis-server for the served functions (its address goes into
    the environment the workers inherit). Without the binary, trackers keep state in memory with one worker."""
    from .redis_server import RedisServer

    from common.runtime import redis_client

    if redis_client.mode(os.environ):
        print(f"Redis: {redis_client.describe(os.environ)} (CVAT_FUNCTIONS_REDIS_*)", flush=True)
        return None
    try:
        server = RedisServer(maxmemory=os.environ.get("FN_REDIS_MAXMEMORY", "2gb")).start()
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"warning: {exc}. Trackers keep their state in worker memory and run with one worker.",
              file=sys.stderr, flush=True)
        for config in configs:
            if config.kind == "tracker":
                config.worker_limit = 1
        return None
    os.environ.update(server.env())
    print(f"Redis: a private redis-server on 127.0.0.1:{server.port} for tracker state and embedding caches "
          "(set CVAT_FUNCTIONS_REDIS_HOST, _CLUSTER or _SENTINELS to use another)", flush=True)
    return server


def with_vocabulary(configs: list, value: str, scratch: Path) -> list:
    """The configs, text-prompted detectors (open_vocabulary) served from copies that list ``value``'s labels."""
    from common.core import vocabulary

    labels = vocabulary.parse(value)
    open_ones = {config.path for config in configs if vocabulary.is_open(config.path.read_text(encoding="utf-8"))}
    if not open_ones:
        raise vocabulary.VocabularyError("--labels: none of these functions is a text-prompted detector")
    out = []
    for config in configs:
        if config.path in open_ones:
            folder = vocabulary.staged(config.directory, labels, scratch / config.name)
            config = type(config)(folder / config.path.name, read_config(folder / config.path.name))
        out.append(config)
    return out


def cmd_serve(args) -> int:
    configs = find_configs(args.paths, gpu=args.gpu)
    if not configs:
        print("no functions found", file=sys.stderr)
        return 1
    scratch = tempfile.TemporaryDirectory(prefix="fn-vocabulary-")
    if args.labels:
        from common.core.vocabulary import VocabularyError

        try:
            configs = with_vocabulary(configs, args.labels, Path(scratch.name))
        except VocabularyError as exc:
            print(exc, file=sys.stderr)
            return 2
    redis_server = embedded_redis(configs)
    harness = Harness(configs, host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    harness.start()
    host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    print(f"dashboard API on http://{host}:{harness.port} (CVAT: CVAT_NUCLIO_HOST={host} "
          f"CVAT_NUCLIO_PORT={harness.port}); starting {len(configs)} function(s)...", flush=True)
    ok = harness.wait_ready(args.ready_timeout)
    print(f"{'FUNCTION':40} {'KIND':11} {'STATE':9} {'WORKERS':7} URL")
    for runtime in harness.functions.values():
        config = runtime.config
        print(f"{runtime.name:40} {config.kind:11} {runtime.state:9} {config.workers:<7} "
              f"http://{host}:{runtime.http_port}/" + (f"  ({runtime.message})" if runtime.message else ""))
    detectors = [r for r in harness.functions.values() if r.config.kind == "detector"]
    if detectors:
        print("\nV7 Darwin (Bring Your Own Model) endpoints of the detectors (see the README's V7 section):")
        for runtime in detectors:
            print(f"  {runtime.name:38} http://{host}:{runtime.http_port}/infer  (classes: /classes)")
    studio = [r for r in harness.functions.values() if r.config.kind in ("detector", "interactor")]
    if studio:
        print("\nLabel Studio ML backend URLs (Project > Settings > Model > Connect model; see the README's Label "
              "Studio section):")
        for runtime in studio:
            smart = "  (interactive: turn on 'Interactive preannotations')" if runtime.config.kind == "interactor" else ""
            print(f"  {runtime.name:38} http://{host}:{runtime.http_port}/{smart}")
    print(f"\nPlayground (every function in a browser): http://{host}:{harness.port}/")
    first = next(iter(harness.functions.values()))
    print(
        "\nTry it (the body goes through stdin: base64 images are too long for a command line):\n"
        f"  (printf '{{\"image\": \"'; base64 -w0 IMAGE.jpg; printf '\", \"threshold\": 0.5}}') | \\\n"
        f"    curl -s http://{host}:{first.http_port}/ -H 'Content-Type: application/json' --data-binary @-\n"
        "or through the dashboard API, as CVAT does:\n"
        f"  (printf '{{\"image\": \"'; base64 -w0 IMAGE.jpg; printf '\"}}') | \\\n"
        f"    curl -s http://{host}:{harness.port}/api/function_invocations -H 'Content-Type: application/json' \\\n"
        f"    -H 'x-nuclio-function-name: {first.name}' --data-binary @-",
        flush=True,
    )
    if not ok:
        print("some functions are not ready; see the log above", file=sys.stderr, flush=True)
    stop.wait()
    harness.stop()
    if redis_server is not None:
        redis_server.stop()
    scratch.cleanup()
    return 0


# ---------------------------------------------------------------- invoke

def build_request(kind: str, image_b64: str, threshold: float | None, extra: dict) -> dict:
    """A request body of the shape CVAT sends to a function of ``kind``; ``extra`` overrides fields."""
    if kind == "reid":
        body: dict = {"image0": image_b64, "image1": image_b64, "boxes0": [], "boxes1": []}
    else:
        body = {"image": image_b64}
    if kind == "interactor":
        body.update(pos_points=[], neg_points=[])
    elif kind == "tracker":
        body.update(shapes=[], states=[])
    if threshold is not None:
        body["threshold"] = threshold
    body.update(extra)
    return body


def _post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def cmd_invoke(args) -> int:
    try:
        extra = json.loads(args.body) if args.body else {}
    except (ValueError, RecursionError) as exc:
        print(f"--body is not JSON: {str(exc)[:200]}", file=sys.stderr)
        return 2
    if not isinstance(extra, dict):
        print("--body must be a JSON object", file=sys.stderr)
        return 2
    if args.image and not Path(args.image).is_file():
        print(f"--image {args.image}: no such file", file=sys.stderr)
        return 2
    image_bytes = Path(args.image).read_bytes() if args.image else None
    image_b64 = base64.b64encode(image_bytes).decode() if image_bytes else ""
    target = Path(args.target)
    if target.exists():  # a function folder: run it here, through the same worker code as `serve`
        configs = find_configs([target], gpu=args.gpu)
        if len(configs) != 1:
            print(f"{target}: expected one function, found {len(configs)}", file=sys.stderr)
            return 2
        with serving(configs, timeout=args.timeout) as harness:
            runtime = next(iter(harness.functions.values()))
            spec = runtime.config.annotations.get("spec")
            body = build_request(runtime.config.kind, image_b64, args.threshold, extra)
            reply = runtime.invoke(json.dumps(body).encode(), "application/json", {})
            status, payload = reply["status"], reply["body"]
    else:  # a function name: call a running dashboard (tools/fn serve, or Nuclio's)
        dashboard = args.dashboard.rstrip("/")
        try:
            with urllib.request.urlopen(f"{dashboard}/api/functions/{args.target}", timeout=10) as response:
                annotations = json.load(response)["metadata"]["annotations"]
                kind, spec = annotations["type"], annotations.get("spec")
        except (urllib.error.URLError, KeyError, ValueError) as exc:
            print(f"cannot describe {args.target} at {dashboard}: {exc}", file=sys.stderr)
            return 1
        body = build_request(kind, image_b64, args.threshold, extra)
        headers = {"Content-Type": "application/json", "x-nuclio-function-name": args.target,
                   "x-nuclio-path": "/", "x-nuclio-project-name": "cvat"}
        status, payload = _post(f"{dashboard}/api/function_invocations", json.dumps(body).encode(), headers,
                                args.timeout)
    try:
        reply = json.loads(payload)
        print(json.dumps(reply, indent=2 if args.pretty else None))
    except ValueError:
        reply = None
        print(payload.decode(errors="replace"))
    if status >= 400:
        print(f"HTTP {status}", file=sys.stderr)
        return 1
    if args.draw:
        if image_bytes is None or reply is None:
            print("--draw needs --image and a JSON reply", file=sys.stderr)
            return 2
        import cv2

        from common.core.image import Image
        from common.core.labels import Labels
        from .draw import draw_reply

        labels = Labels.from_spec(json.loads(spec)) if spec else None
        cv2.imwrite(args.draw, draw_reply(Image.from_bytes(image_bytes).rgb, reply, labels))
        print(f"drawn to {args.draw}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- lint / test

def cmd_lint(args) -> int:
    from .lint import lint_paths

    problems = lint_paths(args.paths)
    for problem in problems:
        print(problem)
    if not problems:
        print("lint: no problems", file=sys.stderr)
    return 1 if problems else 0


def _absolute_argument(arg: str) -> str:
    """A pytest argument naming a file or folder (``tests/x.py``, ``tests/x.py::test``) made absolute."""
    path, sep, rest = arg.partition("::")
    if arg.startswith("-") or not path or not os.path.exists(path):
        return arg
    return os.path.abspath(path) + sep + rest


NO_TESTS_COLLECTED = 5  # pytest's exit status when the selection holds no test
DATALOOP_TESTS = ROOT / "tests" / "dataloop"


def _test_path(arg: str) -> Path | None:
    """The file or folder of the test tree that a pytest argument names (``tests/x.py::test``), if any."""
    path = Path(arg.partition("::")[0])
    if arg.startswith("-") or not path.is_absolute() or not path.exists():
        return None
    return path if path == ROOT / "tests" or ROOT / "tests" in path.parents else None


def test_runs(pytest_args: list[str]) -> dict[str, list[str]]:
    """The pytest arguments of each environment's run: test paths go to the run of their environment (the
    Dataloop door's tests/dataloop/, or the main one), every other argument to both; with no test path both
    run, and each collects only its own tests (tests/conftest.py)."""
    paths = {arg: _test_path(arg) for arg in pytest_args}
    if not any(paths.values()):
        return {"main": pytest_args, "dataloop": pytest_args}

    def envs(path: Path) -> set[str]:
        if path == DATALOOP_TESTS or DATALOOP_TESTS in path.parents:
            return {"dataloop"}
        return {"main", "dataloop"} if path in DATALOOP_TESTS.parents else {"main"}  # tests/ holds both

    runs: dict[str, list[str]] = {}
    for env in ("main", "dataloop"):
        mine = [arg for arg, path in paths.items() if path is not None and env in envs(path)]
        if mine:
            runs[env] = [arg for arg in pytest_args if paths[arg] is None or arg in mine]
    return runs


def cmd_test(args) -> int:
    """The suite in .venv, then its Dataloop part (tests/dataloop/) in the Dataloop door's environment
    (``FN_DATALOOP_PYTHON``, set up by tools/fn), with the same pytest arguments."""
    # pytest runs from the repository root (pytest.ini: testpaths = tests); test paths are the shell's
    runs = test_runs(list(map(_absolute_argument, args.pytest_args)))
    pythons = {"main": sys.executable, "dataloop": os.environ.get("FN_DATALOOP_PYTHON")}
    codes = []
    for env, pytest_args in runs.items():
        if pythons[env] is None:
            print("tools/fn test: FN_DATALOOP_PYTHON is not set (run tools/fn test): tests/dataloop/ did not run",
                  file=sys.stderr)
            codes.append(1)
            continue
        if len(runs) > 1:
            print(f"\n===== tools/fn test: the {env} environment ({pythons[env]})", flush=True)
        codes.append(subprocess.call([pythons[env], "-m", "pytest", *pytest_args], cwd=ROOT,
                                     env={**os.environ, "FN_TEST_ENV": env}))
    ran = [code for code in codes if code != NO_TESTS_COLLECTED]
    return max(ran) if ran else NO_TESTS_COLLECTED


def bench_module(which: str = ""):
    """A benchmark's module, imported when it runs (they import the model packages)."""
    if which == "clicks":
        from . import bench_clicks as module
    elif which == "tracker":
        from . import bench_tracker as module
    elif which == "prompts":
        from . import bench_prompts as module
    elif which == "exactness":
        from . import bench_exactness as module
    elif which == "state":
        from . import bench_state as module
    else:
        from . import bench as module
    return module


def cmd_dataloop_manifest(args) -> int:
    from . import dataloop_manifest

    return dataloop_manifest.main(args.dataloop_args)


def cmd_label_studio_config(args) -> int:
    """The labeling config a Label Studio project needs for a function (paste it in Settings → Labeling
    Interface → Code)."""
    from common.core.labels import Labels
    from common.doors.label_studio import labeling_config

    from .config import find_configs

    try:
        configs = find_configs([args.path])
    except OSError as exc:
        print(f"tools/fn label-studio-config: {exc}", file=sys.stderr)
        return 2
    if len(configs) != 1:
        print(f"tools/fn label-studio-config: {args.path} holds {len(configs)} functions; name one function folder",
              file=sys.stderr)
        return 2
    config = configs[0]
    if config.kind not in ("detector", "interactor"):
        print(f"tools/fn label-studio-config: {config.name} is a {config.kind}; Label Studio calls detectors and "
              "interactors", file=sys.stderr)
        return 2
    print(labeling_config(Labels.from_function_yaml(config.path), config.kind == "interactor"), end="")
    return 0


def cmd_replies(args) -> int:
    from . import replies

    return replies.main(args.replies_args)


LOCK_INPUTS = ("requirements-dev.txt", "requirements-nodeps.txt", "requirements-gpu.txt")


def cmd_lock(args) -> int:
    """pip-compile over the requirements files (the Dataloop door's, which pins differently, has its own
    environment); pins already in the lock stay unless --upgrade."""
    command = [sys.executable, "-m", "piptools", "compile", "--quiet", "--allow-unsafe", "--strip-extras",
               "--no-emit-index-url", "--no-emit-find-links", "-o", "requirements.lock",
               *(["--upgrade"] if args.upgrade else []), *LOCK_INPUTS]
    return subprocess.call(command, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    # Paths given in variables mean what they mean in the shell the command was typed in, whatever
    # directory a worker or the test run later works in.
    os.environ.update(absolute_paths(dict(os.environ)))
    parser = argparse.ArgumentParser(prog="tools/fn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve functions the way Nuclio does, with a dashboard API")
    serve.add_argument("paths", nargs="*", help="function folders or yaml files (default: functions/)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("FN_PORT", 8070)),
                       help="dashboard API port (default 8070, as CVAT expects)")
    serve.add_argument("--host", default=os.environ.get("FN_HOST", "127.0.0.1"),
                       help="address to bind (default 127.0.0.1; 0.0.0.0 for CVAT in Docker)")
    serve.add_argument("--gpu", action="store_true", help="serve function-gpu.yaml instead of function.yaml")
    serve.add_argument("--ready-timeout", type=float, default=600, help="seconds to wait for init_context")
    serve.add_argument("--labels", help="text-prompted detectors list these labels: names (car,person) or a "
                                        "JSON/YAML file of names with prompts")
    serve.set_defaults(func=cmd_serve)

    invoke = sub.add_parser("invoke", help="call one function, like nuctl invoke")
    invoke.add_argument("target", help="a function name (served at --dashboard) or a function folder")
    invoke.add_argument("--image", help="image file to send")
    invoke.add_argument("--threshold", type=float)
    invoke.add_argument("--body", help="JSON object merged into the request (points, shapes, states, ...)")
    invoke.add_argument("--draw", metavar="OUT.png", help="save the image with the reply drawn on it")
    invoke.add_argument("--dashboard", default=os.environ.get("NUCLIO_DASHBOARD_URL", DEFAULT_DASHBOARD))
    invoke.add_argument("--gpu", action="store_true", help="with a folder: use function-gpu.yaml")
    invoke.add_argument("--timeout", type=float, default=300)
    invoke.add_argument("--pretty", action="store_true", help="indent the JSON reply")
    invoke.set_defaults(func=cmd_invoke)

    lint = sub.add_parser("lint", help="check function.yaml / function-gpu.yaml files")
    lint.add_argument("paths", nargs="*")
    lint.set_defaults(func=cmd_lint)

    bench = sub.add_parser("bench", help="latency of one function: over HTTP, in-process, bare backend")
    bench.add_argument("path", help="a function folder")
    bench.add_argument("--image", required=True)
    bench.add_argument("--body", help="JSON object merged into the request")
    bench.add_argument("-n", type=int, default=50, help="requests per measurement")
    bench.add_argument("--backends", default="openvino,onnxruntime", help="INFERENCE_BACKEND values to compare")
    bench.add_argument("--device", help="PyTorch device of PyTorch functions (TORCH_DEVICE)")
    bench.add_argument("--label-studio", action="store_true",
                       help="instead: Label Studio's POST /predict (the image fetched from a local file server) "
                            "alternated with CVAT's call over HTTP, and their ratio")
    bench.set_defaults(func=lambda a: bench_module().cmd_bench(a))

    clicks = sub.add_parser("bench-clicks", help="cold vs warm click latency and reply sizes of an interactor")
    clicks.add_argument("path", help="an interactor's function folder")
    clicks.add_argument("--image", required=True)
    clicks.add_argument("--size", default="1920x1080", help="scale the image to WxH first (default 1920x1080)")
    clicks.add_argument("--clicks", type=int, default=5, help="warm clicks per image")
    clicks.add_argument("--rounds", type=int, default=3, help="images (cold clicks)")
    clicks.add_argument("--random-weights", action="store_true",
                        help="build a random checkpoint of the configured architecture (SAM, SAM 2)")
    clicks.add_argument("--gpu", action="store_true", help="use function-gpu.yaml")
    clicks.add_argument("--device", help="PyTorch device (TORCH_DEVICE; default: CUDA when available)")
    clicks.set_defaults(func=lambda a: bench_module("clicks").cmd_bench_clicks(a))

    tracker = sub.add_parser("bench-tracker", help="a tracker's per-frame latency, Redis vs in-process state")
    tracker.add_argument("path", help="a tracker's function folder")
    tracker.add_argument("--video", help="default: $TEST_DATA_DIR/video/vtest.avi")
    tracker.add_argument("--frames", type=int, default=30, help="continuing frames")
    tracker.add_argument("--objects", default="1,10", help="objects tracked together, one run per count (1,10)")
    tracker.add_argument("--device", help="PyTorch device (TORCH_DEVICE; default: CUDA when available)")
    tracker.add_argument("--random-weights", action="store_true",
                         help="SAM 2 (MODEL_SIZE's architecture), SiamMask: a randomly initialised checkpoint")
    tracker.set_defaults(func=lambda a: bench_module("tracker").cmd_bench_tracker(a))

    exact = sub.add_parser("bench-exactness", help="mask IoU and logit differences of PREPROCESS=device and "
                           "bfloat16 autocast against the package's own path (SAM, SAM 2, SAM 2 tracker)")
    exact.add_argument("path", help="a SAM-family function folder")
    exact.add_argument("--image", default=str(Path(os.environ.get("TEST_DATA_DIR", "")) / "images" / "dog.jpg"))
    exact.add_argument("--size", help="scale the image to WxH first")
    exact.add_argument("--clicks", type=int, default=10, help="single clicks on the image (interactors)")
    exact.add_argument("--video", help="default: $TEST_DATA_DIR/video/vtest.avi (tracker)")
    exact.add_argument("--frames", type=int, default=10, help="continuing frames (tracker)")
    exact.add_argument("--box", type=int, default=96, help="side of the tracked box in pixels (tracker)")
    exact.add_argument("--random-weights", action="store_true", help="a randomly initialised checkpoint")
    exact.add_argument("--device", help="PyTorch device (TORCH_DEVICE)")
    exact.set_defaults(func=lambda a: bench_module("exactness").cmd_bench_exactness(a))

    prompts = sub.add_parser("bench-prompts", help="a text-prompted detector for 1, 10, 50 labels vs the package")
    prompts.add_argument("path", help="a text-prompted detector's function folder")
    prompts.add_argument("--image", default=str(Path(os.environ.get("TEST_DATA_DIR", "")) / "images" / "dog.jpg"))
    prompts.add_argument("--labels", default="1,10,50", help="label counts (default 1,10,50)")
    prompts.add_argument("--threshold", type=float, default=0.3)
    prompts.add_argument("-n", type=int, default=3, help="timed requests per figure")
    prompts.add_argument("--random-weights", action="store_true", help="the real architecture, random weights")
    prompts.set_defaults(func=lambda a: bench_module("prompts").cmd_bench_prompts(a))

    annotate.add_parser(sub)

    state = sub.add_parser("bench-state", help="bytes of tracker state and embeddings in Redis, to size it",
                           add_help=False)
    state.add_argument("state_args", nargs=argparse.REMAINDER)
    state.set_defaults(func=lambda a: bench_module("state").main(a.state_args))

    studio = sub.add_parser("label-studio-config", help="the Label Studio labeling config for a function's labels")
    studio.add_argument("path", help="a detector's or interactor's function folder")
    studio.set_defaults(func=cmd_label_studio_config)

    dataloop = sub.add_parser("dataloop-manifest", help="a detector's dataloop.json (and --stage DIR: its code)",
                              add_help=False)
    dataloop.add_argument("dataloop_args", nargs=argparse.REMAINDER)
    dataloop.set_defaults(func=cmd_dataloop_manifest)

    replies = sub.add_parser("replies", help="record every function's replies on fixed requests; compare two")
    replies.add_argument("replies_args", nargs=argparse.REMAINDER)
    replies.set_defaults(func=cmd_replies)

    lock = sub.add_parser("lock", help="write requirements.lock (the exact versions of every requirements file) "
                                       "with pip-tools; --upgrade takes the newest allowed")
    lock.add_argument("--upgrade", action="store_true", help="newest versions, not the lock's where still allowed")
    lock.set_defaults(func=cmd_lock)

    doctor = sub.add_parser("doctor", help="check this host for deploying (Docker, nuctl, GPU) and the deployed "
                                           "functions", add_help=False)
    doctor.add_argument("doctor_args", nargs=argparse.REMAINDER)
    doctor.set_defaults(func=lambda a: __import__("tools.doctor", fromlist=["main"]).main(a.doctor_args))

    test = sub.add_parser("test", help="run the whole test suite (pytest arguments pass through)")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(func=cmd_test)

    args, unknown = parser.parse_known_args(argv)
    if args.command == "test":
        args.pytest_args = unknown + args.pytest_args
    elif args.command == "replies":
        args.replies_args = unknown + args.replies_args  # every option goes to pytest
    elif args.command == "bench-state":
        args.state_args = unknown + args.state_args
    elif args.command == "dataloop-manifest":
        args.dataloop_args = unknown + args.dataloop_args
    elif args.command == "doctor":
        args.doctor_args = unknown + args.doctor_args
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except NotReady as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

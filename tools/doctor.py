"""``tools/fn doctor``: is this host ready to deploy the functions, and are the deployed ones what CVAT reads?

One line per check, ``✓`` or ``✗`` with the fix; the exit status is 1 when any check failed. Standard library
only, so that ``deploy_cpu.sh --check`` and ``deploy_gpu.sh --check`` run it with the system's ``python3``:

- Docker (local platform): the engine answers, its version and the API versions it accepts;
- ``nuctl``: found, its version against the Nuclio line this project is tested with, and whether it works with
  that Docker (Docker 29 accepts API 1.44 and newer; Nuclio 1.13.0's client speaks 1.42: CVAT #10013, #10033);
- ``--gpu``: the NVIDIA driver (``nvidia-smi``) against the driver floor of the CUDA runtime the GPU images carry
  (read from ``requirements.lock``), and the NVIDIA container runtime registered with Docker;
- ``--dashboard URL``: Nuclio's dashboard (or ``tools/fn serve``) answers, and each function it lists (or each
  ``--function NAME``) carries the annotations CVAT reads (name, type, framework, spec) and is ready.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.core.gpu import driver_floor, driver_too_old, nvidia_smi  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTED_NUCLIO = "1.13"
NUCLIO_DOCKER_API = "1.42"  # what Nuclio 1.13.0's Docker client speaks
DEFAULT_CUDA = "13.0"  # the CUDA runtime of PyPI's torch wheels the GPU images install, when no lock says


class Report:
    def __init__(self):
        self.failed = 0

    def ok(self, text: str) -> None:
        print(f"✓ {text}")

    def bad(self, text: str, fix: str) -> None:
        self.failed += 1
        print(f"✗ {text}\n    fix: {fix}")


def run(*command: str) -> subprocess.CompletedProcess | None:
    """The command's result, None when it is not installed."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(command, 1, "", str(exc))


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_docker(report: Report) -> str | None:
    """The Docker engine's version, None when it does not answer."""
    got = run("docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}")
    if got is None:
        report.bad("docker not found", "install Docker Engine (the local platform builds and runs functions with it)")
        return None
    fields = got.stdout.split()
    if got.returncode != 0 or len(fields) < 2:
        first = (got.stderr or got.stdout).strip().splitlines()[:1]
        report.bad(f"the Docker engine does not answer ({first[0] if first else 'no output'})",
                   "start dockerd, and let this user reach it (the docker group) or run as root")
        return None
    oldest = f", oldest accepted {fields[2]}" if len(fields) > 2 else ""
    report.ok(f"Docker {fields[0]} (API {fields[1]}{oldest})")
    return fields[0]


def check_nuctl(report: Report, docker: str | None) -> None:
    got = run("nuctl", "version")
    if got is None:
        report.bad("nuctl not found",
                   f"install Nuclio's CLI {TESTED_NUCLIO}.x (https://github.com/nuclio/nuclio/releases)")
        return
    found = re.search(r"\d+\.\d+\.\d+", got.stdout + got.stderr)
    version = found.group(0) if found else "unknown"
    if not version.startswith(TESTED_NUCLIO + "."):
        report.bad(f"nuctl {version}: this project is tested with Nuclio {TESTED_NUCLIO}.x",
                   f"use nuctl {TESTED_NUCLIO}.x, the line CVAT's docker-compose.serverless.yml runs")
    else:
        report.ok(f"nuctl {version}")
    if docker and version_tuple(docker) >= (29,) and version_tuple(version) < (1, 14):
        report.bad(f"Docker {docker} refuses Docker API versions below 1.44, and Nuclio {version}'s client speaks "
                   f"{NUCLIO_DOCKER_API} (CVAT issues #10013 and #10033): builds and the dashboard fail with "
                   "'client version 1.42 is too old'",
                   "use Docker 28.x, or let dockerd accept older clients (DOCKER_MIN_API_VERSION=1.24 in its "
                   "environment, e.g. a systemd drop-in) and restart it")


def lock_cuda(lock: Path) -> str:
    """The CUDA runtime the GPU images carry: the nvidia-cuda-runtime pin of the lock (torch's)."""
    if lock.is_file():
        found = re.search(r"^nvidia-cuda-runtime==(\d+\.\d+)", lock.read_text(), re.M)
        if found:
            return found.group(1)
    return DEFAULT_CUDA


def check_gpu(report: Report, cuda: str) -> None:
    found = nvidia_smi()
    floor = driver_floor(cuda)
    if found is None:
        report.bad("no NVIDIA driver answers here (nvidia-smi missing or failing)",
                   f"install the NVIDIA driver ({floor} series or newer for the images' CUDA {cuda})")
    else:
        driver, name = found
        if driver_too_old(driver, cuda):
            report.bad(f"NVIDIA driver {driver} ({name}) is older than the {floor} series the images' CUDA {cuda} "
                       "needs: torch in the GPU images would see no GPU",
                       f"update the host's driver to {floor} or newer, or build the images with wheels for the "
                       "CUDA your driver runs (README: Deploying on a GPU)")
        else:
            report.ok(f"NVIDIA driver {driver} ({name}) runs the images' CUDA {cuda}")
    runtimes = run("docker", "info", "--format", "{{json .Runtimes}}")
    if runtimes is not None and runtimes.returncode == 0 and "nvidia" in runtimes.stdout:
        report.ok("the NVIDIA container runtime is registered with Docker")
    else:
        report.bad("the NVIDIA container runtime is not registered with Docker: containers would see no GPU",
                   "install nvidia-container-toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` and "
                   "restart Docker")


def check_dashboard(report: Report, url: str, names: list[str]) -> None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/functions", timeout=10) as response:
            functions = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        report.bad(f"the dashboard at {url} does not answer ({getattr(exc, 'reason', exc)})",
                   "start Nuclio's dashboard (CVAT's components/serverless/docker-compose.serverless.yml) or "
                   "tools/fn serve, and point CVAT_NUCLIO_HOST/CVAT_NUCLIO_PORT at it")
        return
    report.ok(f"the dashboard at {url} lists {len(functions)} functions")
    for name in names or sorted(functions):
        described = functions.get(name)
        if described is None:
            report.bad(f"{name} is not deployed", "deploy it (./deploy_cpu.sh or ./deploy_gpu.sh with its folder)")
            continue
        annotations = (described.get("metadata") or {}).get("annotations") or {}
        missing = [key for key in ("name", "type", "framework", "spec") if not annotations.get(key)]
        try:
            json.loads(annotations.get("spec") or "[]")
        except ValueError:
            missing.append("spec (not JSON)")
        state = (described.get("status") or {}).get("state")
        if missing:
            report.bad(f"{name} lacks the annotations CVAT reads: {', '.join(missing)}",
                       "fix metadata.annotations in its yaml (tools/fn lint) and deploy again")
        elif state != "ready":
            message = (described.get("status") or {}).get("message") or ""
            report.bad(f"{name} is {state or 'in no state'}{': ' + message if message else ''}",
                       "read its log (docker logs nuclio-nuclio-<name>, or nuctl get function -o yaml)")
        else:
            report.ok(f"{name}: {annotations['type']}, ready, with the annotations CVAT reads")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fn doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=("local", "kube"), default="local",
                        help="local: check Docker too (kube: only nuctl)")
    parser.add_argument("--gpu", action="store_true", help="check the NVIDIA driver and container runtime")
    parser.add_argument("--dashboard",
                        help="Nuclio's dashboard (or tools/fn serve) to check, e.g. http://localhost:8070")
    parser.add_argument("--function", action="append", default=[], help="a deployed function to check (repeatable)")
    parser.add_argument("--functions-only", action="store_true", help="only the dashboard and its functions")
    parser.add_argument("--lock", default=str(ROOT / "requirements.lock"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    report = Report()
    if not args.functions_only:
        docker = check_docker(report) if args.platform == "local" else None
        check_nuctl(report, docker)
    if args.gpu and not args.functions_only:
        check_gpu(report, lock_cuda(Path(args.lock)))
    if args.dashboard or args.function:
        check_dashboard(report, args.dashboard or "http://localhost:8070", args.function)
    print(f"{report.failed} problem(s)" if report.failed else "all checks passed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

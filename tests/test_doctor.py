"""``tools/fn doctor`` against stand-in ``docker``, ``nuctl`` and ``nvidia-smi`` executables that print what the
real ones print (in the formats of Docker 28.2 and 29.0, nuctl 1.13.0 and an NVIDIA driver's ``nvidia-smi
--query-gpu``), and against ``tools/fn serve`` for the dashboard checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, dashboard_url, running

YOLOX = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"
DOCKER_29 = "29.0.0 1.52 1.44"  # docker version --format '{{.Server.Version}} {{.Server.APIVersion}} ...'
DOCKER_28 = "28.2.2 1.50 1.24"
NUCTL_113 = 'Client version:\n"Label: 1.13.0, Git commit: 1f5fd3c7b3bf, OS: linux, Arch: amd64, Go version: go1.21.9"'
RUNTIMES_NVIDIA = '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}'
RUNTIMES_PLAIN = '{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}}'


def tools(folder: Path, docker: str | None, runtimes: str = RUNTIMES_NVIDIA, nuctl: str | None = NUCTL_113,
          driver: str | None = None) -> Path:
    """A folder of stand-in executables (only those given), to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {}
    if docker is not None:
        scripts["docker"] = f'if [ "$1" = info ]; then echo \'{runtimes}\'; else echo "{docker}"; fi'
    if nuctl is not None:
        scripts["nuctl"] = f"cat <<'EOF'\n{nuctl}\nEOF"
    if driver is not None:
        scripts["nvidia-smi"] = f'echo "{driver}"'
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def doctor(bin_dir: Path, *args: str) -> tuple[int, str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "doctor.py"), *args], env=env, capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stdout


def test_docker_29_with_nuclio_113_is_named_with_its_fix(tmp_path):
    code, out = doctor(tools(tmp_path / "bin", DOCKER_29))
    assert code == 1 and "✓ Docker 29.0.0 (API 1.52, oldest accepted 1.44)" in out and "✓ nuctl 1.13.0" in out
    assert "✗ Docker 29.0.0 refuses Docker API versions below 1.44" in out and "DOCKER_MIN_API_VERSION" in out


def test_docker_28_with_nuclio_113_passes(tmp_path):
    code, out = doctor(tools(tmp_path / "bin", DOCKER_28))
    assert code == 0 and out.rstrip().endswith("all checks passed"), out


def test_missing_tools_are_named(tmp_path):
    code, out = doctor(tools(tmp_path / "bin", None, nuctl=None))
    assert code == 1 and "✗ docker not found" in out and "✗ nuctl not found" in out
    code, out = doctor(tools(tmp_path / "other", None, nuctl='Client version:\n"Label: 1.15.2"'), "--platform", "kube")
    assert code == 1 and "nuctl 1.15.2: this project is tested with Nuclio 1.13.x" in out and "Docker" not in out


@pytest.mark.parametrize("driver, runtimes, expected", [
    ("580.82.07, NVIDIA L4", RUNTIMES_NVIDIA, ["✓ NVIDIA driver 580.82.07 (NVIDIA L4) runs the images' CUDA 13.0",
                                              "✓ the NVIDIA container runtime is registered"]),
    ("550.54.15, NVIDIA A10G", RUNTIMES_NVIDIA,
     ["✗ NVIDIA driver 550.54.15 (NVIDIA A10G) is older than the 580 series"]),
    (None, RUNTIMES_PLAIN, ["✗ no NVIDIA driver answers here", "✗ the NVIDIA container runtime is not registered"]),
])
def test_gpu_driver_against_the_images_cuda_and_the_container_runtime(tmp_path, driver, runtimes, expected):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.14.1\nnvidia-cuda-runtime==13.0.96\n")
    code, out = doctor(tools(tmp_path / "bin", DOCKER_28, runtimes, driver=driver), "--gpu", "--lock", str(lock))
    assert all(line in out for line in expected), out
    assert code == (0 if driver and driver.startswith("580") else 1)


def test_the_dashboard_and_its_functions_as_cvat_reads_them(tmp_path, models_dir):
    bin_dir = tools(tmp_path / "bin", DOCKER_28)
    with running(YOLOX) as harness:
        code, out = doctor(bin_dir, "--dashboard", dashboard_url(harness))
        assert code == 0 and "✓ onnx-megvii-yolox: detector, ready, with the annotations CVAT reads" in out, out
        code, out = doctor(bin_dir, "--dashboard", dashboard_url(harness), "--function", "pth-facebookresearch-sam")
        assert code == 1 and "✗ pth-facebookresearch-sam is not deployed" in out
    code, out = doctor(bin_dir, "--dashboard", "http://127.0.0.1:9")
    assert code == 1 and "✗ the dashboard at http://127.0.0.1:9 does not answer" in out


def test_deploy_check_runs_the_doctor_first_and_stops_on_a_problem(tmp_path):
    bin_dir = tools(tmp_path / "bin", DOCKER_29)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}  # a python3
    done = subprocess.run(["bash", str(ROOT / "deploy_gpu.sh"), "--check", str(YOLOX)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "tools/doctor.py found problems" in done.stderr
    assert "refuses Docker API versions below 1.44" in done.stdout and "no NVIDIA driver answers" in done.stdout
    assert "nuctl deploy" not in done.stdout + done.stderr


def test_deploy_check_looks_at_the_deployed_functions_afterwards(tmp_path, models_dir):
    """After `nuctl deploy` (a stand-in), --check asks the dashboard (tools/fn serve here) for each deployed
    function: listed, ready, with CVAT's annotations."""
    bin_dir = tools(tmp_path / "bin", DOCKER_28, nuctl=None)
    (bin_dir / "nuctl").write_text("#!/bin/sh\ncase \"$1 $2\" in\n"
                                   f"  \"version \"*) cat <<'EOF'\n{NUCTL_113}\nEOF\n  ;;\n"
                                   "  \"get function\") echo '{\"status\": {\"state\": \"ready\"}}' ;;\n"
                                   "esac\n")
    (bin_dir / "nuctl").chmod(0o755)
    with running(YOLOX) as harness:
        env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
               "NUCLIO_DASHBOARD_URL": dashboard_url(harness)}
        done = subprocess.run(["bash", str(ROOT / "deploy_cpu.sh"), "--check", str(YOLOX)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ onnx-megvii-yolox: detector, ready, with the annotations CVAT reads" in done.stdout

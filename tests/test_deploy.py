"""deploy_cpu.sh / deploy_gpu.sh --dry-run: the nuctl commands and the staged build contexts."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT


def dry_run(script: str) -> str:
    result = subprocess.run([str(ROOT / script), "--dry-run", str(ROOT / "functions")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cpu_deploy_stages_common_and_function():
    out = dry_run("deploy_cpu.sh")
    assert "+ nuctl create project cvat" in out
    deploy = [line for line in out.splitlines() if line.startswith("+ nuctl deploy")]
    assert len(deploy) == len(list((ROOT / "functions").rglob("function.yaml")))
    assert all("--project-name cvat" in line and "/function.yaml" in line for line in deploy)
    staged = {line.split("staged: ")[1] for line in out.splitlines() if "staged: " in line}
    assert {"./main.py", "./model_handler.py", "./common/entry.py", "./common/image.py"} <= staged


def test_gpu_deploy_uses_gpu_yaml():
    deploy = [line for line in dry_run("deploy_gpu.sh").splitlines() if line.startswith("+ nuctl deploy")]
    assert deploy and all("/function-gpu.yaml" in line for line in deploy)

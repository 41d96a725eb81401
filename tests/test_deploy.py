"""deploy_cpu.sh / deploy_gpu.sh: commands, flags, staged contexts, skipped functions, summary.

No Docker engine or nuctl exists here, so most tests use --dry-run. One test puts small stand-ins for
nuctl and docker on PATH (they only log their arguments and answer like the real tools) to check what a
real run does around them: the version check, re-runs that find the project, failures and the summary.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

FUNCTIONS = ROOT / "functions"
YOLOX = FUNCTIONS / "onnx" / "megvii" / "yolox" / "nuclio"
GRABCUT = FUNCTIONS / "opencv" / "opencv" / "grabcut" / "nuclio"
CLEAN_ENV = ("CVAT_FUNCTIONS_PROJECT", "NUCLIO_PLATFORM", "CVAT_FUNCTIONS_NETWORK", "NUCLIO_NAMESPACE",
             "NUCLIO_REGISTRY", "NUCLIO_RUN_REGISTRY", "DEPLOY_STAGE_DIR", "DEPLOY_DRY_RUN",
             "CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_PORT", "CVAT_FUNCTIONS_REDIS_PASSWORD",
             "CVAT_FUNCTIONS_REDIS_CLUSTER", "CVAT_FUNCTIONS_REDIS_SENTINELS", "LABEL_STUDIO_URL")


@pytest.fixture
def tree(tmp_path) -> Path:
    """A functions tree with one CPU+GPU function and one CPU-only function."""
    root = tmp_path / "functions"
    shutil.copytree(YOLOX, root / "onnx" / "megvii" / "yolox" / "nuclio")
    shutil.copytree(GRABCUT, root / "opencv" / "opencv" / "grabcut" / "nuclio")
    return root


def deploy(script: str, *args, env: dict | None = None, path: str | None = None):
    """Run a deploy script with a temporary directory of its own, which it must leave as empty as it found it
    (whatever it stages there is removed when it exits; only --stage-to keeps staged contexts)."""
    environ = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    environ.update(env or {})
    if path is not None:
        environ["PATH"] = path
    with tempfile.TemporaryDirectory() as scratch:
        environ["TMPDIR"] = scratch
        result = subprocess.run([str(ROOT / script), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, env=environ)
        assert os.listdir(scratch) == [], f"{script} left {os.listdir(scratch)} in its temporary directory"
    return result


def commands(out: str, verb: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"+ nuctl {verb}")]


def summary(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FUNCTION"))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1:] if line.strip()}


def staged_files(out: str) -> set[str]:
    return {line.split("staged: ")[1] for line in out.splitlines() if "staged: " in line}


def test_cpu_dry_run_commands_and_staged_context(tree):
    result = deploy("deploy_cpu.sh", "--dry-run", tree)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert commands(out, "create project") == ["+ nuctl create project cvat --platform local"]
    deploys = commands(out, "deploy")
    assert len(deploys) == 2
    for line, name in zip(deploys, ("onnx-megvii-yolox", "opencv-grabcut")):
        assert line.startswith(f"+ nuctl deploy {name} --project-name cvat --path ")
        assert "/function.yaml --platform local --platform-config" in line and "cvat_cvat" in line
    assert {"./main.py", "./model_handler.py", "./function.yaml", "./common/doors/nuclio.py", "./common/core/image.py"} <= \
        staged_files(out)
    assert summary(out) == {"onnx-megvii-yolox": ["dry", "run", "-"], "opencv-grabcut": ["dry", "run", "-"]}


def test_gpu_dry_run_uses_gpu_files_and_reports_skipped(tree):
    result = deploy("deploy_gpu.sh", "--dry-run", tree)
    assert result.returncode == 0, result.stderr
    (line,) = commands(result.stdout, "deploy")
    assert line.startswith("+ nuctl deploy onnx-megvii-yolox") and "/function-gpu.yaml " in line
    assert "opencv/grabcut/nuclio has no function-gpu.yaml" in result.stderr
    assert summary(result.stdout)["opencv-grabcut"][0] == "skipped"


def test_options_from_flags_and_environment(tree):
    env = {"CVAT_FUNCTIONS_PROJECT": "from-env", "CVAT_FUNCTIONS_NETWORK": "net-env",
           "CVAT_FUNCTIONS_REDIS_HOST": "redis", "CVAT_FUNCTIONS_REDIS_PORT": "6380"}
    out = deploy("deploy_cpu.sh", "--dry-run", tree / "onnx", env=env).stdout
    (line,) = commands(out, "deploy")
    assert "--project-name from-env" in line and "net-env" in line
    assert "--env CVAT_FUNCTIONS_REDIS_HOST=redis --env CVAT_FUNCTIONS_REDIS_PORT=6380" in line
    assert "PASSWORD" not in line
    out = deploy("deploy_cpu.sh", "--dry-run", "--project", "from-flag", "--network", "net-flag", tree / "onnx",
                 env=env).stdout
    (line,) = commands(out, "deploy")
    assert "--project-name from-flag" in line and "net-flag" in line
    out = deploy("deploy_cpu.sh", tree / "onnx", env={"DEPLOY_DRY_RUN": "1"}).stdout
    assert len(commands(out, "deploy")) == 1


def test_kube_platform_needs_a_registry_and_passes_namespace_and_registries(tree):
    result = deploy("deploy_cpu.sh", "--dry-run", "--platform", "kube", tree)
    assert result.returncode == 2 and "--registry" in result.stderr
    result = deploy("deploy_cpu.sh", "--dry-run", "--platform", "kube", "--namespace", "annotation",
                    "--registry", "registry.example:5000", tree / "onnx")
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout, "create project") == [
        "+ nuctl create project cvat --platform kube --namespace annotation"]
    (line,) = commands(result.stdout, "deploy")
    assert "--platform kube --namespace annotation --registry registry.example:5000 " \
           "--run-registry registry.example:5000" in line
    assert "--platform-config" not in line
    result = deploy("deploy_cpu.sh", "--dry-run", tree / "onnx", env={
        "NUCLIO_PLATFORM": "kube", "NUCLIO_REGISTRY": "push.example", "NUCLIO_RUN_REGISTRY": "pull.example"})
    assert "--registry push.example --run-registry pull.example" in commands(result.stdout, "deploy")[0]


def test_help_and_bad_arguments():
    result = deploy("deploy_gpu.sh", "--help")
    assert result.returncode == 0
    for option in ("--project", "--platform", "--network", "--namespace", "--registry", "--run-registry",
                   "--dry-run", "function-gpu.yaml", "NUCLIO_REGISTRY"):
        assert option in result.stdout
    assert deploy("deploy_cpu.sh", "--bogus").returncode == 2
    assert deploy("deploy_cpu.sh", "--platform", "swarm", "--dry-run").returncode == 2
    assert deploy("deploy_cpu.sh", "--project").returncode == 2


def test_missing_nuctl_or_docker_is_a_clear_error(tree, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "find", "sort", "awk", "mktemp", "cp", "rm", "grep", "head", "mkdir", "sed"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    result = deploy("deploy_cpu.sh", tree, path=str(bin_dir))
    assert result.returncode == 2 and "nuctl not found" in result.stderr
    fake_tool(bin_dir, "nuctl", "echo 'Client version: \"Label: 1.13.4\"'\n")
    result = deploy("deploy_cpu.sh", tree, path=str(bin_dir))
    assert result.returncode == 2 and "docker not found" in result.stderr
    assert "nuctl 1.13.4" in result.stderr and "warning" not in result.stderr
    fake_tool(bin_dir, "docker", "exit 1\n")  # the client exists, the engine does not answer
    result = deploy("deploy_cpu.sh", tree, path=str(bin_dir))
    assert result.returncode == 2 and "Docker is not running" in result.stderr


def fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_real_run_with_stand_in_nuctl(tree, tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "nuctl.log"
    bin_dir.mkdir()
    fake_tool(bin_dir, "docker", 'echo "docker $*" >> "%s"\n' % log)
    fake_tool(bin_dir, "nuctl", f"""echo "nuctl $*" >> "{log}"
case "$1 $2" in
  "version "*) echo 'Client version:'; echo '"Label: 1.12.9", "Arch: amd64"' ;;
  "get project") [ -f "{tmp_path}/project" ] ;;
  "create project") touch "{tmp_path}/project" ;;
  "deploy opencv-grabcut") exit 1 ;;
  "deploy "*) ;;
  "get function") echo '{{"status": {{"state": "ready", "httpPort": 32771}}}}' ;;
esac
""")
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    first = deploy("deploy_cpu.sh", tree, path=path)
    assert first.returncode == 1 and "1 function(s) failed" in first.stderr
    assert "is not 1.13.x" in first.stderr  # the stand-in reports 1.12.9
    assert summary(first.stdout) == {"onnx-megvii-yolox": ["deployed", "32771"], "opencv-grabcut": ["FAILED", "-"]}
    calls = log.read_text().splitlines()
    assert "docker info" in calls and calls.count("nuctl create project cvat --platform local") == 1
    second = deploy("deploy_cpu.sh", tree / "onnx", path=path)
    assert second.returncode == 0 and "project cvat exists" in second.stderr
    assert log.read_text().splitlines().count("nuctl create project cvat --platform local") == 1


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, "-x", "deploy_common.sh", "deploy_cpu.sh", "deploy_gpu.sh", "tools/fn",
                             ".ci/run"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", ["deploy_cpu.sh", "deploy_gpu.sh"])
def test_every_staged_function_imports_like_nuclio_would(script, tmp_path):
    """Import main.py from each staged folder in a fresh interpreter: handler and init_context resolve."""
    stage = tmp_path / "staged"
    result = deploy(script, "--dry-run", "--stage-to", stage, FUNCTIONS)
    assert result.returncode == 0, result.stderr
    folders = sorted(p for p in stage.iterdir() if p.is_dir())
    yaml_name = "function-gpu.yaml" if "gpu" in script else "function.yaml"
    assert len(folders) == len(list(FUNCTIONS.rglob(yaml_name)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = ("import sys, main, common; "
             "assert callable(main.handler) and callable(main.init_context); "
             "assert common.__file__.startswith(sys.argv[1]), common.__file__")
    for folder in folders:
        assert (folder / "common" / "doors" / "nuclio.py").is_file() and (folder / yaml_name).is_file()
        ran = subprocess.run([sys.executable, "-c", check, str(folder)], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, f"{folder.name}: {ran.stderr[-2000:]}"


def test_a_tracker_without_redis_is_deployed_with_a_warning():
    nanotrack = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack"
    result = deploy("deploy_cpu.sh", "--dry-run", nanotrack)
    assert result.returncode == 0, result.stderr
    assert "onnx-honglinchu-nanotrack is a tracker and CVAT_FUNCTIONS_REDIS_HOST is not set" in result.stderr
    result = deploy("deploy_cpu.sh", "--dry-run", nanotrack, env={"CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk"})
    assert result.returncode == 0 and "is a tracker" not in result.stderr
    assert "--env CVAT_FUNCTIONS_REDIS_HOST=cvat_redis_ondisk" in result.stdout + result.stderr
    cluster = {"CVAT_FUNCTIONS_REDIS_CLUSTER": "redis-0:6379,redis-1:6379", "LABEL_STUDIO_URL": "http://ls:8080"}
    result = deploy("deploy_cpu.sh", "--dry-run", nanotrack, env=cluster)
    assert result.returncode == 0 and "is a tracker" not in result.stderr
    assert "--env CVAT_FUNCTIONS_REDIS_CLUSTER=redis-0:6379" in result.stdout  # the dry run quotes the comma
    assert "--env LABEL_STUDIO_URL=http://ls:8080" in result.stdout

"""What an NVIDIA driver must be for a CUDA runtime (standard library only: the deploy checks use it too)."""

from __future__ import annotations

import shutil
import subprocess

# The oldest NVIDIA driver branch each CUDA major version runs on (NVIDIA's CUDA compatibility table, Linux)
DRIVER_FLOORS = {11: 450, 12: 525, 13: 580}


def nvidia_smi() -> tuple[str, str] | None:
    """(driver version, GPU name) of the first GPU ``nvidia-smi`` reports; None when no driver answers here."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[0].strip():
        return None
    driver, _, name = lines[0].partition(",")
    return driver.strip(), name.strip()


def driver_floor(cuda_version: str | None) -> int | None:
    """The oldest driver branch for ``cuda_version`` (``"13.0"``), None when unknown."""
    major = (cuda_version or "").split(".")[0]
    return DRIVER_FLOORS.get(int(major)) if major.isdigit() else None


def driver_too_old(driver: str, cuda_version: str | None) -> bool:
    floor = driver_floor(cuda_version)
    branch = driver.split(".")[0]
    return floor is not None and branch.isdigit() and int(branch) < floor

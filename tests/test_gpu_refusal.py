"""No silent CPU: every function-gpu.yaml served where its GPU is missing refuses to start, naming what is
missing, and the dashboard shows that message; ALLOW_CPU_FALLBACK=1 serves it on the CPU with a warning.

The GPU is hidden with ``CUDA_VISIBLE_DEVICES=""`` so that this holds on a CUDA machine too."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, dashboard_url, detect, b64_file, http
from tools.config import find_configs
from tools.harness import Harness
from tools.replies import random_weights

GPU_CONFIGS = find_configs([ROOT / "functions"], gpu=True)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("ALLOW_CPU_FALLBACK", raising=False)
    monkeypatch.delenv("TORCH_DEVICE", raising=False)  # the yaml's value, as deployed
    monkeypatch.delenv("ORT_PROVIDERS", raising=False)


def test_every_gpu_yaml_refuses_to_start_without_its_gpu(no_gpu):
    for config in GPU_CONFIGS:
        config.worker_limit = 1
    harness = Harness(GPU_CONFIGS, port=0)
    harness.start()
    try:
        assert not harness.wait_ready(600)
        _, _, functions = http("GET", dashboard_url(harness) + "/api/functions")
        for config in GPU_CONFIGS:
            status = functions[config.name]["status"]
            assert status["state"] == "error", (config.name, status)
            message = status["message"]
            assert "is set to run on a GPU, but" in message and "ALLOW_CPU_FALLBACK=1" in message, message
            assert ("sees no CUDA device" in message or "has no CUDAExecutionProvider" in message
                    or "CPU build" in message), message
    finally:
        harness.stop()


@pytest.mark.parametrize("path", ["onnx/megvii/yolox", "pytorch/torchvision/fasterrcnn"])
def test_allow_cpu_fallback_serves_on_the_cpu_with_a_warning(no_gpu, models_dir, data_dir, monkeypatch, capfd,
                                                            tmp_path, path):
    folder = ROOT / "functions" / path / "nuclio"
    for name, value in random_weights(folder, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ALLOW_CPU_FALLBACK", "1")
    [config] = find_configs([folder], gpu=True)
    harness = Harness([config], port=0)
    harness.start()
    try:
        assert harness.wait_ready(300), harness.functions[config.name].message
        reply = detect(harness, b64_file(data_dir / "images" / "dog.jpg"), threshold=0.3)
        assert isinstance(reply, list)
    finally:
        harness.stop()
    assert "serving on the CPU, as ALLOW_CPU_FALLBACK=1 allows" in capfd.readouterr().err


def test_the_driver_floor_of_the_cuda_runtime_is_named(tmp_path, monkeypatch):
    """With a driver older than the CUDA runtime needs (an nvidia-smi that reports 550 for a CUDA 13 build),
    the message names both; with a recent one, none is blamed."""
    from common.runtime.backends import driver_problem

    fake = tmp_path / "nvidia-smi"
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    fake.write_text("#!/bin/sh\necho 550.54.15\n")
    fake.chmod(0o755)
    assert "NVIDIA driver 550.54.15 is too old for CUDA 13.0, which needs the 580 series" in driver_problem("13.0")
    assert "too old" not in driver_problem("12.8")
    fake.write_text("#!/bin/sh\nexit 9\n")  # a driver that does not answer
    assert "no NVIDIA driver is visible" in driver_problem("13.0")

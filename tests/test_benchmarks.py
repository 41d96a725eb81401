"""The benchmarks a GPU session runs (tools/fn bench-tracker, bench-exactness) work end to end, on a small
random SAM 2.1 and two frames, and what they report holds: both paths of the frame preparation agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FN = [sys.executable, "-m", "tools.cli"]
TRACKER = ROOT / "functions" / "pytorch" / "facebookresearch" / "sam2-tracker" / "nuclio"


@pytest.fixture(scope="module")
def small_sam2(sam2_checkpoint, data_dir):
    from tools.random_weights import SMALL_SAM2_OVERRIDES

    overrides = " ".join([*SMALL_SAM2_OVERRIDES, "++model.image_size=512"])
    return {**os.environ, "MODEL_PATH": str(sam2_checkpoint), "SAM2_OVERRIDES": overrides,
            "TEST_DATA_DIR": str(data_dir)}


def run(arguments: list[str], env: dict) -> str:
    done = subprocess.run(FN + arguments, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_bench_tracker_sets_the_package_call_beside_ours_for_each_object_count(small_sam2):
    out = run(["bench-tracker", str(TRACKER), "--frames", "2", "--objects", "1,2", "--device", "cpu"], small_sam2)
    assert "device cpu" in out
    for objects in ("1 object:", "2 objects:"):
        section = out.split(objects)[1]
        for label in ("sam2 SAM2VideoPredictor.propagate_in_video", "ours, state in Redis",
                      "ours, state in process memory"):
            assert re.search(re.escape(label) + r"\s+median\s+[\d.]+ ms per frame .* = [\d.]+x", section), section


def test_bench_exactness_finds_the_device_path_next_to_the_packages(small_sam2):
    out = run(["bench-exactness", str(TRACKER), "--frames", "2", "--device", "cpu"], small_sam2)
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+)\s+vs package: mask IoU median [\d.]+, "
                                                               r"lowest ([\d.]+)", out, re.MULTILINE)}
    assert set(found) == {"device", "device+bfloat16"}, out
    assert found["device"] > 0.99, out


def test_bench_sets_label_studios_predict_beside_cvats_call(models_dir, data_dir):
    out = run(["bench", str(ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"), "--label-studio",
               "--image", str(data_dir / "images" / "dog.jpg"), "-n", "3"], {**os.environ, "MODELS_DIR": str(models_dir)})
    for stage in ("cvat", "label-studio"):
        assert re.search(rf"^{stage}\s+median\s+[\d.]+ ms", out, re.MULTILINE), out
    assert re.search(r"Label Studio /predict / CVAT call = [\d.]+", out), out


def test_bench_state_reads_redis_memory_per_track_and_step(models_dir, data_dir):
    folder = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
    out = run(["bench-state", str(folder), "--steps", "3"], {**os.environ, "MODELS_DIR": str(models_dir),
                                                             "TEST_DATA_DIR": str(data_dir)})
    found = re.search(r"onnx-honglinchu-nanotrack\s+tracker\s+start\s+([\d.]+) KiB\s+per step\s+([\d.]+) KiB\s+"
                      r"track of 3 steps\s+([\d.]+) KiB", out)
    assert found, out
    start, step, track = map(float, found.groups())
    assert start > 10 and 0 < step < 2 and track == pytest.approx(start + 3 * step, abs=0.2)  # template + states


def test_bench_state_sets_a_step_on_the_cluster_beside_one_on_a_single_redis(models_dir, data_dir):
    folder = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
    out = run(["bench-state", str(folder), "--cluster-latency", "--steps", "3"],
              {**os.environ, "MODELS_DIR": str(models_dir), "TEST_DATA_DIR": str(data_dir)})
    assert re.search(r"onnx-honglinchu-nanotrack\s+step median: single Redis [\d.]+ ms, Redis Cluster [\d.]+ ms; "
                     r"cluster / single = [\d.]+", out), out

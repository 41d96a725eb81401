"""Inference backends behind one small interface: ONNX Runtime, OpenVINO, and a torch device.

Environment:

- ``INFERENCE_BACKEND``: ``openvino`` or ``onnxruntime`` for ONNX models (a function's yaml sets it).
- ``ORT_PROVIDERS``: comma-separated ONNX Runtime providers; default: CUDA (when installed) then CPU.
- ``NUM_THREADS``: intra-op threads for the backend (default: the library's own choice).
- ``OPENVINO_DEVICE``: OpenVINO device name (default ``CPU``).
- ``OPENVINO_PRECISION``: OpenVINO inference precision (default ``f32``; ``bf16``/``f16`` trade accuracy).
- ``TORCH_DEVICE``: ``cpu``, ``cuda`` or ``cuda:N`` (default: CUDA when available).
- ``ALLOW_CPU_FALLBACK``: ``1`` lets a function whose settings ask for a GPU (``TORCH_DEVICE=cuda``,
  ``ORT_PROVIDERS`` naming CUDA) serve on the CPU, with a warning, when it gets none; otherwise it refuses to
  start, naming what is missing (:func:`require_gpu`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from common.core.gpu import driver_floor, driver_too_old, nvidia_smi
from common.core.settings import env_bool, env_int, env_str

BACKENDS = ("openvino", "onnxruntime")
CUDA = "CUDAExecutionProvider"


class DeviceError(RuntimeError):
    """The function's settings ask for a GPU this worker does not have."""


def cpu_fallback() -> bool:
    return env_bool("ALLOW_CPU_FALLBACK", False)


NO_DRIVER = ("no NVIDIA driver is visible (no working nvidia-smi): run the container with the NVIDIA container "
             "runtime (Docker: --gpus all; Nuclio: resources.limits nvidia.com/gpu) on a host with a driver")


def driver_problem(cuda_version: str | None) -> str:
    """What the NVIDIA driver lacks for ``cuda_version`` (the runtime a package was built for)."""
    found = nvidia_smi()
    if found is None:
        return NO_DRIVER
    driver = found[0]
    if driver_too_old(driver, cuda_version):
        return (f"NVIDIA driver {driver} is too old for CUDA {cuda_version}, which needs the "
                f"{driver_floor(cuda_version)} series or newer: update the host's driver or build the image with "
                "wheels for an older CUDA")
    return f"NVIDIA driver {driver} is visible"


def torch_gpu_problems(device: str) -> list[str]:
    import torch

    built = torch.version.cuda
    if built is None:
        return [f"torch {torch.__version__} is a CPU build (install a CUDA build of torch)"]
    if not torch.cuda.is_available():
        return [f"torch {torch.__version__} (built for CUDA {built}) sees no CUDA device; {driver_problem(built)}"]
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return [f"TORCH_DEVICE={device}, but torch sees {torch.cuda.device_count()} CUDA device(s)"]
    return []


def ort_gpu_problems() -> list[str]:
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return [f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu instead of onnxruntime)"]
    return [NO_DRIVER] if nvidia_smi() is None else []


def require_gpu(warn: Callable[[str], None]) -> None:
    """When the settings ask for a GPU (``TORCH_DEVICE=cuda[:N]``, ``ORT_PROVIDERS`` naming CUDA), check that
    this worker has it: a :class:`DeviceError` naming what is missing, or, with ``ALLOW_CPU_FALLBACK=1``, a
    warning and the CPU. Runs when a model is built, before it loads anything."""
    device = (env_str("TORCH_DEVICE") or "").lower()
    problems = torch_gpu_problems(device) if device.startswith("cuda") else []
    if CUDA in explicit_providers():
        problems += ort_gpu_problems()
    if not problems:
        return
    message = "this function is set to run on a GPU, but " + "; ".join(problems)
    if not cpu_fallback():
        raise DeviceError(message + " (ALLOW_CPU_FALLBACK=1 serves on the CPU instead, far slower)")
    warn(message + "; serving on the CPU, as ALLOW_CPU_FALLBACK=1 allows (expect it to be far slower)")


def num_threads() -> int | None:
    value = env_int("NUM_THREADS", 0)
    return value if value > 0 else None


class OnnxModel(Protocol):
    """A loaded ONNX model: feed arrays by input name, get the outputs in order."""

    backend: str
    input_names: list[str]
    input_shapes: list[list[int | str | None]]

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def free_spatial_dims(path: str | Path) -> bytes:
    """An ONNX model exported at one input size, with the height and width of its inputs and outputs made free.

    For fully convolutional models (e.g. a Siamese tracker's backbone, run on 127- and 255-pixel crops).
    Intermediate shapes recorded at export are dropped; ONNX Runtime infers them again.
    """
    import onnx

    model = onnx.load(str(path))
    for i, value in enumerate(list(model.graph.input) + list(model.graph.output)):
        dims = value.type.tensor_type.shape.dim
        for axis, name in ((2, "height"), (3, "width")):
            if len(dims) == 4:
                dims[axis].ClearField("dim_value")
                dims[axis].dim_param = f"{name}{i}"
    del model.graph.value_info[:]
    return model.SerializeToString()


class OrtModel:
    backend = "onnxruntime"

    def __init__(self, path: Path | bytes, providers: Sequence[str] | None = None, threads: int | None = None):
        """``path`` is an ONNX file or a serialised model."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning after a run: the spinning would take the cores from the
        # server that is still receiving this request's reply and the next request
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        model = path if isinstance(path, bytes) else str(path)
        wanted = list(providers or ort_providers())
        self.session = ort.InferenceSession(model, options, providers=wanted)
        self.providers = self.session.get_providers()
        if CUDA in wanted and CUDA not in self.providers and not cpu_fallback():  # ONNX Runtime fell back silently
            raise DeviceError(f"ONNX Runtime could not start its {CUDA} ({driver_problem(None)}); "
                              "ALLOW_CPU_FALLBACK=1 serves on the CPU instead, far slower")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_shapes = [list(i.shape) for i in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, inputs)


def explicit_providers() -> list[str]:
    return [p.strip() for p in (env_str("ORT_PROVIDERS") or "").split(",") if p.strip()]


def ort_providers() -> list[str]:
    """``ORT_PROVIDERS`` if set (with ``ALLOW_CPU_FALLBACK=1``, those this onnxruntime has, then the CPU), else
    CUDA (when this onnxruntime has it) followed by CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    explicit = explicit_providers()
    if explicit and not cpu_fallback():
        return explicit
    if explicit:
        kept = [p for p in explicit if p in available]
        return kept + ([] if "CPUExecutionProvider" in kept else ["CPUExecutionProvider"])
    return [p for p in (CUDA, "CPUExecutionProvider") if p in available]


class OpenVinoModel:
    backend = "openvino"

    def __init__(self, path: Path, device: str | None = None, threads: int | None = None):
        import openvino as ov

        core = ov.Core()
        # f32 by default: on CPUs with bf16 support OpenVINO would otherwise run in bf16 and move boxes.
        config = {"PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": env_str("OPENVINO_PRECISION", "f32")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.device = device or env_str("OPENVINO_DEVICE", "CPU")
        self.compiled = core.compile_model(core.read_model(str(path)), self.device, config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.input_shapes = [
            [d.get_length() if d.is_static else None for d in i.get_partial_shape()] for i in self.compiled.inputs
        ]

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(inputs)
        return [np.asarray(result[out]) for out in self.compiled.outputs]


def load_onnx(path: str | Path, backend: str | None = None, threads: int | None = None) -> OnnxModel:
    """Load an ONNX file on ``backend`` (default ``INFERENCE_BACKEND``, else onnxruntime)."""
    backend = (backend or env_str("INFERENCE_BACKEND", "onnxruntime")).strip().lower()
    threads = threads if threads is not None else num_threads()
    if backend == "openvino":
        return OpenVinoModel(Path(path), threads=threads)
    if backend == "onnxruntime":
        return OrtModel(Path(path), threads=threads)
    raise ValueError(f"INFERENCE_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")


def torch_device(preferred: str | None = None):
    """A torch device: ``preferred``, else ``TORCH_DEVICE``, else CUDA when available, else CPU.

    ``NUM_THREADS`` also sets torch's intra-op thread count.
    """
    import torch

    threads = num_threads()
    if threads:
        torch.set_num_threads(threads)
    name = preferred or env_str("TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available() and cpu_fallback():  # require_gpu warned
        name = "cpu"
    return torch.device(name)


def load_torch_checkpoint(model, path: str | Path, expected: str):
    """Load a state dict into ``model`` (``torch.load`` with ``weights_only=True``: tensors only, no pickled
    code). A file that does not fit raises :class:`~common.runtime.weights.WeightsError` naming ``expected``."""
    import torch

    from common.runtime.weights import WeightsError

    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise WeightsError(f"{path} is not a {expected} checkpoint ({str(exc).splitlines()[0]})") from None
    return model


def describe(framework: str) -> dict[str, str]:
    """What runs a function of ``framework`` (its yaml's ``framework`` annotation) in this process, for people:
    ``{"backend": "PyTorch 2.x", "device": "cuda:0 (NVIDIA H100)"}``; called after the model has loaded."""
    if framework == "pytorch":
        import torch

        device = str(torch_device())
        if device.startswith("cuda"):
            device += f" ({torch.cuda.get_device_name(torch.device(device))})"
        return {"backend": f"PyTorch {torch.__version__}", "device": device}
    if framework == "onnx":
        if env_str("INFERENCE_BACKEND", "onnxruntime").strip().lower() == "openvino":
            import openvino

            return {"backend": f"OpenVINO {openvino.__version__}", "device": env_str("OPENVINO_DEVICE", "CPU")}
        import onnxruntime

        providers = ort_providers()
        return {"backend": f"ONNX Runtime {onnxruntime.__version__}",
                "device": "cuda" if providers and providers[0] == CUDA else "cpu"}
    if framework == "opencv":
        import cv2

        return {"backend": f"OpenCV {cv2.__version__}", "device": "cpu"}
    return {"backend": framework or "unknown", "device": "unknown"}

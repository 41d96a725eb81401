"""Every function folder conforms: its kind is its yamls', its model subclasses its kind's base class and knows
nothing of CVAT's wire format, its settings are read from the environment as the README documents, and a reply
through the CVAT door passes the protocol checks of ../shared/docs/cvat-protocol.md."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from common.core.labels import read_config
from common.core.settings import Settings
from common.models.base import Detector, Interactor
from common.models.folder import load_module
from common.models.reid import Reidentifier
from common.models.tracking import Tracker
from tests.conftest import ROOT, b64_file, documented_variables
from tests.protocol import check_detector_reply, check_interactor_reply, check_reid_reply, check_tracker_reply
from tests.segmenters import door_of

FOLDERS = sorted(path.parent for path in (ROOT / "functions").rglob("function.yaml"))
IDS = [folder.parent.name for folder in FOLDERS]
BASES = {"detector": Detector, "interactor": Interactor, "tracker": Tracker, "reid": Reidentifier}
ENTRY = ("from common.doors.nuclio import handle, init\nfrom model_handler import ModelHandler\n"
         "def init_context(context): init(context, ModelHandler)\n"
         "def handler(context, event): return handle(context, event)\n")


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_kind_base_class_entry_and_no_wire_format_in_the_model(folder):
    model = load_module(folder).ModelHandler
    for name in ("function.yaml", "function-gpu.yaml"):
        if (folder / name).exists():
            assert read_config(folder / name)["metadata"]["annotations"]["type"] == model.kind, name
    assert issubclass(model, BASES[model.kind])
    assert (folder / "main.py").read_text() == ENTRY
    source = (folder / "model_handler.py").read_text()
    assert "nuclio_sdk" not in source and "common.doors" not in source, "model code knows no door"
    assert model.function_dir == folder


def test_only_the_nuclio_entry_imports_nuclio_sdk():
    importers = sorted(path.relative_to(ROOT).as_posix() for path in [*(ROOT / "common").rglob("*.py"),
                                                                       *(ROOT / "functions").rglob("*.py")]
                       if re.search(r"^\s*(import|from) nuclio_sdk", path.read_text(), re.M))
    assert importers == ["common/doors/nuclio.py"]


def settings_classes() -> list[type[Settings]]:
    return sorted({load_module(folder).ModelHandler.settings_class for folder in FOLDERS}, key=lambda c: c.__name__)


@pytest.mark.parametrize("settings_class", settings_classes(), ids=lambda c: c.__name__)
def test_settings_are_read_from_the_environment_as_documented(settings_class):
    documented = documented_variables()
    defaults = settings_class()
    assert set(settings_class.variables()) <= documented, "every setting is in the README's table"
    for variable, name in settings_class.variables().items():
        default = getattr(defaults, name)
        value, expected = {float: ("0.375", 0.375), int: ("7", 7), str: ("other", "other"),
                           bool: ("0" if default else "1", not default)}[type(default)]
        try:
            found = settings_class.from_env({variable: value})
        except ValueError as exc:  # a setting with a fixed set of values refuses others, naming itself
            assert isinstance(default, str) and variable in str(exc)
        else:
            assert getattr(found, name) == expected
        assert getattr(settings_class.from_env({variable: " "}), name) == default  # empty means unset
        if not isinstance(default, str):
            with pytest.raises(ValueError, match=variable):
                settings_class.from_env({variable: "lots"})
    assert dataclasses.is_dataclass(defaults) and settings_class.__dataclass_params__.frozen


def test_a_gpu_served_function_reads_its_gpu_yaml(tmp_path, monkeypatch):
    folder = ROOT / "functions" / "onnx" / "honglinchu" / "nanotrack" / "nuclio"
    model = load_module(folder).ModelHandler
    monkeypatch.setenv("FUNCTION_YAML", "function-gpu.yaml")
    probe = model.__new__(model)
    assert probe.config == read_config(folder / "function-gpu.yaml")
    monkeypatch.setenv("FUNCTION_YAML", "function.yaml")
    wrong = type("Wrong", (Detector,), {"function_dir": folder})
    with pytest.raises(RuntimeError, match="declares annotations.type 'tracker' but Wrong is a detector"):
        wrong.__new__(wrong).config


# ---------------------------------------------------------------- replies through the CVAT door


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_a_reply_through_the_cvat_door_passes_the_protocol_checks(folder, models_dir, data_dir, redis_server,
                                                                   tmp_path):
    from tools.replies import random_weights

    env = {**redis_server.env(), **random_weights(folder, tmp_path)}
    dog = b64_file(data_dir / "images" / "dog.jpg")
    width, height = 768, 576
    with door_of(folder, **env) as door:
        model = door.model
        if model.kind == "detector":
            reply = door({"image": dog, "threshold": 0.05}).payload
            check_detector_reply(reply, model.labels, width, height, 0.05)
        elif model.kind == "interactor":
            for body in ({"pos_points": [[380, 300]], "neg_points": []}, {"pos_points": [], "obj_bbox": [[120, 200], [330, 540]]}):
                check_interactor_reply(door({"image": dog, **body}).payload, width, height)
        elif model.kind == "tracker":
            types = model.supported_shape_types
            for legacy in (True, False):
                shapes = [[280, 160, 420, 330]] if legacy else [{"type": "rectangle", "points": [280, 160, 420, 330]}]
                reply = door({"image": dog, "shapes": shapes, "states": []}).payload
                check_tracker_reply(reply, 1, legacy, types)
                reply = door({"image": dog, "shapes": [None], "states": reply["states"]}).payload
                check_tracker_reply(reply, 1, legacy, types)
        else:
            boxes = [{"type": "rectangle", "points": [120, 200, 330, 540], "label_id": 1},
                     {"type": "rectangle", "points": [460, 70, 690, 170], "label_id": 2}]
            reply = door({"image0": dog, "image1": dog, "boxes0": boxes, "boxes1": boxes[::-1]}).payload
            check_reid_reply(reply, 2, 2)
            assert reply == [1, 0]


def test_a_new_door_is_a_small_converter_from_our_results(models_dir, data_dir):
    """A toy door, as a new platform's would be: our Image in, Detections out, its own format, no code per
    function; what it answers agrees with the CVAT door's reply."""
    from common.core.image import Image
    from common.models.folder import load_model

    class ToyDoor:
        def __init__(self, folder: Path):
            self.model = load_model(folder)

        def __call__(self, path: Path, threshold: float) -> list[dict]:
            found = self.model.detect(Image.from_bytes(path.read_bytes()), threshold)
            return [{"class": self.model.labels.label_of(c).name, "xyxy": box.tolist(), "score": float(s)}
                    for box, c, s in zip(found.xyxy, found.class_id, found.score)]

    folder = ROOT / "functions" / "onnx" / "megvii" / "yolox" / "nuclio"
    toy = ToyDoor(folder)(data_dir / "images" / "dog.jpg", 0.3)
    with door_of(folder) as door:
        cvat = door({"image": b64_file(data_dir / "images" / "dog.jpg"), "threshold": 0.3}).payload
    assert len(toy) == len(cvat) >= 3
    for ours, theirs in zip(toy, cvat):
        assert ours["class"] == theirs["label"] and f"{ours['score']:.4f}" == theirs["confidence"]
        assert [round(v, 2) for v in ours["xyxy"]] == theirs["points"]


def imported_modules(path: Path) -> set[str]:
    """The absolute imports of a Python file (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


LAYERS = {"core": {"core"}, "runtime": {"core", "runtime"}, "models": {"core", "runtime", "models"}}


def door_of_module(module: str) -> str | None:
    """The door a ``common.doors`` module belongs to (``cvat`` for the package's modules), else None."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["common", "doors"] else None


def test_layers_import_only_downwards_and_doors_only_themselves():
    """core < runtime < models < doors; model code (functions' folders included) imports no door; a door
    imports no other door's modules, except the Nuclio entry, which routes to CVAT's, V7's and Label Studio's doors."""
    problems = []
    model_code = [p for p in sorted((ROOT / "functions").rglob("*.py")) if p.name != "main.py"]  # main: the entry
    for path in sorted((ROOT / "common").rglob("*.py")) + model_code:
        where = path.relative_to(ROOT).as_posix()
        imported = {m for m in imported_modules(path) if m.startswith("common.")}
        layer = where.split("/")[1] if where.startswith("common/") else "models"
        if layer in LAYERS:
            problems += [f"{where} imports {m}" for m in imported if m.split(".")[1] not in LAYERS[layer]]
        elif layer == "doors":
            own = door_of_module(where.removesuffix(".py").replace("/", "."))
            allowed = {own, "cvat", "v7", "label_studio"} if own == "nuclio" else {own}
            problems += [f"{where} imports {m}" for m in imported
                         if door_of_module(m) is not None and door_of_module(m) not in allowed]
    assert not problems, problems

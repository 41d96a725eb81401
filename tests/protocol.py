"""A checker for detector replies, written from ../shared/docs/cvat-protocol.md (section 4.2)."""

from __future__ import annotations

from common.core.labels import Labels

MIN_POINTS = {"rectangle": 4, "polygon": 6, "polyline": 4, "points": 2}


def _numbers(values, what: str) -> None:
    assert isinstance(values, list), f"{what} must be a list"
    for v in values:
        assert type(v) in (int, float), f"{what} holds {v!r}: only int and float pass CVAT's serializer"


def check_mask(values, width: int, height: int) -> None:
    """Detector mask layout: bbox-region pixels (0 and one other constant) then inclusive [xtl, ytl, xbr, ybr]."""
    _numbers(values, "mask")
    assert len(values) >= 5
    xtl, ytl, xbr, ybr = values[-4:]
    assert all(isinstance(v, int) for v in values[-4:]), "mask bbox values must be integers"
    assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height, values[-4:]
    assert len(values) - 4 == (xbr - xtl + 1) * (ybr - ytl + 1), "mask length does not match its bbox"
    assert set(values[:-4]) <= {0, 255} and 255 in values[:-4]


def check_attributes(shape: dict, label) -> None:
    declared = {a.name for a in label.attributes}
    for attribute in shape.get("attributes", []):
        assert attribute["name"] in declared, f"attribute {attribute['name']!r} is not declared in the spec"
        assert isinstance(attribute["value"], str), "attribute values are strings"


def check_detector_reply(reply, labels: Labels, width: int, height: int, threshold: float = 0.0) -> None:
    """Every shape valid for CVAT: label from the spec with its declared type, numbers, layouts, strings."""
    assert isinstance(reply, list)
    for shape in reply:
        label = labels.by_name.get(shape["label"])
        assert label is not None, f"label {shape['label']!r} is not in the spec"
        kind = shape["type"]
        assert label.type in ("any", kind), f"{label.name} is declared {label.type}, got {kind}"
        if "confidence" in shape:
            assert isinstance(shape["confidence"], str) and float(shape["confidence"]) >= threshold
        check_attributes(shape, label)
        if kind == "mask":
            check_mask(shape["mask"], width, height)
            if "points" in shape:
                _numbers(shape["points"], "points")
                assert len(shape["points"]) >= 6 and len(shape["points"]) % 2 == 0
        elif kind == "skeleton":
            names = [e["label"] for e in shape["elements"]]
            assert names == [s.name for s in label.sublabels], "one element per sublabel, in spec order"
            for element in shape["elements"]:
                assert element["type"] == "points" and isinstance(element["outside"], bool)
                _numbers(element["points"], "element points")
                x, y = element["points"]
                assert 0 <= x <= width and 0 <= y <= height
        else:
            _numbers(shape["points"], "points")
            assert len(shape["points"]) >= MIN_POINTS[kind] and len(shape["points"]) % 2 == 0
            assert all(0 <= x <= width for x in shape["points"][0::2])
            assert all(0 <= y <= height for y in shape["points"][1::2])


def check_interactor_reply(reply, width: int, height: int) -> None:
    """The compact interactor reply (4.3, new form): mask shapes of RLE + an inclusive box inside the image,
    attributes with a numeric ``spec_id`` and a string value; or the legacy full-frame ``mask``."""
    assert isinstance(reply, dict)
    if "mask" in reply:
        assert len(reply["mask"]) == height and all(len(row) == width for row in reply["mask"])
        return
    for shape in reply["shapes"]:
        assert shape["type"] == "mask"
        points = shape["points"]
        assert all(type(v) is int for v in points), "RLE counts and the box are integers"
        xtl, ytl, xbr, ybr = points[-4:]
        assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height
        assert sum(points[:-4]) == (xbr - xtl + 1) * (ybr - ytl + 1), "the runs cover the box"
        for attribute in shape.get("attributes", []):
            assert isinstance(attribute["spec_id"], int) and isinstance(attribute["value"], str)


def check_tracker_reply(reply, objects: int, legacy: bool, shape_types: tuple[str, ...]) -> None:
    """4.5.2: ``shapes`` and ``states`` pair with the request's objects; legacy shapes are bare point lists,
    declared ones ``{"type", "points"}`` of a supported type; no shape is null; states are JSON strings."""
    assert len(reply["shapes"]) == len(reply["states"]) == objects
    for shape in reply["shapes"]:
        assert shape is not None, "a null shape breaks CVAT's UI"
        points = shape if legacy else shape["points"]
        if not legacy:
            assert shape["type"] in shape_types
        _numbers(points, "tracker points")
        assert len(points) >= 4
    assert all(isinstance(state, str) for state in reply["states"])


def check_reid_reply(reply, boxes0: int, boxes1: int) -> None:
    """4.4: one int per ``boxes0`` item, -1 or an index of ``boxes1``, no index twice."""
    assert isinstance(reply, list) and len(reply) == boxes0
    assert all(type(i) is int and -1 <= i < boxes1 for i in reply)
    matched = [i for i in reply if i >= 0]
    assert len(matched) == len(set(matched))

"""A function's Nuclio configuration (``function.yaml`` / ``function-gpu.yaml``), parsed once into one type
that the model, the doors, the harness and the linter share: names, annotations, the HTTP trigger's limits,
``spec.env``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from common.core.labels import read_config

DEFAULT_BODY_LIMIT = 4 * 1024 * 1024  # Nuclio's HTTP trigger default when maxRequestBodySize is unset
DEFAULT_AVAILABILITY_TIMEOUT = 10.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float | None:
    """A Go duration string ("30s", "1m30s", "500ms") or a number of seconds; None or "" means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (use a Go duration such as 30s or 1m30s)")
    return total


@dataclass
class FunctionConfig:
    """One function folder with its parsed Nuclio configuration."""

    path: Path  # the yaml file
    config: dict = field(repr=False)
    worker_limit: int | None = None  # set by tools/fn serve when a tracker must keep its state in one process

    @classmethod
    def read(cls, path: Path) -> "FunctionConfig":
        return cls(Path(path), read_config(Path(path)))

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return str(self.config["metadata"]["name"])

    @property
    def metadata(self) -> dict:
        return self.config.get("metadata") or {}

    @property
    def spec(self) -> dict:
        return self.config.get("spec") or {}

    @property
    def annotations(self) -> dict:
        return self.metadata.get("annotations") or {}

    @property
    def kind(self) -> str:
        return str(self.annotations.get("type", ""))

    @property
    def handler(self) -> str:
        return str(self.spec.get("handler") or "main:handler")

    @property
    def http_trigger(self) -> dict:
        for trigger in (self.spec.get("triggers") or {}).values():
            if isinstance(trigger, dict) and trigger.get("kind") == "http":
                return trigger
        return {}

    @property
    def workers(self) -> int:
        trigger = self.http_trigger
        workers = max(1, int(trigger.get("numWorkers") or trigger.get("maxWorkers") or 1))
        return min(workers, self.worker_limit) if self.worker_limit else workers

    @property
    def event_timeout(self) -> float | None:
        return parse_duration(self.spec.get("eventTimeout"))

    @property
    def body_limit(self) -> int:
        attributes = self.http_trigger.get("attributes") or {}
        return int(attributes.get("maxRequestBodySize") or DEFAULT_BODY_LIMIT)

    @property
    def availability_timeout(self) -> float:
        value = self.http_trigger.get("workerAvailabilityTimeoutMilliseconds")
        return DEFAULT_AVAILABILITY_TIMEOUT if value is None else float(value) / 1000.0

    @property
    def port(self) -> int | None:
        attributes = self.http_trigger.get("attributes") or {}
        return int(attributes["port"]) if attributes.get("port") else None

    @property
    def env(self) -> dict[str, str]:
        out = {}
        for item in self.spec.get("env") or []:
            if isinstance(item, dict) and "name" in item and "value" in item:
                out[str(item["name"])] = str(item["value"])
        return out

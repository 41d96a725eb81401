"""Operator settings from the environment, read one way everywhere: an empty value means unset.

A value that does not parse is an error naming the variable (a function then reports it from
``init_context`` instead of serving with a setting nobody asked for). Variables come from ``os.environ``,
or, inside :func:`environment`, from the mapping it was given: how a door that takes settings from its
platform (the CVAT SDK's ``-p`` parameters, a Dataloop model's configuration) builds a model without
writing ``os.environ``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping, TypeVar, get_type_hints

T = TypeVar("T")
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environment", default=None)


def current_env() -> Mapping[str, str]:
    """Where settings are read from here: the mapping of the enclosing :func:`environment`, else os.environ."""
    env = _ENVIRONMENT.get()
    return os.environ if env is None else env


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """Read every setting from ``env`` inside the block (this thread or task only); os.environ is untouched."""
    token = _ENVIRONMENT.set(env)
    try:
        yield env
    finally:
        _ENVIRONMENT.reset(token)


def env_str(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The variable's value without surrounding blanks; ``default`` when unset or empty."""
    value = ((current_env() if env is None else env).get(name) or "").strip()
    return value or default


def _parsed(name: str, default: T, parse: Callable[[str], T], what: str, env: Mapping[str, str]) -> T:
    value = env_str(name, env=env)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not {what}") from None


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    return _parsed(name, default, float, "a number", env)


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    return _parsed(name, default, int, "a whole number", env)


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    def parse(value: str) -> bool:
        lowered = value.lower()
        if lowered in TRUE or lowered in FALSE:
            return lowered in TRUE
        raise ValueError(value)

    return _parsed(name, default, parse, "true or false (1/0, yes/no, on/off)", env)


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
READERS = {"float": env_float, "int": env_int, "bool": env_bool, "str": env_str}


def setting(variable: str, default: Any) -> Any:
    """A settings field read from the environment variable ``variable`` (its type is the field's annotation)."""
    return field(default=default, metadata={"env": variable})


@dataclass(frozen=True)
class Settings:
    """A function's settings: a frozen dataclass whose fields are :func:`setting`\\ s, read once per worker.

    ``from_env`` reads every field from its variable with the reader of its type (empty means unset);
    ``variables`` names them (the README's table must list each)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        types = get_type_hints(cls)
        values = {}
        for item in fields(cls):
            variable = item.metadata.get("env")
            if variable:
                kind = types[item.name]
                reader = READERS[getattr(kind, "__name__", "str") if kind in (float, int, bool, str) else "str"]
                values[item.name] = reader(variable, item.default, env=env)
        return cls(**values)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Environment variable → field name."""
        return {item.metadata["env"]: item.name for item in fields(cls) if item.metadata.get("env")}


def polygon_epsilon() -> float:
    """Douglas-Peucker tolerance in pixels for mask → polygon (``POLYGON_EPSILON``, default 1.0; 0 keeps all)."""
    return env_float("POLYGON_EPSILON", 1.0)

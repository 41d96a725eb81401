"""Operator settings from the environment, read one way everywhere: an empty value means unset.

A value that does not parse is an error naming the variable (a function then reports it from
``init_context`` instead of serving with a setting nobody asked for).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")


def env_str(name: str, default: str | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """The variable's value without surrounding blanks; ``default`` when unset or empty."""
    value = (env.get(name) or "").strip()
    return value or default


def _parsed(name: str, default: T, parse: Callable[[str], T], what: str, env: Mapping[str, str]) -> T:
    value = env_str(name, env=env)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not {what}") from None


def env_float(name: str, default: float, env: Mapping[str, str] = os.environ) -> float:
    return _parsed(name, default, float, "a number", env)


def env_int(name: str, default: int, env: Mapping[str, str] = os.environ) -> int:
    return _parsed(name, default, int, "a whole number", env)

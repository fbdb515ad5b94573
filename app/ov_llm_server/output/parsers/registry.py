"""Tool-call formats by name: each format is one module that registers itself here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .base import ToolFormat

_FORMATS: dict[str, type[ToolFormat]] = {}
F = TypeVar("F", bound=type[ToolFormat])

# For templates without a tool format of their own: free answers are read as Hermes (the
# most common format), forced calls are written as plain JSON (natural to any model).
DEFAULT = "hermes"
FORCED_DEFAULT = "json"


def register(name: str) -> Callable[[F], F]:
    def add(cls: F) -> F:
        if name in _FORMATS:
            raise ValueError(f"tool format {name!r} is registered twice")
        cls.name = name
        _FORMATS[name] = cls
        return cls

    return add


def names() -> list[str]:
    return sorted(_FORMATS)


def get(name: str) -> type[ToolFormat]:
    return _FORMATS[name]


def detect(chat_template: str) -> str | None:
    """The format a chat template teaches its model (tried by priority); None if it has none."""
    for cls in sorted(_FORMATS.values(), key=lambda c: c.priority):
        if cls.priority and cls.detects(chat_template):
            return cls.name
    return None

"""Tool-call formats by name: each format is one module that registers itself here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .base import ToolFormat

_FORMATS: dict[str, type[ToolFormat]] = {}
F = TypeVar("F", bound=type[ToolFormat])

DEFAULT = "hermes"  # templates without a tool format of their own: Hermes tags are the most common


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


def detect(chat_template: str) -> str:
    """The format a chat template teaches its model (formats are tried by their priority)."""
    for cls in sorted(_FORMATS.values(), key=lambda c: c.priority):
        if cls.priority and cls.detects(chat_template):
            return cls.name
    return DEFAULT

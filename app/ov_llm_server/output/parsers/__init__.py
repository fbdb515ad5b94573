"""Tool-call formats: one module each, registered by name (see ``registry``)."""

from __future__ import annotations

from . import hermes, json_calls, llama3_json, mistral
from .base import ToolCatalog, ToolFormat
from .registry import DEFAULT, FORCED_DEFAULT, detect, get, names, register

__all__ = [
    "DEFAULT",
    "FORCED_DEFAULT",
    "ToolCatalog",
    "ToolFormat",
    "detect",
    "get",
    "hermes",
    "json_calls",
    "llama3_json",
    "mistral",
    "names",
    "register",
]

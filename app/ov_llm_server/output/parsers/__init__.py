"""Tool-call formats: one module each, registered by name (see ``registry``)."""

from __future__ import annotations

from . import gemma3, hermes, json_calls, llama3_json, mistral, phi4_mini, pythonic, qwen3_coder
from .base import ToolCatalog, ToolFormat
from .registry import DEFAULT, FORCED_DEFAULT, detect, get, names, register

__all__ = [
    "DEFAULT",
    "FORCED_DEFAULT",
    "ToolCatalog",
    "ToolFormat",
    "detect",
    "gemma3",
    "get",
    "hermes",
    "json_calls",
    "llama3_json",
    "mistral",
    "names",
    "phi4_mini",
    "pythonic",
    "qwen3_coder",
    "register",
]

"""Qwen3-Coder: XML calls, one ``<tool_call>`` block each, text before them allowed.

::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Its template renders past calls this way (``<function=`` and ``<parameter=`` are what
detection looks for; it holds ``<tool_call>`` too, so it is tried before Hermes). A
parameter's value is raw text, one newline either side being layout; it is typed by the
tool's schema: text for a string, else read as JSON (or a Python literal, which the template
writes for booleans), as vLLM's and llama.cpp's parsers do. A block holding Hermes JSON is
read too: Qwen models write either.

Forced calls cannot be built in this layout by the grammar (raw text values end where
``</parameter>`` first appears, which JSON strings do not express), so they are written in
Hermes' ``<tool_call>`` JSON layout, the one earlier Qwen models use.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ..deltas import OutputParser
from ..schema import AnyNode, Node, ObjNode, SchemaModel, StrNode, validate
from .base import ToolCatalog, ToolFormat
from .hermes import CLOSE, OPEN
from .pythonic import literal
from .registry import register
from .tagged import TaggedParser

FUNCTION = "<function="
PARAMETER = "<parameter="
_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>", re.DOTALL)
_PARAMETER = re.compile(r"\s*<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)


@register("qwen3_coder")
class Qwen3Coder(ToolFormat):
    priority = 9  # before hermes
    forced_as = "hermes"

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return FUNCTION in chat_template and PARAMETER in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return TaggedParser(
            catalog,
            limit,
            open_tag=OPEN,
            close_tag=CLOSE,
            decode=lambda body: decode_block(body, catalog.models),
        )


def decode_block(body: str, models: dict[str, SchemaModel]) -> list[Any] | None:
    """The calls of one block: XML functions, or one Hermes JSON call; None if neither."""
    if body.strip().startswith("{"):
        try:
            return [json.loads(body)]
        except ValueError:
            return None
    calls: list[Any] = []
    pos = 0
    for match in _FUNCTION.finditer(body):
        if match.start() != pos:
            return None
        name = match.group(1).strip()
        arguments = _parameters(match.group(2), models.get(name))
        if arguments is None:
            return None
        calls.append({"name": name, "arguments": arguments})
        pos = match.end()
    if body[pos:].strip():
        return None
    return calls or None


def _parameters(inner: str, model: SchemaModel | None) -> dict[str, Any] | None:
    arguments: dict[str, Any] = {}
    pos = 0
    for match in _PARAMETER.finditer(inner):
        key = match.group(1).strip()
        if match.start() != pos or key in arguments:
            return None
        raw = match.group(2)
        raw = raw[1:] if raw.startswith("\n") else raw
        raw = raw[:-1] if raw.endswith("\n") else raw
        arguments[key] = raw if model is None else typed(model, _property(model, key), raw)
        pos = match.end()
    return None if inner[pos:].strip() else arguments


def _property(model: SchemaModel, key: str) -> Node:
    root = model.resolve(model.root)
    if not isinstance(root, ObjNode):
        return AnyNode()
    node = dict(root.properties).get(key, root.additional)
    return AnyNode() if node is None else node


def typed(model: SchemaModel, node: Node, raw: str) -> Any:
    """``raw`` as the schema types it: as is for a string, else the JSON (or Python) value it
    spells when that fits; what fits nothing is returned so validation can say why."""
    if isinstance(model.resolve(node), StrNode):
        return raw
    value = _loose(raw)
    if validate(model, value, node) is None or validate(model, raw, node) is not None:
        return value
    return raw


def _loose(raw: str) -> Any:
    text = raw.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return literal(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return raw

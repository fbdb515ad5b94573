"""Pythonic calls: ``[get_weather(city="Paris"), get_time()]``, the whole answer.

What Llama 3.2's lightweight models (in Meta's pythonic prompt and vLLM's
``tool_chat_template_llama3.2_pythonic.jinja``) and Llama 4 write; Llama 4 may wrap the list in
``<|python_start|>`` … ``<|python_end|>``. Templates teach it with the example
``[func_name1(params_name1=params_value1, …)]``, which is what detection looks for.

The text is read with Python's own parser (``ast``), never evaluated: a call is a function name
with keyword arguments whose values are literals (strings, numbers, booleans, None, lists,
dicts; JSON's ``true``/``false``/``null`` too, which small models write), converted to a JSON
object. Anything else (positional arguments, expressions, names) makes the answer text.

A forced call cannot be written in this layout by construction: the grammar machinery lowers
a schema to JSON, and Python literals differ from it (``True``, ``None``, string escapes). So
forced calls use Llama 3's JSON layout (``llama3_json``), which Meta's own Llama 3.2 template
teaches the same models.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

from ..deltas import OutputParser
from .base import ToolCatalog, ToolFormat
from .registry import register
from .tagged import TaggedParser

MARKER = "[func_name1("
START = "<|python_start|>"
END = "<|python_end|>"
# Python's names of the constants, and JSON's, which small models write as well.
_CONSTANTS = {
    "True": True, "False": False, "None": None, "true": True, "false": False, "null": None,
}  # fmt: skip
_CALL_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_MAYBE_CALL = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?")


@register("pythonic")
class Pythonic(ToolFormat):
    priority = 29  # before llama3_json: Llama templates of this kind may hold its markers too
    forced_as = "llama3_json"

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return MARKER in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return TaggedParser(
            catalog,
            limit,
            open_tag=START,
            close_tag=END,
            decode=parse_calls,
            bare=list_start,
        )


def list_start(head: str) -> bool | None:
    """Whether an answer starting with ``head`` is a list of calls (None: not known yet)."""
    if _CALL_START.match(head):
        return True
    return None if _MAYBE_CALL.fullmatch(head) else False


def parse_calls(source: str) -> list[dict[str, Any]] | None:
    """The calls in ``source`` as ``{"name", "arguments"}``, or None if it is anything else.

    Statements may be a call, a list of calls, or ``print(…)`` of either (Gemma's
    ``tool_code`` blocks write ``print(get_weather(city="Paris"))``).
    """
    try:
        tree = ast.parse(source.strip())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    calls: list[dict[str, Any]] = []
    for statement in tree.body:
        if not isinstance(statement, ast.Expr):
            return None
        found = _calls(statement.value)
        if found is None:
            return None
        calls.extend(found)
    return calls or None


def _calls(node: ast.expr) -> list[dict[str, Any]] | None:
    if isinstance(node, ast.List | ast.Tuple):
        items = [_call(item) for item in node.elts]
        return None if any(i is None for i in items) else [i for i in items if i is not None]
    if (
        isinstance(node, ast.Call)
        and _name(node.func) == "print"
        and len(node.args) == 1
        and not node.keywords
    ):
        return _calls(node.args[0])
    call = _call(node)
    return None if call is None else [call]


def _call(node: ast.expr) -> dict[str, Any] | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _name(node.func)
    if name is None:
        return None
    arguments: dict[str, Any] = {}
    try:
        for keyword in node.keywords:
            if keyword.arg is None or keyword.arg in arguments:
                return None
            arguments[keyword.arg] = literal(keyword.value)
    except (ValueError, RecursionError):
        return None
    return {"name": name, "arguments": arguments}


def _name(node: ast.expr) -> str | None:
    """A plain or dotted name; ``default_api.get_weather`` (Gemma's habit) is the tool's."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and _name(node.value) is not None:
        return node.attr
    return None


def literal(node: ast.expr) -> Any:
    """The JSON value of a literal; ValueError for anything else."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")
        if value is None or isinstance(value, str | int | float):  # bool is an int
            return value
        raise ValueError("not a JSON literal")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        number = literal(node.operand)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError("sign of a non-number")
        return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, ast.List | ast.Tuple):
        return [literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None or not isinstance(k := literal(key), str):
                raise ValueError("a dict key that is not a string")
            out[k] = literal(item)
        return out
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    raise ValueError("not a literal")

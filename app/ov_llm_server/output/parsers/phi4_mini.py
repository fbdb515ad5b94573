"""Phi-4-mini: ``<|tool_call|>[{"name": …, "arguments": {…}}]<|/tool_call|>``.

Phi-4-mini-instruct's published template puts the tools in the system turn between
``<|tool|>`` and ``<|/tool|>`` (what detection looks for); the model answers with a JSON list
of calls (or one call object) between the special tokens ``<|tool_call|>`` and
``<|/tool_call|>``, text before allowed. An engine that decodes with special tokens skipped
hands over the list alone, which is read as calls when the answer starts with it. vLLM's
template for this model asks for ``functools[…]`` instead (no closing marker): an answer
starting with that is read as calls too.

The layout is JSON, so forced calls are built by the grammar, and stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..deltas import OutputParser
from ..terms import Lit, Rep, Term, alt, seq
from .base import ToolCatalog, ToolFormat
from .registry import register
from .tagged import TaggedParser

OPEN = "<|tool_call|>"
CLOSE = "<|/tool_call|>"
TOOLS = "<|tool|>"
FUNCTOOLS = "functools"


@register("phi4_mini")
class Phi4Mini(ToolFormat):
    priority = 12

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return TOOLS in chat_template or FUNCTOOLS + "[" in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return TaggedParser(
            catalog,
            limit,
            open_tag=OPEN,
            close_tag=CLOSE,
            decode=decode_calls,
            bare=_bare_start,
            bare_decode=_decode_bare,
        )

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = alt(*(cls.call_term(n, a) for n, a in calls))
        body = Rep(one, 1, None if several else 1, Lit(", "))
        return seq(Lit(OPEN + "["), body, Lit("]" + CLOSE))


def decode_calls(body: str) -> list[Any] | None:
    """A JSON list of call objects, or one call object; None if the body is not that."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, list) else [value]


def _bare_start(head: str) -> bool | None:
    for start in ("[{", FUNCTOOLS + "["):
        if head.startswith(start):
            return True
        if start.startswith(head):
            return None
    return False


def _decode_bare(text: str) -> list[Any] | None:
    body = text.strip()
    body = body[len(FUNCTOOLS) :] if body.startswith(FUNCTOOLS) else body
    return decode_calls(body)

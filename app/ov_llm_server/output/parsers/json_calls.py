"""Plain JSON calls, for models without a format of their own: a call object or a list of them.

This is the format a forced call is written in when the registry entry turns tool parsing
off (``"tool_parser": "none"``) or names this one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..deltas import OutputParser
from ..terms import Lit, Rep, Term, alt, seq
from .base import ToolCatalog, ToolFormat
from .llama3_json import WholeAnswerParser
from .registry import register


@register("json")
class JsonCalls(ToolFormat):
    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return WholeAnswerParser(catalog, limit, cls.args_key, tag=None, openers=("{", "["))

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = alt(*(cls.call_term(n, a) for n, a in calls))
        return seq(Lit("["), Rep(one, 1, None, Lit(", ")), Lit("]")) if several else one

"""Gemma 3: pythonic calls in a ```` ```tool_code ```` block, text before allowed.

Gemma 3 has no tool tokens and its own template no tools; Google's function-calling guide
teaches it either a bare list of pythonic calls (``[get_weather(city="Paris")]``, which
templates that say ``[func_name1(`` get as ``pythonic``) or a fenced ``tool_code`` block
holding calls, often as ``print(get_weather(city="Paris"))`` and with the ``default_api.``
prefix, its results coming back in a ``tool_output`` block. Templates that say ``tool_code``
get this format, which reads both: blocks anywhere in the text, and an answer that is a bare
list of calls.

Forced calls cannot be built in this layout by the grammar (see ``pythonic``): they are
written as plain JSON calls (``json``), as for models without a format of their own.
"""

from __future__ import annotations

from ..deltas import OutputParser
from .base import ToolCatalog, ToolFormat
from .pythonic import list_start, parse_calls
from .registry import register
from .tagged import TaggedParser

OPEN = "```tool_code"
CLOSE = "```"
MARKER = "tool_code"


@register("gemma3")
class Gemma3(ToolFormat):
    priority = 28  # before pythonic: such templates may show a bare list too
    forced_as = "json"

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return MARKER in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return TaggedParser(
            catalog,
            limit,
            open_tag=OPEN,
            close_tag=CLOSE,
            decode=parse_calls,
            bare=list_start,
        )

"""Llama 3.1/3.2 JSON: the whole answer is ``{"name": …, "parameters": {…}}`` calls.

Optionally after ``<|python_tag|>``; several calls are separated by ``;``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..deltas import OutputParser, ParsedDelta, ParsedToolCall
from ..terms import Lit, Rep, Term, alt
from .base import ToolCatalog, ToolFormat
from .registry import register

PYTHON_TAG = "<|python_tag|>"


@register("llama3_json")
class Llama3Json(ToolFormat):
    priority = 30
    args_key = "parameters"

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return PYTHON_TAG in chat_template or '"parameters"' in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return WholeAnswerParser(catalog, limit, cls.args_key, tag=PYTHON_TAG, openers=("{",))

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = alt(*(cls.call_term(n, a) for n, a in calls))
        return Rep(one, 1, None, Lit("; ")) if several else one


class WholeAnswerParser(OutputParser):
    """An answer that starts like a call (``tag`` or one of ``openers``) is calls only."""

    def __init__(
        self,
        catalog: ToolCatalog,
        limit: int | None,
        args_key: str,
        *,
        tag: str | None,
        openers: tuple[str, ...],
    ) -> None:
        self._catalog = catalog
        self._limit = limit
        self._args_key = args_key
        self._tag = tag
        self._openers = openers
        self._buf = ""
        self._mode = "start"  # then "calls" (buffering JSON) or "text" (plain content)
        self.done = False

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        if self._mode == "start":
            head = self._buf.lstrip()
            if (self._tag and head.startswith(self._tag)) or head.startswith(self._openers):
                self._mode = "calls"
            elif not head or (self._tag and self._tag.startswith(head)):
                return ParsedDelta()
            else:
                self._mode = "text"
        if self._mode == "text":
            out, self._buf = self._buf, ""
            return ParsedDelta(content=out)
        return ParsedDelta()  # calls are decided as a whole, at the end

    def finish(self) -> ParsedDelta:
        rest, self._buf = self._buf, ""
        if self._mode != "calls":
            return ParsedDelta(content=rest)
        calls = self._decode_all(rest)
        if calls is None:
            return ParsedDelta(content=rest)
        self.done = True
        return ParsedDelta(tool_calls=calls)

    def _decode_all(self, text: str) -> list[ParsedToolCall] | None:
        body = text.strip()
        if self._tag and body.startswith(self._tag):
            body = body[len(self._tag) :]
        payloads = _json_values(body, ";")
        if payloads is None:
            return None
        if self._limit is not None:
            payloads = payloads[: self._limit]
        # One bad call turns the whole answer into text.
        return self._catalog.make_calls(payloads, args_key=self._args_key) or None


def _json_values(body: str, separators: str) -> list[Any] | None:
    """The JSON values in ``body`` (lists flattened), or None if anything else is there."""
    decoder = json.JSONDecoder()
    payloads: list[Any] = []
    pos = 0
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] in separators):
            pos += 1
        if pos == len(body):
            return payloads
        try:
            payload, pos = decoder.raw_decode(body, pos)
        except ValueError:
            return None
        payloads.extend(payload if isinstance(payload, list) else [payload])

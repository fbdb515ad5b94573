"""Mistral: ``[TOOL_CALLS]`` then the calls.

Two layouts: ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`` (tokenizer v3 and later) and
``[TOOL_CALLS]name[ARGS]{…}`` for each call (v11 and later, whose templates hold
``[ARGS]``). Text before the marker is content. The marker is a special token: an engine
that decodes with special tokens skipped hands over the list without it, which is read as
calls too when the answer starts with it. Mistral's templates refuse call ids other than
nine letters and digits, so the calls get such ids.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Sequence
from typing import Any

from ...textutil import partial_suffix
from ..deltas import OutputParser, ParsedDelta, ParsedToolCall
from ..terms import Lit, Rep, Term, alt, seq
from .base import ToolCatalog, ToolFormat
from .registry import register

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_ALPHABET = string.ascii_letters + string.digits


@register("mistral")
class Mistral(ToolFormat):
    priority = 20

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return MARKER in chat_template

    @classmethod
    def new_id(cls) -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(9))

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return MistralParser(catalog, limit)

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = alt(*(cls.call_term(n, a) for n, a in calls))
        return seq(Lit(MARKER + "["), Rep(one, 1, None if several else 1, Lit(", ")), Lit("]"))


@register("mistral_v11")
class MistralV11(Mistral):
    priority = 19  # before "mistral": its templates hold the marker too

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return MARKER in chat_template and ARGS in chat_template

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = seq(Lit(MARKER), alt(*(seq(Lit(n + ARGS), a) for n, a in calls)))
        return Rep(one, 1, None) if several else one

    @classmethod
    def call_head(cls) -> re.Pattern[str]:
        return re.compile(re.escape(MARKER) + "(.*?)" + re.escape(ARGS), re.DOTALL)

    @classmethod
    def call_name(cls, head: re.Match[str]) -> str:
        return head.group(1)


class MistralParser(OutputParser):
    def __init__(self, catalog: ToolCatalog, limit: int | None) -> None:
        self._catalog = catalog
        self._limit = limit
        self._buf = ""
        self._mode = "start"  # then "text" (watching for the marker) or "calls" (buffering)
        self.done = False

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        out = ParsedDelta()
        if self._mode == "start":
            head = self._buf.lstrip()
            if head.startswith("[{"):
                self._mode = "calls"
            elif not head or "[{".startswith(head) or MARKER.startswith(head):
                return out
            else:
                self._mode = "text"
        if self._mode == "text":
            at = self._buf.find(MARKER)
            if at >= 0:
                out.content, self._buf = self._buf[:at], self._buf[at:]
                self._mode = "calls"
            else:
                keep = partial_suffix(self._buf, MARKER)
                out.content = self._buf[: len(self._buf) - keep]
                self._buf = self._buf[len(self._buf) - keep :]
        return out

    def finish(self) -> ParsedDelta:
        rest, self._buf = self._buf, ""
        if self._mode != "calls":
            return ParsedDelta(content=rest)
        payloads = _calls(rest)
        if payloads is None:
            return ParsedDelta(content=rest)
        if self._limit is not None:
            payloads = payloads[: self._limit]
        calls: list[ParsedToolCall] = self._catalog.make_calls(payloads)
        if not calls:
            return ParsedDelta(content=rest)
        self.done = True
        return ParsedDelta(tool_calls=calls)


def _calls(text: str) -> list[Any] | None:
    """The call payloads after the marker(s), in either layout; None if it is not that.

    Read left to right with a JSON decoder, so a marker inside an argument's string is
    text, whatever the sampler wrote there."""
    decoder = json.JSONDecoder()
    payloads: list[Any] = []
    pos = 0
    while True:
        pos = _after_space(text, pos)
        if pos == len(text):
            return payloads or None
        if text.startswith(MARKER, pos):
            pos += len(MARKER)
            continue
        name = ""
        if text[pos] not in "[{":  # v11: name[ARGS]{...}
            at = text.find(ARGS, pos)
            name = text[pos:at].strip() if at >= 0 else ""
            if not name or MARKER in name:
                return None
            pos = _after_space(text, at + len(ARGS))
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        if name:
            payloads.append({"name": name, "arguments": value})
        else:
            payloads.extend(value if isinstance(value, list) else [value])


def _after_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos

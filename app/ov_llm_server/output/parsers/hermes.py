"""Hermes / Qwen: ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``, text around allowed."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ...textutil import partial_suffix
from ..deltas import OutputParser, ParsedDelta
from ..terms import Lit, Rep, Term, alt, seq
from .base import ToolCatalog, ToolFormat
from .registry import register
from .spacing import CallSpacing

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


@register("hermes")
class Hermes(ToolFormat):
    priority = 10

    @classmethod
    def detects(cls, chat_template: str) -> bool:
        return OPEN in chat_template

    @classmethod
    def parser(cls, catalog: ToolCatalog, limit: int | None) -> OutputParser:
        return HermesParser(catalog, limit)

    @classmethod
    def forced(cls, calls: Sequence[tuple[str, Term]], several: bool) -> Term:
        one = seq(
            Lit(OPEN + "\n"), alt(*(cls.call_term(n, a) for n, a in calls)), Lit("\n" + CLOSE)
        )
        return Rep(one, 1, None, Lit("\n")) if several else one


class HermesParser(OutputParser):
    def __init__(self, catalog: ToolCatalog, limit: int | None) -> None:
        self._catalog = catalog
        self._limit = limit
        self._buf = ""
        self._in_call = False
        self._spacing = CallSpacing()
        self._calls = 0
        self.done = False

    def feed(self, text: str) -> ParsedDelta:
        out = ParsedDelta()
        if self.done:
            return out
        self._buf += text
        while True:
            if self._in_call:
                end = _call_end(self._buf, final=False)
                if end is None:
                    return out
                body = self._buf[:end]
                self._buf = self._buf[end + len(CLOSE) :]
                self._in_call = False
                self._close_call(body, OPEN + body + CLOSE, out)
                if self.done:
                    self._buf = ""
                    return out
                continue
            start = self._buf.find(OPEN)
            if start >= 0:
                self._spacing.text(self._buf[:start], out)
                self._buf = self._buf[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = partial_suffix(self._buf, OPEN)
            self._spacing.text(self._buf[: len(self._buf) - keep], out)
            self._buf = self._buf[len(self._buf) - keep :]
            return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        rest, self._buf = self._buf, ""
        if self.done:
            return out
        if self._in_call:
            end = _call_end(rest, final=True)
            self._in_call = False
            if end is None:
                # No closing tag (cut off, or the model ended right after the JSON).
                self._close_call(rest, OPEN + rest, out)
            else:
                self._close_call(rest[:end], OPEN + rest[: end + len(CLOSE)], out)
                if not self.done:
                    out.merge(self.feed(rest[end + len(CLOSE) :]))
                    out.merge(self.finish())
                    return out
        else:
            self._spacing.text(rest, out)
        self._spacing.end(self._calls, out)
        return out

    def _close_call(self, body: str, raw: str, out: ParsedDelta) -> None:
        try:
            call = self._catalog.make_call(json.loads(body))
        except ValueError:
            call = None
        if call is None:
            self._spacing.not_a_call(raw, out)
            return
        out.tool_calls.append(call)
        self._calls += 1
        self._spacing.call()
        self.done = self._limit is not None and self._calls >= self._limit


# What matters to finding a call's end: string quotes, escapes (a quote that does not end
# the string) and the two tags.
_SCAN = re.compile(r'\\.|"|' + re.escape(CLOSE) + "|" + re.escape(OPEN), re.DOTALL)


def _call_end(buf: str, *, final: bool) -> int | None:
    """Where the call in ``buf`` (the text after its opening tag) ends, or None to wait.

    At the first closing tag outside the JSON's strings after which the body is JSON: a string
    may hold either tag (a sampled key or value can say anything). When no such tag comes
    before an opening tag outside strings (the next call), or before the end, the call ends at
    the first closing tag, and is returned as text.
    """
    first = buf.find(CLOSE)
    if first < 0:
        return None
    in_string, barrier = False, False
    for match in _SCAN.finditer(buf):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif token.startswith("\\") or in_string:
            continue
        elif token == CLOSE:
            try:
                json.loads(buf[: match.start()])
                return match.start()
            except ValueError:
                continue
        elif match.start() > first:  # an opening tag after a closing one: a next call
            barrier = True
            break
    return first if (barrier or final) else None

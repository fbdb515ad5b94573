"""Calls in delimited blocks with text around them, or an answer that is calls only.

The layout several formats share: ``open`` … ``close`` blocks (a block may hold several calls)
inside ordinary text, and, when the format has one, a bare answer made of calls alone (a
special-token opener that the detokenizer may drop, or a format with no opener at all). What
a block holds is the format's ``decode``: the payloads of its calls, or None when the block is
not calls, which then goes to ``content`` as written.

A block goes out once it has closed and its calls validated; until then its text is held, so
half a call never reaches ``content``. A bare answer is decided as a whole, at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...textutil import partial_suffix
from ..deltas import OutputParser, ParsedDelta
from .base import ToolCatalog
from .spacing import CallSpacing

Decode = Callable[[str], list[Any] | None]
# Whether the answer (its start, left-stripped) is bare calls: True, False, or None to wait.
BareStart = Callable[[str], bool | None]


class TaggedParser(OutputParser):
    def __init__(
        self,
        catalog: ToolCatalog,
        limit: int | None,
        *,
        open_tag: str | None,
        close_tag: str,
        decode: Decode,
        bare: BareStart | None = None,
        bare_decode: Decode | None = None,
        args_key: str = "arguments",
    ) -> None:
        self._catalog = catalog
        self._limit = limit
        self._open = open_tag
        self._close = close_tag
        self._decode = decode
        self._bare = bare
        self._bare_decode = bare_decode or decode
        self._args_key = args_key
        self._buf = ""
        self._mode = "start" if bare is not None else "text"  # then "text", "block", "bare"
        self._spacing = CallSpacing()
        self._calls = 0
        self.done = False

    def feed(self, text: str) -> ParsedDelta:
        out = ParsedDelta()
        if self.done:
            return out
        self._buf += text
        if self._mode == "start":
            assert self._bare is not None
            head = self._buf.lstrip()
            decided = self._bare(head) if head else None
            if decided is None:
                return out
            self._mode = "bare" if decided else "text"
        if self._mode == "bare":
            return out
        while not self.done:
            if self._mode == "block":
                end = self._buf.find(self._close)
                if end < 0:
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(self._close) :]
                self._mode = "text"
                self._block(body, f"{self._open}{body}{self._close}", out)
                continue
            start = self._buf.find(self._open) if self._open else -1
            if start >= 0:
                assert self._open is not None
                self._spacing.text(self._buf[:start], out)
                self._buf = self._buf[start + len(self._open) :]
                self._mode = "block"
                continue
            keep = partial_suffix(self._buf, self._open) if self._open else 0
            self._spacing.text(self._buf[: len(self._buf) - keep], out)
            self._buf = self._buf[len(self._buf) - keep :]
            return out
        self._buf = ""
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        rest, self._buf = self._buf, ""
        if self.done:
            return out
        if self._mode in ("start", "bare"):
            payloads = self._bare_decode(rest) if self._mode == "bare" else None
            if payloads is None or not self._add(payloads, out):
                out.content += rest
            return out
        if self._mode == "block":
            # No closing tag: cut off, or the model ended right after the calls.
            self._mode = "text"
            self._block(rest, f"{self._open}{rest}", out)
        else:
            self._spacing.text(rest, out)
        self._spacing.end(self._calls, out)
        return out

    def _block(self, body: str, raw: str, out: ParsedDelta) -> None:
        payloads = self._decode(body)
        if payloads is None or not self._add(payloads, out):
            self._spacing.not_a_call(raw, out)
            return
        self._spacing.call()

    def _add(self, payloads: list[Any], out: ParsedDelta) -> bool:
        """Makes the calls (all of them valid, or none); False when there are none."""
        if self._limit is not None:
            payloads = payloads[: self._limit - self._calls]
        calls = self._catalog.make_calls(payloads, args_key=self._args_key) if payloads else []
        if not calls:
            return False
        out.tool_calls.extend(calls)
        self._calls += len(calls)
        self.done = self._limit is not None and self._calls >= self._limit
        return True

"""Whitespace next to tool calls, for parsers that read calls inside ordinary text.

Whitespace next to calls is formatting, not content: trailing whitespace is held until it is
clear whether a call follows, and whitespace right after a call is dropped.
"""

from __future__ import annotations

from ..deltas import ParsedDelta


class CallSpacing:
    def __init__(self) -> None:
        self._held = ""
        self._after_call = False

    def text(self, text: str, out: ParsedDelta) -> None:
        """Ordinary text: its content, less the trailing whitespace held for now."""
        text, self._held = self._held + text, ""
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
        body = text.rstrip()
        self._held = text[len(body) :]
        if body:
            out.content += body
            self._after_call = False

    def call(self) -> None:
        """A call went out: the whitespace before it was formatting."""
        self._held = ""
        self._after_call = True

    def not_a_call(self, raw: str, out: ParsedDelta) -> None:
        """What looked like a call was not one: it is content, as written."""
        out.content += self._held + raw
        self._held = ""
        self._after_call = False

    def end(self, calls: int, out: ParsedDelta) -> None:
        """The answer ended: held whitespace is content only in an answer without calls."""
        if not calls:
            out.content += self._held
        self._held = ""

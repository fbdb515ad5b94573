"""Splitting ``<think>…</think>`` reasoning from the answer, safely while streaming.

Only a think block at the very start of the answer counts as reasoning; a chat template
that already opened ``<think>`` in the prompt starts the parser inside the block.
"""

from __future__ import annotations

from ..textutil import partial_suffix
from .deltas import OutputParser, ParsedDelta

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ThinkParser(OutputParser):
    """``feed`` text, get reasoning and content; ``finish`` flushes what was held back."""

    def __init__(self, *, opened: bool = False) -> None:
        # "start": not yet known whether the answer opens a think block.
        self._mode = "reasoning" if opened else "start"
        self._buf = ""
        self._strip_next = False

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        out = ParsedDelta()
        if self._mode == "start":
            head = self._buf.lstrip()
            if head.startswith(THINK_OPEN):
                self._mode = "reasoning"
                self._buf = head[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(head):
                return out  # may still become "<think>"
            else:
                self._mode = "content"
        if self._mode == "reasoning":
            end = self._buf.find(THINK_CLOSE)
            if end < 0:
                keep = partial_suffix(self._buf, THINK_CLOSE)
                out.reasoning = self._buf[: len(self._buf) - keep]
                self._buf = self._buf[len(self._buf) - keep :]
                return out
            out.reasoning = self._buf[:end]
            self._buf = self._buf[end + len(THINK_CLOSE) :]
            self._mode = "content"
            self._strip_next = True
        if self._strip_next:
            self._buf = self._buf.lstrip()
            if not self._buf:
                return out
            self._strip_next = False
        out.content, self._buf = self._buf, ""
        return out

    def finish(self) -> ParsedDelta:
        rest, self._buf = self._buf, ""
        if self._mode == "reasoning":
            # Cut off while thinking: what there is, is still reasoning.
            return ParsedDelta(reasoning=rest)
        if self._strip_next:
            rest = rest.lstrip()
        return ParsedDelta(content=rest)

"""Parsers built from parsers: reasoning before tool calls, and grammar output closed at the end."""

from __future__ import annotations

import json
import logging

from .deltas import OutputParser, ParsedDelta
from .length_cut import LengthCut
from .schema import SchemaModel, repair, validate
from .terms import Grammar

log = logging.getLogger(__name__)


class ChainedParser(OutputParser):
    """Reasoning first, then tool calls in what is left of the answer."""

    def __init__(self, reasoning: OutputParser | None, tools: OutputParser | None) -> None:
        self._reasoning = reasoning
        self._tools = tools

    def feed(self, text: str) -> ParsedDelta:
        return self._pass(self._reasoning.feed(text) if self._reasoning else ParsedDelta(text))

    def finish(self) -> ParsedDelta:
        out = self._pass(self._reasoning.finish() if self._reasoning else ParsedDelta())
        if self._tools is not None:
            out.merge(self._tools.finish())
            self.done = self._tools.done
            self.closed = self._tools.closed
        return out

    def _pass(self, delta: ParsedDelta) -> ParsedDelta:
        if self._tools is None or not delta.content:
            return delta
        out = self._tools.feed(delta.content)
        out.reasoning = delta.reasoning + out.reasoning
        self.done = self._tools.done
        return out


def _closing(grammar: Grammar, text: str) -> str:
    """What finishes ``text`` (output the token budget or a stop sequence cut short)."""
    suffix = grammar.close(text)
    if suffix is None:  # not a prefix of the grammar: cannot happen for output made under it
        log.error("constrained output is not a prefix of its grammar: %r", text[:200])
        return ""
    return suffix


class ClosingParser(OutputParser):
    """Output forced by a grammar, read by ``inner``; at the end it is finished if it was cut."""

    def __init__(self, grammar: Grammar, inner: OutputParser) -> None:
        self._grammar = grammar
        self._inner = inner
        self._text = ""

    def feed(self, text: str) -> ParsedDelta:
        self._text += text
        return self._take(text)

    def _take(self, text: str) -> ParsedDelta:
        """Hands output (the model's, or the closing the grammar adds) to ``inner``."""
        out = self._inner.feed(text)
        self.done = self._inner.done
        return out

    def finish(self) -> ParsedDelta:
        suffix = "" if self.done else _closing(self._grammar, self._text)
        self.closed = bool(suffix)
        out = self._take(suffix) if suffix else ParsedDelta()
        out.merge(self._inner.finish())
        self.done = self._inner.done
        return out


class DocumentParser(OutputParser):
    """A ``response_format`` answer: one JSON document, streamed as content.

    Cut output is finished with the shortest valid ending. A ``maxLength`` (which the grammar
    leaves to :func:`schema.repair`) is applied as the text streams (``cut``); where it cannot
    be (:func:`length_cut.streams`), the document is held back and sent whole once repaired.
    """

    def __init__(
        self, grammar: Grammar, model: SchemaModel, *, hold: bool, cut: LengthCut | None = None
    ) -> None:
        self._grammar = grammar
        self._model = model
        self._hold = hold
        self._cut = cut
        self._text = ""
        self.done = False

    def feed(self, text: str) -> ParsedDelta:
        self._text += text
        return ParsedDelta() if self._hold else ParsedDelta(content=self._streamed(text))

    def _streamed(self, text: str) -> str:
        return text if self._cut is None else self._cut.feed(text)

    def finish(self) -> ParsedDelta:
        # An answer the model ended itself needs no reading through the grammar.
        suffix = "" if self._valid(self._text) else _closing(self._grammar, self._text)
        self.done = True
        self.closed = bool(suffix)
        if not self._hold:
            return ParsedDelta(content=self._streamed(suffix))
        whole = self._text + suffix
        try:
            value = json.loads(whole)
        except ValueError:
            return ParsedDelta(content=whole)
        return ParsedDelta(content=json.dumps(repair(self._model, value), ensure_ascii=False))

    def _valid(self, text: str) -> bool:
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return validate(self._model, repair(self._model, value)) is None

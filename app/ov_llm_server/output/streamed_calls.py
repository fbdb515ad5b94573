"""A forced tool call's arguments, streamed as the model writes them.

A forced call is valid by construction: the grammar admits only calls of the request's tools
whose arguments match their schemas, and closes output the token budget cut short. So every
prefix of its arguments is a prefix of the final arguments, and they can go out piece by
piece (as OpenAI, vLLM and llama.cpp send them) instead of whole once the call has closed:
the client's first byte comes with the model's first tokens, not after the last.

The format's parser still reads the whole answer and makes the calls (ids, indexes, the
message of a non-streamed answer); this reader only finds where each call's arguments begin
and end, and the calls keep exactly the text that was streamed, so that the pieces add up to
the final arguments, streamed or not.

A free call is not streamed: until it has closed and validated, it may turn out to be text
(a made-up tool, arguments off the schema), and half a call must not leak into either the
calls or the content. A ``maxLength``, which the grammar does not count, is applied as the
arguments stream (:mod:`length_cut`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

from .compose import ClosingParser
from .deltas import CallPiece, OutputParser, ParsedDelta
from .length_cut import LengthCut
from .schema import SchemaModel, needs_repair
from .terms import Grammar


class ArgumentReader:
    """Finds the calls in forced output as it grows: each call's name when its head is
    complete, then its arguments object, up to the brace that closes it."""

    def __init__(
        self,
        head: re.Pattern[str],
        name_of: Callable[[re.Match[str]], str],
        only: str | None = None,
        models: Mapping[str, SchemaModel] | None = None,
    ) -> None:
        self._head = head
        self._models = models or {}
        self._cut: LengthCut | None = None
        self._name_of = name_of
        # With one tool to call, the first call's name is known before the model writes it:
        # the call starts with the model's first token, not once its head is written.
        self._only = only
        self._text = ""
        self._pos = 0  # where reading goes on
        self._heads = 0  # call heads read so far
        self._open = False  # inside a call's arguments
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.arguments: list[str] = []  # each call's arguments text so far

    def feed(self, text: str) -> list[tuple[str | None, str]]:
        """(name, "") when a call starts, (None, piece) for more of its arguments."""
        self._text += text
        events: list[tuple[str | None, str]] = []
        if self._only is not None and self._text and not self.arguments:
            self._start(self._only, events)
        while True:
            if not self._open:
                match = self._head.search(self._text, self._pos)
                if match is None:
                    return events
                self._heads += 1
                if self._heads > len(self.arguments):  # not started before its head
                    self._start(self._name_of(match), events)
                self._pos = match.end()
                self._open = True
                self._depth = 0
            start = self._pos
            end = self._scan()
            piece = self._text[start:end]
            if self._cut is not None:
                piece = self._cut.feed(piece)
            self._pos = end
            if piece:
                self.arguments[-1] += piece
                events.append((None, piece))
            if self._open:  # the arguments go on past what has arrived
                return events

    def _start(self, name: str, events: list[tuple[str | None, str]]) -> None:
        events.append((name, ""))
        self.arguments.append("")
        model = self._models.get(name)
        self._cut = LengthCut(model) if model is not None and needs_repair(model) else None

    def _scan(self) -> int:
        """Reads JSON from ``_pos``; the position after the object's closing brace when it
        closes (the call is then no longer open), else the end of the text."""
        text = self._text
        for i in range(self._pos, len(text)):
            char = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._open = False
                    return i + 1
        return len(text)


class StreamedCallParser(ClosingParser):
    """Forced calls, read by the format's parser, with their arguments streamed as written."""

    def __init__(
        self,
        grammar: Grammar,
        inner: OutputParser,
        reader: ArgumentReader,
        new_id: Callable[[], str],
    ) -> None:
        super().__init__(grammar, inner)
        self._reader = reader
        self._new_id = new_id
        self._ids: list[str] = []

    def _take(self, text: str) -> ParsedDelta:
        out = super()._take(text)
        for name, piece in self._reader.feed(text):
            if name is not None:
                self._ids.append(self._new_id())
                out.call_pieces.append(CallPiece(len(self._ids) - 1, self._ids[-1], name, ""))
            else:
                out.call_pieces.append(CallPiece(len(self._ids) - 1, None, None, piece))
        return self._own(out)

    def finish(self) -> ParsedDelta:
        return self._own(super().finish())

    def _own(self, out: ParsedDelta) -> ParsedDelta:
        """The format's calls keep the ids and the arguments text that were streamed."""
        out.tool_calls = [
            dataclasses.replace(
                call,
                id=self._ids[call.index],
                arguments=self._reader.arguments[call.index],
                streamed=True,
            )
            for call in out.tool_calls
        ]
        return out

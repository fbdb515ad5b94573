"""What the output parsers hand to the server: content, reasoning, complete tool calls, and
the pieces of forced calls being written."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParsedToolCall:
    index: int
    id: str
    name: str
    arguments: str  # a complete JSON object, never a fragment
    # Its arguments already went out as CallPieces (streamed_calls.py): a stream does not
    # send the call again.
    streamed: bool = False


@dataclass(frozen=True)
class CallPiece:
    """Part of a call being written: its start (``id`` and ``name``, no arguments yet), then
    pieces of its arguments, which add up to the call's final ``arguments``."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass
class ParsedDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)  # whole calls, in order
    call_pieces: list[CallPiece] = field(default_factory=list)  # for a stream only

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls or self.call_pieces)

    def merge(self, other: ParsedDelta) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)
        self.call_pieces.extend(other.call_pieces)


class OutputParser:
    """Plain text: everything the model says is content.

    Streaming and non-streaming responses run the same parser (``feed`` then ``finish``), so
    both give the same message for the same generated text. ``done`` turns true once no more
    output is wanted: the server may stop generating then. ``closed`` turns true when the
    output ended before the grammar did and ``finish`` completed it: a whole, valid answer,
    but not the one the model would have given (the finish reason stays the engine's).
    """

    done: bool = False
    closed: bool = False

    def feed(self, text: str) -> ParsedDelta:
        return ParsedDelta(content=text)

    def finish(self) -> ParsedDelta:
        return ParsedDelta()

"""What the output parsers hand to the server: content, reasoning and complete tool calls."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParsedToolCall:
    index: int
    id: str
    name: str
    arguments: str  # a complete JSON object, never a fragment


@dataclass
class ParsedDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)

    def merge(self, other: ParsedDelta) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)


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

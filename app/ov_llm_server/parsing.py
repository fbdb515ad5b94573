"""Turning generated text into OpenAI message parts: content, reasoning and tool calls.

Streaming and non-streaming responses run the same parser (``feed`` then ``finish``),
so both give the same message for the same generated text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import ChatCompletionRequest
    from .registry import ModelEntry


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
    """Plain text: everything the model says is content."""

    def feed(self, text: str) -> ParsedDelta:
        return ParsedDelta(content=text)

    def finish(self) -> ParsedDelta:
        return ParsedDelta()


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
        return out

    def _pass(self, delta: ParsedDelta) -> ParsedDelta:
        if self._tools is None or not delta.content:
            return delta
        out = self._tools.feed(delta.content)
        out.reasoning = delta.reasoning + out.reasoning
        return out


def build_output_parser(
    chat_template: str,
    entry: ModelEntry | None,
    request: ChatCompletionRequest,
    *,
    prompt: str | None = None,
) -> OutputParser:
    """The parser for one response, chosen by the request, the registry entry and the template.

    ``tool_parser`` / ``reasoning_parser`` in the registry entry override detection;
    ``"none"`` turns either off. Without tools in the request no tool calls are parsed.
    """
    from .reasoning import THINK_OPEN, ThinkParser
    from .structured import forced_tool_format, tool_format
    from .tool_parsers import (
        ForcedToolParser,
        HermesToolParser,
        Llama3JsonToolParser,
        ToolCatalog,
        forces_tool_call,
    )

    def tool_parser(kind: str) -> OutputParser | None:
        catalog = ToolCatalog(request.tools or [])
        if kind == "llama3_json":
            return Llama3JsonToolParser(catalog)
        if kind == "json":
            return ForcedToolParser(catalog)
        return None if kind == "none" else HermesToolParser(catalog)

    if forces_tool_call(request):
        kind = forced_tool_format(chat_template, entry)
        # The grammar holds the answer from its first token: there is no room for thinking.
        return ChainedParser(None, tool_parser(kind))
    tools: OutputParser | None = None
    if request.tools and request.tool_choice != "none":
        tools = tool_parser(tool_format(chat_template, entry))
    reasoning: OutputParser | None = None
    if (entry.reasoning_parser if entry else None) != "none":
        # Only an answer that starts with <think> (or a prompt that opened it) has reasoning,
        # so this is safe for every model.
        opened = prompt is not None and prompt.rstrip().endswith(THINK_OPEN)
        reasoning = ThinkParser(opened=opened)
    if reasoning is None and tools is None:
        return OutputParser()
    return ChainedParser(reasoning, tools)

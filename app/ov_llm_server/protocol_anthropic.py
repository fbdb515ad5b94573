"""Pydantic models of the Anthropic Messages API requests this server takes (``/v1/messages``).

Only what the server acts on is modelled; other fields are accepted and ignored (Lenient).
Content the server cannot honour (documents, server tools) is refused; images go to chat as its
image parts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from .protocol import Lenient, ModelName


class TextBlock(Lenient):
    type: Literal["text"]
    text: str


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any]


class ImageSource(Lenient):
    type: Literal["base64", "url"]
    media_type: str = Field("image/png", max_length=64)
    data: str | None = None
    url: str | None = None


class ImageBlock(Lenient):
    type: Literal["image"]
    source: ImageSource

    def data_url(self) -> str:
        """The image as chat's image_url takes it (chat refuses a URL it does not fetch)."""
        if self.source.type == "url":
            return self.source.url or ""
        return f"data:{self.source.media_type};base64,{self.source.data or ''}"


def _text_blocks(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: list[TextBlock] = Field(default_factory=list)
    is_error: bool = False

    _string_is_text = field_validator("content", mode="before")(_text_blocks)


class ThinkingBlock(Lenient):
    """An earlier answer's thinking: accepted, not shown to the model again (chat templates
    drop earlier turns' thinking too)."""

    type: Literal["thinking", "redacted_thinking"]


def _block_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind == "redacted_thinking":
        return "thinking"
    return kind if isinstance(kind, str) else None


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[ImageBlock, Tag("image")],
    Discriminator(
        _block_type,
        custom_error_type="unsupported_block",
        custom_error_message="unsupported content block type; this server takes text, "
        "image, tool_use, tool_result and thinking blocks",
    ),
]


class Message(Lenient):
    role: Literal["user", "assistant"]
    content: list[ContentBlock]  # a string is one text block

    _string_is_text = field_validator("content", mode="before")(_text_blocks)


class Tool(Lenient):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)


class CountTokensRequest(Lenient):
    model: ModelName
    messages: list[Message] = Field(min_length=1)
    system: list[TextBlock] | None = None
    tools: list[Tool] | None = None

    _string_is_text = field_validator("system", mode="before")(_text_blocks)


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    stream: bool = False

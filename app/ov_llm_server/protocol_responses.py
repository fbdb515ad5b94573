"""Pydantic models of the OpenAI Responses API requests this server takes (``/v1/responses``).

Only what the server acts on is modelled; other fields are accepted and ignored (Lenient), as
for chat. Input items the server cannot honour (files, hosted tools) are refused; images go to
chat as its image parts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from .protocol import Lenient, ModelName

TEXT_PARTS = ("input_text", "output_text", "text")
IMAGE_PART = "input_image"


class ContentPart(Lenient):
    type: str
    text: str | None = None
    image_url: str | None = None  # an "input_image" part: a data: URL


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    arguments: str = "{}"


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[ContentPart]


class ReasoningItem(Lenient):
    """A previous answer's reasoning: accepted, not shown to the model again (chat templates
    drop earlier turns' thinking too)."""

    type: Literal["reasoning"]


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(
        _item_type,
        custom_error_type="unsupported_item",
        custom_error_message="unsupported input item type; this server takes message, "
        "function_call, function_call_output and reasoning items",
    ),
]


class FunctionTool(Lenient):
    """The Responses tool shape: flat, no ``function`` wrapper."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    # Required as in OpenAI's API; null means a function without arguments.
    parameters: dict[str, Any] | None
    strict: bool | None = None


class FunctionChoice(Lenient):
    type: Literal["function"]
    name: str


class TextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(Lenient):
    format: TextFormat | None = None


class ResponsesRequest(Lenient):
    model: ModelName
    input: list[InputItem]  # a string is one user message
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    store: bool = True
    previous_response_id: str | None = Field(default=None, max_length=256)
    stream: bool = False
    metadata: dict[str, str] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _string_is_a_message(cls, value: Any) -> Any:
        return [{"role": "user", "content": value}] if isinstance(value, str) else value

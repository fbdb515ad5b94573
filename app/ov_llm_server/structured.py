"""What a request forces the model to write: a tool call, or JSON (``response_format``).

Forcing uses OpenVINO GenAI's structured output. A forced tool call is written in the
model's own format (Hermes tags, Llama 3 JSON), so the model continues the way it was
trained and the ordinary parser reads the result; models without a format of their own
write plain JSON (one call object, or a list for parallel calls).
"""

from __future__ import annotations

from typing import Any

from . import errors
from .json_grammar import SchemaError, literal, schema_to_grammar
from .protocol import ChatCompletionRequest, NamedToolChoice
from .registry import ModelEntry
from .tool_parsers import (
    HERMES_CLOSE,
    HERMES_OPEN,
    chosen_tools,
    detect_tool_parser,
    forced_tool_schema,
    forces_tool_call,
    several_forced_calls,
)


def tool_format(chat_template: str, entry: ModelEntry | None) -> str:
    return (entry.tool_parser if entry else None) or detect_tool_parser(chat_template)


def forced_tool_format(chat_template: str, entry: ModelEntry | None) -> str:
    """The format a forced tool call is written in: the model's own, else plain JSON."""
    fmt = tool_format(chat_template, entry)
    return fmt if fmt in ("hermes", "llama3_json") else "json"


def response_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks for, if any."""
    spec = request.response_format
    if spec is None or spec.type == "text":
        return None
    if spec.type == "json_object":
        return {"type": "object"}
    if spec.json_schema is None or spec.json_schema.schema_ is None:
        raise errors.bad_request(
            "response_format json_schema needs a 'schema'", param="response_format"
        )
    return spec.json_schema.schema_


def build_grammar(
    request: ChatCompletionRequest, chat_template: str, entry: ModelEntry | None
) -> str | None:
    """The EBNF grammar GenAI's structured output enforces for this request, if any."""
    if forces_tool_call(request):
        return _tool_grammar(request, forced_tool_format(chat_template, entry))
    schema = response_schema(request)
    if schema is None:
        return None
    try:
        return schema_to_grammar(schema)
    except SchemaError as exc:
        raise errors.bad_request(
            f"response_format schema cannot be enforced: {exc}", param="response_format"
        ) from exc


def _call_schema(request: ChatCompletionRequest, args_key: str) -> dict[str, Any]:
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                args_key: tool.function.parameters or {"type": "object"},
            },
            "required": ["name", args_key],
            "additionalProperties": False,
        }
        for tool in chosen_tools(request)
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _tool_grammar(request: ChatCompletionRequest, fmt: str) -> str:
    several = several_forced_calls(request)
    try:
        if fmt == "hermes":
            one = f"{literal(HERMES_OPEN + chr(10))} {{value}} {literal(chr(10) + HERMES_CLOSE)}"
            root = f"{one} ({literal(chr(10))} {one})*" if several else one
            return schema_to_grammar(_call_schema(request, "arguments"), root)
        if fmt == "llama3_json":
            root = f"{{value}} ({literal('; ')} {{value}})*" if several else "{value}"
            return schema_to_grammar(_call_schema(request, "parameters"), root)
        return schema_to_grammar(forced_tool_schema(request))
    except SchemaError as exc:
        raise errors.bad_request(
            f"a tool's parameters cannot be enforced: {exc}", param="tools"
        ) from exc


def check_tool_choice(request: ChatCompletionRequest) -> None:
    """400 for a tool_choice that cannot be honoured."""
    choice = request.tool_choice
    if choice in (None, "none", "auto"):
        return
    if not request.tools:
        raise errors.bad_request(
            "tool_choice requires 'tools'", param="tool_choice", code="invalid_value"
        )
    if isinstance(choice, NamedToolChoice):
        names = [tool.function.name for tool in request.tools]
        if choice.function.name not in names:
            raise errors.bad_request(
                f"tool_choice names function '{choice.function.name}', which is not in "
                f"tools ({', '.join(names)})",
                param="tool_choice",
                code="invalid_value",
            )

"""Unit tests of what a request forces: grammars for tool calls and for response_format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ov_llm_server.errors import APIError
from ov_llm_server.json_grammar import literal, schema_to_grammar
from ov_llm_server.protocol import ChatCompletionRequest
from ov_llm_server.registry import ModelEntry
from ov_llm_server.structured import build_constraint, check_tool_choice

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def request(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


def test_literal_escapes() -> None:
    assert literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_grammar_for_an_object_lists_members_in_order() -> None:
    grammar = schema_to_grammar(WEATHER["function"]["parameters"])  # type: ignore[index]
    assert grammar is not None
    assert grammar.startswith("root ::= ")
    assert '"\\"city\\": "' in grammar
    assert "string ::=" in grammar


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/x"},
        {"type": "string", "pattern": "^a+$"},
        {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
        {"type": "tuple"},
    ],
)
def test_grammar_refuses_what_it_cannot_enforce(schema: dict[str, Any]) -> None:
    assert schema_to_grammar(schema) is None


def test_response_format_uses_a_grammar_or_falls_back_to_json_schema() -> None:
    plain = build_constraint(request(), "", None)
    assert plain is None
    obj = build_constraint(request(response_format={"type": "json_object"}), "", None)
    assert obj is not None and obj.grammar is not None and obj.tool_format is None
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/a"}}}
    fallback = build_constraint(request(response_format=fmt), "", None)
    assert fallback is not None and fallback.grammar is None
    assert json.loads(fallback.json_schema or "") == {"$ref": "#/a"}


def test_response_format_json_schema_without_schema_is_a_400() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x"}}
    with pytest.raises(APIError) as err:
        build_constraint(request(response_format=fmt), "", None)
    assert err.value.status == 400


def test_forced_calls_use_the_models_format() -> None:
    hermes = build_constraint(request(tools=[WEATHER], tool_choice="required"), "<tool_call>", None)
    assert hermes is not None and hermes.tool_format == "hermes" and hermes.grammar
    assert '"<tool_call>\\n"' in hermes.grammar
    llama = build_constraint(
        request(tools=[WEATHER], tool_choice=NAMED), '<|python_tag|> "parameters"', None
    )
    assert llama is not None and llama.tool_format == "llama3_json" and llama.grammar
    assert '"\\"parameters\\": "' in llama.grammar
    entry = ModelEntry(path="x", tool_parser="none")
    plain = build_constraint(request(tools=[WEATHER], tool_choice="required"), "", entry)
    assert plain is not None and plain.tool_format == "json" and plain.grammar
    assert plain.grammar.split("\n")[0].startswith("root ::= r")


def test_tool_choice_none_or_auto_forces_nothing() -> None:
    for choice in ("none", "auto"):
        assert build_constraint(request(tools=[WEATHER], tool_choice=choice), "", None) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    ],
)
def test_impossible_tool_choice_is_a_400(extra: dict[str, Any]) -> None:
    with pytest.raises(APIError) as err:
        check_tool_choice(request(**extra))
    assert err.value.status == 400 and err.value.param == "tool_choice"


def test_possible_tool_choice_passes() -> None:
    check_tool_choice(request(tools=[WEATHER], tool_choice=NAMED))
    check_tool_choice(request(tools=[WEATHER], tool_choice="required"))
    check_tool_choice(request(tool_choice="none"))

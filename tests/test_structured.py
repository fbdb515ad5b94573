"""Unit tests of what a request forces: grammars for tool calls and for response_format."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ov_llm_server.errors import APIError
from ov_llm_server.json_grammar import SchemaError, literal, schema_to_grammar
from ov_llm_server.protocol import ChatCompletionRequest
from ov_llm_server.registry import ModelEntry
from ov_llm_server.structured import build_grammar, check_tool_choice, forced_tool_format
from ov_llm_server.tool_parsers import schema_error
from tiny_model import WEATHER_TOOL as WEATHER

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
        {"$ref": "https://example.com/schema.json"},
        {"type": "tuple"},
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"type": "array", "maxItems": -1},
        {"enum": []},
        {"type": "array", "prefixItems": [{}], "items": False, "minItems": 2},
        False,
        [1, 2],
    ],
)
def test_grammar_refuses_impossible_schemas(schema: Any) -> None:
    with pytest.raises(SchemaError):
        schema_to_grammar(schema)


def test_grammar_follows_local_refs_and_recursion() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    grammar = schema_to_grammar(tree)
    assert "ref0 ::= " in grammar


def test_response_format_becomes_a_grammar_or_a_400() -> None:
    assert build_grammar(request(), "", None) is None
    obj = build_grammar(request(response_format={"type": "json_object"}), "", None)
    assert obj is not None and obj.startswith("root ::= ")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/a"}}}
    with pytest.raises(APIError) as err:
        build_grammar(request(response_format=fmt), "", None)
    assert err.value.status == 400 and err.value.param == "response_format"


def test_response_format_json_schema_without_schema_is_a_400() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x"}}
    with pytest.raises(APIError) as err:
        build_grammar(request(response_format=fmt), "", None)
    assert err.value.status == 400


def test_forced_calls_use_the_models_format() -> None:
    hermes = build_grammar(request(tools=[WEATHER], tool_choice="required"), "<tool_call>", None)
    assert forced_tool_format("<tool_call>", None) == "hermes"
    assert hermes is not None and '"<tool_call>\\n"' in hermes
    assert ")*" not in hermes.splitlines()[0]  # one call unless parallel is asked for
    several = request(tools=[WEATHER], tool_choice="required", parallel_tool_calls=True)
    parallel = build_grammar(several, "<tool_call>", None)
    assert parallel is not None and ")*" in parallel.splitlines()[0]
    llama = build_grammar(
        request(tools=[WEATHER], tool_choice=NAMED), '<|python_tag|> "parameters"', None
    )
    assert forced_tool_format('<|python_tag|> "parameters"', None) == "llama3_json"
    assert llama is not None and '"\\"parameters\\": "' in llama
    entry = ModelEntry(path="x", tool_parser="none")
    plain = build_grammar(request(tools=[WEATHER], tool_choice="required"), "", entry)
    assert forced_tool_format("", entry) == "json"
    assert plain is not None and plain.split("\n")[0].startswith("root ::= r")


def test_tool_choice_none_or_auto_forces_nothing() -> None:
    for choice in ("none", "auto"):
        assert build_grammar(request(tools=[WEATHER], tool_choice=choice), "", None) is None


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


# ---------------------------------------------------------------- every grammar compiles

_keys = st.text(alphabet='ab"\\\n é:{', min_size=0, max_size=4)
_scalars = st.one_of(
    st.sampled_from([{"type": t} for t in ("string", "integer", "number", "boolean", "null")]),
    st.builds(
        lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
        st.integers(0, 3),
        st.integers(0, 300),
    ),
    st.lists(st.one_of(st.none(), st.booleans(), st.integers(), _keys), min_size=1, max_size=3).map(
        lambda values: {"enum": values}
    ),
    _keys.map(lambda value: {"const": value}),
    st.just({}),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in required],
            "additionalProperties": extra,
        },
        st.dictionaries(_keys, children, max_size=4),
        st.sets(_keys, max_size=3),
        st.one_of(st.booleans(), children),
    )
    arrays = st.builds(
        lambda items, low, extra, prefix: {
            "type": "array",
            "items": items,
            "minItems": low,
            "maxItems": low + extra,
            **({"prefixItems": prefix} if prefix else {}),
        },
        children,
        st.integers(0, 2),
        st.integers(0, 3),
        st.lists(children, max_size=2),
    )
    unions = st.lists(children, min_size=1, max_size=3).map(lambda options: {"anyOf": options})
    typed = st.lists(
        st.sampled_from(["string", "integer", "object", "array", "null"]), min_size=1, max_size=3
    ).map(lambda kinds: {"type": kinds})
    return st.one_of(objects, arrays, unions, typed)


_schemas = st.recursive(_scalars, _compound, max_leaves=12)


@pytest.fixture(scope="module")
def pipeline(tiny_ir_int8: Path) -> Any:
    import openvino_genai as og

    pipe = og.ContinuousBatchingPipeline(str(tiny_ir_int8), og.SchedulerConfig(), "CPU", {})
    prompt = "<|im_start|>user\nDescribe Paris<|im_end|>\n<|im_start|>assistant\n"
    ids = pipe.get_tokenizer().encode(prompt, add_special_tokens=False).input_ids
    return pipe, ids


def _run_grammar(
    pipeline: Any, grammar: str, request_id: int, max_new_tokens: int = 6
) -> tuple[str, bool]:
    """The text generated under ``grammar`` and whether the model ended it (not the limit)."""
    import openvino_genai as og

    pipe, ids = pipeline
    config = og.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.do_sample = False
    config.structured_output_config = og.StructuredOutputConfig(grammar=grammar)
    handle = pipe.add_request(request_id, ids, config)
    while handle.get_status() == og.GenerationStatus.RUNNING:
        pipe.step()  # a grammar GenAI cannot compile raises here (and breaks the pipeline)
    output = handle.read_all()[0]
    text = str(pipe.get_tokenizer().decode(output.generated_ids))
    return text, output.finish_reason == og.GenerationFinishReason.STOP


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schemas)
def test_every_grammar_compiles_in_genai(pipeline: Any, schema: Any) -> None:
    try:
        grammar = schema_to_grammar(schema)
    except SchemaError:
        return  # refused up front (a 400), never handed to the engine
    text, ended = _run_grammar(pipeline, grammar, next(_request_ids), max_new_tokens=40)
    if ended:  # what the grammar let the model finish is valid JSON of the schema
        assert schema_error(json.loads(text), schema) is None, text


def test_forced_tool_grammars_compile_in_genai(pipeline: Any) -> None:
    for template in ("<tool_call>", '<|python_tag|> "parameters"', ""):
        entry = ModelEntry(path="x", tool_parser="none") if not template else None
        for choice in ("required", NAMED):
            grammar = build_grammar(request(tools=[WEATHER], tool_choice=choice), template, entry)
            assert grammar is not None
            _run_grammar(pipeline, grammar, next(_request_ids))


_request_ids = itertools.count(1)

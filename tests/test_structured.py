"""The schema model, its grammar and the closer, checked against the ``jsonschema`` package.

Pure logic first (hypothesis, in process), then the grammars compiled by GenAI itself on the
tiny model: a grammar GenAI cannot compile breaks the engine's step for every request.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from live_server import LiveServer
from ov_llm_server.errors import APIError
from ov_llm_server.output import length_cut, plan_output
from ov_llm_server.output.grammar import JsonGrammar
from ov_llm_server.output.schema import SchemaError, compile_schema, repair, validate
from ov_llm_server.output.terms import Alt, Cls, Grammar, Lit, Rep, Rule, Seq, Term, literal
from ov_llm_server.protocol import ChatCompletionRequest
from ov_llm_server.registry import ModelEntry
from schema_strategies import (
    JSON_VALUES,
    PATTERNS,
    SCHEMAS,
    SHORT_STRING_SCHEMAS,
    largest_allowed_schema,
)
from tiny_model import WEATHER_TOOL as WEATHER

NAMED = {"type": "function", "function": {"name": "get_weather"}}
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def request(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


def schema_request(schema: Any, **extra: Any) -> ChatCompletionRequest:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return request(response_format=fmt, **extra)


def grammar_of(schema: Any) -> Grammar:
    builder = JsonGrammar()
    return builder.grammar(builder.model(compile_schema(schema)))


def reference_valid(schema: Any, value: Any) -> bool:
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    return validator.is_valid(value)


def sentence(grammar: Grammar, rnd: random.Random, term: Term | None = None, depth: int = 0) -> str:
    """A random text of the grammar (what GenAI could let a model write)."""
    term = grammar.root if term is None else term
    if depth > 14:
        return grammar.min_text(term) or ""
    if isinstance(term, Lit):
        return term.text
    if isinstance(term, Cls):
        picks = [c for c in 'aZ09 -_é中"\\/\nx' if term.allows(c)]
        return rnd.choice(picks) if picks and rnd.random() < 0.9 else term.sample()
    if isinstance(term, Seq):
        return "".join(sentence(grammar, rnd, t, depth + 1) for t in term.items)
    if isinstance(term, Alt):
        options = [o for o in term.options if grammar.min_text(o) is not None]
        return sentence(grammar, rnd, rnd.choice(options), depth + 1)
    if isinstance(term, Rep):
        top = term.lo + 3 if term.hi is None else min(term.hi, term.lo + 3)
        count = rnd.randint(term.lo, top) if depth < 8 else term.lo
        sep = "" if term.sep is None else sentence(grammar, rnd, term.sep, depth + 1)
        return sep.join(sentence(grammar, rnd, term.item, depth + 1) for _ in range(count))
    assert isinstance(term, Rule)
    return sentence(grammar, rnd, grammar.rules[term.name], depth + 1)


def _grammar_or_skip(schema: Any) -> Grammar:
    try:
        return grammar_of(schema)
    except SchemaError:
        assume(False)
        raise


# ---------------------------------------------------------------- the schema model = jsonschema


@settings(max_examples=300, deadline=None)
@given(schema=SCHEMAS, values=st.lists(JSON_VALUES, max_size=4), seed=st.integers(0, 2**32))
def test_validation_agrees_with_jsonschema(schema: Any, values: list[Any], seed: int) -> None:
    try:
        model = compile_schema(schema)
    except SchemaError:
        return
    rnd = random.Random(seed)
    try:
        grammar = grammar_of(schema)
        values += [json.loads(sentence(grammar, rnd)) for _ in range(3)]
    except SchemaError:
        pass
    for value in values:
        assert (validate(model, value) is None) == reference_valid(schema, value), value


@settings(max_examples=300, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32))
def test_every_sentence_of_the_grammar_is_valid(schema: Any, seed: int) -> None:
    """Grammar ⊆ schema: whatever the grammar lets a model write is valid (after repair)."""
    grammar = _grammar_or_skip(schema)
    model = compile_schema(schema)
    rnd = random.Random(seed)
    for _ in range(5):
        text = sentence(grammar, rnd)
        value = repair(model, json.loads(text))
        assert reference_valid(schema, value), (text, grammar.ebnf())


@settings(max_examples=300, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32), cut=st.floats(0, 1))
def test_any_cut_sentence_closes_into_a_valid_document(schema: Any, seed: int, cut: float) -> None:
    grammar = _grammar_or_skip(schema)
    model = compile_schema(schema)
    text = sentence(grammar, random.Random(seed))
    prefix = text[: int(len(text) * cut)]
    ending = grammar.close(prefix)
    assert ending is not None, (prefix, grammar.ebnf())
    closed = prefix + ending
    assert grammar.complete(closed)
    assert reference_valid(schema, repair(model, json.loads(closed))), closed


def test_shortest_documents() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["children"],
            }
        },
        "$ref": "#/$defs/node",
    }
    assert grammar_of(tree).min_text() == '{"children": []}'
    person = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "age": {"type": "integer", "minimum": 18},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "age"],
    }
    assert grammar_of(person).min_text() == '{"name": "aa", "age": 18}'
    assert grammar_of({"enum": ["long one", "b"]}).min_text() == '"b"'


def test_closing_finishes_strings_numbers_and_literals() -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "n": {"type": "integer", "minimum": 10, "maximum": 99},
            "ok": {"type": "boolean"},
        },
        "required": ["answer", "n", "ok"],
    }
    grammar = grammar_of(schema)
    assert grammar.close('{"answer": "Once upon a ti') == '", "n": 10, "ok": true}'
    assert grammar.close('{"answer": "a\\') == '"", "n": 10, "ok": true}'  # an escaped quote
    assert grammar.close('{"answer": "", "n": 4') == '0, "ok": true}'
    assert grammar.close('{"answer": "", "n": 42, "ok": fa') == "lse}"
    assert grammar.close('{"answer": "", "n": 42, "ok": false}') == ""
    assert grammar.close('{"answer": 1') is None  # not output of this grammar


@settings(max_examples=300, deadline=None)
@given(
    schema=SHORT_STRING_SCHEMAS,
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(1, 9), min_size=1),
)
def test_length_cut_as_text_streams_equals_repair(schema: Any, seed: int, sizes: list[int]) -> None:
    """Cutting maxLength strings piece by piece gives what repairing the whole document does."""
    grammar = _grammar_or_skip(schema)
    model = compile_schema(schema)
    assume(length_cut.streams(model))
    text = sentence(grammar, random.Random(seed))
    cut, out, i = length_cut.LengthCut(model), [], 0
    for size in itertools.cycle(sizes):
        if i >= len(text):
            break
        out.append(cut.feed(text[i : i + size]))
        i += size
    streamed = json.loads("".join(out))
    assert streamed == repair(model, json.loads(text)), (text, "".join(out))
    assert reference_valid(schema, streamed)


def test_a_max_length_under_any_of_is_repaired_whole() -> None:
    short = {"type": "string", "maxLength": 2}
    nested = {"type": "object", "properties": {"a": {"type": "array", "items": short}}}
    assert length_cut.streams(compile_schema(nested))
    assert not length_cut.streams(compile_schema({"anyOf": [nested, {"type": "integer"}]}))
    assert length_cut.streams(compile_schema({"anyOf": [{"type": "string"}, {"type": "null"}]}))
    cut = length_cut.LengthCut(compile_schema(nested))
    assert cut.feed('{"a": ["ab\\"c", "\\n\\n\\n"], "b": "long"}') == (
        '{"a": ["ab", "\\n\\n"], "b": "long"}'
    )


def test_max_length_is_repaired_not_counted() -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "maxLength": 3}},
        "required": ["s"],
    }
    model = compile_schema(schema)
    assert repair(model, {"s": "abcdef"}) == {"s": "abc"}
    assert "{0,3}" not in grammar_of(schema).ebnf()


def test_integer_ranges_are_exact() -> None:
    rnd = random.Random(7)
    for low, high in [(0, 0), (3, 120), (-15, 7), (-999, -100), (1, 10**9), (5, 5), (-1, 0)]:
        schema = {"type": "integer", "minimum": low, "maximum": high}
        grammar = grammar_of(schema)
        for value in {low, high, (low + high) // 2, *(rnd.randint(low, high) for _ in range(30))}:
            assert grammar.complete(str(value)), (value, grammar.ebnf())
        for value in (low - 1, high + 1):
            assert not grammar.complete(str(value)), value
        seen = {int(sentence(grammar, rnd)) for _ in range(50)}
        assert all(low <= v <= high for v in seen)


def test_literal_escapes() -> None:
    assert literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


# ---------------------------------------------------------------- 400s, one per keyword

UNENFORCEABLE = [
    ({"type": "string", "not": {"const": "x"}}, "not"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "if"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties"),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "integer", "multipleOf": 5}, "multipleOf"),
    ({"type": "number", "multipleOf": 0.5}, "multipleOf"),
    ({"type": "number", "minimum": 0.2, "maximum": 0.8}, "minimum"),
    ({"type": "string", "format": "uri"}, "format"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "pattern"),
    ({"type": "string", "pattern": "^(?=a)a$"}, "pattern"),
    ({"type": "string", "pattern": "(?i)^a$"}, "pattern"),
    ({"type": "string", "pattern": "a\\bb"}, "pattern"),
    ({"type": "string", "pattern": "^[a-z]{40}$"}, "pattern"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, "maxLength"),
    ({"type": "string", "minLength": 100}, "minLength"),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "oneOf"),
    ({"type": "object", "properties": {"a": {}}, "maxProperties": 0}, "maxProperties"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"$ref": "#/$defs/missing"}, "$ref"),
    ({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}, "itself"),
    (
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        "$ref",
    ),
]


@pytest.mark.parametrize(("schema", "keyword"), UNENFORCEABLE, ids=[k for _, k in UNENFORCEABLE])
def test_unenforceable_keyword_is_a_400_naming_it(schema: Any, keyword: str) -> None:
    with pytest.raises(APIError) as err:
        plan_output(schema_request(schema), "", None)
    assert err.value.status == 400 and err.value.param == "response_format"
    assert f"'{keyword}'" in err.value.message or keyword in err.value.message


def test_unenforceable_tool_parameters_are_a_400() -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "not": {}}},
    }
    for choice in ("auto", "required"):
        with pytest.raises(APIError) as err:
            plan_output(request(tools=[tool], tool_choice=choice), "", None)
        assert err.value.param == "tools" and "'not'" in err.value.message


def test_a_budget_too_small_is_a_400(server: LiveServer) -> None:
    # The plan names the shortest valid answer; the engine, which holds the tokenizer,
    # counts it against the budget the request will really have.
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    assert plan_output(schema_request(schema), "", None).shortest_answer == (
        '{"city": "", "population": 0}'
    )
    asked = {"model": "tiny-int8", "messages": [{"role": "user", "content": "Say hello"}]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for body in (
        {**asked, "response_format": fmt},
        {**asked, "tools": [WEATHER], "tool_choice": NAMED},
    ):
        refused = httpx.post(f"{server.v1}/chat/completions", json={**body, "max_tokens": 3})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "max_tokens" and error["code"] == "max_tokens_too_small"
        served = httpx.post(
            f"{server.v1}/chat/completions", json={**body, "max_tokens": 200}, timeout=60
        )
        assert served.status_code == 200, served.text


def test_sampling_that_fights_the_grammar_is_a_400() -> None:
    for extra, param in (({"ignore_eos": True}, "ignore_eos"), ({"min_tokens": 5}, "min_tokens")):
        with pytest.raises(APIError) as err:
            plan_output(request(response_format={"type": "json_object"}, **extra), "", None)
        assert err.value.param == param


def test_response_format_plans() -> None:
    assert plan_output(request(), "", None).grammar is None
    obj = plan_output(request(response_format={"type": "json_object"}), "", None).grammar
    assert obj is not None and obj.startswith("root ::= ")
    with pytest.raises(APIError) as err:
        plan_output(
            request(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
            "",
            None,
        )
    assert err.value.status == 400


def test_forced_calls_use_the_models_format() -> None:
    hermes = plan_output(
        request(tools=[WEATHER], tool_choice="required"), "<tool_call>", None
    ).grammar
    assert hermes is not None and '"<tool_call>\\n' in hermes
    several = request(tools=[WEATHER], tool_choice="required", parallel_tool_calls=True)
    parallel = plan_output(several, "<tool_call>", None).grammar
    assert parallel is not None and parallel != hermes and '\\n" (' in parallel
    llama = plan_output(
        request(tools=[WEATHER], tool_choice=NAMED), '<|python_tag|> "parameters"', None
    )
    assert llama.grammar is not None and '\\"parameters\\": ' in llama.grammar
    mistral = plan_output(request(tools=[WEATHER], tool_choice=NAMED), "[TOOL_CALLS]", None)
    assert mistral.grammar is not None and "[TOOL_CALLS][" in mistral.grammar
    v11 = plan_output(request(tools=[WEATHER], tool_choice=NAMED), "[TOOL_CALLS] [ARGS]", None)
    assert v11.grammar is not None and "get_weather[ARGS]" in v11.grammar
    entry = ModelEntry(path="x", tool_parser="none")
    plain = plan_output(request(tools=[WEATHER], tool_choice="required"), "", entry)
    assert plain.grammar is not None and plain.grammar.startswith('root ::= "{\\"name\\"')


def test_tool_choice_none_or_auto_forces_nothing_and_none_hides_tools() -> None:
    auto = plan_output(request(tools=[WEATHER], tool_choice="auto"), "", None)
    assert auto.grammar is None and auto.template_tools == [WEATHER]
    none = plan_output(request(tools=[WEATHER], tool_choice="none"), "", None)
    assert none.grammar is None and none.template_tools is None


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    ],
)
def test_impossible_tool_choice_is_a_400(extra: dict[str, Any]) -> None:
    with pytest.raises(APIError) as err:
        plan_output(request(**extra), "", None)
    assert err.value.status == 400 and err.value.param == "tool_choice"


# ---------------------------------------------------------------- every grammar compiles in GenAI


@pytest.fixture(scope="module")
def pipeline(tiny_ir_int8: Path) -> Any:
    import openvino_genai as og

    pipe = og.ContinuousBatchingPipeline(str(tiny_ir_int8), og.SchedulerConfig(), "CPU", {})
    prompt = "<|im_start|>user\nDescribe Paris<|im_end|>\n<|im_start|>assistant\n"
    ids = pipe.get_tokenizer().encode(prompt, add_special_tokens=False).input_ids
    return pipe, ids


_request_ids = itertools.count(1)


def _run_grammar(pipeline: Any, grammar: str, max_new_tokens: int = 6) -> tuple[str, bool, float]:
    """The text generated under ``grammar``, whether the model ended it, the first step's time."""
    import openvino_genai as og

    pipe, ids = pipeline
    config = og.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.do_sample = True
    config.temperature = 1.5
    config.rng_seed = next(_request_ids)
    config.structured_output_config = og.StructuredOutputConfig(grammar=grammar)
    handle = pipe.add_request(next(_request_ids), ids, config)
    first = None
    while handle.get_status() == og.GenerationStatus.RUNNING:
        started = time.perf_counter()
        pipe.step()  # a grammar GenAI cannot compile raises here (and breaks the pipeline)
        first = first if first is not None else time.perf_counter() - started
    output = handle.read_all()[0]
    text = str(pipe.get_tokenizer().decode(output.generated_ids))
    return text, output.finish_reason == og.GenerationFinishReason.STOP, first or 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMAS)
def test_every_grammar_compiles_in_genai(pipeline: Any, schema: Any) -> None:
    try:
        grammar = grammar_of(schema)
    except SchemaError:
        return  # refused up front (a 400), never handed to the engine
    model = compile_schema(schema)
    text, ended, _ = _run_grammar(pipeline, grammar.ebnf(), max_new_tokens=24)
    if not ended:
        text += grammar.close(text) or ""
    assert reference_valid(schema, repair(model, json.loads(text))), text


def test_forced_tool_grammars_compile_in_genai(pipeline: Any) -> None:
    for template in (
        "<tool_call>",
        '<|python_tag|> "parameters"',
        "[TOOL_CALLS]",
        "[TOOL_CALLS][ARGS]",
        "",
    ):
        entry = ModelEntry(path="x", tool_parser="none") if not template else None
        for choice in ("required", NAMED):
            plan = plan_output(request(tools=[WEATHER], tool_choice=choice), template, entry)
            assert plan.grammar is not None
            _run_grammar(pipeline, plan.grammar)


@pytest.mark.parametrize(
    "string",
    [{"pattern": p} for p in PATTERNS]
    + [{"format": f} for f in ("date", "time", "date-time", "uuid", "email", "ipv4")]
    + [{"minLength": 16}, {"maxLength": 3}],
    ids=lambda s: next(iter(s.values())),
)
def test_every_pattern_and_format_compiles_and_validates(
    pipeline: Any, string: dict[str, Any]
) -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", **string}},
        "required": ["s"],
    }
    grammar = grammar_of(schema)
    for _ in range(2):
        text, ended, _ = _run_grammar(pipeline, grammar.ebnf(), max_new_tokens=30)
        if not ended:
            text += grammar.close(text) or ""
        value = repair(compile_schema(schema), json.loads(text))
        assert reference_valid(schema, value), text


def test_the_largest_grammar_allowed_compiles(pipeline: Any) -> None:
    """Wide anyOf, every format, counted patterns up to the limit, deep nesting: it compiles."""
    schema = largest_allowed_schema()
    grammar = grammar_of(schema)
    _run_grammar(pipeline, grammar.ebnf())

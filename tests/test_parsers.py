"""Unit tests of the output parsers: tool calls, reasoning, and their streaming behaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ov_llm_server.parsing import OutputParser, ParsedDelta, build_output_parser
from ov_llm_server.protocol import ChatCompletionRequest
from ov_llm_server.reasoning import ThinkParser
from ov_llm_server.registry import ModelEntry
from ov_llm_server.tool_parsers import (
    ForcedToolParser,
    HermesToolParser,
    Llama3JsonToolParser,
    ToolCatalog,
    detect_tool_parser,
    forced_tool_schema,
    schema_error,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}

HERMES_TEMPLATE = "{% if tools %}<tools>{{ tools }}</tools> <tool_call>{% endif %}"
LLAMA_TEMPLATE = '{"name": function name, "parameters": dict} <|python_tag|>'


def request(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


def catalog(*tools: dict[str, Any]) -> ToolCatalog:
    return ToolCatalog(request(tools=list(tools or [WEATHER, TIME])).tools or [])


def hermes(name: str, arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def run(parser: OutputParser, chunks: list[str]) -> ParsedDelta:
    out = ParsedDelta()
    for chunk in chunks:
        out.merge(parser.feed(chunk))
    out.merge(parser.finish())
    return out


def calls(delta: ParsedDelta) -> list[tuple[int, str, Any]]:
    return [(c.index, c.name, json.loads(c.arguments)) for c in delta.tool_calls]


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    edges = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# ---------------------------------------------------------------- hermes


def test_hermes_single_call() -> None:
    out = run(HermesToolParser(catalog()), [hermes("get_weather", {"city": "Paris"})])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    assert out.content == ""
    call = out.tool_calls[0]
    assert call.id.startswith("call_") and len(call.id) > 10
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_hermes_parallel_calls_count_up_and_whitespace_between_is_not_content() -> None:
    text = hermes("get_weather", {"city": "Paris"}) + "\n" + hermes("get_time", {})
    out = run(HermesToolParser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {})]
    assert out.content == ""
    assert out.tool_calls[0].id != out.tool_calls[1].id


def test_hermes_text_before_and_after_calls_is_content() -> None:
    text = "Let me check.\n" + hermes("get_weather", {"city": "Rome"}) + "\nDone."
    out = run(HermesToolParser(catalog()), [text])
    assert out.content == "Let me check.Done."
    assert calls(out) == [(0, "get_weather", {"city": "Rome"})]


def test_hermes_plain_text_is_kept_exactly() -> None:
    text = "  Hello <tool there>\n  a < b, x <tool_ \n\n"
    assert run(HermesToolParser(catalog()), [text]).content == text
    assert run(HermesToolParser(catalog()), list(text)).content == text


def test_hermes_arguments_as_json_string_are_accepted() -> None:
    body = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})})
    out = run(HermesToolParser(catalog()), [f"<tool_call>{body}</tool_call>"])
    assert calls(out) == [(0, "get_weather", {"city": "Oslo"})]


def test_hermes_holds_back_a_partial_tag() -> None:
    parser = HermesToolParser(catalog())
    assert parser.feed("Sure <tool_c").content == "Sure"
    assert parser.feed("all>").content == ""
    assert parser.feed('{"name": "get_time", "arguments": {}}').tool_calls == []
    delta = parser.feed("</tool_call>")
    assert [c.name for c in delta.tool_calls] == ["get_time"]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"',  # truncated JSON
        "not json at all",
        '{"name": "launch_rockets", "arguments": {}}',  # unknown function
        '{"name": "get_weather", "arguments": {"town": "Paris"}}',  # misses required "city"
        '{"name": "get_weather", "arguments": {"city": 7}}',  # wrong type
        '{"name": "get_weather", "arguments": "{broken"}',
        '{"name": "get_weather", "arguments": [1, 2]}',
        '["get_weather"]',
    ],
)
def test_hermes_malformed_call_is_returned_as_content(body: str) -> None:
    text = f"Hmm <tool_call>{body}</tool_call>"
    out = run(HermesToolParser(catalog()), [text])
    assert out.tool_calls == []
    assert out.content == text


def test_hermes_unclosed_call_at_the_end() -> None:
    complete = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    out = run(HermesToolParser(catalog()), [complete])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    cut = '<tool_call>\n{"name": "get_weather", "argum'
    out = run(HermesToolParser(catalog()), [cut])
    assert out.tool_calls == [] and out.content == cut


def test_hermes_bad_call_between_good_ones_keeps_indices_dense() -> None:
    text = hermes("get_time", {}) + "<tool_call>{oops}</tool_call>" + hermes("get_time", {})
    out = run(HermesToolParser(catalog()), [text])
    assert [c.index for c in out.tool_calls] == [0, 1]
    assert out.content == "<tool_call>{oops}</tool_call>"


# ---------------------------------------------------------------- llama 3 json


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '  {"name": "get_weather", "arguments": {"city": "Paris"}}\n',
    ],
)
def test_llama3_single_call(text: str) -> None:
    out = run(Llama3JsonToolParser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    assert out.content == ""


def test_llama3_several_calls() -> None:
    text = (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {}}'
    )
    out = run(Llama3JsonToolParser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {})]


@pytest.mark.parametrize(
    "text",
    [
        "The weather is fine.",
        '{"name": "get_weather", "parameters": {"city": "Par',
        '{"answer": 42}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}} and then some words',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "nope"}',
    ],
)
def test_llama3_non_calls_are_content(text: str) -> None:
    out = run(Llama3JsonToolParser(catalog()), [text])
    assert out.tool_calls == []
    assert out.content == text


def test_llama3_plain_text_streams_without_waiting() -> None:
    parser = Llama3JsonToolParser(catalog())
    assert parser.feed("Hel").content == "Hel"
    assert parser.feed("lo").content == "lo"


# ---------------------------------------------------------------- forced (structured output)


def test_forced_output_object_and_list() -> None:
    out = run(ForcedToolParser(catalog()), ['{"name": "get_time", "arguments": {}}'])
    assert calls(out) == [(0, "get_time", {})]
    text = json.dumps([{"name": "get_time", "arguments": {}}] * 2)
    out = run(ForcedToolParser(catalog()), [text])
    assert calls(out) == [(0, "get_time", {}), (1, "get_time", {})]


def test_forced_output_cut_off_is_content() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Par'
    out = run(ForcedToolParser(catalog()), [text])
    assert out.tool_calls == [] and out.content == text


def test_forced_tool_schema_shapes() -> None:
    assert forced_tool_schema(request(tools=[WEATHER])) is None
    assert forced_tool_schema(request(tools=[WEATHER], tool_choice="auto")) is None
    assert forced_tool_schema(request(tool_choice="required")) is None
    named = forced_tool_schema(
        request(
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    )
    assert named is not None
    assert named["properties"]["name"] == {"type": "string", "enum": ["get_time"]}
    several = request(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=True)
    required = forced_tool_schema(several)
    assert required is not None and required["type"] == "array" and required["minItems"] == 1
    assert len(required["items"]["anyOf"]) == 2
    # One call unless parallel calls were asked for explicitly.
    for extra in ({}, {"parallel_tool_calls": False}):
        single = forced_tool_schema(request(tools=[WEATHER], tool_choice="required", **extra))
        assert single is not None and single["type"] == "object"
    assert single["properties"]["arguments"] == WEATHER["function"]["parameters"]  # type: ignore[index]


# ---------------------------------------------------------------- schema checks


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"city": "Paris"}, True),
        ({"city": "Paris", "days": 3}, True),
        ({"city": "Paris", "days": 3.0}, True),
        ({"city": "Paris", "days": 3.5}, False),
        ({"city": "Paris", "days": True}, False),
        ({"days": 3}, False),
        ({"city": None}, False),
    ],
)
def test_schema_error(value: Any, ok: bool) -> None:
    schema = WEATHER["function"]["parameters"]  # type: ignore[index]
    assert (schema_error(value, schema) is None) is ok


def test_schema_error_keywords() -> None:
    strict = {
        "type": "object",
        "properties": {"a": {"enum": [1, 2]}},
        "additionalProperties": False,
    }
    assert schema_error({"a": 1}, strict) is None
    assert schema_error({"a": 3}, strict) is not None
    assert schema_error({"a": 1, "b": 2}, strict) is not None
    listy = {"type": "array", "items": {"type": ["string", "null"]}}
    assert schema_error(["x", None], listy) is None
    assert schema_error(["x", 1], listy) is not None
    assert schema_error({"x": 1}, {"anyOf": [{"type": "string"}, {"type": "object"}]}) is None
    assert schema_error(1, {"oneOf": [{"type": "string"}, {"type": "object"}]}) is not None
    assert schema_error({"x": 1}, {"type": "object", "x-unknown-keyword": 5}) is None


# ---------------------------------------------------------------- reasoning


def test_think_block_goes_to_reasoning() -> None:
    out = run(ThinkParser(), ["<think>2 plus 2 is 4.</think>The answer is 4."])
    assert (out.reasoning, out.content) == ("2 plus 2 is 4.", "The answer is 4.")


def test_think_opened_by_the_prompt() -> None:
    out = run(ThinkParser(opened=True), ["Let me think.\n</think>\n\nIt is 4."])
    assert (out.reasoning, out.content) == ("Let me think.\n", "It is 4.")


def test_think_only_counts_at_the_start() -> None:
    text = "Use <think> tags like <think>this</think>."
    out = run(ThinkParser(), [text])
    assert (out.reasoning, out.content) == ("", text)


def test_think_cut_off_stays_reasoning() -> None:
    out = run(ThinkParser(), ["<think>still thinking ab"])
    assert (out.reasoning, out.content) == ("still thinking ab", "")


def test_think_streams_reasoning_and_holds_a_partial_close_tag() -> None:
    parser = ThinkParser()
    assert parser.feed("<thi").reasoning == ""
    assert parser.feed("nk>abc</th").reasoning == "abc"
    delta = parser.feed("ink>x")
    assert (delta.reasoning, delta.content) == ("", "x")


# ---------------------------------------------------------------- the factory


def test_factory_detects_formats() -> None:
    assert detect_tool_parser(HERMES_TEMPLATE) == "hermes"
    assert detect_tool_parser(LLAMA_TEMPLATE) == "llama3_json"
    text = '{"name": "get_time", "parameters": {}}'
    out = run(build_output_parser(LLAMA_TEMPLATE, None, request(tools=[TIME])), [text])
    assert calls(out) == [(0, "get_time", {})]


def test_factory_without_tools_parses_no_calls() -> None:
    text = hermes("get_time", {})
    out = run(build_output_parser(HERMES_TEMPLATE, None, request()), [text])
    assert out.content == text and not out.tool_calls
    none = request(tools=[TIME], tool_choice="none")
    out = run(build_output_parser(HERMES_TEMPLATE, None, none), [text])
    assert out.content == text and not out.tool_calls


def test_factory_registry_overrides() -> None:
    entry = ModelEntry(path="x", tool_parser="llama3_json", reasoning_parser="none")
    parser = build_output_parser(HERMES_TEMPLATE, entry, request(tools=[TIME]))
    out = run(parser, ['<think>a</think>{"name": "get_time", "parameters": {}}'])
    assert out.reasoning == "" and not out.tool_calls
    off = ModelEntry(path="x", tool_parser="none")
    out = run(
        build_output_parser(HERMES_TEMPLATE, off, request(tools=[TIME])), [hermes("get_time", {})]
    )
    assert not out.tool_calls


def test_factory_reasoning_then_calls() -> None:
    text = "<think>I need the time.</think>\n" + hermes("get_time", {})
    out = run(build_output_parser(HERMES_TEMPLATE, None, request(tools=[TIME])), [text])
    assert out.reasoning == "I need the time."
    assert out.content == ""
    assert calls(out) == [(0, "get_time", {})]


def test_factory_prompt_that_opens_thinking() -> None:
    parser = build_output_parser(
        "<think>", None, request(), prompt="<|im_start|>assistant\n<think>\n"
    )
    out = run(parser, ["hmm</think>ok"])
    assert (out.reasoning, out.content) == ("hmm", "ok")


def test_factory_forced_call_in_the_models_own_format() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    forced = request(tools=[TIME], tool_choice=choice)
    out = run(build_output_parser(HERMES_TEMPLATE, None, forced), [hermes("get_time", {})])
    assert calls(out) == [(0, "get_time", {})]
    out = run(
        build_output_parser(LLAMA_TEMPLATE, None, forced),
        ['{"name": "get_time", "parameters": {}}'],
    )
    assert calls(out) == [(0, "get_time", {})]
    # No format of its own: plain JSON.
    plain = ModelEntry(path="x", tool_parser="none")
    out = run(build_output_parser("", plain, forced), ['{"name": "get_time", "arguments": {}}'])
    assert calls(out) == [(0, "get_time", {})]


# ---------------------------------------------------------------- streaming = whole


def _answer(pieces: list[tuple[str, str]]) -> str:
    parts = []
    for kind, value in pieces:
        if kind == "text":
            parts.append(value)
        elif kind == "call":
            parts.append(hermes("get_weather", {"city": value}))
        else:
            parts.append(f"<tool_call>{value}</tool_call>")
    return "".join(parts)


_pieces = st.lists(
    st.one_of(
        # No "_" in plain text: it can start a tag ("<tool") but never complete one.
        st.tuples(st.just("text"), st.text(alphabet='ab <>/\n{}"tolca', max_size=12)),
        st.tuples(st.just("call"), st.text(alphabet='PRxyz é"\\', min_size=1, max_size=6)),
        st.tuples(st.just("bad"), st.text(alphabet='{}"name: ', max_size=10)),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(pieces=_pieces, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_the_same_result_as_the_whole(
    pieces: list[tuple[str, str]], cuts: list[int]
) -> None:
    text = _answer(pieces)
    whole = run(build_output_parser(HERMES_TEMPLATE, None, request(tools=[WEATHER])), [text])
    streamed = run(
        build_output_parser(HERMES_TEMPLATE, None, request(tools=[WEATHER])), split(text, cuts)
    )
    assert streamed.content == whole.content
    assert streamed.reasoning == whole.reasoning
    assert [(c.index, c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.index, c.name, c.arguments) for c in whole.tool_calls
    ]
    expected = [p[1] for p in pieces if p[0] == "call"]
    assert [json.loads(c.arguments)["city"] for c in whole.tool_calls] == expected
    assert [c.index for c in whole.tool_calls] == list(range(len(expected)))


@settings(max_examples=200, deadline=None)
@given(
    thought=st.text(alphabet="ab <>/\nthink", max_size=20),
    answer=st.text(alphabet="ab <>/\nthink", max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=8),
)
def test_think_split_is_stable(thought: str, answer: str, cuts: list[int]) -> None:
    text = f"<think>{thought}</think>{answer}"
    whole = run(ThinkParser(), [text])
    streamed = run(ThinkParser(), split(text, cuts))
    assert (streamed.reasoning, streamed.content) == (whole.reasoning, whole.content)
    if text.find("</think>") == len("<think>") + len(thought):
        assert whole.reasoning == thought
        assert whole.content == answer.lstrip()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=8))
def test_nothing_is_lost(text: str, cuts: list[int]) -> None:
    """Text without any tag comes back byte for byte, however it was streamed."""
    if "<tool_call>" in text or text.lstrip().startswith("<think>"):
        return
    out = run(
        build_output_parser(HERMES_TEMPLATE, None, request(tools=[WEATHER])), split(text, cuts)
    )
    assert out.content == text and not out.tool_calls and not out.reasoning


@settings(max_examples=200, deadline=None)
@given(
    thought=st.text(alphabet="ab <>/\n", max_size=12),
    cities=st.lists(st.text(alphabet="PRxyz é", min_size=1, max_size=5), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
    python_tag=st.booleans(),
)
def test_llama3_calls_after_thinking_survive_any_split(
    thought: str, cities: list[str], cuts: list[int], python_tag: bool
) -> None:
    calls_text = "; ".join(
        json.dumps({"name": "get_weather", "parameters": {"city": c}}) for c in cities
    )
    text = f"<think>{thought}</think>\n" + ("<|python_tag|>" if python_tag else "") + calls_text
    parser = build_output_parser(LLAMA_TEMPLATE, None, request(tools=[WEATHER]))
    out = run(parser, split(text, cuts))
    assert out.reasoning == thought
    assert out.content == ""
    assert [json.loads(c.arguments)["city"] for c in out.tool_calls] == cities
    assert [c.index for c in out.tool_calls] == list(range(len(cities)))

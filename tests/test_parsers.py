"""Unit tests of the output parsers: tool calls, reasoning, and their streaming behaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ov_llm_server.output import OutputParser, ParsedDelta, plan_output
from ov_llm_server.output.parsers import ToolCatalog, detect, get, names
from ov_llm_server.output.parsers.mistral import Mistral
from ov_llm_server.output.reasoning import ThinkParser
from ov_llm_server.output.schema import compile_schema, validate
from ov_llm_server.protocol import ChatCompletionRequest
from ov_llm_server.registry import ModelEntry

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
MISTRAL_TEMPLATE = "[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS] [TOOL_CALLS]"


def request(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


def catalog(*tools: dict[str, Any], new_id: Any = None) -> ToolCatalog:
    chosen = list(tools or [WEATHER, TIME])
    models = {t["function"]["name"]: compile_schema(t["function"]["parameters"]) for t in chosen}
    return ToolCatalog(models, new_id=new_id)


def hermes_parser(cat: ToolCatalog, limit: int | None = None) -> OutputParser:
    return get("hermes").parser(cat, limit)


def llama3_parser(cat: ToolCatalog, limit: int | None = None) -> OutputParser:
    return get("llama3_json").parser(cat, limit)


def json_parser(cat: ToolCatalog, limit: int | None = None) -> OutputParser:
    return get("json").parser(cat, limit)


def mistral_parser(cat: ToolCatalog, limit: int | None = None) -> OutputParser:
    return Mistral.parser(cat, limit)


def build_output_parser(
    template: str, entry: ModelEntry | None, req: ChatCompletionRequest, *, prompt: str = ""
) -> OutputParser:
    return plan_output(req, template, entry).parser(prompt)


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
    out = run(hermes_parser(catalog()), [hermes("get_weather", {"city": "Paris"})])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    assert out.content == ""
    call = out.tool_calls[0]
    assert call.id.startswith("call_") and len(call.id) > 10
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_hermes_parallel_calls_count_up_and_whitespace_between_is_not_content() -> None:
    text = hermes("get_weather", {"city": "Paris"}) + "\n" + hermes("get_time", {})
    out = run(hermes_parser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {})]
    assert out.content == ""
    assert out.tool_calls[0].id != out.tool_calls[1].id


def test_hermes_text_before_and_after_calls_is_content() -> None:
    text = "Let me check.\n" + hermes("get_weather", {"city": "Rome"}) + "\nDone."
    out = run(hermes_parser(catalog()), [text])
    assert out.content == "Let me check.Done."
    assert calls(out) == [(0, "get_weather", {"city": "Rome"})]


def test_hermes_plain_text_is_kept_exactly() -> None:
    text = "  Hello <tool there>\n  a < b, x <tool_ \n\n"
    assert run(hermes_parser(catalog()), [text]).content == text
    assert run(hermes_parser(catalog()), list(text)).content == text


def test_hermes_arguments_as_json_string_are_accepted() -> None:
    body = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})})
    out = run(hermes_parser(catalog()), [f"<tool_call>{body}</tool_call>"])
    assert calls(out) == [(0, "get_weather", {"city": "Oslo"})]


def test_hermes_holds_back_a_partial_tag() -> None:
    parser = hermes_parser(catalog())
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
    out = run(hermes_parser(catalog()), [text])
    assert out.tool_calls == []
    assert out.content == text


def test_hermes_unclosed_call_at_the_end() -> None:
    complete = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    out = run(hermes_parser(catalog()), [complete])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    cut = '<tool_call>\n{"name": "get_weather", "argum'
    out = run(hermes_parser(catalog()), [cut])
    assert out.tool_calls == [] and out.content == cut


def test_hermes_closing_tag_inside_an_argument() -> None:
    text = hermes("get_weather", {"city": "a</tool_call>b"}) + "Done."
    out = run(hermes_parser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "a</tool_call>b"})]
    assert out.content == "Done."
    for cut in range(len(text)):
        assert calls(run(hermes_parser(catalog()), [text[:cut], text[cut:]])) == calls(out)


@pytest.mark.parametrize(
    "city",
    [
        "a</tool_call>b<tool_call>c",  # both tags, in the order that once cut the call short
        "<tool_call>",
        'say \\"</tool_call>\\" then <tool_call>',  # escaped quotes around the tags
    ],
)
def test_hermes_tags_inside_strings_are_text(city: str) -> None:
    # Sampled at a high temperature, a forced call's free strings may hold either tag.
    text = hermes("get_weather", {"city": city}) + "Done."
    out = run(hermes_parser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": city})]
    assert out.content == "Done."
    for cut in range(len(text)):
        assert calls(run(hermes_parser(catalog()), [text[:cut], text[cut:]])) == calls(out)
    assert calls(run(hermes_parser(catalog()), list(text))) == calls(out)


def test_hermes_bad_call_between_good_ones_keeps_indices_dense() -> None:
    text = hermes("get_time", {}) + "<tool_call>{oops}</tool_call>" + hermes("get_time", {})
    out = run(hermes_parser(catalog()), [text])
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
    out = run(llama3_parser(catalog()), [text])
    assert calls(out) == [(0, "get_weather", {"city": "Paris"})]
    assert out.content == ""


def test_llama3_several_calls() -> None:
    text = (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {}}'
    )
    out = run(llama3_parser(catalog()), [text])
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
    out = run(llama3_parser(catalog()), [text])
    assert out.tool_calls == []
    assert out.content == text


def test_llama3_plain_text_streams_without_waiting() -> None:
    parser = llama3_parser(catalog())
    assert parser.feed("Hel").content == "Hel"
    assert parser.feed("lo").content == "lo"


# ---------------------------------------------------------------- forced (structured output)


def test_forced_output_object_and_list() -> None:
    out = run(json_parser(catalog()), ['{"name": "get_time", "arguments": {}}'])
    assert calls(out) == [(0, "get_time", {})]
    text = json.dumps([{"name": "get_time", "arguments": {}}] * 2)
    out = run(json_parser(catalog()), [text])
    assert calls(out) == [(0, "get_time", {}), (1, "get_time", {})]


def test_forced_output_cut_off_is_content() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Par'
    out = run(json_parser(catalog()), [text])
    assert out.tool_calls == [] and out.content == text


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
    model = compile_schema(WEATHER["function"]["parameters"])  # type: ignore[index]
    assert (validate(model, value) is None) is ok


def test_schema_error_keywords() -> None:
    def error(value: Any, schema: Any) -> str | None:
        return validate(compile_schema(schema), value)

    strict = {
        "type": "object",
        "properties": {"a": {"enum": [1, 2]}},
        "additionalProperties": False,
    }
    assert error({"a": 1}, strict) is None
    assert error({"a": 3}, strict) is not None
    assert error({"a": 1, "b": 2}, strict) is not None
    listy = {"type": "array", "items": {"type": ["string", "null"]}}
    assert error(["x", None], listy) is None
    assert error(["x", 1], listy) is not None
    assert error({"x": 1}, {"anyOf": [{"type": "string"}, {"type": "object"}]}) is None
    assert error(1, {"oneOf": [{"type": "string"}, {"type": "object"}]}) is not None
    assert error({"x": 1}, {"type": "object", "x-unknown-keyword": 5}) is None
    refs = {
        "$defs": {"c": {"type": "string"}},
        "type": "object",
        "properties": {"c": {"$ref": "#/$defs/c"}},
    }
    assert error({"c": "x"}, refs) is None and error({"c": 1}, refs) is not None


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
    assert detect(HERMES_TEMPLATE) == "hermes"
    assert detect(LLAMA_TEMPLATE) == "llama3_json"
    assert detect(MISTRAL_TEMPLATE) == "mistral"
    assert detect(MISTRAL_TEMPLATE + "[ARGS]") == "mistral_v11"
    assert detect("{{ messages }}") is None  # read as hermes, forced as plain JSON
    assert set(names()) >= {"hermes", "llama3_json", "mistral", "mistral_v11", "json"}
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


# ---------------------------------------------------------------- mistral


def mistral_list(*cities: str) -> str:
    return "[TOOL_CALLS]" + json.dumps(
        [{"name": "get_weather", "arguments": {"city": c}} for c in cities]
    )


def mistral_v11(*cities: str) -> str:
    return "".join(f"[TOOL_CALLS]get_weather[ARGS]{json.dumps({'city': c})}" for c in cities)


@pytest.mark.parametrize(
    "text",
    [
        mistral_list("Paris", "Rome"),
        mistral_v11("Paris", "Rome"),
        # An engine that skips special tokens hands over the list without the marker.
        json.dumps([{"name": "get_weather", "arguments": {"city": c}} for c in ("Paris", "Rome")]),
        "[TOOL_CALLS]get_weather[ARGS]" + json.dumps({"city": "Paris"}) + mistral_v11("Rome"),
    ],
    ids=["list", "v11", "no-marker", "v11-mixed"],
)
def test_mistral_calls(text: str) -> None:
    out = run(mistral_parser(catalog(new_id=Mistral.new_id)), [text])
    assert calls(out) == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_weather", {"city": "Rome"}),
    ]
    assert out.content == ""
    # Mistral's templates refuse any other call id.
    assert all(len(c.id) == 9 and c.id.isalnum() for c in out.tool_calls)


def test_mistral_text_before_the_marker_is_content() -> None:
    parser = mistral_parser(catalog())
    assert parser.feed("Let me look. [TOOL_").content == "Let me look. "
    out = run(parser, ['CALLS][{"name": "get_time", "arguments": {}}]'])
    assert calls(out) == [(0, "get_time", {})]


@pytest.mark.parametrize(
    "text",
    [
        "[TOOL_CALLS]",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Par',
        '[TOOL_CALLS][{"name": "launch", "arguments": {}}]',
        "[TOOL_CALLS]get_weather[ARGS]{broken",
        "[TOOL_CALLS]get_weather{}",
        "[1, 2, 3]",
        "Plain [text] with [brackets",
    ],
)
def test_mistral_malformed_is_content(text: str) -> None:
    out = run(mistral_parser(catalog()), [text])
    assert out.tool_calls == [] and out.content == text


@pytest.mark.parametrize("v11", [False, True], ids=["list", "v11"])
@pytest.mark.parametrize(
    "city",
    ["[TOOL_CALLS]", "a[ARGS]b", 'x"[TOOL_CALLS]get_weather[ARGS]{}', "[TOOL_CALLS][{"],
)
def test_mistral_markers_inside_strings_are_text(city: str, v11: bool) -> None:
    # Sampled at a high temperature, a forced call's free strings may hold the markers.
    text = (mistral_v11 if v11 else mistral_list)(city, "Rome")
    out = run(mistral_parser(catalog()), [text])
    assert calls(out) == [
        (0, "get_weather", {"city": city}),
        (1, "get_weather", {"city": "Rome"}),
    ]
    assert out.content == ""
    for cut in range(len(text)):
        assert calls(run(mistral_parser(catalog()), [text[:cut], text[cut:]])) == calls(out)


def _mistral_answer(pieces: list[tuple[str, str]], v11: bool) -> str:
    parts = []
    for kind, value in pieces:
        if kind == "text":
            parts.append(value)
        else:
            parts.append(mistral_v11(value) if v11 else mistral_list(value))
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    lead=st.text(alphabet="ab [TOLCS_]\n", max_size=12),
    cities=st.lists(st.text(alphabet='PRxyz é"\\', min_size=1, max_size=6), max_size=3),
    v11=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_mistral_any_split_gives_the_same_result_as_the_whole(
    lead: str, cities: list[str], v11: bool, cuts: list[int]
) -> None:
    text = lead + _mistral_answer([("call", c) for c in cities], v11)
    whole = run(mistral_parser(catalog()), [text])
    streamed = run(mistral_parser(catalog()), split(text, cuts))
    assert streamed.content == whole.content
    assert [(c.index, c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.index, c.name, c.arguments) for c in whole.tool_calls
    ]
    if "[TOOL_CALLS]" not in lead and "[{" not in lead.lstrip()[:2] and cities:
        assert [json.loads(c.arguments)["city"] for c in whole.tool_calls] == cities
        assert whole.content == lead


# ---------------------------------------------------------------- parallel_tool_calls: false


def test_one_call_only_and_done_when_parallel_calls_are_off() -> None:
    text = hermes("get_weather", {"city": "Paris"}) + "\n" + hermes("get_weather", {"city": "Rome"})
    single = request(tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False)
    parser = build_output_parser(HERMES_TEMPLATE, None, single)
    first = parser.feed(text[: len(text) // 2 + 5])
    assert calls(first) == [(0, "get_weather", {"city": "Paris"})]
    assert parser.done  # the server may stop generating here
    rest = parser.feed(text[len(text) // 2 + 5 :])
    rest.merge(parser.finish())
    assert not rest  # nothing after the first call is kept
    both = run(build_output_parser(HERMES_TEMPLATE, None, request(tools=[WEATHER])), [text])
    assert len(both.tool_calls) == 2


@pytest.mark.parametrize(
    ("template", "text"),
    [
        (
            LLAMA_TEMPLATE,
            '{"name": "get_time", "parameters": {}}; {"name": "get_time", "parameters": {}}',
        ),
        (MISTRAL_TEMPLATE, mistral_list("Paris", "Rome")),
    ],
)
def test_one_call_only_in_the_whole_answer_formats(template: str, text: str) -> None:
    single = request(tools=[WEATHER, TIME], tool_choice="auto", parallel_tool_calls=False)
    parser = build_output_parser(template, None, single)
    out = run(parser, [text])
    assert len(out.tool_calls) == 1 and parser.done


# ---------------------------------------------------------------- forced calls, cut short


@pytest.mark.parametrize(
    "template", [HERMES_TEMPLATE, LLAMA_TEMPLATE, MISTRAL_TEMPLATE, MISTRAL_TEMPLATE + "[ARGS]"]
)
def test_a_forced_call_cut_by_the_budget_is_closed_into_a_valid_call(template: str) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    plan = plan_output(request(tools=[WEATHER], tool_choice=choice), template, None)
    shortest = build_output_parser(template, None, request(tools=[WEATHER], tool_choice=choice))
    whole = {
        HERMES_TEMPLATE: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
        LLAMA_TEMPLATE: '{"name": "get_weather", "parameters": {"city": "Par',
        MISTRAL_TEMPLATE: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Par',
        MISTRAL_TEMPLATE + "[ARGS]": '[TOOL_CALLS]get_weather[ARGS]{"city": "Par',
    }[template]
    for parser in (plan.parser(""), shortest):
        out = run(parser, [whole[:10], whole[10:]])
        assert calls(out) == [(0, "get_weather", {"city": "Par"})], out
        assert out.content == ""

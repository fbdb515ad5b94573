"""The tool-call formats of small agent models (issue 21, item 6): Qwen3-Coder's XML calls,
pythonic calls (Llama 3.2 / 4), Phi-4-mini's and Gemma 3's, read from real-looking model text,
whole and streamed, chosen from the chat template or by the registry entry's name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ov_llm_server.output import OutputParser, ParsedDelta, plan_output
from ov_llm_server.output.parsers import ToolCatalog, detect, get, names
from ov_llm_server.output.parsers.phi4_mini import Phi4Mini
from ov_llm_server.output.schema import compile_schema
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
# One parameter of each JSON type, for the typing of XML values.
TYPED = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer"},
                "score": {"type": "number"},
                "exact": {"type": "boolean"},
                "cursor": {"type": "null"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "filters": {"type": "object"},
                "code": {"type": ["string", "integer"]},
            },
        },
    },
}

# The passages of the published templates that detection keys on.
TEMPLATES = {
    "qwen3_coder": (
        "<tools>{% for tool in tools %}<function><name>{{ tool.name }}</name>{% endfor %}"
        "</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO "
        "suffix:\n\n<tool_call>\n<function=example_function_name>\n"
        "<parameter=example_parameter_1>\nvalue_1\n</parameter>\n</function>\n</tool_call>"
    ),
    "pythonic": (
        "If you decide to invoke any of the function(s), you MUST put it in the format of "
        "[func_name1(params_name1=params_value1, params_name2=params_value2...), "
        "func_name2(params)]\nYou SHOULD NOT include any other text in the response."
        "<|start_header_id|>assistant<|end_header_id|>"
    ),
    "phi4_mini": (
        "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message"
        " %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
        "message['tools'] + '<|/tool|>' + '<|end|>' }}{% endif %}{% endfor %}"
    ),
    "gemma3": (
        "<start_of_turn>user\nTo call a function, wrap the call in a ```tool_code``` block:\n"
        '```tool_code\nprint(get_weather(city="Paris"))\n```\nResults come in '
        "```tool_output``` blocks.<end_of_turn>\n<start_of_turn>model\n"
    ),
}


def catalog(*tools: dict[str, Any]) -> ToolCatalog:
    chosen = list(tools or [WEATHER, TIME, TYPED])
    models = {t["function"]["name"]: compile_schema(t["function"]["parameters"]) for t in chosen}
    return ToolCatalog(models)


def run(parser: OutputParser, chunks: list[str]) -> ParsedDelta:
    out = ParsedDelta()
    for chunk in chunks:
        out.merge(parser.feed(chunk))
    out.merge(parser.finish())
    return out


def parse(fmt: str, text: str, cut: int | None = None, limit: int | None = None) -> ParsedDelta:
    chunks = [text] if cut is None else [text[i : i + cut] for i in range(0, len(text), cut)]
    return run(get(fmt).parser(catalog(), limit), chunks)


def calls(out: ParsedDelta) -> list[tuple[str, Any]]:
    return [(c.name, json.loads(c.arguments)) for c in out.tool_calls]


def xml(name: str, **parameters: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in parameters.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


# Real-looking answers of each family, and the calls they hold.
ANSWERS = {
    "qwen3_coder": (
        "I'll check both.\n\n"
        + xml("get_weather", city="Paris", days="3")
        + "\n"
        + xml("get_time"),
        "I'll check both.",
    ),
    "pythonic": ('[get_weather(city="Paris", days=3), get_time()]', ""),
    "phi4_mini": (
        'Let me look that up. <|tool_call|>[{"name": "get_weather", "arguments": '
        '{"city": "Paris", "days": 3}}, {"name": "get_time", "arguments": {}}]<|/tool_call|>',
        "Let me look that up.",
    ),
    "gemma3": (
        "I need both.\n```tool_code\nprint(default_api.get_weather(city='Paris', days=3))\n"
        "print(get_time())\n```",
        "I need both.",
    ),
}
PARIS_AND_TIME = [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]


def test_each_template_is_detected_and_every_format_is_registered() -> None:
    for fmt, template in TEMPLATES.items():
        assert detect(template) == fmt
        assert fmt in names()
    # The Qwen3-Coder template holds Hermes' tag too; a Hermes template stays Hermes.
    assert detect('<tool_call>\n{"name": <function-name>}\n</tool_call>') == "hermes"


@pytest.mark.parametrize("fmt", list(ANSWERS))
@pytest.mark.parametrize("cut", [None, 1, 2, 5, 13])
def test_several_calls_whole_and_in_any_split(fmt: str, cut: int | None) -> None:
    text, content = ANSWERS[fmt]
    out = parse(fmt, text, cut)
    assert calls(out) == PARIS_AND_TIME
    assert out.content == content
    assert [c.index for c in out.tool_calls] == [0, 1]


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_streamed_content_never_holds_part_of_a_call(fmt: str) -> None:
    text, content = ANSWERS[fmt]
    parser = get(fmt).parser(catalog(), None)
    streamed, out = "", ParsedDelta()
    for ch in text:
        delta = parser.feed(ch)
        streamed += delta.content
        assert streamed == content[: len(streamed)], streamed
        out.merge(delta)
    out.merge(parser.finish())
    assert calls(out) == PARIS_AND_TIME


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_parallel_tool_calls_false_keeps_the_first(fmt: str) -> None:
    out = parse(fmt, ANSWERS[fmt][0], cut=3, limit=1)
    assert calls(out) == PARIS_AND_TIME[:1]


def test_xml_values_are_typed_by_the_schema() -> None:
    text = xml(
        "search",
        query="  spaced\nlines  ",
        limit="10",
        score="2.5",
        exact="True",
        cursor="null",
        tags='["a", "b"]',
        filters="{'lang': 'en'}",
        code="007",
    )
    assert calls(parse("qwen3_coder", text)) == [
        (
            "search",
            {
                "query": "  spaced\nlines  ",
                "limit": 10,
                "score": 2.5,
                "exact": True,
                "cursor": None,
                "tags": ["a", "b"],
                "filters": {"lang": "en"},
                "code": "007",  # not a JSON number; the string option fits it as written
            },
        )
    ]
    # A string parameter keeps what would read as a number.
    assert calls(parse("qwen3_coder", xml("get_weather", city="42"))) == [
        ("get_weather", {"city": "42"})
    ]


def test_qwen_blocks_of_hermes_json_are_read_too() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert calls(parse("qwen3_coder", text)) == [("get_weather", {"city": "Paris"})]


def test_pythonic_literals() -> None:
    text = (
        "[search(query='it''s', limit=-2, score=1e3, exact=false, cursor=None, "
        'tags=("x",), filters={"a": [1, {"b": null}]}, code=7)]'
    )
    assert calls(parse("pythonic", text)) == [
        (
            "search",
            {
                "query": "its",
                "limit": -2,
                "score": 1000.0,
                "exact": False,
                "cursor": None,
                "tags": ["x"],
                "filters": {"a": [1, {"b": None}]},
                "code": 7,
            },
        )
    ]


def test_llama4_wrapped_pythonic_calls() -> None:
    text = '<|python_start|>[get_weather(city="Paris")]<|python_end|>'
    assert calls(parse("pythonic", text, cut=4)) == [("get_weather", {"city": "Paris"})]


def test_phi4_mini_one_call_object_and_vllm_functools() -> None:
    one = '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Paris"}}<|/tool_call|>'
    functools = 'functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    for text in (one, functools):
        assert calls(parse("phi4_mini", text, cut=3)) == [("get_weather", {"city": "Paris"})]


MALFORMED = {
    "qwen3_coder": [
        xml("unknown_tool", city="Paris"),  # not a tool of the request
        xml("get_weather", days="3"),  # a required parameter missing
        xml("get_weather", city="Paris", days="three"),  # off the schema
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar",  # cut off
        "<tool_call>\nsome words\n</tool_call>",
    ],
    "pythonic": [
        '[get_weather("Paris")]',  # positional
        "[get_weather(city=paris)]",  # a name, not a literal
        '[get_weather(city="Paris" + "x")]',
        '[get_weather(city="Paris"), __import__("os").system("ls")]',
        '[get_weather(city="Par',  # cut off
        "[unknown(city='x')]",
        "[get_weather(city='Paris', city='Rome')]",
    ],
    "phi4_mini": [
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": 1}}]<|/tool_call|>',
        '<|tool_call|>[{"name": "get_weather", "argu',
        "<|tool_call|>not json<|/tool_call|>",
        '[{"name": "nope", "arguments": {}}]',
    ],
    "gemma3": [
        "```tool_code\nimport os\nos.system('ls')\n```",
        "```tool_code\nprint(get_weather(city=x))\n```",
        "```tool_code\nprint(get_weather(city='Paris')",  # cut off
        "```tool_code\nprint(unknown())\n```",
    ],
}


@pytest.mark.parametrize(
    ("fmt", "text"), [(fmt, text) for fmt, texts in MALFORMED.items() for text in texts]
)
@pytest.mark.parametrize("cut", [None, 3])
def test_malformed_calls_come_back_as_content(fmt: str, text: str, cut: int | None) -> None:
    out = parse(fmt, text, cut)
    assert out.tool_calls == []
    assert out.content == text


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_plain_text_streams_as_content(fmt: str) -> None:
    text = "Paris is sunny [today], and (mostly) dry: 21 degrees."
    parser = get(fmt).parser(catalog(), None)
    pieces = [parser.feed(ch).content for ch in text]
    assert "".join(pieces) + parser.finish().content == text
    # Held back only while it could still be a call's start.
    assert "".join(pieces).startswith("Paris is sunny")


def test_deep_nesting_is_content_not_an_error() -> None:
    text = "[get_weather(city=" + "[" * 5000 + "]" * 5000 + ")]"
    assert parse("pythonic", text).content == text
    text = "```tool_code\nprint(get_weather(city=" + "(" * 5000 + "1" + ")" * 5000 + "))\n```"
    assert parse("gemma3", text).content == text


# ---------------------------------------------------------------- through the plan


def request(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
        ],
        "tools": [WEATHER, TIME],
    }
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_the_template_chooses_the_parser(fmt: str) -> None:
    parser = plan_output(request(), TEMPLATES[fmt], None).parser("")
    assert calls(run(parser, [ANSWERS[fmt][0]])) == PARIS_AND_TIME


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_the_registry_names_the_parser(fmt: str) -> None:
    entry = ModelEntry(path="x", tool_parser=fmt)
    parser = plan_output(request(), "{{ messages }}", entry).parser("")
    assert calls(run(parser, [ANSWERS[fmt][0]])) == PARIS_AND_TIME


# What a forced call is written as: Phi-4-mini's own layout, built by the grammar; the others
# in their family's JSON layout (the grammar cannot build raw XML values or Python literals).
FORCED_START = {
    "qwen3_coder": '<tool_call>\n{"name": "get_weather", "arguments": ',
    "pythonic": '{"name": "get_weather", "parameters": ',
    "phi4_mini": '<|tool_call|>[{"name": "get_weather", "arguments": ',
    "gemma3": '{"name": "get_weather", "arguments": ',
}


@pytest.mark.parametrize("fmt", list(FORCED_START))
def test_forced_calls_are_valid_by_construction(fmt: str) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    plan = plan_output(request(tool_choice=named), TEMPLATES[fmt], None)
    assert plan.grammar is not None and plan.shortest_answer is not None
    assert plan.shortest_answer.startswith(FORCED_START[fmt])
    text = plan.shortest_answer.replace('"city": ""', '"city": "Paris"')
    out = run(plan.parser(""), [text[i : i + 4] for i in range(0, len(text), 4)])
    (call,) = out.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    # Arguments stream piece by piece and add up to the call's.
    pieces = [p for p in out.call_pieces if p.index == 0]
    assert pieces[0].name == "get_weather"
    assert "".join(p.arguments for p in pieces) == call.arguments
    assert len([p for p in pieces if p.arguments]) > 1


def test_phi4_mini_forced_parallel_calls() -> None:
    req = request(tool_choice="required", parallel_tool_calls=True)
    plan = plan_output(req, TEMPLATES["phi4_mini"], None)
    text = (
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {}}]<|/tool_call|>'
    )
    out = run(plan.parser(""), list(text))
    assert calls(out) == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert Phi4Mini.call_head().search(text) is not None

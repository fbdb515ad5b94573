"""Tool calls, reasoning and structured output end to end, on the tiny model's dialogues."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live_server import LiveServer
from schema_strategies import SCHEMAS
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
WEATHER_ARGS = '{"city": "Paris"}'


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def body(name: str, **extra: Any) -> dict[str, Any]:
    dialogue = DIALOGUES[name]
    out: dict[str, Any] = {"model": MODEL, "messages": copy.deepcopy(dialogue["messages"])}
    if dialogue["tools"]:
        out["tools"] = TOOLS
    out.update(extra)
    return out


def sse(server: LiveServer, payload: dict[str, Any]) -> list[dict[str, Any]]:
    payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=payload, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append({"done": True} if data == "[DONE]" else json.loads(data))
    assert events[-1] == {"done": True}
    return events[:-1]


def joined(events: list[dict[str, Any]], key: str) -> str:
    return "".join(e["choices"][0]["delta"].get(key) or "" for e in events if e["choices"])


def streamed_calls(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Tool calls accumulated the way clients do: by index, first delta carries id and name."""
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        for delta in (
            (event["choices"][0]["delta"].get("tool_calls") or []) if event["choices"] else []
        ):
            index = delta["index"]
            if index not in calls:
                assert delta["id"].startswith("call_")
                assert delta["type"] == "function"
                assert delta["function"]["name"]
                calls[index] = {
                    "id": delta["id"],
                    "name": delta["function"]["name"],
                    "arguments": "",
                }
            else:
                assert "id" not in delta and "name" not in delta["function"]
            calls[index]["arguments"] += delta["function"].get("arguments") or ""
    return calls


def finish_reason(events: list[dict[str, Any]]) -> str | None:
    reasons = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert all(r is None for r in reasons[:-1])
    return reasons[-1]


# ---------------------------------------------------------------- the memorised tool dialogue


def test_tool_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(**body("D_TOOL"))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert call.function.arguments == WEATHER_ARGS


def test_a_reply_of_tool_calls_only_sends_content_null(server: LiveServer) -> None:
    response = httpx.post(f"{server.v1}/chat/completions", json=body("D_TOOL"), timeout=60)
    message = response.json()["choices"][0]["message"]
    assert "content" in message and message["content"] is None
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    events = sse(server, body("D_TOOL"))
    first_call = next(
        e for e in events if e["choices"] and e["choices"][0]["delta"].get("tool_calls")
    )
    assert first_call["choices"][0]["delta"]["content"] is None


def test_parallel_tool_calls_false_keeps_the_first_call_and_stops(
    server: LiveServer, client: openai.OpenAI
) -> None:
    # Unconstrained, the model answers D_PARALLEL with two calls.
    response = client.chat.completions.create(**body("D_PARALLEL", parallel_tool_calls=False))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.arguments for c in choice.message.tool_calls or []] == ['{"city": "Paris"}']
    # Generation stopped at the first call: fewer tokens than the whole memorised answer.
    whole = client.chat.completions.create(**body("D_PARALLEL"))
    assert response.usage is not None and whole.usage is not None
    assert response.usage.completion_tokens < whole.usage.completion_tokens
    events = sse(server, body("D_PARALLEL", parallel_tool_calls=False))
    assert [c["arguments"] for c in streamed_calls(events).values()] == ['{"city": "Paris"}']
    assert finish_reason(events) == "tool_calls"


def test_tool_call_streamed(server: LiveServer, client: openai.OpenAI) -> None:
    events = sse(server, body("D_TOOL"))
    assert joined(events, "content") == ""
    calls = streamed_calls(events)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["arguments"] == WEATHER_ARGS
    assert finish_reason(events) == "tool_calls"
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == []
    plain = client.chat.completions.create(**body("D_TOOL"))
    assert plain.usage is not None
    assert usage == plain.usage.model_dump(exclude_none=True)


def test_tool_result_then_answer(server: LiveServer, client: openai.OpenAI) -> None:
    # The history the client sends back: the assistant's call (content null) and the result.
    response = client.chat.completions.create(**body("D_TOOL_RESULT"))
    assert response.choices[0].message.content == DIALOGUES["D_TOOL_RESULT"]["answer"]
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].finish_reason == "stop"
    events = sse(server, body("D_TOOL_RESULT"))
    assert joined(events, "content") == "It is 21 degrees in Paris."
    assert finish_reason(events) == "stop"


def test_full_round_trip_with_the_servers_own_call(client: openai.OpenAI) -> None:
    """Call, run the tool, send the server's own call back, get the answer."""
    first = client.chat.completions.create(**body("D_TOOL"))
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages: list[Any] = [
        *DIALOGUES["D_TOOL"]["messages"],
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "It is 21 degrees in Paris."


def test_parallel_calls(server: LiveServer, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(**body("D_PARALLEL"))
    assert response.choices[0].finish_reason == "tool_calls"
    calls = response.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome"}'),
    ]
    assert calls[0].id != calls[1].id
    assert response.choices[0].message.content is None
    events = sse(server, body("D_PARALLEL"))
    streamed = streamed_calls(events)
    assert list(streamed) == [0, 1]
    assert [json.loads(c["arguments"]) for c in streamed.values()] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert joined(events, "content") == ""
    assert finish_reason(events) == "tool_calls"


def test_sdk_stream_helper_accumulates_tool_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(**body("D_PARALLEL")) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.index, e.name, e.arguments) for e in done] == [
        (0, "get_weather", '{"city": "Paris"}'),
        (1, "get_weather", '{"city": "Rome"}'),
    ]
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]


def test_cut_off_call_is_returned_as_content(server: LiveServer, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(**body("D_TOOL", max_tokens=6))
    choice = response.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls is None
    assert choice.message.content and choice.message.content.startswith("<tool_call>")
    assert DIALOGUES["D_TOOL"]["answer"].startswith(choice.message.content)
    events = sse(server, body("D_TOOL", max_tokens=6))
    assert joined(events, "content") == choice.message.content
    assert finish_reason(events) == "length"


def test_tool_choice_none_gives_no_calls(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(**body("D_TOOL", tool_choice="none", max_tokens=30))
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].finish_reason in ("stop", "length")


def test_without_tools_tags_stay_content(client: openai.OpenAI) -> None:
    """The same memorised text, but the request has no tools: nothing is parsed as a call."""
    request = body("D_TOOL")
    del request["tools"]
    response = client.chat.completions.create(**request, max_tokens=40)
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].finish_reason != "tool_calls"


# ---------------------------------------------------------------- reasoning


def test_think_goes_to_reasoning_content(server: LiveServer) -> None:
    response = httpx.post(f"{server.v1}/chat/completions", json=body("D_THINK"), timeout=60)
    message = response.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "2 plus 2 is 4."
    assert message["content"] == "The answer is 4."
    events = sse(server, body("D_THINK"))
    assert joined(events, "reasoning_content") == "2 plus 2 is 4."
    assert joined(events, "content") == "The answer is 4."
    assert finish_reason(events) == "stop"


# ---------------------------------------------------------------- forced calls and JSON


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_forced_call_on_a_prompt_that_would_not_call(
    server: LiveServer, client: openai.OpenAI, choice: Any
) -> None:
    # Unforced, the model answers D_HELLO with a greeting even when tools are offered.
    request = body("D_HELLO", tools=TOOLS, tool_choice=choice, max_tokens=60)
    response = client.chat.completions.create(**request)
    choice_ = response.choices[0]
    assert choice_.finish_reason == "tool_calls", choice_.message
    calls = choice_.message.tool_calls or []
    assert len(calls) == 1
    for call in calls:
        assert call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    events = sse(server, request)
    streamed = streamed_calls(events)
    assert [c["arguments"] for c in streamed.values()] == [c.function.arguments for c in calls]
    assert finish_reason(events) == "tool_calls"


NOTE_TOOL = {
    "type": "function",
    "function": {
        "name": "take_note",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
            "required": ["title", "body"],
        },
    },
}


def argument_pieces(events: list[dict[str, Any]]) -> list[str]:
    """The argument strings of the stream's tool-call deltas, in order (the header's "")."""
    return [
        delta["function"].get("arguments") or ""
        for event in events
        if event["choices"]
        for delta in event["choices"][0]["delta"].get("tool_calls") or []
    ]


@pytest.mark.parametrize("room", [80, 4])
def test_forced_call_arguments_stream_as_they_are_written(server: LiveServer, room: int) -> None:
    """A forced call's id and name come first, then its arguments in pieces as the model
    writes them; the pieces add up to the non-streamed call's arguments, valid JSON even when
    the budget cuts them (the last piece then carries the grammar's closing)."""
    request = body("D_STORY", tools=[NOTE_TOOL], tool_choice="required", temperature=0)
    # The server names the shortest forced answer's length when the budget is below it.
    refused = httpx.post(
        f"{server.v1}/chat/completions", json={**request, "max_tokens": 1}, timeout=120
    )
    shortest = int(re.search(r"takes (\d+) tokens", refused.json()["error"]["message"])[1])
    request["max_tokens"] = shortest + room
    whole = httpx.post(f"{server.v1}/chat/completions", json=request, timeout=120).json()
    (call,) = whole["choices"][0]["message"]["tool_calls"]
    events = sse(server, request)
    pieces = argument_pieces(events)
    assert pieces[0] == ""  # the header: id and name, no arguments yet
    assert len([p for p in pieces if p]) >= 4, pieces  # several pieces, not one at the end
    (streamed,) = streamed_calls(events).values()
    assert streamed["name"] == call["function"]["name"] == "take_note"
    assert streamed["arguments"] == call["function"]["arguments"]
    assert set(json.loads(streamed["arguments"])) == {"title", "body"}
    # "length" where the budget cut the call and the server closed it.
    assert finish_reason(events) == whole["choices"][0]["finish_reason"]
    assert finish_reason(events) in ("tool_calls", "length")


def test_a_completed_calls_usage_does_not_race_the_cancel(server: LiveServer) -> None:
    # The server cancels the generation once the call is whole; the engine may have made a
    # token more by the time the cancel arrives. Usage counts up to the end of the call, so
    # the same greedy request always reports the same number, streamed or not.
    request = body("D_HELLO", tools=TOOLS, tool_choice="required", max_tokens=60)
    counts = set()
    for _ in range(4):
        response = httpx.post(f"{server.v1}/chat/completions", json=request, timeout=120)
        assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
        counts.add(response.json()["usage"]["completion_tokens"])
        events = sse(server, request)
        counts.add(next(e["usage"]["completion_tokens"] for e in events if e.get("usage")))
    assert len(counts) == 1, counts


def test_unforced_hello_with_tools_does_not_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(**body("D_HELLO", tools=TOOLS, max_tokens=40))
    assert response.choices[0].message.tool_calls is None


def test_forced_single_call_is_one_call(client: openai.OpenAI) -> None:
    request = body("D_HELLO", tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    response = client.chat.completions.create(**request, max_tokens=60)
    assert len(response.choices[0].message.tool_calls or []) == 1


def test_forced_parallel_calls_when_asked_for(client: openai.OpenAI) -> None:
    request = body("D_PARALLEL", tool_choice="required", parallel_tool_calls=True)
    response = client.chat.completions.create(**request, max_tokens=80)
    calls = response.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert response.choices[0].finish_reason == "tool_calls"


DESCRIPTION_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "country": {"type": "string", "maxLength": 16},
        "capital": {"type": "boolean"},
        "rank": {"type": "integer"},
    },
    "required": ["city", "country", "capital"],
    "additionalProperties": False,
}


def test_response_format_json_schema_forces_valid_json(
    server: LiveServer, client: openai.OpenAI
) -> None:
    plain = client.chat.completions.create(**body("D_JSON"))
    assert plain.choices[0].message.content == "Paris is a city in France."
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "description", "schema": DESCRIPTION_SCHEMA, "strict": True},
    }
    request = body("D_JSON", response_format=response_format, max_tokens=80)
    response = client.chat.completions.create(**request)
    content = response.choices[0].message.content or ""
    value = json.loads(content)
    assert set(value) >= {"city", "country", "capital"}
    assert isinstance(value["capital"], bool)
    # The tiny model fills the strings until max_tokens: the server closed the document.
    assert response.choices[0].finish_reason == "length"
    events = sse(server, request)
    assert joined(events, "content") == content


def test_response_format_json_object_starts_an_object(client: openai.OpenAI) -> None:
    request = body("D_JSON", response_format={"type": "json_object"}, max_tokens=20)
    content = client.chat.completions.create(**request).choices[0].message.content or ""
    assert content.startswith("{")


# ---------------------------------------------------------------- refused requests


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": {"type": "function", "function": {"name": "launch_rockets"}}},
        {"tools": None, "tool_choice": "required"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}},
            }
        },
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/x"}}}
            ],
            "tool_choice": "required",
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
            }
        },
        {"response_format": {"type": "json_object"}, "max_tokens": 1},
    ],
    ids=[
        "unknown-function",
        "required-without-tools",
        "schema-missing",
        "bad-ref",
        "bad-tool",
        "unenforceable-keyword",
        "budget-too-small",
    ],
)
def test_impossible_requests_are_400(server: LiveServer, extra: dict[str, Any]) -> None:
    request = {k: v for k, v in {**body("D_TOOL"), **extra}.items() if v is not None}
    response = httpx.post(f"{server.v1}/chat/completions", json=request, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ("tool_choice", "response_format", "tools", "max_tokens")
    # Refused before the engine saw it: the model still answers.
    after = httpx.post(f"{server.v1}/chat/completions", json=body("D_HELLO"), timeout=60)
    assert after.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]


# ---------------------------------------------------------------- a real small model


def test_smollm2_forced_json_and_call(smol_server: LiveServer) -> None:
    """SmolLM2's template knows no tools; the grammar still gets a valid call and valid JSON."""
    smol = openai.OpenAI(base_url=smol_server.v1, api_key="unused", max_retries=0)
    model = smol.models.list().data[0].id
    question = [{"role": "user", "content": "What is the weather like in Paris?"}]
    response = smol.chat.completions.create(
        model=model,
        messages=question,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
    )
    calls = response.choices[0].message.tool_calls or []
    assert response.choices[0].finish_reason == "tool_calls", response.choices[0].message
    assert [c.function.name for c in calls] == ["get_weather"]
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    described = smol.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe Paris in JSON."}],
        response_format={  # type: ignore[typeddict-item]
            "type": "json_schema",
            "json_schema": {"name": "description", "schema": DESCRIPTION_SCHEMA},
        },
        max_tokens=80,
    )
    value = json.loads(described.choices[0].message.content or "")
    assert {"city", "country", "capital"} <= set(value)


def test_constrained_and_free_requests_share_a_batch(client: openai.OpenAI) -> None:
    """Grammar-constrained sequences and free ones in the same engine steps stay independent."""
    import concurrent.futures

    forced = body("D_TOOL", tool_choice={"type": "function", "function": {"name": "get_weather"}})
    schema = {"type": "json_schema", "json_schema": {"name": "d", "schema": DESCRIPTION_SCHEMA}}
    jobs: list[dict[str, Any]] = [
        forced,
        body("D_STORY"),
        body("D_JSON", response_format=schema, max_tokens=80),
        body("D_PARALLEL"),
        body("D_COUNT"),
    ] * 2
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: client.chat.completions.create(**job), jobs))
    for job, result in zip(jobs, results, strict=True):
        message = result.choices[0].message
        if job is forced:
            assert [c.function.arguments for c in message.tool_calls or []] == [WEATHER_ARGS]
        elif "response_format" in job:
            assert {"city", "country", "capital"} <= set(json.loads(message.content or ""))
        elif "tools" in job:
            assert len(message.tool_calls or []) == 2
        else:
            name = "D_STORY" if job["messages"][0]["content"] == "Tell me a story" else "D_COUNT"
            assert message.content == DIALOGUES[name]["answer"]


# ---------------------------------------------------------------- valid by construction


def _reference_valid(schema: Any, value: Any) -> bool:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(schema, format_checker=checker).is_valid(value)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    schema=SCHEMAS,
    max_tokens=st.integers(4, 40),
    stream=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_constrained_output_always_validates(
    server: LiveServer, schema: Any, max_tokens: int, stream: bool, seed: int
) -> None:
    """Generated schemas, decoded at a high temperature in a small budget: always a valid answer."""
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    request = body(
        "D_STORY", response_format=fmt, max_tokens=max_tokens, temperature=1.8, seed=seed
    )
    if not stream:
        response = httpx.post(f"{server.v1}/chat/completions", json=request, timeout=120)
        if response.status_code == 400:  # refused up front: a keyword or the budget
            assert response.json()["error"]["param"] in ("response_format", "max_tokens")
            return
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        content, reason = choice["message"]["content"], choice["finish_reason"]
    else:
        with httpx.stream(
            "POST", f"{server.v1}/chat/completions", json={**request, "stream": True}, timeout=120
        ) as r:
            if r.status_code == 400:
                return
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        events = [json.loads(line) for line in lines[:-1]]
        content = joined(events, "content")
        reason = finish_reason(events)
    # "length": the budget cut it and the server closed it, valid all the same.
    assert reason in ("stop", "length"), (reason, content)
    assert _reference_valid(schema, json.loads(content)), content


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    parameters=SCHEMAS.filter(lambda s: isinstance(s, dict) and s.get("type") == "object"),
    max_tokens=st.integers(20, 60),
    seed=st.integers(0, 2**31),
)
def test_forced_calls_always_validate(
    server: LiveServer, parameters: Any, max_tokens: int, seed: int
) -> None:
    tool = {"type": "function", "function": {"name": "record", "parameters": parameters}}
    choice = {"type": "function", "function": {"name": "record"}}
    request = body(
        "D_HELLO",
        tools=[tool],
        tool_choice=choice,
        max_tokens=max_tokens,
        temperature=1.8,
        seed=seed,
    )
    response = httpx.post(f"{server.v1}/chat/completions", json=request, timeout=120)
    if response.status_code == 400:
        assert response.json()["error"]["param"] in ("tools", "max_tokens")
        return
    choice_ = response.json()["choices"][0]
    assert choice_["finish_reason"] in ("tool_calls", "length"), choice_
    (call,) = choice_["message"]["tool_calls"]
    assert _reference_valid(parameters, json.loads(call["function"]["arguments"]))


# ---------------------------------------------------------------- real clients, tight budgets


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int
    capital: bool


class WeatherQuery(pydantic.BaseModel):
    city: str


@pytest.fixture(scope="module")
def smol(smol_server: LiveServer) -> tuple[openai.OpenAI, str]:
    smol = openai.OpenAI(base_url=smol_server.v1, api_key="unused", max_retries=0)
    return smol, smol.models.list().data[0].id


PARIS = [{"role": "user", "content": "Describe Paris as JSON."}]


def test_sdk_parse_returns_a_validated_object(smol: tuple[openai.OpenAI, str]) -> None:
    client, model = smol
    completion = client.chat.completions.parse(
        model=model,
        messages=PARIS,
        response_format=City,
        max_tokens=200,  # type: ignore[arg-type]
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(completion.choices[0].message.parsed, City)
    with client.chat.completions.stream(
        model=model,
        messages=PARIS,
        response_format=City,
        max_tokens=200,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, City)


def test_a_cut_answer_is_valid_and_says_length_as_openai_does(
    smol: tuple[openai.OpenAI, str],
) -> None:
    client, model = smol
    # The SDK refuses to parse an answer cut by max_tokens, as it does OpenAI's.
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model=model,
            messages=PARIS,
            response_format=City,
            max_tokens=24,  # type: ignore[arg-type]
        )
    # The server closed it all the same: a client that reads the content gets its object.
    schema = {"name": "City", "schema": City.model_json_schema()}
    completion = client.chat.completions.create(
        model=model,
        messages=PARIS,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
        max_tokens=24,
    )
    assert completion.choices[0].finish_reason == "length"
    City.model_validate_json(completion.choices[0].message.content or "")


@pytest.mark.parametrize("choice", ["required", "named"])
def test_sdk_forced_tool_call_at_a_tight_budget(
    smol: tuple[openai.OpenAI, str], choice: str
) -> None:
    client, model = smol
    tool = openai.pydantic_function_tool(WeatherQuery, name="get_weather")
    tool_choice: Any = (
        "required"
        if choice == "required"
        else {"type": "function", "function": {"name": "get_weather"}}
    )
    question = [{"role": "user", "content": "What is the weather like in Paris?"}]
    completion = client.chat.completions.parse(
        model=model,
        messages=question,
        tools=[tool],
        tool_choice=tool_choice,
        max_tokens=24,  # type: ignore[arg-type]
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls and isinstance(
        message.tool_calls[0].function.parsed_arguments, WeatherQuery
    )
    with client.chat.completions.stream(
        model=model,
        messages=question,
        tools=[tool],
        tool_choice=tool_choice,
        max_tokens=24,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert len(calls) == 1 and isinstance(calls[0].function.parsed_arguments, WeatherQuery)

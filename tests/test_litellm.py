"""A real LiteLLM proxy in front of the server, configured by ``ov-llm-server litellm-config``."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from litellm_proxy import Proxy, litellm_config, requires_litellm, running_proxy
from live_server import LiveServer
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"

pytestmark = requires_litellm


@pytest.fixture(scope="module")
def proxy(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    config = litellm_config(server, "--api-base", server.v1)
    with running_proxy(config, tmp_path_factory.mktemp("litellm")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)


def messages(name: str) -> Any:
    return copy.deepcopy(DIALOGUES[name]["messages"])


def test_config_routes_every_registry_model_here(server: LiveServer) -> None:
    config = yaml.safe_load(litellm_config(server, "--api-base", server.v1))
    entries = {m["model_name"]: m for m in config["model_list"]}
    assert set(entries) == {"tiny-int8", "tiny-fp16"}
    for name, entry in entries.items():
        assert entry["litellm_params"]["model"] == f"openai/{name}"
        assert entry["litellm_params"]["api_base"] == server.v1
        assert entry["litellm_params"]["api_key"]
        assert entry["model_info"]["supports_function_calling"] is True


def test_chat(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=messages("D_HELLO"))
    assert response.choices[0].message.content == DIALOGUES["D_HELLO"]["answer"]
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=messages("D_CAPITAL"))
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_CAPITAL"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DIALOGUES["D_CAPITAL"]["answer"]
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and plain.usage is not None
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )


def test_tool_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]
    assert calls[0].id.startswith("call_")


def test_tool_calls_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_PARALLEL"),
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    for chunk in stream:
        if not chunk.choices:
            continue
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    assert finishes == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert calls[0]["id"] != calls[1]["id"]


def test_sdk_stream_helper_through_litellm(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history = [
        *messages("D_TOOL"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content == DIALOGUES["D_TOOL_RESULT"]["answer"]
    assert second.choices[0].finish_reason == "stop"


def test_forced_call_through_litellm(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_HELLO"),
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    calls = response.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert set(json.loads(calls[0].function.arguments)) == {"city"}


def test_reasoning_passes_through(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=messages("D_THINK"))
    message = response.choices[0].message
    assert message.content == "The answer is 4."
    assert getattr(message, "reasoning_content", None) == "2 plus 2 is 4."

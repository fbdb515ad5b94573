"""The Responses and Messages APIs through a real LiteLLM proxy configured by
``ov-llm-server litellm-config``: its ``openai/`` deployments forward ``/v1/responses`` here as
is, and serve ``/v1/messages`` by calling this server's ``/v1/responses``. Chat keeps working
beside them (tests/test_litellm.py covers chat, completions, embeddings and rerank). The OpenAI
Agents SDK runs an agent's loop through the proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from litellm_proxy import Proxy, litellm_config, requires_litellm, running_proxy
from live_server import LiveServer
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
WEATHER_RESPONSES = {"type": "function", **TOOLS[0]["function"]}
WEATHER_MESSAGES = {
    "name": TOOLS[0]["function"]["name"],
    "description": TOOLS[0]["function"]["description"],
    "input_schema": TOOLS[0]["function"]["parameters"],
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}

pytestmark = requires_litellm


@pytest.fixture(scope="module")
def proxy(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    config = litellm_config(server, "--api-base", server.v1)
    with running_proxy(config, tmp_path_factory.mktemp("litellm-agents")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def openai_client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)


@pytest.fixture(scope="module")
def anthropic_client(proxy: Proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.base_url, api_key=proxy.key, max_retries=0)


# ---------------------------------------------------------------- /v1/responses


def test_responses_text_and_stream(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(model=MODEL, input="Say hello")
    assert response.output_text == DIALOGUES["D_HELLO"]["answer"]
    assert response.status == "completed"
    with openai_client.responses.stream(model=MODEL, input="Count to five") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == final.output_text == DIALOGUES["D_COUNT"]["answer"]


def test_responses_forced_tool_and_json_schema(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER_RESPONSES],  # type: ignore[list-item]
        tool_choice="required",
    )
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    shaped = openai_client.responses.create(
        model=MODEL,
        input="Describe Paris",
        max_output_tokens=12,
        text={"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}},
    )
    assert set(json.loads(shaped.output_text)) == {"city"}


def test_responses_previous_response_id(openai_client: openai.OpenAI) -> None:
    first = openai_client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER_RESPONSES],  # type: ignore[list-item]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    second = openai_client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": '{"temperature": 21}',
            }
        ],
        tools=[WEATHER_RESPONSES],  # type: ignore[list-item]
    )
    assert second.output_text == DIALOGUES["D_TOOL_RESULT"]["answer"]


# ---------------------------------------------------------------- /v1/messages


def test_messages_text_and_stream(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        extra_body={"temperature": 0},
    )
    assert message.content[0].text == DIALOGUES["D_HELLO"]["answer"]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    with anthropic_client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Count to five"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == DIALOGUES["D_COUNT"]["answer"]  # type: ignore[union-attr]


def test_messages_forced_tool_and_result(anthropic_client: anthropic.Anthropic) -> None:
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    message = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[question],
        tools=[WEATHER_MESSAGES],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    answer = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[
            question,
            {"role": "assistant", "content": message.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": '{"temperature": 21}',
                    }
                ],
            },
        ],
        tools=[WEATHER_MESSAGES],  # type: ignore[list-item]
    )
    assert answer.content[0].text == DIALOGUES["D_TOOL_RESULT"]["answer"]  # type: ignore[union-attr]


def test_config_sends_both_apis_here(server: LiveServer) -> None:
    config = yaml.safe_load(litellm_config(server, "--api-base", server.v1))
    [entry] = [m for m in config["model_list"] if m["model_name"] == MODEL]
    assert entry["litellm_params"]["model"] == f"openai/{MODEL}"
    assert {"/v1/responses", "/v1/messages"} <= set(entry["model_info"]["supported_endpoints"])


def test_messages_stop_sequences(anthropic_client: anthropic.Anthropic) -> None:
    # LiteLLM's bridge onto /v1/responses drops stop_sequences: passing it shows that
    # /v1/messages reached this server's own /v1/messages.
    message = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five"}],
        stop_sequences=["three"],
    )
    assert message.content[0].text == "one two "  # type: ignore[union-attr]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "three"


# ---------------------------------------------------------------- the OpenAI Agents SDK


def weather_agent_answer(base_url: str, api_key: str, calls: list[str]) -> str:
    """The README's Agents SDK example: one function tool, called on the first turn (the
    tiny model is made to; ``reset_tool_choice`` frees the next turn), then a final answer."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=300.0)

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: Name of the city.
        """
        calls.append(city)
        return json.dumps({"temperature": 21})

    agent = Agent(
        name="weather",
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required", temperature=0),
    )
    run_config = RunConfig(tracing_disabled=True)  # no trace upload to OpenAI
    result = Runner.run_sync(agent, "What is the weather in Paris?", run_config=run_config)
    return str(result.final_output)


def test_openai_agents_sdk_runs_its_loop_to_a_final_answer(proxy: Proxy) -> None:
    calls: list[str] = []
    answer = weather_agent_answer(f"{proxy.base_url}/v1", proxy.key, calls)
    assert calls == ["Paris"]  # the tool ran, once, with the model's arguments
    assert answer == DIALOGUES["D_TOOL_RESULT"]["answer"]


def test_chat_still_works(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert response.choices[0].message.content == DIALOGUES["D_HELLO"]["answer"]

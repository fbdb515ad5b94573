"""``/v1/messages`` on the tiny model with the official anthropic SDK: text, streaming, a
forced tool call, a tool_result round trip, stop_sequences, thinking, count_tokens, the key
as ``x-api-key``, and errors in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from live_server import LiveServer
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
KEY = "sk-messages-test-key"
WEATHER = {
    "name": TOOLS[0]["function"]["name"],
    "description": TOOLS[0]["function"]["description"],
    "input_schema": TOOLS[0]["function"]["parameters"],
}
GREEDY = {"temperature": 0}  # the SDK takes no temperature keyword


@pytest.fixture(scope="module")
def keyed(server_factory: Any, tiny_registry: dict[str, Any]) -> LiveServer:
    return server_factory(tiny_registry, OV_API_KEY=KEY)


@pytest.fixture(scope="module")
def client(keyed: LiveServer) -> anthropic.Anthropic:
    # The SDK sends the key as x-api-key.
    return anthropic.Anthropic(base_url=keyed.base_url, api_key=KEY, max_retries=0)


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind, body
    message: str = body["error"]["message"]
    return message


def test_text(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        system="You are a pirate.",
        messages=[{"role": "user", "content": "Say hello"}],
        extra_body=GREEDY,
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == DIALOGUES["D_PIRATE"]["answer"]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Count to five"}]}],
        extra_body=GREEDY,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].text == DIALOGUES["D_COUNT"]["answer"]  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    whole = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five"}],
        extra_body=GREEDY,
    )
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_raw_stream_has_ping_and_block_events(keyed: LiveServer) -> None:
    payload = {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    kinds = []
    with httpx.stream(
        "POST", f"{keyed.v1}/messages", json=payload, headers={"x-api-key": KEY}, timeout=60
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[len("event: ") :])
    assert kinds[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_forced_tool_use_and_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[question],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}

    answer = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[
            question,  # type: ignore[list-item]
            {"role": "assistant", "content": message.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": json.dumps({"temperature": 21}),
                    }
                ],
            },
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        extra_body=GREEDY,
    )
    assert answer.content[0].text == DIALOGUES["D_TOOL_RESULT"]["answer"]  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"


def test_streamed_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    ) as stream:
        final = stream.get_final_message()
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert call.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_forced_tool_use_input_streams_in_pieces(keyed: LiveServer) -> None:
    payload = {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
    }
    pieces = []
    with httpx.stream(
        "POST", f"{keyed.v1}/messages", json=payload, headers={"x-api-key": KEY}, timeout=60
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                if event["type"] == "content_block_delta":
                    if event["delta"]["type"] == "input_json_delta":
                        pieces.append(event["delta"]["partial_json"])
    assert len(pieces) >= 3, pieces
    assert json.loads("".join(pieces)) == {"city": "Paris"}


def test_stop_sequences_and_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five"}],
        stop_sequences=["three"],
        extra_body=GREEDY,
    )
    assert message.content[0].text == "one two "  # type: ignore[union-attr]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "three"
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five"}],
        stop_sequences=["nine", "three"],
        extra_body=GREEDY,
    ) as stream:
        deltas = [event for event in stream if event.type == "message_delta"]
        streamed = stream.get_final_message()
    assert [(d.delta.stop_reason, d.delta.stop_sequence) for d in deltas] == [
        ("stop_sequence", "three")
    ]
    assert streamed.stop_reason == "stop_sequence" and streamed.stop_sequence == "three"
    unmet = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five"}],
        stop_sequences=["nine"],
        extra_body=GREEDY,
    )
    assert unmet.stop_reason == "end_turn" and unmet.stop_sequence is None
    cut = client.messages.create(
        model=MODEL,
        max_tokens=3,
        messages=[{"role": "user", "content": "Tell me a story"}],
        extra_body=GREEDY,
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3


def test_thinking(client: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is 2+2?"}
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[ask],  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 32},
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "2 plus 2 is 4."  # type: ignore[union-attr]
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[ask],
        thinking={"type": "disabled"},  # type: ignore[list-item]
    ) as stream:
        hidden = stream.get_final_message()
    assert [block.type for block in hidden.content] == ["text"]
    assert hidden.content[0].text == "The answer is 4."  # type: ignore[union-attr]


def test_count_tokens(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages)  # type: ignore[arg-type]
    created = client.messages.create(model=MODEL, max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == created.usage.input_tokens


def test_key_as_bearer_too_and_wrong_key(keyed: LiveServer) -> None:
    payload = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    ok = httpx.post(
        f"{keyed.v1}/messages", json=payload, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert ok.status_code == 200, ok.text
    wrong = httpx.post(f"{keyed.v1}/messages", json=payload, headers={"x-api-key": "no"}, timeout=9)
    anthropic_error(wrong, 401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=keyed.base_url, api_key="no", max_retries=0).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize(
    ("payload", "status", "kind", "words"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {
                "max_tokens": 8,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
            "toolu_x",
        ),
        (
            {
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "description": "no schema"}],
            },
            400,
            "invalid_request_error",
            "input_schema",
        ),
        (
            {
                "max_tokens": 8,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}
                ],
            },
            400,
            "invalid_request_error",
            "data: URL",
        ),
        (
            {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "model": "nope"},
            404,
            "not_found_error",
            "nope",
        ),
        (
            {"max_tokens": 10**9, "messages": [{"role": "user", "content": "hi"}]},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
    ],
    ids=["no-max-tokens", "unknown-tool-use-id", "tool-without-schema", "image", "model", "budget"],
)
def test_bad_input_gets_anthropic_errors(
    keyed: LiveServer, payload: dict[str, Any], status: int, kind: str, words: str
) -> None:
    response = httpx.post(
        f"{keyed.v1}/messages",
        json={"model": MODEL, **payload},
        headers={"x-api-key": KEY},
        timeout=30,
    )
    assert words in anthropic_error(response, status, kind)


def test_sdk_reads_the_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}],
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]

"""``/v1/responses`` on the tiny model with the official openai SDK: text, streaming, a forced
function call, json_schema at a tight budget, previous_response_id, and the API's errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from live_server import LiveServer, error_of
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
# The Responses tool shape: flat.
WEATHER = {"type": "function", **TOOLS[0]["function"]}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def responses_sse(server: LiveServer, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events, each checked: its ``event:`` line names its ``type``."""
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{server.v1}/responses", json={**payload, "stream": True}, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                assert event["type"] == kind
                events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_text(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello")
    assert response.status == "completed"
    assert response.output_text == DIALOGUES["D_HELLO"]["answer"]
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_instructions_are_the_system_message(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        instructions="You are a pirate.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
    )
    assert response.output_text == DIALOGUES["D_PIRATE"]["answer"]


def test_stream_events_in_order(server: LiveServer, client: openai.OpenAI) -> None:
    events = responses_sse(server, {"model": MODEL, "input": "Count to five"})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 0
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == DIALOGUES["D_COUNT"]["answer"]
    whole = client.responses.create(model=MODEL, input="Count to five")
    assert whole.usage is not None
    usage = events[-1]["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )

    with client.responses.stream(model=MODEL, input="Count to five") as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert streamed == final.output_text == DIALOGUES["D_COUNT"]["answer"]


def test_forced_function_call(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
    )
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].call_id.startswith("call_")

    with client.responses.stream(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = [item for item in final.output if item.type == "function_call"]
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_forced_call_arguments_stream_in_pieces(server: LiveServer) -> None:
    """The forced call's item opens with the model's first token, then its arguments come as
    several deltas whose sum is the item's final arguments."""
    payload = {
        "model": MODEL,
        "input": "What is the weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": "required",
        "temperature": 0,
    }
    events = responses_sse(server, payload)
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(deltas) >= 3, deltas
    assert "".join(deltas) == done["arguments"]
    assert json.loads(done["arguments"]) == {"city": "Paris"}


def test_function_call_output_round_trip(client: openai.OpenAI) -> None:
    """The call, then its output by previous_response_id: the model's answer from the result."""
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"temperature": 21}),
            }
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == DIALOGUES["D_TOOL_RESULT"]["answer"]
    assert second.previous_response_id == first.id
    # The same conversation given whole, as items, with no stored response.
    whole = client.responses.create(
        model=MODEL,
        store=False,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature": 21}'},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert whole.output_text == DIALOGUES["D_TOOL_RESULT"]["answer"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(whole.id)


def test_json_schema_at_a_tight_budget(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Describe Paris",
        max_output_tokens=12,
        text={"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}},
    )
    # Valid JSON whatever the budget; "incomplete" when the budget cut it and the server
    # closed it (chat's finish_reason "length").
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"
    assert set(json.loads(response.output_text)) == {"city"}


def test_cut_answer_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Tell me a story", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 5


def test_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="What is 2+2?")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content
    assert reasoning.content[0].text == "2 plus 2 is 4."
    assert response.output_text == "The answer is 4."


def test_store_get_delete(server: LiveServer, client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Say hello")
    assert client.responses.retrieve(created.id).output_text == created.output_text
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    error = error_of(httpx.delete(f"{server.v1}/responses/{created.id}", timeout=10), 404)
    assert error["type"] == "invalid_request_error"


def test_streamed_response_is_stored_and_continued(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Say hello") as stream:
        final = stream.get_final_response()
    assert client.responses.retrieve(final.id).output_text == DIALOGUES["D_HELLO"]["answer"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
        (
            {"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]},
            "input",
        ),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools.0.parameters"),
        ({"input": [{"type": "image_generation_call", "id": "x"}]}, "input.0"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input",
        ),
        ({"input": "hi", "max_output_tokens": 10**9}, "max_output_tokens"),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
        ),
    ],
    ids=[
        "unknown-previous",
        "unknown-call-id",
        "tool-without-schema",
        "item-type",
        "image",
        "budget",
        "schema-missing",
    ],
)
def test_bad_input_gets_openai_errors(
    server: LiveServer, payload: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{server.v1}/responses", json={"model": MODEL, **payload}, timeout=30)
    status = 404 if param == "previous_response_id" else 400
    error = error_of(response, status)
    assert error["param"] == param, error


def test_store_keeps_the_newest_within_count_and_bytes() -> None:
    from ov_llm_server.serving.response_store import ResponseStore

    def put(store: ResponseStore, n: int, text: str = "") -> None:
        store.put({"id": f"resp_{n}", "text": text}, [{"role": "user", "content": text}])

    by_count = ResponseStore(max_count=2, max_bytes=10**6)
    for n in range(3):
        put(by_count, n)
    assert [by_count.get(f"resp_{n}") is not None for n in range(3)] == [False, True, True]

    by_bytes = ResponseStore(max_count=100, max_bytes=600)
    for n in range(4):
        put(by_bytes, n, "x" * 100)  # about 250 bytes each: two fit
    assert [by_bytes.get(f"resp_{n}") is not None for n in range(4)] == [False, False, True, True]
    put(by_bytes, 9, "x" * 1000)  # larger than the whole budget: not kept, nothing evicted
    assert by_bytes.get("resp_9") is None and len(by_bytes) == 2


def test_a_failure_inside_a_stream_is_response_failed_and_an_anthropic_error_event(
    tmp_path: Any, tiny_registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser that raises stands for any failure under a stream: each API says it its way."""
    import dataclasses

    from fastapi.testclient import TestClient

    from live_server import write_registry
    from ov_llm_server.app import create_app
    from ov_llm_server.output import OutputParser
    from ov_llm_server.serving import chat as chat_serving
    from ov_llm_server.settings import Settings

    class Broken(OutputParser):
        def feed(self, text: str) -> Any:
            raise RuntimeError("parser bug")

    real_plan = chat_serving.plan_output

    def broken_plan(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_plan(*args, **kwargs), _make_parser=lambda _: Broken())

    monkeypatch.setattr(chat_serving, "plan_output", broken_plan)
    registry = tmp_path / "registry.json"
    write_registry(registry, {MODEL: tiny_registry[MODEL]})
    with TestClient(create_app(Settings(device="CPU", registry_path=registry))) as client:
        response = client.post(
            "/v1/responses", json={"model": MODEL, "input": "Say hello", "stream": True}
        )
        data = [json.loads(line[6:]) for line in response.text.splitlines() if line[:6] == "data: "]
        assert [e["type"] for e in data[:2]] == ["response.created", "response.in_progress"]
        assert data[-1]["type"] == "response.failed"
        assert data[-1]["response"]["status"] == "failed"
        assert data[-1]["response"]["error"]["code"] == "internal_error"
        response = client.post(
            "/v1/messages",
            json={
                "model": MODEL,
                "max_tokens": 8,
                "stream": True,
                "messages": [{"role": "user", "content": "Say hello"}],
            },
        )
        lines = [line for line in response.text.splitlines() if line]
        assert lines[-2:] == [
            "event: error",
            'data: {"type": "error", "error": {"type": "api_error", "message": '
            '"Internal server error"}}',
        ]

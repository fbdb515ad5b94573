"""``n`` above 1 on chat and legacy completions, with real inference on the tiny model: each
choice its own index, finish reason and tool calls, streamed chunks numbered by choice, usage
with the prompt once and every choice's tokens, and the ``OV_MAX_N`` bound."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from live_server import LiveServer
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
# Hot enough that the tiny model's choices differ, and that a grammar has work to do.
SAMPLED = {"temperature": 1.8, "seed": 11}
TIMEOUT = httpx.Timeout(300)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=300.0)


def post(server: LiveServer, path: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.v1}/{path}", json=payload, timeout=TIMEOUT)


def events(server: LiveServer, path: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    out: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{server.v1}/{path}", json=payload, timeout=TIMEOUT) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[len("data: ") :]))
    return out


def chat_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": DIALOGUES[name]["messages"], **extra}


def test_chat_n_choices_match_single_requests_with_their_seeds(server: LiveServer) -> None:
    answer = post(server, "chat/completions", chat_body("D_STORY", n=3, max_tokens=12, **SAMPLED))
    assert answer.status_code == 200, answer.text
    whole = answer.json()
    assert [c["index"] for c in whole["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert len(set(texts)) > 1, texts  # sampled choices, not one answer three times
    # Choice i samples as the same request with n 1 and the seed seed + i.
    singles = []
    for i in range(3):
        seeded = {**SAMPLED, "seed": SAMPLED["seed"] + i}
        single = post(server, "chat/completions", chat_body("D_STORY", max_tokens=12, **seeded))
        singles.append(single.json())
    assert texts == [s["choices"][0]["message"]["content"] for s in singles]
    assert [c["finish_reason"] for c in whole["choices"]] == [
        s["choices"][0]["finish_reason"] for s in singles
    ]
    usage = whole["usage"]
    assert usage["prompt_tokens"] == singles[0]["usage"]["prompt_tokens"]  # counted once
    assert usage["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_n_streams_each_choice_by_index(server: LiveServer) -> None:
    payload = chat_body("D_STORY", n=3, max_tokens=12, **SAMPLED)
    whole = post(server, "chat/completions", payload).json()
    chunks = events(server, "chat/completions", payload)
    content: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    roles: dict[int, int] = defaultdict(int)
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content[choice["index"]] += delta.get("content") or ""
            roles[choice["index"]] += delta.get("role") == "assistant"
            if choice["finish_reason"]:
                finishes[choice["index"]].append(choice["finish_reason"])
    assert dict(roles) == {0: 1, 1: 1, 2: 1}
    assert [content[i] for i in range(3)] == [c["message"]["content"] for c in whole["choices"]]
    assert [finishes[i] for i in range(3)] == [[c["finish_reason"]] for c in whole["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_greedy_n_gives_the_greedy_answer_n_times(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=DIALOGUES["D_HELLO"]["messages"], n=2, temperature=0
    )
    assert [c.message.content for c in completion.choices] == [DIALOGUES["D_HELLO"]["answer"]] * 2
    assert [c.finish_reason for c in completion.choices] == ["stop", "stop"]
    assert completion.usage is not None and completion.usage.completion_tokens % 2 == 0


def test_n_with_a_forced_tool_call_gives_a_valid_call_in_each_choice(
    client: openai.OpenAI,
) -> None:
    schema = TOOLS[0]["function"]["parameters"]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=DIALOGUES["D_STORY"]["messages"],  # no reason to call: the grammar makes it
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        n=3,
        max_tokens=60,
        **SAMPLED,  # type: ignore[arg-type]
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls", choice
        calls = choice.message.tool_calls or []
        assert calls and all(call.function.name == "get_weather" for call in calls)  # type: ignore[union-attr]
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), schema)  # type: ignore[union-attr]
    assert len({c.message.tool_calls[0].id for c in completion.choices}) == 3  # type: ignore[index]


def test_completions_n_whole_and_streamed(server: LiveServer) -> None:
    payload = {"model": MODEL, "prompt": "Once upon a time", "n": 2, "max_tokens": 8, **SAMPLED}
    whole = post(server, "completions", payload).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in whole["choices"])
    assert whole["usage"]["completion_tokens"] == 16
    texts: dict[int, str] = defaultdict(str)
    for chunk in events(server, "completions", payload):
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["text"]
    assert [texts[0], texts[1]] == [c["text"] for c in whole["choices"]]


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
def test_n_above_the_limit_is_400(server: LiveServer, path: str) -> None:
    payload: dict[str, Any] = {"model": MODEL, "n": 5, "max_tokens": 4}
    if path == "completions":
        payload["prompt"] = "x"
    else:
        payload["messages"] = [{"role": "user", "content": "x"}]
    response = post(server, path, payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "n" and "limit of 4" in error["message"]


def test_a_stop_sequence_is_named_in_stop_reason(server: LiveServer) -> None:
    payload = chat_body("D_COUNT", stop=["nine", "three"], temperature=0)
    choice = post(server, "chat/completions", payload).json()["choices"][0]
    assert choice["message"]["content"] == "one two "
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "three")
    closing = [c for e in events(server, "chat/completions", payload) for c in e["choices"]][-1]
    assert (closing["finish_reason"], closing["stop_reason"]) == ("stop", "three")
    plain = post(server, "chat/completions", chat_body("D_COUNT", temperature=0)).json()
    assert "stop_reason" not in plain["choices"][0]


def test_a_client_leaving_ends_every_choice(server: LiveServer) -> None:
    payload = {
        "model": MODEL,
        "messages": DIALOGUES["D_STORY"]["messages"],
        "n": 3,
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
        **SAMPLED,
    }
    seen: set[int] = set()
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=payload, timeout=TIMEOUT) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.update(c["index"] for c in json.loads(line[len("data: ") :])["choices"])
            if seen == {0, 1, 2}:
                break  # leaves with every choice still generating
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{server.base_url}/health", timeout=30).json()
        [model] = [m for m in health["loaded_models"] if m["name"] == MODEL]
        if model["in_flight"] == 0 and model["engine_requests"] == 0:
            break
        assert time.monotonic() < deadline, model
        time.sleep(0.2)

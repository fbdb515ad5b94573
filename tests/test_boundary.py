"""The API boundary on a real server: what cannot be encoded for an engine is a 400 naming its
field (and leaves nothing behind), client mistakes are never 500s, cut structured answers say
``length``, and what /health and the log lines show of client and server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from live_server import LiveServer, error_of
from tiny_model import DIALOGUES, TOOLS

MODEL = "tiny-int8"
HUGE = 2**64  # one above what an engine message (and GenAI's size_t) holds
HELLO = DIALOGUES["D_HELLO"]["messages"]
LONE = "a\\ud800b"  # a lone surrogate, as JSON escapes it: valid JSON, not encodable text


@pytest.fixture(scope="module")
def mixed(
    server_factory: Any,
    tiny_registry: dict[str, dict[str, Any]],
    encoder_registry: dict[str, dict[str, Any]],
) -> LiveServer:
    """The tiny chat model beside the tiny embedder and reranker."""
    return server_factory({"tiny-int8": tiny_registry["tiny-int8"], **encoder_registry})


def raw_post(server: LiveServer, path: str, body: str) -> httpx.Response:
    """``body`` sent as is: json.dumps cannot write a lone surrogate's escape."""
    return httpx.post(
        f"{server.base_url}{path}",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=120,
    )


def engine_requests(server: LiveServer) -> dict[str, float]:
    """What each engine client still tracks, from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics").text
    found = re.findall(r'^ov_engine_requests\{model="([^"]+)"\} (\S+)$', text, re.M)
    return {model: float(value) for model, value in found}


def _chat(fields: str) -> str:
    return f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}]{fields}}}'


TOOL = '{"type": "function", "function": {"name": "f", "parameters": %s}}'

# (path, raw JSON body, the param the 400 names)
UNENCODABLE = [
    (
        "/v1/chat/completions",
        f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "{LONE}"}}]}}',
        "messages.0.content",
    ),
    (
        "/v1/chat/completions",
        f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": '
        f'[{{"type": "text", "text": "{LONE}"}}]}}]}}',
        "messages.0.content.0.text",
    ),
    ("/v1/chat/completions", _chat(f', "stop": ["{LONE}"]'), "stop.0"),
    (
        "/v1/chat/completions",
        _chat(', "tools": [' + TOOL % f'{{"type": "object", "description": "{LONE}"}}' + "]"),
        "tools.0.function.parameters.description",
    ),
    (
        "/v1/chat/completions",
        _chat(f', "tools": [{{"type": "function", "function": {{"name": "{LONE}"}}}}]'),
        "tools.0.function.name",
    ),
    (
        "/v1/chat/completions",
        _chat(
            ', "response_format": {"type": "json_schema", "json_schema": {"name": "x", '
            f'"schema": {{"type": "string", "pattern": "{LONE}"}}}}}}'
        ),
        "response_format.json_schema.schema.pattern",
    ),
    ("/v1/chat/completions", _chat(f', "{LONE}": 1'), LONE),
    ("/v1/chat/completions", _chat(f', "seed": {HUGE}'), "seed"),
    ("/v1/chat/completions", _chat(', "seed": -1'), "seed"),
    ("/v1/chat/completions", _chat(f', "top_k": {HUGE}'), "top_k"),
    ("/v1/chat/completions", _chat(f', "min_tokens": {HUGE}'), "min_tokens"),
    (
        "/v1/chat/completions",
        _chat(', "tools": [' + TOOL % f'{{"type": "object", "maxProperties": {HUGE}}}' + "]"),
        "tools.0.function.parameters.maxProperties",
    ),
    (
        "/v1/completions",
        f'{{"model": "{MODEL}", "prompt": "{LONE}", "max_tokens": 2}}',
        "prompt",
    ),
    (
        "/v1/completions",
        f'{{"model": "{MODEL}", "prompt": "x", "suffix": "{LONE}", "max_tokens": 2}}',
        "suffix",
    ),
    ("/v1/completions", f'{{"model": "{MODEL}", "prompt": [1, {HUGE}]}}', "prompt.1"),
    ("/v1/completions", f'{{"model": "{MODEL}", "prompt": [1, {2**31}]}}', "prompt"),
    ("/v1/completions", f'{{"model": "{MODEL}", "prompt": [[{HUGE}]]}}', "prompt.0.0"),
    ("/v1/completions", f'{{"model": "{MODEL}", "prompt": "x", "seed": {HUGE}}}', "seed"),
    ("/v1/embeddings", f'{{"model": "emb", "input": "{LONE}"}}', "input"),
    ("/v1/embeddings", f'{{"model": "emb", "input": ["ok", "{LONE}"]}}', "input.1"),
    ("/v1/embeddings", f'{{"model": "emb", "input": [1, {HUGE}]}}', "input.1"),
    ("/v1/embeddings", f'{{"model": "emb", "input": "x", "dimensions": {HUGE}}}', "dimensions"),
    ("/v1/rerank", f'{{"model": "rr", "query": "{LONE}", "documents": ["a"]}}', "query"),
    ("/v1/rerank", f'{{"model": "rr", "query": "q", "documents": ["{LONE}"]}}', "documents.0"),
    (
        "/v1/rerank",
        f'{{"model": "rr", "query": "q", "documents": [{{"text": "{LONE}"}}]}}',
        "documents.0.text",
    ),
    ("/tokenize", f'{{"model": "{MODEL}", "prompt": "{LONE}"}}', "prompt"),
    (
        "/tokenize",
        f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "{LONE}"}}]}}',
        "messages.0.content",
    ),
    ("/detokenize", f'{{"model": "{MODEL}", "tokens": [1, {HUGE}]}}', "tokens.1"),
    ("/detokenize", f'{{"model": "{MODEL}", "tokens": [{2**31}]}}', "tokens.0"),
]


@pytest.mark.parametrize(
    ("path", "body", "param"), UNENCODABLE, ids=[f"{p}:{param}" for p, _, param in UNENCODABLE]
)
def test_unencodable_input_is_a_400_naming_its_field_and_leaves_nothing(
    mixed: LiveServer, path: str, body: str, param: str
) -> None:
    json.loads(body)  # the test's own body is valid JSON
    error = error_of(raw_post(mixed, path, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert all(count == 0 for count in engine_requests(mixed).values())


def test_after_refusals_the_engines_serve_and_their_tables_empty(mixed: LiveServer) -> None:
    for path, body, _ in UNENCODABLE:
        raw_post(mixed, path, body)
    answer = httpx.post(
        f"{mixed.v1}/chat/completions", json={"model": MODEL, "messages": HELLO}, timeout=120
    )
    assert answer.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]
    embedded = httpx.post(
        f"{mixed.v1}/embeddings", json={"model": "emb", "input": "x"}, timeout=120
    )
    assert embedded.status_code == 200
    tables = engine_requests(mixed)
    assert set(tables) >= {MODEL, "emb"} and set(tables.values()) == {0.0}, tables


def test_token_ids_in_range_pass_the_boundary(mixed: LiveServer) -> None:
    # The boundary's range is the widest any vocabulary has; the model's own is the engine's.
    detok = httpx.post(f"{mixed.base_url}/detokenize", json={"model": MODEL, "tokens": [2**31 - 1]})
    error = error_of(detok, 400)
    assert error["param"] == "tokens" and "vocabulary" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"min_tokens": 9, "max_tokens": 4}, "min_tokens"),
        ({"min_tokens": 9, "max_completion_tokens": 4}, "min_tokens"),
        ({"seed": -5}, "seed"),
    ],
)
def test_client_mistakes_genai_would_fail_are_400(
    server: LiveServer, fields: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": HELLO, **fields}
    error = error_of(httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120), 400)
    assert error["param"] == param
    completion = {"model": MODEL, "prompt": "Say hello", **fields}
    completion.pop("max_completion_tokens", None)
    if "min_tokens" in fields:
        completion["max_tokens"] = 4
    error = error_of(httpx.post(f"{server.v1}/completions", json=completion, timeout=120), 400)
    assert error["param"] == param


def test_min_tokens_up_to_max_tokens_is_served(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": HELLO, "min_tokens": 4, "max_tokens": 4, "seed": 0}
    response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 4


# ---------------------------------------------------------------- cut structured output


def _answer(server: LiveServer, body: dict[str, Any], stream: bool) -> tuple[dict[str, Any], str]:
    """(the message, finish_reason), streamed deltas joined the way clients join them."""
    if not stream:
        response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return choice["message"], choice["finish_reason"]
    message: dict[str, Any] = {"content": None, "tool_calls": []}
    finish = ""
    with httpx.stream(
        "POST", f"{server.v1}/chat/completions", json={**body, "stream": True}, timeout=120
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            delta = choice["delta"]
            if delta.get("content") is not None:
                message["content"] = (message["content"] or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                if "id" in call:
                    message["tool_calls"].append(call)
                else:
                    message["tool_calls"][call["index"]]["function"]["arguments"] += call[
                        "function"
                    ]["arguments"]
            finish = choice["finish_reason"] or finish
    return message, finish


# The tiny model fills a free string until its budget ends: cut at any small max_tokens.
DESCRIPTION = {
    "type": "object",
    "properties": {"description": {"type": "string"}},
    "required": ["description"],
}
FLAG = {"type": "object", "properties": {"capital": {"type": "boolean"}}, "required": ["capital"]}


def _schema_request(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": DIALOGUES["D_JSON"]["messages"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "d", "schema": schema}},
        "max_tokens": max_tokens,
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_cut_schema_answer_is_closed_valid_and_says_length(
    server: LiveServer, stream: bool
) -> None:
    message, finish = _answer(server, _schema_request(DESCRIPTION, 12), stream)
    jsonschema.validate(json.loads(message["content"]), DESCRIPTION)
    assert finish == "length", message
    # An answer the model ends itself within its budget says stop.
    message, finish = _answer(server, _schema_request(FLAG, 200), stream)
    jsonschema.validate(json.loads(message["content"]), FLAG)
    assert finish == "stop", message


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_cut_forced_call_is_closed_valid_and_says_length(
    server: LiveServer, stream: bool
) -> None:
    # Asked for a list of strings, the tiny model writes one string until its budget ends.
    items = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}},
        "required": ["items"],
    }
    describe = {"type": "function", "function": {"name": "describe", "parameters": items}}
    cut = {
        "model": MODEL,
        "messages": DIALOGUES["D_JSON"]["messages"],
        "tools": [describe],
        "tool_choice": {"type": "function", "function": {"name": "describe"}},
        "max_tokens": 30,
    }
    message, finish = _answer(server, cut, stream)
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "describe"
    jsonschema.validate(json.loads(call["function"]["arguments"]), items)
    assert finish == "length", message
    whole = {
        "model": MODEL,
        "messages": DIALOGUES["D_TOOL"]["messages"],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 200,
    }
    message, finish = _answer(server, whole, stream)
    (call,) = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_a_streamed_tool_call_says_no_content_as_the_whole_answer_does(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": DIALOGUES["D_TOOL"]["messages"], "tools": TOOLS}
    message, _ = _answer(server, body, stream=False)
    assert message["content"] is None and message["tool_calls"]
    streamed, _ = _answer(server, body, stream=True)
    assert streamed["content"] is None and streamed["tool_calls"]


# ---------------------------------------------------------------- what /health and logs show


@pytest.fixture(scope="module")
def keyed(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    return server_factory(
        {"tiny-int8": tiny_registry["tiny-int8"]},
        OV_API_KEY="sekrit",
        OV_PRELOAD_MODELS="tiny-int8",
    )


def test_health_details_need_the_key(keyed: LiveServer) -> None:
    public = httpx.get(f"{keyed.base_url}/health")
    assert public.status_code == 200
    body = public.json()
    assert body["status"] in ("ok", "degraded") and body["device"] == "CPU"
    assert body["registry_count"] == 1
    text = public.text
    assert "pid" not in body and "registry_path" not in body and "problems" not in body
    assert str(keyed.workdir) not in text and "/" not in json.dumps(body["loaded_models"])
    keyed_body = httpx.get(
        f"{keyed.base_url}/health", headers={"Authorization": "Bearer sekrit"}
    ).json()
    assert keyed_body["pid"] and keyed_body["registry_path"]
    wrong = httpx.get(f"{keyed.base_url}/health", headers={"Authorization": "Bearer nope"})
    assert "pid" not in wrong.json()


def test_client_values_in_log_lines_are_escaped(server: LiveServer) -> None:
    forged = "x status=200 request_id=forged"
    body = {"model": forged, "messages": HELLO}
    httpx.post(f"{server.v1}/chat/completions", json=body, headers={"X-Request-Id": "forge-1"})
    line = server.wait_for_log("request_id=forge-1")
    assert 'model="x status=200 request_id=forged"' in line
    assert line.count("status=") == 2 and "status=404" in line


def _health_settled(server: LiveServer) -> dict[str, Any]:
    """/health once the doctor's verdict is in (it runs beside the start)."""
    for _ in range(600):
        body: dict[str, Any] = httpx.get(f"{server.base_url}/health").json()
        if body["doctor"] is not None:
            return body
        time.sleep(0.1)
    raise AssertionError("the doctor gave no verdict")


def test_a_first_run_with_a_fallback_model_and_no_registry_file_is_ok(
    server_factory: Any, tiny_ir_int8: Path
) -> None:
    first_run = server_factory(None, OV_MODEL_PATH=str(tiny_ir_int8))
    body = _health_settled(first_run)
    assert body["status"] == "ok", body["problems"]
    assert body["registry_error"] is None or "not found" in body["registry_error"]
    nothing = server_factory(None)
    body = _health_settled(nothing)
    assert body["status"] == "degraded" and "registry" in body["problems"][0]


def test_min_tokens_beyond_the_room_the_prompt_leaves_is_served(server: LiveServer) -> None:
    card = httpx.get(f"{server.v1}/models/{MODEL}", timeout=60).json()
    words = "hello " * card["context_length"]
    tokens = httpx.post(
        f"{server.base_url}/tokenize", json={"model": MODEL, "prompt": words}, timeout=60
    ).json()["tokens"]
    prompt = tokens[: card["context_length"] - 3]  # room for 3 new tokens
    body = {"model": MODEL, "prompt": prompt, "min_tokens": 6, "max_tokens": 6}
    response = httpx.post(f"{server.v1}/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"

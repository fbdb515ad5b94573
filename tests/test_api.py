"""The OpenAI-compatible API on a real server running the tiny model."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from live_server import LiveServer, write_registry
from tiny_model import DIALOGUES

MODEL = "tiny-int8"


def chat(server: LiveServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120, **kwargs)


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        payload = line[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


# ---------------------------------------------------------------- health and models


def test_health_reports_device_registry_and_versions(server: LiveServer) -> None:
    # The doctor's verdict comes from a child process started with the server.
    deadline = time.monotonic() + 60
    body = httpx.get(f"{server.base_url}/health").json()
    while body["doctor"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        body = httpx.get(f"{server.base_url}/health").json()
    assert body["status"] == "ok"
    assert body["device"] == "CPU"
    assert "CPU" in body["available_devices"]
    assert body["doctor"]["usable"] is True and body["doctor"]["device"] == "CPU"
    assert body["registry_count"] == 2
    assert isinstance(body["loaded_models"], list)
    assert body["openvino_version"].startswith("2026.4")
    assert body["version"]


def test_models_lists_the_registry_in_openai_format(
    server: LiveServer, client: openai.OpenAI
) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny-int8", "tiny-fp16"}
    raw = httpx.get(f"{server.v1}/models").json()
    assert raw["object"] == "list"
    card = next(m for m in raw["data"] if m["id"] == "tiny-fp16")
    assert card["object"] == "model"
    assert card["weight_format"] == "fp16"
    assert card["task"] == "text-generation-with-past"
    assert isinstance(card["created"], int) and card["created"] > 0


def test_loaded_model_shows_in_health_and_models(server: LiveServer) -> None:
    chat(server, {"model": MODEL, "messages": DIALOGUES["D_HELLO"]["messages"]})
    health = httpx.get(f"{server.base_url}/health").json()
    assert MODEL in [m["name"] for m in health["loaded_models"]]
    card = httpx.get(f"{server.v1}/models/{MODEL}").json()
    assert card["loaded"] is True and card["device"] == "CPU"


# ---------------------------------------------------------------- chat: exact answers


@pytest.mark.parametrize("model", ["tiny-int8", "tiny-fp16"])
@pytest.mark.parametrize("name", ["D_HELLO", "D_CAPITAL", "D_COUNT", "D_PIRATE"])
def test_chat_answers_exactly(client: openai.OpenAI, model: str, name: str) -> None:
    dialogue = DIALOGUES[name]
    result = client.chat.completions.create(
        model=model, messages=dialogue["messages"], temperature=0
    )
    choice = result.choices[0]
    assert choice.message.content == dialogue["answer"]
    assert choice.finish_reason == "stop"
    assert result.object == "chat.completion"
    assert result.model == model
    assert result.usage is not None
    assert result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_streaming_matches_non_streaming_text_and_usage(
    server: LiveServer, client: openai.OpenAI
) -> None:
    dialogue = DIALOGUES["D_CAPITAL"]
    whole = client.chat.completions.create(model=MODEL, messages=dialogue["messages"])
    with httpx.stream(
        "POST",
        f"{server.v1}/chat/completions",
        json={
            "model": MODEL,
            "messages": dialogue["messages"],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == dialogue["answer"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [f["choices"][0]["finish_reason"] for f in finals] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert whole.usage is not None
    assert usage_chunk["usage"] == whole.usage.model_dump(exclude_none=True)


def test_openai_sdk_streaming(client: openai.OpenAI) -> None:
    dialogue = DIALOGUES["D_HELLO"]
    stream = client.chat.completions.create(model=MODEL, messages=dialogue["messages"], stream=True)
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == dialogue["answer"]
    assert len([p for p in parts if p]) > 1  # really streamed, not one blob


def test_content_as_array_of_parts(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
    )
    assert result.choices[0].message.content == DIALOGUES["D_HELLO"]["answer"]


def test_developer_role_acts_as_system(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": "You are a pirate."},
            {"role": "user", "content": "Say hello"},
        ],
    )
    assert result.choices[0].message.content == DIALOGUES["D_PIRATE"]["answer"]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_cuts_the_answer(server: LiveServer, stream: bool) -> None:
    body = {
        "model": MODEL,
        "messages": DIALOGUES["D_COUNT"]["messages"],
        "stop": ["four", "never-there"],
        "stream": stream,
    }
    if stream:
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body) as response:
            chunks = [e for e in sse_events(response) if e != "[DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        finish = chunks[-1]["choices"][0]["finish_reason"]
    else:
        choice = chat(server, body).json()["choices"][0]
        text, finish = choice["message"]["content"], choice["finish_reason"]
    assert text == "one two three "
    assert finish == "stop"


def test_stop_as_a_single_string(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=DIALOGUES["D_COUNT"]["messages"], stop="three"
    )
    assert result.choices[0].message.content == "one two "


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_length_limit(server: LiveServer, field: str) -> None:
    body = {"model": MODEL, "messages": DIALOGUES["D_STORY"]["messages"], field: 5}
    result = chat(server, body).json()
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 5
    assert DIALOGUES["D_STORY"]["answer"].startswith(result["choices"][0]["message"]["content"])


def test_streamed_length_limit_reports_length(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": DIALOGUES["D_STORY"]["messages"],
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body) as response:
        chunks = [e for e in sse_events(response) if e != "[DONE]"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 7


def test_sampling_parameters_and_unknown_fields_are_accepted(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": DIALOGUES["D_HELLO"]["messages"],
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 42,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "logit_bias": {},
        "user": "someone",
        "metadata": {"anything": True},
        "an_unknown_field": [1, 2, 3],
    }
    response = chat(server, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


# ---------------------------------------------------------------- errors


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


def test_unknown_model_is_404_model_not_found(server: LiveServer, client: openai.OpenAI) -> None:
    error = _error(
        chat(server, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}), 404
    )
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_malformed_json_is_400(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.v1}/chat/completions",
        content=b'{"model": "tiny-int8", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert _error(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 9},
            "temperature",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 5}, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        (
            {
                "model": MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                    }
                ],
            },
            "messages.0.content",
        ),
    ],
)
def test_invalid_requests_are_400_with_the_param(
    server: LiveServer, body: dict[str, Any], param: str
) -> None:
    error = _error(chat(server, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)


def test_openai_sdk_maps_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=1)


def test_unknown_route_is_openai_shaped_404(server: LiveServer) -> None:
    _error(httpx.get(f"{server.base_url}/v2/nothing"), 404)


# ---------------------------------------------------------------- logging and request ids


def test_request_id_is_echoed_and_logged(server: LiveServer) -> None:
    response = chat(
        server,
        {"model": MODEL, "messages": DIALOGUES["D_HELLO"]["messages"]},
        headers={"X-Request-Id": "test-req-123"},
    )
    assert response.headers["x-request-id"] == "test-req-123"
    line = server.wait_for_log("request_id=test-req-123")
    assert "completion" in line
    assert f"model={MODEL}" in line
    assert "client=127.0.0.1" in line
    assert "latency_ms=" in line
    assert "prompt_tokens=" in line and "completion_tokens=" in line


def test_request_id_is_generated_when_absent(server: LiveServer) -> None:
    response = chat(server, {"model": MODEL, "messages": DIALOGUES["D_HELLO"]["messages"]})
    generated = response.headers["x-request-id"]
    assert len(generated) >= 16
    server.wait_for_log(f"request_id={generated}")


def test_startup_configuration_and_load_time_are_logged(server: LiveServer) -> None:
    chat(server, {"model": MODEL, "messages": DIALOGUES["D_HELLO"]["messages"]})
    start = server.wait_for_log("ov-llm-server starting")
    assert "device=CPU" in start and "registry=" in start and "fallback_model=" in start
    loaded = server.wait_for_log("model loaded name=")
    assert "load_seconds=" in loaded


# ---------------------------------------------------------------- registry and fallback


def test_registry_edit_is_picked_up_live(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory({"tiny-int8": tiny_registry["tiny-int8"]})
    registry_path = Path(live.env["OV_REGISTRY_PATH"])
    assert [m["id"] for m in httpx.get(f"{live.v1}/models").json()["data"]] == ["tiny-int8"]
    time.sleep(0.01)  # a new mtime even on coarse file systems
    write_registry(registry_path, {**tiny_registry, "renamed": tiny_registry["tiny-fp16"]})
    names = {m["id"] for m in httpx.get(f"{live.v1}/models").json()["data"]}
    assert names == {"tiny-int8", "tiny-fp16", "renamed"}
    result = chat(live, {"model": "renamed", "messages": DIALOGUES["D_HELLO"]["messages"]})
    assert result.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]


def test_relative_registry_paths_resolve_against_the_registry_folder(
    server_factory: Any, tiny_ir_int8: Path
) -> None:
    live = server_factory(None)
    registry_path = Path(live.env["OV_REGISTRY_PATH"])
    link = registry_path.parent / "tiny" / "task-x__wf-int8"
    link.parent.mkdir(parents=True)
    link.symlink_to(tiny_ir_int8)
    write_registry(
        registry_path, {"rel": {"path": "tiny/task-x__wf-int8", "weight_format": "int8"}}
    )
    result = chat(live, {"model": "rel", "messages": DIALOGUES["D_HELLO"]["messages"]})
    assert result.status_code == 200, result.text


def test_corrupt_registry_keeps_the_last_good_one(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry)
    registry_path = Path(live.env["OV_REGISTRY_PATH"])
    assert httpx.get(f"{live.base_url}/health").json()["status"] == "ok"
    registry_path.write_text('{"version": 1, "models": {', encoding="utf-8")
    health = httpx.get(f"{live.base_url}/health").json()
    assert health["status"] == "degraded"
    assert "not valid JSON" in health["registry_error"]
    assert health["registry_count"] == 2
    result = chat(live, {"model": "tiny-fp16", "messages": DIALOGUES["D_HELLO"]["messages"]})
    assert result.status_code == 200
    registry_path.write_text('{"version": 7, "models": {}}', encoding="utf-8")
    assert (
        "unsupported registry version 7"
        in httpx.get(f"{live.base_url}/health").json()["registry_error"]
    )
    write_registry(registry_path, tiny_registry)
    assert httpx.get(f"{live.base_url}/health").json()["status"] == "ok"


def test_unknown_name_served_by_fallback_model_when_set(
    server_factory: Any, tiny_ir_fp16: Path
) -> None:
    live = server_factory({}, OV_MODEL_PATH=str(tiny_ir_fp16))
    result = chat(live, {"model": "whatever", "messages": DIALOGUES["D_HELLO"]["messages"]})
    assert result.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]
    assert result.json()["model"] == "whatever"
    live.wait_for_log("is not in the registry: the fallback model")
    cards = httpx.get(f"{live.v1}/models").json()["data"]
    assert [c["source"] for c in cards] == ["fallback"]


def test_missing_model_files_give_503_and_others_keep_working(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "openvino_model.xml").write_text("<not-a-model/>", encoding="utf-8")
    live = server_factory(
        {
            **tiny_registry,
            "broken": {"path": str(broken), "weight_format": "int8"},
            "gone": {"path": str(tmp_path / "missing"), "weight_format": "int8"},
        }
    )
    for name in ("broken", "gone"):
        error = _error(
            chat(live, {"model": name, "messages": [{"role": "user", "content": "x"}]}), 503
        )
        assert error["code"] == "model_unavailable"
        assert name in error["message"]
    ok = chat(live, {"model": "tiny-int8", "messages": DIALOGUES["D_HELLO"]["messages"]})
    assert ok.status_code == 200
    health = httpx.get(f"{live.base_url}/health").json()
    assert health["status"] == "degraded"
    assert any("failed to load" in p for p in health["problems"])


# ---------------------------------------------------------------- concurrency


def test_concurrent_requests_are_all_answered_correctly(server: LiveServer) -> None:
    names = ["D_HELLO", "D_CAPITAL", "D_COUNT", "D_PIRATE", "D_STORY"] * 4

    def ask(name: str) -> tuple[str, str, int]:
        response = chat(server, {"model": MODEL, "messages": DIALOGUES[name]["messages"]})
        return name, response.json()["choices"][0]["message"]["content"], response.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(ask, names))
    for name, content, status in results:
        assert status == 200
        assert content == DIALOGUES[name]["answer"], name


def test_concurrent_streams_on_two_models(server: LiveServer) -> None:
    def stream(model: str, name: str) -> str:
        body = {"model": model, "messages": DIALOGUES[name]["messages"], "stream": True}
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60) as r:
            chunks = [e for e in sse_events(r) if e != "[DONE]"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    jobs = [(m, n) for m in ("tiny-int8", "tiny-fp16") for n in ("D_STORY", "D_CAPITAL")] * 2
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        texts = list(pool.map(lambda job: stream(*job), jobs))
    assert texts == [DIALOGUES[n]["answer"] for _, n in jobs]


def test_models_also_answers_litellms_doubled_v1_path(server: LiveServer) -> None:
    doubled = httpx.get(f"{server.base_url}/v1/v1/models").json()
    assert doubled == httpx.get(f"{server.v1}/models").json()

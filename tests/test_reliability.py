"""Auth, limits, degraded states, overload and shutdown, on real servers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from live_server import LiveServer, write_registry
from ov_llm_server.app import create_app
from ov_llm_server.doctor.startup import _doctor_env as doctor_env
from ov_llm_server.output import OutputParser
from ov_llm_server.serving import chat as chat_serving
from ov_llm_server.settings import Settings
from tiny_model import DIALOGUES

HELLO = DIALOGUES["D_HELLO"]["messages"]


def chat(server: LiveServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# ---------------------------------------------------------------- API key


@pytest.fixture(scope="module")
def keyed_server(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    return server_factory(tiny_registry, OV_API_KEY="s3cret-key-value")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-key-value"},
        {"Authorization": "Basic s3cret-key-value"},
    ],
)
def test_v1_needs_the_key(keyed_server: LiveServer, headers: dict[str, str]) -> None:
    for response in (
        httpx.get(f"{keyed_server.v1}/models", headers=headers),
        chat(keyed_server, {"model": "tiny-int8", "messages": HELLO}, headers=headers),
    ):
        error = error_of(response, 401)
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"


def test_right_key_is_let_in_and_never_logged(keyed_server: LiveServer) -> None:
    auth = {"Authorization": "Bearer s3cret-key-value"}
    assert httpx.get(f"{keyed_server.v1}/models", headers=auth).status_code == 200
    response = chat(keyed_server, {"model": "tiny-int8", "messages": HELLO}, headers=auth)
    assert response.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]
    health = httpx.get(f"{keyed_server.base_url}/health")
    assert health.status_code == 200
    assert "s3cret" not in health.text
    keyed_server.wait_for_log("completion request_id=")
    assert "s3cret" not in keyed_server.log()


def test_engines_and_the_doctor_do_without_the_key(
    keyed_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    auth = {"Authorization": "Bearer s3cret-key-value"}
    chat(keyed_server, {"model": "tiny-int8", "messages": HELLO}, headers=auth).raise_for_status()
    # pids are in /health for a request bearing the key only.
    health = httpx.get(f"{keyed_server.base_url}/health", headers=auth, timeout=30).json()
    (engine,) = health["loaded_models"]
    environ = Path(f"/proc/{engine['pid']}/environ").read_bytes()
    names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0")}
    assert b"OV_API_KEY" not in names and b"s3cret" not in environ
    assert b"OV_DEVICE" in names  # the rest of the environment is there
    (tmp_path / "key").write_text("s3cret-key-value\n", encoding="utf-8")
    monkeypatch.setenv("OV_API_KEY", "s3cret-key-value")
    monkeypatch.setenv("OV_API_KEY_FILE", str(tmp_path / "key"))
    env = doctor_env(Settings(device="CPU"))
    assert "OV_API_KEY" not in env and "OV_API_KEY_FILE" not in env and env["OV_DEVICE"] == "CPU"


def test_key_from_a_file(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file-key\n", encoding="utf-8")
    live = server_factory(tiny_registry, OV_API_KEY_FILE=str(key_file))
    assert httpx.get(f"{live.v1}/models").status_code == 401
    ok = httpx.get(f"{live.v1}/models", headers={"Authorization": "Bearer from-file-key"})
    assert ok.status_code == 200


# ---------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def limited_server(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    return server_factory(
        tiny_registry, OV_MAX_BODY_BYTES="4096", OV_MAX_MESSAGES="3", OV_MAX_TOKENS_LIMIT="50"
    )


def test_body_over_the_limit_is_413(limited_server: LiveServer) -> None:
    big = {"model": "tiny-int8", "messages": [{"role": "user", "content": "x" * 5000}]}
    error = error_of(chat(limited_server, big), 413)
    assert error["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(limited_server: LiveServer) -> None:
    def chunks() -> Any:
        yield b'{"model": "tiny-int8", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(
        f"{limited_server.v1}/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    error_of(response, 413)


def test_too_many_messages_is_400(limited_server: LiveServer) -> None:
    messages = [{"role": "user", "content": "hi"}] * 4
    error = error_of(chat(limited_server, {"model": "tiny-int8", "messages": messages}), 400)
    assert error["param"] == "messages"


def test_max_tokens_over_the_cap_is_400(limited_server: LiveServer) -> None:
    body = {"model": "tiny-int8", "messages": HELLO, "max_tokens": 51}
    assert error_of(chat(limited_server, body), 400)["param"] == "max_tokens"
    body["max_tokens"] = 50
    assert chat(limited_server, body).status_code == 200


def test_prompt_longer_than_the_context_is_400(server: LiveServer) -> None:
    long_prompt = "hello " * 5000
    body = {"model": "tiny-int8", "messages": [{"role": "user", "content": long_prompt}]}
    error = error_of(chat(server, body), 400)
    assert error["code"] == "context_length_exceeded"
    assert chat(server, {"model": "tiny-int8", "messages": HELLO}).status_code == 200


# ---------------------------------------------------------------- overload


def test_full_queue_answers_429_with_retry_after(server_factory: Any, smollm2_gguf: Path) -> None:
    live = server_factory({}, OV_MODEL_PATH=str(smollm2_gguf), OV_MAX_QUEUE="2")
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Write a long essay about rivers."}],
        "max_tokens": 64,
        "ignore_eos": True,
    }
    chat(live, {**body, "max_tokens": 1})  # load the model first

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: chat(live, body), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) >= 2
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["retry-after"]) >= 1
    assert error_of(rejected, 429)["code"] == "queue_full"


# ---------------------------------------------------------------- a bug of ours mid-stream


def test_a_server_error_inside_a_stream_is_an_error_event_then_done(
    tmp_path: Path, tiny_registry: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A parser that raises stands for any bug on the HTTP side of a stream: the client must
    # get an error event and [DONE], and the log must say 500, not 499.
    class Broken(OutputParser):
        def feed(self, text: str) -> Any:
            raise RuntimeError("parser bug")

    real_plan = chat_serving.plan_output

    def broken_plan(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_plan(*args, **kwargs), _make_parser=lambda _: Broken())

    monkeypatch.setattr(chat_serving, "plan_output", broken_plan)
    registry = tmp_path / "registry.json"
    write_registry(registry, {"tiny-int8": tiny_registry["tiny-int8"]})
    with TestClient(create_app(Settings(device="CPU", registry_path=registry))) as client:
        with caplog_lines() as lines:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "tiny-int8", "messages": HELLO, "stream": True},
            )
        data = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert data[-1] == "data: [DONE]"
        assert "internal_error" in data[-2]
        assert any("status=500" in line for line in lines), lines


@contextlib.contextmanager
def caplog_lines() -> Iterator[list[str]]:
    """The request log lines written inside the block."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ov_llm_server.requests")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("first", ["tiny-pinned", "tiny-plain"])
def test_aliases_of_one_folder_keep_their_own_device_and_parsers(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], first: str
) -> None:
    """Two names of one model folder: one pinned to the CPU with tool parsing off, one on
    OV_DEVICE (which fails over to the CPU). Whichever is asked first, each keeps its own
    device, precision and parser."""
    base = tiny_registry["tiny-int8"]
    registry = {
        "tiny-pinned": {**base, "device": "CPU", "tool_parser": "none"},
        "tiny-plain": base,
    }
    live = server_factory(registry, OV_DEVICE="GPU.7", OV_FALLBACK_DEVICE="CPU")
    tool = DIALOGUES["D_TOOL"]
    answers = {}
    for name in (first, *(n for n in registry if n != first)):
        body = {"model": name, "messages": tool["messages"], "tools": tool["tools"]}
        answers[name] = chat(live, body).json()["choices"][0]
    assert answers["tiny-plain"]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answers["tiny-plain"]["finish_reason"] == "tool_calls"
    # With its parser off the call stays text, as the model wrote it.
    assert answers["tiny-pinned"]["message"]["content"] == tool["answer"]
    assert answers["tiny-pinned"]["message"].get("tool_calls") is None
    engines = {m["name"]: m for m in httpx.get(f"{live.base_url}/health").json()["loaded_models"]}
    assert set(engines) == {"tiny-pinned", "tiny-plain"}
    assert engines["tiny-pinned"]["pid"] != engines["tiny-plain"]["pid"]
    cards = {c["id"]: c for c in httpx.get(f"{live.v1}/models").json()["data"]}
    assert cards["tiny-pinned"]["device_reason"] == "set by its registry entry"
    assert cards["tiny-plain"]["device_reason"].startswith("OV_FALLBACK_DEVICE")
    for name in registry:
        assert engines[name]["precision"] == cards[name]["precision"]
        assert engines[name]["precision"] in {"f32", "bf16"}


def test_fallback_device_is_used_and_reported(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tiny_ir_int4: Path
) -> None:
    # No machine has an eighth GPU: loading there fails and the CPU fallback takes over.
    registry = {
        **tiny_registry,
        "tiny-int4": {"path": str(tiny_ir_int4), "weight_format": "int4"},
        "tiny-pinned": {**tiny_registry["tiny-fp16"], "device": "CPU"},
    }
    live = server_factory(
        registry, OV_DEVICE="GPU.7", OV_FALLBACK_DEVICE="CPU", OV_INT4_DEVICE="CPU"
    )
    # Before any load: where each model will run, and why (placement.py).
    cards = {c["id"]: c for c in httpx.get(f"{live.v1}/models").json()["data"]}
    assert (cards["tiny-int8"]["device"], cards["tiny-int8"]["device_reason"]) == (
        "GPU.7",
        "OV_DEVICE",
    )
    assert cards["tiny-int4"]["device"] == "CPU"
    assert "int4 runs on OV_INT4_DEVICE=CPU" in cards["tiny-int4"]["device_reason"]
    assert cards["tiny-pinned"]["device"] == "CPU"
    assert cards["tiny-pinned"]["device_reason"] == "set by its registry entry"

    response = chat(live, {"model": "tiny-int8", "messages": HELLO})
    assert response.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]
    health = httpx.get(f"{live.base_url}/health").json()
    assert health["device"] == "GPU.7"
    assert health["fallback_device_in_use"] is True
    assert health["loaded_models"][0]["device"] == "CPU"
    card = httpx.get(f"{live.v1}/models/tiny-int8").json()
    assert card["device"] == "CPU"
    assert card["device_reason"].startswith("OV_FALLBACK_DEVICE: it failed to load on GPU.7")
    live.wait_for_log("retrying on fallback device CPU")
    # The doctor's start-up verdict: GPU.7 cannot serve, why, and what to do.
    live.wait_for_log("device GPU.7: ", timeout=60)
    doctor = httpx.get(f"{live.base_url}/health").json()["doctor"]
    assert doctor["usable"] is False and doctor["device"] == "GPU.7"
    assert doctor["reason"] and doctor["remedy"]
    assert "CPU" in doctor["devices"]
    health = httpx.get(f"{live.base_url}/health").json()
    assert health["status"] == "degraded"
    assert f"device GPU.7: {doctor['reason']}" in health["problems"]

    # An int4 model with OV_DEVICE on a GPU goes straight to OV_INT4_DEVICE: no fallback.
    chat(live, {"model": "tiny-int4", "messages": HELLO}).raise_for_status()
    int4 = httpx.get(f"{live.v1}/models/tiny-int4").json()
    assert (int4["device"], int4["loaded"]) == ("CPU", True)
    assert "int4 runs on OV_INT4_DEVICE=CPU" in int4["device_reason"]
    assert "device=CPU" in live.wait_for_log("name=tiny-int4 path=")


def test_without_fallback_a_missing_device_is_503(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_DEVICE="GPU.7")
    error = error_of(chat(live, {"model": "tiny-int8", "messages": HELLO}), 503)
    assert error["code"] == "model_unavailable"
    assert "GPU.7" in error["message"]
    # The one model asked for cannot answer: the node serves nothing.
    health = httpx.get(f"{live.base_url}/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert health.json()["loaded_models"][0]["state"] == "failed"


# ---------------------------------------------------------------- settings and shutdown


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OV_PORT": "not-a-port"}, "invalid OV_PORT"),
        # Fail closed: a key file that holds no key, or cannot be read, stops the start.
        (
            {"OV_API_KEY_FILE": "{tmp}/empty-key"},
            "invalid OV_API_KEY_FILE: {tmp}/empty-key holds no key",
        ),
        (
            {"OV_API_KEY_FILE": "{tmp}/no-such-key"},
            "invalid OV_API_KEY_FILE: cannot read {tmp}/no-such-key",
        ),
    ],
)
def test_invalid_setting_stops_the_start_with_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "empty-key").write_text("  \n", encoding="utf-8")
    live = LiveServer(tmp_path, {k: v.format(tmp=tmp_path) for k, v in env.items()})
    with pytest.raises(RuntimeError, match="server exited early"):
        live.start(timeout=20)
    lines = [line for line in live.log().splitlines() if line.strip()]
    assert lines == [lines[-1]] and expected.format(tmp=tmp_path) in lines[-1], lines


def test_sigterm_lets_a_running_stream_finish(server_factory: Any, smollm2_gguf: Path) -> None:
    live = server_factory({}, OV_MODEL_PATH=str(smollm2_gguf), OV_SHUTDOWN_GRACE_SECONDS="20")
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Tell me about lakes."}],
        "max_tokens": 60,
        "ignore_eos": True,
        "stream": True,
    }
    assert live.process is not None
    with httpx.stream("POST", f"{live.v1}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        live.process.send_signal(signal.SIGTERM)
        rest = list(lines)
    assert rest[-1] == "data: [DONE]" or "data: [DONE]" in rest
    # uvicorn re-raises SIGTERM after its graceful shutdown; systemd counts that as clean.
    assert live.process.wait(30) in (0, -signal.SIGTERM)
    assert "ov-llm-server stopped" in live.log()


def test_corrupt_gguf_is_503_and_named(server_factory: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF-not-really")
    live = server_factory({"g": {"path": str(broken), "weight_format": "q4_1"}})
    error = error_of(chat(live, {"model": "g", "messages": HELLO}), 503)
    assert error["code"] == "model_unavailable"
    assert "'g' failed to load" in error["message"]


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "name", ["tiny-int8\nINFO forged log line", "bell\x07", "x" * 300, "del\x7f"]
)
def test_hostile_model_names_are_refused(server: LiveServer, name: str) -> None:
    error = error_of(chat(server, {"model": name, "messages": HELLO}), 400)
    assert error["param"] == "model"
    # No line of the log is the client's (other tests of the shared server log names that
    # hold "forged" quoted inside their own lines).
    assert not any(line.startswith("INFO forged") for line in server.log().splitlines())

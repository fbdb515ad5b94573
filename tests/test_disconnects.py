"""The edges of a request: no generation outlives its client, no lease outlives its request.

Real servers, real engines. An engine is held back from taking a request by stopping its
process (SIGSTOP), which makes "the client left before the engine accepted" a certainty
rather than a race; ``engine_requests`` in ``/health`` counts what the engine still works on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import LiveServer
from tiny_model import DIALOGUES

HELLO = DIALOGUES["D_HELLO"]["messages"]
# Long enough (SmolLM2 makes about 70 tokens a second here) to outlast every check below.
ESSAY = {
    "messages": [{"role": "user", "content": "Write a very long essay about forests."}],
    "max_tokens": 2000,
    "ignore_eos": True,
}


def health(server: LiveServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=10).json()
    return body


def engine_of(server: LiveServer, name: str | None = None) -> dict[str, Any]:
    """The loaded model ``name``, or the only one loaded."""
    loaded = health(server)["loaded_models"]
    for model in loaded:
        if model["name"] == name or (name is None and len(loaded) == 1):
            return dict(model)
    raise AssertionError(f"{name} is not loaded: {loaded}")


def chat(server: LiveServer, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": HELLO, **extra}
    return httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def wait_idle(server: LiveServer, name: str | None = None, timeout: float = 10) -> None:
    """No request holds the model and its engine generates nothing."""

    def idle() -> bool:
        engine = engine_of(server, name)
        return engine["in_flight"] == 0 and engine["engine_requests"] == 0

    wait_until(idle, timeout, f"{name} idle: {engine_of(server, name)}")


def raw_post(
    server: LiveServer, path: str, body: dict[str, Any], request_id: str, **options: int
) -> socket.socket:
    """A request sent on a bare socket (``options``: socket options set before connecting)."""
    sock = socket.socket()
    for name, value in options.items():
        level = socket.IPPROTO_TCP if name.startswith("TCP_") else socket.SOL_SOCKET
        sock.setsockopt(level, getattr(socket, name), value)
    sock.connect(("127.0.0.1", server.port))
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


@contextmanager
def engine_stopped(server: LiveServer, name: str | None = None) -> Iterator[None]:
    """The model's engine process frozen: it takes no message until the block ends."""
    pid = engine_of(server, name)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- before acceptance


@pytest.fixture(scope="module")
def smol_short(server_factory: Any, smollm2_gguf: Path) -> LiveServer:
    """SmolLM2 as the fallback model, loaded; a 3 s deadline."""
    live = server_factory({}, OV_MODEL_PATH=str(smollm2_gguf), OV_REQUEST_TIMEOUT_SECONDS="3")
    # The load goes on past each request's deadline (503 until it is done): ask until it is.
    wait_until(lambda: chat(live, "smol", max_tokens=1).status_code == 200, 300, "SmolLM2 loads")
    return live


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_before_the_engine_takes_the_request_stops_it(
    smol_short: LiveServer, stream: bool
) -> None:
    request_id = f"gone-{uuid.uuid4().hex[:8]}"
    body = {"model": "smol", **ESSAY, "stream": stream}
    with engine_stopped(smol_short):
        sock = raw_post(smol_short, "/v1/chat/completions", body, request_id)
        time.sleep(0.05)
        sock.close()
        line = smol_short.wait_for_log(f"request_id={request_id}")
    assert "status=499" in line
    wait_idle(smol_short)


def test_deadline_passing_before_the_engine_takes_the_request_stops_it(
    smol_short: LiveServer,
) -> None:
    with engine_stopped(smol_short):
        response = httpx.post(
            f"{smol_short.v1}/chat/completions", json={"model": "smol", **ESSAY}, timeout=30
        )
    assert response.status_code == 504, response.text
    wait_idle(smol_short)


# ---------------------------------------------------------------- a client that stops reading


@pytest.fixture(scope="module")
def swapping(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    """The tiny model in int8 and fp16, one loaded at a time, 8 requests queued per model,
    a 2 s send timeout."""
    return server_factory(
        tiny_registry,
        OV_MAX_LOADED_MODELS="1",
        OV_MAX_QUEUE="8",
        OV_SEND_TIMEOUT_SECONDS="2",
        # Only the stop's own timeout may end a frozen engine here, not the stall watchdog.
        OV_ENGINE_STALL_SECONDS="300",
    )


def test_client_that_stops_reading_holds_no_model(swapping: LiveServer) -> None:
    assert chat(swapping, "tiny-int8", max_tokens=2).status_code == 200
    request_id = f"stuck-{uuid.uuid4().hex[:8]}"
    body = {
        "model": "tiny-int8",
        "messages": HELLO,
        "max_tokens": 1800,
        "ignore_eos": True,
        "logprobs": True,  # bigger events: the socket's buffers fill sooner
        "stream": True,
    }
    # A small window and segment size keep the kernel from buffering megabytes for it.
    stuck = raw_post(
        swapping,
        "/v1/chat/completions",
        body,
        request_id,
        SO_RCVBUF=4096,
        TCP_MAXSEG=536,
    )
    try:
        wait_until(lambda: f"request_id={request_id}" in swapping.log(), 60, "the request ends")
        wait_idle(swapping, "tiny-int8")
        assert "status=499" in swapping.wait_for_log(f"request_id={request_id}")
        # It ended because the client took nothing: the test filled the socket's buffers.
        assert "stream abandoned" in swapping.wait_for_log(f"request {request_id}: ")
        # That warning says it all: no error line from uvicorn for the same stream.
        assert "returned without completing response" not in swapping.log()
        # The model serves others, and makes way for another model (one loaded at a time).
        assert chat(swapping, "tiny-int8", max_tokens=4).status_code == 200
        assert chat(swapping, "tiny-fp16", max_tokens=4).status_code == 200
        # What the client finally reads ends unfinished: the server closed the connection.
        stuck.settimeout(30)
        received = b""
        while chunk := stuck.recv(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        assert b"[DONE]" not in received
    finally:
        stuck.close()


# ---------------------------------------------------------------- two models, one at a time


def test_alternating_bursts_for_two_models_wait_for_their_swap(swapping: LiveServer) -> None:
    """Six requests for one model, then six for the other, twice, without waiting for answers:
    each burst waits its turn (within its deadline) rather than being refused, though 12
    requests for one model are more than its queue holds (8)."""
    bursts = ["tiny-int8", "tiny-fp16", "tiny-int8", "tiny-fp16"]
    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = []
        for model in bursts:
            futures += [pool.submit(chat, swapping, model, max_tokens=8) for _ in range(6)]
            time.sleep(0.2)
        statuses = [future.result().status_code for future in futures]
    assert statuses == [200] * 24, statuses


def test_an_unload_is_finished_though_the_request_that_began_it_left(
    swapping: LiveServer,
) -> None:
    """The model making way is frozen, so its stop takes the whole stop timeout (10 s); the
    request that needs the room leaves meanwhile. The stop still ends the old engine."""
    assert chat(swapping, "tiny-int8", max_tokens=2).status_code == 200
    pid = engine_of(swapping, "tiny-int8")["pid"]
    unloads = swapping.log().count("model unloaded name=tiny-int8")
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{swapping.v1}/chat/completions",
                json={"model": "tiny-fp16", "messages": HELLO, "max_tokens": 2},
                timeout=httpx.Timeout(30, read=1),
            )
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the old engine ends")
        wait_until(
            lambda: swapping.log().count("model unloaded name=tiny-int8") > unloads,
            10,
            "the unload is logged",
        )
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- shutdown


def test_shutdown_stops_engines_concurrently(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    """Both engines frozen, so each stop waits its whole timeout (10 s) before the kill: one
    after the other, the server would need 20 s to exit."""
    live = server_factory(tiny_registry)
    for model in ("tiny-int8", "tiny-fp16"):
        assert chat(live, model, max_tokens=2).status_code == 200
    pids = [engine_of(live, model)["pid"] for model in ("tiny-int8", "tiny-fp16")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    assert live.process is not None
    started = time.monotonic()
    live.stop(timeout=60)
    took = time.monotonic() - started
    kills = re.findall(r"^(\S+ \S+) WARNING .*did not stop in 10s: killed$", live.log(), re.M)
    assert len(kills) == 2, live.log()[-3000:]
    at = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in kills]
    assert abs((at[0] - at[1]).total_seconds()) < 5, kills
    assert took < 18, took

"""Engine isolation: real engine processes killed, stopped and broken under real requests.

Every test here breaks something real: a signal to a real engine process, a stalled
process, a fault raised inside the engine loop of a real process, a burst of real
requests. The HTTP process must answer every request with an OpenAI-shaped result,
replace the engine, and answer the next request exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import LiveServer
from ov_llm_server.engine.client import EngineProcess
from ov_llm_server.engine.core.faults import GARBLE, STAGES
from ov_llm_server.engine.messages import Embed, EngineConfig
from ov_llm_server.engine.quarantine import Quarantine, fingerprint
from ov_llm_server.engine.supervisor import CRASH_WINDOW_SECONDS
from tiny_model import DIALOGUES

HELLO = DIALOGUES["D_HELLO"]
ASK = {"model": "tiny-int8", "messages": HELLO["messages"]}
# About three seconds of generation on two cores: time to break things in the middle.
LONG = {**ASK, "max_tokens": 2000, "ignore_eos": True}
_seeds = itertools.count(1)


def another(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as a request never sent before (another seed): a request in flight at two
    engine deaths is refused as one that crashes engines, so each death gets its own."""
    return {**body, "seed": next(_seeds)}


CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
SMOL_CAPITAL = "The capital of France is Paris."


def chat(server: LiveServer, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.v1}/chat/completions", json=body, timeout=timeout)


def health(server: LiveServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=10).json()
    return body


def engine_of(server: LiveServer) -> dict[str, Any]:
    (model,) = health(server)["loaded_models"]
    return dict(model)


def wait_for_state(
    server: LiveServer, state: str, restarts: int | None = None, timeout: float = 180
) -> dict[str, Any]:
    """The engine once it is in ``state`` (after ``restarts`` restarts, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = health(server)["loaded_models"]
        if models and models[0]["state"] == state:
            if restarts is None or models[0]["restarts"] == restarts:
                return dict(models[0])
        time.sleep(0.05)
    raise AssertionError(f"engine not {state} within {timeout}s: {health(server)}")


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def sse_data(lines: list[str]) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


@pytest.fixture(scope="module")
def gate(tmp_path_factory: Any) -> Iterator[Path]:
    """The engines' gate file (faults.py): while it names a stage, they wait there."""
    path = tmp_path_factory.mktemp("gate") / "gate"
    yield path
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def held(gate: Path, stage: str) -> Iterator[None]:
    gate.write_text(stage, encoding="utf-8")
    try:
        yield
    finally:
        gate.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def tiny(server_factory: Any, tiny_registry: dict[str, dict[str, Any]], gate: Path) -> LiveServer:
    live = server_factory({"tiny-int8": tiny_registry["tiny-int8"]}, OV_ENGINE_GATE_FILE=str(gate))
    assert answer(chat(live, ASK)) == HELLO["answer"]
    return live


def kill_mid_stream(live: LiveServer, sig: signal.Signals) -> tuple[list[str], float]:
    """Streams a long answer, sends ``sig`` to the engine after the first token."""
    pid = wait_for_state(live, "ready")["pid"]
    body = {**another(LONG), "stream": True}
    with httpx.stream("POST", f"{live.v1}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(line for line in lines if '"content"' in line)]
        os.kill(pid, sig)
        killed = time.monotonic()
        received += list(lines)
    return received, time.monotonic() - killed


def kill_mid_request(
    live: LiveServer, gate: Path, sig: signal.Signals
) -> tuple[httpx.Response, float]:
    """Sends a non-streaming request and ``sig`` to the engine while it holds the request
    (at its step, by the gate: however fast the machine, the request is not done)."""
    pid = wait_for_state(live, "ready")["pid"]
    with held(gate, "step"), concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(chat, live, another(ASK))
        deadline = time.monotonic() + 30
        while engine_of(live)["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, sig)
        killed = time.monotonic()
        response = future.result()
    return response, time.monotonic() - killed


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_engine_killed_mid_stream(tiny: LiveServer, sig: signal.Signals) -> None:
    restarts = wait_for_state(tiny, "ready")["restarts"]
    lines, seconds = kill_mid_stream(tiny, sig)
    data = sse_data(lines)
    assert data[-1] == "[DONE]"
    assert '"error"' in data[-2] and "engine_restarting" in data[-2], data[-3:]
    assert sig.name in data[-2]
    assert seconds < 10, seconds  # at once, not after a stall limit or a reload
    tiny.wait_for_log(f"was killed by {sig.name}")
    after = wait_for_state(tiny, "ready", restarts + 1)
    assert sig.name in after["last_error"]
    assert answer(chat(tiny, ASK)) == HELLO["answer"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_engine_killed_mid_request(tiny: LiveServer, gate: Path, sig: signal.Signals) -> None:
    restarts = wait_for_state(tiny, "ready")["restarts"]
    response, seconds = kill_mid_request(tiny, gate, sig)
    error = error_of(response, 503)
    assert error["code"] == "engine_restarting"
    assert sig.name in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert seconds < 10, seconds  # at once, not after a stall limit or a reload
    wait_for_state(tiny, "ready", restarts + 1)
    assert answer(chat(tiny, ASK)) == HELLO["answer"]


def test_requests_during_a_restart_get_503_with_retry_after(tiny: LiveServer, gate: Path) -> None:
    before = wait_for_state(tiny, "ready")
    with held(gate, "load"):  # the fresh engine waits before loading: restarting it stays
        os.kill(before["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while engine_of(tiny)["restarts"] == before["restarts"] and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = chat(tiny, ASK)
        error = error_of(refused, 503)
        assert error["code"] == "model_unavailable"
        assert "restarting" in error["message"] and "SIGKILL" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        status = health(tiny)
        assert status["status"] == "error"  # its only model cannot answer now
        assert any("restarting" in problem for problem in status["problems"])
    wait_for_state(tiny, "ready", before["restarts"] + 1)
    assert answer(chat(tiny, ASK)) == HELLO["answer"]


def test_a_stalled_engine_is_killed_and_replaced(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    registry = {"tiny-int8": tiny_registry["tiny-int8"]}
    live = server_factory(registry, OV_ENGINE_STALL_SECONDS="1.5")
    assert answer(chat(live, ASK)) == HELLO["answer"]
    pid = engine_of(live)["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, but never answers again
    started = time.monotonic()
    response = chat(live, ASK)
    error_of(response, 503)
    assert time.monotonic() - started < 1.5 + 8  # within the stall limit and a round
    live.wait_for_log("has not answered for")
    after = wait_for_state(live, "ready", 1)
    assert after["pid"] != pid
    assert "stopped answering" in after["last_error"]
    assert answer(chat(live, ASK)) == HELLO["answer"]


# ---------------------------------------------------------------- faults inside the loop


@pytest.fixture(scope="module")
def faulty(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tmp_path_factory: Any
) -> tuple[LiveServer, Path]:
    faults = tmp_path_factory.mktemp("faults") / "fault"
    registry = {"tiny-int8": tiny_registry["tiny-int8"]}
    live = server_factory(registry, OV_ENGINE_FAULTS_FILE=str(faults))
    assert (
        answer(chat(live, {"model": "tiny-int8", "messages": HELLO["messages"]})) == HELLO["answer"]
    )
    return live, faults


@pytest.mark.parametrize("stage", STAGES)
def test_a_fault_in_each_stage_ends_the_request_and_replaces_the_engine(
    faulty: tuple[LiveServer, Path], stage: str
) -> None:
    live, faults = faulty
    before = wait_for_state(live, "ready")
    faults.write_text(stage, encoding="utf-8")
    started = time.monotonic()
    response = chat(live, another(ASK))
    assert time.monotonic() - started < 10  # at once, not after the 30 s stall limit
    error = error_of(response, response.status_code)
    assert response.status_code in (500, 503), response.text
    assert stage in error["message"] or "restarting" in error["message"], error
    assert not faults.exists()
    after = wait_for_state(live, "ready", before["restarts"] + 1)
    assert after["pid"] != before["pid"]
    body = {"model": "tiny-int8", "messages": HELLO["messages"]}
    assert answer(chat(live, body)) == HELLO["answer"]


def test_a_fault_mid_stream_is_an_error_event_then_done(faulty: tuple[LiveServer, Path]) -> None:
    live, faults = faulty
    wait_for_state(live, "ready")
    body = {
        "model": "tiny-int8",
        "messages": HELLO["messages"],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"{live.v1}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        received = [next(line for line in lines if '"content"' in line)]
        faults.write_text("step", encoding="utf-8")
        received += list(lines)
    data = sse_data(received)
    assert data[-1] == "[DONE]"
    assert "engine_error" in data[-2] and "step" in data[-2], data[-2]
    live.wait_for_log("completion request_id=")


# ---------------------------------------------------------------- admission and leases


def test_a_burst_never_overruns_the_queue(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory({"tiny-int8": tiny_registry["tiny-int8"]}, OV_MAX_QUEUE="2")
    # The model is not loaded yet: requests waiting for the load hold their slots too.
    barrier = threading.Barrier(24)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return chat(live, LONG)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(send, range(24)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) <= 2, statuses
    assert set(statuses) <= {200, 429}, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert error_of(refused, 429)["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1


def test_two_models_under_a_limit_of_one(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_MAX_LOADED_MODELS="1")
    names = ["tiny-int8", "tiny-fp16"] * 8

    def send(name: str) -> tuple[str, httpx.Response]:
        return name, chat(live, {"model": name, "messages": HELLO["messages"]})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, names))
    for name, response in results:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            continue
        assert answer(response) == HELLO["answer"], (name, response.text)
    assert sum(r.status_code == 200 for _, r in results) >= len(names) // 2
    assert len(health(live)["loaded_models"]) == 1


def test_unloading_ends_the_engine_process_and_its_series(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_IDLE_UNLOAD_SECONDS="1")
    assert answer(chat(live, {"model": "tiny-int8", "messages": HELLO["messages"]}))
    pid = engine_of(live)["pid"]
    metrics = httpx.get(f"{live.base_url}/metrics").text
    assert 'ov_queue_depth{model="tiny-int8"}' in metrics
    live.wait_for_log("model unloaded name=tiny-int8", timeout=15)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert 'ov_queue_depth{model="tiny-int8"}' not in httpx.get(f"{live.base_url}/metrics").text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- deadlines


def test_the_deadline_ends_a_request_and_a_stream(server_factory: Any, smollm2_gguf: Path) -> None:
    live = server_factory(
        {},
        OV_MODEL_PATH=str(smollm2_gguf),
        OV_PRELOAD_MODELS="smol",  # loading is not part of what the deadline is tested on
        OV_REQUEST_TIMEOUT_SECONDS="3",
    )
    body = {"model": "smol", "messages": CAPITAL, "max_tokens": 2000, "ignore_eos": True}
    started = time.monotonic()
    error = error_of(chat(live, body), 504)
    assert error["code"] == "request_timeout"
    assert time.monotonic() - started < 3 + 8  # the deadline, not the 2000 tokens
    with httpx.stream(
        "POST", f"{live.v1}/chat/completions", json={**body, "stream": True}, timeout=30
    ) as response:
        data = sse_data(list(response.iter_lines()))
    assert data[-1] == "[DONE]" and "request_timeout" in data[-2]
    assert engine_of(live)["in_flight"] == 0
    assert answer(chat(live, {"model": "smol", "messages": CAPITAL})) == SMOL_CAPITAL


# ---------------------------------------------------------------- engines that cannot start


def test_a_start_failure_ends_failed_with_the_reason_and_recovers(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    run = tmp_path / "run"  # systemd's RuntimeDirectory= for the server
    live = server_factory({"tiny-int8": tiny_registry["tiny-int8"]}, RUNTIME_DIRECTORY=str(run))
    assert answer(chat(live, ASK)) == HELLO["answer"]
    (sockets,) = run.iterdir()
    assert sockets.stat().st_mode & 0o077 == 0
    # The folder aged away (systemd-tmpfiles under /tmp): the next start makes it again.
    shutil.rmtree(run)
    before = engine_of(live)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for_state(live, "ready", before["restarts"] + 1)
    assert answer(chat(live, ASK)) == HELLO["answer"]
    # A file in its way: no socket, no engine. The model ends failed, and says why.
    shutil.rmtree(run)
    run.write_text("in the way", encoding="utf-8")
    os.kill(engine_of(live)["pid"], signal.SIGKILL)
    failed = wait_for_state(live, "failed", timeout=30)
    assert "could not be started" in failed["last_error"] and str(run) in failed["last_error"]
    status = health(live)
    assert status["status"] == "error"
    assert any("could not be started" in problem for problem in status["problems"])
    refused = chat(live, ASK)
    assert error_of(refused, 503)["code"] == "model_unavailable"
    assert "could not be started" in refused.json()["error"]["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 5
    run.unlink()
    time.sleep(retry_after)
    assert answer(chat(live, ASK)) == HELLO["answer"]
    assert wait_for_state(live, "ready")["last_error"] is None


# ---------------------------------------------------------------- requests that break a model

POISON = "<<poison>>"


@pytest.fixture(scope="module")
def poisoned(
    server_factory: Any,
    tiny_registry: dict[str, dict[str, Any]],
    encoder_registry: dict[str, dict[str, Any]],
    gate: Path,
) -> LiveServer:
    registry = {"tiny-int8": tiny_registry["tiny-int8"], **encoder_registry}
    return server_factory(
        registry,
        OV_ENGINE_POISON=POISON,
        OV_ENGINE_GATE_FILE=str(gate),
        OV_MAX_LOADED_MODELS="4",
    )


def poison_chat(words: str) -> dict[str, Any]:
    return {"model": "tiny-int8", "messages": [{"role": "user", "content": f"{words} {POISON}"}]}


def model_status(server: LiveServer, name: str) -> dict[str, Any]:
    (model,) = [m for m in health(server)["loaded_models"] if m["name"] == name]
    return dict(model)


def test_a_poison_request_kills_its_engine_once(poisoned: LiveServer) -> None:
    assert answer(chat(poisoned, ASK)) == HELLO["answer"]
    before = model_status(poisoned, "tiny-int8")
    body = poison_chat("alone")
    error = error_of(chat(poisoned, body), 500)  # its pipeline step failed
    assert "poison request" in error["message"]
    restarts = before["restarts"] + 1
    wait_for_restarts(poisoned, restarts)
    # The only request of the step that failed: refused at once, the engine untouched.
    for _ in range(3):
        error = error_of(chat(poisoned, body), 400)
        assert error["code"] == "poison_request" and error["param"] == "messages"
        assert "crashed" in error["message"]
    assert answer(chat(poisoned, ASK)) == HELLO["answer"]
    assert model_status(poisoned, "tiny-int8")["restarts"] == restarts


def test_a_request_in_flight_at_two_engine_deaths_is_refused(poisoned: LiveServer) -> None:
    assert answer(chat(poisoned, ASK)) == HELLO["answer"]
    wait = wait_for_restarts(poisoned)
    body = poison_chat("shared")
    bystander = another({**ASK, "max_tokens": 200, "ignore_eos": True})
    # The poison and a bystander in one step: both suspect, neither refused yet.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with held(gate_of(poisoned), "step"):
            future = pool.submit(chat, poisoned, bystander)
            deadline = time.monotonic() + 30
            while model_status(poisoned, "tiny-int8")["in_flight"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            poisoned_answer = pool.submit(chat, poisoned, body)
            while model_status(poisoned, "tiny-int8")["in_flight"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.5)  # its message on its way to the engine, which holds the bystander
        assert future.result().status_code in (500, 503)
        assert poisoned_answer.result().status_code in (500, 503)
    wait_for_restarts(poisoned, wait["restarts"] + 1)
    # The bystander alone is served; the poison alone kills the engine a second time...
    assert chat(poisoned, bystander).status_code == 200
    assert chat(poisoned, body).status_code == 500
    wait_for_restarts(poisoned, wait["restarts"] + 2)
    # ... and no third.
    assert error_of(chat(poisoned, body), 400)["code"] == "poison_request"
    assert chat(poisoned, bystander).status_code == 200
    assert model_status(poisoned, "tiny-int8")["restarts"] == wait["restarts"] + 2


def gate_of(server: LiveServer) -> Path:
    return Path(server.env["OV_ENGINE_GATE_FILE"])


def wait_for_restarts(
    server: LiveServer, restarts: int | None = None, name: str = "tiny-int8"
) -> dict[str, Any]:
    """The model once it is ready (after ``restarts`` restarts, if given)."""
    deadline = time.monotonic() + 120
    while True:
        model = model_status(server, name)
        if model["state"] == "ready" and restarts in (None, model["restarts"]):
            return model
        assert time.monotonic() < deadline, model
        time.sleep(0.05)


def test_a_poison_input_fails_alone_in_its_encoder_batch(poisoned: LiveServer) -> None:
    url = f"{poisoned.v1}/embeddings"
    assert httpx.post(url, json={"model": "emb", "input": ["warm"]}, timeout=60).status_code == 200
    before = model_status(poisoned, "emb")
    inputs = [["a cat"], ["a dog", f"a {POISON}"], ["a bird", "a fish"]]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        # The engine waits at its first request while the others queue: one batch for all.
        with held(gate_of(poisoned), "receive"):
            futures = [
                pool.submit(httpx.post, url, json={"model": "emb", "input": texts}, timeout=60)
                for texts in inputs
            ]
            deadline = time.monotonic() + 30
            while model_status(poisoned, "emb")["in_flight"] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.5)  # the last one's message on its way to the engine
        responses = [future.result() for future in futures]
    poisoned.wait_for_log("a model call for 3 requests failed")
    assert [len(r.json()["data"]) for r in (responses[0], responses[2])] == [1, 2]
    error = error_of(responses[1], 400)
    assert error["code"] == "poison_request" and error["param"] == "input"
    after = model_status(poisoned, "emb")
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    # Reranking: each request has its own call; a bad one fails alone too.
    rerank = f"{poisoned.v1}/rerank"
    bad = {"model": "rr", "query": "q", "documents": ["a", POISON]}
    error = error_of(httpx.post(rerank, json=bad, timeout=60), 400)
    assert error["code"] == "poison_request" and error["param"] == "documents"
    good = {"model": "rr", "query": "q", "documents": ["a", "b"]}
    assert httpx.post(rerank, json=good, timeout=60).status_code == 200
    assert model_status(poisoned, "rr")["restarts"] == 0


# ---------------------------------------------------------------- a device that crashes


def test_an_engine_that_keeps_crashing_moves_to_the_fallback_device(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    # "HETERO:CPU" is the CPU by another name: the engine crashes only on "CPU" (faults.py).
    live = server_factory(
        {"tiny-int8": tiny_registry["tiny-int8"]},
        OV_DEVICE="CPU",
        OV_FALLBACK_DEVICE="HETERO:CPU",
        OV_ENGINE_CRASH_DEVICE="CPU",
    )
    for crash in range(1, 4):
        error = error_of(chat(live, another(ASK)), 503)
        assert error["code"] == "engine_restarting" and "SIGSEGV" in error["message"]
        after = wait_for_state(live, "ready", crash)
    assert after["device"] == "HETERO:CPU"
    assert answer(chat(live, ASK)) == HELLO["answer"]
    (note,) = after["warnings"]
    assert note.startswith("moved from CPU to HETERO:CPU: its engine crashed 3 times")
    status = health(live)
    assert status["status"] == "degraded" and status["fallback_device_in_use"] is True
    assert f"model tiny-int8: {note}" in status["problems"]
    live.wait_for_log("model tiny-int8 moved from CPU to HETERO:CPU")
    (card,) = httpx.get(f"{live.v1}/models").json()["data"]
    assert card["device"] == "HETERO:CPU"
    assert card["device_reason"] == (
        "OV_FALLBACK_DEVICE: its engine crashed 3 times within "
        f"{CRASH_WINDOW_SECONDS:.0f}s on CPU (OV_DEVICE)"
    )


# ---------------------------------------------------------------- the watchdog and the reader


def test_a_stalled_event_loop_does_not_kill_a_healthy_engine(
    tiny_ir_int8: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        exits: list[EngineProcess] = []
        engine = EngineProcess(
            "tiny",
            tiny_ir_int8,
            EngineConfig("CPU"),
            tmp_path,
            on_exit=exits.append,
            stall_seconds=1.0,
        )
        await engine.start(120)
        try:
            time.sleep(3)  # this loop stalls; the engine meanwhile sends its heartbeats
            await asyncio.sleep(2.5)  # the watchdog's rounds after the stall
            assert engine.alive and not exits
            # Whether the watchdog or the reader runs first after a stall is the loop's
            # choice; a reader that never catches up decides it: the engine still spoke.
            engine._tasks[0].cancel()
            await asyncio.sleep(3)
            assert engine.alive and not exits
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_an_unreadable_message_fails_the_engine_at_once(faulty: tuple[LiveServer, Path]) -> None:
    live, faults = faulty
    before = wait_for_state(live, "ready")
    faults.write_text(GARBLE, encoding="utf-8")  # its next message (a heartbeat) is garbage
    after = wait_for_state(live, "ready", before["restarts"] + 1)
    assert "could not read" in after["last_error"]
    live.wait_for_log("unreadable message; killing it")
    assert answer(chat(live, ASK)) == HELLO["answer"]


def test_the_quarantine_convicts_on_two_strikes_and_stays_bounded() -> None:
    quarantine = Quarantine("m", remembered=3)
    a, b, c, d = (fingerprint(Embed(rid, texts=[text])) for rid, text in enumerate("abcd"))
    assert fingerprint(Embed(7, texts=["a"])) == a  # the request id is no part of it
    quarantine.strike([a, a, b], named=True)  # two requests of the failed call: suspects
    assert quarantine.refusal(a) is None and quarantine.refusal(b) is None
    quarantine.strike([a], named=False)  # in flight at a second death
    assert quarantine.refusal(a) is not None and quarantine.refusal(b) is None
    quarantine.strike([c, c], named=True)  # the failed call's only request
    assert quarantine.refusal(c) is not None
    quarantine.strike([d], named=False)  # a fourth fingerprint: the oldest (b) goes
    quarantine.strike([b], named=False)
    assert quarantine.refusal(b) is None
    quarantine.clear()
    assert quarantine.refusal(a) is None and quarantine.refusal(c) is None

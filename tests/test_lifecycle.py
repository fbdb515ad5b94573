"""Model lifecycle: preload, LRU and idle unloading, compile cache, metrics, cancellation."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from live_server import LiveServer
from tiny_model import DIALOGUES

HELLO = DIALOGUES["D_HELLO"]["messages"]


def chat(server: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": HELLO}
    return httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)


def loaded(server: LiveServer) -> list[str]:
    health = httpx.get(f"{server.base_url}/health").json()
    return [m["name"] for m in health["loaded_models"]]


def test_preloaded_model_is_loaded_before_the_first_request(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_PRELOAD_MODELS="tiny-fp16")
    assert loaded(live) == ["tiny-fp16"]


def test_least_recently_used_model_unloads_over_the_limit(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_MAX_LOADED_MODELS="1")
    assert chat(live, "tiny-int8").status_code == 200
    assert loaded(live) == ["tiny-int8"]
    assert chat(live, "tiny-fp16").status_code == 200
    assert loaded(live) == ["tiny-fp16"]
    live.wait_for_log("model unloaded name=tiny-int8 reason=least recently used")
    assert (
        chat(live, "tiny-int8").json()["choices"][0]["message"]["content"]
        == (DIALOGUES["D_HELLO"]["answer"])
    )


def test_idle_model_unloads(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> None:
    live = server_factory(tiny_registry, OV_IDLE_UNLOAD_SECONDS="1")
    assert chat(live, "tiny-int8").status_code == 200
    assert loaded(live) == ["tiny-int8"]
    line = live.wait_for_log("model unloaded name=tiny-int8", timeout=15)
    assert "idle" in line
    assert loaded(live) == []


def test_compiled_model_cache_is_written(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    cache = tmp_path / "ov-cache"
    live = server_factory(tiny_registry, OV_CACHE_DIR=str(cache))
    assert chat(live, "tiny-int8").status_code == 200
    assert any(p.suffix == ".blob" for p in cache.rglob("*")), list(cache.rglob("*"))


def test_metrics_count_requests_tokens_and_latency(server: LiveServer) -> None:
    assert chat(server, "tiny-int8").status_code == 200
    text = httpx.get(f"{server.base_url}/metrics").text
    for name in (
        'ov_requests_total{model="tiny-int8",status="200"}',
        'ov_completion_tokens_total{model="tiny-int8"}',
        'ov_prompt_tokens_total{model="tiny-int8"}',
        'ov_time_to_first_token_seconds_count{model="tiny-int8"}',
        'ov_time_per_output_token_seconds_count{model="tiny-int8"}',
        'ov_request_latency_seconds_count{model="tiny-int8"}',
        'ov_model_load_seconds_count{model="tiny-int8"}',
        'ov_queue_depth{model="tiny-int8"}',
    ):
        assert name in text, name
    unknown = 'ov_requests_total{model="unknown",status="404"}'

    def count_unknown() -> float:
        for line in httpx.get(f"{server.base_url}/metrics").text.splitlines():
            if line.startswith(unknown):
                return float(line.split()[-1])
        return 0.0

    before = count_unknown()
    for _ in range(3):  # names are the clients' to choose: they share one bounded label
        name = f"missing-{uuid.uuid4().hex[:8]}"
        httpx.post(f"{server.v1}/chat/completions", json={"model": name, "messages": HELLO})
    assert count_unknown() == before + 3
    assert "missing-" not in httpx.get(f"{server.base_url}/metrics").text


def test_non_streaming_request_is_cancelled_when_the_client_leaves(
    smol_server: LiveServer,
) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Write a very long essay about forests."}],
        "max_tokens": 2000,
        "ignore_eos": True,
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{smol_server.v1}/chat/completions",
            json=body,
            timeout=httpx.Timeout(60, read=1.5),
            headers={"X-Request-Id": "impatient"},
        )
    left_at = time.monotonic()
    line = smol_server.wait_for_log("request_id=impatient", timeout=60)
    assert "status=499" in line
    assert time.monotonic() - left_at < 10
    tokens = int(line.split("completion_tokens=")[1].split()[0])
    assert tokens < 1000, line


def service_rss(pid: int) -> int:
    """Resident memory of the server and its engine processes."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_unloading_gives_memory_back(server_factory: Any, smollm2_gguf: Path) -> None:
    live = server_factory({}, OV_MODEL_PATH=str(smollm2_gguf), OV_IDLE_UNLOAD_SECONDS="2")
    assert live.process is not None
    before = service_rss(live.process.pid)
    body = {"model": "smol", "messages": HELLO, "max_tokens": 4}
    assert httpx.post(f"{live.v1}/chat/completions", json=body, timeout=300).status_code == 200
    loaded_rss = service_rss(live.process.pid)
    assert loaded_rss - before > 50 * 2**20  # the model really took memory
    live.wait_for_log("model unloaded name=SmolLM2", timeout=30)
    after = service_rss(live.process.pid)
    # The engine process exits with its model: the service is back where it was.
    assert after <= before * 1.10, (before, loaded_rss, after)


def test_f32_kv_cache_precision_loads_and_answers(
    server_factory: Any, tiny_registry: dict[str, dict[str, Any]]
) -> None:
    live = server_factory(tiny_registry, OV_KV_CACHE_PRECISION="f32")
    response = chat(live, "tiny-int8")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]

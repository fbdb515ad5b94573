"""Several nodes behind a real LiteLLM router, configured by ``ov-llm-server litellm-config``.

Real servers on loopback ports serve the tiny model; one LiteLLM proxy is started from the
configuration the CLI generates out of the nodes' own ``GET /v1/models`` (``--fleet``, as
``playbooks/litellm.yml`` does), with the CLI's default router settings. Each scenario
has a model group of two deployments: node A, which stays up, and a node that dies, is
saturated, or cannot load the model. What a client of the proxy sees then is what the
README's "Several nodes" section promises.

LiteLLM's proxy takes most of a minute to start on two cores, so one proxy serves all.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from litellm_proxy import Proxy, litellm_config, requires_litellm, running_proxy
from live_server import LiveServer, write_registry
from tiny_model import DIALOGUES

pytestmark = [requires_litellm, pytest.mark.slow]

ServerFactory = Callable[..., LiveServer]

FAILOVER, SATURATION, UNAVAILABLE = "tiny-failover", "tiny-saturation", "tiny-unavailable"
RESTARTING = "tiny-restarting"
ASKED = ["D_HELLO", "D_CAPITAL", "D_COUNT", "D_PIRATE", "D_STORY"]


@dataclass
class Fleet:
    a: LiveServer  # serves every group and stays up
    doomed: LiveServer  # FAILOVER's other node: killed by a test
    small: LiveServer  # SATURATION's other node: OV_MAX_QUEUE=1
    broken: LiveServer  # UNAVAILABLE's other node: its copy of the model cannot load;
    # and RESTARTING's: its engine for that model is killed by a test
    config: dict[str, Any]
    proxy: Proxy

    def client(self) -> openai.OpenAI:
        # No retries in the client: whatever the router does not absorb, the test sees.
        return openai.OpenAI(
            base_url=f"{self.proxy.base_url}/v1", api_key=self.proxy.key, max_retries=0
        )


def tiny_entry(path: Path) -> dict[str, str]:
    return {"path": str(path), "task": "text-generation-with-past", "weight_format": "int8"}


@pytest.fixture(scope="module")
def fleet(
    server_factory: ServerFactory, tiny_ir_int8: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    # A copy of the model whose weights are gone: the node lists it and answers 503.
    broken_model = workdir / "broken-model"
    shutil.copytree(tiny_ir_int8, broken_model)
    (broken_model / "openvino_model.bin").write_bytes(b"")
    tiny = tiny_entry(tiny_ir_int8)
    a = server_factory(
        {FAILOVER: tiny, SATURATION: tiny, UNAVAILABLE: tiny, RESTARTING: tiny},
        OV_PRELOAD_MODELS=f"{FAILOVER},{RESTARTING}",
    )
    doomed = server_factory({FAILOVER: tiny}, OV_PRELOAD_MODELS=FAILOVER)
    small = server_factory({SATURATION: tiny}, OV_PRELOAD_MODELS=SATURATION, OV_MAX_QUEUE="1")
    broken = server_factory(
        {UNAVAILABLE: tiny_entry(broken_model), RESTARTING: tiny}, OV_PRELOAD_MODELS=RESTARTING
    )
    nodes = [
        {"api_base": node.v1, "models": httpx.get(f"{node.v1}/models", timeout=30).json()}
        for node in (a, doomed, small, broken)
    ]
    fleet_file = workdir / "fleet.json"
    fleet_file.write_text(json.dumps(nodes), encoding="utf-8")
    text = litellm_config(a, "--fleet", str(fleet_file))
    with running_proxy(text, workdir / "litellm") as proxy:
        yield Fleet(a, doomed, small, broken, yaml.safe_load(text), proxy)


def answered(server: LiveServer, model: str, status: str = "200") -> int:
    """Chat completions the server answered for ``model`` with ``status`` (its /metrics)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    labels = (f'model="{model}"', f'status="{status}"')
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("ov_requests_total{") and all(label in line for label in labels)
    )


def answered_in_log(server: LiveServer, model: str) -> int:
    """Chat completions ``server`` logged as answered for ``model``; readable once it is dead.

    A request's log line is written before its response is sent, so a killed node's log
    holds at least every answer it gave."""
    logged = rf" completion request_id=\S+ model={re.escape(model)} .* status=200 "
    return len(re.findall(logged, server.log()))


def ask(client: openai.OpenAI, model: str, name: str) -> str | None:
    messages = copy.deepcopy(DIALOGUES[name]["messages"])
    response = client.chat.completions.create(model=model, messages=messages, max_tokens=200)
    return response.choices[0].message.content


# ---------------------------------------------------------------- the configuration


def test_config_has_one_deployment_per_node_and_honest_flags(
    server: LiveServer, tiny_ir_int8: Path, smollm2_gguf: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.json"
    write_registry(
        registry,
        {
            "tiny-int8": tiny_entry(tiny_ir_int8),
            "smollm2": {"path": str(smollm2_gguf), "task": "text-generation"},
        },
    )
    second = "http://node-b.invalid:8000/v1"
    bases = ["--api-base", server.v1, "--api-base", second]
    text = litellm_config(server, *bases, OV_REGISTRY_PATH=str(registry))
    config = yaml.safe_load(text)

    deployments = config["model_list"]
    assert [(d["model_name"], d["litellm_params"]["api_base"]) for d in deployments] == [
        ("smollm2", server.v1),
        ("smollm2", second),
        ("tiny-int8", server.v1),
        ("tiny-int8", second),
    ]
    for deployment in deployments:
        params = deployment["litellm_params"]
        assert params["model"] == f"openai/{deployment['model_name']}"
        assert params["api_key"] == "none"  # the nodes have no key here
    info = {d["model_name"]: d["model_info"] for d in deployments}
    # LiteLLM forwards these doors to a chat model as they are (README: which door goes where).
    chat_doors = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"]
    # The tiny model's template renders tools, SmolLM2's does not; neither thinks.
    assert info["tiny-int8"] == {
        "mode": "chat",
        "max_input_tokens": 2048,
        "max_output_tokens": 2048,
        "supports_function_calling": True,
        "supports_parallel_function_calling": True,
        "supports_tool_choice": True,
        "supports_response_schema": True,
        "supports_reasoning": False,
        "supports_vision": False,
        "supported_endpoints": chat_doors,
    }
    assert info["smollm2"] == {
        "mode": "chat",
        "max_input_tokens": 8192,
        "max_output_tokens": 4096,  # OV_MAX_TOKENS_LIMIT's default
        "supports_function_calling": False,
        "supports_parallel_function_calling": False,
        "supports_tool_choice": False,
        "supports_response_schema": True,
        "supports_reasoning": False,
        "supports_vision": False,
        "supported_endpoints": chat_doors,
    }
    assert config["router_settings"]["num_retries"] == 3


def test_litellm_takes_the_fleet_configuration(fleet: Fleet) -> None:
    groups = [d["model_name"] for d in fleet.config["model_list"]]
    assert sorted(groups) == sorted([FAILOVER, SATURATION, UNAVAILABLE, RESTARTING] * 2)
    response = httpx.get(
        f"{fleet.proxy.base_url}/v1/model/info",
        headers={"Authorization": f"Bearer {fleet.proxy.key}"},
        timeout=30,
    )
    response.raise_for_status()
    seen = [(m["model_name"], m["litellm_params"]["api_base"]) for m in response.json()["data"]]
    assert sorted(seen) == sorted(
        (d["model_name"], d["litellm_params"]["api_base"]) for d in fleet.config["model_list"]
    )
    for model in response.json()["data"]:
        assert model["model_info"]["supports_function_calling"] is True
        assert model["model_info"]["max_input_tokens"] == 2048


# ---------------------------------------------------------------- a node dies


def test_a_node_killed_mid_traffic_loses_no_request(fleet: Fleet) -> None:
    before = answered(fleet.a, FAILOVER)
    doomed_before = answered_in_log(fleet.doomed, FAILOVER)
    client = fleet.client()
    names = [ASKED[i % len(ASKED)] for i in range(40)]
    finished = threading.Semaphore(0)

    def one(name: str) -> tuple[str, str | None]:
        try:
            return name, ask(client, FAILOVER, name)
        finally:
            finished.release()

    def kill_after(count: int) -> int:
        for _ in range(count):
            finished.acquire()
        assert fleet.doomed.process is not None
        fleet.doomed.process.send_signal(signal.SIGKILL)
        fleet.doomed.process.wait()
        # Counted after the kill: /metrics read before it misses an answer given in between.
        return answered_in_log(fleet.doomed, FAILOVER) - doomed_before

    with ThreadPoolExecutor(max_workers=5) as pool:
        killer = pool.submit(kill_after, 10)
        results = list(pool.map(one, names))
        served_by_doomed = killer.result()

    assert served_by_doomed > 0, "the doomed node never served: nothing to fail over from"
    assert [text for _, text in results] == [DIALOGUES[name]["answer"] for name in names]
    assert answered(fleet.a, FAILOVER) - before + served_by_doomed >= len(names)


# ---------------------------------------------------------------- a node is saturated


def test_a_saturated_node_hands_its_overflow_to_the_other(fleet: Fleet) -> None:
    refused_before = answered(fleet.small, SATURATION, "429")
    client = fleet.client()

    def long_request(_: int) -> tuple[int, str | None]:
        response = client.chat.completions.create(
            model=SATURATION,
            messages=[{"role": "user", "content": "Tell me a story"}],
            max_tokens=300,
            extra_body={"ignore_eos": True},
        )
        usage = response.usage
        return (usage.completion_tokens if usage else 0), response.choices[0].finish_reason

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(long_request, range(18)))

    # Every client got its whole answer; none saw a 429 of the small node.
    assert results == [(300, "length")] * 18
    assert answered(fleet.small, SATURATION, "429") > refused_before, "never saturated"
    assert answered(fleet.small, SATURATION) > 0 and answered(fleet.a, SATURATION) > 0


# ---------------------------------------------------------------- a node cannot serve


def test_a_node_answering_503_is_passed_over(fleet: Fleet) -> None:
    client = fleet.client()
    names = ASKED * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda name: ask(client, UNAVAILABLE, name), names))
    assert texts == [DIALOGUES[name]["answer"] for name in names]
    assert answered(fleet.broken, UNAVAILABLE, "503") > 0, "the broken node was never asked"


def test_a_node_whose_engine_restarts_is_passed_over(fleet: Fleet) -> None:
    # The node lives; its engine process for the model dies under load. The requests it was
    # serving and the ones that reach it while it restarts are 503s, which the router retries
    # on the other node.
    client = fleet.client()
    names = [ASKED[i % len(ASKED)] for i in range(30)]
    finished = threading.Semaphore(0)

    def one(name: str) -> str | None:
        try:
            return ask(client, RESTARTING, name)
        finally:
            finished.release()

    def kill_engine_after(count: int) -> None:
        for _ in range(count):
            finished.acquire()
        health = httpx.get(f"{fleet.broken.base_url}/health", timeout=10).json()
        (engine,) = [m for m in health["loaded_models"] if m["name"] == RESTARTING]
        os.kill(engine["pid"], signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=5) as pool:
        killer = pool.submit(kill_engine_after, 8)
        texts = list(pool.map(one, names))
        killer.result()

    assert texts == [DIALOGUES[name]["answer"] for name in names]
    health = httpx.get(f"{fleet.broken.base_url}/health", timeout=10).json()
    (engine,) = [m for m in health["loaded_models"] if m["name"] == RESTARTING]
    assert engine["restarts"] == 1

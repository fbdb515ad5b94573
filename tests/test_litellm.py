"""A real LiteLLM proxy in front of the server, configured by ``ov-llm-server litellm-config``:
chat (the openai SDK), completions, and embeddings and rerank (LiteLLM's own SDK calls)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import yaml

from litellm_proxy import Proxy, litellm_config, requires_litellm, running_proxy
from live_server import LiveServer
from tiny_encoders import DOCUMENTS, QUERIES, reference_embeddings, reference_scores
from tiny_model import DIALOGUES, TOOLS
from tolerances import score_tolerance

MODEL = "tiny-int8"

pytestmark = requires_litellm


@pytest.fixture(scope="module")
def server(
    server_factory: Any, tiny_registry: dict[str, Any], encoder_registry: dict[str, Any]
) -> LiveServer:
    """The tiny chat model in two formats, an embedder and a reranker: every kind."""
    registry = {**tiny_registry, "emb": encoder_registry["emb"], "rr": encoder_registry["rr"]}
    return server_factory(registry, OV_MAX_LOADED_MODELS="4")


@pytest.fixture(scope="module")
def proxy(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    config = litellm_config(server, "--api-base", server.v1)
    with running_proxy(config, tmp_path_factory.mktemp("litellm")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)


def messages(name: str) -> Any:
    return copy.deepcopy(DIALOGUES[name]["messages"])


def test_config_routes_every_registry_model_here(server: LiveServer) -> None:
    config = yaml.safe_load(litellm_config(server, "--api-base", server.v1))
    entries = {m["model_name"]: m for m in config["model_list"]}
    assert {name: e["model_info"]["mode"] for name, e in entries.items()} == {
        "tiny-int8": "chat",
        "tiny-fp16": "chat",
        "emb": "embedding",
        "rr": "rerank",
    }
    for name, entry in entries.items():
        provider = "hosted_vllm" if name == "rr" else "openai"
        assert entry["litellm_params"]["model"] == f"{provider}/{name}"
        assert entry["litellm_params"]["api_base"] == server.v1
        assert entry["litellm_params"]["api_key"]
    assert entries[MODEL]["model_info"]["supports_function_calling"] is True


def test_chat(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=messages("D_HELLO"))
    assert response.choices[0].message.content == DIALOGUES["D_HELLO"]["answer"]
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=messages("D_CAPITAL"))
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_CAPITAL"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DIALOGUES["D_CAPITAL"]["answer"]
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and plain.usage is not None
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )


def test_tool_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]
    assert calls[0].id.startswith("call_")


def test_tool_calls_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_PARALLEL"),
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    for chunk in stream:
        if not chunk.choices:
            continue
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    assert finishes == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert calls[0]["id"] != calls[1]["id"]


def test_sdk_stream_helper_through_litellm(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_TOOL"),
        tools=TOOLS,  # type: ignore[arg-type]
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history = [
        *messages("D_TOOL"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content == DIALOGUES["D_TOOL_RESULT"]["answer"]
    assert second.choices[0].finish_reason == "stop"


def test_forced_call_through_litellm(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=messages("D_HELLO"),
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    calls = response.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert set(json.loads(calls[0].function.arguments)) == {"city"}


def test_reasoning_passes_through(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=messages("D_THINK"))
    message = response.choices[0].message
    assert message.content == "The answer is 4."
    assert getattr(message, "reasoning_content", None) == "2 plus 2 is 4."


# ---------------------------------------------------------------- the other endpoints


def test_completion_through_litellm(server: LiveServer, client: openai.OpenAI) -> None:
    """LiteLLM sends a text completion to this server's /v1/completions as it is."""
    import httpx

    tokenize = {"model": MODEL, "messages": messages("D_HELLO")}
    ids = httpx.post(f"{server.base_url}/tokenize", json=tokenize, timeout=60).json()["tokens"]
    completion = client.completions.create(model=MODEL, prompt=ids, max_tokens=64)
    assert completion.choices[0].text == DIALOGUES["D_HELLO"]["answer"]
    assert completion.usage is not None and completion.usage.prompt_tokens == len(ids)


@pytest.fixture(scope="module")
def litellm_sdk() -> Any:
    """LiteLLM's SDK, offline: its price list from the package, not fetched at import."""
    import os

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    return litellm


def test_embedding_and_aembedding_through_litellm(
    proxy: Proxy, litellm_sdk: Any, tiny_encoders: dict[str, Path]
) -> None:
    litellm = litellm_sdk
    texts = DOCUMENTS + QUERIES
    reference = reference_embeddings(tiny_encoders["embedder-mean/hf"], texts)
    route = {"model": "litellm_proxy/emb", "api_base": proxy.base_url, "api_key": proxy.key}
    response = litellm.embedding(input=texts, **route)
    vectors = np.array([item["embedding"] for item in response.data])
    cosines = (vectors * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert vectors.shape == reference.shape and cosines.min() >= 0.999
    assert response.usage.prompt_tokens > 0
    again = asyncio.run(litellm.aembedding(input=texts[:2], **route))
    assert np.allclose([item["embedding"] for item in again.data], vectors[:2], atol=1e-5)


def test_rerank_through_litellm(
    server: LiveServer, proxy: Proxy, litellm_sdk: Any, tiny_encoders: dict[str, Path]
) -> None:
    litellm = litellm_sdk
    route = {"model": "litellm_proxy/rr", "api_base": proxy.base_url, "api_key": proxy.key}
    for query in QUERIES:
        response = litellm.rerank(query=query, documents=DOCUMENTS, top_n=3, **route)
        expected = reference_scores(tiny_encoders["reranker/hf"], query, DOCUMENTS)
        assert [r["index"] for r in response.results] == list(np.argsort(expected)[::-1][:3])
        precision = httpx.get(f"{server.v1}/models/rr").json()["precision"]
        tolerance = score_tolerance(precision, base=0.005)
        for result in response.results:
            assert abs(result["relevance_score"] - expected[result["index"]]) < tolerance

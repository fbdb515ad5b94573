"""Schemathesis against our own OpenAPI schema, and a bounded load test."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from typing import Any

import httpx
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from live_server import LiveServer, error_of
from tiny_model import DIALOGUES, TOOLS


@pytest.fixture(scope="module")
def fuzz_server(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    # Small token limits keep each generated chat request cheap.
    return server_factory(tiny_registry, OV_MAX_TOKENS_LIMIT="32", OV_DEFAULT_MAX_TOKENS="16")


CASES_PER_OPERATION = 60
CASES_FOR_CHAT = 300  # the operation with the most surface


def test_generated_requests_never_get_a_server_error(fuzz_server: LiveServer) -> None:
    # The schemathesis pytest plugin does not support pytest 9 yet: drive its strategies here.
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    sent: list[int] = []

    def check(case: Any) -> None:
        body = case.body
        if (
            isinstance(body, dict)
            and case.operation.path.endswith("/chat/completions")
            and str(body.get("model", "")).startswith("t")
        ):
            # Steer part of the cases to a real model so that generation itself is fuzzed too.
            body["model"] = "tiny-int8"
        response = case.call(base_url=fuzz_server.base_url, timeout=60)
        sent.append(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if response.status_code >= 400 and case.operation.path.startswith("/v1/messages"):
            assert {"type", "message"} <= set(response.json()["error"])  # Anthropic's shape
        elif response.status_code >= 400:
            assert {"message", "type", "param", "code"} <= set(response.json()["error"])

    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    for operation in operations:
        # Valid requests and requests that break the schema on purpose.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = settings(
                max_examples=CASES_FOR_CHAT
                if operation.path.endswith("/chat/completions")
                else CASES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(case=operation.as_strategy(generation_mode=mode))(check))
            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to break in a bare GET
    assert len(sent) >= 500, len(sent)
    assert 200 in sent and 400 in sent


# Whole, valid requests of each endpoint that reaches an engine; the test below breaks one
# value (or key) in each so that it can no longer be sent to an engine.
VALID = [
    (
        "/v1/chat/completions",
        {
            "model": "tiny-int8",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
            ],
            "tools": TOOLS,
            "max_tokens": 8,
            "seed": 7,
            "top_k": 40,
            "min_tokens": 1,
            "stop": ["\n\n"],
            "logit_bias": {"42": 1},
            "user": "someone",
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "tiny-int8",
            "messages": [{"role": "user", "content": "Describe Paris"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 20}},
                        "required": ["name"],
                    },
                },
            },
            "max_tokens": 16,
        },
    ),
    ("/v1/completions", {"model": "tiny-int8", "prompt": "Say", "suffix": "!", "max_tokens": 4}),
    ("/v1/completions", {"model": "tiny-int8", "prompt": [[1, 2, 3]], "max_tokens": 4}),
    ("/v1/embeddings", {"model": "tiny-int8", "input": ["a", "b"], "dimensions": 8}),
    ("/v1/embeddings", {"model": "tiny-int8", "input": [[5, 6]]}),
    ("/v1/rerank", {"model": "tiny-int8", "query": "q", "documents": ["a", {"text": "b"}]}),
    ("/tokenize", {"model": "tiny-int8", "messages": [{"role": "user", "content": "hi"}]}),
    ("/tokenize", {"model": "tiny-int8", "prompt": "hi"}),
    ("/detokenize", {"model": "tiny-int8", "tokens": [1, 2, 3]}),
]


def _spots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every string, integer and key of a JSON value, by path (a key as ``(..., "key", k)``)."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            out.append((*path, "key", key))
            out += _spots(item, (*path, key))
        return out
    if isinstance(value, list):
        return [spot for i, item in enumerate(value) for spot in _spots(item, (*path, i))]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return [path]
    return []


SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
HUGE_INTS = st.integers(min_value=2**64) | st.integers(max_value=-(2**63) - 1)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_lone_surrogate_or_huge_integer_anywhere_is_a_400(
    fuzz_server: LiveServer, data: st.DataObject
) -> None:
    path, valid = data.draw(st.sampled_from(VALID))
    body = copy.deepcopy(valid)
    spot = data.draw(st.sampled_from(_spots(body)))
    if spot[-2:-1] == ("key",):
        *where, _, key = spot
        parent = body
        for part in where:
            parent = parent[part]
        at = data.draw(st.integers(0, len(key)))
        parent[key[:at] + data.draw(SURROGATES) + key[at:]] = parent.pop(key)
    else:
        *where, last = spot
        parent = body
        for part in where:
            parent = parent[part]
        value = parent[last]
        if isinstance(value, str):
            at = data.draw(st.integers(0, len(value)))
            parent[last] = value[:at] + data.draw(SURROGATES) + value[at:]
        else:
            parent[last] = data.draw(HUGE_INTS)
    response = httpx.post(
        f"{fuzz_server.base_url}{path}",
        content=json.dumps(body).encode(),  # ensure_ascii: the surrogate as its JSON escape
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert error_of(response, 400)["param"], (path, body)


def test_refused_requests_leave_no_engine_request_behind(fuzz_server: LiveServer) -> None:
    hello = {"model": "tiny-int8", "messages": DIALOGUES["D_HELLO"]["messages"]}
    answer = httpx.post(f"{fuzz_server.v1}/chat/completions", json=hello, timeout=60)
    assert answer.json()["choices"][0]["message"]["content"] == DIALOGUES["D_HELLO"]["answer"]
    text = httpx.get(f"{fuzz_server.base_url}/metrics").text
    tracked = re.findall(r"^ov_engine_requests\{[^}]*\} (\S+)$", text, re.M)
    assert tracked and all(float(count) == 0 for count in tracked), tracked


def test_server_survived_the_fuzzing(fuzz_server: LiveServer) -> None:
    assert fuzz_server.process is not None and fuzz_server.process.poll() is None
    assert httpx.get(f"{fuzz_server.base_url}/health").json()["status"] == "ok"


async def _load(server: LiveServer, total: int, concurrency: int) -> list[int]:
    names = ["D_HELLO", "D_CAPITAL", "D_COUNT", "D_STORY"]
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> int:
            dialogue = DIALOGUES[names[i % len(names)]]
            body = {"model": "tiny-int8", "messages": dialogue["messages"], "stream": i % 2 == 0}
            async with limit:
                response = await client.post(f"{server.v1}/chat/completions", json=body)
                if response.status_code == 200 and not body["stream"]:
                    content = response.json()["choices"][0]["message"]["content"]
                    assert content == dialogue["answer"]
                return response.status_code

        return await asyncio.gather(*(one(i) for i in range(total)))


def test_bounded_load_200_requests_at_32_concurrent(load_server: LiveServer) -> None:
    assert load_server.process is not None
    process = psutil.Process(load_server.process.pid)
    asyncio.run(_load(load_server, 16, 4))  # warm up: model loaded, caches sized
    baseline = process.memory_info().rss
    started = time.monotonic()
    statuses = asyncio.run(_load(load_server, 200, 32))
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(200) >= 100
    time.sleep(1.0)
    after = process.memory_info().rss
    # Back near the baseline: no per-request leak (a leak of 200 requests would show here).
    assert after < baseline * 1.25 + 64 * 2**20, (baseline, after, elapsed)
    assert httpx.get(f"{load_server.base_url}/health").json()["status"] == "ok"


@pytest.fixture(scope="module")
def load_server(server_factory: Any, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    return server_factory(tiny_registry)

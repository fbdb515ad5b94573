"""Each new tool-call format end to end: a tiny model whose chat template speaks it, served
for real, the format detected from the template, calls streamed and not (issue 21, item 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_tools import argument_pieces, finish_reason, joined, sse, streamed_calls
from tiny_formats import ANSWERS, TOOLS, ensure_format_models

from live_server import LiveServer


@pytest.fixture(scope="module")
def format_models() -> dict[str, Path]:
    from tiny_model import default_cache_root

    return ensure_format_models(default_cache_root())


@pytest.fixture(scope="module")
def formats_server(server_factory: Any, format_models: dict[str, Path]) -> LiveServer:
    """One model per format, none naming its parser: each is detected from its template."""
    # f32 whatever the CPU: these tiny models' memorised answers are exact tokens, and a bf16
    # CPU (the device default for generation) rounds differently from where they were trained.
    registry = {
        f"tiny-{fmt}": {
            "path": str(path),
            "task": "text-generation-with-past",
            "inference_precision": "f32",
        }
        for fmt, path in format_models.items()
    }
    return server_factory(registry)


def body(fmt: str, **extra: Any) -> dict[str, Any]:
    question = ANSWERS[fmt][0]
    out: dict[str, Any] = {
        "model": f"tiny-{fmt}",
        "messages": [{"role": "user", "content": question}],
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 120,
    }
    out.update(extra)
    return out


def as_calls(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(c["name"], json.loads(c["arguments"])) for c in calls]


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_free_calls_in_each_format(formats_server: LiveServer, fmt: str) -> None:
    _, _, expected, content = ANSWERS[fmt]
    response = httpx.post(f"{formats_server.v1}/chat/completions", json=body(fmt), timeout=120)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    calls = [c["function"] for c in choice["message"]["tool_calls"]]
    assert as_calls(calls) == expected
    assert (choice["message"]["content"] or "") == content

    events = sse(formats_server, body(fmt))
    streamed = streamed_calls(events)
    assert as_calls([streamed[i] for i in sorted(streamed)]) == expected
    assert joined(events, "content") == content  # no part of a call leaked into it
    assert finish_reason(events) == "tool_calls"


@pytest.mark.parametrize("fmt", list(ANSWERS))
def test_forced_calls_in_each_format(formats_server: LiveServer, fmt: str) -> None:
    """A forced call on a prompt whose free answer is another call: valid by construction
    (Phi-4-mini's own layout, the others in their family's JSON layout), arguments streamed
    in pieces that add up to the non-streamed call."""
    request = body(fmt, tool_choice="required", max_tokens=80)
    whole = httpx.post(f"{formats_server.v1}/chat/completions", json=request, timeout=120)
    assert whole.status_code == 200, whole.text
    (call,) = whole.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_forecast"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    events = sse(formats_server, request)
    (streamed,) = streamed_calls(events).values()
    assert streamed["arguments"] == call["function"]["arguments"]
    assert argument_pieces(events)[0] == ""  # id and name first
    assert finish_reason(events) in ("tool_calls", "length")

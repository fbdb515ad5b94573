"""One streamed chat completion against any OpenAI-compatible server, timed per chunk.

Used for servers the benchmark does not own (llama.cpp's ``llama-server``) and usable for this
one: it counts text deltas *and* tool-call deltas (a call's opening delta, with its id and
name, included) as output, so a forced tool call (whose answer has no ``content``) still has a
time to first token: its first byte.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    sent_s: float  # perf_counter() when the request was written
    stamps: list[float] = field(default_factory=list)  # perf_counter() of each output chunk
    text: str = ""
    tool_arguments: str = ""
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    # The server's own counters, where it sends them (llama-server's ``timings``).
    server_timings: dict[str, Any] | None = None

    @property
    def ttft_s(self) -> float:
        return self.stamps[0] - self.sent_s

    @property
    def last_s(self) -> float:
        return self.stamps[-1] - self.sent_s


def chat_body(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    *,
    ignore_eos: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A greedy streamed request with usage; ``extra`` adds fields such as ``tools``."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": ignore_eos,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> StreamResult:
    """POSTs ``body`` to ``/v1/chat/completions`` and reads the SSE stream to its end."""
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    result = StreamResult(sent_s=time.perf_counter())
    buffer = b""
    async with client.stream(
        "POST", "/v1/chat/completions", content=payload, headers=headers
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:500]!r}")
        async for data in response.aiter_raw():
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                _take(result, event.strip(), now)
    if not result.stamps:
        raise RuntimeError("the stream carried no output")
    return result


def _take(result: StreamResult, event: bytes, now: float) -> None:
    if not event.startswith(b"data: {"):
        return
    chunk = json.loads(event[6:])
    if chunk.get("usage"):
        result.completion_tokens = int(chunk["usage"]["completion_tokens"])
        result.prompt_tokens = int(chunk["usage"]["prompt_tokens"])
    if chunk.get("timings"):
        result.server_timings = chunk["timings"]
    for choice in chunk.get("choices", ()):
        delta = choice.get("delta") or {}
        output = False
        if delta.get("content"):
            result.text += delta["content"]
            output = True
        for call in delta.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments")
            if arguments:
                result.tool_arguments += arguments
            # A call's first delta (its id and name) is its first byte, arguments or not.
            if arguments or call.get("id"):
                output = True
        if output:
            result.stamps.append(now)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]

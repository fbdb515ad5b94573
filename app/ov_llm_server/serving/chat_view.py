"""What the Responses and Messages APIs share: both are views over chat completions.

Each translates its request into a :class:`ChatCompletionRequest`, runs it through the
:class:`ChatService` (admission, the engine, tools, structured output, reasoning: chat's code,
unchanged), and reads chat's answer back, whole or chunk by chunk, to reshape it into its own
wire format. A refusal by chat names chat's field; ``renamed`` says it in the caller's words.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from .. import errors
from ..protocol import ChatCompletionRequest, StreamOptions
from .chat import ChatService
from .generation import SSE_HEADERS


@dataclass
class ChatStream:
    """A streamed chat answer: its chunks as dicts (an ``{"error": ...}`` dict for a failure
    mid-stream), and what must run when the stream ends whatever happens."""

    chunks: AsyncIterator[dict[str, Any]]
    background: BackgroundTask | None


ChatResult = dict[str, Any] | ChatStream | Response


def chat_request(fields: dict[str, Any], params: Mapping[str, str]) -> ChatCompletionRequest:
    """The chat request of a translated one; a field chat refuses is named as the client's."""
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise errors.bad_request(
            f"Invalid request: {first.get('msg', 'invalid value')}",
            param=renamed(param, params),
        ) from None


async def run_chat(
    chat: ChatService,
    body: ChatCompletionRequest,
    request: Request,
    params: Mapping[str, str],
) -> ChatResult:
    """Chat's answer: the ``chat.completion`` as a dict, a :class:`ChatStream`, or the bare
    response of a client that left (499)."""
    if body.stream:
        body.stream_options = StreamOptions(include_usage=True)  # usage closes both APIs
    try:
        response = await chat.create(body, request)
    except errors.APIError as exc:
        exc.param = renamed(exc.param, params)
        raise
    if isinstance(response, StreamingResponse):
        background = response.background
        response.background = None  # the view's own response runs it
        return ChatStream(_chunks(response.body_iterator), background)
    if isinstance(response, JSONResponse):
        answer: dict[str, Any] = json.loads(bytes(response.body))
        return answer
    return response


async def _chunks(body: AsyncIterable[Any]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in body:
            text = event if isinstance(event, str) else bytes(event).decode()
            for line in text.splitlines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    return
                yield json.loads(data)
    finally:
        # Closing chat's stream ends its request (the engine's work, the lease) at once.
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()


def streamed(events: AsyncIterator[str], stream: ChatStream) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers=SSE_HEADERS, background=stream.background
    )


def renamed(param: str | None, params: Mapping[str, str]) -> str | None:
    """Chat's name of a field (``messages.3.content``) in the caller's API (``input``)."""
    if param is None:
        return None
    head = param.split(".", 1)[0]
    return params.get(head, param)


def check_tool_results(messages: list[dict[str, Any]], param: str) -> None:
    """Every tool result answers a call the conversation made before it."""
    called: set[str] = set()
    for message in messages:
        for call in message.get("tool_calls") or ():
            called.add(call["id"])
        if message["role"] == "tool" and message.get("tool_call_id") not in called:
            raise errors.bad_request(
                f"The tool result for '{message.get('tool_call_id')}' answers no tool call "
                "made earlier in the conversation",
                param=param,
                code="unknown_tool_call_id",
            )

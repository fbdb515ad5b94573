"""``/v1/messages``: Anthropic's Messages API as a view over chat completions.

The request becomes a chat request (``system`` → a system message, ``tool_use`` blocks →
tool calls, ``tool_result`` blocks → tool messages, ``input_schema`` tools → chat tools,
``tool_choice`` any/tool → required/named); chat's answer becomes content blocks
(``thinking``, ``text``, ``tool_use``) and chat's chunks become the Messages stream events.
Errors take Anthropic's shape by their path (``errors.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..protocol import ChatMessage
from ..protocol_anthropic import (
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ..protocol_surface import TokenizeRequest
from .chat import ChatService
from .chat_view import ChatStream, chat_request, check_tool_results, run_chat, streamed
from .tokenize import TokenizeService

# Chat's names of the fields a refusal may be about, in this API's words.
PARAMS = {
    "max_completion_tokens": "max_tokens",
    "stop": "stop_sequences",
}

STOP_REASONS = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}


def stop_reason(finish: str, stop_sequence: str | None) -> str | None:
    """Anthropic's stop reason of chat's finish (and ``stop_reason``: the stop sequence that
    ended the answer, if one did)."""
    if finish == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(finish)


class MessagesService:
    def __init__(self, chat: ChatService, tokenize: TokenizeService) -> None:
        self.chat = chat
        self.tokenize = tokenize

    async def create(self, body: MessagesRequest, request: Request) -> Response:
        messages = chat_messages(body)
        chat_body = chat_request(chat_fields(body, messages), PARAMS)
        result = await run_chat(self.chat, chat_body, request, PARAMS)
        answer = _Answer(body)
        if isinstance(result, ChatStream):
            return streamed(answer.events(result), result)
        if isinstance(result, Response):
            return result  # the client left
        return JSONResponse(answer.whole(result))

    async def count_tokens(self, body: CountTokensRequest, request: Request) -> Response:
        """The prompt's tokens through the model's chat template (tool definitions are not
        rendered: the tokenizer endpoint takes none)."""
        tokenize = TokenizeRequest(
            model=body.model,
            messages=[ChatMessage.model_validate(m) for m in chat_messages(body)],
        )
        response = await self.tokenize.create(tokenize, request)
        if not isinstance(response, JSONResponse):
            return response  # the client left
        count = json.loads(bytes(response.body))["count"]
        return JSONResponse({"input_tokens": count})


# ---------------------------------------------------------------- request → chat


def chat_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": "".join(b.text for b in body.system)})
    for message in body.messages:
        messages += _turn(message)
    check_tool_results(messages, "messages")
    return messages


def _turn(message: Message) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: tool results first (each its own tool message),
    then the turn's text and tool calls."""
    results: list[dict[str, Any]] = []
    text = ""
    # With images: the turn's text and images in order, as chat's content parts.
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            text += block.text
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": block.data_url()}})
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input)
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif isinstance(block, ToolResultBlock):
            content = "".join(part.text for part in block.content)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
        else:
            assert isinstance(block, ThinkingBlock)
    turn: list[dict[str, Any]] = []
    images = any(part["type"] == "image_url" for part in parts)
    if text or calls or images or not results:
        own: dict[str, Any] = {"role": message.role, "content": parts if images else text or None}
        if calls:
            own["tool_calls"] = calls
        turn.append(own)
    return results + turn


def chat_fields(body: MessagesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_completion_tokens": body.max_tokens,
        "stop": body.stop_sequences,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stream": body.stream,
    }
    if body.tools:
        fields["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                },
            }
            for tool in body.tools
        ]
    choice = body.tool_choice
    if choice is not None:
        if choice.type == "tool":
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        fields["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return fields


# ---------------------------------------------------------------- chat → message


def _tool_input(arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)
    return value if isinstance(value, dict) else {}


class _Answer:
    """One message being shaped from chat's answer, whole or streamed."""

    def __init__(self, body: MessagesRequest) -> None:
        self.body = body
        self.id = f"msg_{uuid.uuid4().hex}"
        # The model reasons or not by itself; "disabled" hides what it thought.
        self.thinking = body.thinking is None or body.thinking.type != "disabled"

    def message(
        self,
        content: list[dict[str, Any]],
        finish: str | None,
        stop_sequence: str | None,
        usage: dict[str, int],
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.body.model,
            "content": content,
            "stop_reason": None if finish is None else stop_reason(finish, stop_sequence),
            "stop_sequence": stop_sequence,
            "usage": usage,
        }

    def whole(self, completion: dict[str, Any]) -> dict[str, Any]:
        choice = completion["choices"][0]
        message = choice["message"]
        content: list[dict[str, Any]] = []
        if self.thinking and message.get("reasoning_content"):
            content.append(
                {"type": "thinking", "thinking": message["reasoning_content"], "signature": ""}
            )
        if message.get("content"):
            content.append({"type": "text", "text": message["content"]})
        for call in message.get("tool_calls") or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "input": _tool_input(call["function"]["arguments"]),
                }
            )
        usage = completion["usage"]
        return self.message(
            content,
            choice["finish_reason"],
            choice.get("stop_reason"),
            {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
        )

    async def events(self, stream: ChatStream) -> AsyncIterator[str]:
        events = _Events()
        start = self.message([], None, None, {"input_tokens": 0, "output_tokens": 0})
        yield events.emit("message_start", message=start)
        yield events.emit("ping")
        async for chunk in stream.chunks:
            if "error" in chunk:
                error = {"type": "api_error", "message": chunk["error"]["message"]}
                yield events.emit("error", error=error)
                return
            for event in events.feed(chunk, self.thinking):
                yield event
        for event in events.close():
            yield event
        usage = events.usage or {"prompt_tokens": 0, "completion_tokens": 0}
        yield events.emit(
            "message_delta",
            delta={
                "stop_reason": stop_reason(events.finish or "stop", events.stop_sequence),
                "stop_sequence": events.stop_sequence,
            },
            usage={
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
            },
        )
        yield events.emit("message_stop")


class _Events:
    """Chat chunks → Messages stream events: one content block open at a time."""

    def __init__(self) -> None:
        self.index = -1
        self.block: str | None = None  # the open block's type
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, Any] | None = None

    @staticmethod
    def emit(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    def feed(self, chunk: dict[str, Any], thinking: bool) -> list[str]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[str] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if thinking and delta.get("reasoning_content"):
                out += self._delta(
                    {"type": "thinking", "thinking": "", "signature": ""},
                    {"type": "thinking_delta", "thinking": delta["reasoning_content"]},
                )
            if delta.get("content"):
                out += self._delta(
                    {"type": "text", "text": ""}, {"type": "text_delta", "text": delta["content"]}
                )
            for call in delta.get("tool_calls") or ():
                if "id" in call:
                    block = {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": {},
                    }
                    out += self._open(block)
                arguments = call.get("function", {}).get("arguments")
                if arguments:
                    delta_json = {"type": "input_json_delta", "partial_json": arguments}
                    out.append(self.emit("content_block_delta", index=self.index, delta=delta_json))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.stop_sequence = choice.get("stop_reason")
        return out

    def _delta(self, block: dict[str, Any], delta: dict[str, Any]) -> list[str]:
        out = self._open(block) if self.block != block["type"] else []
        return [*out, self.emit("content_block_delta", index=self.index, delta=delta)]

    def _open(self, block: dict[str, Any]) -> list[str]:
        out = self.close()
        self.index += 1
        self.block = block["type"]
        return [*out, self.emit("content_block_start", index=self.index, content_block=block)]

    def close(self) -> list[str]:
        if self.block is None:
            return []
        self.block = None
        return [self.emit("content_block_stop", index=self.index)]

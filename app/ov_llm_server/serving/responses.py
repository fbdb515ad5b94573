"""``/v1/responses``: OpenAI's Responses API as a view over chat completions.

The request becomes a chat request (input items → messages, flat tools → chat tools,
``text.format`` → ``response_format``, ``previous_response_id`` → the stored conversation
before the new input); chat's answer becomes output items (``reasoning``, ``message``,
``function_call``), and chat's chunks become the Responses stream events.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import errors
from ..protocol_responses import (
    IMAGE_PART,
    TEXT_PARTS,
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    ResponsesRequest,
)
from .chat import ChatService
from .chat_view import ChatStream, chat_request, check_tool_results, run_chat, streamed
from .response_store import ResponseStore

# Chat's names of the fields a refusal may be about, in this API's words.
PARAMS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def not_found(response_id: str, param: str | None = None) -> errors.APIError:
    what = "Previous response" if param else "Response"
    return errors.APIError(
        404,
        f"{what} with id '{response_id}' not found (responses are kept in this server's "
        "memory only, a bounded number of them, and are lost on restart)",
        param=param,
        code="response_not_found",
    )


class ResponsesService:
    def __init__(self, chat: ChatService, store: ResponseStore) -> None:
        self.chat = chat
        self.store = store

    async def create(self, body: ResponsesRequest, request: Request) -> Response:
        conversation: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            previous = self.store.get(body.previous_response_id)
            if previous is None:
                raise not_found(body.previous_response_id, "previous_response_id")
            conversation = list(previous.conversation)
        conversation += conversation_of(body.input)
        check_tool_results(conversation, "input")
        system = [{"role": "system", "content": body.instructions}] if body.instructions else []
        chat_body = chat_request(chat_fields(body, system + conversation), PARAMS)
        result = await run_chat(self.chat, chat_body, request, PARAMS)
        answer = _Answer(body, conversation, self.store)
        if isinstance(result, ChatStream):
            return streamed(answer.events(result), result)
        if isinstance(result, Response):
            return result  # the client left
        return JSONResponse(answer.whole(result))

    def get(self, response_id: str) -> dict[str, Any]:
        stored = self.store.get(response_id)
        if stored is None:
            raise not_found(response_id)
        return stored.response

    def delete(self, response_id: str) -> dict[str, Any]:
        if not self.store.delete(response_id):
            raise not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}


# ---------------------------------------------------------------- request → chat


def conversation_of(given: list[InputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages; a ``function_call`` joins the assistant turn before it."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(given):
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _content(item.content, f"input.{i}")})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = _text(item.output, f"input.{i}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _content(content: str | list[ContentPart], param: str) -> str | list[dict[str, Any]]:
    """A message's content for chat: text, or chat's parts when it has images (chat checks
    and decodes them, and refuses them for a model that does not read images)."""
    if isinstance(content, str) or all(part.type != IMAGE_PART for part in content):
        return _text(content, param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part.type == IMAGE_PART:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url or ""}})
        elif part.type in TEXT_PARTS:
            parts.append({"type": "text", "text": part.text or ""})
        else:
            raise _unsupported(part, f"{param}.content.{j}.type")
    return parts


def _text(content: str | list[ContentPart], param: str) -> str:
    if isinstance(content, str):
        return content
    for j, part in enumerate(content):
        if part.type not in TEXT_PARTS:
            raise _unsupported(part, f"{param}.content.{j}.type")
    return "".join(part.text or "" for part in content)


def _unsupported(part: ContentPart, param: str) -> errors.APIError:
    return errors.bad_request(
        f"Content part type '{part.type}' is not supported; this server takes text and "
        "input_image parts",
        param=param,
        code="unsupported_content",
    )


def chat_fields(body: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "parallel_tool_calls": body.parallel_tool_calls,
        "stream": body.stream,
    }
    if body.tools:
        fields["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in body.tools
        ]
    if isinstance(body.tool_choice, str):
        fields["tool_choice"] = body.tool_choice
    elif body.tool_choice is not None:
        fields["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice.name}}
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise errors.bad_request(
                "text.format of type json_schema needs a 'schema'", param="text.format.schema"
            )
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict},
        }
    return fields


# ---------------------------------------------------------------- chat → response


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if chat_usage is None:
        return None
    return {
        "input_tokens": chat_usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": chat_usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat_usage["total_tokens"],
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part(text)],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
    }


def _function_call(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


class _Answer:
    """One response being shaped from chat's answer, whole or streamed; kept when ``store``."""

    def __init__(
        self, body: ResponsesRequest, conversation: list[dict[str, Any]], store: ResponseStore
    ) -> None:
        self.body = body
        self.conversation = conversation
        self.store = store
        self.id = _id("resp")
        self.created_at = int(time.time())

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        fmt = body.text.format if body.text and body.text.format else None
        tool_choice = body.tool_choice or "auto"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": body.store,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "text": {
                "format": fmt.model_dump(by_alias=True, exclude_none=True)
                if fmt
                else {"type": "text"}
            },
            "tool_choice": tool_choice
            if isinstance(tool_choice, str)
            else tool_choice.model_dump(),
            "tools": [tool.model_dump() for tool in body.tools or ()],
            "truncation": "disabled",
            "usage": usage,
            "metadata": body.metadata or {},
        }

    def finished(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        response = self.response(status, output, usage)
        if self.body.store:
            self.store.put(response, [*self.conversation, *_as_chat(output)])
        return response

    def whole(self, completion: dict[str, Any]) -> dict[str, Any]:
        choice = completion["choices"][0]
        message = choice["message"]
        cut = choice["finish_reason"] == "length"
        output: list[dict[str, Any]] = []
        if message.get("reasoning_content"):
            output.append(_reasoning(_id("rs"), message["reasoning_content"]))
        calls = message.get("tool_calls") or []
        if message.get("content") or not calls:
            status = "incomplete" if cut else "completed"
            output.append(_message(_id("msg"), message.get("content") or "", status))
        for call in calls:
            function = call["function"]
            output.append(
                _function_call(_id("fc"), call["id"], function["name"], function["arguments"])
            )
        status = "incomplete" if cut else "completed"
        return self.finished(status, output, usage_of(completion.get("usage")))

    async def events(self, stream: ChatStream) -> AsyncIterator[str]:
        events = _Events(self)
        yield events.emit("response.created", response=self.response("in_progress", []))
        yield events.emit("response.in_progress", response=self.response("in_progress", []))
        async for chunk in stream.chunks:
            if "error" in chunk:
                for event in events.close(cut=False):
                    yield event
                failed = self.response("failed", events.output, error=_error(chunk["error"]))
                yield events.emit("response.failed", response=failed)
                return
            for event in events.feed(chunk):
                yield event
        cut = events.finish == "length"
        for event in events.close(cut=cut):
            yield event
        status = "incomplete" if cut else "completed"
        response = self.finished(status, events.output, usage_of(events.usage))
        yield events.emit(f"response.{status}", response=response)


def _error(chat_error: dict[str, Any]) -> dict[str, Any]:
    return {"code": chat_error.get("code") or "server_error", "message": chat_error["message"]}


def _as_chat(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This answer as the assistant turn of the stored conversation."""
    text = "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


class _Events:
    """Chat chunks → Responses stream events: one output item open at a time."""

    def __init__(self, answer: _Answer) -> None:
        self.answer = answer
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.item: dict[str, Any] | None = None
        self.text = ""  # the open item's text (or arguments) so far
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def emit(self, kind: str, **data: Any) -> str:
        event = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(event)}\n\n"

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[str] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._text("reasoning", delta["reasoning_content"])
            if delta.get("content"):
                out += self._text("message", delta["content"])
            for call in delta.get("tool_calls") or ():
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    @property
    def _index(self) -> int:
        return len(self.output)

    def _open(self, item: dict[str, Any]) -> list[str]:
        out = self.close(cut=False)
        self.item = item
        self.text = ""
        return [*out, self.emit("response.output_item.added", output_index=self._index, item=item)]

    def _text(self, kind: str, delta: str) -> list[str]:
        out: list[str] = []
        if self.item is None or self.item["type"] != kind:
            if kind == "message":
                out += self._open(
                    {
                        "id": _id("msg"),
                        "type": "message",
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    }
                )
                out.append(self._part("response.content_part.added", _text_part("")))
            else:
                out += self._open(_reasoning(_id("rs"), ""))
        assert self.item is not None
        self.text += delta
        name = "output_text" if kind == "message" else "reasoning_text"
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        out.append(
            self.emit(
                f"response.{name}.delta",
                item_id=self.item["id"],
                output_index=self._index,
                content_index=0,
                delta=delta,
                **extra,
            )
        )
        return out

    def _part(self, kind: str, part: dict[str, Any]) -> str:
        assert self.item is not None
        return self.emit(
            kind, item_id=self.item["id"], output_index=self._index, content_index=0, part=part
        )

    def _call(self, call: dict[str, Any]) -> list[str]:
        out: list[str] = []
        if "id" in call:
            function = call["function"]
            item = _function_call(_id("fc"), call["id"], function["name"], "")
            item["status"] = "in_progress"
            out += self._open(item)
        arguments = call.get("function", {}).get("arguments") or ""
        if arguments and self.item is not None:
            self.text += arguments
            out.append(
                self.emit(
                    "response.function_call_arguments.delta",
                    item_id=self.item["id"],
                    output_index=self._index,
                    delta=arguments,
                )
            )
        return out

    def close(self, *, cut: bool) -> list[str]:
        """The open item's closing events; it joins the output."""
        item = self.item
        if item is None:
            return []
        self.item = None
        where = {"item_id": item["id"], "output_index": self._index}
        out: list[str] = []
        if item["type"] == "message":
            item = _message(item["id"], self.text, "incomplete" if cut else "completed")
            part = item["content"][0]
            out.append(
                self.emit(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                )
            )
            out.append(self.emit("response.content_part.done", **where, content_index=0, part=part))
        elif item["type"] == "reasoning":
            item = _reasoning(item["id"], self.text)
            out.append(
                self.emit("response.reasoning_text.done", **where, content_index=0, text=self.text)
            )
        else:
            item = _function_call(item["id"], item["call_id"], item["name"], self.text)
            out.append(
                self.emit(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=self.text,
                )
            )
        out.append(self.emit("response.output_item.done", output_index=self._index, item=item))
        self.output.append(item)
        return out

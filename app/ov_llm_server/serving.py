"""Chat completions: an OpenAI request in, an engine stream through, an OpenAI answer out."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from . import errors
from .engine import Engine, GenerationStream, SamplingParams, StreamEvent, TemplateError
from .metrics import Metrics
from .model_manager import ModelManager, ResolvedModel
from .output import OutputParser, ParsedDelta, plan_output
from .protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    Usage,
    new_id,
    now,
)
from .settings import Settings

log = logging.getLogger("ov_llm_server.requests")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class _Call:
    """What one request needs from start to its log line."""

    request_id: str
    model: str
    client: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    completion_id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    finish_reason: str = "error"
    status: int = 200
    label: str = "unknown"  # the model label of the metrics

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


class ChatService:
    def __init__(self, settings: Settings, models: ModelManager, metrics: Metrics) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        client = request.client.host if request.client else "-"
        call = _Call(request.state.request_id, body.model, client, body.stream)
        call.label = self.models.metric_label(body.model)
        try:
            self._check(body)
            resolved, engine = await self.models.get(body.model)
            stream, parser = await self._submit(body, resolved, engine, call)
        except errors.APIError as exc:
            call.status = exc.status
            self._finish_log(call)
            raise
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                self._sse(stream, parser, call, include_usage),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        return await self._complete(stream, parser, call, request)

    # ------------------------------------------------------------ request → engine

    def _check(self, body: ChatCompletionRequest) -> None:
        if body.n != 1:
            raise errors.bad_request("Only n=1 is supported", param="n", code="unsupported_value")
        if len(body.messages) > self.settings.max_messages:
            raise errors.bad_request(
                f"Too many messages ({len(body.messages)}); at most "
                f"{self.settings.max_messages} are accepted",
                param="messages",
            )
        for i, message in enumerate(body.messages):
            if isinstance(message.content, list):
                for part in message.content:
                    if part.type != "text":
                        raise errors.bad_request(
                            f"Content part type '{part.type}' is not supported; "
                            "this server takes text only",
                            param=f"messages.{i}.content",
                        )
        requested = body.requested_max_tokens()
        if requested is not None and requested > self.settings.max_tokens_limit:
            raise errors.bad_request(
                f"max_tokens {requested} exceeds this server's limit of "
                f"{self.settings.max_tokens_limit}",
                param="max_tokens",
            )

    async def _submit(
        self, body: ChatCompletionRequest, resolved: ResolvedModel, engine: Engine, call: _Call
    ) -> tuple[GenerationStream, OutputParser]:
        if engine.wedged:
            raise errors.unavailable(
                f"Model '{body.model}' is failing: {engine.last_error}", code="engine_unhealthy"
            )
        # Cheap refusals first: a full queue or an unusable schema costs no template work.
        if engine.in_flight >= self.settings.max_queue:
            raise errors.overloaded(body.model)
        max_new = body.requested_max_tokens() or self.settings.default_max_tokens
        count = engine.count_text_tokens
        plan = plan_output(body, engine.chat_template, resolved.entry, max_new, count_tokens=count)
        messages = [_template_message(m) for m in body.messages]
        tools = plan.template_tools
        try:
            prompt, input_ids = await asyncio.to_thread(_render_and_encode, engine, messages, tools)
        except TemplateError as exc:
            raise errors.bad_request(
                f"The model's chat template cannot render these messages: {exc}",
                param="messages",
                code="template_error",
            ) from exc
        call.prompt_tokens = engine.count_tokens(input_ids)
        if engine.context_length is not None:
            room = engine.context_length - call.prompt_tokens
            if room <= 0:
                raise errors.bad_request(
                    f"This model's maximum context length is {engine.context_length} tokens; "
                    f"the messages take {call.prompt_tokens}",
                    param="messages",
                    code="context_length_exceeded",
                )
            if room < max_new:
                max_new = room
                # The grammar's budget check must see the budget the engine will use.
                plan = plan_output(
                    body, engine.chat_template, resolved.entry, max_new, count_tokens=count
                )
        parser = plan.parser(prompt)
        return engine.submit(input_ids, _sampling(body, max_new, plan.grammar)), parser

    # ------------------------------------------------------------ non-streaming

    async def _complete(
        self, stream: GenerationStream, parser: OutputParser, call: _Call, request: Request
    ) -> Response:
        collector = asyncio.ensure_future(self._drain(stream, parser, call))
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not collector.done():
            stream.cancel()
            await collector
            call.status = 499
            self._finish_log(call)
            return Response(status_code=499)
        parsed, error = collector.result()
        if error is not None:
            call.status = 500
            self._finish_log(call)
            raise errors.engine_error(f"Generation failed: {error}")
        finish = _finish_reason(parsed.tool_calls, parser, call)
        message = ResponseMessage(
            content=parsed.content if (parsed.content or not parsed.tool_calls) else None,
            reasoning_content=parsed.reasoning or None,
            tool_calls=[
                ResponseToolCall(
                    id=tc.id, function=ResponseFunctionCall(name=tc.name, arguments=tc.arguments)
                )
                for tc in parsed.tool_calls
            ]
            or None,
        )
        completion = ChatCompletion(
            id=call.completion_id,
            created=call.created,
            model=call.model,
            choices=[Choice(message=message, finish_reason=finish)],
            usage=call.usage(),
        )
        call.finish_reason = finish
        self._finish_log(call)
        answer = completion.model_dump(exclude_none=True)
        # OpenAI sends content null (not nothing) beside tool calls; clients read it.
        answer["choices"][0]["message"].setdefault("content", None)
        return JSONResponse(answer)

    async def _drain(
        self, stream: GenerationStream, parser: OutputParser, call: _Call
    ) -> tuple[ParsedDelta, str | None]:
        parsed = ParsedDelta()
        error = None
        async for event in stream:
            self._track(call, event)
            parsed.merge(parser.feed(event.text))
            if parser.done:
                stream.cancel()  # the answer is complete: the rest would be thrown away
            if event.finish_reason is not None:
                error = event.error
        parsed.merge(parser.finish())
        return parsed, error

    # ------------------------------------------------------------ streaming

    async def _sse(
        self,
        stream: GenerationStream,
        parser: OutputParser,
        call: _Call,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        head = (
            f'{{"id":"{call.completion_id}","object":"chat.completion.chunk",'
            f'"created":{call.created},"model":{json.dumps(call.model)},"choices":'
        )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return f"data: {head}[{json.dumps(choice)}]}}\n\n"

        tool_calls = 0
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in stream:
                self._track(call, event)
                parsed = parser.feed(event.text)
                if event.finish_reason is not None:
                    if event.error is not None:
                        call.status = 500
                        failure = errors.engine_error(f"Generation failed: {event.error}")
                        yield failure.sse().decode()
                        yield "data: [DONE]\n\n"
                        return
                    parsed.merge(parser.finish())
                elif parser.done:
                    stream.cancel()  # the answer is complete: the rest would be thrown away
                for piece in _delta_dicts(parsed):
                    yield chunk(piece)
                tool_calls += len(parsed.tool_calls)
            finish = _finish_reason(tool_calls, parser, call)
            call.finish_reason = finish
            yield chunk({}, finish)
            if include_usage:
                usage = call.usage().model_dump_json()
                yield f'data: {head}[],"usage":{usage}}}\n\n'
            yield "data: [DONE]\n\n"
        finally:
            if not stream.done:
                stream.cancel()
                if call.status == 200:
                    call.status = 499
            self._finish_log(call)

    # ------------------------------------------------------------ bookkeeping

    def _track(self, call: _Call, event: StreamEvent) -> None:
        if call.first_token_at is None and event.completion_tokens > 0:
            call.first_token_at = time.perf_counter()
        call.completion_tokens = event.completion_tokens
        if event.finish_reason is not None:
            call.finish_reason = event.finish_reason

    def _finish_log(self, call: _Call) -> None:
        elapsed = time.perf_counter() - call.started
        m = self.metrics
        m.requests.labels(call.label, str(call.status)).inc()
        if call.status == 200:
            m.latency.labels(call.label).observe(elapsed)
            m.prompt_tokens.labels(call.label).inc(call.prompt_tokens)
            m.completion_tokens.labels(call.label).inc(call.completion_tokens)
            if call.first_token_at is not None:
                m.ttft.labels(call.label).observe(call.first_token_at - call.started)
                if call.completion_tokens > 1:
                    per_token = (time.perf_counter() - call.first_token_at) / (
                        call.completion_tokens - 1
                    )
                    m.tpot.labels(call.label).observe(per_token)
        elif call.status == 499:
            m.cancelled.labels(call.label).inc()
        log.info(
            "completion request_id=%s model=%s client=%s latency_ms=%.1f status=%d "
            "prompt_tokens=%d completion_tokens=%d finish=%s stream=%s",
            call.request_id,
            call.model,
            call.client,
            elapsed * 1000,
            call.status,
            call.prompt_tokens,
            call.completion_tokens,
            call.finish_reason,
            str(call.stream).lower(),
        )


def _render_and_encode(
    engine: Engine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[str, Any]:
    prompt = engine.render_prompt(messages, tools)
    return prompt, engine.encode(prompt)


def _template_message(message: ChatMessage) -> dict[str, Any]:
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments_object(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return out


def _arguments_object(arguments: str | dict[str, Any]) -> Any:
    # Chat templates serialise arguments themselves (`| tojson`): give them the object.
    if isinstance(arguments, dict):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _sampling(
    body: ChatCompletionRequest, max_new_tokens: int, grammar: str | None
) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        stop=tuple(body.stop or ()),
        grammar=grammar,
        min_new_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
    )


def _finish_reason(tool_calls: Any, parser: OutputParser, call: _Call) -> str:
    if tool_calls:
        return "tool_calls"
    # A parser that is done holds a whole answer (a schema document closed within the budget).
    return "stop" if parser.done else call.finish_reason


def _delta_dicts(parsed: ParsedDelta) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if parsed.reasoning:
        out.append({"reasoning_content": parsed.reasoning})
    if parsed.content:
        out.append({"content": parsed.content})
    for call in parsed.tool_calls:
        index = call.index
        out.append(
            {
                "content": None,
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ],
            }
        )
        out.append({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})
    return out


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

"""Chat completions: an OpenAI request in, an engine stream through, an OpenAI answer out.

Runs in the HTTP process. A request takes its model lease synchronously (admission), then,
within its deadline, waits for the model, renders and encodes its prompt off the event
loop, and hands token ids to the model's engine process. Every way a request can end
(finished, cut off, client gone, deadline, engine died, server error) releases the lease
and writes one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from . import errors
from .engine.client import EngineGone, RequestStream
from .engine.messages import Output, SamplingParams
from .metrics import Metrics
from .model_manager import Lease, LoadedModel, ModelManager
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


class DeadlinePassed(Exception):
    """The request's deadline passed while it was generating."""


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
    ended: bool = False

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_seconds
        lease: Lease | None = None
        try:
            self._check(body)
            lease = self.models.admit(body.model)
        except errors.APIError as exc:
            self._end(call, lease, None, None, status=exc.status)
            raise
        # A client may leave while its request waits for a model load or for room: stop
        # waiting for it then, not when generation would have started.
        prepare = asyncio.ensure_future(self._prepare(body, lease, call, deadline))
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({prepare, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request itself was cancelled (shutdown)
            prepare.cancel()
            self._end(call, lease, None, None, status=499)
            raise
        finally:
            watcher.cancel()
        if not prepare.done():
            prepare.cancel()
            await asyncio.gather(prepare, return_exceptions=True)
        if prepare.cancelled():
            self._end(call, lease, None, None, status=499)
            return Response(status_code=499)
        try:
            stream, parser = prepare.result()
        except errors.APIError as exc:
            self._end(call, lease, None, None, status=exc.status)
            raise
        except BaseException:
            self._end(call, lease, None, None, status=500)
            raise
        timer = loop.call_at(deadline, stream.abort, DeadlinePassed())

        def end() -> None:
            self._end(call, lease, stream, timer)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                self._sse(stream, parser, call, include_usage, end),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
                # Runs even when the client left before the stream started.
                background=BackgroundTask(end),
            )
        try:
            return await self._complete(stream, parser, call, request)
        finally:
            end()

    # ------------------------------------------------------------ request → engine

    async def _prepare(
        self, body: ChatCompletionRequest, lease: Lease, call: _Call, deadline: float
    ) -> tuple[RequestStream, OutputParser]:
        """The model, the prompt and the engine request, within the request's deadline."""
        waiting_for_model = True
        try:
            async with asyncio.timeout_at(deadline):
                model = await lease.model()
                waiting_for_model = False
                return await self._submit(body, model, call)
        except TimeoutError:
            if waiting_for_model:
                raise errors.unavailable(
                    f"Model '{body.model}' was not ready within the request's deadline "
                    "(loading, or every loaded model busy)",
                    code="models_busy",
                    retry_after=5,
                ) from None
            raise errors.timed_out(self.settings.request_timeout_seconds) from None

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
        self, body: ChatCompletionRequest, model: LoadedModel, call: _Call
    ) -> tuple[RequestStream, OutputParser]:
        engine = model.engine
        # What the model must produce, and every refusal of it, before the engine sees anything.
        plan = plan_output(body, engine.chat_template, model.entry)
        messages = [_template_message(m) for m in body.messages]
        max_new = body.requested_max_tokens() or self.settings.default_max_tokens
        params = _sampling(body, max_new, plan.grammar, plan.shortest_answer)
        try:
            stream = engine.submit(messages, plan.template_tools, params)
            accepted = await stream.accepted()
        except EngineGone as exc:
            raise _failure(exc, model.name) from exc
        if accepted.finish is not None:  # refused: the template, the budget, GenAI itself
            if accepted.code is not None:
                param = "max_tokens" if accepted.code == "max_tokens_too_small" else "messages"
                raise errors.bad_request(str(accepted.error), param=param, code=accepted.code)
            raise errors.engine_error(f"Generation failed: {accepted.error}")
        call.prompt_tokens = accepted.prompt_tokens or 0
        return stream, plan.parser(accepted.prompt_tail or "")

    # ------------------------------------------------------------ non-streaming

    async def _complete(
        self, stream: RequestStream, parser: OutputParser, call: _Call, request: Request
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
            return Response(status_code=499)
        parsed, failure = collector.result()
        if failure is not None:
            call.status = failure.status
            raise failure
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
        answer = completion.model_dump(exclude_none=True)
        # OpenAI sends content null (not nothing) beside tool calls; clients read it.
        answer["choices"][0]["message"].setdefault("content", None)
        return JSONResponse(answer)

    async def _drain(
        self, stream: RequestStream, parser: OutputParser, call: _Call
    ) -> tuple[ParsedDelta, errors.APIError | None]:
        parsed = ParsedDelta()
        try:
            async for output in stream:
                self._track(call, output)
                parsed.merge(parser.feed(output.text))
                if output.finish is not None and (failure := _finish_failure(output, stream, call)):
                    return parsed, failure
                if parser.done:
                    stream.cancel()  # the answer is complete: the rest would be thrown away
        except (EngineGone, DeadlinePassed) as exc:
            return parsed, _failure(exc, call.model, self.settings)
        parsed.merge(parser.finish())
        return parsed, None

    # ------------------------------------------------------------ streaming

    async def _sse(
        self,
        stream: RequestStream,
        parser: OutputParser,
        call: _Call,
        include_usage: bool,
        end: Callable[[], None],
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
            async for output in stream:
                self._track(call, output)
                parsed = parser.feed(output.text)
                if output.finish is not None:
                    failure = _finish_failure(output, stream, call)
                    if failure is not None:
                        call.status = failure.status
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
        except (EngineGone, DeadlinePassed) as exc:
            failure = _failure(exc, call.model, self.settings)
            call.status = failure.status
            yield failure.sse().decode()
            yield "data: [DONE]\n\n"
        except Exception:
            # A bug of ours, not the client's leaving: say so to both.
            log.exception("stream of request %s failed", call.request_id)
            call.status = 500
            failure = errors.APIError(
                500, "Internal server error", type="server_error", code="internal_error"
            )
            yield failure.sse().decode()
            yield "data: [DONE]\n\n"
        finally:
            end()

    # ------------------------------------------------------------ bookkeeping

    def _track(self, call: _Call, output: Output) -> None:
        if call.first_token_at is None and output.tokens > 0:
            call.first_token_at = time.perf_counter()
        call.completion_tokens = output.tokens
        if output.finish is not None:
            call.finish_reason = output.finish

    def _end(
        self,
        call: _Call,
        lease: Lease | None,
        stream: RequestStream | None,
        timer: asyncio.TimerHandle | None,
        *,
        status: int | None = None,
    ) -> None:
        """The one way a request ends: engine request, deadline, lease, metrics, log line."""
        if call.ended:
            return
        call.ended = True
        if status is not None:
            call.status = status
        if timer is not None:
            timer.cancel()
        if stream is not None and not stream.done:
            stream.cancel()
            if call.status == 200:
                call.status = 499
        if lease is not None:
            lease.release(completed=call.status == 200)
        self._log(call)

    def _log(self, call: _Call) -> None:
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


def _finish_failure(output: Output, stream: RequestStream, call: _Call) -> errors.APIError | None:
    """The error a finished engine output stands for, if it is not a normal finish."""
    if output.finish == "error":
        return errors.engine_error(f"Generation failed: {output.error}")
    if output.finish == "cancelled" and not stream.cancelled:
        # Not asked for by this request: the model was stopped under it, at shutdown.
        return errors.unavailable(
            f"Model '{call.model}' stopped while answering (the server is shutting down)",
            code="shutting_down",
            retry_after=5,
        )
    return None


def _failure(exc: Exception, model: str, settings: Settings | None = None) -> errors.APIError:
    if isinstance(exc, DeadlinePassed) and settings is not None:
        return errors.timed_out(settings.request_timeout_seconds)
    return errors.unavailable(f"{exc}; it is restarting", code="engine_restarting", retry_after=5)


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
    body: ChatCompletionRequest,
    max_new_tokens: int,
    grammar: str | None,
    shortest_answer: str | None,
) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        shortest_answer=shortest_answer,
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

"""What chat and legacy completions share: one engine stream, streamed as SSE or answered whole.

An endpoint says how its request becomes a :class:`Generate` (and refuses what it cannot
serve), and gives each choice of a request an :class:`Answer`: the view that turns the
engine's outputs into its wire shape (chat deltas, completion texts), both streamed chunk by
chunk and whole. Streaming and non-streaming feed the same answers, so both say the same for
the same text. :class:`Choices` holds a request's answers (``n`` of them) and numbers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, ClassVar, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Message, Send

from .. import errors
from ..engine.client import EngineGone, RequestStream
from ..engine.messages import Generate, Output, SamplingParams
from ..model_manager import LoadedModel
from ..protocol import ChatCompletionRequest, new_id
from ..protocol_surface import CompletionRequest
from .common import DeadlinePassed, Record, Service, disconnected, failure

log = logging.getLogger("ov_llm_server.requests")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"

GenerationRequest = ChatCompletionRequest | CompletionRequest


class Answer(Protocol):
    """One response being shaped from the engine's outputs."""

    chunk_object: ClassVar[str]

    @property
    def done(self) -> bool:
        """The answer is complete: the engine may stop generating."""

    def opening(self) -> list[dict[str, Any]]:
        """Choices streamed before any output."""

    def feed(self, output: Output, last: bool) -> list[dict[str, Any]]:
        """Takes one output (``last``: the finished one); returns the choices to stream."""

    def finish_reason(self, engine_finish: str) -> str: ...

    def closing(self, finish: str) -> dict[str, Any]:
        """The streamed choice that carries ``finish_reason``."""

    def body(self, record: Record, finish: str) -> dict[str, Any]:
        """The whole, non-streamed response (with this answer as its only choice)."""


class Choices:
    """The answers of one request, one per choice: each engine output goes to its choice's,
    and what they say is numbered with the choice's ``index``. A choice's closing chunk goes
    out as soon as its last output came."""

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = answers
        self._finishes: list[str | None] = [None] * len(answers)
        self.chunk_object = answers[0].chunk_object

    @property
    def done(self) -> bool:
        return all(answer.done for answer in self._answers)

    def opening(self) -> list[dict[str, Any]]:
        return [
            _numbered(choice, index)
            for index, answer in enumerate(self._answers)
            for choice in answer.opening()
        ]

    def feed(self, output: Output) -> list[dict[str, Any]]:
        """The chunks of one engine output. A "cancelled" finish (the engine stopped what
        was left of an answer already complete) closes every choice still open."""
        if output.finish == "cancelled":
            indexes = [i for i, finish in enumerate(self._finishes) if finish is None]
        else:
            indexes = [output.index]
        out: list[dict[str, Any]] = []
        for index in indexes:
            answer = self._answers[index]
            last = output.finish is not None
            out += [_numbered(choice, index) for choice in answer.feed(output, last)]
            if last:
                finish = answer.finish_reason(output.finish or "stop")
                self._finishes[index] = finish
                out.append(_numbered(answer.closing(finish), index))
        return out

    @property
    def finish_reason(self) -> str:
        """What the log line says: each choice's finish reason."""
        return ",".join(finish or "error" for finish in self._finishes)

    def body(self, record: Record) -> dict[str, Any]:
        bodies = [
            answer.body(record, finish or "error")
            for answer, finish in zip(self._answers, self._finishes, strict=True)
        ]
        whole = bodies[0]
        whole["choices"] = [
            _numbered(body["choices"][0], index) for index, body in enumerate(bodies)
        ]
        return whole


def _numbered(choice: dict[str, Any], index: int) -> dict[str, Any]:
    choice["index"] = index
    return choice


# What an endpoint makes of a request for a loaded model: its engine message (from the
# request id), and the answer to shape once the engine accepted it.
GenerationWork = tuple[Callable[[int], Generate], Callable[[Output], Answer]]


class GenerationService(Service):
    kind = "llm"
    id_prefix: ClassVar[str] = "chatcmpl"
    # Which request field an engine refusal (by its code) is about.
    refusal_params: ClassVar[dict[str, str]] = {"max_tokens_too_small": "max_tokens"}
    prompt_param: ClassVar[str]

    async def create(self, body: GenerationRequest, request: Request) -> Response:
        record = self.open(request, body.model, stream=body.stream)
        record.completion_id = new_id(self.id_prefix)
        deadline = self.deadline()
        lease = self.admit(record, lambda: self.check(body))

        async def submit(model: LoadedModel) -> tuple[RequestStream, Choices]:
            return await self._submit(body, model, record)

        ready = await self.until_ready(
            request, record, lease, deadline, submit, discard=lambda ready: ready[0].cancel()
        )
        if ready is None:
            return Response(status_code=499)
        stream, answer = ready
        timer = asyncio.get_running_loop().call_at(deadline, stream.abort, DeadlinePassed())
        # The queue slot is the engine's: a client slow to read what is already made holds
        # a connection, not the model.
        stream.when_finished(lambda: lease.release(completed=record.status == 200))

        def end() -> None:
            self.end(record, lease, stream, timer)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def stalled() -> None:
                log.warning(
                    "request %s: the client took nothing for %.0fs (or past the deadline): "
                    "stream abandoned",
                    record.request_id,
                    self.settings.send_timeout_seconds,
                )
                record.status = 499

            return PacedStream(
                self._sse(stream, answer, record, include_usage, end),
                send_timeout=self.settings.send_timeout_seconds,
                deadline=deadline,
                on_stall=stalled,
                media_type="text/event-stream",
                headers=SSE_HEADERS,
                # Runs even when the client left before the stream started.
                background=BackgroundTask(end),
            )
        try:
            return await self._complete(stream, answer, record, request)
        finally:
            end()

    # ------------------------------------------------------------ what an endpoint says

    def check(self, body: Any) -> None:
        """Refusals that need no model (400s), before admission."""
        if body.n > self.settings.max_n:
            raise errors.bad_request(
                f"n {body.n} exceeds this server's limit of {self.settings.max_n} choices "
                "a request",
                param="n",
            )
        requested = body.max_tokens
        if isinstance(body, ChatCompletionRequest):
            requested = body.requested_max_tokens()
        if requested is not None and requested > self.settings.max_tokens_limit:
            raise errors.bad_request(
                f"max_tokens {requested} exceeds this server's limit of "
                f"{self.settings.max_tokens_limit}",
                param="max_tokens",
            )
        limit = self.settings.default_max_tokens if requested is None else requested
        if body.min_tokens is not None and body.min_tokens > limit:
            raise errors.bad_request(
                f"min_tokens {body.min_tokens} is above max_tokens ({limit})",
                param="min_tokens",
            )

    def work(self, body: Any, model: LoadedModel) -> GenerationWork:
        raise NotImplementedError

    def compiles(self, body: Any) -> bool:
        """Whether :meth:`work` may compile a client's schema (then it runs in a thread)."""
        return False

    # ------------------------------------------------------------ request → engine

    async def _submit(
        self, body: GenerationRequest, model: LoadedModel, record: Record
    ) -> tuple[RequestStream, Choices]:
        # Every refusal of the request comes before the engine sees anything. In a thread when
        # there is a client's schema to compile: that may take up to its deadline (plan.py),
        # and the loop serves every other request meanwhile. Otherwise here: a thread's hop
        # would add to every request's time to first token.
        if self.compiles(body):
            build, make_answer = await asyncio.to_thread(self.work, body, model)
        else:
            build, make_answer = self.work(body, model)
        try:
            stream = model.engine.generate(build)
        except EngineGone as exc:
            raise failure(exc, model.name) from exc
        try:
            accepted = await stream.accepted()
        except EngineGone as exc:
            raise failure(exc, model.name) from exc
        except BaseException:
            # The client left or the deadline passed before the engine took it: without
            # this, the engine would generate for nobody, outside every queue limit.
            stream.cancel()
            raise
        if accepted.finish is not None:  # refused: the template, the budget, GenAI itself
            if accepted.code is not None:
                param = self.refusal_params.get(accepted.code, self.prompt_param)
                raise errors.bad_request(str(accepted.error), param=param, code=accepted.code)
            raise errors.engine_error(f"Generation failed: {accepted.error}")
        record.prompt_tokens = accepted.prompt_tokens or 0
        return stream, Choices([make_answer(accepted) for _ in range(body.n)])

    # ------------------------------------------------------------ engine → answer

    async def _follow(
        self, stream: RequestStream, answer: Choices, record: Record
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The answer's choices as the engine's outputs come; an APIError when it fails."""
        try:
            async for output in stream:
                # Once the answer is complete, what the engine made before the cancel reached
                # it is thrown away: usage counts the tokens up to the end of the answer.
                if not answer.done:
                    self._track(record, output)
                if output.finish is not None and (
                    problem := _finish_failure(output, stream, record)
                ):
                    raise problem
                yield answer.feed(output)
                if not stream.done and answer.done:
                    stream.cancel()  # the answer is complete: the rest would be thrown away
        except (EngineGone, DeadlinePassed) as exc:
            raise failure(exc, record.model, self.settings) from exc

    def _track(self, record: Record, output: Output) -> None:
        if record.first_token_at is None and output.tokens > 0:
            record.first_token_at = time.perf_counter()
        record.completion_tokens = output.tokens
        if output.prompt_tokens is not None:  # a vision model's last output: with image tokens
            record.prompt_tokens = output.prompt_tokens
        if output.finish is not None:
            record.finish_reason = output.finish

    async def _complete(
        self, stream: RequestStream, answer: Choices, record: Record, request: Request
    ) -> Response:
        collector = asyncio.ensure_future(self._drain(stream, answer, record))
        watcher = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not collector.done():
            stream.cancel()
            await collector
            record.status = 499
            return Response(status_code=499)
        problem = collector.result()
        if problem is not None:
            record.status = problem.status
            raise problem
        record.finish_reason = answer.finish_reason
        return JSONResponse(answer.body(record))

    async def _drain(
        self, stream: RequestStream, answer: Choices, record: Record
    ) -> errors.APIError | None:
        try:
            async for _ in self._follow(stream, answer, record):
                pass
        except errors.APIError as problem:
            return problem
        return None

    async def _sse(
        self,
        stream: RequestStream,
        answer: Choices,
        record: Record,
        include_usage: bool,
        end: Callable[[], None],
    ) -> AsyncGenerator[str]:
        head = (
            f'{{"id":"{record.completion_id}","object":"{answer.chunk_object}",'
            f'"created":{record.created},"model":{json.dumps(record.model)},"choices":'
        )

        def chunk(choice: dict[str, Any]) -> str:
            return f"data: {head}[{json.dumps(choice)}]}}\n\n"

        try:
            for choice in answer.opening():
                yield chunk(choice)
            async for choices in self._follow(stream, answer, record):
                for choice in choices:
                    yield chunk(choice)
            record.finish_reason = answer.finish_reason
            if include_usage:
                usage = record.usage().model_dump_json()
                yield f'data: {head}[],"usage":{usage}}}\n\n'
            yield DONE
        except errors.APIError as problem:
            record.status = problem.status
            yield problem.sse().decode()
            yield DONE
        except Exception:
            # A bug of ours, not the client's leaving: say so to both.
            log.exception("stream of request %s failed", record.request_id)
            record.status = 500
            internal = errors.APIError(
                500, "Internal server error", type="server_error", code="internal_error"
            )
            yield internal.sse().decode()
            yield DONE
        finally:
            end()


class _Stalled(Exception):
    """The client took nothing within the send timeout."""


class AbandonedStreams(logging.Filter):
    """Uvicorn's error line for a response left unfinished, dropped for each stream this
    server gave up on (its warning, with the request id, says why); any other stays.

    Uvicorn logs "ASGI callable returned without completing response." on ``uvicorn.error``
    as soon as the app returns from such a response, so each abandoned stream counts one.
    """

    MESSAGE = "ASGI callable returned without completing response."

    def __init__(self) -> None:
        super().__init__()
        self.expected = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.expected and record.getMessage() == self.MESSAGE:
            self.expected -= 1
            return False
        return True


# Installed on uvicorn's logger by the server (cli.configure_logging).
abandoned_streams = AbandonedStreams()


class PacedStream(StreamingResponse):
    """A stream that gives up on a client that stops reading.

    Without a bound, a send waits for the socket to drain for ever: the response, its
    buffered outputs and its connection would stay as long as the client keeps the
    connection open. Past ``send_timeout`` without progress (or past the request's
    ``deadline``) the stream ends unfinished: ``on_stall`` runs, the body is closed, and
    the server closes the connection, as it does for any response left unfinished.
    """

    def __init__(
        self,
        content: AsyncGenerator[str],
        *,
        send_timeout: float,
        deadline: float,
        on_stall: Callable[[], None],
        media_type: str,
        headers: dict[str, str],
        background: BackgroundTask,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers, background=background)
        self._content = content
        self._send_timeout = send_timeout
        self._deadline = deadline
        self._on_stall = on_stall

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()

        async def paced(message: Message) -> None:
            give_up = min(loop.time() + self._send_timeout, self._deadline)
            try:
                async with asyncio.timeout_at(give_up):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await super().stream_response(paced)
        except _Stalled:
            abandoned_streams.expected += 1
            self._on_stall()
        finally:
            await self._content.aclose()


def sampling(
    body: GenerationRequest,
    max_new_tokens: int,
    stop: list[str],
    *,
    grammar: str | None = None,
    shortest_answer: str | None = None,
    logprobs: bool = False,
    echo: bool = False,
) -> SamplingParams:
    """The engine's sampling parameters: the fields chat and completions share."""
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
        stop=tuple(stop),
        grammar=grammar,
        min_new_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        echo=echo,
        n=body.n,
    )


def _finish_failure(
    output: Output, stream: RequestStream, record: Record
) -> errors.APIError | None:
    """The error a finished engine output stands for, if it is not a normal finish."""
    if output.finish == "error":
        return errors.engine_error(f"Generation failed: {output.error}")
    if output.finish == "cancelled" and not stream.cancelled:
        return errors.shutting_down(record.model)
    return None

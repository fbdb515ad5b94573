"""What every endpoint does with a request besides its own work (HTTP process).

A request takes its model lease synchronously (admission: a model of another kind than the
endpoint serves is refused first), then, within its deadline, waits for the model and hands
it the work; a client that leaves meanwhile stops the wait. Every way a request can end
(answered, refused, client gone, deadline, engine died, server error) goes through
:meth:`Service.end`: the lease, the metrics and one log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from fastapi import Request
from fastapi.responses import Response

from .. import errors
from ..engine.client import EngineGone, PendingReply, RequestStream
from ..engine.messages import EngineKind, Refused, Reply, Work
from ..metrics import Metrics
from ..model_manager import Lease, LoadedModel, ModelManager
from ..protocol import Usage, new_id, now
from ..settings import Settings
from ..textutil import log_value

log = logging.getLogger("ov_llm_server.requests")

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The request's deadline passed while the engine worked on it."""


@dataclass
class Record:
    """What one request needs from start to its log line."""

    request_id: str
    model: str
    client: str
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    completion_id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    finish_reason: str = "error"
    status: int = 200
    label: str = "unknown"  # the model label of the metrics
    # Encoders: the request's inputs, and the inputs of the model call that served it.
    inputs: int | None = None
    batch: int | None = None
    ended: bool = False

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


class Service:
    """One endpoint. ``kind``: the engines it serves (None: any); ``endpoint`` names it in
    refusals; ``log_name`` starts its log lines."""

    kind: ClassVar[EngineKind | None] = None
    endpoint: ClassVar[str]
    log_name: ClassVar[str]

    def __init__(self, settings: Settings, models: ModelManager, metrics: Metrics) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics

    # ------------------------------------------------------------ start

    def open(self, request: Request, model: str, *, stream: bool = False) -> Record:
        client = request.client.host if request.client else "-"
        record = Record(request.state.request_id, model, client, stream)
        record.label = self.models.metric_label(model)
        return record

    def admit(self, record: Record, check: Callable[[], None] | None = None) -> Lease:
        """The request's own checks, then its queue slot; a refusal ends the record."""
        try:
            if check is not None:
                check()
            return self.models.admit(record.model, self.kind, self.endpoint)
        except errors.APIError as exc:
            self.end(record, None, None, None, status=exc.status)
            raise

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.request_timeout_seconds

    async def until_ready(
        self,
        request: Request,
        record: Record,
        lease: Lease,
        deadline: float,
        submit: Callable[[LoadedModel], Awaitable[T]],
        *,
        discard: Callable[[T], None] | None = None,
    ) -> T | None:
        """The model, then ``submit(model)``, within the deadline; stopped when the client
        leaves (None, the record ended with 499). A failure ends the record and is raised.
        ``discard`` undoes a submission that succeeded as this request was cancelled."""
        # A client may leave while its request waits for a model load or for room: stop
        # waiting for it then, not when the engine would have started on it.
        work = asyncio.ensure_future(self._within(lease, record, deadline, submit))
        watcher = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request itself was cancelled (shutdown)
            work.cancel()
            if discard is not None and work.done() and not work.cancelled():
                if work.exception() is None:
                    discard(work.result())
            self.end(record, lease, None, None, status=499)
            raise
        finally:
            watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        if work.cancelled():
            self.end(record, lease, None, None, status=499)
            return None
        try:
            return work.result()
        except errors.APIError as exc:
            self.end(record, lease, None, None, status=exc.status)
            raise
        except BaseException:
            self.end(record, lease, None, None, status=500)
            raise

    async def _within(
        self,
        lease: Lease,
        record: Record,
        deadline: float,
        submit: Callable[[LoadedModel], Awaitable[T]],
    ) -> T:
        waiting_for_model = True
        try:
            async with asyncio.timeout_at(deadline):
                model = await lease.model()
                waiting_for_model = False
                return await submit(model)
        except TimeoutError:
            if waiting_for_model:
                raise errors.unavailable(
                    f"Model '{record.model}' was not ready within the request's deadline "
                    "(loading, or every loaded model busy)",
                    code="models_busy",
                    retry_after=5,
                ) from None
            raise errors.timed_out(self.settings.request_timeout_seconds) from None

    async def create(self, body: Any, request: Request) -> Response:
        """Serves one request of this endpoint."""
        raise NotImplementedError

    # ------------------------------------------------------------ one request, one reply

    async def ask(
        self,
        request: Request,
        model: str | None,
        build: Callable[[LoadedModel], Callable[[int], Work]],
        answer: Callable[[Record, LoadedModel, Reply], Response],
        *,
        inputs: int | None = None,
        check: Callable[[], None] | None = None,
    ) -> Response:
        """An encoder's or tokenizer's request: admitted for ``model`` (after ``check``, the
        request's own checks), ``build`` makes its message for the loaded model (or refuses
        it), the engine replies once, ``answer`` shapes the reply. ``inputs``: an encoder
        request's count, for its log line."""
        record = self.open(request, model or "-")
        record.inputs = inputs
        lease = self.admit(record, check if model else _model_required)

        async def submit(loaded: LoadedModel) -> tuple[LoadedModel, Reply]:
            make = build(loaded)
            pending: PendingReply | None = None
            try:
                pending = loaded.engine.ask(make)
                return loaded, await pending.reply()
            except EngineGone as exc:
                raise failure(exc, loaded.name) from exc
            finally:
                if pending is not None and not pending.done:
                    pending.cancel()  # the client left, or the deadline passed

        result = await self.until_ready(request, record, lease, self.deadline(), submit)
        if result is None:
            return Response(status_code=499)
        loaded, reply = result
        try:
            if isinstance(reply, Refused):
                raise refusal(reply, record.model)
            record.finish_reason = "stop"
            return answer(record, loaded, reply)
        except errors.APIError as exc:
            record.status = exc.status
            raise
        except BaseException:
            record.status = 500
            raise
        finally:
            self.end(record, lease, None, None)

    # ------------------------------------------------------------ the end

    def end(
        self,
        record: Record,
        lease: Lease | None,
        stream: RequestStream | None,
        timer: asyncio.TimerHandle | None,
        *,
        status: int | None = None,
    ) -> None:
        """The one way a request ends: engine request, deadline, lease, metrics, log line."""
        if record.ended:
            return
        record.ended = True
        if status is not None:
            record.status = status
        if timer is not None:
            timer.cancel()
        if stream is not None and not stream.done:
            stream.cancel()
            if record.status == 200:
                record.status = 499
        if lease is not None:
            lease.release(completed=record.status == 200)
        self._log(record)

    def _log(self, record: Record) -> None:
        elapsed = time.perf_counter() - record.started
        m = self.metrics
        label = record.label
        m.requests.labels(label, str(record.status)).inc()
        if record.status == 200:
            m.latency.labels(label).observe(elapsed)
            m.prompt_tokens.labels(label).inc(record.prompt_tokens)
            m.completion_tokens.labels(label).inc(record.completion_tokens)
            if record.batch is not None:
                m.encoder_batch.labels(label).observe(record.batch)
            if record.first_token_at is not None:
                m.ttft.labels(label).observe(record.first_token_at - record.started)
                if record.completion_tokens > 1:
                    per_token = (time.perf_counter() - record.first_token_at) / (
                        record.completion_tokens - 1
                    )
                    m.tpot.labels(label).observe(per_token)
        elif record.status == 499:
            m.cancelled.labels(label).inc()
        extra = ""
        if record.inputs is not None:
            extra = f" inputs={record.inputs} batch={record.batch if record.batch else '-'}"
        log.info(
            "%s request_id=%s model=%s client=%s latency_ms=%.1f status=%d "
            "prompt_tokens=%d completion_tokens=%d finish=%s stream=%s%s",
            self.log_name,
            record.request_id,
            log_value(record.model),
            record.client,
            elapsed * 1000,
            record.status,
            record.prompt_tokens,
            record.completion_tokens,
            record.finish_reason,
            str(record.stream).lower(),
            extra,
        )


def _model_required() -> None:
    raise errors.bad_request(
        "'model' is required: this server serves several models, each with its own tokenizer",
        param="model",
    )


def refusal(reply: Refused, model: str) -> errors.APIError:
    """The API error of a request the engine refused or failed."""
    if reply.code == "cancelled":
        return errors.shutting_down(model)
    if reply.code is not None:
        return errors.bad_request(reply.error, param=reply.param, code=reply.code)
    return errors.engine_error(f"The model failed: {reply.error}")


def failure(exc: Exception, model: str, settings: Settings | None = None) -> errors.APIError:
    """The API error of an engine that died, or of a deadline that passed, under a request."""
    if isinstance(exc, DeadlinePassed) and settings is not None:
        return errors.timed_out(settings.request_timeout_seconds)
    return errors.unavailable(f"{exc}; it is restarting", code="engine_restarting", retry_after=5)


async def disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

"""One engine process as the HTTP process sees it: start it, talk to it, notice its end.

Runs in the HTTP process. The process is spawned with ``asyncio`` (so its exit is seen the
moment it happens, whatever killed it), and reached over two zmq ipc sockets in a private
runtime folder: a plain PUSH socket for requests (a send never blocks the event loop) and
an asyncio PULL socket whose reader task hands each request's outputs to its
:class:`RequestStream` (a generation) or its reply to its :class:`PendingReply`
(embeddings, rerank, tokenize). A process that sends nothing (no step, no heartbeat) for
``stall_seconds`` is killed: it is stuck, and a fresh one replaces it. Its silence is measured
on the engine's own clock (the time each message says it was sent; ``time.monotonic`` is one
clock for every process), and a process whose messages wait unread is not silent: a stalled
event loop here must not kill a healthy engine.

The engine process gets this process's environment without its secrets (the API key).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from ..settings import child_environ
from .messages import (
    POISON_REQUEST,
    Cancel,
    EngineConfig,
    EngineKind,
    EngineSpec,
    Fatal,
    Generate,
    Heartbeat,
    LoadFailed,
    Output,
    Ready,
    Refused,
    Reply,
    Shutdown,
    Step,
    ToEngine,
    Work,
    encoder,
    from_engine_decoder,
)
from .quarantine import Quarantine, fingerprint, param_of

log = logging.getLogger(__name__)

_request_ids = itertools.count(1)
_process_ids = itertools.count(1)


class EngineGone(Exception):
    """The engine process ended while a request needed it."""


class LoadError(Exception):
    """The engine process could not load its model."""


class _Pending:
    """One request as the HTTP side waits for it: what the engine sends for it, in order.

    Waiting raises :class:`EngineGone` if the engine dies first, or the exception given to
    :meth:`abort`.
    """

    def __init__(self, engine: EngineProcess, rid: int, fingerprint: bytes) -> None:
        self.engine = engine
        self.rid = rid
        self.fingerprint = fingerprint
        self._queue: asyncio.Queue[Output | Reply | BaseException] = asyncio.Queue()
        self.done = False
        self.cancelled = False  # asked by this side: its "cancelled" finish is no failure
        # The engine's work for it is over (its last item arrived), read or not.
        self.finished = False
        self._on_finish: Callable[[], None] | None = None

    def _ends(self, item: Output | Reply | BaseException) -> bool:
        """Whether ``item``, arriving now, is the engine's last word on the request."""
        return not isinstance(item, Output) or item.finish is not None

    def _put(self, item: Output | Reply | BaseException) -> None:
        self._queue.put_nowait(item)
        last = self._ends(item)
        if last and not self.finished:
            self.finished = True
            if self._on_finish is not None:
                self._on_finish()

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the engine's work for it is over (now, if it is), however
        slowly its outputs are read."""
        if self.finished:
            callback()
        else:
            self._on_finish = callback

    async def _next(self) -> Output | Reply:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self.done = True
            raise item
        return item

    def cancel(self) -> None:
        """Stop working on it (the client left, or the answer is complete); safe to repeat."""
        if not self.done and not self.cancelled:
            self.cancelled = True
            self.engine.cancel(self.rid)

    def abort(self, exc: BaseException) -> None:
        """End the request now with ``exc`` (a deadline passed); the engine stops it too."""
        if not self.done:
            self.engine.cancel(self.rid)
            self.engine.forget(self.rid)
            self._put(exc)


class RequestStream(_Pending):
    """A generation: its outputs, ending once each of its ``choices`` has finished (or with
    a "cancelled" or "error" finish, which ends them all)."""

    def __init__(self, engine: EngineProcess, rid: int, fingerprint: bytes, choices: int) -> None:
        super().__init__(engine, rid, fingerprint)
        self._arriving = choices  # choices whose last output has not arrived
        self._reading = choices  # choices whose last output has not been read

    def _ends(self, item: Output | Reply | BaseException) -> bool:
        if not isinstance(item, Output):
            return True
        if item.finish is None:
            return False
        self._arriving -= 1
        return self._arriving <= 0 or item.finish in ("cancelled", "error")

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Output:
        if self.done:
            raise StopAsyncIteration
        item = await self._next()
        assert isinstance(item, Output)
        if item.finish is not None:
            self._reading -= 1
            if self._reading <= 0 or item.finish in ("cancelled", "error"):
                self.done = True
        return item

    async def accepted(self) -> Output:
        """The engine's acknowledgement: the first output, with ``prompt_tokens`` set, or a
        finished one saying why the request was refused."""
        return await self.__anext__()


class PendingReply(_Pending):
    """A request answered at once, in one reply (an encoder's, a tokenizer's)."""

    async def reply(self) -> Reply:
        item = await self._next()
        assert not isinstance(item, Output)
        self.done = True
        return item

    async def progress(self) -> Output | Reply:
        """The next item of a request that reports progress before its reply (a streamed
        transcription's text, window by window): outputs, then the reply."""
        item = await self._next()
        if not isinstance(item, Output):
            self.done = True
        return item

    def cancel(self) -> None:
        # The engine drops the request and sends nothing back: nothing is left to wait for.
        super().cancel()
        self.engine.forget(self.rid)


class EngineProcess:
    """One engine process. Create it, ``await start()``, then submit requests."""

    def __init__(
        self,
        name: str,
        path: Path,
        config: EngineConfig,
        runtime_dir: Path,
        *,
        kind: EngineKind = "llm",
        on_exit: Callable[[EngineProcess], None],
        on_step: Callable[[float], None] | None = None,
        on_drafts: Callable[[int, int], None] | None = None,
        heartbeat_seconds: float = 0.5,
        stall_seconds: float = 30.0,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.config = config
        self.kind: EngineKind = kind
        self.device = config.device
        self._on_exit = on_exit
        self._on_step = on_step
        self._on_drafts = on_drafts
        self._heartbeat = heartbeat_seconds
        self._stall = stall_seconds
        self._quarantine = quarantine
        self._runtime_dir = runtime_dir
        number = next(_process_ids)
        self._inbox_addr = f"ipc://{runtime_dir}/e{number}.in"
        self._outbox_addr = f"ipc://{runtime_dir}/e{number}.out"
        self._streams: dict[int, _Pending] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[Ready] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._push: zmq.Socket[bytes] | None = None
        self._pull: zmq.asyncio.Socket | None = None
        self.load_seconds = 0.0
        self.chat_template = ""
        self.context_length: int | None = None
        self.dimension: int | None = None
        self.speculative: str | None = None
        self.warnings: tuple[str, ...] = ()
        self.precision: str | None = None
        self.last_sent = time.monotonic()  # the engine's clock: when it last said anything
        self.fatal_error: str | None = None
        self.exit_description: str | None = None
        self.stopping = False
        # The requests it died on: those of its failed pipeline call (``blamed``, when it
        # said which), else those in flight.
        self.blamed: list[bytes] = []
        self.lost: list[bytes] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def in_flight(self) -> int:
        """Requests this side still waits on (shown on /metrics: none may be left behind)."""
        return len(self._streams)

    async def start(self, timeout: float) -> Ready:
        """Spawns the process and waits until its model is loaded. Raises LoadError when the
        model does not load; any other exception when the process cannot even start (its
        sockets, the spawn), with nothing left behind."""
        try:
            await self._spawn()
        except BaseException:
            self._close()
            raise
        assert self._ready is not None
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.kill()
            raise LoadError(f"loading took longer than {timeout:.0f}s") from None
        except BaseException:
            self.kill()
            raise
        self.load_seconds = ready.load_seconds
        self.chat_template = ready.chat_template
        self.context_length = ready.context_length
        self.dimension = ready.dimension
        self.speculative = ready.speculative
        self.warnings = ready.warnings
        self.precision = ready.precision
        self.last_sent = time.monotonic()
        self._tasks.append(asyncio.create_task(self._watch(), name=f"engine-watch-{self.name}"))
        return ready

    async def _spawn(self) -> None:
        # systemd-tmpfiles may have aged the folder away (under /tmp) since the last start.
        self._runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._push = zmq.Context.instance().socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.bind(self._inbox_addr)
        self._pull = zmq.asyncio.Context.instance().socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._outbox_addr)
        spec = EngineSpec(
            name=self.name,
            path=str(self.path),
            config=self.config,
            kind=self.kind,
            inbox=self._inbox_addr,
            outbox=self._outbox_addr,
            heartbeat_seconds=self._heartbeat,
            parent_pid=os.getpid(),
        )
        self._ready = asyncio.get_running_loop().create_future()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ov_llm_server.engine.core",
            msgspec.json.encode(spec).decode(),
            env=child_environ(),
        )
        self._tasks = [
            asyncio.create_task(self._read(), name=f"engine-read-{self.name}"),
            asyncio.create_task(self._wait_exit(), name=f"engine-wait-{self.name}"),
        ]

    def _close(self) -> None:
        for socket in (self._pull, self._push):
            if socket is not None:
                socket.close()

    async def stop(self, timeout: float = 10.0) -> None:
        """Asks the process to end (cancelling what runs), then kills it if it does not."""
        self.stopping = True
        if self.alive:
            self._send(Shutdown())
            try:
                await asyncio.wait_for(asyncio.shield(self._exited()), timeout)
            except TimeoutError:
                log.warning(
                    "engine %s (pid %s) did not stop in %.0fs: killed", self.name, self.pid, timeout
                )
                self.kill()
        await self._exited()

    def kill(self) -> None:
        if self.alive and self._process is not None:
            self._process.send_signal(signal.SIGKILL)

    async def _exited(self) -> None:
        if self._process is not None:
            await self._process.wait()
        for task in self._tasks:
            if task is not asyncio.current_task():
                await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ requests

    def generate(self, build: Callable[[int], Generate]) -> RequestStream:
        """Starts a generation; ``build`` makes its message from the request id."""
        message = build(self._new_rid())
        stream = RequestStream(self, message.rid, fingerprint(message), message.params.n)
        if refusal := self._refusal(stream):
            stream._put(Output(stream.rid, "", 0, "error", refusal, code=POISON_REQUEST))
            return stream
        self._submit(stream, message)
        return stream

    def ask(self, build: Callable[[int], Work]) -> PendingReply:
        """Sends a one-shot request; ``build`` makes its message from the request id."""
        message = build(self._new_rid())
        pending = PendingReply(self, message.rid, fingerprint(message))
        if refusal := self._refusal(pending):
            pending._put(Refused(pending.rid, refusal, POISON_REQUEST, param_of(message)))
            return pending
        self._submit(pending, message)
        return pending

    def _submit(self, pending: _Pending, message: ToEngine) -> None:
        # Encoded first: a message that cannot be encoded raises before anything waits for it
        # (its fingerprint, taken before, encodes it too).
        frame = encoder.encode(message)
        self._streams[pending.rid] = pending
        self._push_frame(frame)

    def _refusal(self, pending: _Pending) -> str | None:
        if self._quarantine is None:
            return None
        refusal = self._quarantine.refusal(pending.fingerprint)
        if refusal is not None:
            log.warning(
                "model %s: request %s refused: it crashed the engine before",
                self.name,
                pending.fingerprint.hex()[:12],
            )
        return refusal

    def _new_rid(self) -> int:
        if not self.alive or self.stopping:
            raise EngineGone(f"the engine of model '{self.name}' is not running")
        return next(_request_ids)

    def cancel(self, rid: int) -> None:
        if rid in self._streams:
            self._send(Cancel(rid))

    def forget(self, rid: int) -> None:
        self._streams.pop(rid, None)

    def _send(self, message: ToEngine) -> None:
        self._push_frame(encoder.encode(message))

    def _push_frame(self, frame: bytes) -> None:
        if self._push is None:
            return
        try:
            self._push.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the queue to a dead or stuck engine is full
            log.warning("engine %s: message not sent: %s", self.name, exc)

    # ------------------------------------------------------------ background tasks

    async def _read(self) -> None:
        assert self._pull is not None
        while True:
            try:
                frame = await self._pull.recv()
            except (asyncio.CancelledError, zmq.ZMQError):
                return
            try:
                self._take(from_engine_decoder.decode(frame))
            except Exception as exc:
                # The process no longer speaks the protocol (or this side has a bug): no
                # answer from it can be trusted, so it is replaced like a crashed one.
                log.exception(
                    "engine %s (pid %s): unreadable message; killing it", self.name, self.pid
                )
                self.fatal_error = f"sent a message the server could not read ({exc})"
                self.kill()
                return

    def _take(self, message: Ready | LoadFailed | Step | Heartbeat | Fatal) -> None:
        assert self._ready is not None
        if isinstance(message, Step):
            self.last_sent = message.sent_at
            if self._on_step is not None:
                self._on_step(time.monotonic() - message.sent_at)
            if self._on_drafts is not None and message.draft_tokens:
                self._on_drafts(message.draft_tokens, message.accepted_tokens)
            for output in message.outputs:
                stream = self._streams.get(output.rid)
                if stream is not None:
                    stream._put(output)
                    if stream.finished:
                        del self._streams[output.rid]
            for reply in message.replies:
                pending = self._streams.pop(reply.rid, None)
                if pending is not None:
                    pending._put(reply)
        elif isinstance(message, Heartbeat):
            self.last_sent = message.sent_at
        elif isinstance(message, Ready):
            if not self._ready.done():
                self._ready.set_result(message)
        elif isinstance(message, LoadFailed):
            if not self._ready.done():
                self._ready.set_exception(LoadError(message.error))
        else:
            self.fatal_error = message.error
            self.blamed = [s.fingerprint for rid in message.rids if (s := self._streams.get(rid))]

    async def _wait_exit(self) -> None:
        assert self._process is not None and self._ready is not None
        code = await self._process.wait()
        # The last words (a final Step, a Fatal) may still be in the socket: give the reader
        # a moment to hand them out, so that requests get the engine's own error.
        await asyncio.sleep(0.05)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._close()
        self.exit_description = describe_exit(code, self.fatal_error)
        if not self._ready.done():
            self._ready.set_exception(LoadError(f"the engine process {self.exit_description}"))
        gone = EngineGone(f"the engine of model '{self.name}' {self.exit_description}")
        streams, self._streams = self._streams, {}
        self.lost = [stream.fingerprint for stream in streams.values()]
        for stream in streams.values():
            stream._put(gone)
        self._on_exit(self)

    async def _watch(self) -> None:
        interval = min(1.0, self._stall / 4)
        while self.alive:
            await asyncio.sleep(interval)
            silent = time.monotonic() - self.last_sent
            if silent <= self._stall or not self.alive or self._unread():
                continue
            log.error(
                "engine %s (pid %s) has not answered for %.1fs: killing it",
                self.name,
                self.pid,
                silent,
            )
            self.fatal_error = f"stopped answering for {silent:.0f}s"
            self.kill()
            return

    def _unread(self) -> bool:
        """Messages from the engine wait for the reader: it spoke, this loop was busy."""
        events = self._pull.get(zmq.EVENTS) if self._pull is not None else 0
        return isinstance(events, int) and bool(events & zmq.POLLIN)


def describe_exit(code: int, fatal_error: str | None = None) -> str:
    """How a process ended, in words: 'was killed by SIGKILL', 'exited with code 4 (...)'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"was killed by {name}"
        return f"{text} ({fatal_error})" if fatal_error else text
    text = f"exited with code {code}"
    return f"{text}: {fatal_error}" if fatal_error else text

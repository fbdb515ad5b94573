"""The engine process: ``python -m ov_llm_server.engine.core '<EngineSpec as JSON>'``.

One process per loaded model, started and watched by the HTTP process's supervisor. It
loads the model with the runner of its kind (``EngineSpec.kind``: a generative model, an
embedder or a reranker) and says :class:`Ready` (or :class:`LoadFailed`), then loops: take
every waiting message, run one pipeline step (a generation step, or one batched encoder
call), send one :class:`Step` with every request's new text and every finished reply.
``/tokenize`` and ``/detokenize`` are answered as they arrive, between steps. When idle it
sends a :class:`Heartbeat` every ``heartbeat_seconds``, so silence means it is stuck.

Exit codes: 0 after :class:`Shutdown`; ``EXIT_LOAD_FAILED`` after :class:`LoadFailed`;
``EXIT_FATAL`` after a failed step (a pipeline whose step raised stays broken, so a fresh
process replaces it). It also dies with its parent (``PR_SET_PDEATHSIG``), and ignores
SIGINT and SIGTERM: a terminal's Ctrl-C or systemd's stop reach the whole process group,
and the HTTP process must be the one to end in-flight requests in order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import logging
import os
import signal
import sys
import time
from pathlib import Path

import zmq

from ...textutil import one_line
from ..messages import (
    Cancel,
    Detokenize,
    EngineSpec,
    Fatal,
    FromEngine,
    Heartbeat,
    LoadFailed,
    Output,
    Ready,
    Refused,
    Reply,
    Shutdown,
    Step,
    Tokenize,
    encoder,
    spec_decoder,
    to_engine_decoder,
)
from . import faults
from .pipelines import compute_precision
from .runner import Result, Runner

log = logging.getLogger("ov_llm_server.engine")

EXIT_LOAD_FAILED = 3
EXIT_FATAL = 4
# Under memory pressure the kernel should kill an engine (which the server restarts)
# before the HTTP process (which would take every model down with it).
OOM_SCORE_ADJ = 500
_PR_SET_PDEATHSIG = 1


def build_runner(spec: EngineSpec) -> Runner:
    """The runner of the model's kind; its imports come only with it."""
    path = Path(spec.path)
    if spec.kind == "embedding":
        from .embed import EmbeddingRunner

        return EmbeddingRunner(path, spec.config)
    if spec.kind == "rerank":
        from .rerank import RerankRunner

        return RerankRunner(path, spec.config)
    if spec.kind == "vlm":
        from .vision import VisionRunner

        return VisionRunner(path, spec.config)
    if spec.kind == "speech":
        from .speech import SpeechRunner

        return SpeechRunner(path, spec.config)
    if spec.kind == "whisper":
        from .transcribe import WhisperRunner

        return WhisperRunner(path, spec.config)
    from .llm import LlmRunner

    return LlmRunner(path, spec.config)


class _Outbox:
    """What one loop iteration sends: the outputs of generations and one-shot replies."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.replies: list[Reply] = []

    def put(self, result: Result | None) -> None:
        if isinstance(result, Output):
            self.outputs.append(result)
        elif result is not None:
            self.replies.append(result)

    def put_all(self, results: list[Result]) -> None:
        for result in results:
            self.put(result)

    def step(self, drafts: tuple[int, int] = (0, 0)) -> Step:
        return Step(self.outputs, time.monotonic(), self.replies, *drafts)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.replies)


class EngineLoop:
    def __init__(
        self,
        runner: Runner,
        inbox: zmq.Socket[bytes],
        outbox: zmq.Socket[bytes],
        spec: EngineSpec,
    ) -> None:
        self.runner = runner
        self.inbox = inbox
        self.outbox = outbox
        self.heartbeat = spec.heartbeat_seconds
        self.device = spec.config.device
        self._last_sent = time.monotonic()

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        while True:
            out = _Outbox()
            wait_ms = 0 if self.runner.busy else int(self.heartbeat * 1000)
            stepping = False
            try:
                if poller.poll(wait_ms) and self._receive(out):
                    self._send(out.step())
                    return 0
                if self.runner.busy:
                    faults.check_device(self.device)
                    stepping = True
                    out.put_all(self.runner.step())
                    stepping = False
                if out:
                    faults.check("send")
                    # Draft counts of steps without output go with the next one that has some.
                    self._send(out.step(self.runner.draft_counts()))
                elif time.monotonic() - self._last_sent >= self.heartbeat:
                    self._send(Heartbeat(time.monotonic()))
            except Exception as exc:
                error = one_line(exc)
                log.exception("engine loop failed; exiting so that a fresh engine replaces it")
                failed = self.runner.fail_all(error)
                # Fatal first: the HTTP side still knows the requests it names.
                self._send(Fatal(error, [r.rid for r in failed] if stepping else []))
                out.put_all(failed)
                self._send(out.step())
                return EXIT_FATAL

    def _receive(self, out: _Outbox) -> bool:
        """Takes every waiting message; True on Shutdown."""
        runner = self.runner
        while True:
            try:
                frame = self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            faults.check("receive")
            message = to_engine_decoder.decode(frame)
            if isinstance(message, Tokenize):
                out.put(runner.vocabulary.tokenize(message))
            elif isinstance(message, Detokenize):
                out.put(runner.vocabulary.detokenize(message))
            elif isinstance(message, Cancel):
                out.put(runner.cancel(message.rid))
            elif isinstance(message, Shutdown):
                out.put_all(runner.cancel_all())
                return True
            elif isinstance(message, runner.accepts):
                out.put(runner.add(message))
            else:  # the HTTP side checks the kind first: this is a bug there
                out.put(
                    Refused(message.rid, f"a {type(message).__name__} request reached this engine")
                )

    def _send(self, message: FromEngine) -> None:
        self.outbox.send(faults.garble(encoder.encode(message)))
        self._last_sent = time.monotonic()


def _set_up_process(spec: EngineSpec) -> None:
    faulthandler.enable()  # a segfault in the driver leaves a Python traceback in the journal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if spec.parent_pid and os.getppid() != spec.parent_pid:
        sys.exit(1)  # the server died before the death signal was armed
    try:
        Path("/proc/self/oom_score_adj").write_text(str(OOM_SCORE_ADJ), encoding="ascii")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = spec_decoder.decode(args[0])
    _set_up_process(spec)
    logging.basicConfig(
        level=os.environ.get("OV_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s engine[{spec.name} pid={os.getpid()}]: %(message)s",
        stream=sys.stderr,
    )
    context = zmq.Context()
    inbox = context.socket(zmq.PULL)
    outbox = context.socket(zmq.PUSH)
    # Last words (Fatal, the final Step) must leave before the process exits.
    outbox.setsockopt(zmq.LINGER, 2000)
    inbox.connect(spec.inbox)
    outbox.connect(spec.outbox)
    faults.hold(faults.LOAD)
    started = time.perf_counter()
    try:
        runner = build_runner(spec)
    except Exception as exc:
        log.error("loading %s on %s failed: %s", spec.path, spec.config.device, one_line(exc))
        outbox.send(encoder.encode(LoadFailed(one_line(exc))))
        outbox.close()
        return EXIT_LOAD_FAILED
    load_seconds = time.perf_counter() - started
    ready = Ready(
        spec.config.device,
        load_seconds,
        runner.chat_template,
        runner.context_length,
        runner.dimension,
        speculative=runner.speculative,
        warnings=tuple(runner.warnings),
        precision=compute_precision(spec.config),
    )
    outbox.send(encoder.encode(ready))
    code = EngineLoop(runner, inbox, outbox, spec).run()
    outbox.close()
    return code

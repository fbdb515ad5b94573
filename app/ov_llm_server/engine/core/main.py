"""The engine process: ``python -m ov_llm_server.engine.core '<EngineSpec as JSON>'``.

One process per loaded model, started and watched by the HTTP process's supervisor. It
loads the model and says :class:`Ready` (or :class:`LoadFailed`), then loops: take every
waiting message, run one pipeline step, send one :class:`Step` with every request's new
text. When idle it sends a :class:`Heartbeat` every ``heartbeat_seconds``, so silence
means it is stuck.

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
    EngineSpec,
    Fatal,
    FromEngine,
    Generate,
    Heartbeat,
    LoadFailed,
    Output,
    Ready,
    Shutdown,
    Step,
    encoder,
    spec_decoder,
    to_engine_decoder,
)
from . import faults
from .llm import LlmRunner

log = logging.getLogger("ov_llm_server.engine")

EXIT_LOAD_FAILED = 3
EXIT_FATAL = 4
# Under memory pressure the kernel should kill an engine (which the server restarts)
# before the HTTP process (which would take every model down with it).
OOM_SCORE_ADJ = 500
_PR_SET_PDEATHSIG = 1


class EngineLoop:
    def __init__(
        self,
        runner: LlmRunner,
        inbox: zmq.Socket[bytes],
        outbox: zmq.Socket[bytes],
        spec: EngineSpec,
    ) -> None:
        self.runner = runner
        self.inbox = inbox
        self.outbox = outbox
        self.heartbeat = spec.heartbeat_seconds
        self._last_sent = time.monotonic()

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        while True:
            outputs: list[Output] = []
            wait_ms = 0 if self.runner.busy else int(self.heartbeat * 1000)
            try:
                if poller.poll(wait_ms) and self._receive(outputs):
                    self._send(Step(outputs, time.monotonic()))
                    return 0
                if self.runner.busy:
                    outputs += self.runner.step()
                if outputs:
                    faults.check("send")
                    # Draft counts of steps without output go with the next one that has some.
                    self._send(Step(outputs, time.monotonic(), *self.runner.draft_counts()))
                elif time.monotonic() - self._last_sent >= self.heartbeat:
                    self._send(Heartbeat(time.monotonic()))
            except Exception as exc:
                error = one_line(exc)
                log.exception("engine loop failed; exiting so that a fresh engine replaces it")
                self._send(Step(outputs + self.runner.fail_all(error), time.monotonic()))
                self._send(Fatal(error))
                return EXIT_FATAL

    def _receive(self, outputs: list[Output]) -> bool:
        """Takes every waiting message; True on Shutdown."""
        while True:
            try:
                frame = self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            faults.check("receive")
            message = to_engine_decoder.decode(frame)
            if isinstance(message, Generate):
                outputs.append(self.runner.add(message))
            elif isinstance(message, Cancel):
                cancelled = self.runner.cancel(message.rid)
                if cancelled is not None:
                    outputs.append(cancelled)
            elif isinstance(message, Shutdown):
                outputs += self.runner.cancel_all()
                return True

    def _send(self, message: FromEngine) -> None:
        self.outbox.send(encoder.encode(message))
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
    started = time.perf_counter()
    try:
        runner = LlmRunner(Path(spec.path), spec.config)
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
        speculative=runner.speculative,
        warnings=tuple(runner.warnings),
    )
    outbox.send(encoder.encode(ready))
    code = EngineLoop(runner, inbox, outbox, spec).run()
    outbox.close()
    return code

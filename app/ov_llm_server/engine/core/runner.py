"""What the engine loop asks of a model, whatever its kind (``llm``, ``embed``, ``rerank``)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ...textutil import one_line
from ..messages import POISON_REQUEST, STOPPED, Generate, Output, Refused, Reply, Work
from .tokens import Vocabulary

log = logging.getLogger("ov_llm_server.engine")

# What a runner hands back to the loop: a generation's output, or a one-shot reply.
Result = Output | Reply


class Runner(Protocol):
    """One loaded model. Only the engine loop calls it, from one thread."""

    # The requests it serves; the loop refuses the others.
    accepts: tuple[type[Generate | Work], ...]
    vocabulary: Vocabulary
    chat_template: str
    context_length: int | None
    dimension: int | None
    speculative: str | None  # the speculative method in use, if any
    warnings: list[str]  # what an operator should know about the load

    @property
    def busy(self) -> bool:
        """Work waits for :meth:`step`."""

    def add(self, message: Generate | Work) -> Result | None:
        """Takes a request; what it returns (an acknowledgement, a refusal) goes out at once."""

    def step(self) -> list[Result]:
        """One pipeline call for what waits. An exception here means the pipeline is broken."""

    def cancel(self, rid: int) -> Result | None: ...

    def cancel_all(self) -> list[Result]: ...

    def fail_all(self, error: str) -> list[Result]:
        """Ends every request with an error (the engine is about to exit)."""

    def draft_counts(self) -> tuple[int, int]:
        """Speculative draft tokens proposed and accepted since the last call."""


class _Request(Protocol):
    @property
    def rid(self) -> int: ...


R = TypeVar("R", bound=_Request)


class EncoderQueue(Generic[R]):
    """An encoder runner's requests: waiting for a step, then running in it. The HTTP side
    forgets a request it cancels, so a cancelled one just leaves the queue."""

    chat_template = ""
    speculative: str | None = None

    def __init__(self, tokenizer: Any, max_length: int, batch: int) -> None:
        """``tokenizer`` and ``max_length`` of the encoder model; ``batch``: the inputs one
        step takes at most (``EngineConfig.encoder_batch``)."""
        self._waiting: deque[R] = deque()
        self._running: list[R] = []
        self._batch = batch
        self.vocabulary = Vocabulary(tokenizer)
        self.context_length: int | None = max_length
        self.warnings: list[str] = []

    @property
    def busy(self) -> bool:
        return bool(self._waiting)

    def cancel(self, rid: int) -> Result | None:
        self._waiting = deque(r for r in self._waiting if r.rid != rid)
        return None

    def cancel_all(self) -> list[Result]:
        stopped: list[Result] = [Refused(r.rid, STOPPED, code="cancelled") for r in self._waiting]
        self._waiting.clear()
        return stopped

    def fail_all(self, error: str) -> list[Result]:
        # A request served over several steps is running and still waiting at once.
        rids = dict.fromkeys(r.rid for r in [*self._running, *self._waiting])
        failed: list[Result] = [Refused(rid, error) for rid in rids]
        self._running = []
        self._waiting.clear()
        return failed

    def draft_counts(self) -> tuple[int, int]:
        return 0, 0


def survivors(
    calls: Sequence[tuple[int, Callable[[], object]]], probe: Callable[[], object], param: str
) -> list[Result]:
    """After a model call that served several requests failed: each request's ``(rid, call)``
    again, alone (the call hands out its result), so that only a request that breaks the
    model fails (and is refused, 400). When none of them runs alone, a known-good ``probe``
    call decides: it runs, so the requests are at fault; it fails too, so the model is broken,
    and this raises (the engine exits, and a fresh one replaces it)."""
    log.warning("a model call for %d requests failed; running each of them alone", len(calls))
    refused: list[Result] = []
    for rid, call in calls:
        try:
            call()
        except Exception as exc:
            error = f"the model fails on this request: {one_line(exc)}"
            refused.append(Refused(rid, error, code=POISON_REQUEST, param=param))
    if len(refused) == len(calls):
        probe()
    return refused

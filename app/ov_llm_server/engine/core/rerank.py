"""Reranking inside the engine process.

GenAI's ``TextRerankPipeline.rerank`` takes one query per call, so requests do not share a
call: every request waiting at a step is scored in it, one call per request (its documents
in chunks of ``EngineConfig.encoder_batch``), in their order.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from ..messages import STOPPED, EngineConfig, Generate, Ranked, Refused, Rerank, Work
from . import faults
from .encoders import RerankModel
from .pipelines import encoder_properties
from .runner import Result
from .tokens import Vocabulary


class RerankRunner:
    accepts: tuple[type[Generate | Work], ...] = (Rerank,)
    chat_template = ""
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.model = RerankModel(
            path,
            config.device,
            properties=encoder_properties(config),
            max_batch=config.encoder_batch,
        )
        self.vocabulary = Vocabulary(self.model.tokenizer)
        self.context_length: int | None = self.model.max_length
        self._waiting: deque[Rerank] = deque()
        self._running: list[Rerank] = []

    @property
    def busy(self) -> bool:
        return bool(self._waiting)

    def add(self, message: Generate | Work) -> Result | None:
        assert isinstance(message, Rerank)
        faults.check("add")
        self._waiting.append(message)
        return None

    def step(self) -> list[Result]:
        faults.check("step")
        self._running = list(self._waiting)
        self._waiting.clear()
        replies: list[Result] = []
        for request in self._running:
            result = self.model.score(request.query, request.documents)
            replies.append(
                Ranked(request.rid, result.scores, result.token_count, len(request.documents))
            )
        self._running = []
        return replies

    def cancel(self, rid: int) -> Result | None:
        self._waiting = deque(r for r in self._waiting if r.rid != rid)
        return None  # the HTTP side forgot the request already

    def cancel_all(self) -> list[Result]:
        stopped: list[Result] = [Refused(r.rid, STOPPED, code="cancelled") for r in self._waiting]
        self._waiting.clear()
        return stopped

    def fail_all(self, error: str) -> list[Result]:
        failed: list[Result] = [Refused(r.rid, error) for r in [*self._running, *self._waiting]]
        self._running = []
        self._waiting.clear()
        return failed

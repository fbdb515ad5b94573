"""Reranking inside the engine process.

GenAI's ``TextRerankPipeline.rerank`` takes one query per call, so requests do not share a
call: a step scores up to ``EngineConfig.encoder_batch`` documents of the waiting requests,
in their order, one call per request. A request with more documents is served over several
steps, so that no step outlasts the engine's stall limit. A call that fails fails only its own
request (``runner.survivors``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..messages import EngineConfig, Generate, Ranked, Rerank, Work
from . import faults
from .encoders import RerankModel
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result, survivors


@dataclass
class _Waiting:
    rid: int
    query: str
    documents: list[str]
    taken: int = 0  # documents handed to a step so far
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    batch: int = 0  # the largest call that served it


class RerankRunner(EncoderQueue[_Waiting]):
    accepts: tuple[type[Generate | Work], ...] = (Rerank,)
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.model = RerankModel(
            path,
            config.device,
            properties=encoder_properties(config),
            max_batch=config.encoder_batch,
        )
        super().__init__(self.model.tokenizer, self.model.max_length, config.encoder_batch)

    def add(self, message: Generate | Work) -> Result | None:
        assert isinstance(message, Rerank)
        faults.check("add")
        self._waiting.append(_Waiting(message.rid, message.query, message.documents))
        return None

    def step(self) -> list[Result]:
        faults.check("step")
        replies: list[Result] = []
        failed: list[tuple[int, Callable[[], object]]] = []
        room = self._batch
        self._running = []
        while self._waiting and room:
            waiting = self._waiting.popleft()
            self._running.append(waiting)
            end = min(len(waiting.documents), waiting.taken + room)
            room -= end - waiting.taken
            try:
                self._score(waiting, end, replies)
            except Exception:
                # Its own call: no other request is at fault, and it must not fail theirs.
                failed.append((waiting.rid, functools.partial(self._score, waiting, end, replies)))
        if failed:
            replies += survivors(failed, lambda: self.model.score(".", ["."]), "documents")
        self._running = []
        return replies

    def _score(self, waiting: _Waiting, end: int, replies: list[Result]) -> None:
        """Scores the request's documents up to ``end``: its reply once they are all in,
        else it goes back to the head of the queue."""
        documents = waiting.documents[waiting.taken : end]
        faults.check_poison(texts=[waiting.query, *documents])
        result = self.model.score(waiting.query, documents)
        waiting.scores += result.scores
        waiting.tokens += result.token_count
        waiting.batch = max(waiting.batch, end - waiting.taken)
        waiting.taken = end
        if end == len(waiting.documents):
            replies.append(Ranked(waiting.rid, waiting.scores, waiting.tokens, waiting.batch))
        else:
            self._waiting.appendleft(waiting)

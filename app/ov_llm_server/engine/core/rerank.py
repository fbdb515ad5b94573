"""Reranking inside the engine process.

GenAI's ``TextRerankPipeline.rerank`` takes one query per call, so requests do not share a
call: a step scores up to ``EngineConfig.encoder_batch`` documents of the waiting requests,
in their order, one call per request. A request with more documents is served over several
steps, so that no step outlasts the engine's stall limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..messages import EngineConfig, Generate, Ranked, Rerank, Work
from . import faults
from .encoders import RerankModel
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result


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
        room = self._batch
        self._running = []
        while self._waiting and room:
            waiting = self._waiting[0]
            self._running.append(waiting)
            end = min(len(waiting.documents), waiting.taken + room)
            result = self.model.score(waiting.query, waiting.documents[waiting.taken : end])
            waiting.scores += result.scores
            waiting.tokens += result.token_count
            waiting.batch = max(waiting.batch, end - waiting.taken)
            room -= end - waiting.taken
            waiting.taken = end
            if end == len(waiting.documents):
                self._waiting.popleft()
                replies.append(Ranked(waiting.rid, waiting.scores, waiting.tokens, waiting.batch))
        self._running = []
        return replies

"""Reranking inside the engine process.

GenAI's ``TextRerankPipeline.rerank`` takes one query per call, so requests do not share a
call: every request waiting at a step is scored in it, one call per request (its documents
in chunks of ``EngineConfig.encoder_batch``), in their order.
"""

from __future__ import annotations

from pathlib import Path

from ..messages import EngineConfig, Generate, Ranked, Rerank, Work
from . import faults
from .encoders import RerankModel
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result
from .tokens import Vocabulary


class RerankRunner(EncoderQueue[Rerank]):
    accepts: tuple[type[Generate | Work], ...] = (Rerank,)
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        super().__init__()
        self.model = RerankModel(
            path,
            config.device,
            properties=encoder_properties(config),
            max_batch=config.encoder_batch,
        )
        self.vocabulary = Vocabulary(self.model.tokenizer)
        self.context_length: int | None = self.model.max_length

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

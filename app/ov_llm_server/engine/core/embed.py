"""Embeddings inside the engine process, batched dynamically.

Every request the loop took since the last step (up to ``EngineConfig.encoder_batch``
inputs; a request larger than that goes alone) rides in one pipeline call: one tokenizer
call counts the tokens of all of them, each request's over-length inputs end that request
alone (400), and one ``embed_documents`` call embeds the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...textutil import one_line
from ..messages import Embed, Embedded, EngineConfig, Generate, Refused, Work
from . import faults
from .encoders import EmbeddingModel, EncoderInputError, InputTooLong
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result
from .tokens import Vocabulary


@dataclass
class _Waiting:
    rid: int
    inputs: list[str]
    truncate: bool
    dimensions: int | None


class EmbeddingRunner(EncoderQueue[_Waiting]):
    accepts: tuple[type[Generate | Work], ...] = (Embed,)

    def __init__(self, path: Path, config: EngineConfig) -> None:
        super().__init__()
        self.model = EmbeddingModel(
            path,
            config.device,
            properties=encoder_properties(config),
            max_batch=config.encoder_batch,
        )
        self._batch = config.encoder_batch
        self.vocabulary = Vocabulary(self.model.tokenizer)
        self.context_length: int | None = self.model.max_length
        self.dimension: int | None = self.model.dimension

    def add(self, message: Generate | Work) -> Result | None:
        """Checks one request and queues it for the next batch; a bad one is refused alone."""
        assert isinstance(message, Embed)
        try:
            faults.check("add")
            self.model.check_dimensions(message.dimensions)
            inputs = self.model.inputs(message.texts, message.token_ids, message.prompt_name)
        except faults.InjectedFault:
            raise
        except EncoderInputError as exc:
            return Refused(message.rid, str(exc), code="invalid_value", param=exc.param)
        except Exception as exc:
            return Refused(message.rid, one_line(exc))
        self._waiting.append(_Waiting(message.rid, inputs, message.truncate, message.dimensions))
        return None

    def _take(self) -> list[_Waiting]:
        """The waiting requests that fit in one batch, in their order (at least one)."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].inputs)
        while self._waiting and size + len(self._waiting[0].inputs) <= self._batch:
            size += len(self._waiting[0].inputs)
            batch.append(self._waiting.popleft())
        return batch

    def step(self) -> list[Result]:
        faults.check("step")
        self._running = self._take()
        counts = self.model.count_tokens([text for w in self._running for text in w.inputs])
        replies: list[Result] = []
        served: list[tuple[_Waiting, list[int]]] = []
        start = 0
        for waiting in self._running:
            own = counts[start : start + len(waiting.inputs)]
            start += len(waiting.inputs)
            try:
                served.append((waiting, self.model.fit(own, waiting.truncate)))
            except InputTooLong as exc:
                replies.append(
                    Refused(waiting.rid, str(exc), code="context_length_exceeded", param="input")
                )
        texts = [text for waiting, _ in served for text in waiting.inputs]
        vectors = self.model.run(texts)
        start = 0
        for waiting, own in served:
            rows = self.model.finish(vectors[start : start + len(own)], waiting.dimensions)
            start += len(own)
            data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
            replies.append(Embedded(waiting.rid, data, int(rows.shape[1]), own, len(texts)))
        self._running = []
        return replies

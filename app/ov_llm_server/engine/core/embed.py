"""Embeddings inside the engine process, batched dynamically.

Every request waiting at a step rides in one pipeline call of up to
``EngineConfig.encoder_batch`` inputs, in their order: one ``embed_documents`` call embeds
them all while one tokenizer call counts their tokens, and a request with an over-length
input ends alone (400). A request larger than a batch is served over several steps, so that
no step outlasts the engine's stall limit, and is answered once its last input is in. When
the batched call fails, each of its requests runs again alone (``runner.survivors``): one bad
input fails only its own request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...textutil import one_line
from ..messages import Embed, Embedded, EngineConfig, Generate, Refused, Work
from . import faults
from .encoders import EmbeddingModel, EncoderInputError, InputTooLong
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result, survivors


@dataclass
class _Waiting:
    rid: int
    inputs: list[str]
    truncate: bool
    dimensions: int | None
    taken: int = 0  # inputs handed to a batch so far
    vectors: list[np.ndarray[Any, Any]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    batch: int = 0  # the largest call that served it


class EmbeddingRunner(EncoderQueue[_Waiting]):
    accepts: tuple[type[Generate | Work], ...] = (Embed,)

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.model = EmbeddingModel(
            path,
            config.device,
            properties=encoder_properties(config),
            max_batch=config.encoder_batch,
        )
        super().__init__(self.model.tokenizer, self.model.max_length, config.encoder_batch)
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

    def _take(self) -> list[tuple[_Waiting, int, int]]:
        """The next batch: (request, first input, end) in the requests' order, up to the
        batch size; a request that is all taken leaves the queue."""
        parts: list[tuple[_Waiting, int, int]] = []
        room = self._batch
        while self._waiting and room:
            waiting = self._waiting[0]
            end = min(len(waiting.inputs), waiting.taken + room)
            parts.append((waiting, waiting.taken, end))
            room -= end - waiting.taken
            waiting.taken = end
            if end == len(waiting.inputs):
                self._waiting.popleft()
        return parts

    def step(self) -> list[Result]:
        faults.check("step")
        parts = self._take()
        self._running = [waiting for waiting, *_ in parts]
        try:
            replies = self._serve(parts)
        except Exception:
            # One bad input must not fail the batch it rode in: each request again, alone.
            replies = []
            calls = [
                (part[0].rid, functools.partial(self._serve_into, replies, part)) for part in parts
            ]
            refused = survivors(calls, lambda: self._run(["."]), "input")
            for reply in refused:
                self.cancel(reply.rid)  # the rest of a large request is not wanted
            replies += refused
        self._running = []
        return replies

    def _serve_into(self, replies: list[Result], part: tuple[_Waiting, int, int]) -> None:
        replies += self._serve([part])

    def _run(self, texts: list[str]) -> tuple[np.ndarray[Any, Any], list[int]]:
        faults.check_poison(texts=texts)
        return self.model.run(texts)

    def _serve(self, parts: list[tuple[_Waiting, int, int]]) -> list[Result]:
        """One model call for these parts of the waiting requests, and their replies."""
        texts = [text for waiting, start, end in parts for text in waiting.inputs[start:end]]
        vectors, counts = self._run(texts)
        replies: list[Result] = []
        for waiting, start, end in parts:
            own, counts = counts[: end - start], counts[end - start :]
            rows, vectors = vectors[: end - start], vectors[end - start :]
            try:
                waiting.counts += self.model.fit(own, waiting.truncate, start)
            except InputTooLong as exc:
                replies.append(
                    Refused(waiting.rid, str(exc), code="context_length_exceeded", param="input")
                )
                self.cancel(waiting.rid)  # the rest of a large request is not wanted
                continue
            waiting.vectors.append(rows)
            waiting.batch = max(waiting.batch, len(texts))
            if end == len(waiting.inputs):
                whole = self.model.finish(np.concatenate(waiting.vectors), waiting.dimensions)
                data = np.ascontiguousarray(whole, dtype="<f4").tobytes()
                replies.append(
                    Embedded(waiting.rid, data, int(whole.shape[1]), waiting.counts, waiting.batch)
                )
        return replies

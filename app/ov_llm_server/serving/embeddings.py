"""``POST /v1/embeddings``: OpenAI's shape, served by an embedding model's engine.

Every input form (a string, strings, token ids, lists of token ids), ``encoding_format``
float or base64, ``dimensions`` where the model was trained for truncation, and inputs over
the model's length refused (400) unless truncation is asked for (``truncate``, or vLLM's
``truncate_prompt_tokens``). Requests waiting together share one model call in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import errors
from ..engine.messages import Embed, Embedded, Reply, Work
from ..model_manager import LoadedModel
from ..protocol_surface import EmbeddingRequest, EmbeddingResponse
from .common import Record, Service


class EmbeddingService(Service):
    kind = "embedding"
    endpoint = "/v1/embeddings"
    log_name = "embedding"

    async def create(self, body: EmbeddingRequest, request: Request) -> Response:
        texts, token_ids = body.texts(), body.token_ids()

        def build(model: LoadedModel) -> Callable[[int], Work]:
            max_length = model.engine.context_length or 0
            if body.truncation_below(max_length):
                raise errors.bad_request(
                    f"truncate_prompt_tokens below the model's maximum input ({max_length} "
                    "tokens) is not supported: inputs are cut at that maximum, or refused",
                    param="truncate_prompt_tokens",
                    code="unsupported_value",
                )
            return partial(
                Embed,
                texts=texts,
                token_ids=token_ids,
                prompt_name=body.prompt_name,
                truncate=body.wants_truncation(max_length),
                dimensions=body.dimensions,
            )

        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Embedded)
            record.prompt_tokens = sum(reply.token_counts)
            record.batch = reply.batch
            vectors = np.frombuffer(reply.vectors, dtype="<f4").reshape(-1, reply.dimension)
            response = EmbeddingResponse.build(
                body.model, vectors, record.prompt_tokens, body.encoding_format
            )
            return JSONResponse(response.model_dump())

        inputs = len(texts or token_ids or ())
        return await self.ask(request, body.model, build, answer, inputs=inputs)

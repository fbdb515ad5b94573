"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank``): the Cohere/Jina/vLLM shape that
LiteLLM's rerank providers send, served by a cross-encoder's engine."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import errors
from ..engine.messages import Ranked, Reply, Rerank, Work
from ..model_manager import LoadedModel
from ..protocol import new_id
from ..protocol_surface import RerankRequest, RerankResponse
from .common import Record, Service


class RerankService(Service):
    kind = "rerank"
    endpoint = "/v1/rerank"
    log_name = "rerank"

    async def create(self, body: RerankRequest, request: Request) -> Response:
        documents = body.texts()

        def build(model: LoadedModel) -> Callable[[int], Work]:
            max_length = model.engine.context_length or 0
            if body.max_tokens_per_doc is not None and body.max_tokens_per_doc < max_length:
                raise errors.bad_request(
                    f"max_tokens_per_doc below the model's maximum input ({max_length} tokens) "
                    "is not supported: each (query, document) pair is cut at that maximum",
                    param="max_tokens_per_doc",
                    code="unsupported_value",
                )
            return partial(Rerank, query=body.query, documents=documents)

        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Ranked)
            record.prompt_tokens = reply.tokens
            record.batch = reply.batch
            response = RerankResponse.build(
                response_id=new_id("rerank"),
                model=body.model,
                request=body,
                scores=reply.scores,
                total_tokens=reply.tokens,
            )
            return JSONResponse(response.model_dump(exclude_none=True))

        return await self.ask(request, body.model, build, answer, inputs=len(documents))

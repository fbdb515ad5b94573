"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shape, on any model's own tokenizer.

The tokenizer lives in the model's engine process: each request is one message there and
one reply back, answered between pipeline steps.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..engine.messages import Detokenize, Detokenized, Reply, Tokenize, Tokenized, Work
from ..model_manager import LoadedModel
from ..protocol_surface import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from .chat import template_message
from .common import Record, Service


class TokenizeService(Service):
    endpoint = "/tokenize"
    log_name = "tokenize"

    async def create(self, body: TokenizeRequest, request: Request) -> Response:
        messages = [template_message(m) for m in body.messages] if body.messages else None
        work = partial(
            Tokenize,
            prompt=body.prompt,
            messages=messages,
            add_special_tokens=body.special_tokens(),
            add_generation_prompt=body.add_generation_prompt,
            token_strs=body.return_token_strs,
        )

        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Tokenized)
            response = TokenizeResponse(
                count=len(reply.ids),
                max_model_len=model.engine.context_length,
                tokens=reply.ids,
                token_strs=reply.strs,
            )
            return JSONResponse(response.model_dump(exclude_none=True))

        return await self.ask(request, body.model, _always(work), answer)


class DetokenizeService(Service):
    endpoint = "/detokenize"
    log_name = "detokenize"

    async def create(self, body: DetokenizeRequest, request: Request) -> Response:
        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Detokenized)
            return JSONResponse(DetokenizeResponse(prompt=reply.text).model_dump())

        work = partial(Detokenize, tokens=body.tokens)
        return await self.ask(request, body.model, _always(work), answer)


def _always(work: Callable[[int], Work]) -> Callable[[LoadedModel], Callable[[int], Work]]:
    """The same message whatever the model: nothing to check against it."""
    return lambda _: work

"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shape, on any model's own tokenizer.

The tokenizer lives in the model's engine process: each request is one message there and
one reply back, answered between pipeline steps.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .. import errors
from ..engine.messages import Detokenize, Detokenized, Reply, Tokenize, Tokenized, Work
from ..model_manager import LoadedModel
from ..protocol_surface import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from .chat import template_message
from .common import Service


def _named(model: str | None) -> Callable[[], None]:
    def check() -> None:
        if model is None:
            raise errors.bad_request(
                "'model' is required: this server serves several models, each with its own "
                "tokenizer",
                param="model",
            )

    return check


class TokenizeService(Service):
    endpoint = "/tokenize"
    log_name = "tokenize"

    async def create(self, body: TokenizeRequest, request: Request) -> Response:
        record = self.open(request, body.model or "-")
        lease = self.admit(record, _named(body.model))
        messages = [template_message(m) for m in body.messages] if body.messages else None

        def build(model: LoadedModel) -> Callable[[int], Work]:
            def make(rid: int) -> Tokenize:
                return Tokenize(
                    rid,
                    body.prompt,
                    messages,
                    body.special_tokens(),
                    body.add_generation_prompt,
                    body.return_token_strs,
                )

            return make

        def answer(model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Tokenized)
            record.finish_reason = "stop"
            response = TokenizeResponse(
                count=len(reply.ids),
                max_model_len=model.engine.context_length,
                tokens=reply.ids,
                token_strs=reply.strs,
            )
            return JSONResponse(response.model_dump(exclude_none=True))

        return await self.ask(request, record, lease, build, answer)


class DetokenizeService(Service):
    endpoint = "/detokenize"
    log_name = "detokenize"

    async def create(self, body: DetokenizeRequest, request: Request) -> Response:
        record = self.open(request, body.model or "-")
        lease = self.admit(record, _named(body.model))

        def build(model: LoadedModel) -> Callable[[int], Work]:
            def make(rid: int) -> Detokenize:
                return Detokenize(rid, body.tokens)

            return make

        def answer(model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Detokenized)
            record.finish_reason = "stop"
            return JSONResponse(DetokenizeResponse(prompt=reply.text).model_dump())

        return await self.ask(request, record, lease, build, answer)

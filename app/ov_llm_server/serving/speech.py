"""``POST /v1/audio/speech``: OpenAI's shape, served by a text-to-speech model's engine.

The engine synthesises the text (over as many steps as it has chunks) and hands back float32
samples; this process encodes them in the asked ``response_format`` at the asked ``speed``
(``audio_encode``) in a worker thread, and sends the body in chunks as a file download would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial

import numpy as np
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from .. import errors
from ..audio_encode import CONTENT_TYPES, encode
from ..engine.messages import Reply, Speak, Spoken, Work
from ..model_manager import LoadedModel
from ..protocol_speech import SpeechRequest
from .common import Record, Service

# Bytes per body chunk.
_CHUNK_BYTES = 64 * 1024


class SpeechService(Service):
    kind = "speech"
    endpoint = "/v1/audio/speech"
    log_name = "speech"

    async def create(self, body: SpeechRequest, request: Request) -> Response:
        def check() -> None:
            limit = self.settings.max_speech_chars
            if len(body.input) > limit:
                raise errors.bad_request(
                    f"'input' has {len(body.input)} characters, more than this server's "
                    f"maximum of {limit} (OV_MAX_SPEECH_CHARS); split the text",
                    param="input",
                    code="string_above_max_length",
                )
            if body.instructions:
                raise errors.bad_request(
                    "'instructions' is not supported: this model's voice is chosen with 'voice' "
                    "and cannot be steered by a prompt",
                    param="instructions",
                    code="unsupported_value",
                )
            if body.stream_format == "sse":
                raise errors.bad_request(
                    "stream_format 'sse' is not supported: the audio comes as the response body",
                    param="stream_format",
                    code="unsupported_value",
                )

        def build(model: LoadedModel) -> Callable[[int], Work]:
            return partial(Speak, text=body.input, voice=body.voice)

        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Spoken)
            record.prompt_tokens = reply.tokens
            record.batch = 1  # one text a pipeline call
            samples = np.frombuffer(reply.samples, dtype="<f4")
            return StreamingResponse(
                _body(samples, reply.sample_rate, body),
                media_type=CONTENT_TYPES[body.response_format],
            )

        return await self.ask(request, body.model, build, answer, inputs=1, check=check)


async def _body(samples: np.ndarray, rate: int, body: SpeechRequest) -> AsyncIterator[bytes]:
    data = await asyncio.to_thread(encode, samples, rate, body.response_format, body.speed)
    for start in range(0, len(data), _CHUNK_BYTES):
        yield data[start : start + _CHUNK_BYTES]

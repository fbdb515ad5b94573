"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: OpenAI's multipart
upload, served by a Whisper model's engine.

The upload is read within ``OV_MAX_AUDIO_BYTES`` (413 over it), decoded to 16 kHz mono in a
worker thread (``audio_input``: a file that is not audio, or longer than
``OV_MAX_AUDIO_SECONDS``, is a 400) and sent to the engine as samples, which serves it one
30 s window per step. With ``stream`` each window's text goes out as a
``transcript.text.delta`` event as soon as it is done, then ``transcript.text.done``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any, ClassVar, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from .. import errors, protocol_audio
from ..engine.client import EngineGone, PendingReply
from ..engine.messages import Output, Refused, Reply, Transcribe, Transcribed, Work
from ..model_manager import Lease, LoadedModel
from ..protocol_audio import TranscriptionForm
from . import audio_input
from .common import Record, Service, failure, refusal
from .generation import SSE_HEADERS

# Form fields besides the file: a client sends a handful.
_MAX_FIELDS = 32


class TranscriptionService(Service):
    kind = "whisper"
    endpoint = "/v1/audio/transcriptions"
    log_name = "transcription"
    task: ClassVar[Literal["transcribe", "translate"]] = "transcribe"

    async def create(self, body: Any, request: Request) -> Response:
        form, data = await self._read(request)
        samples = await asyncio.to_thread(audio_input.decode, data, self.settings.max_audio_seconds)
        make = partial(
            Transcribe,
            audio=samples.astype("<f4").tobytes(),
            task=self.task,
            language=form.language,
            prompt=form.prompt,
            temperature=form.temperature,
            segments=form.wants_segments,
            words=form.wants_words,
            stream=form.stream,
        )
        if form.stream:
            return await self._stream(request, form, make)

        def build(model: LoadedModel) -> Callable[[int], Work]:
            return make

        def answer(record: Record, model: LoadedModel, reply: Reply) -> Response:
            assert isinstance(reply, Transcribed)
            record.completion_tokens = reply.tokens
            return self._respond(form, reply)

        return await self.ask(request, form.model, build, answer)

    # ------------------------------------------------------------ the upload

    async def _read(self, request: Request) -> tuple[TranscriptionForm, bytes]:
        """The form's fields, checked, and the file's bytes."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise errors.bad_request(
                f"{self.endpoint} takes multipart/form-data with the audio as 'file'",
                code="invalid_content_type",
            )
        limit = self.settings.max_audio_bytes
        async with request.form(max_files=1, max_fields=_MAX_FIELDS) as form:
            fields: dict[str, Any] = {}
            upload: UploadFile | None = None
            for key, value in form.multi_items():
                name = key.removesuffix("[]")
                if name == "file":
                    if not isinstance(value, UploadFile):
                        raise errors.bad_request(
                            "'file' must be a file part holding the audio", param="file"
                        )
                    upload = value
                elif isinstance(value, UploadFile):
                    raise errors.bad_request(f"'{name}' must be a text field", param=name)
                elif name == "timestamp_granularities":
                    fields.setdefault(name, []).append(value)
                else:
                    fields[name] = value
            if upload is None:
                raise errors.bad_request(
                    "'file' is required: the audio to transcribe, as a file part", param="file"
                )
            data = await upload.read(limit + 1)
        if len(data) > limit:
            raise errors.APIError(
                413,
                f"The audio file is larger than this server's limit of {limit} bytes",
                param="file",
                code="audio_too_large",
            )
        if self.task == "translate":
            fields.pop("language", None)  # translations go to English: there is no such field
        return _checked(fields), data

    # ------------------------------------------------------------ the answer

    def _respond(self, form: TranscriptionForm, reply: Transcribed) -> Response:
        if form.response_format == "text":
            return PlainTextResponse(reply.text + "\n")
        if form.response_format == "srt":
            return PlainTextResponse(protocol_audio.srt(reply.segments))
        if form.response_format == "vtt":
            return PlainTextResponse(protocol_audio.vtt(reply.segments), media_type="text/vtt")
        if form.response_format == "verbose_json":
            return JSONResponse(protocol_audio.verbose_json(reply, self.task, form))
        return JSONResponse({"text": reply.text, "usage": protocol_audio.usage(reply)})

    async def _stream(
        self, request: Request, form: TranscriptionForm, make: Callable[[int], Work]
    ) -> Response:
        record = self.open(request, form.model, stream=True)
        deadline = self.deadline()
        lease = self.admit(record)

        async def submit(model: LoadedModel) -> PendingReply:
            try:
                return model.engine.ask(make)
            except EngineGone as exc:
                raise failure(exc, model.name) from exc

        pending = await self.until_ready(
            request, record, lease, deadline, submit, discard=lambda p: p.cancel()
        )
        if pending is None:
            return Response(status_code=499)
        return StreamingResponse(
            self._events(pending, record, lease, deadline),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    async def _events(
        self,
        pending: PendingReply,
        record: Record,
        lease: Lease,
        deadline: float,
    ) -> AsyncGenerator[str]:
        record.status = 499  # until the last event is out: a client that leaves ends it
        problem: errors.APIError | None = None
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    item = await pending.progress()
                    if isinstance(item, Output):
                        record.completion_tokens = item.tokens
                        yield protocol_audio.delta_event(item.text)
                        continue
                    if isinstance(item, Refused):
                        raise refusal(item, record.model)
                    assert isinstance(item, Transcribed)
                    record.completion_tokens = item.tokens
                    record.finish_reason = "stop"
                    record.status = 200
                    yield protocol_audio.done_event(item)
                    return
        except TimeoutError:
            problem = errors.timed_out(self.settings.request_timeout_seconds)
        except EngineGone as exc:
            problem = failure(exc, record.model)
        except errors.APIError as exc:
            problem = exc
        finally:
            if not pending.done:
                pending.cancel()
            if problem is None:  # answered, or the client left
                self.end(record, lease, None, None)
        self.end(record, lease, None, None, status=problem.status)
        yield problem.sse().decode()


class TranslationService(TranscriptionService):
    endpoint = "/v1/audio/translations"
    log_name = "translation"
    task = "translate"


def _checked(fields: dict[str, Any]) -> TranscriptionForm:
    try:
        form = TranscriptionForm.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        where = f" '{param}'" if param else ""
        raise errors.bad_request(
            f"Invalid{where}: {first['msg']}", param=param, code="invalid_value"
        ) from None
    problem = form.problem()
    if problem is not None:
        raise errors.bad_request(problem[0], param=problem[1], code="invalid_value")
    return form

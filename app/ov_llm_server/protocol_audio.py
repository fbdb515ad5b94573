"""OpenAI's audio transcription and translation API: the form fields, and the five response
formats (``json``, ``text``, ``srt``, ``verbose_json``, ``vtt``) and the stream's events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .engine.messages import Segment, Transcribed

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]
# Whisper reads at most 224 prompt tokens; a longer prompt is cut by the model anyway.
MAX_PROMPT_CHARS = 2000


class TranscriptionForm(BaseModel):
    """The form fields besides ``file``. Fields other clients send that this server does not
    use (``chunking_strategy``, ``include[]``, ...) are ignored, as LiteLLM forwards them."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Granularity] = Field(default_factory=list)
    stream: bool = False

    def problem(self) -> tuple[str, str] | None:
        """(message, param) of a combination the API refuses."""
        if self.timestamp_granularities and self.response_format != "verbose_json":
            return (
                "timestamp_granularities needs response_format 'verbose_json'",
                "timestamp_granularities",
            )
        if self.stream and self.response_format not in ("json", "text"):
            return "stream needs response_format 'json' or 'text'", "stream"
        return None

    @property
    def wants_segments(self) -> bool:
        return self.response_format in ("verbose_json", "srt", "vtt")

    @property
    def wants_words(self) -> bool:
        return "word" in self.timestamp_granularities


def audio_form_schema() -> dict[str, Any]:
    """The multipart form as OpenAPI describes it: the fields, and ``file`` as binary."""
    schema = TranscriptionForm.model_json_schema()
    schema["properties"]["file"] = {"type": "string", "format": "binary"}
    schema["required"] = ["file", *schema.get("required", [])]
    return schema


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    cues = [
        f"{index}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for index, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def verbose_json(reply: Transcribed, task: str, form: TranscriptionForm) -> dict[str, Any]:
    """OpenAI's verbose response, with what Whisper in GenAI gives: no per-segment
    log probabilities, compression ratios or no-speech probabilities, so none are made up."""
    body: dict[str, Any] = {
        "task": task,
        "language": reply.language,
        "duration": reply.duration,
        "text": reply.text,
    }
    if "segment" in form.timestamp_granularities or not form.timestamp_granularities:
        body["segments"] = [
            {
                "id": index,
                "start": segment.start,
                "end": segment.end,
                "text": segment.text,
                "temperature": form.temperature,
            }
            for index, segment in enumerate(reply.segments)
        ]
    if form.wants_words:
        body["words"] = [
            {"word": w.text.strip(), "start": w.start, "end": w.end} for w in reply.words
        ]
    body["usage"] = usage(reply)
    return body


def usage(reply: Transcribed) -> dict[str, Any]:
    """Billed by duration, as OpenAI bills Whisper."""
    return {"type": "duration", "seconds": max(1, round(reply.duration))}


def delta_event(text: str) -> str:
    return f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': text})}\n\n"


def done_event(reply: Transcribed) -> str:
    event = {"type": "transcript.text.done", "text": reply.text, "usage": usage(reply)}
    return f"data: {json.dumps(event)}\n\n"

"""The wire model of ``POST /v1/audio/speech``: OpenAI's shape.

``instructions`` (a prompt that steers gpt-4o-mini-tts) and ``stream_format: "sse"`` have no
meaning for SpeechT5 and are refused by the serving layer rather than ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictStr

from ov_llm_server.audio_encode import MAX_SPEED, MIN_SPEED, AudioFormat
from ov_llm_server.protocol import ModelName, RequestBody


class SpeechRequest(RequestBody):
    model: ModelName
    # Its length is bounded by OV_MAX_SPEECH_CHARS in the serving layer (a setting).
    input: StrictStr = Field(min_length=1)
    # One of the model's voices; None: its default voice.
    voice: StrictStr | None = Field(default=None, min_length=1, max_length=256)
    response_format: AudioFormat = "mp3"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] | None = None

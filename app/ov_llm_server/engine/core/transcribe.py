"""Speech to text inside the engine process: ``openvino_genai.WhisperPipeline``.

Whisper reads 30 s of audio at a time. A request's audio is served one window per step, so
that no step outlasts the engine's stall limit however long the audio is, and the waiting
requests take turns window by window (a long recording does not hold a short one back). A
window that does not reach the end of the audio is cut at its quietest moment in its last
seconds, so that a word is rarely split between two windows; the times GenAI gives within a
window are moved by the window's start.

The pipeline is not batched and not thread-safe: one window at a time, from the engine loop.
Word timestamps need a pipeline built for them (``word_timestamps=True``), and on such a
pipeline GenAI 2026.4 crashes the process on a call that asks for no timestamps: so a second
pipeline serves the requests that ask for words, built at their first one (a model without
alignment heads then refuses them, 400).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino_genai as og

from ...textutil import one_line
from ..messages import (
    EngineConfig,
    Generate,
    Output,
    Refused,
    Segment,
    Transcribe,
    Transcribed,
    Work,
)
from . import faults
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result, survivors

log = logging.getLogger("ov_llm_server.engine")

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
WINDOW = WINDOW_SECONDS * SAMPLE_RATE
# Where a window that does not reach the end may be cut: its last seconds, in frames of 0.1 s.
CUT_SEARCH = 5 * SAMPLE_RATE
CUT_FRAME = SAMPLE_RATE // 10

Samples = npt.NDArray[np.float32]


def window_end(samples: Samples, start: int) -> int:
    """Where the window that starts at ``start`` ends: the end of the audio if it is near,
    else the middle of the quietest 0.1 s in the window's last seconds."""
    if len(samples) - start <= WINDOW:
        return len(samples)
    search_from = start + WINDOW - CUT_SEARCH
    frames = samples[search_from : start + WINDOW].reshape(-1, CUT_FRAME)
    quietest = int(np.argmin(np.square(frames).mean(axis=1)))
    return search_from + quietest * CUT_FRAME + CUT_FRAME // 2


class TranscriptionInputError(ValueError):
    """A request this model cannot serve as asked (400 naming ``param``)."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class _Waiting:
    message: Transcribe
    samples: Samples
    position: int = 0  # samples served so far
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    words: list[Segment] = field(default_factory=list)
    tokens: int = 0
    language: str | None = None

    @property
    def rid(self) -> int:
        return self.message.rid


def _shifted(
    pieces: Any, offset: float, length: float, text_of: str, limit: float
) -> list[Segment]:
    """GenAI's timed pieces of one window, in the audio's time. A piece that starts after the
    window's audio ends describes padding (a random or confused model writes some)."""
    shifted = []
    for piece in pieces or ():
        start = max(0.0, float(piece.start_ts))
        if start >= length:
            continue
        end = min(max(float(piece.end_ts), start), length)
        text = str(getattr(piece, text_of))
        shifted.append(Segment(round(offset + start, 2), round(min(offset + end, limit), 2), text))
    return shifted


class WhisperRunner(EncoderQueue[_Waiting]):
    accepts: tuple[type[Generate | Work], ...] = (Transcribe,)
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.path = path
        self.device = config.device
        self.properties = encoder_properties(config)
        self.pipe = og.WhisperPipeline(str(path), config.device, **self.properties)
        self._words_pipe: Any = None
        self._words_error: str | None = None
        defaults = self.pipe.get_generation_config()
        self.multilingual = bool(defaults.is_multilingual)
        self.languages = sorted(
            str(token).strip("<|>") for token in (defaults.lang_to_id or {}).keys()
        )
        # Whisper's rule for a prompt: its last tokens, up to half the decoder's context (a
        # longer one fails GenAI's length check).
        self.prompt_tokens = max(0, int(defaults.max_length) // 2 - 1)
        self.tokenizer = self.pipe.get_tokenizer()
        super().__init__(self.tokenizer, 0, 1)
        self.context_length = None

    def add(self, message: Generate | Work) -> Result | None:
        assert isinstance(message, Transcribe)
        try:
            faults.check("add")
            self._check(message)
        except faults.InjectedFault:
            raise
        except TranscriptionInputError as exc:
            return Refused(message.rid, str(exc), code="invalid_value", param=exc.param)
        samples = np.frombuffer(message.audio, dtype="<f4").astype(np.float32)
        self._waiting.append(_Waiting(message, samples))
        return None

    def _check(self, message: Transcribe) -> None:
        if message.language is not None and message.language not in self.languages:
            known = ", ".join(self.languages) or "none"
            raise TranscriptionInputError(
                f"language {message.language!r} is not one this model knows ({known})",
                param="language",
            )
        if not self.multilingual and message.task == "translate":
            raise TranscriptionInputError(
                "this model is English-only: it does not translate", param="model"
            )
        if not message.audio or len(message.audio) % 4:
            raise TranscriptionInputError("the audio holds no samples", param="file")

    # ------------------------------------------------------------ steps

    def step(self) -> list[Result]:
        """One window of the request at the head of the queue."""
        faults.check("step")
        waiting = self._waiting.popleft()
        self._running = [waiting]
        results: list[Result] = []
        try:
            self._window(waiting, results)
        except TranscriptionInputError as exc:
            results.append(Refused(waiting.rid, str(exc), code="invalid_value", param=exc.param))
        except Exception:
            call = functools.partial(self._window, waiting, results)
            results += survivors([(waiting.rid, call)], self._probe, "file")
        self._running = []
        return results

    def _probe(self) -> None:
        self.pipe.generate(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def _window(self, waiting: _Waiting, results: list[Result]) -> None:
        """Transcribes the request's next window: its reply once the audio is all done, else
        it queues again behind the others."""
        message, samples = waiting.message, waiting.samples
        start = waiting.position
        end = window_end(samples, start)
        faults.check_poison(rids=[waiting.rid])
        pipe = self._words_pipeline() if message.words else self.pipe
        answer = pipe.generate(samples[start:end], **self._options(waiting))
        offset, length = start / SAMPLE_RATE, (end - start) / SAMPLE_RATE
        duration = len(samples) / SAMPLE_RATE
        text = str(answer.texts[0])
        if message.segments or message.words:
            segments = _shifted(answer.chunks, offset, length, "text", duration)
            waiting.segments += segments
            # The text of the segments kept: none of what describes padding.
            text = "".join(segment.text for segment in segments)
        if not waiting.text:
            text = text.lstrip()
        waiting.text += text
        if message.words:
            waiting.words += _shifted(answer.words, offset, length, "word", duration)
        tokens = int(answer.perf_metrics.get_num_generated_tokens())
        waiting.tokens += tokens
        waiting.language = waiting.language or _language(answer)
        waiting.position = end
        if message.stream and text:
            results.append(Output(waiting.rid, text, waiting.tokens))
        if end < len(samples):
            self._waiting.append(waiting)
            return
        results.append(
            Transcribed(
                waiting.rid,
                waiting.text,
                message.language or waiting.language,
                round(duration, 3),
                waiting.tokens,
                waiting.segments,
                waiting.words,
            )
        )

    def _options(self, waiting: _Waiting) -> dict[str, Any]:
        """The generation settings of one window of a request."""
        message = waiting.message
        options: dict[str, Any] = {"task": message.task}
        if message.language is not None:
            options["language"] = f"<|{message.language}|>"
        elif waiting.language is not None:  # detected in the first window: kept
            options["language"] = f"<|{waiting.language}|>"
        prompt = self._prompt(message.prompt) if waiting.position == 0 else ""
        if prompt:
            options["initial_prompt"] = prompt
        if message.temperature > 0:
            options.update(do_sample=True, temperature=message.temperature)
        if message.segments or message.words:
            options["return_timestamps"] = True
        if message.words:
            options["word_timestamps"] = True
        return options

    def _prompt(self, text: str | None) -> str:
        if not text or not self.prompt_tokens:
            return ""
        ids = self.vocabulary.encode(text, add_special_tokens=False)
        if len(ids) <= self.prompt_tokens:
            return text
        return str(self.tokenizer.decode(ids[-self.prompt_tokens :]))

    def _words_pipeline(self) -> Any:
        if self._words_pipe is None and self._words_error is None:
            try:
                self._words_pipe = og.WhisperPipeline(
                    str(self.path), self.device, word_timestamps=True, **self.properties
                )
            except Exception as exc:
                self._words_error = one_line(exc)
                log.warning("word timestamps are not available: %s", self._words_error)
        if self._words_pipe is None:
            raise TranscriptionInputError(
                f"this model cannot give word timestamps ({self._words_error})",
                param="timestamp_granularities",
            )
        return self._words_pipe


def _language(answer: Any) -> str | None:
    language = getattr(answer, "language", None)
    return str(language).strip("<|>") or None if language else None

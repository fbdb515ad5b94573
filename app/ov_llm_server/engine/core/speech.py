"""Text to speech inside the engine process: ``openvino_genai.Text2SpeechPipeline`` (SpeechT5).

A request's text is cut into chunks (sentences; a long sentence at its last pause or space
before ``MAX_CHUNK_CHARS``) and each step synthesises one chunk of the request at the head of
the queue: a step's cost grows with its text (SpeechT5 decodes up to ``maxlenratio`` frames a
token), so a bounded chunk keeps every step within the engine's stall limit however long the
input. A request is answered once its last chunk is in. Requests are served in arrival order,
one at a time: each answer comes as early as it can, and GenAI's batched call pads every text
to the longest.

Voices are speaker embeddings (x-vectors) shipped in the model folder as
``speaker_embeddings/<voice>.bin`` (raw little-endian float32) or ``.npy``, or named in the
model's registry entry (``"voices": {"<voice>": "<file>"}``); a voice named ``default`` is the
default. Without one, a 512-wide model's default is GenAI's own (the CMU
ARCTIC x-vector its SpeechT5 support is built with), listed as ``default`` too.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino_genai as og

from ...textutil import one_line
from ..messages import EngineConfig, Generate, Refused, Speak, Spoken, Work
from . import faults
from .pipelines import encoder_properties
from .runner import EncoderQueue, Result, survivors

log = logging.getLogger(__name__)

VOICES_DIR = "speaker_embeddings"
DEFAULT_VOICE = "default"
# GenAI's built-in speaker embedding has SpeechT5's x-vector width.
_BUILTIN_VOICE_WIDTH = 512
# Characters one step synthesises at most. SpeechT5 reads characters as tokens and decodes up to
# maxlenratio (20 by default) frames per token, two per decoder pass: a chunk of this size costs
# at most about 2,000 passes of the decoder.
MAX_CHUNK_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?;:…。！？])\s+")
_PAUSE = re.compile(r"[,;:)\]]\s")

Samples = npt.NDArray[np.float32]


def chunks(text: str, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """``text`` as the pieces one step synthesises: sentences, and a sentence longer than
    ``limit`` cut at its last pause (a comma, ...) or else space before it, else at it."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        rest = sentence.strip()
        while len(rest) > limit:
            head = rest[: limit + 1]
            pauses = [m.end() for m in _PAUSE.finditer(head)]
            cut = pauses[-1] if pauses else head.rfind(" ") + 1 or limit
            pieces.append(rest[:cut].strip())
            rest = rest[cut:].strip()
        if rest:
            pieces.append(rest)
    return pieces


class VoiceError(ValueError):
    """A voice the model does not have: the API answers 400 naming its voices."""


def load_voices(
    path: Path, width: int, named: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Samples], list[str]]:
    """The speaker embeddings that fit the model: those in ``path/speaker_embeddings``, then
    the registry's (``named``: a name and a file, relative to ``path``; a name in both is the
    registry's); and a warning for each file that does not fit."""
    folder = path / VOICES_DIR
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    candidates = [(file.stem, file) for file in files if file.suffix in (".bin", ".npy")]
    candidates += [(name, path / Path(file).expanduser()) for name, file in named]
    voices: dict[str, Samples] = {}
    warnings: list[str] = []
    for name, file in candidates:
        try:
            if file.suffix == ".npy":
                vector = np.load(file, allow_pickle=False).astype(np.float32).reshape(-1)
            else:
                vector = np.fromfile(file, dtype="<f4")
        except (OSError, ValueError) as exc:
            warnings.append(f"voice {name} ({file}) is unreadable: {one_line(exc)}")
            continue
        if vector.size != width or not np.isfinite(vector).all():
            warnings.append(
                f"voice {name} ({file}) is not {width} finite float32 values (the model's "
                "speaker embedding width); it is left out"
            )
            continue
        voices[name] = vector.reshape(1, width)
    return voices, warnings


def _speaker_width(path: Path) -> int:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        width = config.get("speaker_embedding_dim")
        return width if isinstance(width, int) and width > 0 else _BUILTIN_VOICE_WIDTH
    except (OSError, ValueError):
        return _BUILTIN_VOICE_WIDTH


class SpeechModel:
    """A text-to-speech model and its voices."""

    def __init__(
        self,
        path: Path,
        device: str,
        properties: dict[str, Any],
        named_voices: tuple[tuple[str, str], ...],
    ) -> None:
        self._pipe = og.Text2SpeechPipeline(str(path), device, **properties)
        self.tokenizer = og.Tokenizer(str(path))
        width = _speaker_width(path)
        self.voices, self.warnings = load_voices(path, width, named_voices)
        # None: GenAI's built-in voice.
        self._default: Samples | None = self.voices.get(DEFAULT_VOICE)
        self.has_default = DEFAULT_VOICE in self.voices or width == _BUILTIN_VOICE_WIDTH

    @property
    def voice_names(self) -> list[str]:
        return sorted({*self.voices, *([DEFAULT_VOICE] if self.has_default else [])})

    def speaker(self, voice: str | None) -> Samples | None:
        """The embedding of ``voice`` (None: the default); None means GenAI's built-in one."""
        name = voice or DEFAULT_VOICE
        if name in self.voices:
            return self.voices[name]
        if name == DEFAULT_VOICE and self.has_default:
            return self._default
        known = ", ".join(self.voice_names) or "none"
        if voice is None:
            raise VoiceError(f"this model has no default voice: name one of {known}")
        raise VoiceError(f"unknown voice {voice!r} (this model's voices: {known})")

    def synthesise(self, text: str, speaker: Samples | None) -> tuple[Samples, int, int]:
        """One chunk's waveform, its sample rate and its tokens."""
        if speaker is None:
            result = self._pipe.generate(text)
        else:
            result = self._pipe.generate(text, ov.Tensor(speaker))
        # A copy: the array GenAI's tensor exposes dies with ``result``.
        samples = np.array(result.speeches[0].data, dtype=np.float32, copy=True).reshape(-1)
        # The pipeline's metrics count no input tokens: the tokenizer counts them (a ms).
        tokens = int(self.tokenizer.encode(text).input_ids.get_shape()[1])
        return samples, int(result.output_sample_rate), tokens


@dataclass
class _Waiting:
    rid: int
    pieces: list[str]
    speaker: Samples | None
    taken: int = 0  # pieces synthesised so far
    waves: list[Samples] = field(default_factory=list)
    sample_rate: int = 0
    tokens: int = 0


class SpeechRunner(EncoderQueue[_Waiting]):
    accepts: tuple[type[Generate | Work], ...] = (Speak,)
    dimension: int | None = None

    def __init__(self, path: Path, config: EngineConfig) -> None:
        self.model = SpeechModel(path, config.device, encoder_properties(config), config.voices)
        super().__init__(self.model.tokenizer, MAX_CHUNK_CHARS, 1)
        self.context_length = None  # the HTTP side bounds the text (OV_MAX_SPEECH_CHARS)
        self.warnings = list(self.model.warnings)

    def add(self, message: Generate | Work) -> Result | None:
        assert isinstance(message, Speak)
        faults.check("add")
        try:
            speaker = self.model.speaker(message.voice)
        except VoiceError as exc:
            return Refused(message.rid, str(exc), code="invalid_value", param="voice")
        pieces = chunks(message.text)
        if not pieces:
            return Refused(message.rid, "'input' has no text to speak", "invalid_value", "input")
        self._waiting.append(_Waiting(message.rid, pieces, speaker))
        return None

    def step(self) -> list[Result]:
        faults.check("step")
        waiting = self._waiting[0]
        self._running = [waiting]
        replies: list[Result] = []
        try:
            self._synthesise(waiting, replies)
        except Exception:
            # Once more alone: a request the model fails on is refused, else the model is broken.
            refused = survivors(
                [(waiting.rid, lambda: self._synthesise(waiting, replies))],
                lambda: self.model.synthesise(".", waiting.speaker),
                "input",
            )
            if refused:
                self.cancel(waiting.rid)
            replies += refused
        self._running = []
        return replies

    def _synthesise(self, waiting: _Waiting, replies: list[Result]) -> None:
        """The request's next piece; its reply once it is the last."""
        text = waiting.pieces[waiting.taken]
        faults.check_poison(texts=[text])
        samples, waiting.sample_rate, tokens = self.model.synthesise(text, waiting.speaker)
        waiting.waves.append(samples)
        waiting.tokens += tokens
        waiting.taken += 1
        if waiting.taken < len(waiting.pieces):
            return
        self._waiting.popleft()
        wave = np.ascontiguousarray(np.concatenate(waiting.waves), dtype="<f4")
        replies.append(Spoken(waiting.rid, wave.tobytes(), waiting.sample_rate, waiting.tokens))

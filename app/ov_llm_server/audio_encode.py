"""Encoding a synthesised waveform into what ``/v1/audio/speech`` answers (HTTP process).

The engine hands over float32 mono samples; this turns them into the ``response_format`` the
client asked for, at the ``speed`` it asked for. ``wav`` and ``pcm`` need no codec (16-bit
signed little-endian, ``pcm`` at 24 kHz as OpenAI's API defines it); ``mp3``, ``opus`` (in
Ogg), ``aac`` (ADTS) and ``flac`` are encoded by FFmpeg's codecs through PyAV. ``speed``
stretches time without moving the pitch: FFmpeg's ``atempo`` filter (WSOLA), chained where a
factor lies outside the 0.5 to 2.0 one instance handles best.

Blocking (a few ms to tens of ms a second of audio): the caller runs it in a worker thread.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import av.filter
import numpy as np
import numpy.typing as npt

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
MIN_SPEED = 0.25
MAX_SPEED = 4.0
# OpenAI's pcm: raw 16-bit samples at 24 kHz, no header to say otherwise.
PCM_RATE = 24_000
# Opus runs at 48, 24, 16, 12 or 8 kHz; Ogg players expect 48.
_OPUS_RATE = 48_000


@dataclass(frozen=True)
class _Codec:
    container: str
    codec: str
    content_type: str
    rate: int | None = None  # None: the model's own rate


_CODECS: dict[str, _Codec] = {
    "mp3": _Codec("mp3", "libmp3lame", "audio/mpeg"),
    "opus": _Codec("ogg", "libopus", "audio/ogg", _OPUS_RATE),
    "aac": _Codec("adts", "aac", "audio/aac"),
    "flac": _Codec("flac", "flac", "audio/flac"),
}
CONTENT_TYPES: dict[AudioFormat, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

Samples = npt.NDArray[np.float32]


def _frame(samples: Samples, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = 0
    return frame


def _frames_to_array(frames: list[av.AudioFrame]) -> Samples:
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def _tempo_factors(speed: float) -> list[float]:
    factors: list[float] = []
    while speed > 2.0:
        factors.append(2.0)
        speed /= 2.0
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    return [*factors, speed]


def change_speed(samples: Samples, rate: int, speed: float) -> Samples:
    """``samples`` played ``speed`` times as fast, at the same pitch."""
    if speed == 1.0 or samples.size == 0:
        return samples
    graph = av.filter.Graph()
    node = graph.add_abuffer(
        format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate)
    )
    source = node
    for factor in _tempo_factors(speed):
        tempo = graph.add("atempo", f"{factor:.6f}")
        node.link_to(tempo)
        node = tempo
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    source.push(_frame(samples, rate))
    source.push(None)
    frames: list[av.AudioFrame] = []
    while True:
        try:
            out = sink.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        assert isinstance(out, av.AudioFrame)
        frames.append(out)
    return _frames_to_array(frames)


def _resample(samples: Samples, rate: int, to_rate: int) -> Samples:
    if rate == to_rate or samples.size == 0:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    frames = [*resampler.resample(_frame(samples, rate)), *resampler.resample(None)]
    return _frames_to_array(frames)


def _int16(samples: Samples) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


def _wav(samples: Samples, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(_int16(samples))
    return out.getvalue()


def _encode(samples: Samples, rate: int, codec: _Codec) -> bytes:
    out = io.BytesIO()
    to_rate = codec.rate or rate
    with av.open(out, "w", format=codec.container) as container:
        stream = container.add_stream(codec.codec, rate=to_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        context = stream.codec_context
        frame_size = context.frame_size or None  # None: a codec that takes any frame size
        resampler = av.AudioResampler(
            format=context.format, layout="mono", rate=to_rate, frame_size=frame_size
        )
        for frame in [*resampler.resample(_frame(samples, rate)), *resampler.resample(None)]:
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def encode(samples: Samples, rate: int, audio_format: AudioFormat, speed: float = 1.0) -> bytes:
    """The body of a speech response: ``samples`` (float32 mono at ``rate``) at ``speed``."""
    samples = change_speed(samples, rate, speed)
    if audio_format == "wav":
        return _wav(samples, rate)
    if audio_format == "pcm":
        return _int16(_resample(samples, rate, PCM_RATE))
    return _encode(samples, rate, _CODECS[audio_format])

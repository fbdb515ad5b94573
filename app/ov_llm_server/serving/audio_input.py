"""Uploaded audio to the samples Whisper reads: 16 kHz mono float32 (HTTP process).

PyAV (FFmpeg's libraries, in its wheel) decodes what browsers and phones record: WAV, MP3,
M4A/MP4 (AAC), Ogg (Opus, Vorbis), WebM/Matroska (Opus), FLAC. The container is recognised
from the file's first bytes and named to FFmpeg, never left to its probing: a probed upload
could be a playlist (HLS, concat) that makes FFmpeg open other files or URLs. Decoding stops
as soon as the audio is longer than the limit, so a small file that expands to hours costs
no more than the limit. Runs in a worker thread: FFmpeg releases the GIL while it decodes.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import errors

SAMPLE_RATE = 16000
# What the API names in its refusals of an unreadable upload.
SUPPORTED = "wav, mp3, m4a/mp4, ogg/opus, webm, flac"

Samples = npt.NDArray[np.float32]


def sniff(data: bytes) -> str | None:
    """FFmpeg's demuxer for a file that starts like ``data``; None: not a supported format."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM and Matroska
        return "matroska"
    if head[4:8] == b"ftyp":  # ISO base media: MP4, M4A, 3GP
        return "mov"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # A frame sync: MPEG audio, or ADTS AAC (whose layer bits are 00).
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def _not_audio(detail: str) -> errors.APIError:
    return errors.bad_request(
        f"The file is not audio this server can read ({detail}); send {SUPPORTED}",
        param="file",
        code="invalid_audio",
    )


def decode(data: bytes, max_seconds: float) -> Samples:
    """The file's first audio stream as 16 kHz mono float32 samples in [-1, 1]; an
    :class:`errors.APIError` (400) for a file that is not audio or is too long."""
    import av

    demuxer = sniff(data)
    if demuxer is None:
        raise _not_audio("unknown format")
    limit = int(max_seconds * SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    parts: list[Samples] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            if not container.streams.audio:
                raise _not_audio("no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    count += _take(out, parts)
                if count > limit:
                    raise _too_long(max_seconds)
            for out in resampler.resample(None):
                count += _take(out, parts)
    except errors.APIError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise _not_audio(f"{type(exc).__name__}: {exc}"[:200]) from None
    if count > limit:
        raise _too_long(max_seconds)
    if not count:
        raise _not_audio("no audio samples")
    samples = np.concatenate(parts)
    # Decoders may overshoot full scale a little (and a broken file much more).
    return np.clip(np.nan_to_num(samples), -1.0, 1.0).astype(np.float32, copy=False)


def _take(frame: Any, parts: list[Samples]) -> int:
    samples = np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)
    parts.append(samples)
    return len(samples)


def _too_long(max_seconds: float) -> errors.APIError:
    return errors.bad_request(
        f"The audio is longer than this server's limit of {max_seconds:g} seconds",
        param="file",
        code="audio_too_long",
    )

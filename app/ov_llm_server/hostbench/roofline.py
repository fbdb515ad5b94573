"""The memory-bandwidth roofline of the target host: the ceiling its decode speed cannot pass.

Decoding one token reads every weight once, so one stream decodes at most bandwidth ÷ bytes
of weights; N streams stepped together share each read, so at most N times that. The bytes
are the weight file's size (``openvino_model.bin`` or the ``.gguf``), a slight overestimate
(an embedding table is read a row at a time) that ignores the KV cache's reads.
"""

from __future__ import annotations

from pathlib import Path

# The Mac mini 2018's i7-8700B: dual-channel DDR4-2666, 2 x 8 bytes x 2666 MT/s, shared by
# the CPU and the iGPU.
TARGET_HOST = "Mac mini 2018, i7-8700B, dual-channel DDR4-2666"
TARGET_BANDWIDTH = 42.7e9  # bytes per second


def weight_bytes(model: Path) -> int | None:
    """The size of the weights a token's decode reads; None when the model has no known file."""
    if model.is_file():
        return model.stat().st_size
    weights = model / "openvino_model.bin"
    return weights.stat().st_size if weights.is_file() else None


def ceiling(weights: int, streams: int = 1) -> float:
    """Tokens per second the target's memory can feed, in all, at ``streams`` streams."""
    return streams * TARGET_BANDWIDTH / weights
